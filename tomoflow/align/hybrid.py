"""The ResNet aligner (Fu et al. 2021) as a method, and the hybrid: network first, consistency after.

``align_resnet``: impulse noise removed (:func:`tomoflow.recon.remove_outliers`), the stack resampled
to the network's 160 x 160 input (*network space*), then passes of MLEM + reprojection there, each
followed by one batched network pass over every (projection, reprojection) pair. The first pass
crosses the full jitter against a blurred reference; the second (default ``passes=2``) reads the data
corrected by the first against a sharp reference, where the network is most accurate. Reconstructing
at the network's resolution makes each pass cheap (a 256-px scan: 160^3 instead of 256^3 voxels).
The training pairs are made by the same functions (:func:`start_network`, :func:`network_pairs`).

``align_hybrid`` (the default of :func:`tomoflow.align.estimate_shifts`): the network's estimate
starts consistency iterations (:func:`~tomoflow.align.consistency.align_consistency`) that bring it to
sub-pixel accuracy (:func:`refine`): first on the detector binned 2 x 2, then at full resolution from
the binned stage's shifts and converged volume, with OSEM references. Starting within a pixel or two of
the answer, the loop never has to cross the large jitters (±20 px) where its registration can lock onto
a wrong peak, and what remains is to sharpen the reference, which the binned, ordered-subsets
reconstructions do several times faster than full-resolution MLEM (:func:`refine` says why).

Per-projection confidence (``AlignResult.quality``) is the registration peak quality of the corrected
projection against the final reprojection; projections below :data:`LOW_QUALITY` are reported as
unreliable by the pipeline's report instead of silently trusted.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from tomoflow._checks import check_int, check_number
from tomoflow.align.binning import bin_center, bin_stack, unbin_center, unbin_volume
from tomoflow.align.consistency import (
    AlignResult,
    _corrected,
    align_consistency,
    check_scan,
    clean_copy,
    fill_missing,
    initial_center,
    measured_fraction,
)
from tomoflow.align.gauge import fix_gauge
from tomoflow.align.phase import phase_correlate
from tomoflow.align.reproject import DEFAULT_MLEM_ITERATIONS, reference_volume, reproject_volume
from tomoflow.backend import asarray_on, to_numpy
from tomoflow.errors import ConfigError

__all__ = [
    "align_resnet",
    "align_hybrid",
    "refine",
    "NetworkState",
    "start_network",
    "network_volume",
    "network_reprojections",
    "network_pairs",
    "network_update",
    "result_of",
    "network_center",
    "LOW_QUALITY",
    "DEFAULT_PASSES",
]

log = logging.getLogger(__name__)

#: Registration quality below which a projection's correction is flagged as unreliable.
LOW_QUALITY = 0.5


#: Network passes of the resnet method: the first reads pairs whose reference is blurred by the full
#: jitter; the second, made from the data corrected by the first, reads sharp pairs of small offsets.
DEFAULT_PASSES = 2

#: Detector binning of the hybrid's first refinement stage (:func:`refine`).
COARSE_BINNING = 2
#: Fewest binned columns / rows for which :func:`refine` bins that axis.
COARSE_MIN_COLS = 64
COARSE_MIN_ROWS = 16
#: Ordered subsets of the refinement's reference reconstructions (OSEM; 1 = MLEM).
REFINE_SUBSETS = 4


@dataclass
class NetworkState:
    """The resnet method's running estimate (what one pass hands the next; the Dask tasks pass it too).

    Attributes
    ----------
    stack
        ``(angle, 160, 160)`` float32: the measured (outlier-free) projections resampled to the
        network input (:func:`~tomoflow.align.resnet.to_input_size`); never shifted in place.
    scale
        ``(2,)`` detector pixels per network pixel ``(rows / 160, cols / 160)``.
    center
        Rotation axis of the detector data (column, detector px), refined by every pass.
    shifts
        ``(angle, 2)`` gauge-fixed jitter estimate ``(dy, dx)``, detector px.
    log
        One entry per pass.
    quality
        Per-projection registration quality of the last pass's corrected pairs (None before).
    """

    stack: np.ndarray
    scale: np.ndarray
    center: float
    shifts: np.ndarray
    log: list[dict[str, float]] = field(default_factory=list)
    quality: np.ndarray | None = None


def network_center(center: float, col_scale: float) -> float:
    """A detector column (px) in network pixels, ``col_scale`` detector px per network px (pixel
    centres aligned, as the resampling)."""
    return (float(center) + 0.5) / float(col_scale) - 0.5


def start_network(projections: Any, angles_deg: Any, center: str | float | None = "auto") -> NetworkState:
    """Initial :class:`NetworkState`: the centre (``"auto"``: :func:`~tomoflow.align.consistency.estimate_axis`)
    and the stack resampled to the network input."""
    from tomoflow.align.resnet import shift_scale, to_input_size

    _, p, ang = check_scan(projections, angles_deg)
    ctr = initial_center(center, p, ang)
    return NetworkState(
        stack=to_input_size(p),
        scale=shift_scale(tuple(p.shape[-2:])),
        center=float(ctr),
        shifts=np.zeros((int(p.shape[0]), 2)),
    )


def network_measured(state: NetworkState) -> np.ndarray | None:
    """How much of each network-space pixel, once the stack is moved by the current estimate, was
    measured rather than pulled in from beyond the detector
    (:func:`~tomoflow.align.consistency.measured_fraction`); None when all of it was."""
    return measured_fraction(state.stack.shape, state.shifts / state.scale[None, :])


def network_volume(
    state: NetworkState,
    angles_deg: Any,
    *,
    recon_iterations: int = DEFAULT_MLEM_ITERATIONS,
    xp: ModuleType | None = None,
) -> tuple[np.ndarray, Any]:
    """First half of :func:`network_pairs`: ``(data, volume)``, the network-space stack moved by the
    current estimate (NumPy) and its MLEM reconstruction about the current centre, weighted by
    :func:`network_measured` (what the move pulled in from beyond the detector is left out), computed
    with the array namespace ``xp`` (default NumPy; CuPy: on the GPU, the volume returned there)."""
    data = np.asarray(to_numpy(_corrected(state.stack, state.shifts / state.scale[None, :])), dtype=np.float32)
    vol = reference_volume(
        data if xp is None else asarray_on(data, xp),
        angles_deg,
        center=network_center(state.center, state.scale[1]),
        n_iter=recon_iterations,
        weights=network_measured(state),
    )
    return data, vol


def network_reprojections(state: NetworkState, volume: Any, angles_deg: Any) -> np.ndarray:
    """Second half of :func:`network_pairs`: the reprojections of ``volume`` at the scan's angles."""
    rep = reproject_volume(
        volume, angles_deg, center=network_center(state.center, state.scale[1]), n_cols=int(state.stack.shape[-1])
    )
    return np.asarray(to_numpy(rep), dtype=np.float32)


