"""Jitter-correct a whole scan store into an aligned scan store, on the stage engine.

Alignment plan
--------------
1. ``flat-field-correct`` tasks (blocks of angle chunks): flat/dark-normalise and ``-log`` the raw
   projections and bin them so that neither detector axis exceeds ``max_size`` pixels, into the
   output store's ``binned`` array. Jitter is a rigid shift per projection, and the network reads
   160 x 160 images anyway, so the shifts are estimated on this small stack, whatever the detector.
2. Estimation on the binned stack (it fits in one task's memory by construction), impulse noise
   removed first: per network pass ``align-mlem`` (MLEM, in the network's 160 x 160 space for the
   network methods), ``align-reproject`` and ``align-resnet`` (network, on a GPU worker when the
   cluster has one), and/or ``align-register`` (phase correlation / consistency iterations), as named
   Dask tasks whose results (the shifts and the rotation centre) go straight to the next task. The driver scales the
   shifts back to full resolution and writes them (``shifts``, ``(angle, 2)``, px, ``(dy, dx)``) and
   the centre into the output store.
3. ``align-shift`` tasks (blocks of angle chunks): normalise the raw projections at full resolution
   and shift each by ``-shifts`` once (:func:`tomoflow.recon.shift_images`), writing whole chunks of
   the aligned projections (line integrals).

The output is a scan store (``values = "line-integral"``, no flats/darks) that
:func:`tomoflow.pipeline.reconstruct_scan` reads like any other, with the estimated centre saved as
its default. Output identity, overwrite safety, markers and resume are the engine's: a rerun skips
the estimation when its marker is set and the shifted chunks already written.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tomoflow import config as _config
from tomoflow._checks import check_choice, check_int
from tomoflow.align.binning import bin_stack
from tomoflow.backend import asarray_on, device_namespace, to_numpy
from tomoflow.io.metadata import SCAN_FORMAT
from tomoflow.io.scan_store import ScanStore, validate_center
from tomoflow.pipeline.engine import (
    Block,
    OutputPlan,
    StageLog,
    current_client,
    fingerprint,
    plan_blocks,
    prepare_output,
    run_blocks,
    writes_outputs,
)
from tomoflow.pipeline.reconstruct import check_flats, read_line_integrals

__all__ = ["align_scan", "correct_scan", "METHODS", "bin_factor"]

log = logging.getLogger(__name__)

METHODS = ("hybrid", "resnet", "phase", "consistency")


def bin_factor(shape: tuple[int, int], max_size: int) -> int:
    """Smallest integer binning that brings both detector axes to at most ``max_size`` pixels."""
    return max(1, -(-max(shape) // int(max_size)))


def _bin(p: np.ndarray, b: int) -> np.ndarray:
    """Mean-bin ``(angle, row, col)`` by ``b`` along rows and columns (edges: partial bins averaged)."""
    return bin_stack(np.asarray(p), b, b)


# ----------------------------------------------------------------------------- block functions
def _binned_block(scan_path: str, a0: int, a1: int, b: int) -> np.ndarray:
    """Block function: normalised, binned projections ``a0:a1``."""
    scan = ScanStore.open(scan_path)
    p = read_line_integrals(scan, 0, scan.shape[1], angles=slice(a0, a1))
    return _bin(p, b)


def _shift_block(scan_path: str, a0: int, a1: int, shifts: np.ndarray) -> np.ndarray:
    """Block function: normalised full-resolution projections ``a0:a1`` moved by ``-shifts``."""
    from tomoflow.recon import shift_images

    scan = ScanStore.open(scan_path)
    p = read_line_integrals(scan, 0, scan.shape[1], angles=slice(a0, a1))
    return shift_images(p, -np.asarray(shifts, dtype=np.float64))


def _mlem_task(
    binned: np.ndarray,
    angles: np.ndarray,
    center: float | str,
    n_iter: int,
    vertical: bool,
    despeckle: bool,
    device: str = "cpu",
) -> dict:
    """``align-mlem`` of the phase method: impulse noise removed, centre (estimated if asked), the
    reference reconstruction of the binned stack (on the worker's GPU with ``device`` cuda or auto;
    results handed on as NumPy, as every task of the chain)."""
    from tomoflow.align.consistency import check_scan, clean_copy, initial_center
    from tomoflow.align.reproject import reference_volume

    _, p, ang = check_scan(binned, angles, vertical=vertical)
    p = clean_copy(p) if despeckle else p
    ctr = initial_center(center, p, ang)
    t0 = time.perf_counter()
    vol = reference_volume(asarray_on(p, device_namespace(device)), ang, center=ctr, n_iter=n_iter)
    return {"clean": p, "volume": to_numpy(vol), "center": ctr, "mlem_s": time.perf_counter() - t0}


def _reproject_task(ref: dict, angles: np.ndarray, n_cols: int, device: str = "cpu") -> dict:
    """``align-reproject`` of the phase method: reprojections of the reference at the scan's angles."""
    from tomoflow.align.reproject import reproject_volume

    t0 = time.perf_counter()
    vol = asarray_on(ref["volume"], device_namespace(device))
    rep = to_numpy(reproject_volume(vol, angles, center=ref["center"], n_cols=n_cols))
    return {**ref, "reprojections": rep, "reproject_s": time.perf_counter() - t0}


