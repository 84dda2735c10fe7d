"""Sub-pixel image shift: the one shift function of tomoflow.

Used to apply synthetic jitter (:mod:`tomoflow.sim`) and to correct measured jitter (alignment). A
jitter ``(dy, dx)`` is how far the measured projection is displaced from where a perfect stage would
have put it (rows, columns; ``+dx`` moves content to larger column index). Correction therefore calls
:func:`shift_images` with ``-shifts``. Apply it once to raw data; never re-warp warped data.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tomoflow.backend import fft_module, get_namespace
from tomoflow.errors import InputError

__all__ = ["shift_images"]


def shift_images(images: Any, shifts: Any, *, pad: int | None = None) -> Any:
    """Shift each image by its own sub-pixel ``(dy, dx)`` with a Fourier phase ramp.

    Parameters
    ----------
    images
        ``(n, row, col)`` stack (or one ``(row, col)`` image), NumPy or CuPy, float.
    shifts
        ``(n, 2)`` displacements ``(dy, dx)`` in pixels (or one pair for a single image);
        ``+dx`` moves content towards larger column index.
    pad
        Edge-replicated padding (pixels) added on every side before the FFT so content does not wrap
        around; default ``ceil(max |shift|) + 2``.

    Returns
    -------
    Shifted stack, same shape, dtype float32 (or the input float dtype) and namespace as ``images``.
    Pixels uncovered by the shift take the nearest edge value.
    """
    xp = get_namespace(images)
    fft = fft_module(xp)
    imgs = xp.asarray(images)
    single = imgs.ndim == 2
    if single:
        imgs = imgs[None]
    if imgs.ndim != 3:
        raise InputError(f"shift_images expects (n, row, col) images, got shape {tuple(imgs.shape)}")
    sh = xp.asarray(shifts, dtype=xp.float64).reshape(-1, 2)
    if sh.shape[0] != imgs.shape[0]:
        raise InputError(f"{sh.shape[0]} shifts for {imgs.shape[0]} images")
    if not bool(xp.all(xp.isfinite(sh))):
        raise InputError("shifts contain NaN or Inf")
    out_dtype = imgs.dtype if imgs.dtype in (xp.float32, xp.float64) else xp.float32
    n, ny, nx = imgs.shape
    if pad is None:
        pad = int(np.ceil(float(xp.max(xp.abs(sh))) if sh.size else 0.0)) + 2
    padded = xp.pad(imgs.astype(xp.float32 if out_dtype == xp.float32 else xp.float64, copy=False),
                    ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    py, px = padded.shape[1:]
    ky = xp.fft.fftfreq(py).astype(xp.float64)
    kx = xp.fft.rfftfreq(px).astype(xp.float64)
    spec = fft.rfft2(padded, axes=(1, 2))
    ramp = xp.exp(-2j * np.pi * (sh[:, 0, None, None] * ky[None, :, None] + sh[:, 1, None, None] * kx[None, None, :]))
    if px % 2 == 0:
        # The Nyquist column of a real signal cannot carry a sub-pixel phase; keep it real.
        ramp[:, :, -1] = xp.cos(2 * np.pi * (sh[:, 0, None] * ky[None, :] + sh[:, 1, None] * kx[-1]))
    spec *= ramp.astype(spec.dtype, copy=False)
    out = fft.irfft2(spec, s=(py, px), axes=(1, 2))[:, pad : pad + ny, pad : pad + nx]
    out = out.astype(out_dtype, copy=False)
    return out[0] if single else out
