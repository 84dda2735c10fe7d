"""FBP filters in the frequency domain, with the rotation centre applied as a phase ramp.

The ramp is built from the band-limited spatial-domain kernel (Kak & Slaney eq. 61:
``h(0) = 1/4``, ``h(n) = -1 / (pi n)^2`` for odd ``n``, 0 for even ``n``) and transformed, which avoids
the DC bias of a sampled ``|f|``. Windows multiply it: ``shepp-logan`` (sinc), ``cosine``, ``hann``,
``hamming``, ``parzen``.
"""

from __future__ import annotations

import functools

import numpy as np

from tomoflow._checks import check_choice, check_number
from tomoflow._typing import Array
from tomoflow.backend import fft_module, fft_workers, get_namespace
from tomoflow.recon.shift import phase_ramp

__all__ = ["FILTERS", "check_filter", "filter_response", "padded_length", "filter_projections"]

FILTERS = ("ramp", "shepp-logan", "cosine", "hann", "hamming", "parzen", "none")
"""FBP filter names (``"ram-lak"`` is accepted as a synonym of ``"ramp"``)."""

_SYNONYMS = {"ram-lak": "ramp"}


def check_filter(filter: str) -> str:  # the public parameter name
    """Canonical (lower-case) name of FBP filter ``filter``; :class:`ConfigError` if unknown."""
    name = str(filter).lower()
    return check_choice("FBP filter", _SYNONYMS.get(name, name), FILTERS)


def padded_length(n_cols: int, *, pad_factor: float = 2.0) -> int:
    """FFT length used to filter ``n_cols`` columns: at least ``pad_factor * n_cols``, 5-smooth.

    Parameters
    ----------
    n_cols
        Detector columns.
    pad_factor
        Minimum ratio of FFT length to ``n_cols``, ``>= 1``.
    """
    import scipy.fft

    pad_factor = check_number("pad_factor", pad_factor, low=1.0)
    return int(scipy.fft.next_fast_len(max(64, int(np.ceil(pad_factor * n_cols))), real=True))


@functools.lru_cache(maxsize=32)
def _response_np(name: str, n: int) -> np.ndarray:
    k = np.arange(n)
    k = np.where(k > n // 2, k - n, k)  # signed index, FFT order
    h = np.zeros(n)
    h[0] = 0.25
    odd = (k % 2) == 1
    h[odd] = -1.0 / (np.pi * k[odd]) ** 2
    ramp = np.real(np.fft.rfft(h))  # |f| band-limited, f in cycles/pixel (rfft layout)
    f = np.fft.rfftfreq(n)  # 0 .. 0.5
    w = f / 0.5  # normalised 0..1 (Nyquist = 1)
    if name == "ramp":
        win = np.ones_like(f)
    elif name == "shepp-logan":
        win = np.sinc(w / 2.0)
    elif name == "cosine":
        win = np.cos(np.pi * w / 2.0)
    elif name == "hann":
        win = 0.5 + 0.5 * np.cos(np.pi * w)
    elif name == "hamming":
        win = 0.54 + 0.46 * np.cos(np.pi * w)
    elif name == "parzen":
        a = np.abs(w)
        win = np.where(a <= 0.5, 1 - 6 * a**2 + 6 * a**3, 2 * (1 - a) ** 3)
    else:  # "none"
        return np.ones_like(f)
    return ramp * win


def filter_response(filter: str, n: int) -> np.ndarray:  # the public parameter name
    """Real frequency response of an FBP filter.

    Parameters
    ----------
    filter
        One of :data:`FILTERS`.
    n
        FFT length (samples).

    Returns
    -------
    numpy.ndarray
        float64, rfft layout (length ``n // 2 + 1``, frequencies ``rfftfreq(n)`` in cycles per pixel).
    """
    return _response_np(check_filter(filter), int(n))


def filter_projections(
    projections: Array, *, filter: str = "ramp", shift_px: float = 0.0, pad_factor: float = 2.0
) -> Array:
    """Filter projections along columns, shifting them by ``shift_px`` in the same FFT.

    Parameters
    ----------
    projections
        ``(angle, row, col)`` float array (NumPy or CuPy).
    filter
        One of :data:`FILTERS`.
    shift_px
        Sub-pixel shift along columns applied as a phase ramp (``+`` moves content to larger column
        index). FBP passes ``(ncol - 1) / 2 - center`` to bring the rotation axis to the detector
        centre, so a centre sweep costs no extra FFT.
    pad_factor
        Columns are edge-padded to ``pad_factor * ncol`` (at least) against truncation artefacts and
        circular wrap-around.

    Returns
    -------
    Filtered ``(angle, row, col)`` float32 array, same namespace as the input.
    """
    xp = get_namespace(projections)
    fft = fft_module(xp)
    p = xp.asarray(projections, dtype=xp.float32)
    ncol = p.shape[-1]
    n = padded_length(ncol, pad_factor=pad_factor)
    left = (n - ncol) // 2
    right = n - ncol - left
    padded = xp.pad(p, [(0, 0)] * (p.ndim - 1) + [(left, right)], mode="edge")
    threads = {"workers": fft_workers()} if xp is np else {}
    spec = fft.rfft(padded, axis=-1, **threads)
    resp = xp.asarray(filter_response(filter, n))
    if shift_px:
        resp = resp * phase_ramp(n, float(shift_px), xp=xp)
    spec *= resp.astype(spec.dtype)
    out = fft.irfft(spec, n=n, axis=-1, **threads)[..., left : left + ncol]
    return out.astype(xp.float32, copy=False)