def network_fill(state: NetworkState, data: np.ndarray, reprojections: np.ndarray) -> np.ndarray:
    """The first half's stack as the network reads it: what the move pulled in from beyond the
    detector (:func:`network_measured`) taken from the reprojection
    (:func:`~tomoflow.align.consistency.fill_missing`)."""
    return np.asarray(fill_missing(data, reprojections, network_measured(state)), dtype=np.float32)


def network_pairs(
    state: NetworkState, angles_deg: Any, *, recon_iterations: int = DEFAULT_MLEM_ITERATIONS
) -> tuple[np.ndarray, np.ndarray]:
    """The (projection, reprojection) pairs the network reads, made in network space: the stack moved by
    the current estimate, its MLEM reconstruction about the current centre, reprojected, and what the
    move pulled in from beyond the detector filled from the reprojection. Training pairs are made
    by this function too (:mod:`tomoflow.align.training_data`)."""
    data, vol = network_volume(state, angles_deg, recon_iterations=recon_iterations)
    rep = network_reprojections(state, vol, angles_deg)
    return network_fill(state, data, rep), rep


def network_update(
    state: NetworkState,
    data: np.ndarray,
    reprojections: np.ndarray,
    angles_deg: Any,
    *,
    aligner: Any = None,
    batch_size: int = 64,
    device: str = "auto",
    flips: bool = True,
) -> NetworkState:
    """One network pass over the pairs of :func:`network_pairs`: add the predicted offsets to the
    estimate, gauge-fix it (the common ``dx`` refines the centre) and score every corrected pair against
    its reprojection (confidence)."""
    from tomoflow.align.resnet import load_aligner

    ang = np.asarray(angles_deg, dtype=np.float64)
    t1 = time.perf_counter()
    aligner = aligner if aligner is not None else load_aligner(device=device)
    # flips (test-time augmentation) only after the first pass: the first estimate only needs to be close
    tta = bool(flips) and len(state.log) > 0
    d_net = np.asarray(aligner.predict(data, reprojections, batch_size=batch_size, flips=tta), dtype=np.float64)
    t2 = time.perf_counter()
    check = phase_correlate(_corrected(data, d_net), reprojections)  # how well each corrected pair matches
    previous = state.shifts
    g = fix_gauge(previous + d_net * state.scale[None, :], center=state.center, angles_deg=ang)
    shifts = np.asarray(g.shifts, dtype=np.float64)
    moved = shifts - previous
    g_center = float(g.center)  # type: ignore[arg-type]  # fix_gauge sets the centre
    t3 = time.perf_counter()
    entry = {
        "iteration": len(state.log) + 1,
        "max_update_px": float(np.abs(moved).max()),
        "rms_update_px": float(np.sqrt(np.mean(np.sum(moved**2, axis=1)))),
        "center": g_center,
        "network_s": t2 - t1,
        "register_s": t3 - t2,
    }
    return NetworkState(
        stack=state.stack,
        scale=state.scale,
        center=g_center,
        shifts=shifts,
        log=[*state.log, entry],
        quality=np.asarray(to_numpy(check.quality), dtype=np.float64),
    )


