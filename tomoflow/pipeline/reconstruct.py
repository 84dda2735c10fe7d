"""Reconstruct a whole scan store into an OME-Zarr volume store, by sinogram slabs, on the stage engine.

Only the reconstruction-specific planning lives here; output safety, resume by identity, markers,
task names, GPU resources and thread budgets are :mod:`tomoflow.pipeline.engine`'s.

Reconstruction plan
-------------------
* **Units** are z-chunks of level 0 (one chunk of scan rows each); a **slab** block groups whole
  units, as many as fit the per-task memory budget (:func:`slab_bytes` estimates a slab's peak), and
  the number of slabs is balanced over the cluster's worker threads.
* ``recon-<algorithm>`` tasks read the slab's sinograms (all angles, a few rows), flat/dark-normalise
  and ``-log`` them, reconstruct (on a GPU worker when there is one) and return the slab; then
  ``pyramid-level`` tasks compute each chunk of level k from level k-1.
* The stage's fingerprint holds the scan's identity and the parameters *as requested*: with
  ``center="auto"`` a resumed run reuses the centre estimated by the first run (recorded in the
  store) instead of estimating it again.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tomoflow import config as _config
from tomoflow._checks import check_choice
from tomoflow.backend import device_namespace, has_cuda, limit_threads
from tomoflow.errors import ConfigError, InputError, PipelineError, TomoflowError
from tomoflow.geometry import check_slice_shape
from tomoflow.io.metadata import VOLUME_FORMAT
from tomoflow.io.scan_store import ScanStore, validate_center
from tomoflow.io.volume_store import VolumeStore, level_shape, pyramid_levels
from tomoflow.pipeline.engine import (
    Block,
    StageLog,
    current_client,
    fingerprint,
    plan_blocks,
    prepare_output,
    run_blocks,
    writes_outputs,
)
from tomoflow.pipeline.gpu import CONVEYOR_TASKS
from tomoflow.pipeline.pyramid import chunk_grid, run_pyramid
from tomoflow.recon.center import find_center
from tomoflow.recon.fbp import FBP_METHODS, fbp
from tomoflow.recon.filters import check_filter, padded_length
from tomoflow.recon.iterative import mlem, sirt
from tomoflow.recon.normalize import mean_frames, normalize_log

__all__ = [
    "ReconParams",
    "reconstruct_scan",
    "read_line_integrals",
    "read_raw_rows",
    "line_integrals",
    "estimate_center",
    "slab_bytes",
    "check_flats",
]

log = logging.getLogger(__name__)

ALGORITHMS = ("fbp", "mlem", "sirt")
DEFAULT_ITERATIONS = {"fbp": 0, "mlem": 20, "sirt": 50}
#: Largest fraction of non-finite raw values a slab may hold (isolated dead pixels are repaired).
MAX_NONFINITE_FRACTION = 1e-3


@dataclass(frozen=True)
class ReconParams:
    """Everything a slab task needs besides the slab bounds (plain data: cheap to ship to workers)."""

    algorithm: str
    center: float
    filter: str
    n_iter: int
    shape: tuple[int, int]
    device: str
    mask: bool = True
    fbp_method: str = "direct"


# ----------------------------------------------------------------------------- reading and sizing
def read_raw_rows(scan: ScanStore, z0: int, z1: int, *, angles: slice = slice(None)) -> tuple[Any, Any, Any]:
    """Host arrays of detector rows ``z0:z1``: projections (stored dtype), flats and darks (or None).

    Raises
    ------
    InputError
        If more than :data:`MAX_NONFINITE_FRACTION` of the rows' raw values are NaN or Inf (a corrupt
        or never-written part of the store), naming the store and rows.
    """
    raw = np.asarray(scan.projections[angles, z0:z1, :])
    if raw.dtype.kind == "f":
        bad = raw.size - int(np.count_nonzero(np.isfinite(raw)))
        if bad > MAX_NONFINITE_FRACTION * raw.size:
            raise InputError(
                f"rows {z0}-{z1} hold {bad} NaN/Inf values ({100 * bad / raw.size:.1f} %): the scan "
                "data is corrupt or was never written there",
                scan.path,
                "projections",
            )
    if scan.attrs.values == "line-integral":
        return raw, None, None
    flats = np.asarray(scan.flats[:, z0:z1, :]) if scan.flats.shape[0] else None
    darks = np.asarray(scan.darks[:, z0:z1, :]) if scan.darks.shape[0] else None
    return raw, flats, darks


def line_integrals(raw: Any, flats: Any, darks: Any, xp: Any = np, *, normalise: bool = True) -> Any:
    """``(angle, row, col)`` float32 line integrals in namespace ``xp`` from :func:`read_raw_rows`'s
    arrays (uploaded in their stored dtype, converted on the device); ``normalise=False`` for stores
    that hold line integrals already."""
    data = xp.asarray(raw).astype(xp.float32, copy=False)
    if not normalise:
        return data
    shape = raw.shape[1:]
    f = mean_frames(None if flats is None else xp.asarray(flats), shape, name="flats")
    d = mean_frames(None if darks is None else xp.asarray(darks), shape, name="darks")
    return normalize_log(data, f, d, out=data)


def read_line_integrals(scan: ScanStore, z0: int, z1: int, xp: Any = np, *, angles: slice = slice(None)) -> Any:
    """Line integrals ``(angle, z1 - z0, col)`` float32 of detector rows ``z0:z1`` of a scan store.

    Raw intensities are flat/dark corrected and ``-log``-ed (see :mod:`tomoflow.recon.normalize`);
    stores holding line integrals are returned as they are. ``angles`` selects projections (all by
    default).

    Raises
    ------
    InputError
        If more than :data:`MAX_NONFINITE_FRACTION` of the rows' raw values are NaN or Inf (a corrupt
        or never-written part of the store), naming the store and rows.
    """
    raw, flats, darks = read_raw_rows(scan, z0, z1, angles=angles)
    return line_integrals(raw, flats, darks, xp, normalise=scan.attrs.values != "line-integral")


def check_flats(scan: ScanStore, *, sample_rows: int = 64, max_bad_fraction: float = 0.5) -> None:
    """Refuse a scan whose flat fields are unusable (all zero, or not brighter than the darks).

    Reads the flats and darks of up to ``sample_rows`` evenly spaced rows.

    Raises
    ------
    InputError
        When more than ``max_bad_fraction`` of the sampled pixels have flat <= dark or no finite
        flat: reconstructing would give an all-zero (or meaningless) volume.
    """
    if scan.attrs.values == "line-integral" or not scan.flats.shape[0]:
        return
    n_rows = scan.shape[1]
    rows = np.unique(np.linspace(0, n_rows - 1, min(sample_rows, n_rows)).astype(int))
    flat = np.nanmean(np.asarray(scan.flats.get_orthogonal_selection((slice(None), rows, slice(None)))), axis=0)
    dark = (
        np.nanmean(np.asarray(scan.darks.get_orthogonal_selection((slice(None), rows, slice(None)))), axis=0)
        if scan.darks.shape[0]
        else np.zeros_like(flat)
    )
    from tomoflow._checks import check_flats_brighter

    check_flats_brighter(flat, dark, scan.path, max_bad_fraction=max_bad_fraction)


def estimate_center(scan: ScanStore, *, band: int = 32, method: str = "vo") -> float:
    """Rotation centre of a scan store from a band of central rows (see :func:`find_center`)."""
    n_rows = scan.shape[1]
    z0 = max(0, n_rows // 2 - band // 2)
    z1 = min(n_rows, z0 + band)
    p = read_line_integrals(scan, z0, z1)
    return find_center(p, scan.angles_deg, method=method)


def _estimate_center_task(scan_path: str, threads: int) -> float:
    """Task: :func:`estimate_center` of the scan store at ``scan_path`` within a thread budget."""
    with limit_threads(threads):
        return estimate_center(ScanStore.open(scan_path))


def _center_on_cluster(scan_path: str | os.PathLike, client: Any, threads: int) -> float:
    """:func:`estimate_center` as a task on the cluster (here without one).

    The estimate reads a band of rows and runs the Fourier metric: compute that belongs on a worker,
    not in the calling process (a batch runner would otherwise pay it for every scan).
    """
    path = os.path.abspath(scan_path)
    if client is None:
        return estimate_center(ScanStore.open(path))
    key = f"estimate-center-{uuid.uuid4().hex[:8]}"
    try:
        return float(client.submit(_estimate_center_task, path, threads, key=key, pure=False).result())
    except TomoflowError:
        raise
    except Exception as exc:  # KilledWorker, CommClosedError, ...
        from tomoflow.pipeline.engine import task_failure_reason

        raise PipelineError(
            f"{path}: the centre estimate ({key}) failed: {task_failure_reason(exc)}; run again"
        ) from exc


def slab_bytes(
    n_angles: int, n_cols: int, shape: tuple[int, int], rows: int, algorithm: str, fbp_method: str = "direct"
) -> int:
    """Estimated peak bytes of one slab task of ``rows`` detector rows.

    Counts the raw and normalised sinograms, the padded complex filter buffers (FBP), the output
    volume and the kernels' z-innermost copies; iterative methods hold about five volume-sized and
    three sinogram-sized arrays at once. The Fourier method holds the complex padded spectra and an
    oversampled complex grid per pair of rows (its fixed spreading matrix is not counted per row).
    """
    sino = n_angles * n_cols * 4 * rows
    vol = shape[0] * shape[1] * 4 * rows
    if algorithm == "fbp" and fbp_method == "fourier":
        pad = padded_length(n_cols)
        grid = max(pad, 2 * max(shape)) ** 2 * 8
        return int(3 * sino + n_angles * pad * 8 * rows + 3 * grid * -(-rows // 2) + 2 * vol)
    if algorithm == "fbp":
        pad = padded_length(n_cols)
        filt = n_angles * rows * (pad * 4 + (pad // 2 + 1) * 8 * 2)
        return int(3 * sino + filt + 3 * vol)
    return int(5 * sino + 6 * vol)


# ----------------------------------------------------------------------------- block functions


def reconstruct_slab(p: Any, angles_deg: np.ndarray, params: ReconParams) -> Any:
    """Reconstruct one slab of line integrals ``(angle, row, col)`` -> ``(row, y, x)`` with the kernels."""
    if params.algorithm == "fbp":
        return fbp(
            p,
            angles_deg,
            center=params.center,
            filter=params.filter,
            shape=params.shape,
            mask=params.mask,
            method=params.fbp_method,
        )
    fn = mlem if params.algorithm == "mlem" else sirt
    return fn(p, angles_deg, center=params.center, n_iter=params.n_iter, shape=params.shape, mask=params.mask)


def _recon_block(scan_path: str, params: ReconParams, z0: int, z1: int) -> np.ndarray:
    """Block function: read, normalise and reconstruct rows ``z0:z1`` of the scan."""
    scan = ScanStore.open(scan_path)
    xp = device_namespace(params.device)
    if xp is np:
        return reconstruct_slab(read_line_integrals(scan, z0, z1, np), scan.angles_deg, params)
    return _recon_block_gpu(scan, params, z0, z1)


def _recon_block_gpu(scan: ScanStore, params: ReconParams, z0: int, z1: int) -> np.ndarray:
    """The GPU block: read on the host (no GPU held), then upload, normalise, reconstruct and download
    sub-slab by sub-slab inside one GPU section (:mod:`tomoflow.pipeline.gpu`), so other threads read
    and write their blocks while this one computes, and device memory stays bounded."""
    import cupy

    from tomoflow.pipeline.gpu import device_rows, gpu_section, to_host

    raw, flats, darks = read_raw_rows(scan, z0, z1)
    normalise = scan.attrs.values != "line-integral"
    n_angles, rows, n_cols = raw.shape
    out = np.empty((rows, *params.shape), dtype=np.float32)
    step = device_rows(slab_bytes(n_angles, n_cols, params.shape, 1, params.algorithm, params.fbp_method), rows)
    with gpu_section():
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            p = line_integrals(
                raw[:, r0:r1],
                None if flats is None else flats[:, r0:r1],
                None if darks is None else darks[:, r0:r1],
                cupy,
                normalise=normalise,
            )
            to_host(reconstruct_slab(p, scan.angles_deg, params), out[r0:r1])
            del p
    return out


# ----------------------------------------------------------------------------- planning
def _slab_blocks(
    scan_path: str, params: ReconParams, n_rows: int, chunk_rows: int, unit_bytes: int, budget: int, parallel: int
) -> list[Block]:
    n_units = -(-n_rows // chunk_rows)
    blocks = []
    for u0, u1 in plan_blocks(n_units, unit_bytes, budget, parallel):
        z0, z1 = u0 * chunk_rows, min(n_rows, u1 * chunk_rows)
        blocks.append(
            Block(
                units=tuple(range(u0, u1)),
                region=(slice(z0, z1), slice(None), slice(None)),
                args=(scan_path, params, z0, z1),
                nbytes=unit_bytes * (u1 - u0),
                label=f"rows {z0}-{z1}",
            )
        )
    return blocks


def _validate(
    algorithm: str,
    filter: str,
    n_iter: int | None,
    memory_budget: Any,
) -> tuple[str, str, int, int]:
    algorithm = check_choice("algorithm", str(algorithm).lower(), ALGORITHMS)
    filt = check_filter(filter)
    iters = DEFAULT_ITERATIONS[algorithm] if n_iter is None else int(n_iter)
    if algorithm != "fbp" and not 1 <= iters <= 100_000:
        raise ConfigError(f"n_iter must be between 1 and 100000 for {algorithm}, got {n_iter}")
    budget = _config.get().worker_memory_budget if memory_budget is None else _config.parse_bytes(memory_budget)
    return algorithm, filt, iters, budget


@writes_outputs
def reconstruct_scan(
    scan_path: str | Path,
    out_path: str | Path,
    *,
    algorithm: str = "fbp",
    center: float | str | None = None,
    filter: str = "ramp",
    n_iter: int | None = None,
    shape: tuple[int, int] | None = None,
    memory_budget: int | str | None = None,
    client: Any = None,
    overwrite: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    fbp_method: str = "auto",
) -> VolumeStore:
    """Reconstruct a scan store into an OME-Zarr volume store (see module docstring).

    Everything is validated before anything is written. A rerun of the same reconstruction (same
    scan content, same parameters) resumes an interrupted store, or returns a complete one at once
    without writing; a store made from another scan or other parameters is refused unless
    ``overwrite``; folders that are not volume stores, and the scan itself, are never replaced.

    Parameters
    ----------
    scan_path, out_path
        Input scan store and output volume store.
    algorithm
        ``fbp``, ``mlem`` or ``sirt``.
    center
        Rotation axis column in pixels (``0 .. ncol - 1``), ``"auto"`` (Fourier-metric estimate on
        central rows), or None: the centre saved in the scan store (``tomoflow center --save``) if
        any, else ``"auto"``.
    filter
        FBP filter (see :data:`tomoflow.recon.filters.FILTERS`).
    n_iter
        Iterations for MLEM/SIRT (default 20 / 50).
    shape
        Slice shape ``(ny, nx)``; default ``(ncol, ncol)``.
    memory_budget
        Peak bytes per task (e.g. ``"2GB"``); default the configured ``worker_memory_budget``.
    client
        A ``distributed.Client``; default the current client if any, else a local thread pool.
    overwrite
        Replace an existing volume store made from other inputs or parameters.
    progress
        Called as ``progress(stage, done, total)`` as tasks finish.
    fbp_method
        ``direct``, ``fourier`` (see :func:`tomoflow.recon.fbp`) or ``auto``: ``fourier`` where the
        slabs run on GPUs (the fast method there), ``direct`` on CPUs. The method used is part of the
        output's identity.

    Returns
    -------
    VolumeStore
        The complete store.

    Raises
    ------
    ConfigError
        Bad parameters (algorithm, filter, iterations, centre outside the detector, shape, budget).
    InputError
        Unusable scan data (flat fields all zero, NaN slabs).
    StoreError
        Output refused (see above) or not writable; the scan store incomplete or missing.
    """
    t_start = time.perf_counter()
    algorithm, filt, iters, budget = _validate(algorithm, filter, n_iter, memory_budget)
    scan = ScanStore.open(scan_path)
    n_angles, n_rows, n_cols = scan.shape
    slice_shape = check_slice_shape(shape, n_cols)
    source = "given"
    if center is None:
        saved = scan.attrs.rotation_center
        center, source = (saved, "saved in the scan store") if saved is not None else ("auto", "auto")
    if isinstance(center, str) and center.strip().lower() == "auto":
        center_req: float | str = "auto"
    else:
        center_req = validate_center(center, n_cols, scan_path)
    check_flats(scan)
    scan.check_for(algorithm)  # the angles and measurements this stage needs (tomoflow._checks.SCAN_NEEDS)
    cfg = _config.get()
    fbp_method = check_choice("fbp_method", str(fbp_method).lower(), ("auto", *FBP_METHODS))

    from tomoflow.cluster import cluster_resources

    client = client if client is not None else current_client()
    if client is None:
        device_namespace(cfg.device)  # the blocks run here: a 'cuda' device without a GPU fails now, before any write
    res = cluster_resources(client)
    on_gpu = cfg.device == "cuda" or (cfg.device == "auto" and (res.gpus > 0 or (client is None and has_cuda())))
    if fbp_method == "auto":
        fbp_method = "fourier" if on_gpu else "direct"
    request = {
        "algorithm": algorithm,
        "center": center_req,
        "filter": filt,
        "n_iter": iters,
        "shape": list(slice_shape),
        "mask": True,
    }
    if algorithm == "fbp" and fbp_method != "direct":
        request["fbp_method"] = fbp_method  # absent for the direct method: earlier stores keep their identity
    fp = fingerprint("recon", inputs={"scan": scan.identity}, params=request)
    plan = prepare_output(
        out_path,
        kind=VOLUME_FORMAT,
        stage="recon",
        fingerprint=fp,
        params=request,
        inputs=[scan_path],
        overwrite=overwrite,
    )
    if plan.action == "complete":
        log.info("%s is complete for this scan and these parameters; nothing to do", out_path)
        return VolumeStore.open(out_path)

    if plan.action == "resume":
        vstore = VolumeStore.open(out_path, mode="r+", require_complete=False)
        ctr = float(vstore.attrs.rotation_center)  # type: ignore[arg-type]  # a resumed volume has its centre
        log.info("resuming %s (centre %.2f px)", out_path, ctr)
    else:
        ctr = _center_on_cluster(scan_path, client, res.task_threads) if center_req == "auto" else float(center_req)
        if center_req == "auto":
            log.info("estimated rotation centre %.2f px (detector centre %.1f)", ctr, (n_cols - 1) / 2)
        pixel = scan.attrs.pixel_size.value if scan.attrs.pixel_size else None
        if pixel is None:
            log.warning(
                "%s: pixel size unknown; the volume's voxel size is recorded as unknown (scale 1 = one "
                "pixel). Pass --pixel-size at ingest to record it.",
                scan_path,
            )
        shape3 = (n_rows, *slice_shape)
        chunks = (int(scan.projections.chunks[1]), min(cfg.volume_chunk, shape3[1]), min(cfg.volume_chunk, shape3[2]))
        n_levels = pyramid_levels(shape3)
        run_config = {**cfg.model_dump(mode="json"), "recon": {**request, "center_used": ctr}}
        inputs = [scan.attrs.source] if scan.attrs.source else []
        vstore = VolumeStore.create(
            plan,
            shape3,
            pixel,
            chunks=chunks,
            n_levels=n_levels,
            algorithm=algorithm,
            rotation_center=ctr,
            scan=str(scan_path),
            run_config=run_config,
            inputs=inputs,
        )
        steps = {
            f"level-{k}": len(chunk_grid(level_shape(shape3, k), tuple(vstore.level(k).chunks)))
            for k in range(1, n_levels)
        }
        steps = {"level-0": -(-n_rows // chunks[0]), **steps}
        StageLog.begin(out_path, "recon", fingerprint=fp, params=request, steps=steps)

    params = ReconParams(
        algorithm=algorithm,
        center=ctr,
        filter=filt,
        n_iter=iters,
        shape=slice_shape,
        device=cfg.device,
        fbp_method=fbp_method,
    )
    chunk_rows = int(vstore.level(0).chunks[0])
    if on_gpu:  # host memory of a GPU block: its raw rows and its result (device memory: pipeline.gpu)
        unit_bytes = 4 * chunk_rows * (n_angles * n_cols + 2 * slice_shape[0] * slice_shape[1])
    else:
        unit_bytes = slab_bytes(n_angles, n_cols, slice_shape, chunk_rows, algorithm, fbp_method)
    blocks = _slab_blocks(os.path.abspath(scan_path), params, n_rows, chunk_rows, unit_bytes, budget, res.total_threads)
    out = os.path.abspath(out_path)
    recon = run_blocks(
        out,
        blocks,
        _recon_block,
        stage="recon",
        step="level-0",
        array="0",
        name=f"recon-{algorithm}",
        gpu=cfg.device != "cpu",
        gpu_tasks=CONVEYOR_TASKS,
        client=client,
        cluster=res,
        progress=progress,
        progress_label="recon",
    )
    timings = {
        "recon": recon.wall_s,
        "recon_compute": recon.compute_s,
        **run_pyramid(out, vstore, "recon", client=client, cluster=res, progress=progress),
    }
    StageLog(out, "recon").finish(
        output_id=fp,
        seconds=time.perf_counter() - t_start,
        timings=timings,
        slabs=len(blocks),
        slabs_computed=recon.computed,
        slab_rows=max(b.region[0].stop - b.region[0].start for b in blocks),
        threads_per_task=recon.threads,
        gpu=recon.gpu,
        center_source=source,
        estimate_bytes_per_slab=recon.max_block_bytes,
    )
    return VolumeStore.open(out_path)