def _network_mlem_task(prev: Any, angles: np.ndarray, n_iter: int, device: str = "cpu") -> dict:
    """``align-mlem`` of one network pass: the network-space stack moved by the current estimate and
    its MLEM reconstruction. The first pass (``prev`` = the binned stack and the requested centre)
    also removes impulse noise and estimates the centre."""
    from tomoflow.align.consistency import check_scan, clean_copy
    from tomoflow.align.hybrid import network_volume, start_network

    t0 = time.perf_counter()
    if "state" in prev:
        state, clean = prev["state"], prev["clean"]
    else:
        _, clean, ang = check_scan(prev["binned"], angles)
        clean = clean_copy(clean) if prev["despeckle"] else clean
        state = start_network(clean, ang, prev["center"])
    data, vol = network_volume(state, angles, recon_iterations=n_iter, xp=device_namespace(device))
    return {"state": state, "clean": clean, "data": data, "volume": to_numpy(vol), "mlem_s": time.perf_counter() - t0}


def _network_reproject_task(ref: dict, angles: np.ndarray, device: str = "cpu") -> dict:
    """``align-reproject`` of one network pass."""
    from tomoflow.align.hybrid import network_fill, network_reprojections

    t0 = time.perf_counter()
    rep = network_reprojections(ref["state"], asarray_on(ref["volume"], device_namespace(device)), angles)
    data = network_fill(ref["state"], ref["data"], rep)
    return {**ref, "volume": None, "data": data, "reprojections": rep, "reproject_s": time.perf_counter() - t0}


_ALIGNERS: dict[str, Any] = {}
_ALIGNERS_LOCK = threading.Lock()


def _aligner(device: str) -> Any:
    """The shipped jitter ResNet on ``device``, loaded (and its card checked) once per worker process."""
    from tomoflow.align.resnet import load_aligner

    with _ALIGNERS_LOCK:
        if device not in _ALIGNERS:
            _ALIGNERS[device] = load_aligner(device=device)
        return _ALIGNERS[device]


def _network_task(ref: dict, angles: np.ndarray, options: dict) -> dict:
    """``align-resnet`` of one network pass: the network reads every pair (GPU worker when there is one)."""
    from tomoflow.align.hybrid import network_update

    keep = {k: options[k] for k in ("batch_size", "flips") if k in options}
    aligner = _aligner(options["device"])  # set by _run_estimate: the driver's device
    state = network_update(ref["state"], ref["data"], ref["reprojections"], angles, aligner=aligner, **keep)
    state.log[-1].update({"mlem_s": ref["mlem_s"], "reproject_s": ref["reproject_s"]})
    state.log[-1]["seconds"] = sum(state.log[-1][k] for k in ("mlem_s", "reproject_s", "network_s", "register_s"))
    return {"state": state, "clean": ref["clean"]}