def align_resnet(
    projections: Any,
    angles_deg: Any,
    *,
    center: str | float | None = "auto",
    recon_iterations: int = DEFAULT_MLEM_ITERATIONS,
    passes: int = DEFAULT_PASSES,
    tol: float = 0.05,
    aligner: Any = None,
    batch_size: int = 64,
    device: str = "auto",
    despeckle: bool = True,
    flips: bool = True,
) -> AlignResult:
    """Jitter of every projection from the shipped ResNet, in network space.

    The stack is resampled to the network's 160 x 160 input (rows and columns independently; parallel
    beam makes that a valid scan), and each pass reconstructs it (MLEM) with the current correction,
    reprojects, and lets the network read every (projection, reprojection) pair. The first pass
    crosses the full jitter; the second reads sharp pairs of small offsets and brings the estimate to
    a fraction of a detector pixel. Shifts are scaled back to detector pixels.

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
        MLEM iterations of each pass's reference reconstruction.
    passes
        Most network passes (1-5).
    tol
        Stop after a pass whose largest update is below this (detector px).
    aligner
        A :class:`tomoflow.align.resnet.JitterAligner`; default the shipped weights.
    batch_size
        Pairs per network pass (memory only).
    device
        Torch device for the shipped weights: ``cpu``, ``cuda`` or ``auto``.
    despeckle
        Remove impulse noise first (:func:`tomoflow.recon.remove_outliers`; skipped automatically on
        scans without it). The estimate is made on the cleaned copy only.
    flips
        Test-time augmentation of the network in every pass after the first
        (:meth:`~tomoflow.align.resnet.JitterAligner.predict`): average its reading of each pair and
        of the pair flipped three ways (four times that pass's network time, a lower variance).

    Returns
    -------
    AlignResult
        ``method="resnet"``; shifts gauge-fixed, the common ``dx`` folded into ``center``; ``log``
        holds one entry per pass with the wall time of each step (``mlem_s``, ``network_s``,
        ``register_s``).
    """
    recon_iterations = check_int("recon_iterations", recon_iterations, low=1)
    passes = check_int("passes", passes, low=1)
    if passes > 5:
        raise ConfigError(f"passes must be 1-5, got {passes}")
    tol = check_number("tol (pixels)", tol, low=0.0, low_open=True)
    _, p, ang = check_scan(projections, angles_deg)
    if despeckle:
        p = clean_copy(p)
    from tomoflow.align.resnet import load_aligner

    aligner = aligner if aligner is not None else load_aligner(device=device)
    state = start_network(p, ang, center)
    for _ in range(passes):
        t0 = time.perf_counter()
        data, rep = network_pairs(state, ang, recon_iterations=recon_iterations)
        t1 = time.perf_counter()
        state = network_update(state, data, rep, ang, aligner=aligner, batch_size=batch_size, flips=flips)
        state.log[-1].update({"mlem_s": t1 - t0, "seconds": time.perf_counter() - t0})
        if len(state.log) > 1 and state.log[-1]["max_update_px"] < tol:
            break
    return result_of(state)


