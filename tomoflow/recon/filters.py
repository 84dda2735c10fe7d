"""FBP filters in the frequency domain, with the rotation centre applied as a phase ramp.

The ramp is built from the band-limited spatial-domain kernel (Kak & Slaney eq. 61:
``h(0) = 1/4``, ``h(n) = -1 / (pi n)^2`` for odd ``n``, 0 for even ``n``) and transformed, which avoids
the DC bias of a sampled ``|f|``. Windows multiply it: ``shepp-logan`` (sinc), ``cosine``, ``hann``,
``hamming``, ``parzen``.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from tomoflow.backend import fft_module, fft_workers, get_namespace
from tomoflow.errors import InputError

__all__ = ["FILTERS", "filter_response", "padded_length", "filter_projections"]

FILTERS = ("ramp", "shepp-logan", "cosine", "hann", "hamming", "parzen", "none")


def padded_length(n_cols: int, pad_factor: float = 2.0) -> int:
    """FFT length used to filter ``n_cols`` columns: at least ``pad_factor * n_cols``, 5-smooth."""
    import scipy.fft

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
    if name in ("ramp", "ram-lak"):
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
    elif name == "none":
        return np.ones_like(f)
    else:
        raise InputError(f"unknown FBP filter {name!r}; choose one of {', '.join(FILTERS)}")
    return ramp * win


def filter_response(name: str, n: int) -> np.ndarray:
    """Real frequency response (rfft layout, length ``n // 2 + 1``) of filter ``name`` for FFT length ``n``."""
    return _response_np(name.lower(), int(n))


def filter_projections(
    projections: Any, filter_name: str = "ramp", *, shift_px: float = 0.0, pad_factor: float = 2.0
) -> Any:
    """Filter projections along columns, shifting them by ``shift_px`` in the same FFT.

    Parameters
    ----------
    projections
        ``(angle, row, col)`` float array (NumPy or CuPy).
    filter_name
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
    n = padded_length(ncol, pad_factor)
    left = (n - ncol) // 2
    right = n - ncol - left
    padded = xp.pad(p, [(0, 0)] * (p.ndim - 1) + [(left, right)], mode="edge")
    threads = {"workers": fft_workers()} if xp is np else {}
    spec = fft.rfft(padded, axis=-1, **threads)
    resp = xp.asarray(filter_response(filter_name, n))
    if shift_px:
        f = xp.asarray(np.fft.rfftfreq(n))
        ph = xp.exp(-2j * np.pi * f * float(shift_px))
        if n % 2 == 0:
            ph[-1] = np.cos(2 * np.pi * 0.5 * float(shift_px))
        resp = resp * ph
    spec *= resp.astype(spec.dtype)
    out = fft.irfft(spec, n=n, axis=-1, **threads)[..., left : left + ncol]
    return out.astype(xp.float32, copy=False)
