"""Reconstruct-and-reproject: the reference every alignment method registers projections against.

The ResNet aligner (Fu et al. 2021) reads each measured projection next to the reprojection of an MLEM
reconstruction made *from the jittered data itself*; the phase-correlation and consistency baselines
register against the same kind of reprojection. This module is the one place that makes it, used at
inference and when training pairs are simulated, so the network sees at inference exactly what it was
trained on.
"""

from __future__ import annotations

from typing import Any

from tomoflow._checks import check_int
from tomoflow.backend import get_namespace

__all__ = ["reproject", "reference_volume", "reproject_volume", "DEFAULT_MLEM_ITERATIONS"]

#: MLEM iterations of the reference reconstruction: enough for the object's outline and main
#: features (what the registration needs), few enough to keep jitter blur from being fitted.
DEFAULT_MLEM_ITERATIONS = 8


def reproject(
    projections: Any,
    angles_deg: Any,
    *,
    center: float | None = None,
    n_iter: int = DEFAULT_MLEM_ITERATIONS,
    x0: Any = None,
    return_volume: bool = False,
    subsets: int = 1,
    weights: Any = None,
) -> Any:
    """Reproject an MLEM reconstruction of ``projections`` at their own angles.

    Parameters
    ----------
    projections
        ``(angle, row, col)`` line integrals (flat/dark-normalised, ``-log``), NumPy or CuPy. Negative
        values (noise, background offsets) are clipped to zero by MLEM.
    angles_deg
        ``(angle,)`` rotation angles in degrees.
    center
        Rotation axis column in pixels; default ``(ncol - 1) / 2``.
    n_iter
        MLEM iterations (``>= 1``).
    x0
        Warm start ``(row, col, col)`` volume (e.g. the previous reconstruction of an iterative
        alignment).
    return_volume
        Also return the reconstruction.
    subsets
        Ordered subsets of the reconstruction (:func:`tomoflow.recon.mlem`; 1 = MLEM).
    weights
        Per-datum weights of the reconstruction (:func:`tomoflow.recon.mlem`; 0 = missing), e.g.
        :func:`tomoflow.align.consistency.measured_fraction`; default all 1.

    Returns
    -------
    reprojections : array
        ``(angle, row, col)`` float32, same namespace as the input.
    volume : array
        Only with ``return_volume``: the ``(row, col, col)`` reconstruction.
    """
    n_iter = check_int("n_iter (MLEM iterations)", n_iter, low=1)
    xp = get_namespace(projections)
    p = xp.asarray(projections, dtype=xp.float32)
    vol = reference_volume(p, angles_deg, center=center, n_iter=n_iter, x0=x0, subsets=subsets, weights=weights)
    rep = reproject_volume(vol, angles_deg, center=center, n_cols=p.shape[-1])
    return (rep, vol) if return_volume else rep


def reference_volume(
    projections: Any,
    angles_deg: Any,
    *,
    center: float | None = None,
    n_iter: int = DEFAULT_MLEM_ITERATIONS,
    x0: Any = None,
    subsets: int = 1,
    weights: Any = None,
) -> Any:
    """The MLEM (OSEM with ``subsets``) reconstruction ``(row, col, col)`` of :func:`reproject` (its
    first half)."""
    from tomoflow.recon import mlem

    n_iter = check_int("n_iter (MLEM iterations)", n_iter, low=1)
    xp = get_namespace(projections)
    return mlem(
        xp.asarray(projections, dtype=xp.float32),
        angles_deg,
        center=center,
        n_iter=n_iter,
        x0=x0,
        subsets=subsets,
        weights=weights,
    )


def reproject_volume(volume: Any, angles_deg: Any, *, center: float | None = None, n_cols: int | None = None) -> Any:
    """Reprojections ``(angle, row, col)`` float32 of a reference volume (the second half of
    :func:`reproject`)."""
    from tomoflow.recon import project

    xp = get_namespace(volume)
    return xp.asarray(project(volume, angles_deg, center=center, n_cols=n_cols), dtype=xp.float32)
