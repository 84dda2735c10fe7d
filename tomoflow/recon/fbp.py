"""Filtered backprojection for parallel-beam slabs (any number of sinograms at once)."""

from __future__ import annotations

from typing import Any

import numpy as np

from tomoflow.backend import get_namespace, to_numpy
from tomoflow.errors import InputError
from tomoflow.recon.filters import FILTERS, filter_projections
from tomoflow.recon.projector import backproject, centre_column

__all__ = ["fbp", "angular_weights", "circle_mask"]


def angular_weights(angles_deg: Any) -> np.ndarray:
    """Quadrature weights (radians) of each projection for the FBP angle integral.

    Angles are folded onto [0, 180) degrees (a projection at ``theta + 180`` sees the same lines
    mirrored) and each gets half the gap to its neighbours, so uneven or 360-degree sets are weighted
    correctly; uniform 180-degree sets get ``pi / n_angles`` each.
    """
    ang = np.asarray(to_numpy(angles_deg), dtype=np.float64).reshape(-1)
    n = ang.size
    if n == 1:
        return np.array([np.pi])
    folded = np.mod(ang, 180.0)
    order = np.argsort(folded)
    s = folded[order]
    gaps = np.diff(np.concatenate([s, [s[0] + 180.0]]))
    w_sorted = 0.5 * (gaps + np.roll(gaps, 1))
    w = np.empty(n)
    w[order] = w_sorted
    # Angles measured twice (e.g. a 360 degree scan) share their weight.
    return np.deg2rad(w)


def circle_mask(shape: tuple[int, int], xp: Any = np, radius: float | None = None) -> Any:
    """Boolean ``(ny, nx)`` mask of the reconstruction circle (radius ``min(ny, nx) / 2`` by default)."""
    ny, nx = shape
    r = min(ny, nx) / 2.0 if radius is None else radius
    yy = (xp.arange(ny) - (ny - 1) / 2.0)[:, None]
    xx = (xp.arange(nx) - (nx - 1) / 2.0)[None, :]
    return (yy**2 + xx**2) <= r * r


def fbp(
    projections: Any,
    angles_deg: Any,
    center: float | None = None,
    filter: str = "ramp",  # noqa: A002 - public name asked for by users
    *,
    shape: tuple[int, int] | None = None,
    pad_factor: float = 2.0,
    mask: bool = False,
    backend: str = "auto",
) -> Any:
    """Filtered backprojection of a stack of parallel-beam projections.

    Parameters
    ----------
    projections
        ``(angle, row, col)`` line integrals (after flat/dark normalisation and -log), or one
        ``(angle, col)`` sinogram. NumPy or CuPy.
    angles_deg
        Projection angles (degrees).
    center
        Rotation axis column (pixels); default ``(ncol - 1) / 2``. Applied as a phase ramp in the
        filter, so reconstructing at many centres costs one filter each and no re-padding.
    filter
        ``ramp``, ``shepp-logan``, ``cosine``, ``hann``, ``hamming``, ``parzen`` or ``none``.
    shape
        Output slice shape ``(ny, nx)``; default ``(ncol, ncol)``.
    pad_factor
        Edge padding of the columns before filtering (truncation artefacts).
    mask
        Zero the pixels outside the reconstruction circle.
    backend
        See :func:`tomoflow.recon.project`.

    Returns
    -------
    ``(z, y, x)`` float32 volume (``(y, x)`` for a sinogram) in units of attenuation per pixel,
    same namespace as the input.
    """
    xp = get_namespace(projections)
    p = xp.asarray(projections)
    single = p.ndim == 2
    if single:
        p = p[:, None, :]
    if p.ndim != 3:
        raise InputError(f"fbp expects (angle, row, col) projections, got shape {tuple(p.shape)}")
    na, _, ncol = p.shape
    angles = np.asarray(to_numpy(angles_deg), dtype=np.float64).reshape(-1)
    if angles.size != na:
        raise InputError(f"{angles.size} angles for {na} projections")
    if filter.lower() not in FILTERS and filter.lower() != "ram-lak":
        raise InputError(f"unknown FBP filter {filter!r}; choose one of {', '.join(FILTERS)}")
    ctr = centre_column(ncol) if center is None else float(center)
    if not np.isfinite(ctr) or not (-ncol < ctr < 2 * ncol):
        raise InputError(f"rotation centre {center!r} is outside the detector (0 .. {ncol - 1})")
    filtered = filter_projections(p, filter, shift_px=centre_column(ncol) - ctr, pad_factor=pad_factor)
    filtered *= xp.asarray(angular_weights(angles), dtype=xp.float32)[:, None, None]
    vol = backproject(filtered, angles, center=None, shape=shape, model="interpolate", backend=backend)
    if mask:
        vol *= circle_mask(vol.shape[1:], xp)[None]
    return vol[0] if single else vol
