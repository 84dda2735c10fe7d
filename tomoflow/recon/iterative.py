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

from tomoflow._checks import as_stack, check_finite, check_int, check_number, validate_angles
from tomoflow._typing import Array, ArrayLike
from tomoflow.backend import get_namespace
from tomoflow.errors import ConfigError, InputError
from tomoflow.geometry import check_center, check_slice_shape, circle_mask
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


@dataclass
class _Problem:
    """Checked inputs of an iterative reconstruction."""

    xp: Any
    p: Any  # (angle, row, col) float32 line integrals
    ang: np.ndarray  # degrees
    single: bool  # a 2-D sinogram was given
    center: float
    shape: tuple[int, int]
    n_iter: int
    tol: float | None
    mask: Any  # (1, y, x) float32 or None

    @property
    def n_cols(self) -> int:
        return int(self.p.shape[-1])

    def start(self, x0: Any, default: Callable[[], Any]) -> Any:
        """Initial estimate ``(z, y, x)``: a copy of the warm start ``x0``, else ``default()``."""
        if x0 is None:
            return default()
        x = self.xp.array(x0, dtype=self.xp.float32)
        expected = (self.p.shape[1], *self.shape)
        if tuple(x.shape) != expected:
            raise InputError(f"warm start x0 has shape {tuple(x.shape)}, expected {expected}", dataset="x0")
        return x


def _prepare(
    projections: Any,
    angles_deg: Any,
    center: float | None,
    n_iter: int,
    tol: float | None,
    shape: tuple[int, int] | None,
    mask: bool,
) -> _Problem:
    xp = get_namespace(projections)
    p, single = as_stack(xp.asarray(projections, dtype=xp.float32), axis=1)
    ang = validate_angles(angles_deg, p.shape[0])
    check_finite(p, "projections", "normalise them first (tomoflow.recon.normalize)")
    n_iter = check_int("n_iter", n_iter)
    if tol is not None:
        tol = check_number("tol", tol, low=0.0, low_open=True)
    ncol = p.shape[-1]
    shp = check_slice_shape(shape, ncol)
    m = circle_mask(shp, xp=xp)[None].astype(xp.float32) if mask else None
    return _Problem(xp, p, ang, single, check_center(center, ncol), shp, n_iter, tol, m)


_SUMS_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def _system_sums(pb: _Problem, backend: str) -> tuple[Any, Any]:
    """Row sums ``A 1`` ``(angle, 1, col)`` and column sums ``A^T 1`` ``(1, y, x)`` of the (masked) system.

    They depend only on the geometry, so NumPy results are cached (every slab of a volume shares them).
    """
    xp, ang, center, ncol, shape, m = pb.xp, pb.ang, pb.center, pb.n_cols, pb.shape, pb.mask
    key = (ang.tobytes(), center, ncol, tuple(shape), m is not None, backend)
    if xp is np and key in _SUMS_CACHE:
        return _SUMS_CACHE[key]
    ones = xp.ones((1, *shape), dtype=xp.float32) if m is None else m.copy()
    row = project(ones, ang, center=center, n_cols=ncol, backend=backend)
    col = backproject(xp.ones((ang.size, 1, ncol), dtype=xp.float32), ang, center=center, shape=shape, backend=backend)
    if m is not None:
        col = col * m
    if xp is np:
        if len(_SUMS_CACHE) >= 4:
            _SUMS_CACHE.pop(next(iter(_SUMS_CACHE)))
        _SUMS_CACHE[key] = (row, col)
    return row, col


def _record_step(
    info: IterationInfo,
    xp: Any,
    it: int,
    x_old: Any,
    x_new: Any,
    callback: Callable[[int, Any], None] | None,
    tol: float | None,
) -> bool:
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


