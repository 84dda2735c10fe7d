"""The ResNet aligner (Fu et al. 2021) as a method, and the hybrid: network first, consistency after.

``align_resnet``: MLEM + reprojection (:func:`~tomoflow.align.reproject.reproject`), then the network
reads each (projection, reprojection) pair and regresses its jitter in one batched pass. Fast and
robust to noise, accurate to a fraction of a pixel at the network's 160 x 160 input scale.

``align_hybrid`` (the default of :func:`tomoflow.align.estimate_shifts`): the network's estimate
starts a few consistency iterations (:func:`~tomoflow.align.consistency.align_consistency`) at full
resolution, which bring it to sub-pixel accuracy and stop on the tolerance. Starting within a pixel
or two of the answer, the consistency loop needs a handful of iterations instead of tens, and it
never has to cross the large jitters (±20 px) where its registration can lock onto a wrong peak.

Per-projection confidence (``AlignResult.quality``) is the registration peak quality of the corrected
projection against the final reprojection; projections below :data:`LOW_QUALITY` are reported as
unreliable by the pipeline's report instead of silently trusted.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from tomoflow._checks import check_int
from tomoflow.align.consistency import AlignResult, _check_scan, _corrected, _initial_center, align_consistency
from tomoflow.align.gauge import fix_gauge
from tomoflow.align.phase import phase_correlate
from tomoflow.align.reproject import DEFAULT_MLEM_ITERATIONS, reproject
from tomoflow.backend import to_numpy

__all__ = ["align_resnet", "align_hybrid", "network_shifts", "LOW_QUALITY"]

#: Registration quality below which a projection's correction is flagged as unreliable.
LOW_QUALITY = 0.5


def align_resnet(
    projections: Any,
    angles_deg: Any,
    *,
    center: str | float | None = "auto",
    recon_iterations: int = DEFAULT_MLEM_ITERATIONS,
    aligner: Any = None,
    batch_size: int = 64,
    device: str = "auto",
) -> AlignResult:
    """Jitter of every projection from the shipped ResNet (one reprojection, one network pass).

    Parameters
    ----------
    projections
        ``(angle, row, col)`` line integrals (flat/dark-normalised, ``-log``), NumPy or CuPy; at least
        32 x 32 pixels.
    angles_deg
        ``(angle,)`` angles in degrees.
    center
        Rotation-axis column (px); ``"auto"`` estimates it; None = detector centre.
    recon_iterations
        MLEM iterations of the reference reconstruction.
    aligner
        A :class:`tomoflow.align.resnet.JitterAligner`; default the shipped weights.
    batch_size
        Pairs per network pass (memory only).
    device
        Torch device for the shipped weights: ``cpu``, ``cuda`` or ``auto``.

    Returns
    -------
    AlignResult
        ``method="resnet"``; shifts gauge-fixed, the common ``dx`` folded into ``center``; ``log``
        holds one entry with the wall time of each step (``mlem_s``, ``network_s``, ``register_s``).
    """
    recon_iterations = check_int("recon_iterations", recon_iterations, low=1)
    _, p, ang = _check_scan(projections, angles_deg)
    t0 = time.perf_counter()
    ctr = _initial_center(center, p, ang)
    rep, vol = reproject(p, ang, center=ctr, n_iter=recon_iterations, return_volume=True)
    t1 = time.perf_counter()
    res = network_shifts(p, rep, ang, ctr, aligner=aligner, batch_size=batch_size, device=device)
    res.log[0].update({"mlem_s": t1 - t0, "seconds": time.perf_counter() - t0})
    res.volume = vol
    return res


def network_shifts(projections: Any, reprojections: Any, angles_deg: np.ndarray, center: float, *,
                   aligner: Any = None, batch_size: int = 64, device: str = "auto") -> AlignResult:
    """The network half of :func:`align_resnet`: predict each pair's jitter, score each corrected pair
    against its reprojection (confidence), gauge-fix and fold the common ``dx`` into ``center``.

    Parameters
    ----------
    projections, reprojections
        ``(angle, row, col)`` stacks (checked by the caller).
    angles_deg
        ``(angle,)`` degrees.
    center
        Rotation axis (px) the reprojections were made with.
    aligner, batch_size, device
        See :func:`align_resnet`.
    """
    from tomoflow.align.resnet import load_aligner

    t1 = time.perf_counter()
    aligner = aligner if aligner is not None else load_aligner(device=device)
    raw = np.asarray(aligner.predict(projections, reprojections, batch_size=batch_size), dtype=np.float64)
    t2 = time.perf_counter()
    check = phase_correlate(_corrected(projections, raw), reprojections)  # how well each corrected pair matches
    quality = np.asarray(to_numpy(check.quality), dtype=np.float64)
    g = fix_gauge(raw, center=center, angles_deg=angles_deg)
    t3 = time.perf_counter()
    entry = {"iteration": 1, "max_update_px": float(np.abs(raw).max()),
             "rms_update_px": float(np.sqrt(np.mean(np.sum(raw**2, axis=1)))), "center": float(g.center),
             "seconds": t3 - t1, "network_s": t2 - t1, "register_s": t3 - t2}
    return AlignResult(shifts=np.asarray(g.shifts, dtype=np.float64), center=float(g.center), log=[entry],
                       quality=quality, converged=True, n_iter=1, method="resnet")


def align_hybrid(
    projections: Any,
    angles_deg: Any,
    *,
    center: str | float | None = "auto",
    recon_iterations: int = DEFAULT_MLEM_ITERATIONS,
    n_iter: int = 10,
    tol: float = 0.02,
    aligner: Any = None,
    batch_size: int = 64,
    device: str = "auto",
    **consistency_options: Any,
) -> AlignResult:
    """The ResNet estimate refined by consistency iterations to sub-pixel accuracy (module docstring).

    Parameters
    ----------
    projections, angles_deg, center, recon_iterations, aligner, batch_size, device
        As for :func:`align_resnet`.
    n_iter
        Most refinement iterations.
    tol
        Stop when the largest update of an iteration is below this (px).
    **consistency_options
        Further options of :func:`~tomoflow.align.consistency.align_consistency` (``max_step``,
        ``upsample``, ``warm_iterations``, ``refine_center``).

    Returns
    -------
    AlignResult
        ``method="hybrid"``; ``log`` = the network step then one entry per refinement iteration.
    """
    coarse = align_resnet(projections, angles_deg, center=center, recon_iterations=recon_iterations,
                          aligner=aligner, batch_size=batch_size, device=device)
    # The refinement starts from the network's shifts and warm-starts from its reference volume.
    fine = align_consistency(projections, angles_deg, center=coarse.center, n_iter=n_iter, tol=tol,
                             recon_iterations=recon_iterations, init_shifts=coarse.shifts, x0=coarse.volume,
                             **consistency_options)
    log = list(coarse.log) + [{**e, "iteration": int(e.get("iteration", i + 1)) + 1} for i, e in enumerate(fine.log)]
    return AlignResult(shifts=fine.shifts, center=fine.center, log=log, quality=fine.quality,
                       converged=fine.converged, n_iter=1 + fine.n_iter, method="hybrid")
