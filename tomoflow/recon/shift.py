"""Sub-pixel shifts: the one shift function of tomoflow, and the Fourier phase ramp behind every shift.

:func:`shift_images` is used to apply synthetic jitter (:mod:`tomoflow.sim`) and to correct measured
jitter (alignment). A jitter ``(dy, dx)`` is how far the measured projection is displaced from where a
perfect stage would have put it (rows, columns; ``+dx`` moves content to larger column index).
Correction therefore calls :func:`shift_images` with ``-shifts``. Apply it once to raw data; never
re-warp warped data.

:func:`phase_ramp` is the Fourier multiplier of a shift along one axis. It is shared by
:func:`shift_images`, the FBP filter (which moves the rotation axis to the detector centre in the
same FFT, :mod:`tomoflow.recon.filters`) and the centre estimators (:mod:`tomoflow.recon.center`).
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from tomoflow._checks import as_stack, check_int
from tomoflow._typing import Array, ArrayLike
from tomoflow.backend import fft_module, get_namespace
from tomoflow.errors import InputError

__all__ = ["shift_images", "phase_ramp"]


def phase_ramp(n: int, shift: ArrayLike, *, xp: ModuleType | None = None, rfft: bool = True) -> Array:
    """Fourier multiplier that shifts a real signal of ``n`` samples by ``shift`` samples.

    Multiplying the FFT of a signal by it and transforming back moves the content by ``shift``
    samples towards larger index (circularly; pad against wrap-around).

    Parameters
    ----------
    n
        Signal (FFT) length in samples.
    shift
        Shift in samples (pixels), a scalar or an array of any shape (one ramp per value).
    xp
        Array namespace of the result; default the namespace of ``shift``.
    rfft
        True: the ``rfft`` layout, ``n // 2 + 1`` bins at ``rfftfreq(n)``; False: the full ``fft``
        layout, ``n`` bins at ``fftfreq(n)``.

    Returns
    -------
    complex128 array of shape ``shape(shift) + (bins,)``: ``exp(-2 pi i f shift)`` with ``f`` in
    cycles per sample. For even ``n`` the Nyquist bin (``f = +-1/2``, the same bin) gets the real
    ``cos(pi shift)``, the mean of the ramps at ``+1/2`` and ``-1/2``: a real signal has no sub-pixel
    phase there, and a real multiplier keeps the shifted signal real (Hermitian spectrum).
    """
    xp = get_namespace(shift) if xp is None else xp
    f = xp.asarray(np.fft.rfftfreq(n) if rfft else np.fft.fftfreq(n))
    s = xp.asarray(shift, dtype=xp.float64)[..., None]
    ramp = xp.exp(-2j * np.pi * f * s)
    if n % 2 == 0:
        ramp[..., -1 if rfft else n // 2] = xp.cos(np.pi * s[..., 0])
    return ramp


def shift_images(images: Array, shifts: ArrayLike, *, pad: int | None = None) -> Array:
    """Shift each image by its own sub-pixel ``(dy, dx)`` with a Fourier phase ramp.

    Parameters
    ----------
    images
        ``(n, row, col)`` stack (or one ``(row, col)`` image), NumPy or CuPy, float.
    shifts
        ``(n, 2)`` displacements ``(dy, dx)`` in pixels (or one pair for a single image);
        ``+dx`` moves content towards larger column index.
    pad
        Edge-replicated padding (pixels, ``>= 0``) added on every side before the FFT so content does
        not wrap around; default ``ceil(max |shift|) + 2``.

    Returns
    -------
    Shifted stack, same shape, dtype float32 (or the input float dtype) and namespace as ``images``.
    Pixels uncovered by the shift take the nearest edge value.
    """
    xp = get_namespace(images)
    fft = fft_module(xp)
    imgs, single = as_stack(xp.asarray(images), what="images", axes=("image", "row", "col"))
    sh = xp.asarray(shifts, dtype=xp.float64).reshape(-1, 2)
    if sh.shape[0] != imgs.shape[0]:
        raise InputError(f"{sh.shape[0]} shifts for {imgs.shape[0]} images", dataset="shifts")
    if not bool(xp.all(xp.isfinite(sh))):
        raise InputError("shifts contain NaN or Inf", dataset="shifts")
    out_dtype = imgs.dtype if imgs.dtype in (xp.float32, xp.float64) else xp.float32
    n, ny, nx = imgs.shape
    if pad is None:
        pad = int(np.ceil(float(xp.max(xp.abs(sh))) if sh.size else 0.0)) + 2
    pad = check_int("pad", pad, low=0)
    padded = xp.pad(
        imgs.astype(xp.float32 if out_dtype == xp.float32 else xp.float64, copy=False),
        ((0, 0), (pad, pad), (pad, pad)),
        mode="edge",
    )
    py, px = padded.shape[1:]
    spec = fft.rfft2(padded, axes=(1, 2))
    ramp = phase_ramp(py, sh[:, 0], xp=xp, rfft=False)[:, :, None] * phase_ramp(px, sh[:, 1], xp=xp)[:, None, :]
    spec *= ramp.astype(spec.dtype, copy=False)
    out = fft.irfft2(spec, s=(py, px), axes=(1, 2))[:, pad : pad + ny, pad : pad + nx]
    out = out.astype(out_dtype, copy=False)
    return out[0] if single else out
