"""The batch's work that is not a Dask graph, as functions run as *one* task on a worker (or in the
runner's process without a cluster): ingest, the whole recon stage of a small scan, registration and
training. Each takes and returns plain data (paths as strings, settings as dicts), so it pickles."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np

from tomoflow import config as _config
from tomoflow.backend import limit_threads
from tomoflow.io.ingest import ingest
from tomoflow.io.stages import read_zarr_json
from tomoflow.io.volume_store import VolumeStore
from tomoflow.pipeline.engine import local_execution, plan_blocks
from tomoflow.pipeline.reconstruct import reconstruct_scan, slab_bytes
from tomoflow.pipeline.registration import register_volumes, volume_voxel_um

__all__ = ["ingest_task", "fits_one_slab", "recon_task", "register_task", "train_task"]


def ingest_task(source: str, store: str, kwargs: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Task: ingest one raw scan into its scan store, under the runner's tomoflow settings (chunking)."""
    with _config.set(**settings):
        s = ingest(source, store, **kwargs)
    return {"shape": list(s.shape)}


def fits_one_slab(scan_store: Path, opts: dict[str, Any], parallel: int) -> bool:
    """Whether the recon stage's own plan for this scan is a single slab task (its rows in one chunk, or
    chunks that fit one task's memory budget and are not worth spreading over ``parallel`` worker
    threads): then running the stage whole as *one* task on a worker (:func:`recon_task`) loses no
    parallelism, and spares the runner the store setup, records and pyramid it would otherwise drive
    (more runner CPU than such a scan's compute). Read from the store's JSON metadata only."""
    doc = read_zarr_json(scan_store / "projections") or {}
    shape = doc.get("shape")
    chunks = ((doc.get("chunk_grid") or {}).get("configuration") or {}).get("chunk_shape")
    if not all(
        isinstance(v, list) and len(v) == 3 and all(isinstance(n, int) and n > 0 for n in v) for v in (shape, chunks)
    ):
        return False
    n_angles, n_rows, n_cols = cast("list[int]", shape)  # both checked above: 3 positive ints
    chunk_rows = cast("list[int]", chunks)[1]
    ny, nx = opts.get("shape") or (n_cols, n_cols)
    unit = slab_bytes(n_angles, n_cols, (int(ny), int(nx)), chunk_rows, opts.get("algorithm", "fbp"))
    budget = _config.get().worker_memory_budget
    return unit <= budget and len(plan_blocks(-(-n_rows // chunk_rows), unit, budget, parallel)) == 1


def recon_task(
    source: str, out: str, center: Any, opts: dict[str, Any], settings: dict[str, Any], threads: int
) -> dict[str, Any]:
    """Task: the whole recon stage of a small scan in this worker (its slab and pyramid blocks in this
    task's thread, within its thread budget), under the runner's tomoflow settings."""
    with _config.set(**settings), limit_threads(max(1, int(threads))), local_execution():
        v = reconstruct_scan(source, out, center=center, **opts)
    return {"shape": list(v.shape)}


def register_task(hr: str, lfov: str, dof: int, max_rotation_deg: float, device: str) -> dict[str, Any]:
    """Task: register the HR ROI volume into the LFOV volume from the stage prior (as ``tomoflow register``)."""
    return register_volumes(hr, lfov, dof=dof, device=device, max_rotation_deg=max_rotation_deg)


def train_task(
    hr: str,
    lfov: str,
    matrix: list[list[float]],
    out_dir: str,
    options: dict[str, Any],
    device: str,
    threads: int | None,
    source: dict[str, Any],
) -> dict[str, Any]:
    """Task: train the recovery U-Net on (LFOV resampled onto the HR grid, HR), resuming a checkpoint; the
    pair is read patch by patch from the stores (:class:`tomoflow.io.pair_source.StorePair`), never whole."""
    from tomoflow.io.pair_source import StorePair
    from tomoflow.train.recovery import train_recovery  # torch: loaded on the worker that trains

    h, lf = VolumeStore.open(hr), VolumeStore.open(lfov)
    hr_um, lf_um = volume_voxel_um(h, hr), volume_voxel_um(lf, lfov)
    pair = StorePair(hr, lfov, np.asarray(matrix, dtype=np.float64), hr_um, lf_um)
    res = train_recovery(
        pair,
        None,
        out_dir=out_dir,
        device=device,
        threads=threads,
        resume=True,
        hr_voxel_um=hr_um,
        lfov_voxel_um=lf_um,
        source=source,
        command=f"tomoflow batch run (scan output {out_dir})",
        **options,
    )
    return {"weights": str(res.weights), "metrics": res.metrics, "stopped_by": res.card["training"]["stopped_by"]}
