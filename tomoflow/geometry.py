"""Slice and detector geometry shared by the kernels (:mod:`tomoflow.recon`, :mod:`tomoflow.sim`).

A slice is an ``(ny, nx)`` grid of unit pixels whose centre ``((ny - 1) / 2, (nx - 1) / 2)`` is on the
rotation axis. The rotation axis is a detector *column position* in pixels; a centred axis is at
:func:`center_column` ``= (n_cols - 1) / 2``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from tomoflow._checks import check_number
from tomoflow.errors import ConfigError

__all__ = ["center_column", "check_center", "check_slice_shape", "centered_grid", "circle_mask"]


def center_column(n_cols: int) -> float:
    """Column (pixels) of a rotation axis centred on a detector of ``n_cols`` columns: ``(n_cols - 1) / 2``."""
    return (n_cols - 1) / 2.0


def check_center(center: float | None, n_cols: int) -> float:
    """Rotation-axis column (pixels) on a detector of ``n_cols`` columns: ``center``, or
    :func:`center_column` when None.

    Raises
    ------
    ConfigError
        If ``center`` is not a finite number within ``(-n_cols, 2 n_cols)`` (far off the detector).
    """
    if center is None:
        return center_column(n_cols)
    return check_number(
        f"rotation center (detector columns 0 .. {n_cols - 1})",
        center,
        low=-n_cols,
        high=2 * n_cols,
        low_open=True,
        high_open=True,
    )


def check_slice_shape(shape: tuple[int, int] | None, n_cols: int) -> tuple[int, int]:
    """Slice shape ``(ny, nx)`` in pixels: ``shape`` (two positive integers), or ``(n_cols, n_cols)`` when None.

    Raises
    ------
    ConfigError
        If ``shape`` is not two positive integers.
    """
    if shape is None:
        return (int(n_cols), int(n_cols))
    try:
        ny, nx = (int(s) for s in shape)
        ok = ny >= 1 and nx >= 1 and (ny, nx) == tuple(shape)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"shape must be two positive integers (ny, nx), got {shape!r}")
    return ny, nx


def centered_grid(shape: tuple[int, int], *, xp: ModuleType = np) -> tuple[Any, Any]:
    """Pixel-centre coordinates of an ``(ny, nx)`` slice relative to its centre, in pixels.

    Returns
    -------
    yy, xx
        float64 arrays of shape ``(ny, 1)`` and ``(1, nx)`` (broadcast them for the full grid),
        namespace ``xp``.
    """
    ny, nx = (int(s) for s in shape)
    yy = (xp.arange(ny, dtype=xp.float64) - (ny - 1) / 2.0)[:, None]
    xx = (xp.arange(nx, dtype=xp.float64) - (nx - 1) / 2.0)[None, :]
    return yy, xx


def circle_mask(shape: tuple[int, int], *, radius: float | None = None, xp: ModuleType = np) -> Any:
    """Boolean ``(ny, nx)`` mask of the reconstruction circle around the slice centre.

    Parameters
    ----------
    shape
        ``(ny, nx)`` of the slice.
    radius
        Radius in pixels; default ``min(ny, nx) / 2``.
    xp
        Array namespace of the result (``numpy`` or ``cupy``).
    """
    yy, xx = centered_grid(shape, xp=xp)
    r = min(int(shape[0]), int(shape[1])) / 2.0 if radius is None else float(radius)
    return (yy**2 + xx**2) <= r * r