def result_of(state: NetworkState) -> AlignResult:
    """The :class:`AlignResult` of a finished :class:`NetworkState`."""
    return AlignResult(
        shifts=state.shifts,
        center=state.center,
        log=list(state.log),
        quality=state.quality if state.quality is not None else np.zeros(len(state.shifts)),
        converged=True,
        n_iter=len(state.log),
        method="resnet",
    )


def align_hybrid(
    projections: Any,
    angles_deg: Any,
    *,
    center: str | float | None = "auto",
    recon_iterations: int = DEFAULT_MLEM_ITERATIONS,
    passes: int = DEFAULT_PASSES,
    n_iter: int = 10,
    tol: float = 0.02,
    aligner: Any = None,
    batch_size: int = 64,
    device: str = "auto",
    despeckle: bool = True,
    flips: bool = True,
    **consistency_options: Any,
) -> AlignResult:
    """The ResNet estimate refined by consistency iterations to sub-pixel accuracy (module docstring).

    Parameters
    ----------
    projections, angles_deg, center, recon_iterations, passes, aligner, batch_size, device, despeckle, flips
        As for :func:`align_resnet`.
    n_iter
        Most full-resolution refinement iterations.
    tol
        Stop them when the largest update of an iteration is below this (px).
    **consistency_options
        Options of :func:`refine` (``binning``, ``coarse_iter``, ``coarse_tol``, ``coarse_warm``,
        ``subsets``) and of :func:`~tomoflow.align.consistency.align_consistency` (``max_step``,
        ``upsample``, ``warm_iterations``, ``refine_center``).

    Returns
    -------
    AlignResult
        ``method="hybrid"``; ``log`` = the network passes, then one entry per refinement iteration
        (binned ones carry ``"binning"``).
    """
    _, p, ang = check_scan(projections, angles_deg)
    if despeckle:
        p = clean_copy(p)
    coarse = align_resnet(
        p,
        ang,
        center=center,
        recon_iterations=recon_iterations,
        passes=passes,
        aligner=aligner,
        batch_size=batch_size,
        device=device,
        despeckle=False,
        flips=flips,
    )
    return refine(p, ang, coarse, n_iter=n_iter, tol=tol, recon_iterations=recon_iterations, **consistency_options)