def mlem(
    projections: Array,
    angles_deg: ArrayLike,
    *,
    center: float | None = None,
    n_iter: int = 20,
    x0: Array | None = None,
    tol: float | None = None,
    mask: bool = False,
    shape: tuple[int, int] | None = None,
    callback: Callable[[int, Any], None] | None = None,
    return_info: bool = False,
    backend: str = "auto",
    subsets: int = 1,
    weights: ArrayLike | None = None,
) -> Any:
    """Maximum-likelihood expectation maximisation (Shepp & Vardi) for parallel-beam data.

    ``x <- x / A^T 1 * A^T (y / A x)``. Negative data are clipped to zero (MLEM needs ``y >= 0``).
    With ``subsets > 1`` it is OSEM (Hudson & Larkin 1994): every iteration sweeps ``subsets``
    interleaved groups of angles (every ``subsets``-th angle in angle order) and updates ``x`` after
    each with that group's data, ``x <- x / A_S^T 1 * A_S^T (y_S / A_S x)``: about ``subsets`` times the
    progress of an MLEM iteration for the same projector work, early on (it does not converge to the
    exact maximum-likelihood point; use it where speed matters more than the last iterations).
    With ``weights`` ``w`` (one per datum) it maximises the weighted likelihood,
    ``x <- x / A^T w * A^T (w y / A x)``: a datum of weight 0 is missing (it neither pulls the estimate
    nor counts in the sensitivity), which is how data known to be invalid are left out (e.g. the
    pixels a shift pulled in from beyond the detector's edge).

    Parameters
    ----------
    projections
        ``(angle, row, col)`` line integrals (or one ``(angle, col)`` sinogram), NumPy or CuPy.
    angles_deg
        ``(angle,)`` angles in degrees.
    center
        Rotation axis column (pixels); default ``(ncol - 1) / 2``.
    n_iter
        Maximum number of iterations, ``>= 1``.
    x0
        Warm start ``(z, y, x)``; default a uniform volume with the data's mean line integral.
    tol
        Stop when ``||x_k+1 - x_k|| / ||x_k|| < tol`` (``> 0``).
    mask
        Restrict the estimate to the reconstruction circle.
    shape
        Slice shape ``(ny, nx)`` in pixels; default ``(ncol, ncol)``.
    callback
        Called as ``callback(iteration, x)`` after every iteration (progress bars).
    return_info
        Also return an :class:`IterationInfo`.
    backend
        See :func:`tomoflow.recon.project`.
    subsets
        Ordered subsets of angles (``1 <= subsets <= n_angles``); 1 (default) is MLEM.
    weights
        Per-datum weights, the shape of ``projections``, finite and ``>= 0`` (0 = missing datum);
        default all 1. A slice with no datum of positive weight comes out 0 (no evidence), like a
        voxel no ray reaches.

    Returns
    -------
    ``(z, y, x)`` float32 volume (and the info when ``return_info``; with subsets the objective of an
    iteration is the sum of the subsets' KL divergences before their updates).

    Raises
    ------
    InputError
        Projections not 2-D/3-D or not finite, angles not matching them, ``x0`` of the wrong shape,
        ``weights`` of the wrong shape, negative or not finite.
    ConfigError
        ``n_iter``, ``tol``, ``shape``, ``center``, ``subsets`` or ``backend`` out of range / unknown.
    """
    pb = _prepare(projections, angles_deg, center, n_iter, tol, shape, mask)
    subsets = check_int("subsets", subsets, low=1)
    if subsets > pb.ang.size:
        raise ConfigError(f"subsets must be at most the number of angles ({pb.ang.size}), got {subsets}")
    xp, m = pb.xp, pb.mask
    w = _data_weights(pb, weights)
    nz, (ny, nx) = pb.p.shape[1], pb.shape
    y = xp.maximum(pb.p, 0)
    groups = _angle_subsets(pb.ang, subsets)
    sens = [xp.where(c > 1e-6, c, xp.inf) for c in _subset_sensitivities(pb, groups, backend, w)]

    def uniform() -> Any:
        level = float(xp.mean(y)) / max(1.0, float(min(ny, nx)) * 0.7)
        return xp.full((nz, ny, nx), max(level, 1e-6), dtype=xp.float32)

    x = pb.start(x0, uniform)
    if x0 is not None:
        x = xp.maximum(x, 0) + xp.float32(1e-8)
    if m is not None:
        x *= m
    info = IterationInfo()
    eps = xp.float32(1e-12)
    geom: dict[str, Any] = {"center": pb.center, "backend": backend}
    for it in range(pb.n_iter):
        x_new, objective = x, 0.0
        for idx, safe_sens in zip(groups, sens):
            ys, ang = y[idx], pb.ang[idx]
            ax = project(x_new, ang, n_cols=pb.n_cols, **geom)
            ratio = xp.where(ax > eps, ys / xp.maximum(ax, eps), xp.where(ys > 0, xp.float32(1.0), xp.float32(0.0)))
            if w is not None:
                ratio *= w[idx]
            objective += _kl(xp, ys, ax, None if w is None else w[idx])
            x_new = x_new * (backproject(ratio, ang, shape=pb.shape, **geom) / safe_sens)
        info.objective.append(objective)
        stop = _record_step(info, xp, it, x, x_new, callback, pb.tol)
        x = x_new
        if stop:
            break
    out = x[0] if pb.single else x
    return (out, info) if return_info else out


