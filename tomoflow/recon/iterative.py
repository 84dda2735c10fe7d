"""Iterative reconstruction: MLEM (Poisson likelihood) and SIRT (weighted least squares).

Both use the matched projector pair of :mod:`tomoflow.recon.projector`, start from a warm start if
given, keep the estimate non-negative (MLEM by construction, SIRT by clipping when ``positivity``)
and stop after ``n_iter`` iterations or earlier when the relative update falls below ``tol``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tomoflow.backend import get_namespace, to_numpy
from tomoflow.errors import InputError
from tomoflow.recon.fbp import circle_mask
from tomoflow.recon.projector import backproject, project

__all__ = ["mlem", "sirt", "IterationInfo"]

log = logging.getLogger(__name__)


@dataclass
class IterationInfo:
    """What an iterative reconstruction did.

    Attributes
    ----------
    objective
        Objective after each iteration: Poisson KL divergence ``sum(Ax - y + y log(y / Ax))`` for
        MLEM, weighted squared residual ``||y - Ax||^2_R / 2`` for SIRT.
    relative_update
        ``||x_k+1 - x_k|| / ||x_k||`` after each iteration.
    n_iter
        Iterations run.
    converged
        True when stopped by ``tol``.
    """

    objective: list[float] = field(default_factory=list)
    relative_update: list[float] = field(default_factory=list)
    n_iter: int = 0
    converged: bool = False


def _prepare(projections: Any, angles_deg: Any, n_iter: int, tol: float | None):
    xp = get_namespace(projections)
    p = xp.asarray(projections, dtype=xp.float32)
    single = p.ndim == 2
    if single:
        p = p[:, None, :]
    if p.ndim != 3:
        raise InputError(f"expected (angle, row, col) projections, got shape {tuple(p.shape)}")
    ang = np.asarray(to_numpy(angles_deg), dtype=np.float64).reshape(-1)
    if ang.size != p.shape[0]:
        raise InputError(f"{ang.size} angles for {p.shape[0]} projections")
    if not bool(xp.all(xp.isfinite(p))):
        raise InputError("projections contain NaN or Inf; normalise them first (tomoflow.recon.normalize)")
    if int(n_iter) < 1:
        raise InputError(f"n_iter must be >= 1, got {n_iter}")
    if tol is not None and not (tol > 0):
        raise InputError(f"tol must be > 0, got {tol}")
    return xp, p, ang, single


_SUMS_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def _system_sums(xp: Any, ang: np.ndarray, center: float | None, ncol: int, shape: tuple[int, int], m: Any,
                 backend: str) -> tuple[Any, Any]:
    """Row sums ``A 1`` ``(angle, 1, col)`` and column sums ``A^T 1`` ``(1, y, x)`` of the (masked) system.

    They depend only on the geometry, so NumPy results are cached (every slab of a volume shares them).
    """
    key = (ang.tobytes(), center, ncol, tuple(shape), m is not None, backend)
    if xp is np and key in _SUMS_CACHE:
        return _SUMS_CACHE[key]
    ones = xp.ones((1, *shape), dtype=xp.float32) if m is None else m.copy()
    row = project(ones, ang, center, ncol, backend=backend)
    col = backproject(xp.ones((ang.size, 1, ncol), dtype=xp.float32), ang, center, shape, backend=backend)
    if m is not None:
        col = col * m
    if xp is np:
        if len(_SUMS_CACHE) >= 4:
            _SUMS_CACHE.pop(next(iter(_SUMS_CACHE)))
        _SUMS_CACHE[key] = (row, col)
    return row, col


def _record_step(info: IterationInfo, xp: Any, it: int, x_old: Any, x_new: Any,
                 callback: Callable[[int, Any], None] | None, tol: float | None) -> bool:
    """Book-keep one iteration (relative update, callback); True when ``tol`` is reached."""
    norm = float(xp.linalg.norm(x_old.ravel()))
    rel = float(xp.linalg.norm((x_new - x_old).ravel())) / norm if norm > 0 else math.inf
    info.relative_update.append(rel)
    info.n_iter = it + 1
    if callback is not None:
        callback(it, x_new)
    if tol is not None and rel < tol:
        info.converged = True
        return True
    return False


def _mask_for(xp: Any, shape: tuple[int, int], mask: bool) -> Any:
    return circle_mask(shape, xp)[None].astype(xp.float32) if mask else None


def mlem(
    projections: Any,
    angles_deg: Any,
    center: float | None = None,
    n_iter: int = 20,
    *,
    x0: Any = None,
    tol: float | None = None,
    mask: bool = False,
    shape: tuple[int, int] | None = None,
    callback: Callable[[int, Any], None] | None = None,
    return_info: bool = False,
    backend: str = "auto",
) -> Any:
    """Maximum-likelihood expectation maximisation (Shepp & Vardi) for parallel-beam data.

    ``x <- x / A^T 1 * A^T (y / A x)``. Negative data are clipped to zero (MLEM needs ``y >= 0``).

    Parameters
    ----------
    projections
        ``(angle, row, col)`` line integrals (or one ``(angle, col)`` sinogram), NumPy or CuPy.
    angles_deg
        Angles in degrees.
    center
        Rotation axis column (pixels); default ``(ncol - 1) / 2``.
    n_iter
        Maximum number of iterations.
    x0
        Warm start ``(z, y, x)``; default a uniform volume with the data's mean line integral.
    tol
        Stop when ``||x_k+1 - x_k|| / ||x_k|| < tol``.
    mask
        Restrict the estimate to the reconstruction circle.
    shape
        Slice shape ``(ny, nx)``; default ``(ncol, ncol)``.
    callback
        Called as ``callback(iteration, x)`` after every iteration (progress bars).
    return_info
        Also return an :class:`IterationInfo`.

    Returns
    -------
    ``(z, y, x)`` float32 volume (and the info when ``return_info``).
    """
    xp, p, ang, single = _prepare(projections, angles_deg, n_iter, tol)
    na, nz, ncol = p.shape
    ny, nx = shape if shape is not None else (ncol, ncol)
    y = xp.maximum(p, 0)
    m = _mask_for(xp, (ny, nx), mask)
    _, col = _system_sums(xp, ang, center, ncol, (ny, nx), m, backend)
    safe_sens = xp.where(col > 1e-6, col, xp.inf)
    if x0 is None:
        level = float(xp.mean(y)) / max(1.0, float(min(ny, nx)) * 0.7)
        x = xp.full((nz, ny, nx), max(level, 1e-6), dtype=xp.float32)
    else:
        x = xp.array(x0, dtype=xp.float32)
        if tuple(x.shape) != (nz, ny, nx):
            raise InputError(f"warm start x0 has shape {tuple(x.shape)}, expected {(nz, ny, nx)}")
        x = xp.maximum(x, 0) + xp.float32(1e-8)
    if m is not None:
        x *= m
    info = IterationInfo()
    eps = xp.float32(1e-12)
    for it in range(int(n_iter)):
        ax = project(x, ang, center, ncol, backend=backend)
        ratio = xp.where(ax > eps, y / xp.maximum(ax, eps), xp.where(y > 0, xp.float32(1.0), xp.float32(0.0)))
        info.objective.append(_kl(xp, y, ax))
        x_new = x * (backproject(ratio, ang, center, (ny, nx), backend=backend) / safe_sens)
        stop = _record_step(info, xp, it, x, x_new, callback, tol)
        x = x_new
        if stop:
            break
    out = x[0] if single else x
    return (out, info) if return_info else out


def _kl(xp: Any, y: Any, ax: Any) -> float:
    ax = xp.maximum(ax, 1e-12)
    pos = y > 0
    term = xp.where(pos, y * xp.log(xp.where(pos, y, 1) / ax), 0)
    return float(xp.sum(ax - y + term, dtype=xp.float64))


def sirt(
    projections: Any,
    angles_deg: Any,
    center: float | None = None,
    n_iter: int = 50,
    *,
    x0: Any = None,
    tol: float | None = None,
    positivity: bool = True,
    mask: bool = False,
    shape: tuple[int, int] | None = None,
    relaxation: float = 1.0,
    callback: Callable[[int, Any], None] | None = None,
    return_info: bool = False,
    backend: str = "auto",
) -> Any:
    """Simultaneous iterative reconstruction technique.

    ``x <- x + lambda * C A^T R (y - A x)`` with ``R = 1 / A 1`` (ray lengths) and ``C = 1 / A^T 1``.
    Parameters as in :func:`mlem`, plus ``positivity`` (clip negative voxels to zero after each
    update) and ``relaxation`` (``lambda``, 0 < lambda < 2).

    Returns
    -------
    ``(z, y, x)`` float32 volume (and an :class:`IterationInfo` when ``return_info``).
    """
    xp, p, ang, single = _prepare(projections, angles_deg, n_iter, tol)
    if not (0 < relaxation < 2):
        raise InputError(f"relaxation must be in (0, 2), got {relaxation}")
    na, nz, ncol = p.shape
    ny, nx = shape if shape is not None else (ncol, ncol)
    m = _mask_for(xp, (ny, nx), mask)
    row, col = _system_sums(xp, ang, center, ncol, (ny, nx), m, backend)
    rinv = xp.where(row > 1e-6, 1.0 / xp.maximum(row, 1e-6), 0).astype(xp.float32)
    cinv = xp.where(col > 1e-6, relaxation / xp.maximum(col, 1e-6), 0).astype(xp.float32)
    if x0 is None:
        x = xp.zeros((nz, ny, nx), dtype=xp.float32)
    else:
        x = xp.array(x0, dtype=xp.float32)
        if tuple(x.shape) != (nz, ny, nx):
            raise InputError(f"warm start x0 has shape {tuple(x.shape)}, expected {(nz, ny, nx)}")
    info = IterationInfo()
    for it in range(int(n_iter)):
        res = p - project(x, ang, center, ncol, backend=backend)
        info.objective.append(0.5 * float(xp.sum(res * res * rinv, dtype=xp.float64)))
        upd = cinv * backproject(res * rinv, ang, center, (ny, nx), backend=backend)
        x_new = x + upd
        if positivity:
            x_new = xp.maximum(x_new, 0)
        stop = _record_step(info, xp, it, x, x_new, callback, tol)
        x = x_new
        if stop:
            break
    out = x[0] if single else x
    return (out, info) if return_info else out
