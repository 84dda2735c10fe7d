"""Reconstruct a whole scan store into an OME-Zarr volume store, by sinogram slabs, on Dask.

Graph
-----
``recon-<algorithm>`` tasks, one per z-slab: read the slab's sinograms (all angles, a few rows) from
the scan store, flat/dark-normalise and -log them, reconstruct (on a GPU worker when there is one:
``resources={"GPU": 1}``), write whole level-0 chunks and set the slab's own marker chunk. Then
``pyramid-level`` tasks, one per output chunk of each coarser level. No two tasks ever write one
chunk; slabs are whole multiples of the z chunk.

Memory
------
:func:`slab_bytes` estimates a slab's peak memory (input, normalised and filtered copies, output and
the kernels' transposed work arrays); :func:`choose_slab_rows` takes the largest slab under the
per-worker budget, so peak memory per task is bounded whatever the volume size.

Resume
------
The store is the state: a rerun skips slabs whose marker is set and the pyramid only runs once all
slabs are done. The ``recon`` stage is marked complete last.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tomoflow import config as _config
from tomoflow.backend import has_cuda, to_numpy
from tomoflow.errors import ConfigError, StoreError
from tomoflow.io.scan_store import ScanStore
from tomoflow.io.volume_store import VolumeStore
from tomoflow.recon.center import find_center
from tomoflow.recon.fbp import fbp
from tomoflow.recon.filters import FILTERS, padded_length
from tomoflow.recon.iterative import mlem, sirt
from tomoflow.recon.normalize import mean_frames, normalize_log

__all__ = [
    "ReconParams",
    "reconstruct_scan",
    "read_line_integrals",
    "estimate_center",
    "slab_bytes",
    "choose_slab_rows",
]

log = logging.getLogger(__name__)

ALGORITHMS = ("fbp", "mlem", "sirt")
DEFAULT_ITERATIONS = {"fbp": 0, "mlem": 20, "sirt": 50}


@dataclass(frozen=True)
class ReconParams:
    """Everything a slab task needs besides the slab bounds (plain data: cheap to ship to workers)."""

    scan: str
    out: str
    algorithm: str
    center: float
    filter: str
    n_iter: int
    shape: tuple[int, int]
    device: str
    mask: bool = True


# ----------------------------------------------------------------------------- reading and sizing
def read_line_integrals(scan: ScanStore, z0: int, z1: int, xp: Any = np, *, angles: slice = slice(None)) -> Any:
    """Line integrals ``(angle, z1 - z0, col)`` float32 of detector rows ``z0:z1`` of a scan store.

    Raw intensities are flat/dark corrected and ``-log``-ed (see :mod:`tomoflow.recon.normalize`);
    stores holding line integrals are returned as they are. ``angles`` selects projections (all by
    default).
    """
    raw = np.asarray(scan.projections[angles, z0:z1, :], dtype=np.float32)
    data = xp.asarray(raw)
    if scan.attrs.values == "line-integral":
        return data
    flats = scan.flats[:, z0:z1, :] if scan.flats.shape[0] else None
    darks = scan.darks[:, z0:z1, :] if scan.darks.shape[0] else None
    shape = raw.shape[1:]
    f = mean_frames(None if flats is None else xp.asarray(flats), shape, "flats")
    d = mean_frames(None if darks is None else xp.asarray(darks), shape, "darks")
    return normalize_log(data, f, d, out=data)


def estimate_center(scan: ScanStore, *, band: int = 32, method: str = "vo") -> float:
    """Rotation centre of a scan store from a band of central rows (see :func:`find_center`)."""
    n_rows = scan.shape[1]
    z0 = max(0, n_rows // 2 - band // 2)
    z1 = min(n_rows, z0 + band)
    p = read_line_integrals(scan, z0, z1)
    return find_center(p, scan.angles_deg, method=method)


def slab_bytes(n_angles: int, n_cols: int, shape: tuple[int, int], rows: int, algorithm: str) -> int:
    """Estimated peak bytes of one slab task of ``rows`` detector rows.

    Counts the raw and normalised sinograms, the padded complex filter buffers (FBP), the output
    volume and the kernels' z-innermost copies; iterative methods hold about five volume-sized and
    three sinogram-sized arrays at once.
    """
    sino = n_angles * n_cols * 4 * rows
    vol = shape[0] * shape[1] * 4 * rows
    if algorithm == "fbp":
        pad = padded_length(n_cols)
        filt = n_angles * rows * (pad * 4 + (pad // 2 + 1) * 8 * 2)
        return int(3 * sino + filt + 3 * vol)
    return int(5 * sino + 6 * vol)


def choose_slab_rows(n_angles: int, n_rows: int, n_cols: int, shape: tuple[int, int], algorithm: str,
                     budget: int, chunk_rows: int, min_slabs: int = 1) -> int:
    """Largest multiple of ``chunk_rows`` whose :func:`slab_bytes` fits ``budget`` (at least one chunk),
    made smaller where possible so that there are at least ``min_slabs`` slabs (one per worker thread)."""
    per_chunk = slab_bytes(n_angles, n_cols, shape, chunk_rows, algorithm)
    k = max(1, int(budget // max(per_chunk, 1)))
    if k == 1 and per_chunk > budget:
        log.warning("one chunk of %d rows needs ~%.2f GB, over the %.2f GB budget", chunk_rows, per_chunk / 1e9, budget / 1e9)
    rows = min(k * chunk_rows, -(-n_rows // chunk_rows) * chunk_rows)
    if min_slabs > 1:
        balanced = -(-n_rows // min_slabs)  # rows per slab for min_slabs slabs
        rows = min(rows, max(chunk_rows, -(-balanced // chunk_rows) * chunk_rows))
    return int(rows)


# ----------------------------------------------------------------------------- tasks
def _namespace(device: str) -> Any:
    """Array namespace for ``device`` on this worker: CuPy for ``cuda`` (or ``auto`` with a GPU)."""
    if device == "cuda" or (device == "auto" and has_cuda()):
        if not has_cuda():
            raise ConfigError("device is 'cuda' but this worker has no usable CUDA device or CuPy "
                              "(install tomoflow[gpu], or use --device cpu / auto)")
        import cupy

        return cupy
    return np


def reconstruct_slab(p: Any, angles_deg: np.ndarray, params: ReconParams) -> Any:
    """Reconstruct one slab of line integrals ``(angle, row, col)`` -> ``(row, y, x)`` with the kernels."""
    if params.algorithm == "fbp":
        return fbp(p, angles_deg, center=params.center, filter=params.filter, shape=params.shape, mask=params.mask)
    fn = mlem if params.algorithm == "mlem" else sirt
    return fn(p, angles_deg, center=params.center, n_iter=params.n_iter, shape=params.shape, mask=params.mask)


def _slab_task(params: ReconParams, index: int, z0: int, z1: int) -> dict[str, float]:
    """Task body: read, normalise, reconstruct and write slab ``index`` (rows ``z0:z1``)."""
    vstore = VolumeStore.open(params.out, mode="r+")
    if vstore.done_slabs()[index]:
        return {"index": index, "skipped": 1.0}
    t0 = time.perf_counter()
    scan = ScanStore.open(params.scan)
    xp = _namespace(params.device)
    p = read_line_integrals(scan, z0, z1, xp)
    t1 = time.perf_counter()
    vol = reconstruct_slab(p, scan.angles_deg, params)
    vol = to_numpy(vol)
    t2 = time.perf_counter()
    vstore.level(0)[z0:z1] = vol
    vstore.mark_slab_done(index)
    t3 = time.perf_counter()
    return {"index": index, "read": t1 - t0, "compute": t2 - t1, "write": t3 - t2}


def _block_mean(block: np.ndarray) -> np.ndarray:
    """2x2x2 block mean; odd edges are replicated."""
    pads = [(0, s % 2) for s in block.shape]
    if any(p[1] for p in pads):
        block = np.pad(block, pads, mode="edge")
    z, y, x = (s // 2 for s in block.shape)
    return block.reshape(z, 2, y, 2, x, 2).mean(axis=(1, 3, 5), dtype=np.float64).astype(np.float32)


def _pyramid_task(out: str, level: int, index: tuple[int, int, int]) -> int:
    """Task body: compute one chunk of ``level`` from ``level - 1``."""
    vstore = VolumeStore.open(out, mode="r+")
    dst = vstore.level(level)
    src = vstore.level(level - 1)
    sl = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(index, dst.chunks, dst.shape))
    src_sl = tuple(slice(2 * s.start, min(2 * s.stop, n)) for s, n in zip(sl, src.shape))
    dst[sl] = _block_mean(np.asarray(src[src_sl]))
    return 1


# ----------------------------------------------------------------------------- driver
def _run(tasks: list[Any], client: Any, on_done: Callable[[], None] | None) -> list[Any]:
    """Run delayed tasks on ``client`` (None: dask's threaded scheduler), calling ``on_done`` per task."""
    import dask

    if not tasks:
        return []
    if client is None:
        from dask.callbacks import Callback

        keys = {t.key for t in tasks}

        class _Progress(Callback):
            def _posttask(self, key, result, dsk, state, worker_id):  # noqa: ANN001
                if key in keys and on_done is not None:
                    on_done()

        with _Progress():
            return list(dask.compute(*tasks, scheduler="threads", optimize_graph=False))
    from distributed import as_completed

    futures = client.compute(tasks, optimize_graph=False)
    results = []
    try:
        for fut in as_completed(futures):
            results.append(fut.result())
            if on_done is not None:
                on_done()
    except BaseException:
        client.cancel(futures)
        raise
    return results


def _current_client() -> Any:
    """The distributed client of this context, or None (then dask's threaded scheduler is used)."""
    try:
        from distributed import get_client

        return get_client()
    except (ImportError, ValueError):
        return None


def _total_threads(client: Any) -> int:
    """Worker threads of ``client`` (1 without a client)."""
    if client is None:
        return 1
    try:
        return max(1, sum(int(w.get("nthreads", 1)) for w in client.scheduler_info()["workers"].values()))
    except Exception:  # noqa: BLE001
        return 1


def _wants_gpu(client: Any, device: str) -> bool:
    if device == "cpu" or client is None:
        return False
    try:
        workers = client.scheduler_info()["workers"].values()
    except Exception:  # noqa: BLE001
        return False
    return any(w.get("resources", {}).get("GPU", 0) > 0 for w in workers)


def reconstruct_scan(
    scan_path: str | Path,
    out_path: str | Path,
    *,
    algorithm: str = "fbp",
    center: float | str = "auto",
    filter: str = "ramp",  # noqa: A002
    n_iter: int | None = None,
    shape: tuple[int, int] | None = None,
    memory_budget: int | str | None = None,
    client: Any = None,
    overwrite: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    fail_after: int | None = None,
) -> VolumeStore:
    """Reconstruct a scan store into an OME-Zarr volume store (see module docstring).

    Parameters
    ----------
    scan_path, out_path
        Input scan store and output volume store.
    algorithm
        ``fbp``, ``mlem`` or ``sirt``.
    center
        Rotation axis column in pixels, or ``"auto"`` (Fourier-metric estimate on central rows).
    filter
        FBP filter (see :data:`tomoflow.recon.filters.FILTERS`).
    n_iter
        Iterations for MLEM/SIRT (default 20 / 50).
    shape
        Slice shape ``(ny, nx)``; default ``(ncol, ncol)``.
    memory_budget
        Peak bytes per task (e.g. ``"2GB"``); default the configured ``worker_memory_budget``.
    client
        A ``distributed.Client``; default the current client if any, else dask's threaded scheduler.
    overwrite
        Replace an existing output store instead of resuming it.
    progress
        Called as ``progress(stage, done, total)`` as tasks finish.
    fail_after
        Testing aid: raise after this many slabs were written (simulates an interruption).

    Returns
    -------
    The complete :class:`VolumeStore`.
    """
    import dask

    t_start = time.perf_counter()
    algorithm = algorithm.lower()
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
    if filter.lower() not in FILTERS:
        raise ConfigError(f"unknown filter {filter!r}; choose one of {', '.join(FILTERS)}")
    iters = DEFAULT_ITERATIONS[algorithm] if n_iter is None else int(n_iter)
    if algorithm != "fbp" and iters < 1:
        raise ConfigError(f"n_iter must be >= 1 for {algorithm}, got {n_iter}")
    cfg = _config.get()
    budget = cfg.worker_memory_budget if memory_budget is None else _config.parse_bytes(memory_budget)
    scan = ScanStore.open(scan_path)
    n_angles, n_rows, n_cols = scan.shape
    slice_shape = tuple(shape) if shape is not None else (n_cols, n_cols)
    if isinstance(center, str):
        if center != "auto":
            raise ConfigError(f"center must be a number of pixels or 'auto', got {center!r}")
        ctr = estimate_center(scan)
        log.info("estimated rotation centre %.2f px (detector centre %.1f)", ctr, (n_cols - 1) / 2)
    else:
        ctr = float(center)
    params = ReconParams(scan=str(scan_path), out=str(out_path), algorithm=algorithm, center=ctr, filter=filter.lower(),
                         n_iter=iters, shape=slice_shape, device=cfg.device)  # type: ignore[arg-type]
    client = client if client is not None else _current_client()
    chunk_rows = int(scan.projections.chunks[1])  # slabs read whole scan chunks and write whole volume chunks
    slab_rows = choose_slab_rows(n_angles, n_rows, n_cols, slice_shape, algorithm, budget, chunk_rows,
                                 min_slabs=_total_threads(client))
    pixel = scan.attrs.pixel_size.value if scan.attrs.pixel_size else 1.0
    vstore = _open_or_create(out_path, params, (n_rows, *slice_shape), pixel, slab_rows, chunk_rows, scan, overwrite)
    slabs = vstore.slabs()
    done = vstore.done_slabs()
    todo = [i for i in range(len(slabs)) if not done[i]]
    log.info("%d of %d slabs to reconstruct (%d rows each)", len(todo), len(slabs), vstore.slab_rows)

    gpu = _wants_gpu(client, cfg.device)
    token = dask.base.tokenize(params, vstore.slab_rows)[:12]
    name = f"recon-{algorithm}-{token}"
    tasks = []
    with dask.annotate(resources={"GPU": 1}) if gpu else contextlib.nullcontext():
        for i in todo:
            z0, z1 = slabs[i]
            tasks.append(dask.delayed(_slab_task, pure=False)(params, i, z0, z1, dask_key_name=(name, i)))
    total = len(slabs)
    counter = {"n": total - len(todo)}

    def tick(stage: str, n_total: int) -> Callable[[], None]:
        def _done() -> None:
            counter["n"] += 1
            if fail_after is not None and counter["n"] - (total - len(todo)) >= fail_after and stage == "recon":
                raise RuntimeError(f"simulated interruption after {fail_after} slabs")
            if progress is not None:
                progress(stage, counter["n"], n_total)
        return _done

    if progress is not None:
        progress("recon", counter["n"], total)
    t_recon = time.perf_counter()
    timings = _run(tasks, client, tick("recon", total))
    t_recon = time.perf_counter() - t_recon
    if not vstore.done_slabs().all():
        raise StoreError(f"{out_path}: some slabs did not finish; run again to resume")

    t_pyr = time.perf_counter()
    for level in range(1, vstore.n_levels):
        arr = vstore.level(level)
        grid = [range(-(-s // c)) for s, c in zip(arr.shape, arr.chunks)]
        ptasks = [dask.delayed(_pyramid_task, pure=False)(str(out_path), level, (a, b, c),
                                                          dask_key_name=(f"pyramid-level-{token}", level, a, b, c))
                  for a in grid[0] for b in grid[1] for c in grid[2]]
        counter["n"] = 0
        _run(ptasks, client, tick(f"pyramid level {level}", len(ptasks)))
    t_pyr = time.perf_counter() - t_pyr
    compute = float(sum(t.get("compute", 0.0) for t in timings))
    vstore.mark_complete(seconds=time.perf_counter() - t_start, slabs_computed=len(todo), slab_rows=vstore.slab_rows,
                         recon_wall_s=t_recon, pyramid_wall_s=t_pyr, compute_s=compute, gpu=gpu)
    return vstore


def _open_or_create(out_path: str | Path, params: ReconParams, shape: tuple[int, int, int], pixel_um: float,
                    slab_rows: int, chunk_rows: int, scan: ScanStore, overwrite: bool) -> VolumeStore:
    out = Path(out_path)
    if out.exists() and not overwrite:
        vstore = VolumeStore.open(out, mode="r+")
        a = vstore.attrs
        same = (a.scan == params.scan and a.algorithm == params.algorithm and vstore.shape == shape
                and a.rotation_center is not None and abs(a.rotation_center - params.center) < 1e-6
                and a.provenance.config.get("recon") == _recon_config(params))
        if not same:
            raise StoreError(f"{out}: exists and was made with other parameters; pass overwrite=True (--overwrite)")
        log.info("resuming %s", out)
        return vstore
    inputs = [scan.attrs.source] if scan.attrs.source else []
    run_config = {**_config.get().model_dump(mode="json"), "recon": _recon_config(params)}
    edge = _config.get().volume_chunk
    chunks = (chunk_rows, min(edge, shape[1]), min(edge, shape[2]))
    return VolumeStore.create(out, shape, pixel_um, slab_rows=slab_rows, chunks=chunks, algorithm=params.algorithm,
                              rotation_center=params.center, scan=params.scan, run_config=run_config,
                              inputs=inputs, overwrite=overwrite)


def _recon_config(params: ReconParams) -> dict[str, Any]:
    d = asdict(params)
    d["shape"] = list(d["shape"])
    return {k: v for k, v in d.items() if k not in ("scan", "out", "device")}  # device does not change results


