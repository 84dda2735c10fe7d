"""The LFOV volume on the HR voxel grid through a registration matrix: one interpolation.

:func:`resample_to_grid` computes any box of the HR grid (the ROI for training pairs, or a chunk of a
larger target grid in a Dask graph): every output voxel centre (HR physical micrometres) is mapped by
the HR -> LFOV matrix, and the LFOV is interpolated there once (cubic B-spline by default, computed on
the LFOV region the box needs, read by slicing, so a zarr array is read only there). Works in z-slabs:
memory O(box), not O(volume). When the grids' axes are aligned (a whole field at another voxel size),
the spline is evaluated one axis at a time (``order + 1`` taps per axis instead of ``(order + 1)^3`` per
voxel), the same values to float64 rounding, an order of magnitude faster.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tomoflow.errors import ConfigError, InputError
from tomoflow.register.transform import check_affine

__all__ = ["resample_to_grid", "footprint", "ResampledGrid", "resample_bytes", "spline_margin"]

#: Largest |pole| of the B-spline prefilter of each order (Unser 1999): its influence decays as pole^d.
_SPLINE_POLE = {2: 0.1716, 3: 0.2679, 4: 0.3613, 5: 0.4306}


#: Spline orders :func:`_separable` evaluates (the B-spline weights written out below).
_SEPARABLE_ORDERS = (1, 3)


def _mirror(i: np.ndarray, n: int) -> np.ndarray:
    """Index ``i`` folded into ``[0, n)`` as :func:`scipy.ndimage.map_coordinates` folds it in its
    ``mirror`` mode (reflection about the end voxels' centres, period ``2 (n - 1)``)."""
    if n == 1:
        return np.zeros_like(i)
    p = 2 * (n - 1)
    i = np.mod(i, p)
    return np.where(i > n - 1, p - i, i)


def _spline_matrix(x: np.ndarray, n: int, order: int) -> Any:
    """The sparse ``(len(x), n)`` matrix that evaluates a 1-D B-spline of ``order`` (1 or 3) with ``n``
    coefficients at the positions ``x`` (coefficient index units), ``mirror`` boundary."""
    from scipy.sparse import csr_matrix

    i = np.floor(x).astype(np.int64)
    u = x - i
    if order == 3:
        w = np.stack(
            [(1 - u) ** 3 / 6, (3 * u**3 - 6 * u**2 + 4) / 6, (-3 * u**3 + 3 * u**2 + 3 * u + 1) / 6, u**3 / 6], 1
        )
        cols = np.stack([i - 1, i, i + 1, i + 2], 1)
    else:
        w = np.stack([1 - u, u], 1)
        cols = np.stack([i, i + 1], 1)
    rows = np.repeat(np.arange(len(x)), w.shape[1])
    return csr_matrix((w.ravel(), (rows, _mirror(cols, n).ravel())), shape=(len(x), n))  # duplicates summed


def _separable(
    coef: np.ndarray, scale: np.ndarray, shift: np.ndarray, b: tuple[tuple[int, int], ...], order: int
) -> np.ndarray:
    """The spline of coefficients ``coef`` at the grid box ``b`` under an axes-aligned map (source index
    = ``scale * grid index + shift`` per axis), one axis at a time: what :func:`map_coordinates` computes
    with ``prefilter=False, mode="mirror"`` (to float64 rounding), with ``order + 1`` taps per axis
    instead of ``(order + 1)^3`` per voxel."""
    mats = [
        _spline_matrix(scale[k] * np.arange(b[k][0], b[k][1], dtype=np.float64) + shift[k], coef.shape[k], order)
        for k in range(3)
    ]
    v = coef
    for k in (2, 1, 0):  # contract x, then y, then z
        moved = np.moveaxis(v, k, 0)
        flat = moved.reshape(moved.shape[0], -1)
        v = np.moveaxis((mats[k] @ flat).reshape((mats[k].shape[0],) + moved.shape[1:]), 0, k)
    return np.ascontiguousarray(v, dtype=np.float32)


def spline_margin(order: int) -> int:
    """Source voxels read beyond a box's footprint on each side (:func:`resample_to_grid`): 1 for orders
    0-1; for a B-spline the prefilter's influence decays as its pole to the distance, so enough voxels
    that a box's coefficients equal the whole volume's to ~1e-7."""
    return 1 if order <= 1 else 2 + int(np.ceil(np.log(1e-7) / np.log(_SPLINE_POLE[order])))


def _box(shape: Sequence[int], box: Any) -> tuple[tuple[int, int], ...]:
    if box is None:
        return tuple((0, int(n)) for n in shape)
    out = tuple((int(a), int(b)) for a, b in box)
    if len(out) != 3 or any(not 0 <= a < b <= n for (a, b), n in zip(out, shape)):
        raise ConfigError(f"box must be 3 (start, stop) pairs inside the grid {tuple(shape)}, got {box!r}")
    return out


def footprint(
    matrix: Any, shape: Sequence[int], spacing_um: Any, target_spacing_um: Any, box: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """LFOV voxel-index bounds ``(low, high)`` (float, ``(3,)`` each) of a box of the HR grid mapped by
    ``matrix``: where its eight corners land."""
    b = _box(shape, box)
    sp = np.broadcast_to(np.asarray(spacing_um, dtype=np.float64), (3,))
    tsp = np.broadcast_to(np.asarray(target_spacing_um, dtype=np.float64), (3,))
    m = check_affine(matrix)
    corners = (
        np.array(
            [[z, y, x] for z in (b[0][0], b[0][1] - 1) for y in (b[1][0], b[1][1] - 1) for x in (b[2][0], b[2][1] - 1)],
            dtype=np.float64,
        )
        * sp
    )
    q = (corners @ m[:3, :3].T + m[:3, 3]) / tsp
    return q.min(axis=0), q.max(axis=0)


def resample_to_grid(
    source: Any,
    matrix: Any,
    shape: Sequence[int],
    spacing_um: Any,
    source_spacing_um: Any,
    *,
    box: Any = None,
    order: int = 3,
    slab: int = 16,
) -> np.ndarray:
    """Interpolate ``source`` (the LFOV) at the voxel centres of a grid (the HR grid) mapped by ``matrix``.

    Parameters
    ----------
    source
        ``(z, y, x)`` source volume: a NumPy or zarr array (only the needed region is read).
    matrix
        4 x 4 matrix from grid physical micrometres to source physical micrometres
        (:attr:`tomoflow.register.Registration.matrix`; origins at the first voxel centres).
    shape, spacing_um
        The target grid ``(nz, ny, nx)`` and its voxel size (micrometres, one or three).
    source_spacing_um
        Voxel size of ``source`` (micrometres).
    box
        ``((z0, z1), (y0, y1), (x0, x1))`` part of the grid to compute; default the whole grid.
    order
        Spline order of the interpolation (0-5; 3 = cubic, 1 = trilinear).
    slab
        Output z-planes per interpolation call (memory).

    Returns
    -------
    ``(z1 - z0, y1 - y0, x1 - x0)`` float32 array.

    Raises
    ------
    InputError
        The box maps (partly) outside ``source``, or ``source`` holds NaN/Inf where it is needed.
    ConfigError
        Bad ``box`` or ``order``; a matrix that is not a finite, invertible affine map
        (:func:`~tomoflow.register.transform.check_affine`).
    """
    from scipy.ndimage import map_coordinates

    if not (isinstance(order, int) and 0 <= order <= 5):
        raise ConfigError(f"order must be an integer spline order 0-5, got {order!r}")
    b = _box(shape, box)
    sp = np.broadcast_to(np.asarray(spacing_um, dtype=np.float64), (3,))
    ssp = np.broadcast_to(np.asarray(source_spacing_um, dtype=np.float64), (3,))
    m = check_affine(matrix)  # finite, affine, invertible: a singular matrix is refused, not interpolated
    src_shape = np.asarray(getattr(source, "shape", ()), dtype=int)
    if src_shape.size != 3:
        raise InputError(f"expected a (z, y, x) source volume, got shape {tuple(src_shape)}", dataset="source")
    lo, hi = footprint(m, shape, sp, ssp, b)
    tol = 1e-6
    if np.any(lo < -0.5 - tol) or np.any(hi > src_shape - 0.5 + tol):
        raise InputError(
            f"the grid box {b} maps to source voxels {np.round(lo, 2).tolist()} .. "
            f"{np.round(hi, 2).tolist()}, outside the source volume of shape {tuple(src_shape)}",
            dataset="source",
        )
    # the B-spline prefilter is a recursive filter over the whole region: read enough margin that a
    # box's coefficients equal the whole volume's to ~1e-7 (boxes of one grid agree, chunk by chunk)
    margin = spline_margin(order)
    r_lo = np.maximum(np.floor(lo).astype(int) - margin, 0)
    r_hi = np.minimum(np.ceil(hi).astype(int) + margin + 1, src_shape)
    region = np.asarray(source[tuple(slice(int(a), int(c)) for a, c in zip(r_lo, r_hi))], dtype=np.float64)
    n_bad = int(region.size - np.count_nonzero(np.isfinite(region)))
    if n_bad:
        raise InputError(
            f"{n_bad} NaN/Inf voxels in the source region {r_lo.tolist()}..{r_hi.tolist()}", dataset="source"
        )
    if order > 1:
        from scipy.ndimage import spline_filter

        region = spline_filter(region, order=order, mode="mirror")
    a = m[:3, :3] * sp[None, :] / ssp[:, None]  # grid index -> source index, linear part
    t = m[:3, 3] / ssp - r_lo
    if order in _SEPARABLE_ORDERS and not np.any(a[~np.eye(3, dtype=bool)]):  # axes aligned: separable
        return _separable(region, a.diagonal(), t, b, order)
    out = np.empty(tuple(e - s for s, e in b), dtype=np.float32)
    yy, xx = np.meshgrid(
        np.arange(b[1][0], b[1][1], dtype=np.float64), np.arange(b[2][0], b[2][1], dtype=np.float64), indexing="ij"
    )
    for z0 in range(b[0][0], b[0][1], slab):
        z1 = min(z0 + slab, b[0][1])
        zz = np.arange(z0, z1, dtype=np.float64)[:, None, None]
        idx = [a[k, 0] * zz + a[k, 1] * yy[None] + a[k, 2] * xx[None] + t[k] for k in range(3)]
        out[z0 - b[0][0] : z1 - b[0][0]] = map_coordinates(region, idx, order=order, mode="mirror", prefilter=False)
    return out


class ResampledGrid:
    """A source volume seen on another grid, resampled on read: an array-like ``(z, y, x)`` of the grid.

    Reading a box (basic slices, step 1; ``[...]``: the whole grid) computes it with
    :func:`resample_to_grid` from only the source region that box needs; nothing is stored or cached. So
    any kernel that reads an array-like by slicing (e.g. :func:`tomoflow.recover.tiling.read_box`, which
    extends it beyond the grid by its border rule) runs on the resampled volume without it ever being
    written. A box equals the same box of the whole resampled grid to ~1e-7 (the spline prefilter's
    margin). Used by the ``resample`` and ``recover`` stages and by the training pair read from stores.

    Parameters
    ----------
    source
        ``(z, y, x)`` source volume: a NumPy or zarr array (e.g. a volume store's level 0).
    matrix
        4 x 4 matrix from grid physical micrometres to source physical micrometres.
    shape, spacing_um
        The grid ``(nz, ny, nx)`` and its voxel size (micrometres, one or three).
    source_spacing_um
        The source's voxel size (micrometres, one or three).
    order
        Spline order (3 = cubic, 1 = trilinear).

    Examples
    --------
    >>> import numpy as np
    >>> src = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    >>> m = np.diag([0.5, 0.5, 0.5, 1.0])  # a grid of half the source's voxel size, same origin
    >>> grid = ResampledGrid(src, m, (7, 9, 11), 1.0, 1.0, order=1)
    >>> float(grid[2:3, 0:1, 0:1][0, 0, 0])  # z = 1 source voxel: one plane of 30 values further
    30.0
    """

    ndim = 3
    dtype = np.dtype(np.float32)

    def __init__(
        self, source: Any, matrix: Any, shape: Sequence[int], spacing_um: Any, source_spacing_um: Any, *, order: int = 3
    ) -> None:
        self.source = source
        self.matrix = check_affine(matrix)
        shp = tuple(int(n) for n in shape)
        if len(shp) != 3 or min(shp) < 1:
            raise ConfigError(f"shape must be three positive voxel counts (nz, ny, nx), got {tuple(shape)}")
        self.shape = shp
        self.spacing_um, self.source_spacing_um = spacing_um, source_spacing_um
        self.order = order

    def __getitem__(self, key: Any) -> np.ndarray:
        from tomoflow._checks import box_of_slices

        box = box_of_slices(key, self.shape, "a ResampledGrid")
        if any(b == a for a, b in box):
            return np.zeros(tuple(b - a for a, b in box), dtype=np.float32)
        return resample_to_grid(
            self.source, self.matrix, self.shape, self.spacing_um, self.source_spacing_um, box=box, order=self.order
        )


def resample_bytes(
    matrix: Any, box_shape: Sequence[int], spacing_um: Any, source_spacing_um: Any, order: int = 3, slab: int = 16
) -> int:
    """Estimated peak bytes of :func:`resample_to_grid` for a box of ``box_shape`` voxels: the source region
    the box maps onto (its extent through the matrix, plus :func:`spline_margin`) held twice in float64
    (read, prefiltered), the float32 result and one slab's coordinates."""
    m = check_affine(matrix)
    sp = np.broadcast_to(np.asarray(spacing_um, dtype=np.float64), (3,))
    ssp = np.broadcast_to(np.asarray(source_spacing_um, dtype=np.float64), (3,))
    a = np.abs(m[:3, :3]) * sp[None, :] / ssp[:, None]  # grid index -> source index
    extent = a @ (np.asarray([int(n) for n in box_shape], dtype=np.float64) - 1)
    region = float(np.prod(np.ceil(extent) + 2 * spline_margin(order) + 2))
    ny, nx = int(box_shape[1]), int(box_shape[2])
    coords = (3 + 2 + 1) * min(slab, int(box_shape[0])) * ny * nx * 8  # z, y, x indices, the grid, a result slab
    return int(2 * region * 8 + 4 * int(np.prod([int(n) for n in box_shape])) + coords)
