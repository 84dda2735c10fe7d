"""Synthetic stage jitter: random per-projection displacements and their application.

Sign convention (docs/architecture.md): a jitter ``(dy, dx)`` is how far the measured projection is
displaced from where a perfect stage would have put it, in pixels (rows, columns); ``+dx`` moves the
content towards larger column index. Alignment estimates it; correction shifts by ``(-dy, -dx)``.
The shift itself is :func:`tomoflow.recon.shift.shift_images`, the one sub-pixel shift of tomoflow.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tomoflow._checks import check_int, check_number, random_generator
from tomoflow._typing import Array, ArrayLike
from tomoflow.errors import InputError
from tomoflow.recon.shift import shift_images

__all__ = ["random_jitter", "apply_jitter"]


def random_jitter(n_angles: int, jitter_px: float, *, seed: Any = None, vertical: bool = True) -> np.ndarray:
    """Independent uniform random jitter of every projection.

    Parameters
    ----------
    n_angles
        Number of projections.
    jitter_px
        Half-range ``J`` in pixels: each component is uniform in ``[-J, +J]``; must be ``>= 0``.
    seed
        Random seed (anything :func:`numpy.random.default_rng` accepts).
    vertical
        Also jitter along rows (``dy``); if False ``dy = 0``.

    Returns
    -------
    numpy.ndarray
        ``(n_angles, 2)`` float64 displacements ``(dy, dx)`` in pixels.
    """
    n_angles = check_int("n_angles", n_angles, low=0)
    amp = check_number("jitter amplitude jitter_px (pixels)", jitter_px, low=0.0)
    shifts = random_generator(seed).uniform(-amp, amp, size=(n_angles, 2))
    if not vertical:
        shifts[:, 0] = 0.0
    return shifts


def apply_jitter(projections: Array, shifts: ArrayLike) -> Array:
    """Displace every projection by its jitter ``(dy, dx)`` (sub-pixel, Fourier).

    Parameters
    ----------
    projections
        ``(angle, row, col)`` stack (NumPy or CuPy), typically noise-free line integrals.
    shifts
        ``(angle, 2)`` jitter ``(dy, dx)`` in pixels; ``+dx`` moves content to larger column index.

    Returns
    -------
    Jittered stack, same shape and namespace (float32 unless float64 input). Pixels uncovered at the
    border take the nearest edge value.
    """
    sh = np.asarray(shifts, dtype=np.float64)
    if sh.ndim != 2 or sh.shape[1] != 2:
        raise InputError(
            f"jitter shifts must be (n_angles, 2) = (dy, dx) per projection, got shape {sh.shape}", dataset="shifts"
        )
    if getattr(projections, "ndim", 0) != 3:
        raise InputError(
            f"projections must be (angle, row, col), got shape {tuple(getattr(projections, 'shape', ()))}",
            dataset="projections",
        )
    return shift_images(projections, sh)