def _register_task(
    binned: np.ndarray, angles: np.ndarray, method: str, center: float | str, prev: Any, options: dict
) -> Any:
    """``align-register``: phase correlation against the reference (``phase``), or consistency
    iterations (``consistency``; ``hybrid`` starts them from the network's estimate)."""
    from tomoflow.align.consistency import align_consistency, register_phase
    from tomoflow.align.hybrid import refine, result_of

    if method == "phase":
        keep = {k: options[k] for k in ("upsample", "vertical") if k in options}
        res = register_phase(prev["clean"], prev["reprojections"], angles, prev["center"], **keep)
        res.log[0].update({"mlem_s": prev["mlem_s"], "reproject_s": prev["reproject_s"]})
        return res
    drop = ("batch_size", "device", "passes", "despeckle", "flips")
    opts = {k: v for k, v in options.items() if k not in drop}
    xp = device_namespace(options["device"])  # consistency iterations on the worker's GPU
    if method == "hybrid":
        res = refine(asarray_on(prev["clean"], xp), angles, result_of(prev["state"]), **opts)
    else:
        despeckle = bool(options.get("despeckle", True))
        res = align_consistency(asarray_on(binned, xp), angles, center=center, despeckle=despeckle, **opts)
    return _on_host(res)


def _on_host(res: Any) -> Any:
    """An :class:`~tomoflow.align.consistency.AlignResult` with NumPy arrays only (the reference volume,
    maybe on a GPU, dropped): what tasks hand on and the driver reads."""
    res.shifts = np.asarray(to_numpy(res.shifts), dtype=np.float64)
    res.quality = None if res.quality is None else np.asarray(to_numpy(res.quality), dtype=np.float64)
    res.volume = None
    return res


