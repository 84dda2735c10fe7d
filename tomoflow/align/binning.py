"""Detector binning for coarse-to-fine alignment: stacks down, volumes up, centres and shifts across.

A ``(angle, row, col)`` stack binned by ``(fr, fc)`` (rows, columns) has pixels ``fr x fc`` times the
size: shifts scale by the factors, the rotation axis maps as ``c_binned = (c - (fc - 1) / 2) / fc``
(binned column ``j`` covers full columns ``fc j .. fc j + fc - 1``, centred on ``fc j + (fc - 1) / 2``),
and a volume reconstructed in binned pixels holds attenuation per binned pixel, ``fc`` times the value
per full pixel. Partial bins at the far edges are filled by repeating the last row/column, which keeps
pixel ``0`` where it was, so no shift or centre offset is introduced. NumPy or CuPy in, same out.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tomoflow.backend import get_namespace

__all__ = ["bin_stack", "unbin_volume", "bin_center", "unbin_center"]


def bin_stack(stack: Any, rows: int, cols: int) -> Any:
    """Mean-bin an ``(angle, row, col)`` stack by ``rows`` x ``cols`` pixels.

    Parameters
    ----------
    stack
        ``(angle, row, col)`` array, NumPy or CuPy.
    rows, cols
        Binning factors (``>= 1``) along detector rows and columns.

    Returns
    -------
    ``(angle, ceil(row / rows), ceil(col / cols))`` float32 array, same namespace; the last partial
    bin of each axis averages the edge pixel repeated.
    """
    xp = get_namespace(stack)
    p = xp.asarray(stack)
    if rows == 1 and cols == 1:
        return p.astype(xp.float32, copy=False)
    n, r, c = (int(s) for s in p.shape)
    pad = ((0, 0), (0, (-r) % rows), (0, (-c) % cols))
    if pad[1][1] or pad[2][1]:
        p = xp.pad(p, pad, mode="edge")
    q = p.reshape(n, p.shape[1] // rows, rows, p.shape[2] // cols, cols)
    return q.mean(axis=(2, 4), dtype=xp.float64).astype(xp.float32)


def unbin_volume(volume: Any, rows: int, cols: int, shape: tuple[int, int, int]) -> Any:
    """A ``(row, y, x)`` volume reconstructed from a stack binned by ``rows`` x ``cols``, brought to the
    full-resolution grid ``shape``: nearest-neighbour repeat (rows by ``rows``, ``y`` and ``x`` by
    ``cols``), cropped or edge-padded to ``shape``, values divided by ``cols`` (attenuation per full
    pixel). A warm start for the full-resolution reconstruction, not an interpolation for display."""
    xp = get_namespace(volume)
    v = xp.asarray(volume, dtype=xp.float32)
    if rows > 1:
        v = xp.repeat(v, rows, axis=0)
    if cols > 1:
        v = xp.repeat(xp.repeat(v, cols, axis=1), cols, axis=2)
    v = v[: shape[0], : shape[1], : shape[2]]
    pad = tuple((0, max(0, int(t) - int(s))) for s, t in zip(v.shape, shape))
    if any(x for _, x in pad):
        v = xp.pad(v, pad, mode="edge")
    return v / np.float32(cols) if cols > 1 else v


def bin_center(center: float, cols: int) -> float:
    """Rotation-axis column (px) of a full-resolution stack in the stack binned by ``cols``."""
    return (float(center) - (cols - 1) / 2.0) / cols


def unbin_center(center: float, cols: int) -> float:
    """Inverse of :func:`bin_center`: a binned stack's axis column in full-resolution pixels."""
    return float(center) * cols + (cols - 1) / 2.0
