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
One model, three code paths: compiled kernels for each device (numba on the CPU, tiled for cache reuse
and vectorised along z; fused CUDA kernels for CuPy inputs, one launch per slab, see
:mod:`tomoflow.recon._projector_cuda`) and a generic array-namespace reference path (NumPy or CuPy:
per-angle gather / ``bincount`` scatter). All compute the same operator; tests check they agree.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from tomoflow._checks import as_stack, check_choice, check_int, validate_angles
from tomoflow._typing import Array, ArrayLike
from tomoflow.backend import get_namespace
from tomoflow.geometry import centered_grid, check_center, check_slice_shape

__all__ = ["project", "backproject", "forward_project_slab", "backproject_slab", "MODELS", "BACKENDS"]

log = logging.getLogger(__name__)

_TILE = 16  # pixel tile edge of the compiled backprojector (cache blocking)
_ZBLOCK = 32  # slices processed together by the compiled kernels (SIMD along z)


# ----------------------------------------------------------------------------- compiled CPU path
def _compiled() -> Any:
    """The numba kernel module, or None when numba is unavailable."""
    try:
        from tomoflow.recon import _projector_numba
    except ImportError:  # pragma: no cover - numba is a dependency, but stay usable without it
        return None
    return _projector_numba


# ----------------------------------------------------------------------------- generic xp path
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
    v, u = centered_grid((ny, nx), xp=xp)
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
    v, u = centered_grid((ny, nx), xp=xp)
    out = xp.zeros((nz, ny, nx), dtype=xp.float32)
    for a in range(na):
        j0, j1, w0, w1 = _interp_weights(xp, u, v, float(cos[a]), float(sin[a]), float(inv_hw[a]), center, ncol)
        line = sino[a].astype(xp.float32, copy=False)
        out += line[:, j0] * w0[None] + line[:, j1] * w1[None]
    return out