def _angle_subsets(angles_deg: np.ndarray, subsets: int) -> list[Any]:
    """Index groups of OSEM: every ``subsets``-th angle in angle order (folded onto [0, 180)), so each
    group spans the whole half-turn; ``[slice(None)]`` (all, no copy) for one subset."""
    if subsets == 1:
        return [slice(None)]
    order = np.argsort(np.mod(angles_deg, 180.0), kind="stable")
    return [np.sort(order[k::subsets]) for k in range(subsets)]


def _data_weights(pb: _Problem, weights: Any) -> Any:
    """``weights`` checked and shaped like ``pb.p`` (float32), or None for all ones."""
    if weights is None:
        return None
    xp = pb.xp
    w, _ = as_stack(xp.asarray(weights, dtype=xp.float32), axis=1)
    if tuple(w.shape) != tuple(pb.p.shape):
        raise InputError(
            f"weights have shape {tuple(xp.asarray(weights).shape)}, expected the projections' shape", dataset="weights"
        )
    check_finite(w, "weights")
    if bool(xp.any(w < 0)):
        raise InputError("weights must be >= 0 (0 marks a missing datum)", dataset="weights")
    return w


def _subset_sensitivities(pb: _Problem, groups: list[Any], backend: str, weights: Any = None) -> list[Any]:
    """Column sums ``A_S^T w`` of each group's system (the full one for one group): ``(1, y, x)`` for
    unit weights, ``(z, y, x)`` with ``weights``."""
    if len(groups) == 1 and weights is None:
        return [_system_sums(pb, backend)[1]]
    xp = pb.xp
    out = []
    for idx in groups:
        w = xp.ones((pb.ang[idx].size, 1, pb.n_cols), dtype=xp.float32) if weights is None else weights[idx]
        col = backproject(w, pb.ang[idx], center=pb.center, shape=pb.shape, backend=backend)
        out.append(col if pb.mask is None else col * pb.mask)
    return out


def _kl(xp: Any, y: Any, ax: Any, w: Any = None) -> float:
    ax = xp.maximum(ax, 1e-12)
    pos = y > 0
    term = ax - y + xp.where(pos, y * xp.log(xp.where(pos, y, 1) / ax), 0)
    return float(xp.sum(term if w is None else w * term, dtype=xp.float64))


def sirt(
    projections: Array,
    angles_deg: ArrayLike,
    *,
    center: float | None = None,
    n_iter: int = 50,
    x0: Array | None = None,
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

    Raises
    ------
    InputError, ConfigError
        As :func:`mlem`; ``ConfigError`` also for ``relaxation`` outside (0, 2).
    """
    pb = _prepare(projections, angles_deg, center, n_iter, tol, shape, mask)
    relaxation = check_number("relaxation", relaxation, low=0.0, high=2.0, low_open=True, high_open=True)
    xp, p = pb.xp, pb.p
    row, col = _system_sums(pb, backend)
    rinv = xp.where(row > 1e-6, 1.0 / xp.maximum(row, 1e-6), 0).astype(xp.float32)
    cinv = xp.where(col > 1e-6, relaxation / xp.maximum(col, 1e-6), 0).astype(xp.float32)
    x = pb.start(x0, lambda: xp.zeros((p.shape[1], *pb.shape), dtype=xp.float32))
    info = IterationInfo()
    geom: dict[str, Any] = {"center": pb.center, "backend": backend}
    for it in range(pb.n_iter):
        res = p - project(x, pb.ang, n_cols=pb.n_cols, **geom)
        info.objective.append(0.5 * float(xp.sum(res * res * rinv, dtype=xp.float64)))
        upd = cinv * backproject(res * rinv, pb.ang, shape=pb.shape, **geom)
        x_new = x + upd
        if positivity:
            x_new = xp.maximum(x_new, 0)
        stop = _record_step(info, xp, it, x, x_new, callback, pb.tol)
        x = x_new
        if stop:
            break
    out = x[0] if pb.single else x
    return (out, info) if return_info else out
