"""Classical jitter alignment: one-pass reprojection registration and the iterative consistency loop.

Both register every measured projection against the reprojection of a reconstruction made from the
data themselves (:func:`tomoflow.align.reproject.reproject`), with the batched upsampled phase
correlation of :mod:`tomoflow.align.phase`.

- :func:`align_phase` is the one-pass baseline: one MLEM + reprojection, one registration of all
  projections. It is what the ResNet aligner replaces (``estimate_shifts(method="phase")``).
- :func:`align_consistency` is the consistency baseline (TomoPy ``align_joint``, PSI style): repeat
  reconstruct -> reproject -> register -> accumulate until the largest update is below ``tol`` px.

Why iterate: the reference is reconstructed from the jittered data, so it is blurred by the jitter
and every reprojection also holds a little of its own projection (MLEM fits each view a bit). A
registration against it finds only part of each displacement (the rest is pulled towards zero); the
loop corrects the data with what it found, reconstructs a sharper, more consistent reference and
registers again, shrinking the residual geometrically.

Loop details (each iteration):

1. The *accumulated* shifts are applied to the *raw* projections once
   (:func:`tomoflow.recon.shift_images` with ``-shifts``): corrected data are never shifted again,
   so interpolation errors do not pile up.
2. MLEM reconstruction warm-started from the previous iteration's volume (``recon_iterations`` MLEM
   iterations at the first outer iteration, ``warm_iterations`` afterwards), reprojected at the
   scan's angles. What the shift pulled in from beyond the detector's edge (a band as wide as the
   shift, where the shift only replicated the edge) is not data: the reconstruction weights it out
   (:func:`measured_fraction`, MLEM ``weights``) and the registration sees the reprojection there
   (:func:`fill_missing`). Left in, the band disagrees with the reprojection wherever the sample
   reaches the field's edge and pulls every registration in proportion to its shift: the classical
   loop stalls at 0.19 px on a sample as wide as the field where this one reaches 0.08 px, and at
   0.34 px where this one reaches 0.014 px on a noisy off-centre scan (tests).
3. Registration of the corrected projections against the reprojections, all at once
   (:func:`tomoflow.align.phase.phase_correlate` with plain cross-correlation and no taper,
   :data:`LOOP_NORMALIZATION` and :data:`LOOP_WINDOW` say why), giving the update.
4. Step clipping: the first iteration may move a projection by up to a quarter of the field on each
   axis (rows / 4, cols / 4: the initial jitter may be large, and a quarter of the field is as far as
   a registration against a blurred reference is worth believing); later iterations by at most
   ``max_step`` px per axis, and their registration searches only ``+-max(4 max_step, 4)`` px, so a
   spurious far peak (noise, a feature leaving the field) cannot throw a converged projection away,
   while a real large residual is still followed, ``max_step`` px per iteration. (PSI clips every
   step to 0.5 px; a registration step is not a Gauss-Newton step and is reliable further, so the
   default here is 2 px.)
5. Gauge fixing (:func:`tomoflow.align.gauge.fix_gauge` with the angles): the mean ``dy`` is removed;
   ``dx`` is fitted with ``c + tx cos(theta) + ty sin(theta)``; the sinusoid (the object sitting
   elsewhere in the slice, unobservable) is removed, and the constant ``c`` moves the rotation centre
   (``refine_center=True``): the centre estimated before the loop (``center="auto"``:
   :func:`tomoflow.recon.find_center` on the input) is refined inside it. With a mean-only gauge the
   loop can drift along the sinusoid, and over 180 degrees ``sin`` has a mean of ``2 / pi``, so the
   drift would leak into the centre. With ``refine_center=False`` the centre is held and ``c`` stays
   in the shifts.

The loop stops when the largest change of the gauge-fixed shifts in an iteration is below ``tol`` px
(``converged=True``) or after ``n_iter`` iterations.

Comparing with a known jitter: the estimate carries no object-translation sinusoid, the truth does
(for ``n`` random jitters of standard deviation ``s``, about ``s sqrt(2 / n)`` px RMS): remove it from
the difference, ``fix_gauge(estimate - truth, angles_deg=angles)``, or a mean-only comparison reports
that unobservable part as error (1.8 px on a 181-angle, +-20 px scan that the loop aligns to 0.04 px).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tomoflow._checks import check_finite, check_int, check_number, validate_angles
from tomoflow.align.gauge import fix_gauge
from tomoflow.align.phase import MIN_SIZE, phase_correlate
from tomoflow.align.reproject import DEFAULT_MLEM_ITERATIONS, reproject
from tomoflow.backend import get_namespace, to_numpy
from tomoflow.errors import ConfigError, InputError
from tomoflow.geometry import check_center

__all__ = [
    "align_consistency",
    "align_phase",
    "register_phase",
    "estimate_axis",
    "check_scan",
    "initial_center",
    "AlignResult",
    "MIN_ANGLES",
]

log = logging.getLogger(__name__)

MIN_ANGLES = 8
"""Fewest projections a reconstruction-based alignment accepts."""

#: Spectrum weighting of the registrations against reprojections (``phase_correlate(normalization=)``).
#: Plain cross-correlation: a reprojection of a reconstruction made from the data also holds a faint
#: copy of each projection's own fine detail at zero shift; whitening boosts exactly that fine detail,
#: and the correlation then locks onto the zero-shift copy instead of the displacement.
LOOP_NORMALIZATION: str | None = None

#: Taper of the registrations against reprojections: none. A taper fixed to the detector reweights the
#: moving sample and pulls the peak towards zero shift (:mod:`tomoflow.align.phase`).
LOOP_WINDOW: str | None = None


@dataclass
class AlignResult:
    """Jitter estimated by an alignment method.

    Attributes
    ----------
    shifts
        ``(n_angles, 2)`` float64 jitter ``(dy, dx)`` in pixels (sign convention: docs/architecture.md;
        correct with ``shift_images(raw, -shifts)``), NumPy. Gauge-fixed (module docstring): mean
        ``dy`` is 0, ``dx`` holds no object-translation sinusoid, and its constant part is folded into
        ``center`` (mean ``dx`` 0) unless the centre was held.
    center
        Rotation-axis column (pixels) of the raw projections corrected with ``shifts``.
    log
        One dict per iteration: ``iteration`` (1-based), ``max_update_px``, ``rms_update_px``,
        ``center`` (after the iteration), ``seconds`` (wall time of the iteration).
    quality
        ``(n_angles,)`` float64 registration peak quality in ``[0, 1]`` of the last iteration (see
        :mod:`tomoflow.align.phase`); low values mark projections not to trust.
    converged
        True when the last update was below the tolerance.
    n_iter
        Outer iterations run.
    method
        ``"consistency"`` or ``"phase"``.
    volume
        The last reference reconstruction ``(row, col, col)`` when the method made one (a warm start
        for a refinement that follows); not part of the estimate.
    """

    shifts: np.ndarray
    center: float
    log: list[dict[str, float]] = field(default_factory=list)
    quality: np.ndarray = field(default_factory=lambda: np.zeros(0))
    converged: bool = False
    n_iter: int = 0
    method: str = "consistency"
    volume: Any = None


def check_scan(projections: Any, angles_deg: Any, *, vertical: bool = True) -> tuple[Any, Any, np.ndarray]:
    """Check that a scan is fit for reconstruction-based alignment, and return it as float32.

    Parameters
    ----------
    projections
        Line integrals ``(angle, row, col)``, NumPy or CuPy.
    angles_deg
        One angle per projection, degrees.
    vertical
        Whether the rows will be aligned too (then the detector needs at least ``MIN_SIZE`` rows).

    Returns
    -------
    tuple
        ``(xp, p, angles)``: the array namespace, the float32 stack and the validated float64 angles.

    Raises
    ------
    InputError
        Not 3-D, fewer than :data:`MIN_ANGLES` angles, too few pixels, or NaN / Inf values.
    """
    xp = get_namespace(projections)
    arr = xp.asarray(projections)
    if arr.ndim != 3:
        raise InputError(f"projections must be (angle, row, col), got shape {tuple(arr.shape)}", dataset="projections")
    p = arr.astype(xp.float32, copy=False)
    ang = validate_angles(angles_deg, int(p.shape[0]), dataset="angles")
    if ang.size < MIN_ANGLES:
        raise InputError(f"too few angles to align: {ang.size} (at least {MIN_ANGLES})", dataset="angles")
    ny, nx = int(p.shape[1]), int(p.shape[2])
    if nx < MIN_SIZE or (ny < MIN_SIZE and vertical):
        raise InputError(
            f"projections of {ny} x {nx} pixels are too small to align (at least {MIN_SIZE} "
            f"x {MIN_SIZE}; a detector of fewer rows aligns horizontally only: vertical=False)",
            dataset="projections",
        )
    check_finite(p, "projections", "normalise them first (tomoflow.recon.normalize_log)")
    return xp, p, ang


def estimate_axis(projections: Any, angles_deg: Any) -> float:
    """Rotation centre (column, px) of jittered line integrals, robust to zingers and dead pixels.

    A 3 x 3 median filter of every projection (salt-and-pepper otherwise sends the Fourier metric tens
    of pixels astray), then :func:`tomoflow.recon.find_center`. Training pairs are made with the same
    estimate (:mod:`tomoflow.align.training_data`), so the network sees at inference the pairs it learnt.
    """
    from tomoflow.recon import find_center
    from tomoflow.recon.outliers import median3x3

    return float(find_center(median3x3(projections), angles_deg))


def clean_copy(p: Any) -> Any:
    """The estimation copy of a stack: impulse noise removed (:func:`tomoflow.recon.remove_outliers`)."""
    from tomoflow.recon import remove_outliers

    res = remove_outliers(p)
    if res.applied:
        log.info("alignment: %.1f %% of the pixels were impulse noise, replaced for the estimate", 100 * res.fraction)
    return res.data


def initial_center(center: Any, p: Any, ang: np.ndarray) -> float:
    """The rotation centre an alignment starts from.

    Parameters
    ----------
    center
        A column in pixels, ``"auto"`` (estimated on the data by :func:`estimate_axis`) or None
        (the detector centre).
    p
        The checked stack ``(angle, row, col)`` (:func:`check_scan`).
    ang
        Its angles, degrees.

    Returns
    -------
    float
        The centre, column in pixels.

    Raises
    ------
    ConfigError
        A string other than ``"auto"``, or a column outside the detector.
    """
    ncol = int(p.shape[-1])
    if isinstance(center, str):
        if center != "auto":
            raise ConfigError(f"center must be 'auto', a column in pixels or None, got {center!r}")
        c = estimate_axis(p, ang)
        log.info("alignment: initial rotation centre %.2f px (estimated)", c)
        return c
    return check_center(center, ncol)


def _raw_shifts(value: Any, n: int) -> np.ndarray:
    """``init_shifts`` as a finite ``(n, 2)`` float64 host array (zeros when None)."""
    if value is None:
        return np.zeros((n, 2))
    sh = np.asarray(to_numpy(value), dtype=np.float64)
    if sh.shape != (n, 2) or not np.all(np.isfinite(sh)):
        raise InputError(
            f"init_shifts must be a finite ({n}, 2) array of (dy, dx), got shape {sh.shape}", dataset="init_shifts"
        )
    return sh.copy()


def _corrected(p: Any, shifts: np.ndarray) -> Any:
    """Raw projections moved by ``-shifts`` (one shift of the raw data; none when all are zero)."""
    from tomoflow.recon import shift_images

    if not np.any(shifts):
        return p
    return shift_images(p, -shifts)


def measured_fraction(shape: tuple[int, int, int], shifts: Any) -> np.ndarray | None:
    """How much of each pixel of projections moved by ``-shifts`` was measured (1) rather than pulled
    in from beyond the detector's edge (0).

    A projection corrected by ``-(dy, dx)`` takes pixel ``(r, c)`` from ``(r + dy, c + dx)``. The
    fraction of that source pixel lying on the detector (``[-0.5, n - 0.5]`` on each axis, product
    of the two axes) is the weight: 1 inside, 0 where the shift has only replicated the edge, a
    fraction on the boundary pixel, so the weight changes continuously with the shift. Left in, an
    edge band disagrees with the reprojection by the content that really lies there (a sample that
    reaches the field's edge), and every registration of that projection is pulled in proportion to
    its shift. The alignment loops weight the reference reconstruction by it (MLEM ``weights``) and
    fill the unmeasured part from the reprojection before registering (:func:`fill_missing`).

    Parameters
    ----------
    shape
        ``(angle, row, col)`` of the stack.
    shifts
        ``(angle, 2)`` jitter estimate ``(dy, dx)`` in px, the stack having been moved by ``-shifts``.

    Returns
    -------
    ``(angle, row, col)`` float32 NumPy array in [0, 1], or None when every pixel was measured.
    """
    n, ny, nx = (int(v) for v in shape)
    sh = np.asarray(to_numpy(shifts), dtype=np.float64).reshape(n, 2)
    rows, cols = _on_detector(ny, sh[:, 0]), _on_detector(nx, sh[:, 1])
    if rows.min() >= 1.0 and cols.min() >= 1.0:
        return None
    return (rows[:, :, None] * cols[:, None, :]).astype(np.float32)


def _on_detector(length: int, d: np.ndarray) -> np.ndarray:
    """``(n, length)``: the fraction of source pixel ``[k + d - 0.5, k + d + 0.5]`` on ``[-0.5, length - 0.5]``."""
    u = np.arange(length)[None, :] + d[:, None]
    return np.clip(np.minimum(u + 0.5, length - 0.5) - np.maximum(u - 0.5, -0.5), 0.0, 1.0)


def fill_missing(data: Any, reprojections: Any, measured: np.ndarray | None) -> Any:
    """``data`` with its unmeasured part (:func:`measured_fraction`) taken from the reprojection (what
    the model predicts there), ``measured * data + (1 - measured) * reprojections``, so that it carries
    no displacement; ``data`` itself when everything was measured."""
    if measured is None:
        return data
    xp = get_namespace(data)
    m = xp.asarray(measured, dtype=data.dtype)
    return m * data + (1 - m) * xp.asarray(reprojections, dtype=data.dtype)


def _first_limit(p: Any) -> tuple[float, float]:
    """Largest displacement believed from a registration against the first, blurred reference:
    a quarter of the field on each axis (pixels)."""
    return max(1.0, p.shape[1] / 4.0), max(1.0, p.shape[2] / 4.0)


def _gauge(shifts: np.ndarray, ctr: float, ang: np.ndarray, refine_center: bool) -> tuple[np.ndarray, float]:
    """Gauge-fixed shifts and centre: mean ``dy`` and the object-translation sinusoid of ``dx`` removed;
    the constant of ``dx`` moves into the centre (``refine_center``) or stays in the shifts."""
    g = fix_gauge(shifts, center=ctr, angles_deg=ang)
    out = np.asarray(g.shifts)
    if refine_center:
        return out, float(g.center)  # type: ignore[arg-type]  # fix_gauge sets the centre
    out[:, 1] += g.common_dx
    return out, ctr


def align_phase(
    projections: Any,
    angles_deg: Any,
    *,
    center: str | float | None = "auto",
    recon_iterations: int = DEFAULT_MLEM_ITERATIONS,
    upsample: int = 20,
    vertical: bool = True,
    despeckle: bool = True,
) -> AlignResult:
    """One-pass alignment: register each projection against the reprojection of its scan's MLEM.

    Parameters
    ----------
    projections
        ``(angle, row, col)`` line integrals (flat/dark-normalised, ``-log``), NumPy or CuPy.
    angles_deg
        ``(angle,)`` angles in degrees.
    center
        Rotation-axis column (pixels); ``"auto"`` (default) estimates it with
        :func:`tomoflow.recon.find_center`; None = detector centre ``(ncol - 1) / 2``.
    recon_iterations
        MLEM iterations of the reference reconstruction (``>= 1``).
    upsample
        Sub-pixel resolution ``1 / upsample`` px of the registration.
    vertical
        Estimate ``dy`` too (default). False holds ``dy = 0`` and registers horizontally only, which
        also aligns detectors of fewer than 4 rows (sinogram-only scans).
    despeckle
        Remove impulse noise first (:func:`tomoflow.recon.remove_outliers`; skipped automatically on
        scans without it). The estimate is made on the cleaned copy only.

    Returns
    -------
    AlignResult
        ``method="phase"``, ``n_iter=1``, ``converged=True``; shifts gauge-fixed as in
        :func:`align_consistency` (the constant ``dx`` folded into ``center``). Displacements are
        searched within a quarter of the field on each axis.

    Raises
    ------
    InputError
        Projections not ``(angle, row, col)``, NaN/Inf, fewer than :data:`MIN_ANGLES` angles, angle
        count mismatch, projections smaller than 4 x 4.
    ConfigError
        Parameters out of range.
    """
    recon_iterations = check_int("recon_iterations", recon_iterations, low=1)
    upsample = check_int("upsample", upsample, low=1)
    _, p, ang = check_scan(projections, angles_deg, vertical=vertical)
    t0 = time.perf_counter()
    if despeckle:
        p = clean_copy(p)
    ctr = initial_center(center, p, ang)
    rep = reproject(p, ang, center=ctr, n_iter=recon_iterations)
    res = register_phase(p, rep, ang, ctr, upsample=upsample, vertical=vertical)
    res.log[0]["seconds"] = time.perf_counter() - t0
    return res


def register_phase(
    projections: Any,
    reprojections: Any,
    angles_deg: np.ndarray,
    center: float,
    *,
    upsample: int = 20,
    vertical: bool = True,
) -> AlignResult:
    """The registration half of :func:`align_phase`: phase-correlate each projection with its
    reprojection, gauge-fix, fold the common ``dx`` into ``center``.

    Parameters
    ----------
    projections, reprojections
        ``(angle, row, col)`` stacks (checked by the caller).
    angles_deg
        ``(angle,)`` degrees.
    center
        Rotation axis (px) the reprojections were made with.
    upsample, vertical
        See :func:`align_phase`.
    """
    t0 = time.perf_counter()
    limit = _first_limit(projections)
    res = phase_correlate(
        projections,
        reprojections,
        upsample=upsample,
        window=LOOP_WINDOW,
        normalization=LOOP_NORMALIZATION,
        max_shift=limit if vertical else (0.0, limit[1]),
    )
    shifts, ctr = _gauge(np.asarray(to_numpy(res.shifts), dtype=np.float64), center, np.asarray(angles_deg), True)
    entry = {
        "iteration": 1,
        "max_update_px": float(np.abs(shifts).max()),
        "rms_update_px": float(np.sqrt(np.mean(np.sum(shifts**2, axis=1)))),
        "center": ctr,
        "seconds": time.perf_counter() - t0,
        "register_s": time.perf_counter() - t0,
    }
    return AlignResult(
        shifts=shifts,
        center=ctr,
        log=[entry],
        quality=np.asarray(to_numpy(res.quality), dtype=np.float64),
        converged=True,
        n_iter=1,
        method="phase",
    )


def align_consistency(
    projections: Any,
    angles_deg: Any,
    *,
    center: str | float | None = "auto",
    n_iter: int = 30,
    tol: float = 0.01,
    max_step: float = 2.0,
    recon_iterations: int = DEFAULT_MLEM_ITERATIONS,
    warm_iterations: int = 2,
    upsample: int = 20,
    init_shifts: Any = None,
    refine_center: bool = True,
    vertical: bool = True,
    x0: Any = None,
    callback: Callable[[dict[str, float]], None] | None = None,
    despeckle: bool = True,
    subsets: int = 1,
) -> AlignResult:
    """Iterative reprojection alignment to convergence (the consistency baseline; module docstring).

    Parameters
    ----------
    projections
        ``(angle, row, col)`` line integrals (flat/dark-normalised, ``-log``), NumPy or CuPy; the loop
        runs in that namespace.
    angles_deg
        ``(angle,)`` angles in degrees.
    center
        Rotation-axis column (pixels) of the raw projections to start from; ``"auto"`` (default)
        estimates it on the input with :func:`tomoflow.recon.find_center`; None = detector centre
        ``(ncol - 1) / 2``.
    n_iter
        Largest number of outer iterations (``>= 1``).
    tol
        Convergence tolerance in pixels (``> 0``): stop when the largest change of the gauge-fixed
        shifts in an iteration, over all projections and both axes, is below it.
    max_step
        Largest update per projection and axis after the first iteration, pixels (``> 0``).
        The first iteration may move up to a quarter of the field (rows / 4, cols / 4).
    recon_iterations
        MLEM iterations of the first reconstruction (``>= 1``).
    warm_iterations
        MLEM iterations of every later reconstruction, warm-started from the previous one (``>= 1``).
    upsample
        Sub-pixel resolution ``1 / upsample`` px of the registrations.
    init_shifts
        ``(n_angles, 2)`` starting jitter ``(dy, dx)`` (e.g. a network's estimate); default zeros. It
        is gauge-fixed first; with ``refine_center`` its common ``dx`` is dropped (``center`` is the
        axis of the raw data, where the common part of the jitter already sits).
    refine_center
        Fold the constant part of ``dx`` into the centre after every iteration (default). False holds
        the centre and keeps the constant part in the shifts.
    vertical
        Estimate ``dy`` too (default). False holds ``dy = 0`` and registers horizontally only, which
        also aligns detectors of fewer than 4 rows (sinogram-only scans).
    x0
        Warm start of the first reconstruction (e.g. the reference the ``init_shifts`` were estimated
        against); the first reconstruction then runs ``warm_iterations`` instead of
        ``recon_iterations``.
    callback
        Called with each iteration's log entry (progress display).
    despeckle
        Remove impulse noise first (:func:`tomoflow.recon.remove_outliers`; skipped automatically on
        scans without it). The estimate is made on the cleaned copy only.
    subsets
        Ordered subsets of the reference reconstructions (:func:`tomoflow.recon.mlem`); 1 (default)
        is plain MLEM, the classical loop. More subsets sharpen the reference faster per iteration,
        which is what limits the loop's accuracy near convergence (the hybrid's refinement uses 4).

    Returns
    -------
    AlignResult
        ``method="consistency"``.

    Raises
    ------
    InputError
        Projections not ``(angle, row, col)``, NaN/Inf, fewer than :data:`MIN_ANGLES` angles, angle
        count mismatch, projections smaller than 4 x 4, ``init_shifts`` of the wrong shape.
    ConfigError
        Parameters out of range.
    """
    n_iter = check_int("n_iter", n_iter, low=1)
    tol = check_number("tol (pixels)", tol, low=0.0, low_open=True)
    max_step = check_number("max_step (pixels per iteration)", max_step, low=0.0, low_open=True)
    recon_iterations = check_int("recon_iterations", recon_iterations, low=1)
    warm_iterations = check_int("warm_iterations", warm_iterations, low=1)
    upsample = check_int("upsample", upsample, low=1)
    subsets = check_int("subsets", subsets, low=1)
    if callback is not None and not callable(callback):
        raise ConfigError(f"callback must be callable, got {callback!r}")
    _, p, ang = check_scan(projections, angles_deg, vertical=vertical)
    if despeckle:
        p = clean_copy(p)
    n, ny, nx = (int(s) for s in p.shape)
    shifts = _raw_shifts(init_shifts, n)
    if not vertical:
        shifts[:, 0] = 0.0
    ctr = initial_center(center, p, ang)
    if init_shifts is not None:
        # ``center`` is the axis of the raw data: removing the common dx of the start keeps it there.
        shifts, _ = _gauge(shifts, ctr, ang, refine_center=False)
        if refine_center:
            shifts[:, 1] -= shifts[:, 1].mean()

    first_limit = np.array(_first_limit(p))
    search_later: Any = max(4.0 * max_step, 4.0)
    if not vertical:  # rows are not searched: a thin detector (a few rows) aligns horizontally only
        first_limit[0] = 0.0
        search_later = (0.0, search_later)
    vol = x0
    entries: list[dict[str, float]] = []
    quality = np.zeros(n)
    converged = False
    it = 0
    for it in range(1, n_iter + 1):
        t0 = time.perf_counter()
        data = _corrected(p, shifts)
        measured = measured_fraction(p.shape, shifts)
        rep, vol = reproject(
            data,
            ang,
            center=ctr,
            n_iter=recon_iterations if vol is None else warm_iterations,
            x0=vol,
            return_volume=True,
            subsets=subsets,
            weights=measured,
        )
        data = fill_missing(data, rep, measured)
        res = phase_correlate(
            data,
            rep,
            upsample=upsample,
            window=LOOP_WINDOW,
            normalization=LOOP_NORMALIZATION,
            max_shift=tuple(first_limit) if it == 1 else search_later,
        )
        update = np.asarray(to_numpy(res.shifts), dtype=np.float64)
        quality = np.asarray(to_numpy(res.quality), dtype=np.float64)
        limit = first_limit if it == 1 else np.array([max_step if vertical else 0.0, max_step])
        update = np.clip(update, -limit, limit)
        previous = shifts
        shifts, ctr = _gauge(previous + update, ctr, ang, refine_center)
        # What moved the data: the change of the gauge-fixed shifts (a common part only re-labels the centre).
        moved = shifts - previous
        entry = {
            "iteration": it,
            "max_update_px": float(np.abs(moved).max()),
            "rms_update_px": float(np.sqrt(np.mean(np.sum(moved**2, axis=1)))),
            "center": ctr,
            "seconds": time.perf_counter() - t0,
        }
        entries.append(entry)
        log.debug(
            "consistency iteration %d: max update %.3f px, rms %.3f px, centre %.2f, %.2f s",
            it,
            entry["max_update_px"],
            entry["rms_update_px"],
            ctr,
            entry["seconds"],
        )
        if callback is not None:
            callback(dict(entry))
        if entry["max_update_px"] < tol:
            converged = True
            break
    if not converged:
        log.info(
            "consistency alignment stopped after %d iterations, last max update %.3f px (tol %.3f)",
            it,
            entries[-1]["max_update_px"],
            tol,
        )
    return AlignResult(
        shifts=shifts,
        center=float(ctr),
        log=entries,
        quality=quality,
        converged=converged,
        n_iter=it,
        method="consistency",
        volume=vol,
    )