# ----------------------------------------------------------------------------- driver
@writes_outputs
def align_scan(
    scan_path: str | Path,
    out_path: str | Path,
    *,
    method: str = "hybrid",
    center: float | str | None = None,
    max_size: int = 256,
    memory_budget: int | str | None = None,
    client: Any = None,
    overwrite: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    **options: Any,
) -> ScanStore:
    """Estimate the jitter of every projection of a scan store and write the corrected scan store.

    Parameters
    ----------
    scan_path, out_path
        Input scan store (raw or line integrals) and the aligned scan store to write.
    method
        ``"hybrid"`` (default: ResNet estimate refined by consistency iterations), ``"resnet"``,
        ``"phase"`` or ``"consistency"`` (see :func:`tomoflow.align.estimate_shifts`).
    center
        Rotation axis column (px) to start from, ``"auto"``, or None: the scan's saved centre if any,
        else ``"auto"``. The methods refine it; the refined centre is saved in the output.
    max_size
        Largest detector axis (px) the shifts are estimated at; larger scans are binned for the
        estimation (shifts are scaled back), then corrected at full resolution.
    memory_budget
        Peak bytes per task; default the configured ``worker_memory_budget``.
    client
        A ``distributed.Client``; default the current one, else a local thread pool.
    overwrite
        Replace an aligned store made from other inputs or parameters.
    progress
        ``progress(stage, done, total)`` as tasks finish.
    **options
        Passed to the method (e.g. ``n_iter``, ``tol``, ``recon_iterations``).

    Returns
    -------
    ScanStore
        The aligned store: ``projections`` (line integrals, corrected), ``shifts`` ``(angle, 2)`` px,
        ``rotation_center`` set; its ``align`` stage records the method, timings and convergence.
    """
    t_start = time.perf_counter()
    method = check_choice("alignment method", str(method).lower(), METHODS)
    max_size = check_int("max_size (px)", max_size, low=32)
    budget = _config.get().worker_memory_budget if memory_budget is None else _config.parse_bytes(memory_budget)
    scan = ScanStore.open(scan_path)
    n_angles, n_rows, n_cols = scan.shape
    if n_angles < 8:
        from tomoflow.errors import InputError

        raise InputError(f"{n_angles} projections are too few to align (need at least 8)", scan_path, "projections")
    if center is None:
        center = scan.attrs.rotation_center if scan.attrs.rotation_center is not None else "auto"
    center_req: float | str = (
        "auto"
        if isinstance(center, str) and center.strip().lower() == "auto"
        else validate_center(center, n_cols, scan_path)
    )
    check_flats(scan)
    scan.check_for("align")  # the angles and measurements this stage needs (tomoflow._checks.SCAN_NEEDS)
    b = bin_factor((n_rows, n_cols), max_size)
    if method in ("hybrid", "resnet"):
        from tomoflow.align.resnet import MIN_SIZE as NET_MIN
        from tomoflow.errors import ConfigError

        binned: Any = (-(-n_rows // b), -(-n_cols // b))
        if min(binned) < NET_MIN:
            raise ConfigError(
                f"method {method!r}: projections of {binned[0]} x {binned[1]} px (after binning "
                f"{b}x for the estimation) are too small for the network (at least {NET_MIN} x "
                f"{NET_MIN}); use --method consistency or phase"
            )
    request = {"method": method, "center": center_req, "max_size": max_size, "options": dict(options)}
    if method in ("hybrid", "resnet"):
        request["model_sha256"] = _shipped_model_sha256(method)
    fp = fingerprint("align", inputs={"scan": scan.identity}, params=request)
    plan = prepare_output(
        out_path,
        kind=SCAN_FORMAT,
        stage="align",
        fingerprint=fp,
        params=request,
        inputs=[scan_path],
        overwrite=overwrite,
    )
    if plan.action == "complete":
        return ScanStore.open(out_path)
    out = os.path.abspath(out_path)
    src = os.path.abspath(scan_path)
    chunk_angles = int(scan.projections.chunks[0])
    n_units = -(-n_angles // chunk_angles)
    if plan.action != "resume":
        _create_output(plan, scan, b, n_units, fp, request)
    store = ScanStore.open(out, mode="r+", require_complete=False)

    from tomoflow.cluster import cluster_resources

    client = client if client is not None else current_client()
    res = cluster_resources(client)
    unit_bytes = 6 * chunk_angles * n_rows * n_cols * 4  # raw, normalised, FFT buffers of one angle chunk
    groups = plan_blocks(n_units, unit_bytes, budget, res.total_threads)

    def blocks(fn_args: Callable[[int, int], tuple], region: Callable[[int, int], tuple]) -> list[Block]:
        out_blocks = []
        for u0, u1 in groups:
            a0, a1 = u0 * chunk_angles, min(n_angles, u1 * chunk_angles)
            out_blocks.append(
                Block(
                    units=tuple(range(u0, u1)),
                    region=region(a0, a1),
                    args=fn_args(a0, a1),
                    nbytes=unit_bytes * (u1 - u0),
                    label=f"angles {a0}-{a1}",
                )
            )
        return out_blocks

    timings: dict[str, float] = {}
    rep = run_blocks(
        out,
        blocks(lambda a0, a1: (src, a0, a1, b), lambda a0, a1: (slice(a0, a1),)),
        _binned_block,
        stage="align",
        step="binned",
        array="binned",
        name="flat-field-correct",
        client=client,
        cluster=res,
        progress=progress,
        progress_label="flat-field-correct",
    )
    timings["binned"] = rep.wall_s

    stage = StageLog(out, "align")
    if not stage.done("estimate")[0]:
        t0 = time.perf_counter()
        binned = np.asarray(store.group["binned"][:])
        ctr_b = "auto" if center_req == "auto" else (float(center_req) - (b - 1) / 2.0) / b
        est = _run_estimate(client, binned, scan.angles_deg, method, ctr_b, options, res.gpus > 0, progress)
        shifts = est["shifts"] * b
        ctr = est["center"] * b + (b - 1) / 2.0
        store.group["shifts"][:] = shifts
        store.group["shifts"].attrs.update(
            {"convergence": _jsonable(est["log"]), "converged": est["converged"], "bin_factor": b}
        )
        store.group["quality"][:] = est["quality"]
        stage.mark_done("estimate", [0])
        timings.update({f"estimate_{k}": float(v) for k, v in est["timings"].items()})
        timings["estimate"] = time.perf_counter() - t0
        _set_center(store, ctr, est)
    shifts = np.asarray(store.group["shifts"][:])
    rep = run_blocks(
        out,
        blocks(lambda a0, a1: (src, a0, a1, shifts[a0:a1]), lambda a0, a1: (slice(a0, a1),)),
        _shift_block,
        stage="align",
        step="shifted",
        array="projections",
        name="align-shift",
        client=client,
        cluster=res,
        progress=progress,
        progress_label="align-shift",
    )
    timings["shift"] = rep.wall_s
    ctr = ScanStore.open(out, require_complete=False).attrs.rotation_center
    stage.finish(
        output_id=fp,
        seconds=time.perf_counter() - t_start,
        timings=timings,
        method=method,
        bin_factor=b,
        center=ctr,
        shifts_rms_px=float(np.sqrt(np.mean(shifts**2))),
    )
    return ScanStore.open(out)


def _create_output(plan: OutputPlan, scan: ScanStore, b: int, n_units: int, fp: str, request: dict) -> None:
    """The aligned store's layout: a scan store of line integrals plus ``shifts``, ``quality`` and the
    ``binned`` working stack."""
    a = scan.attrs
    attrs = ScanStore.build_attrs(
        values="line-integral",
        pixel_size_um=a.pixel_size.value if a.pixel_size else None,
        energy_kev=a.energy.value if a.energy else None,
        rotation_center=a.rotation_center,
        instrument={**a.instrument, "aligned_from": str(scan.path)},
        source=a.source,
    )
    n_angles, n_rows, n_cols = scan.shape
    st = scan.group.get("stage_position")
    store = ScanStore._create(
        plan,
        attrs,
        scan.shape,
        scan.angles_deg,
        n_flats=0,
        n_darks=0,
        chunks=tuple(scan.projections.chunks),
        stage_position_um=None if st is None else np.asarray(st[:]),
    )
    g = store.group
    chunk_angles = int(scan.projections.chunks[0])
    g.create_array(
        "binned",
        shape=(n_angles, -(-n_rows // b), -(-n_cols // b)),
        chunks=(chunk_angles, -(-n_rows // b), -(-n_cols // b)),
        dtype="float32",
        fill_value=np.nan,
        dimension_names=["angle", "binned_row", "binned_col"],
        attributes={"long_name": f"normalised projections binned {b}x{b} (alignment working copy)"},
    )
    g.create_array(
        "shifts",
        shape=(n_angles, 2),
        dtype="float64",
        fill_value=np.nan,
        dimension_names=["angle", "yx"],
        attributes={
            "units": "pixel",
            "components": ["dy", "dx"],
            "long_name": "estimated jitter (dy, dx); the projections were moved by -shifts",
        },
    )
    g.create_array(
        "quality",
        shape=(n_angles,),
        dtype="float64",
        fill_value=np.nan,
        dimension_names=["angle"],
        attributes={"long_name": "registration confidence per projection, 0..1"},
    )
    StageLog.begin(
        plan.path, "align", fingerprint=fp, params=request, steps={"binned": n_units, "estimate": 1, "shifted": n_units}
    )


def _shipped_model_sha256(method: str) -> str:
    """The sha256 of the shipped network weights (from their model card): part of the fingerprint."""
    import json

    from tomoflow.align.resnet import default_weights_path
    from tomoflow.errors import ConfigError

    weights = default_weights_path()
    card = weights.with_suffix(".json")
    try:
        sha = json.loads(card.read_text()).get("sha256") if weights.is_file() else None
    except (OSError, ValueError):
        sha = None
    if not sha:
        raise ConfigError(
            f"method {method!r} needs the trained network, but {weights} (or its model card) is "
            "missing; train it with `tomoflow train-aligner`, or use --method consistency or phase"
        )
    from tomoflow.weights.card import verified_model

    verified_model(weights)  # the load gate, before anything is written (ModelError: changed weights)
    return str(sha)


def _jsonable(obj: Any) -> Any:
    """Plain JSON types of a convergence log (NumPy scalars become Python numbers)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _set_center(store: ScanStore, center: float, est: dict) -> None:
    n_cols = store.shape[2]
    if 0 <= center <= n_cols - 1:
        store.save_center(center)
    else:
        log.warning("%s: refined centre %.2f px is off the detector; not saved", store.path, center)


def _final_result(res: Any) -> Any:
    """The estimate as an :class:`~tomoflow.align.consistency.AlignResult` without its reference volume
    (not shipped back to the driver); the resnet method's last task hands over its network state."""
    from tomoflow.align.hybrid import result_of

    if isinstance(res, dict):
        res = result_of(res["state"])
    res.volume = None
    return res


def _run_estimate(
    client: Any,
    binned: np.ndarray,
    angles: np.ndarray,
    method: str,
    center: float | str,
    options: dict,
    gpu: bool,
    progress: Callable[[str, int, int], None] | None,
) -> dict:
    """The estimation as a chain of named Dask tasks on the binned stack, results passed as futures:
    ``align-mlem`` -> ``align-reproject`` -> ``align-resnet`` (GPU resource when the cluster has GPU
    workers) and/or ``align-register``. Without a client the same functions run here in turn."""
    import uuid

    from tomoflow.align.reproject import DEFAULT_MLEM_ITERATIONS

    token = uuid.uuid4().hex[:8]
    # every step computes on the workers' GPU where the cluster has one (and the device allows it); the
    # driver's device setting travels with the tasks (a worker process has its own configuration)
    device = str(options.get("device") or _config.get().device)
    options = {**options, "device": device}
    on_gpu = {"GPU": 1} if gpu and device != "cpu" else None
    steps: list[tuple[str, Callable[..., Any], tuple, dict | None]] = []
    n_iter = int(options.get("recon_iterations", DEFAULT_MLEM_ITERATIONS))
    despeckle = bool(options.get("despeckle", True))
    previous: Any = None
    if method == "phase":
        steps.append(
            (
                "align-mlem",
                _mlem_task,
                (binned, angles, center, n_iter, bool(options.get("vertical", True)), despeckle, device),
                on_gpu,
            )
        )
        steps.append(("align-reproject", _reproject_task, ("@align-mlem", angles, binned.shape[-1], device), on_gpu))
        previous = "@align-reproject"
    if method in ("resnet", "hybrid"):
        from tomoflow.align.hybrid import DEFAULT_PASSES

        previous = {"binned": binned, "center": center, "despeckle": despeckle}
        for k in range(1, int(options.get("passes", DEFAULT_PASSES)) + 1):
            steps.append((f"align-mlem-{k}", _network_mlem_task, (previous, angles, n_iter, device), on_gpu))
            steps.append(
                (f"align-reproject-{k}", _network_reproject_task, (f"@align-mlem-{k}", angles, device), on_gpu)
            )
            steps.append((f"align-resnet-{k}", _network_task, (f"@align-reproject-{k}", angles, options), on_gpu))
            previous = f"@align-resnet-{k}"
    if method != "resnet":
        steps.append(("align-register", _register_task, (binned, angles, method, center, previous, options), on_gpu))
    done: dict[str, Any] = {}
    if client is not None:
        scattered = client.scatter(binned, broadcast=False)
    for i, (name, fn, args, resources) in enumerate(steps):
        if progress is not None:
            progress("estimate", i, len(steps))
        args = tuple(done[a[1:]] if isinstance(a, str) and a.startswith("@") else a for a in args)
        args = tuple(
            {**a, "binned": scattered if client is not None else a["binned"]}
            if isinstance(a, dict) and "binned" in a
            else a
            for a in args
        )
        if client is None:
            done[name] = fn(*args)
        else:
            args = tuple(scattered if a is binned else a for a in args)
            done[name] = client.submit(fn, *args, key=f"{name}-{token}", pure=False, resources=resources)
    last = done[steps[-1][0]]
    if client is not None:
        last = client.submit(_final_result, last, key=f"align-result-{token}", pure=False)
    res = last.result() if client is not None else _final_result(last)
    if progress is not None:
        progress("estimate", len(steps), len(steps))
    timings: dict[str, float] = {}
    for e in res.log:
        for k, v in e.items():
            if k.endswith("_s"):
                timings[k] = timings.get(k, 0.0) + float(v)
    return {
        "shifts": np.asarray(res.shifts, dtype=np.float64),
        "center": float(res.center),
        "quality": np.asarray(res.quality, dtype=np.float64),
        "log": list(res.log),
        "converged": bool(res.converged),
        "timings": timings,
    }


def correct_scan(
    scan_path: str | Path,
    out_path: str | Path,
    *,
    aligned_path: str | Path | None = None,
    method: str = "hybrid",
    center: float | str | None = None,
    algorithm: str = "fbp",
    filter: str = "ramp",
    client: Any = None,
    overwrite: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    **options: Any,
):  # -> VolumeStore
    """The whole jitter-correction chain: :func:`align_scan`, then :func:`reconstruct_scan` of the
    aligned store with its refined centre, ending in an OME-Zarr volume store.

    Parameters
    ----------
    scan_path, out_path
        Input scan store and the volume store to write.
    aligned_path
        Where the aligned scan store goes; default ``<out_path stem>-aligned.zarr`` beside the volume.
    method, center, options
        See :func:`align_scan`.
    algorithm, filter
        See :func:`tomoflow.pipeline.reconstruct_scan`.
    client, overwrite, progress
        As for both stages (``overwrite`` applies to both outputs).

    Returns
    -------
    VolumeStore
    """
    from tomoflow.pipeline.reconstruct import _validate, reconstruct_scan

    _validate(algorithm, filter, None, None)  # the reconstruction's parameters, before anything is written
    out = Path(out_path)
    aligned = (
        Path(aligned_path)
        if aligned_path is not None
        else out.with_name(out.name.removesuffix(".zarr") + "-aligned.zarr")
    )
    from tomoflow.errors import ConfigError
    from tomoflow.io.metadata import VOLUME_FORMAT
    from tomoflow.io.output import prepare_output as check_output
    from tomoflow.io.output import resolved_path

    if resolved_path(aligned) == resolved_path(out):
        raise ConfigError(f"{out}: the aligned scan store and the volume store must be two paths (--aligned)")
    # the volume's path too, before the alignment writes anything: a user's folder, a store of another
    # kind or stage, an input (the hard refusals; resume or replace is decided when the volume is made)
    check_output(out, kind=VOLUME_FORMAT, stage="recon", fingerprint="", inputs=[scan_path, aligned], overwrite=True)
    align_scan(
        scan_path,
        aligned,
        method=method,
        center=center,
        client=client,
        overwrite=overwrite,
        progress=progress,
        **options,
    )
    return reconstruct_scan(
        aligned,
        out,
        algorithm=algorithm,
        filter=filter,
        center=None,
        client=client,
        overwrite=overwrite,
        progress=progress,
    )
