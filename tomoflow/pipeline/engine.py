"""The stage engine: one way to run blocks of work that each write whole chunks of one output store.

Every pipeline stage (reconstruction, alignment, registration resampling, tiled U-Net inference; the
batch runner calls them per scan) is *planning + a block function*; this module owns everything else,
once:

1. **Output identity** — :func:`fingerprint` digests the stage name, the *identity* of each input
   (:func:`identity_of`: a tomoflow store's content/producer identity, a raw file's sha256 — never a
   path string) and the requested parameters. The stage record in the output store keeps it; a
   rerun resumes only into a store with the same fingerprint, and a different one is refused (or,
   with ``overwrite``, replaced).
2. **Overwrite safety** — :func:`prepare_output` decides, before anything is written, whether to
   create, resume, return at once (complete) or replace. ``overwrite`` replaces only a tomoflow store
   of the expected kind; a non-empty folder that is not one, an input of the stage, an output inside
   an input or an input inside the output are refused. :func:`create_store` then creates the root
   group with its attributes in one atomic write.
   **One runner per output**: when the plan has something to write, :func:`prepare_output` takes the
   output's lock (:mod:`tomoflow.io.lock`: ``<store>.lock`` beside the store) and plans again under
   it, so a second runner is refused with who holds it, and a plan made before another runner
   created or finished the store is never acted on. The lock is held until the stage function
   (decorated with :func:`writes_outputs`) returns or raises; a complete output takes no lock.
3. **Blocks and markers** — a stage's output is divided into *units* (e.g. one z-chunk of a volume);
   a :class:`Block` covers whole units and writes exactly their chunks. :func:`plan_blocks` groups
   units under a per-task memory budget, balanced over the cluster's worker threads.
   :func:`run_blocks` skips blocks whose units are all marked, runs the rest as Dask tasks, writes
   each block's data, then its units' markers (one chunk per unit: no two tasks write one chunk,
   no shared JSON is read-modified-written). A block whose result holds NaN or Inf is an error, never
   written. A killed worker's block is recomputed (by Dask elsewhere, or by the next run).
4. **Cluster and threads** — task names are readable (``recon-fbp``, ``pyramid-level``); ``GPU``
   resources are requested only when the cluster has GPU workers; every task runs under
   :func:`tomoflow.backend.limit_threads` with the worker's share of its node's CPUs, so numba and
   FFT threads never oversubscribe a node.

How the stages use it
---------------------
* **Reconstruction** (:mod:`tomoflow.pipeline.reconstruct`): units = z-chunks of the volume's
  level 0, blocks = sinogram slabs of whole units (``recon-<algorithm>``), then the pyramid.
* **Alignment** (:mod:`tomoflow.pipeline.align`) writes per-angle shifts and aligned projections into
  its own scan store: units = angle chunks (``flat-field-correct``, then ``align-shift``: read the
  projections of those angles, shift them, return them), the estimation in between.
* **Registration resampling / tiled U-Net inference** (:mod:`tomoflow.pipeline.resample`,
  :mod:`tomoflow.pipeline.recover`): units = output chunks of a volume store, ``Block.args`` carry
  the input region plus its halo; the block function reads the halo'd input, runs the kernel or
  network and returns the cropped chunk region (``resample-volume``, ``recover-unet``).
* **The pyramid** of every volume store (:mod:`tomoflow.pipeline.pyramid`): one ``pyramid-level``
  task per chunk of each coarser level.
* **The batch runner** calls each stage's driver per scan; the stores are the state, so a rerun of
  a batch skips complete stages at :func:`prepare_output` (no writes) and resumes incomplete ones.

A stage driver looks like::

    @writes_outputs                                # the output's lock is held until it returns
    def reconstruct(scan, out, overwrite=False):
        fp = fingerprint("recon", inputs={"scan": identity_of(scan)}, params=params)
        plan = prepare_output(out, kind="tomoflow-volume", stage="recon", fingerprint=fp,
                              inputs=[scan], overwrite=overwrite)   # locks unless complete
        if plan.action == "complete":
            return open(out)                       # no writes at all, no lock
        if plan.action in ("create", "replace"):
            create the store (create_store) and StageLog.begin(out, "recon", ...)
        run_blocks(out, blocks, fn, stage="recon", step="level-0", array="0", name="recon-fbp")
        StageLog(out, "recon").finish(output_id=fp, seconds=...)
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tomoflow.backend import limit_threads, to_numpy
from tomoflow.errors import PipelineError, StoreError, TomoflowError, describe_os_error, shorten
from tomoflow.io.lock import claim_output, output_lock_scope, writes_outputs
from tomoflow.io.output import OutputPlan, create_store, fingerprint, identity_of, resolved_path
from tomoflow.io.output import prepare_output as _plan_output
from tomoflow.io.stages import StageLog

__all__ = [
    "Block",
    "OutputPlan",
    "StepReport",
    "fingerprint",
    "identity_of",
    "prepare_output",
    "create_store",
    "writes_outputs",
    "output_lock_scope",
    "plan_blocks",
    "run_blocks",
    "units_of",
    "task_failure_reason",
    "current_client",
    "local_execution",
    "KILL_AFTER_WRITE_ENV",
]

log = logging.getLogger(__name__)

#: Testing aid: when this environment variable names an existing file, the next block task to write
#: its data removes the file and kills its own process (SIGKILL) before writing its markers. Used by
#: the tests to prove that a worker dying between data and marker loses nothing.
KILL_AFTER_WRITE_ENV = "TOMOFLOW_TESTING_KILL_AFTER_WRITE"


# ----------------------------------------------------------------------------- planning
def prepare_output(
    path: str | os.PathLike,
    *,
    kind: str,
    stage: str,
    fingerprint: str,
    params: Mapping[str, Any] | None = None,
    inputs: Sequence[str | os.PathLike] = (),
    overwrite: bool = False,
) -> OutputPlan:
    """Decide what a stage may do with its output path (:func:`tomoflow.io.output.prepare_output`:
    create, resume, complete or replace, refusing whatever could lose data), and lock the output for
    this stage when there is something to write (:func:`tomoflow.io.lock.claim_output`).

    The lock (``<store>.lock`` beside the store) is taken only after the plan was validated, and only
    for a plan other than ``complete``; the plan is then made again under the lock, so what another
    runner did meanwhile is seen. It is held until the enclosing :func:`writes_outputs` stage function
    returns or raises (without one, no lock is taken).

    Raises
    ------
    StoreError
        The plan refuses the output (see :func:`tomoflow.io.output.prepare_output`), or another run is
        writing it: ``<out> is being written by PID 1234 on host h since ... (command); wait for it or
        stop it``.
    """
    return claim_output(
        lambda: _plan_output(
            path, kind=kind, stage=stage, fingerprint=fingerprint, params=params, inputs=inputs, overwrite=overwrite
        ),
        path,
        what=f"{stage} output",
    )


@dataclass(frozen=True)
class Block:
    """One task: compute ``region`` of the output array, which covers exactly the marker ``units``.

    Attributes
    ----------
    units
        Marker indices this block completes (whole chunks of the output).
    region
        The slices of the output array it writes; chunk-aligned (checked by :func:`run_blocks`).
    args
        Positional arguments of the block function: plain, picklable data (paths, numbers).
    nbytes
        Estimated peak memory of the task (bytes).
    label
        Human-readable name for messages, e.g. ``"rows 64-128"``.
    """

    units: tuple[int, ...]
    region: tuple[slice, ...]
    args: tuple[Any, ...] = ()
    nbytes: int = 0
    label: str = ""


def plan_blocks(n_units: int, unit_bytes: int, budget: int, parallel: int = 1) -> list[tuple[int, int]]:
    """Group ``n_units`` consecutive units into blocks ``[(u0, u1), ...]`` under a memory budget.

    A block takes as many units as fit ``budget`` (at least one); the number of blocks is then
    rounded up to a multiple of ``parallel`` (the worker threads) so no thread idles during the last
    round, and units are spread evenly (block sizes differ by at most one unit).

    Parameters
    ----------
    n_units
        Units to cover (>= 1).
    unit_bytes
        Estimated peak bytes of a task holding one unit.
    budget
        Peak bytes one task may use.
    parallel
        Tasks that run at once (the cluster's worker threads).
    """
    n_units = int(n_units)
    if n_units < 1:
        return []
    per = max(1, int(budget // max(1, unit_bytes)))
    if unit_bytes > budget:
        log.warning("one unit needs ~%.2f GB, over the %.2f GB per-task budget", unit_bytes / 1e9, budget / 1e9)
    n_blocks = -(-n_units // per)
    if parallel > 1:
        n_blocks = min(n_units, -(-n_blocks // parallel) * parallel)
    base, extra = divmod(n_units, n_blocks)
    out, u0 = [], 0
    for i in range(n_blocks):
        u1 = u0 + base + (1 if i < extra else 0)
        out.append((u0, u1))
        u0 = u1
    return out


# ----------------------------------------------------------------------------- running
@dataclass
class StepReport:
    """What :func:`run_blocks` did: blocks computed and skipped, wall time, summed task times."""

    computed: int = 0
    skipped: int = 0
    wall_s: float = 0.0
    compute_s: float = 0.0
    write_s: float = 0.0
    max_block_bytes: int = 0
    threads: int = 1
    gpu: bool = False
    gpu_tasks: int = 1
    details: list[dict[str, Any]] = field(default_factory=list)


def _full_region(region: tuple[slice, ...], ndim: int) -> tuple[slice, ...]:
    """``region`` with whole trailing axes made explicit (a region may name only its leading axes)."""
    return tuple(region) + (slice(None),) * (ndim - len(region))


def _check_aligned(region: tuple[slice, ...], shape: tuple[int, ...], chunks: tuple[int, ...], where: str) -> None:
    for s, n, c in zip(_full_region(region, len(shape)), shape, chunks):
        start, stop = s.start or 0, n if s.stop is None else s.stop
        if start % c or (stop % c and stop != n) or not 0 <= start < stop <= n:
            raise PipelineError(
                f"{where}: block region {region} is not aligned to the chunks {chunks} "
                f"of an array of shape {shape} (a bug in the stage's planning)"
            )


def _maybe_kill_for_test() -> None:
    trigger = os.environ.get(KILL_AFTER_WRITE_ENV)
    if trigger and os.path.exists(trigger):
        try:
            os.remove(trigger)
        except FileNotFoundError:  # another task got there first
            return
        os.kill(os.getpid(), signal.SIGKILL)


def _run_block(
    store: str, array: str, stage: str, step: str, fn: Callable[..., Any], block: Block, threads: int
) -> dict[str, Any]:
    """Task body: compute a block under the thread budget, check it, write it, then mark it."""
    import zarr

    where = f"{store}: {stage} {block.label or block.units}"
    t0 = time.perf_counter()
    try:
        with limit_threads(threads):
            data = fn(*block.args)
        data = to_numpy(data)
    except TomoflowError:
        raise
    except OSError as exc:  # reading an input: say what the system said, in words
        raise PipelineError(f"{where} failed: {describe_os_error(exc)}") from exc
    except Exception as exc:  # a library error deep in a kernel: say where
        raise PipelineError(f"{where} failed: {type(exc).__name__}: {shorten(exc, 1000)}") from exc
    t1 = time.perf_counter()
    try:
        out = zarr.open_array(store, path=array, mode="r+")
        region = _full_region(block.region, len(out.shape))
        expected = tuple(len(range(*s.indices(n))) for s, n in zip(region, out.shape))
        if tuple(data.shape) != expected:
            raise PipelineError(f"{where}: block function returned shape {tuple(data.shape)}, expected {expected}")
        if np.issubdtype(data.dtype, np.floating):
            bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
            if bad:
                raise PipelineError(
                    f"{where}: result holds {bad} NaN/Inf values (bad input data in this block?); "
                    "nothing was written for it"
                )
        out[region] = data
        _maybe_kill_for_test()
        StageLog(store, stage).mark_done(step, block.units)
    except OSError as exc:  # a full disk, a read-only or vanished folder: say it in words, never guess
        raise StoreError(
            f"{where}: cannot write the block ({describe_os_error(exc, store)}); run again to resume once that is fixed"
        ) from None
    t2 = time.perf_counter()
    return {"units": list(block.units), "compute_s": t1 - t0, "write_s": t2 - t1}


def run_blocks(
    store: str | os.PathLike,
    blocks: Sequence[Block],
    fn: Callable[..., Any],
    *,
    stage: str,
    step: str,
    array: str,
    name: str,
    gpu: bool = False,
    gpu_tasks: int = 1,
    threads: int | None = None,
    client: Any = None,
    cluster: Any = None,
    retries: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
    progress_label: str | None = None,
) -> StepReport:
    """Run the blocks of one step of a stage on Dask, skipping those already marked done.

    Parameters
    ----------
    store
        Output store; its stage record and the ``step`` marker array exist (:meth:`StageLog.begin`).
    blocks
        The plan; blocks must partition the units they cover.
    fn
        Block function ``fn(*block.args) -> array`` of the block's region shape (NumPy or CuPy). A
        module-level function (it is pickled to the workers). It reads its inputs itself; the engine
        writes its result.
    stage, step, array
        Stage record, marker array and output array (path inside the store) of this step.
    name
        Task-group name shown on the dashboard: hyphenated words without digits (``"recon-fbp"``).
    gpu
        The block function wants a GPU: tasks carry ``resources={"GPU": 1}`` when the cluster has GPU
        workers (never otherwise: such a task would wait forever).
    gpu_tasks
        Block tasks that may run at once on one GPU worker: each asks for ``1 / gpu_tasks`` of its
        ``GPU`` resource. Above 1, one task's reads and writes overlap another's GPU compute (the slab
        conveyor of :mod:`tomoflow.pipeline.gpu`, which bounds how many compute at once).
    threads
        Thread budget per task; default: the worker's share of its node's CPUs
        (:func:`tomoflow.cluster.cluster_resources`).
    client
        ``distributed.Client``; default the current one, else a local thread pool.
    cluster
        The client's :class:`tomoflow.cluster.ClusterResources` if the caller has it already.
    retries
        Times a task raising an exception is retried (worker deaths are always rescheduled by Dask).
    progress
        ``progress(label, done, total)`` as blocks finish (done counts skipped blocks too).

    Returns
    -------
    StepReport
    """
    store = os.fspath(store)
    if not name.replace("-", "").isalpha():
        raise ValueError(f"task name {name!r} must be hyphenated words without digits or underscores")
    label = progress_label or step
    done = StageLog(store, stage).done(step)
    todo = [b for b in blocks if not all(done[u] for u in b.units)]
    report = StepReport(skipped=len(blocks) - len(todo), gpu=False)
    report.max_block_bytes = max((b.nbytes for b in blocks), default=0)
    if progress is not None:
        progress(label, report.skipped, len(blocks))
    if not todo:
        return report
    import zarr

    arr = zarr.open_array(store, path=array, mode="r")
    for b in todo:
        _check_aligned(b.region, tuple(arr.shape), tuple(arr.chunks), store)
    client = current_client() if client is None else client
    if cluster is None:
        from tomoflow.cluster import cluster_resources

        cluster = cluster_resources(client)
    res = cluster
    report.threads = int(threads) if threads is not None else res.task_threads
    report.gpu = bool(gpu and res.gpus > 0)
    if int(gpu_tasks) < 1:
        raise ValueError(f"gpu_tasks must be >= 1, got {gpu_tasks}")
    report.gpu_tasks = int(gpu_tasks)
    t0 = time.perf_counter()
    if client is None:
        results = _run_local(
            store,
            array,
            stage,
            step,
            fn,
            todo,
            report.threads,
            res.total_threads,
            progress,
            label,
            report.skipped,
            len(blocks),
        )
    else:
        results = _run_distributed(
            client, store, array, stage, step, fn, todo, report, name, retries, progress, label, len(blocks)
        )
    report.wall_s = time.perf_counter() - t0
    report.computed = len(results)
    report.compute_s = float(sum(r["compute_s"] for r in results))
    report.write_s = float(sum(r["write_s"] for r in results))
    report.details = results
    if not StageLog(store, stage).done(step)[[u for b in blocks for u in b.units]].all():
        raise PipelineError(f"{store}: {stage} {step}: some blocks did not finish; run again to resume")
    return report


_LOCAL_EXECUTION: ContextVar[bool] = ContextVar("tomoflow_local_execution", default=False)


@contextmanager
def local_execution() -> Iterator[None]:
    """Run the stages called inside without a cluster (:func:`current_client` is None): for a stage run
    whole as *one* task on a worker (a small scan of a batch), whose blocks then run in the task's own
    thread, within its thread budget, instead of being submitted back to the cluster."""
    token = _LOCAL_EXECUTION.set(True)
    try:
        yield
    finally:
        _LOCAL_EXECUTION.reset(token)


def current_client() -> Any:
    """The distributed client of this context, or None (only if distributed is already imported; None
    inside :func:`local_execution`)."""
    import sys

    if "distributed" not in sys.modules or _LOCAL_EXECUTION.get():
        return None
    from distributed import get_client

    try:
        return get_client()
    except ValueError:
        return None


def _run_local(
    store: str,
    array: str,
    stage: str,
    step: str,
    fn: Callable[..., Any],
    todo: Sequence[Block],
    threads: int,
    parallel: int,
    progress: Callable[[str, int, int], None] | None,
    label: str,
    skipped: int,
    total: int,
) -> list[dict[str, Any]]:
    """No cluster: a thread pool of ``parallel`` threads in this process."""
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    results: list[dict[str, Any]] = []
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(todo)))) as pool:
        pending = {pool.submit(_run_block, store, array, stage, step, fn, b, threads) for b in todo}
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for f in finished:
                    results.append(f.result())  # re-raises a task's exception
                    if progress is not None:
                        progress(label, skipped + len(results), total)
        except BaseException:
            for p in pending:
                p.cancel()
            raise
    return results


def _run_distributed(
    client: Any,
    store: str,
    array: str,
    stage: str,
    step: str,
    fn: Callable[..., Any],
    todo: Sequence[Block],
    report: StepReport,
    name: str,
    retries: int,
    progress: Callable[[str, int, int], None] | None,
    label: str,
    total: int,
) -> list[dict[str, Any]]:
    from distributed import as_completed

    token = hashlib.sha256(f"{resolved_path(store)}\0{stage}\0{step}\0{time.time_ns()}".encode()).hexdigest()[:8]
    resources = {"GPU": 1.0 / report.gpu_tasks} if report.gpu else None
    futures = [
        client.submit(
            _run_block,
            store,
            array,
            stage,
            step,
            fn,
            b,
            report.threads,
            key=f"{name}-{token}-{i}",
            pure=False,
            resources=resources,
            retries=retries,
        )
        for i, b in enumerate(todo)
    ]
    results: list[dict[str, Any]] = []
    try:
        for fut in as_completed(futures):
            try:
                results.append(fut.result())
            except TomoflowError:
                raise
            except OSError as exc:  # raised by the task itself (not a lost connection): say what it was
                if type(exc).__name__ in _LOST:
                    raise PipelineError(
                        f"{store}: {stage} task {fut.key} failed: {task_failure_reason(exc)}; run again to resume"
                    ) from exc
                raise StoreError(f"{store}: {stage} task {fut.key} failed: {describe_os_error(exc)}") from exc
            except Exception as exc:  # KilledWorker, CommClosedError, a bug in a kernel ...
                raise PipelineError(
                    f"{store}: {stage} task {fut.key} failed: {task_failure_reason(exc)}; run again to resume"
                ) from exc
            if progress is not None:
                progress(label, report.skipped + len(results), total)
    except BaseException:
        client.cancel(futures)
        raise
    return results


#: Exceptions of distributed that mean a task's worker or connection was lost (not the task's own error).
_LOST = {"CommClosedError", "StreamClosedError", "FutureCancelledError", "CancelledError", "TimeoutError"}


def task_failure_reason(exc: BaseException) -> str:
    """Why a Dask task failed, in one line: a guess about the cause only where the exception says it
    (``KilledWorker``: its workers died; a closed comm: the connection was lost; an OS error: what the
    system said, e.g. ``no space left on /data``), otherwise the exception's type and text."""
    name = type(exc).__name__
    text = shorten(exc, 300)
    if name == "KilledWorker":
        return f"the workers that ran it died, one after the other (out of memory? a crash?): {text}"
    if name in _LOST:
        return f"lost the connection to its worker ({name}: {text})"
    if isinstance(exc, OSError) and exc.errno is not None:
        return describe_os_error(exc)
    return f"{name}: {text}"


def units_of(blocks: Iterable[Block]) -> list[int]:
    """All units covered by ``blocks`` (in order)."""
    return [u for b in blocks for u in b.units]