def refine(
    projections: Any,
    angles_deg: Any,
    coarse: AlignResult,
    *,
    n_iter: int = 10,
    tol: float = 0.02,
    binning: int = COARSE_BINNING,
    coarse_iter: int = 40,
    coarse_tol: float = 0.01,
    coarse_warm: int = 2,
    recon_iterations: int = DEFAULT_MLEM_ITERATIONS,
    subsets: int = REFINE_SUBSETS,
    **consistency_options: Any,
) -> AlignResult:
    """The hybrid's second half: consistency iterations started from a network estimate ``coarse``
    (its shifts and centre), first on the stack binned by ``binning``, then at full resolution.

    Why two resolutions: what limits a consistency loop that starts near the answer is not the
    registration but its reference. Registered against the reprojection of a reconstruction that has
    not converged, a projection is pulled towards where the blurred reference puts its features, and
    that bias fades only as the warm-started reconstruction sharpens, a few hundredths of a pixel per
    iteration. Two things make the reference converge sooner: ordered subsets (OSEM, ``subsets`` = 4:
    about four MLEM iterations' progress for the price of one), and a binned stack (``binning`` = 2:
    8x fewer voxels), which converges its reconstruction and the shifts in a fraction of the time (``coarse_iter``
    iterations of ``coarse_warm`` MLEM iterations,
    until the largest update is below ``coarse_tol`` full-resolution px); the full-resolution loop
    then starts from those shifts *and* from that converged volume (repeated onto the full grid), so
    its first reference is already sharp and it only has to add the last sub-binned-pixel detail
    (``n_iter`` iterations at most, stopping below ``tol`` px).

    Parameters
    ----------
    projections
        ``(angle, row, col)`` outlier-free line integrals (full resolution), NumPy or CuPy.
    angles_deg
        ``(angle,)`` degrees.
    coarse
        The starting estimate (:func:`align_resnet`'s result).
    n_iter, tol
        Most full-resolution iterations, and their stopping tolerance (px).
    binning
        Detector binning of the first stage (``>= 1``; 1 = no binned stage). An axis is binned only
        where the binned detector keeps at least :data:`COARSE_MIN_COLS` columns /
        :data:`COARSE_MIN_ROWS` rows.
    coarse_iter, coarse_tol, coarse_warm
        Binned stage: most iterations, tolerance in full-resolution px, MLEM iterations per iteration.
    recon_iterations
        Iterations of the first (cold) reconstruction.
    subsets
        Ordered subsets of every reference reconstruction (:func:`tomoflow.recon.mlem`; 1 = MLEM).
    **consistency_options
        Further options of :func:`~tomoflow.align.consistency.align_consistency` for both stages
        (``max_step``, ``upsample``, ``refine_center``, ``vertical``; ``warm_iterations`` for the
        full-resolution stage).

    Returns
    -------
    AlignResult
        ``method="hybrid"``; ``log`` = the network passes, the binned iterations (``"binning"`` > 1)
        and the full-resolution iterations.
    """
    binning = check_int("binning", binning, low=1)
    coarse_iter = check_int("coarse_iter", coarse_iter, low=1)
    coarse_tol = check_number("coarse_tol (pixels)", coarse_tol, low=0.0, low_open=True)
    coarse_warm = check_int("coarse_warm", coarse_warm, low=1)
    _, p, ang = check_scan(projections, angles_deg, vertical=bool(consistency_options.get("vertical", True)))
    ny, nx = int(p.shape[1]), int(p.shape[2])
    fr = binning if ny // binning >= COARSE_MIN_ROWS and consistency_options.get("vertical", True) else 1
    fc = binning if nx // binning >= COARSE_MIN_COLS else 1
    shifts, center, x0 = np.asarray(coarse.shifts, dtype=np.float64), float(coarse.center), coarse.volume
    log_ = list(coarse.log)
    if fr > 1 or fc > 1:
        scale = np.array([fr, fc], dtype=np.float64)
        opts = {k: v for k, v in consistency_options.items() if k != "warm_iterations"}
        binned = align_consistency(
            bin_stack(p, fr, fc),
            ang,
            center=bin_center(center, fc),
            n_iter=coarse_iter,
            tol=coarse_tol / max(fr, fc),
            init_shifts=shifts / scale,
            warm_iterations=coarse_warm,
            recon_iterations=recon_iterations,
            despeckle=False,
            subsets=subsets,
            **opts,
        )
        shifts, center = binned.shifts * scale, unbin_center(binned.center, fc)
        x0 = unbin_volume(binned.volume, fr, fc, (ny, nx, nx))
        log_ += [_stage_entry(e, len(log_), fc, scale) for e in binned.log]
        log.info(
            "hybrid: binned x%d stage %d iterations, last update %.3f px",
            binning,
            binned.n_iter,
            log_[-1]["max_update_px"],
        )
    fine = align_consistency(
        p,
        ang,
        center=center,
        n_iter=n_iter,
        tol=tol,
        init_shifts=shifts,
        x0=x0,
        recon_iterations=recon_iterations,
        despeckle=False,
        subsets=subsets,
        **consistency_options,
    )
    k = len(log_)
    log_ += [{**e, "iteration": int(e.get("iteration", i + 1)) + k} for i, e in enumerate(fine.log)]
    return AlignResult(
        shifts=fine.shifts,
        center=fine.center,
        log=log_,
        quality=fine.quality,
        converged=fine.converged,
        n_iter=len(log_),
        method="hybrid",
        volume=fine.volume,
    )


def _stage_entry(entry: dict[str, float], offset: int, cols: int, scale: np.ndarray) -> dict[str, float]:
    """A binned iteration's log entry in full-resolution pixels, numbered after ``offset`` entries."""
    f = float(scale.max())
    return {
        **entry,
        "iteration": int(entry["iteration"]) + offset,
        "max_update_px": entry["max_update_px"] * f,
        "rms_update_px": entry["rms_update_px"] * f,
        "center": unbin_center(entry["center"], cols),
        "binning": f,
    }
