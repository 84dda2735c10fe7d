"""Parallel-beam forward projector and its exact adjoint (backprojector).

Geometry
--------
A slice is an ``(ny, nx)`` pixel grid of unit pixels; the rotation axis passes through the slice
centre ``(cy, cx) = ((ny - 1) / 2, (nx - 1) / 2)`` and is parallel to the volume's z axis (detector
rows). Pixel ``(y, x)`` has coordinates ``u = x - cx``, ``v = y - cy``. At angle ``theta`` its centre
projects onto detector column::

    s = u * cos(theta) + v * sin(theta) + center

``center`` is the column of the rotation axis on the detector (pixels); ``(ncol - 1) / 2`` is a
detector centred on the axis. At ``theta = 0`` columns see ``x`` (a sum along y); at 90 degrees they
see ``y``.

Model
-----
Pixel-driven with a triangle footprint: pixel ``(y, x)`` deposits its value into the two detector
columns around ``s`` with triangle weights of half-width ``h = max(|cos|, |sin|)`` and area 1
(the transpose of Joseph's ray-driven interpolation, the model of astra's ``linear`` projector; a
plain linear splat of half-width 1 ripples at 45 degrees). :func:`backproject` with the default
``model="adjoint"`` gathers with exactly the same weights, so ``<A x, y> == <x, A^T y>`` to rounding;
``model="interpolate"`` gathers with linear interpolation (``h = 1``, weights summing to 1), the
backprojection of filtered backprojection.

Backends
--------
One model, two code paths: a generic array-namespace path (NumPy or CuPy: per-angle gather /
``bincount`` scatter, used on the GPU) and a compiled CPU path (numba, tiled for cache reuse and
vectorised along z, used for NumPy inputs). Both compute the same operator; a test checks they agree.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from tomoflow.backend import get_namespace
from tomoflow.errors import InputError

__all__ = ["project", "backproject", "forward_project_slab", "backproject_slab", "centre_column"]

log = logging.getLogger(__name__)

_TILE = 16  # pixel tile edge of the compiled backprojector (cache blocking)
_ZBLOCK = 32  # slices processed together by the compiled kernels (SIMD along z)


def centre_column(n_cols: int) -> float:
    """Column of a rotation axis centred on a detector of ``n_cols`` columns: ``(n_cols - 1) / 2``."""
    return (n_cols - 1) / 2.0


# ----------------------------------------------------------------------------- compiled CPU path
def _compiled() -> Any:
    """The numba kernel module, or None when numba is unavailable."""
    try:
        from tomoflow.recon import _projector_numba
    except ImportError:  # pragma: no cover - numba is a dependency, but stay usable without it
        return None
    return _projector_numba


# ----------------------------------------------------------------------------- generic xp path
def _pixel_coords(xp: Any, ny: int, nx: int) -> tuple[Any, Any]:
    v = (xp.arange(ny, dtype=xp.float64) - (ny - 1) / 2.0)[:, None]
    u = (xp.arange(nx, dtype=xp.float64) - (nx - 1) / 2.0)[None, :]
    return u, v


def _interp_weights(xp: Any, u: Any, v: Any, c: float, s: float, q: float, center: float, ncol: int):
    t = u * c + v * s + center
    fi = xp.floor(t)
    f = t - fi
    i0 = fi.astype(xp.int64)
    ok0 = (i0 >= 0) & (i0 <= ncol - 1)
    ok1 = (i0 >= -1) & (i0 <= ncol - 2)
    w0 = xp.where(ok0, xp.maximum(0.0, 1.0 - f * q) * q, 0.0).astype(xp.float32)
    w1 = xp.where(ok1, xp.maximum(0.0, 1.0 - (1.0 - f) * q) * q, 0.0).astype(xp.float32)
    j0 = xp.clip(i0, 0, ncol - 1)
    j1 = xp.clip(i0 + 1, 0, ncol - 1)
    return j0, j1, w0, w1


def _fp_xp(vol: Any, cos: np.ndarray, sin: np.ndarray, inv_hw: np.ndarray, center: float, ncol: int) -> Any:
    """vol (nz, ny, nx) -> (na, nz, ncol) with xp ops (bincount scatter)."""
    xp = get_namespace(vol)
    nz, ny, nx = vol.shape
    u, v = _pixel_coords(xp, ny, nx)
    out = xp.zeros((cos.shape[0], nz, ncol), dtype=xp.float32)
    zoff = (xp.arange(nz, dtype=xp.int64) * ncol)[:, None, None]
    volf = vol.astype(xp.float32, copy=False)
    for a in range(cos.shape[0]):
        j0, j1, w0, w1 = _interp_weights(xp, u, v, float(cos[a]), float(sin[a]), float(inv_hw[a]), center, ncol)
        idx = xp.concatenate([(zoff + j0[None]).ravel(), (zoff + j1[None]).ravel()])
        wts = xp.concatenate([(volf * w0[None]).ravel(), (volf * w1[None]).ravel()])
        out[a] = xp.bincount(idx, weights=wts, minlength=nz * ncol).reshape(nz, ncol)
    return out


def _bp_xp(sino: Any, cos: np.ndarray, sin: np.ndarray, inv_hw: np.ndarray, center: float, ny: int, nx: int) -> Any:
    """sino (na, nz, ncol) -> (nz, ny, nx) with xp ops (gather)."""
    xp = get_namespace(sino)
    na, nz, ncol = sino.shape
    u, v = _pixel_coords(xp, ny, nx)
    out = xp.zeros((nz, ny, nx), dtype=xp.float32)
    for a in range(na):
        j0, j1, w0, w1 = _interp_weights(xp, u, v, float(cos[a]), float(sin[a]), float(inv_hw[a]), center, ncol)
        line = sino[a].astype(xp.float32, copy=False)
        out += line[:, j0] * w0[None] + line[:, j1] * w1[None]
    return out


# ----------------------------------------------------------------------------- slab entry points
def _angles_rad(angles_deg: Any) -> tuple[np.ndarray, np.ndarray]:
    from tomoflow.backend import to_numpy

    ang = np.asarray(to_numpy(angles_deg), dtype=np.float64).reshape(-1)
    if ang.size == 0:
        raise InputError("no projection angles given")
    if not np.all(np.isfinite(ang)):
        raise InputError("projection angles contain NaN or Inf")
    rad = np.deg2rad(ang)
    return np.cos(rad), np.sin(rad)


MODELS = ("adjoint", "interpolate")


def _inverse_half_widths(cos: np.ndarray, sin: np.ndarray, model: str) -> np.ndarray:
    """``1 / h`` per angle: triangle footprint (``adjoint``) or linear interpolation (``interpolate``)."""
    if model == "adjoint":
        return 1.0 / np.maximum(np.abs(cos), np.abs(sin))
    if model == "interpolate":
        return np.ones_like(cos)
    raise InputError(f"model must be one of {MODELS}, got {model!r}")


def _use_compiled(xp: Any, backend: str) -> bool:
    if backend not in ("auto", "compiled", "xp"):
        raise InputError(f"backend must be 'auto', 'compiled' or 'xp', got {backend!r}")
    if xp is not np or backend == "xp":
        return False
    return _compiled() is not None


def forward_project_slab(
    volume: Any, angles_deg: Any, center: float | None = None, n_cols: int | None = None, *, backend: str = "auto"
) -> Any:
    """Forward-project a slab of slices; see :func:`project` (same arguments, 3-D only)."""
    xp = get_namespace(volume)
    nz, ny, nx = volume.shape
    ncol = int(n_cols if n_cols is not None else nx)
    ctr = centre_column(ncol) if center is None else float(center)
    cos, sin = _angles_rad(angles_deg)
    q = _inverse_half_widths(cos, sin, "adjoint")
    if _use_compiled(xp, backend):
        k = _compiled()
        out = np.empty((cos.size, nz, ncol), dtype=np.float32)
        for z0 in range(0, nz, _ZBLOCK):
            blk = np.ascontiguousarray(np.moveaxis(volume[z0 : z0 + _ZBLOCK], 0, -1), dtype=np.float32)
            res = k.forward_kernel(blk, cos, sin, q, (nx - 1) / 2.0, (ny - 1) / 2.0, ctr, ncol, _TILE, 4 * k.numba.get_num_threads())
            out[:, z0 : z0 + _ZBLOCK, :] = np.moveaxis(res, -1, 1)
        return out
    return _fp_xp(xp.asarray(volume), cos, sin, q, ctr, ncol)


def backproject_slab(
    projections: Any, angles_deg: Any, center: float | None = None, shape: tuple[int, int] | None = None,
    *, model: str = "adjoint", backend: str = "auto",
) -> Any:
    """Backproject a stack ``(angle, row, col)``; see :func:`backproject` (3-D only).

    Returns ``(row, ny, nx)``; ``shape`` is ``(ny, nx)``, default ``(ncol, ncol)``.
    """
    xp = get_namespace(projections)
    na, nz, ncol = projections.shape
    ny, nx = shape if shape is not None else (ncol, ncol)
    ctr = centre_column(ncol) if center is None else float(center)
    cos, sin = _angles_rad(angles_deg)
    if cos.size != na:
        raise InputError(f"{cos.size} angles for {na} projections")
    q = _inverse_half_widths(cos, sin, model)
    if _use_compiled(xp, backend):
        k = _compiled()
        out = np.empty((nz, ny, nx), dtype=np.float32)
        for z0 in range(0, nz, _ZBLOCK):
            blk = np.ascontiguousarray(np.moveaxis(projections[:, z0 : z0 + _ZBLOCK, :], 1, -1), dtype=np.float32)
            res = k.back_kernel(blk, cos, sin, q, (nx - 1) / 2.0, (ny - 1) / 2.0, ctr, int(ny), int(nx), _TILE)
            out[z0 : z0 + _ZBLOCK] = np.moveaxis(res, -1, 0)
        return out
    return _bp_xp(xp.asarray(projections), cos, sin, q, ctr, int(ny), int(nx))


# ----------------------------------------------------------------------------- public API
def project(volume: Any, angles_deg: Any, center: float | None = None, n_cols: int | None = None,
            *, backend: str = "auto") -> Any:
    """Parallel-beam projections of a volume (line integrals in voxel units).

    Parameters
    ----------
    volume
        ``(z, y, x)`` volume (or one ``(y, x)`` slice), NumPy or CuPy. Values are attenuation per voxel.
    angles_deg
        Projection angles in degrees, shape ``(n_angles,)``.
    center
        Detector column of the rotation axis in pixels; default ``(n_cols - 1) / 2`` (centred).
    n_cols
        Detector width in columns; default ``x`` size. May be wider or narrower than the slice.
    backend
        ``"auto"`` (compiled numba kernels for NumPy, array-namespace code for CuPy), ``"compiled"``
        or ``"xp"`` (force the generic array-namespace path, as used on the GPU).

    Returns
    -------
    ``(angle, row, col)`` float32 projections (``(angle, col)`` for a 2-D slice), same namespace as
    the input. Rows are the volume's z.
    """
    vol = volume
    if getattr(vol, "ndim", 0) == 2:
        return forward_project_slab(vol[None], angles_deg, center, n_cols, backend=backend)[:, 0]
    if getattr(vol, "ndim", 0) != 3:
        raise InputError(f"project expects a (z, y, x) volume or (y, x) slice, got shape {getattr(vol, 'shape', None)}")
    return forward_project_slab(vol, angles_deg, center, n_cols, backend=backend)


def backproject(projections: Any, angles_deg: Any, center: float | None = None,
                shape: tuple[int, int] | None = None, *, model: str = "adjoint", backend: str = "auto") -> Any:
    """Unfiltered backprojection.

    Parameters
    ----------
    projections
        ``(angle, row, col)`` stack (or ``(angle, col)`` sinogram).
    angles_deg, center, backend
        As in :func:`project`.
    shape
        Slice shape ``(ny, nx)``; default ``(ncol, ncol)``.
    model
        ``"adjoint"`` (default): the exact transpose of :func:`project` (iterative methods).
        ``"interpolate"``: linear interpolation between detector columns (FBP).

    Returns
    -------
    ``(z, y, x)`` float32 volume (``(y, x)`` for a 2-D sinogram).
    """
    p = projections
    if getattr(p, "ndim", 0) == 2:
        return backproject_slab(p[:, None, :], angles_deg, center, shape, model=model, backend=backend)[0]
    if getattr(p, "ndim", 0) != 3:
        raise InputError(f"backproject expects (angle, row, col) projections, got shape {getattr(p, 'shape', None)}")
    return backproject_slab(p, angles_deg, center, shape, model=model, backend=backend)