# ----------------------------------------------------------------------------- slab entry points
def _cos_sin(angles_deg: Any, n_angles: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of the (checked) angles, on the host."""
    rad = np.deg2rad(validate_angles(angles_deg, n_angles))
    return np.cos(rad), np.sin(rad)


MODELS = ("adjoint", "interpolate")
"""Backprojection models: the exact adjoint of :func:`project`, or linear interpolation (FBP)."""
BACKENDS = ("auto", "compiled", "xp")
"""Code paths: ``auto`` = ``compiled`` (numba kernels for NumPy, fused CUDA kernels for CuPy) or ``xp``
(the generic array-namespace reference path)."""


def _inverse_half_widths(cos: np.ndarray, sin: np.ndarray, model: str) -> np.ndarray:
    """``1 / h`` per angle: triangle footprint (``adjoint``) or linear interpolation (``interpolate``)."""
    if check_choice("backprojection model", model, MODELS) == "adjoint":
        return 1.0 / np.maximum(np.abs(cos), np.abs(sin))
    return np.ones_like(cos)


def _use_compiled(xp: Any, backend: str) -> bool:
    """True for the numba CPU kernels (NumPy input, ``auto`` / ``compiled``)."""
    if check_choice("projector backend", backend, BACKENDS) == "xp" or xp is not np:
        return False
    return _compiled() is not None


def _use_fused(xp: Any, backend: str) -> bool:
    """True for the fused CUDA kernels (CuPy input, ``auto`` / ``compiled``)."""
    return xp is not np and check_choice("projector backend", backend, BACKENDS) != "xp"


def _fused() -> Any:
    from tomoflow.recon import _projector_cuda

    return _projector_cuda


def forward_project_slab(
    volume: Array,
    angles_deg: ArrayLike,
    *,
    center: float | None = None,
    n_cols: int | None = None,
    backend: str = "auto",
) -> Array:
    """Forward-project a slab of slices; see :func:`project` (same arguments, 3-D only)."""
    xp = get_namespace(volume)
    nz, ny, nx = volume.shape
    ncol = check_int("n_cols", n_cols) if n_cols is not None else int(nx)
    ctr = check_center(center, ncol)
    cos, sin = _cos_sin(angles_deg)
    q = _inverse_half_widths(cos, sin, "adjoint")
    if _use_compiled(xp, backend):
        k = _compiled()
        out = np.empty((cos.size, nz, ncol), dtype=np.float32)
        for z0 in range(0, nz, _ZBLOCK):
            blk = np.ascontiguousarray(np.moveaxis(volume[z0 : z0 + _ZBLOCK], 0, -1), dtype=np.float32)
            res = k.forward_kernel(
                blk, cos, sin, q, (nx - 1) / 2.0, (ny - 1) / 2.0, ctr, ncol, _TILE, 4 * k.numba.get_num_threads()
            )
            out[:, z0 : z0 + _ZBLOCK, :] = np.moveaxis(res, -1, 1)
        return out
    if _use_fused(xp, backend):
        return _fused().forward(volume, cos, sin, ctr, ncol)
    return _fp_xp(xp.asarray(volume), cos, sin, q, ctr, ncol)


def backproject_slab(
    projections: Array,
    angles_deg: ArrayLike,
    *,
    center: float | None = None,
    shape: tuple[int, int] | None = None,
    model: str = "adjoint",
    backend: str = "auto",
) -> Array:
    """Backproject a stack ``(angle, row, col)``; see :func:`backproject` (3-D only).

    Returns ``(row, ny, nx)``; ``shape`` is ``(ny, nx)``, default ``(ncol, ncol)``.
    """
    xp = get_namespace(projections)
    na, nz, ncol = projections.shape
    ny, nx = check_slice_shape(shape, ncol)
    ctr = check_center(center, ncol)
    cos, sin = _cos_sin(angles_deg, na)
    q = _inverse_half_widths(cos, sin, model)
    if _use_compiled(xp, backend):
        k = _compiled()
        out = np.empty((nz, ny, nx), dtype=np.float32)
        for z0 in range(0, nz, _ZBLOCK):
            blk = np.ascontiguousarray(np.moveaxis(projections[:, z0 : z0 + _ZBLOCK, :], 1, -1), dtype=np.float32)
            res = k.back_kernel(blk, cos, sin, q, (nx - 1) / 2.0, (ny - 1) / 2.0, ctr, int(ny), int(nx), _TILE)
            out[z0 : z0 + _ZBLOCK] = np.moveaxis(res, -1, 0)
        return out
    if _use_fused(xp, backend):
        return _fused().backward(projections, cos, sin, q, ctr, int(ny), int(nx))
    return _bp_xp(xp.asarray(projections), cos, sin, q, ctr, int(ny), int(nx))


# ----------------------------------------------------------------------------- public API
def project(
    volume: Array,
    angles_deg: ArrayLike,
    *,
    center: float | None = None,
    n_cols: int | None = None,
    backend: str = "auto",
) -> Array:
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
        ``"auto"`` / ``"compiled"`` (numba kernels for NumPy, fused CUDA kernels for CuPy) or ``"xp"``
        (the generic array-namespace reference path).

    Returns
    -------
    ``(angle, row, col)`` float32 projections (``(angle, col)`` for a 2-D slice), same namespace as
    the input. Rows are the volume's z.

    Raises
    ------
    InputError
        Volume not 2-D/3-D; angles empty or not finite.
    ConfigError
        Unknown ``backend``, bad ``n_cols``, ``center`` far off the detector.
    """
    vol, single = as_stack(volume, what="volume", axes=("z", "y", "x"))
    out = forward_project_slab(vol, angles_deg, center=center, n_cols=n_cols, backend=backend)
    return out[:, 0] if single else out


def backproject(
    projections: Array,
    angles_deg: ArrayLike,
    *,
    center: float | None = None,
    shape: tuple[int, int] | None = None,
    model: str = "adjoint",
    backend: str = "auto",
) -> Array:
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

    Raises
    ------
    InputError
        Projections not 2-D/3-D; angles not matching them (count, NaN).
    ConfigError
        Unknown ``model`` or ``backend``, bad ``shape``, ``center`` far off the detector.
    """
    p, single = as_stack(projections, axis=1)
    out = backproject_slab(p, angles_deg, center=center, shape=shape, model=model, backend=backend)
    return out[0] if single else out
