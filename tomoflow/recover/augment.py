"""Augmentation of a resolution-recovery training patch pair (same transform on input and target)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["augment_pair"]


def augment_pair(
    x: np.ndarray,
    y: np.ndarray,
    rng: np.random.Generator,
    *,
    flips: bool = True,
    permute: bool = True,
    gain: tuple[float, float] = (0.9, 1.1),
    offset: tuple[float, float] = (-0.05, 0.05),
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The same random flips, axis permutation, gain and offset applied to an (input, target) patch.

    Parameters
    ----------
    x, y
        ``(z, y, x)`` input and target patches (normalised), same shape.
    rng
        Random generator.
    flips
        Flip each axis with probability 1/2.
    permute
        Permute the axes at random (6 orders; the HR grid is isotropic).
    gain, offset
        Ranges of the uniform random gain and offset (normalised units); ``(1, 1)`` and ``(0, 0)`` turn
        them off. ``x' = gain * T(x) + offset``, ``y' = gain * T(y) + offset``.

    Returns
    -------
    x, y, info
        Contiguous float32 patches and the drawn ``{"perm", "flip", "gain", "offset"}``.
    """
    perm = tuple(int(v) for v in rng.permutation(3)) if permute else (0, 1, 2)
    flip = tuple(bool(v) for v in rng.random(3) < 0.5) if flips else (False, False, False)
    g = float(rng.uniform(*gain)) if gain[0] != gain[1] else float(gain[0])
    b = float(rng.uniform(*offset)) if offset[0] != offset[1] else float(offset[0])
    sl = tuple(slice(None, None, -1) if f else slice(None) for f in flip)

    def one(a: np.ndarray) -> np.ndarray:
        a = np.transpose(a, perm)[sl]
        return np.ascontiguousarray(np.float32(g) * a + np.float32(b), dtype=np.float32)

    return one(x), one(y), {"perm": list(perm), "flip": list(flip), "gain": g, "offset": b}
