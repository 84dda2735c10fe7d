"""Exact parallel-beam projections of ellipses and ellipsoids, and their rasterisation.

These give the projections of a *continuous* phantom (no voxel grid involved), so a reconstruction
benchmark can compare FBP against the phantom without the "inverse crime" of projecting with the same
discrete projector that the reconstruction inverts.

Geometry (the one of :func:`tomoflow.recon.project`)
----------------------------------------------------
The rotation axis is the volume's ``z`` axis (detector rows). An image pixel ``(y, x)`` (array
indices) has coordinates relative to the rotation axis

    ``u = (x - cx) * pixel``,  ``v = (y - cy) * pixel``,  with ``cx = (nx - 1) / 2``, ``cy = (ny - 1) / 2``.

At rotation angle ``theta`` a point ``(u, v)`` is projected onto detector column

    ``s = (u * cos(theta) + v * sin(theta)) / pixel + center``,  ``center`` default ``(ncol - 1) / 2``,

and a volume slice ``z`` (index) falls on detector row ``z`` (``w = (z - (nz - 1) / 2) * pixel``).
So at ``theta = 0`` rays run along ``y`` (column ``s`` equals ``x``), and at ``theta = 90`` degrees
rays run along ``x`` (column ``s`` equals ``y``).

Parameter tables
----------------
Ellipses are rows of an ``(m, 6)`` array, columns :data:`ELLIPSE_COLUMNS`::

    value, a, b, x0, y0, phi_deg

and ellipsoids rows of an ``(m, 8)`` array, columns :data:`ELLIPSOID_COLUMNS`::

    value, a, b, c, x0, y0, z0, phi_deg

``value`` is the attenuation coefficient added inside the shape, per length unit; ``a, b, c`` are the
semi-axes and ``x0, y0, z0`` the centre in length units, on the ``(u, v, w)`` axes above (relative to
the rotation axis / the volume centre). The ``a`` semi-axis points along ``(cos phi, sin phi)`` in the
``(u, v)`` plane: ellipsoids rotate about ``z`` only, as in the Kak & Slaney tables. With
``pixel = 1`` (the default) the length unit is the pixel, values are attenuation per pixel and the
rasterised image is directly the volume the tomoflow projector expects.

Overlapping shapes add. Line integrals are dimensionless (``value x length``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tomoflow._checks import check_int, check_number, validate_angles
from tomoflow._typing import ArrayLike
from tomoflow.errors import ConfigError, InputError
from tomoflow.geometry import check_center

__all__ = [
    "ELLIPSE_COLUMNS",
    "ELLIPSOID_COLUMNS",
    "ellipse_sinogram",
    "ellipsoid_projections",
    "rasterize_ellipses",
    "rasterize_ellipsoids",
]

ELLIPSE_COLUMNS: tuple[str, ...] = ("value", "a", "b", "x0", "y0", "phi_deg")
ELLIPSOID_COLUMNS: tuple[str, ...] = ("value", "a", "b", "c", "x0", "y0", "z0", "phi_deg")


# --------------------------------------------------------------------------- validation helpers
def _table(params: Any, columns: tuple[str, ...], what: str) -> np.ndarray:
    """Parameter table as a float64 ``(m, len(columns))`` array, validated."""
    try:
        tab = np.asarray(params, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what} parameters are not numbers ({exc})") from None
    if tab.ndim == 1:
        tab = tab[None, :]
    if tab.ndim != 2 or tab.shape[1] != len(columns):
        raise InputError(
            f"{what} parameters must be an (m, {len(columns)}) table with columns "
            f"{', '.join(columns)}; got shape {tab.shape}"
        )
    if not np.all(np.isfinite(tab)):
        raise InputError(f"{what} parameters contain NaN or Inf")
    n_axes = 3 if len(columns) == 8 else 2
    if tab.size and np.any(tab[:, 1 : 1 + n_axes] <= 0):
        raise InputError(f"{what} semi-axes must be positive")
    return tab


def _positive(name: str, value: float) -> float:
    return check_number(name, value, low=0.0, low_open=True)


def _detector_positions(n_cols: int, center: float | None, pixel: float, oversample: int) -> np.ndarray:
    """Detector coordinate ``t`` (length units, relative to the axis) of every sub-ray: (n_cols, m)."""
    c = check_center(center, n_cols)
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    return ((np.arange(n_cols)[:, None] + sub[None, :]) - c) * pixel


# --------------------------------------------------------------------------- projections
def ellipse_sinogram(
    ellipses: ArrayLike,
    angles_deg: Sequence[float] | np.ndarray,
    n_cols: int,
    *,
    pixel: float = 1.0,
    center: float | None = None,
    oversample: int = 1,
) -> np.ndarray:
    """Exact parallel-beam sinogram of a sum of 2-D ellipses.

    Parameters
    ----------
    ellipses
        ``(m, 6)`` table, columns ``value, a, b, x0, y0, phi_deg`` (see module docstring); lengths in
        the same unit as ``pixel``, ``value`` in attenuation per length unit.
    angles_deg
        Rotation angles in degrees, shape ``(n_angles,)``.
    n_cols
        Number of detector columns.
    pixel
        Detector pixel width in the length unit of ``ellipses`` (1.0: ellipses given in pixels).
    center
        Detector column (pixels) of the rotation axis; default ``(n_cols - 1) / 2``.
    oversample
        Rays per detector pixel, averaged (1: the line integral through the pixel centre; larger
        values model a detector pixel of finite width, like a pixel-sum of a finely rasterised image).

    Returns
    -------
    numpy.ndarray
        ``(angle, col)`` float64 line integrals (dimensionless).
    """
    tab = _table(ellipses, ELLIPSE_COLUMNS, "ellipse")
    theta = np.deg2rad(validate_angles(angles_deg))
    n_cols = check_int("n_cols", n_cols)
    pixel = _positive("pixel", pixel)
    oversample = check_int("oversample", oversample)
    t = _detector_positions(n_cols, center, pixel, oversample).reshape(-1)
    cos_t, sin_t = np.cos(theta), np.sin(theta)
    out = np.zeros((theta.size, t.size), dtype=np.float64)
    for value, a, b, x0, y0, phi in tab:
        ph = np.deg2rad(phi)
        r2 = (a * np.cos(theta - ph)) ** 2 + (b * np.sin(theta - ph)) ** 2  # squared support, (A,)
        t0 = x0 * cos_t + y0 * sin_t
        tau2 = (t[None, :] - t0[:, None]) ** 2
        out += (value * 2.0 * a * b / r2)[:, None] * np.sqrt(np.maximum(r2[:, None] - tau2, 0.0))
    return out.reshape(theta.size, n_cols, oversample).mean(axis=2)


def ellipsoid_projections(
    ellipsoids: ArrayLike,
    angles_deg: Sequence[float] | np.ndarray,
    detector_shape: tuple[int, int],
    *,
    center: float | None = None,
    pixel: float = 1.0,
    oversample: int = 1,
) -> np.ndarray:
    """Exact parallel-beam projections of a sum of ellipsoids, rotation axis along ``z`` (rows).

    Parameters
    ----------
    ellipsoids
        ``(m, 8)`` table, columns ``value, a, b, c, x0, y0, z0, phi_deg`` (see module docstring);
        ``z0`` is measured from the detector row centre ``(rows - 1) / 2`` (the volume centre).
    angles_deg
        Rotation angles in degrees, shape ``(n_angles,)``.
    detector_shape
        ``(rows, cols)`` of the detector (pixels).
    center
        Detector column (pixels) of the rotation axis; default ``(cols - 1) / 2``.
    pixel
        Detector pixel size (rows and columns) in the length unit of ``ellipsoids``.
    oversample
        Rays per pixel along each detector axis (``oversample**2`` rays per pixel), averaged: 1 gives
        the line integral through the pixel centre; larger values model the finite pixel area, like
        the pixel-sums of a supersampled rasterisation (partial-volume voxels).

    Returns
    -------
    numpy.ndarray
        ``(angle, row, col)`` float32 line integrals (dimensionless).
    """
    tab = _table(ellipsoids, ELLIPSOID_COLUMNS, "ellipsoid")
    theta = np.deg2rad(validate_angles(angles_deg))
    if len(tuple(detector_shape)) != 2:
        raise ConfigError(f"detector_shape must be (rows, cols), got {detector_shape!r}")
    n_rows = check_int("rows", detector_shape[0])
    n_cols = check_int("cols", detector_shape[1])
    pixel = _positive("pixel", pixel)
    oversample = check_int("oversample", oversample)
    t = _detector_positions(n_cols, center, pixel, oversample).reshape(-1)
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    w = ((np.arange(n_rows)[:, None] + sub[None, :]).reshape(-1) - (n_rows - 1) / 2.0) * pixel
    cos_t, sin_t = np.cos(theta), np.sin(theta)
    out = np.zeros((theta.size, w.size, t.size), dtype=np.float64)
    for value, a, b, c, x0, y0, z0, phi in tab:
        k2 = 1.0 - ((w - z0) / c) ** 2  # squared scale of the section ellipse at each (sub-)row
        rows = np.nonzero(k2 > 0)[0]
        if rows.size == 0:
            continue
        lo, hi = rows[0], rows[-1] + 1
        ph = np.deg2rad(phi)
        r2 = (a * np.cos(theta - ph)) ** 2 + (b * np.sin(theta - ph)) ** 2
        t0 = x0 * cos_t + y0 * sin_t
        tau2 = (t[None, :] - t0[:, None]) ** 2  # (A, C)
        rad = k2[None, lo:hi, None] * r2[:, None, None] - tau2[:, None, :]
        out[:, lo:hi, :] += (value * 2.0 * a * b / r2)[:, None, None] * np.sqrt(np.maximum(rad, 0.0))
    out = out.reshape(theta.size, n_rows, oversample, n_cols, oversample).mean(axis=(2, 4))
    return out.astype(np.float32)


# --------------------------------------------------------------------------- rasterisation
def _rasterize(tab3: np.ndarray, shape: tuple[int, int, int], supersample: int, pixel: float, flat: bool) -> np.ndarray:
    """Rasterise ellipsoids (8-column table, length units) on a (z, y, x) grid with partial volume.

    Voxels entirely inside or outside a shape are decided from their centre; only voxels that the
    surface may cross are supersampled (``supersample`` points per axis). ``flat`` means 2-D
    ellipses (no z extent, no sub-sampling along z). Output holds ``value * pixel`` per voxel.
    """
    nz, ny, nx = shape
    out = np.zeros(shape, dtype=np.float32)
    centres = [(n - 1) / 2.0 for n in shape]
    sub = (np.arange(supersample) + 0.5) / supersample - 0.5
    if flat:
        offs = np.stack(np.meshgrid([0.0], sub, sub, indexing="ij"), -1).reshape(-1, 3)
        half_diag = np.sqrt(2.0) / 2.0
    else:
        offs = np.stack(np.meshgrid(sub, sub, sub, indexing="ij"), -1).reshape(-1, 3)
        half_diag = np.sqrt(3.0) / 2.0
    slab = max(1, (1 << 21) // max(1, ny * nx))  # z-slabs of ~2 M voxels: memory independent of size
    for s0 in range(0, nz, slab):
        s1 = min(nz, s0 + slab)
        acc = np.zeros((s1 - s0, ny, nx), dtype=np.float64)
        for value, a, b, c, x0, y0, z0, phi in tab3:
            ph = np.deg2rad(phi)
            cph, sph = np.cos(ph), np.sin(ph)
            ext_x = np.hypot(a * cph, b * sph)
            ext_y = np.hypot(a * sph, b * cph)
            lo_hi = []
            for axis, (centre_len, ext, cidx, n) in enumerate(
                ((z0, c, centres[0], nz), (y0, ext_y, centres[1], ny), (x0, ext_x, centres[2], nx))
            ):
                if flat and axis == 0:
                    lo_hi.append((0, nz))
                    continue
                lo = int(np.floor(cidx + (centre_len - ext) / pixel)) - 1
                hi = int(np.ceil(cidx + (centre_len + ext) / pixel)) + 2
                lo_hi.append((max(lo, 0), min(hi, n)))
            (z_lo, z_hi), (y_lo, y_hi), (x_lo, x_hi) = lo_hi
            z_lo, z_hi = max(z_lo, s0), min(z_hi, s1)
            if z_lo >= z_hi or y_lo >= y_hi or x_lo >= x_hi:
                continue
            zz = (np.arange(z_lo, z_hi) - centres[0]) * pixel - z0
            yy = (np.arange(y_lo, y_hi) - centres[1]) * pixel - y0
            xx = (np.arange(x_lo, x_hi) - centres[2]) * pixel - x0

            def rho2(z, y, x, cph=cph, sph=sph, a=a, b=b, c=c):  # normalised squared radius; broadcasts
                xi = x * cph + y * sph
                eta = -x * sph + y * cph
                r = (xi / a) ** 2 + (eta / b) ** 2
                if not flat:
                    r = r + (z / c) ** 2
                return r

            r2 = rho2(zz[:, None, None], yy[None, :, None], xx[None, None, :])
            margin = half_diag * pixel / min(a, b) if flat else half_diag * pixel / min(a, b, c)
            rho = np.sqrt(r2)
            frac = (rho <= 1.0 - margin).astype(np.float64)
            edge = np.nonzero(np.abs(rho - 1.0) < margin)
            if edge[0].size:
                pz = zz[edge[0]][:, None] + offs[None, :, 0] * pixel
                py = yy[edge[1]][:, None] + offs[None, :, 1] * pixel
                px = xx[edge[2]][:, None] + offs[None, :, 2] * pixel
                frac[edge] = (rho2(pz, py, px) <= 1.0).mean(axis=1)
            acc[z_lo - s0 : z_hi - s0, y_lo:y_hi, x_lo:x_hi] += (value * pixel) * frac
        out[s0:s1] = acc
    return out


def rasterize_ellipses(ellipses: ArrayLike, n: int, *, supersample: int = 4, pixel: float = 1.0) -> np.ndarray:
    """Draw 2-D ellipses on an ``n x n`` pixel grid with partial-pixel coverage.

    Parameters
    ----------
    ellipses
        ``(m, 6)`` table, columns ``value, a, b, x0, y0, phi_deg`` (module docstring).
    n
        Image size; the image centre ``((n - 1) / 2, (n - 1) / 2)`` is the rotation axis.
    supersample
        Sub-samples per axis in pixels the boundary crosses (coverage fraction resolution).
    pixel
        Pixel size in the length unit of ``ellipses``.

    Returns
    -------
    numpy.ndarray
        ``(y, x)`` float32 image of attenuation *per pixel* (``value * pixel``), so that summing it
        along a ray approximates :func:`ellipse_sinogram` of the same table.
    """
    tab = _table(ellipses, ELLIPSE_COLUMNS, "ellipse")
    n = check_int("n", n)
    supersample = check_int("supersample", supersample)
    pixel = _positive("pixel", pixel)
    tab3 = np.zeros((tab.shape[0], 8))
    tab3[:, [0, 1, 2, 4, 5, 7]] = tab
    tab3[:, 3] = 1.0  # unused (flat)
    return _rasterize(tab3, (1, n, n), supersample, pixel, flat=True)[0]


def rasterize_ellipsoids(
    ellipsoids: ArrayLike,
    shape: tuple[int, int, int],
    *,
    supersample: int = 2,
    pixel: float = 1.0,
) -> np.ndarray:
    """Draw ellipsoids on a ``(z, y, x)`` voxel grid with partial-volume coverage.

    Parameters
    ----------
    ellipsoids
        ``(m, 8)`` table, columns ``value, a, b, c, x0, y0, z0, phi_deg`` (module docstring),
        centres relative to the volume centre ``((n - 1) / 2`` on every axis).
    shape
        ``(nz, ny, nx)`` of the volume.
    supersample
        Sub-samples per axis in voxels the surface crosses.
    pixel
        Voxel size in the length unit of ``ellipsoids``.

    Returns
    -------
    numpy.ndarray
        ``(z, y, x)`` float32 volume of attenuation per voxel (``value * pixel``), the input that
        :func:`tomoflow.recon.project` turns into (approximately) :func:`ellipsoid_projections`.
    """
    tab = _table(ellipsoids, ELLIPSOID_COLUMNS, "ellipsoid")
    if len(tuple(shape)) != 3:
        raise ConfigError(f"shape must be (nz, ny, nx), got {shape!r}")
    shape3 = tuple(check_int("shape", s) for s in shape)
    supersample = check_int("supersample", supersample)
    pixel = _positive("pixel", pixel)
    return _rasterize(tab, shape3, supersample, pixel, flat=False)  # type: ignore[arg-type]  # three sizes, one per axis
