"""The batch runner: every scan of a manifest through its stages, many scans at once, on one cluster.

:func:`run_batch` takes a validated :class:`~tomoflow.io.manifest.Manifest` and a Dask client.

How it runs
-----------
* **One small graph per scan, bounded.** A pool of ``max_in_flight`` scan runners (threads of this
  process) is fed lazily from the scan list: the next scan starts when one finishes, so an archive
  of 10,000 scans is never one giant graph and the scheduler only ever holds the tasks of the scans
  in flight. Each scan runner calls the stage functions in order with the shared client; they build
  and submit their own small graphs with readable task names (``recon-fbp``, ``align-shift``, ...).
  Work that is not a Dask graph runs as *one* task on a worker with an explicit unique key:
  ``ingest-<token>-<scan>``, ``register-volumes-<token>-<scan>``, ``train-recovery-<token>-<scan>``
  (the dashboard groups them as ``ingest``, ``register-volumes``, ``train-recovery``); registration
  and training ask for ``resources={"GPU": 1}`` when the cluster has GPU workers. The recon stage
  estimates an ``auto`` centre in an ``estimate-center-<token>`` task, so the runner process does
  no per-scan compute, and the cluster's workers are asked their CPU counts once, not per stage. A
  scan whose reconstruction the stage would plan as a single slab task anyway has its whole recon
  stage run as one ``recon-<token>-<scan>`` task (store setup, slab, pyramid, records: all on the
  worker), so the runner's cost per small scan is a submit and a wait.
* **The stores are the state.** Every stage function returns at once, writing nothing, when its
  output store is complete for the same inputs and parameters (the stage engine's fingerprints), and
  resumes an incomplete one; the runner reads each store's stage record before and after the call to
  tell ``skipped-complete`` from ``complete``. Registration and training, which write files rather
  than stores, keep the same rule with a fingerprint in ``registration.json`` and
  ``training/batch-training.json``, written last. So rerunning a manifest skips what is complete and
  redoes what is not, whatever happened to the previous run.
* **Failure isolation.** A scan that raises fails alone: bad input (:class:`~tomoflow.errors.InputError`,
  :class:`~tomoflow.errors.ConfigError`, :class:`~tomoflow.errors.StoreError` and other deterministic
  tomoflow errors) fails it at once; anything else (a crashed task, a lost connection) is retried up to
  ``manifest.retries`` times. A worker that dies has its tasks recomputed elsewhere by Dask; a task
  that kills ``distributed.scheduler.allowed-failures + 1`` workers in turn ends as
  ``distributed.KilledWorker``, and its scan is recorded as failed (not retried) instead of stalling
  the batch.
* **Safety.** Before any work, every scan's output folder is checked to lie inside the output root and
  to be distinct from every other scan's (symbolic links resolved), and no scan may be named like a
  file of the batch report. Each scan writes only under ``<output>/<name>/``.
* **One runner per output root.** The batch holds ``<output>/.tomoflow.lock``
  (:func:`tomoflow.io.lock.output_lock`) while it runs: a second run of the same manifest (or of any
  manifest with that output root) is refused with who holds it (host, PID, since when, command); a
  lock left by a runner that is gone (same host, dead PID) is taken over with a warning. Each stage
  also locks the store it writes (``<store>.lock``), so a single-scan command never writes into a
  store the batch is writing, nor the reverse.
* **One line per failure.** A failed scan is one line in the result (``ScanResult.error``: the
  reason, on one line, long texts cut); its full traceback(s) go to ``batch-logs/<name>.log`` beside
  the report (``ScanResult.log``). Dask's multi-line "Compute Failed" worker messages (and its
  "Sizeof calculation failed" noise about the profiles the performance report collects) are dropped
  while the batch runs (a worker plugin; the batch reports every task failure itself). OS errors are
  said in words (``no space left on /data/out``), never guessed at as a dead worker.
* **Report.** ``batch-report.json`` and ``batch-report.html`` (one table, thumbnails of each scan's
  central slice in ``thumbnails/``) in the output root (or ``report_dir``), rewritten every few
  seconds while the batch runs and at its end; ``<output>/<name>/scan-report.json`` per scan; and a
  Dask ``performance_report`` (``dask-performance.html``) beside them. See
  :mod:`tomoflow.pipeline.batch_report`. A report that cannot be written (a full disk) never fails
  or stops the batch: :attr:`BatchResult.report_error` says why.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tomoflow import config as _config
from tomoflow.errors import (
    ConfigError,
    InputError,
    PipelineError,
    StoreError,
    TomoflowError,
    describe_os_error,
    shorten,
    summarise,
)
from tomoflow.io._manifest_util import real_path
from tomoflow.io.lock import check_unlocked, output_lock
from tomoflow.io.manifest import REPORT_NAMES, SHOWN_PROBLEMS, Manifest, ScanEntry, missing_inputs, scan_outputs
from tomoflow.io.stages import STAGES_GROUP, read_zarr_json
from tomoflow.pipeline.registration import volume_voxel_um

__all__ = [
    "run_batch",
    "preflight",
    "BatchEvent",
    "BatchResult",
    "ScanResult",
    "StageResult",
    "COMPLETE",
    "SKIPPED",
    "FAILED",
    "PENDING",
    "REPORT_JSON",
    "REPORT_HTML",
    "PERFORMANCE_REPORT",
    "THUMBNAILS",
    "LOGS",
    "TRAINING_MARKER",
]

log = logging.getLogger(__name__)

#: Scan and stage statuses.
COMPLETE, SKIPPED, FAILED, PENDING = "complete", "skipped-complete", "failed", "pending"

REPORT_JSON, REPORT_HTML, PERFORMANCE_REPORT, THUMBNAILS, LOGS = REPORT_NAMES
#: Completion marker of a per-scan training, written in ``<output>/<scan>/training/`` after the weights.
TRAINING_MARKER = "batch-training.json"
#: Cap of the default number of scans in flight (one runner thread each; pass ``max_in_flight`` for more).
MAX_DEFAULT_IN_FLIGHT = 256
_RESERVED = {n.lower() for n in REPORT_NAMES}
#: Longest error text kept in a scan's result and report (the full text and traceback are in its log).
ERROR_CHARS = 2000


# ----------------------------------------------------------------------------- results
@dataclass
class StageResult:
    """One stage of one scan in this run: ``complete`` (work done now), ``skipped-complete`` (its output
    was already complete: nothing written) or ``failed``; ``seconds`` of this run, and the seconds the
    store recorded when the stage was computed."""

    stage: str
    status: str
    seconds: float = 0.0
    recorded_seconds: float | None = None


@dataclass
class ScanResult:
    """What happened to one scan (see :meth:`as_dict` for the report's fields)."""

    name: str
    status: str = PENDING
    stages: list[StageResult] = field(default_factory=list)
    attempts: int = 0
    seconds: float = 0.0
    error: str | None = None
    error_type: str | None = None
    failed_stage: str | None = None
    retried_after: list[str] = field(default_factory=list)
    center: float | None = None
    alignment: dict[str, Any] | None = None
    thumbnail: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    #: The scan's failure log (full tracebacks of every failed attempt), relative to the report folder.
    log: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in (COMPLETE, SKIPPED)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BatchResult:
    """The batch: every scan's result in manifest order, wall time and the report files.

    ``report_json`` / ``report_html`` are None when the report could not be written; ``report_error``
    then says why (``no space left on /data/out``); likewise ``performance_error``.
    """

    scans: list[ScanResult]
    seconds: float = 0.0
    report_json: Path | None = None
    report_html: Path | None = None
    performance_report: Path | None = None
    interrupted: bool = False
    report_error: str | None = None
    performance_error: str | None = None
    report_dir: Path | None = None

    @property
    def failed(self) -> list[ScanResult]:
        return [s for s in self.scans if s.status == FAILED]

    @property
    def ok(self) -> bool:
        """Every scan complete (now or already)."""
        return all(s.ok for s in self.scans)

    def counts(self) -> dict[str, int]:
        out = {COMPLETE: 0, SKIPPED: 0, FAILED: 0, PENDING: 0}
        for s in self.scans:
            out[s.status] = out.get(s.status, 0) + 1
        return out


@dataclass(frozen=True)
class BatchEvent:
    """A progress report of :func:`run_batch` (passed to its ``progress`` callback, from any thread).

    ``kind``: ``"batch-start"`` (``total`` scans, ``info`` = in-flight limit, cluster), ``"scan-start"``,
    ``"stage"`` (``stage`` of ``scan`` at ``step``: ``done`` of ``total`` tasks), ``"scan-done"``
    (``result``), ``"batch-done"``.
    """

    kind: str
    scan: str | None = None
    stage: str | None = None
    step: str | None = None
    done: int = 0
    total: int = 0
    result: ScanResult | None = None
    info: dict[str, Any] | None = None


Progress = Callable[[BatchEvent], None]


class _Stopped(Exception):
    """The batch was interrupted before this scan's next stage."""


# ----------------------------------------------------------------------------- checks before any work
def preflight(manifest: Manifest, report_dir: str | os.PathLike | None = None) -> dict[str, dict[str, Path]]:
    """Check, writing nothing, that the batch may run: every input exists, every scan's output folder
    lies inside the output root and is no other scan's (links resolved), no scan is named like a file
    of the batch report, and the report folder is no scan's folder.

    Returns
    -------
    dict
        Scan name -> :func:`~tomoflow.io.manifest.scan_outputs`.

    Raises
    ------
    InputError
        Inputs missing (all listed).
    ConfigError
        A scan folder outside the output root, shared by two scans, or named like a report file.
    StoreError
        A scan's output folder exists and is not a folder.
    """
    missing = missing_inputs(manifest)
    if missing:
        raise InputError(f"{len(missing):,} input(s) of the manifest missing: "
                         + summarise(missing, SHOWN_PROBLEMS, sep="; ", last="; and "))
    layouts: dict[str, dict[str, Path]] = {}
    owners: dict[Path, str] = {}
    problems = []
    for scan in manifest.scans:
        if scan.name.lower() in _RESERVED:
            taken = ", ".join(sorted(_RESERVED))
            problems.append(f"scan {scan.name!r}: the name is taken by the batch report ({taken} are files of the "
                            "output root); rename the scan")
            continue
        out = scan_outputs(manifest, scan)  # ConfigError when a link leads out of the root
        real = real_path(out["dir"])
        if real in owners:
            problems.append(f"scans {owners[real]!r} and {scan.name!r} would write into the same folder {real}")
        owners[real] = scan.name
        if os.path.lexists(out["dir"]) and not out["dir"].is_dir():
            raise StoreError(f"{out['dir']}: the output folder of scan {scan.name!r} exists and is not a folder")
        layouts[scan.name] = out
    if report_dir is not None:
        rd = real_path(Path(report_dir))
        inside = next((name for d, name in owners.items() if rd == d or d in rd.parents), None)
        if inside is not None:
            problems.append(f"report folder {report_dir} lies in the output folder of scan {inside!r}")
    if problems:
        raise ConfigError(f"{manifest.output}: the batch cannot run: " + summarise(problems, SHOWN_PROBLEMS, sep="; ",
                                                                                  last="; and "))
    return layouts


# ----------------------------------------------------------------------------- worker tasks
def _ingest_task(source: str, store: str, kwargs: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Task: ingest one raw scan into its scan store, under the runner's tomoflow settings (chunking)."""
    from tomoflow.io.ingest import ingest

    with _config.set(**settings):
        s = ingest(source, store, **kwargs)
    return {"shape": list(s.shape)}


def _fits_one_slab(scan_store: Path, opts: dict[str, Any], parallel: int) -> bool:
    """Whether the recon stage's own plan for this scan is a single slab task (its rows in one chunk, or
    chunks that fit one task's memory budget and are not worth spreading over ``parallel`` worker
    threads): then running the stage whole as *one* task on a worker (:func:`_recon_task`) loses no
    parallelism, and spares the runner the store setup, records and pyramid it would otherwise drive
    (more runner CPU than such a scan's compute). Read from the store's JSON metadata only."""
    from tomoflow.pipeline.engine import plan_blocks
    from tomoflow.pipeline.reconstruct import slab_bytes

    doc = read_zarr_json(scan_store / "projections") or {}
    shape = doc.get("shape")
    chunks = ((doc.get("chunk_grid") or {}).get("configuration") or {}).get("chunk_shape")
    if not all(isinstance(v, list) and len(v) == 3 and all(isinstance(n, int) and n > 0 for n in v)
               for v in (shape, chunks)):
        return False
    n_angles, n_rows, n_cols = shape
    chunk_rows = chunks[1]
    ny, nx = opts.get("shape") or (n_cols, n_cols)
    unit = slab_bytes(n_angles, n_cols, (int(ny), int(nx)), chunk_rows, opts.get("algorithm", "fbp"))
    budget = _config.get().worker_memory_budget
    return unit <= budget and len(plan_blocks(-(-n_rows // chunk_rows), unit, budget, parallel)) == 1


def _recon_task(source: str, out: str, center: Any, opts: dict[str, Any], settings: dict[str, Any],
                threads: int) -> dict[str, Any]:
    """Task: the whole recon stage of a small scan in this worker (its slab and pyramid blocks in this
    task's thread, within its thread budget), under the runner's tomoflow settings."""
    from tomoflow.backend import limit_threads
    from tomoflow.pipeline.engine import local_execution
    from tomoflow.pipeline.reconstruct import reconstruct_scan

    with _config.set(**settings), limit_threads(max(1, int(threads))), local_execution():
        v = reconstruct_scan(source, out, center=center, **opts)
    return {"shape": list(v.shape)}


def _register_task(hr: str, lfov: str, dof: int, max_rotation_deg: float, device: str) -> dict[str, Any]:
    """Task: register the HR ROI volume into the LFOV volume from the stage prior (as ``tomoflow register``)."""
    from tomoflow.pipeline.registration import register_volumes

    return register_volumes(hr, lfov, dof=dof, device=device, max_rotation_deg=max_rotation_deg)


def _train_task(hr: str, lfov: str, matrix: list[list[float]], out_dir: str, options: dict[str, Any], device: str,
                threads: int | None, source: dict[str, Any]) -> dict[str, Any]:
    """Task: train the recovery U-Net on (LFOV resampled onto the HR grid, HR), resuming a checkpoint."""
    from tomoflow.io.volume_store import VolumeStore
    from tomoflow.train.recovery import train_recovery
    from tomoflow.register.resample import resample_to_grid

    h, lf = VolumeStore.open(hr), VolumeStore.open(lfov)
    hr_um, lf_um = volume_voxel_um(h, hr), volume_voxel_um(lf, lfov)
    hr_vol = np.asarray(h.level(0)[...], dtype=np.float32)
    inp = resample_to_grid(lf.level(0), np.asarray(matrix), h.shape, hr_um, lf_um)
    res = train_recovery(inp, hr_vol, out_dir=out_dir, device=device, threads=threads, resume=True,
                         hr_voxel_um=hr_um, lfov_voxel_um=lf_um, source=source,
                         command=f"tomoflow batch run (scan output {out_dir})", **options)
    return {"weights": str(res.weights), "metrics": res.metrics, "stopped_by": res.card["training"]["stopped_by"]}


# ----------------------------------------------------------------------------- helpers
def _record(store: Path, stage: str) -> tuple[bool, str | None, float | None]:
    """``(complete, finished, seconds)`` of a stage record in a store (all falsy when there is none)."""
    doc = read_zarr_json(Path(store) / STAGES_GROUP / stage)
    attrs = (doc or {}).get("attributes") or {}
    return bool(attrs.get("complete")), attrs.get("finished"), attrs.get("seconds")


def _write_json(path: Path, doc: Any) -> None:
    """Write a report JSON through the file policy (stamped, atomic; never over a user's file)."""
    from tomoflow.pipeline.batch_report import write_report_file

    write_report_file(path, dict(doc))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _killed_worker(exc: BaseException) -> BaseException | None:
    return next((e for e in _chain(exc) if type(e).__name__ == "KilledWorker"), None)


#: OS errors that a retry right away would meet again (a full disk, no permission, a read-only folder).
_LASTING_OS_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _deterministic(exc: BaseException) -> bool:
    """Bad input, a refusal or a full disk: the same again on a retry (a task failure or lost worker is not)."""
    if isinstance(exc, OSError) and exc.errno in _LASTING_OS_ERRORS:
        return True
    return isinstance(exc, TomoflowError) and not isinstance(exc, PipelineError)


def _message(exc: BaseException) -> str:
    """The reason a scan failed, on one line (at most :data:`ERROR_CHARS` characters)."""
    if isinstance(exc, OSError) and not isinstance(exc, TomoflowError) and exc.errno is not None:
        return shorten(describe_os_error(exc), ERROR_CHARS)
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, StoreError) and "--overwrite" in text:
        text += (" [tomoflow batch never replaces an output: move that store away to redo the scan with the "
                 "manifest's inputs and parameters]")
    return shorten(text if isinstance(exc, TomoflowError) else f"{type(exc).__name__}: {text}", ERROR_CHARS)


def _write_problem(exc: BaseException, where: Path) -> str:
    """Why a file of the batch could not be written, in words: the OS error behind ``exc`` (also one the
    file policy's :class:`~tomoflow.errors.StoreError` wraps: ``no space left on /data/out``), else the
    error's own text (one line)."""
    for e in _chain(exc):
        if isinstance(e, OSError) and not isinstance(e, TomoflowError) and e.errno is not None:
            return describe_os_error(e, where)
    return shorten(str(exc) or type(exc).__name__, 300)


def _write_text(path: Path, text: str) -> None:
    """Write a log through the file policy (stamped first line, atomic; never over a user's file)."""
    from tomoflow.pipeline.batch_report import write_report_file

    write_report_file(path, text)


def _token(*parts: Any) -> str:
    """A short hex token (keys: unique per run, scan and attempt)."""
    return hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()[:8]


# ----------------------------------------------------------------------------- one scan
class _ScanRunner:
    """Runs one scan's stages (with retries) in a thread of the runner process."""

    def __init__(self, batch: "_Batch", scan: ScanEntry) -> None:
        self.batch, self.scan = batch, scan
        self.out = batch.layouts[scan.name]
        self.result = ScanResult(name=scan.name)
        self.attempt = 0
        self.failures: list[str] = []  # the full text of every failed attempt (for the scan's log)

    # -- events
    def _emit(self, kind: str, **kw: Any) -> None:
        self.batch.emit(BatchEvent(kind, scan=self.scan.name, **kw))

    def _progress(self, stage: str) -> Callable[[str, int, int], None]:
        def update(step: str, done: int, total: int) -> None:
            self._emit("stage", stage=stage, step=step, done=int(done), total=int(total))

        return update

    # -- the scan
    def run(self) -> ScanResult:
        r = self.result
        t0 = time.perf_counter()
        self._emit("scan-start")
        retries = self.batch.manifest.retries
        try:
            for attempt in range(1, retries + 2):
                self.attempt = r.attempts = attempt
                r.stages, r.error, r.error_type, r.failed_stage = [], None, None, None
                try:
                    self._check_not_stopped()
                    self._stages()
                    r.status = SKIPPED if all(s.status == SKIPPED for s in r.stages) else COMPLETE
                    break
                except _Stopped:
                    r.status = PENDING
                    r.error = "the batch was interrupted before this scan finished; run it again to resume"
                    break
                except Exception as exc:  # noqa: BLE001 - one scan's failure must not stop the batch
                    r.failed_stage = r.stages[-1].stage if r.stages and r.stages[-1].status == FAILED else None
                    self.failures.append(f"attempt {attempt}, stage {r.failed_stage or '-'}, {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                                         + "".join(traceback.format_exception(exc)))
                    killed = _killed_worker(exc)
                    if killed is not None:
                        r.status, r.error_type = FAILED, "KilledWorker"
                        r.error = (f"{r.failed_stage or 'a'} task of this scan killed the workers that ran it, one "
                                   f"after the other (out of memory? a crash?); not retried. {_message(killed)}")
                        break
                    r.status, r.error, r.error_type = FAILED, _message(exc), type(exc).__name__
                    if self.batch.stop.is_set() and not _deterministic(exc):
                        r.status, r.error = PENDING, None  # the batch was interrupted under it
                        break
                    if _deterministic(exc) or attempt > retries:
                        break
                    log.warning("scan %s, attempt %d failed (%s); retrying", self.scan.name, attempt,
                                shorten(r.error, 300))
                    r.retried_after.append(r.error)
        finally:
            r.seconds = time.perf_counter() - t0
            if r.status == PENDING and r.error is None:
                r.error = "the batch was interrupted before this scan finished; run it again to resume"
        self._finish()
        return r

    def _finish(self) -> None:
        r = self.result
        if r.status != FAILED:
            r.failed_stage = None
        try:
            self._describe()
        except Exception as exc:  # noqa: BLE001 - a report detail must not fail the scan
            self.batch.warn(f"scan {self.scan.name}: cannot describe its outputs for the report: "
                            f"{_message(exc)}", key=("describe", type(exc).__name__))
        self._write_log()
        try:
            self.out["dir"].mkdir(parents=True, exist_ok=True)
            _write_json(self.out["report"], r.as_dict())
        except (OSError, TomoflowError) as exc:
            why = _write_problem(exc, self.out["report"])
            self.batch.warn(f"cannot write {self.out['report']} ({why})", key=("scan-report", type(exc).__name__))

    def _write_log(self) -> None:
        """Write the scan's failure log (every failed attempt's traceback) beside the report, or remove
        the one of an earlier run once the scan is complete."""
        r = self.result
        path = self.batch.report_dir / LOGS / f"{self.scan.name}.log"
        if not self.failures:
            if r.ok and path.is_file():
                try:
                    path.unlink()
                except OSError:
                    pass
            return
        from tomoflow import __version__

        head = (f"tomoflow {__version__} batch: scan {self.scan.name}: {r.status}"
                + (f" in stage {r.failed_stage}" if r.failed_stage else "") + f" after {r.attempts} attempt(s)\n"
                + f"manifest output {self.batch.manifest.output}\n\n")
        try:
            _write_text(path, head + "\n".join(self.failures))
        except (OSError, TomoflowError) as exc:
            why = _write_problem(exc, path.parent)
            self.batch.warn(f"cannot write the failure logs in {path.parent} ({why})", key=("log", type(exc).__name__))
            return
        r.log = os.path.relpath(path, self.batch.report_dir)

    def _check_not_stopped(self) -> None:
        if self.batch.stop.is_set():
            raise _Stopped()

    def _stage(self, name: str, fn: Callable[[], Any], records: list[tuple[Path, str]]) -> Any:
        """Run one stage; ``records`` are the ``(store, stage)`` records (or marker files, as
        ``(path, "")``) that tell whether it did any work."""
        self._check_not_stopped()
        before = [self._state(p, s) for p, s in records]
        res = StageResult(stage=name, status=FAILED)
        self.result.stages.append(res)
        self._emit("stage", stage=name, step=name, done=0, total=1)
        t0 = time.perf_counter()
        try:
            value = fn()
        finally:
            res.seconds = time.perf_counter() - t0
        after = [self._state(p, s) for p, s in records]
        skipped = bool(records) and all(b[0] and b == a for b, a in zip(before, after))
        res.status = SKIPPED if skipped else COMPLETE
        recorded = [a[2] for a in after if a[2] is not None]
        res.recorded_seconds = float(sum(recorded)) if recorded else None
        self._emit("stage", stage=name, step=name, done=1, total=1)
        return value

    @staticmethod
    def _state(path: Path, stage: str) -> tuple[bool, Any, float | None]:
        if stage:
            return _record(path, stage)
        doc = _read_json(path)
        if not isinstance(doc, dict):
            return (False, None, None)
        return (True, doc.get("fingerprint"), doc.get("seconds"))

    def _stages(self) -> None:
        m, scan, out = self.batch.manifest, self.scan, self.out
        stages = {s.stage: s for s in m.stages_for(scan)}
        client = self.batch.client
        scan_store = out["scan"]
        if "ingest" in stages:
            kwargs = scan.ingest_kwargs()
            settings = _config.get().model_dump()
            key = f"ingest-{self.batch.token(scan.name, self.attempt)}-{scan.name}"

            def ingest() -> Any:
                if client is None:
                    return _ingest_task(str(scan.path), str(scan_store), kwargs, settings)
                fut = client.submit(_ingest_task, str(scan.path), str(scan_store), kwargs, settings, key=key,
                                    pure=False)
                try:
                    return fut.result()
                finally:
                    fut.release()

            self._stage("ingest", ingest, [(scan_store, "ingest")])
        source = scan_store
        if "align" in stages:
            from tomoflow.pipeline.align import align_scan

            opts = stages["align"].kwargs()
            self._stage("align", lambda: align_scan(scan_store, out["aligned"], center=scan.center, client=client,
                                                    progress=self._progress("align"), **opts),
                        [(out["aligned"], "align")])
            source = out["aligned"]
        if "recon" in stages:
            from tomoflow.pipeline.reconstruct import reconstruct_scan

            center = None if "align" in stages else scan.center  # the aligned store holds the refined centre
            opts = stages["recon"].kwargs()

            def recon() -> Any:
                res = self.batch.resources
                if res is not None and _fits_one_slab(Path(source), opts, res.total_threads):
                    settings = _config.get().model_dump()
                    threads = res.task_threads
                    gpu = {"GPU": 1} if res.gpus > 0 and settings.get("device") != "cpu" else None
                    return self._task("recon", _recon_task,
                                      (str(source), str(out["volume"]), center, opts, settings, threads), gpu)
                return reconstruct_scan(source, out["volume"], center=center, client=client,
                                        progress=self._progress("recon"), **opts)

            self._stage("recon", recon, [(out["volume"], "recon")])
        if "recover" in stages:
            self._recover(stages["recover"], out["volume"] if "recon" in stages else scan.volume)

    # -- recover: register -> train (model: train) -> resample the field -> recover
    def _recover(self, stage: Any, lfov: Path) -> None:
        from tomoflow.io.output import fingerprint, identity_of
        from tomoflow.io.volume_store import VolumeStore
        from tomoflow.pipeline.recover import recover_volume
        from tomoflow.pipeline.resample import field_grid, resample_volume

        m, scan, out, client = self.batch.manifest, self.scan, self.out, self.batch.client
        hr = m.hr_volume(scan)
        if scan.hr_scan is not None:
            self.batch.wait_for(scan.hr_scan)
        lfov, hr = Path(lfov), Path(hr)  # type: ignore[arg-type]
        lf = VolumeStore.open(lfov)
        lf_um = volume_voxel_um(lf, str(lfov))
        device = self.batch.torch_device
        gpu = {"GPU": 1} if device == "cuda" else None
        if stage.model == "train":
            h = VolumeStore.open(hr)
            hr_um = volume_voxel_um(h, str(hr))
            ids = {"hr": identity_of(hr), "lfov": identity_of(lfov)}
            reg_fp = fingerprint("register", inputs=ids, params={"dof": stage.dof,
                                                                  "max_rotation_deg": stage.max_rotation_deg})
            reg_path = out["registration"]

            def registration() -> dict[str, Any]:
                doc = self._own_json(reg_path, reg_fp)
                if doc is not None:
                    return doc
                args = (str(hr), str(lfov), stage.dof, stage.max_rotation_deg, device)
                doc = self._task("register-volumes", _register_task, args, gpu)
                doc["fingerprint"] = reg_fp
                out["dir"].mkdir(parents=True, exist_ok=True)
                _write_json(reg_path, doc)
                return doc

            reg = self._stage("register", registration, [(reg_path, "")])
            options = stage.training().kwargs()
            shown = {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in options.items()}
            train_fp = fingerprint("train", inputs={**ids, "registration": reg_fp},
                                   params={**shown, "matrix": reg["matrix"]})
            train_dir = out["training"]
            marker = train_dir / TRAINING_MARKER

            def train() -> Path:
                if self._own_json(marker, train_fp) is not None:
                    return Path(_read_json(marker)["weights"])
                t0 = time.perf_counter()
                threads = self.batch.resources.task_threads if self.batch.resources is not None else None
                source = {"hr": str(hr), "lfov": str(lfov), "registration": str(reg_path), "matrix": reg["matrix"],
                          "ncc": reg.get("ncc")}
                args = (str(hr), str(lfov), reg["matrix"], str(train_dir), options, device, threads, source)
                res = self._task("train-recovery", _train_task, args, gpu)
                _write_json(marker, {"fingerprint": train_fp, "weights": res["weights"], "metrics": res["metrics"],
                                     "seconds": time.perf_counter() - t0})
                return Path(res["weights"])

            weights = self._stage("train", train, [(marker, "")])
        else:
            from tomoflow.recover.unet import load_unet

            weights = Path(stage.model)
            trained = (load_unet(weights, device="cpu").card.get("training_data") or {}).get("hr_voxel_um")
            hr_um = float(trained) if trained is not None else volume_voxel_um(VolumeStore.open(hr), str(hr))
        shape, matrix = field_grid(lf.shape, lf_um, hr_um)
        self._stage("resample", lambda: resample_volume(lfov, out["resampled"], matrix=matrix, shape=shape,
                                                        spacing_um=hr_um, order=stage.order, client=client,
                                                        progress=self._progress("resample")),
                    [(out["resampled"], "resample")])
        self._stage("recover", lambda: recover_volume(out["resampled"], weights, out["recovered"],
                                                      pad_mode=stage.pad_mode, client=client,
                                                      progress=self._progress("recover")),
                    [(out["recovered"], "recover")])

    def _own_json(self, path: Path, fp: str) -> dict[str, Any] | None:
        """The batch's own JSON output ``path`` when it was made with fingerprint ``fp`` (None: absent);
        a file made from other inputs is refused, as a store would be."""
        if not os.path.lexists(path):
            return None
        doc = _read_json(path)
        if not isinstance(doc, dict) or "fingerprint" not in doc:
            raise StoreError(f"{path}: exists and was not written by tomoflow batch; refusing to replace it")
        if doc["fingerprint"] != fp:
            raise StoreError(f"{path}: was made from other inputs or parameters; move it away (and the outputs "
                             "made from it) to redo this scan")
        return doc

    def _task(self, name: str, fn: Callable[..., Any], args: tuple, resources: dict[str, int] | None) -> Any:
        """``fn(*args)`` as one task with a unique readable key (here, without a cluster)."""
        client = self.batch.client
        if client is None:
            return fn(*args)
        key = f"{name}-{self.batch.token(self.scan.name, self.attempt, name)}-{self.scan.name}"
        fut = client.submit(fn, *args, key=key, pure=False, resources=resources)
        try:
            return fut.result()
        finally:
            fut.release()

    # -- report details
    def _describe(self) -> None:
        from tomoflow.io.volume_store import VolumeStore
        from tomoflow.pipeline.batch_report import write_thumbnail

        r, out, root = self.result, self.out, Path(self.batch.manifest.output)
        names = self.batch.manifest.stage_names(self.scan)
        keys = ["scan"] * ("ingest" in names) + ["aligned"] * ("align" in names) + ["volume"] * ("recon" in names)
        keys += ["registration", "training", "resampled", "recovered"] if "recover" in names else []
        r.outputs = {k: os.path.relpath(out[k], root) for k in keys if os.path.lexists(out[k])}
        if "align" in names and _record(out["aligned"], "align")[0]:
            r.alignment = _alignment_summary(out["aligned"])
        final = out["recovered"] if "recover" in names else out["volume"] if "recon" in names else None
        if "recon" in names and _record(out["volume"], "recon")[0]:
            ctr = VolumeStore.open(out["volume"]).attrs.rotation_center
            r.center = None if ctr is None else float(ctr)
        if final is not None and r.ok:
            r.thumbnail = write_thumbnail(final, self.batch.report_dir / THUMBNAILS / f"{self.scan.name}.png",
                                          relative_to=self.batch.report_dir)


def _alignment_summary(aligned: Path) -> dict[str, Any]:
    """Method, refined centre and residual of an aligned store: the last iteration's update (px, rms and
    max: how far the estimate still moved), the rms of the shifts, convergence, mean quality."""
    import zarr

    info = (read_zarr_json(aligned / STAGES_GROUP / "align") or {}).get("attributes", {}).get("info", {})
    g = zarr.open_group(str(aligned), mode="r")
    attrs = dict(g["shifts"].attrs)
    conv = attrs.get("convergence") or [{}]
    last = conv[-1] if isinstance(conv, list) and conv else {}
    quality = np.asarray(g["quality"][:], dtype=np.float64)
    return {"method": info.get("method"), "center": info.get("center"),
            "residual_rms_px": last.get("rms_update_px"), "residual_max_px": last.get("max_update_px"),
            "iterations": len(conv) if isinstance(conv, list) else None, "converged": attrs.get("converged"),
            "shifts_rms_px": info.get("shifts_rms_px"),
            "mean_quality": float(np.nanmean(quality)) if np.isfinite(quality).any() else None}


# ----------------------------------------------------------------------------- the batch
class _Batch:
    def __init__(self, manifest: Manifest, client: Any, layouts: dict[str, dict[str, Path]], report_dir: Path,
                 progress: Progress | None) -> None:
        self.manifest, self.client, self.layouts, self.report_dir = manifest, client, layouts, report_dir
        self.progress = progress
        self.stop = threading.Event()
        self.run_id = uuid.uuid4().hex
        self.results: dict[str, ScanResult] = {}
        self.done_events = {s.hr_scan: threading.Event() for s in manifest.scans if s.hr_scan is not None}
        self._warned: set[Any] = set()
        self.resources = None
        if client is not None:
            from tomoflow.cluster import cluster_resources

            self.resources = cluster_resources(client)
        device = _config.get().device
        gpus = self.resources.gpus if self.resources is not None else 0
        if client is None:
            self.torch_device = device
        else:
            self.torch_device = "cpu" if device == "cpu" or gpus == 0 else "cuda"
        self._lock = threading.Lock()

    def warn(self, message: str, *, key: Any = None) -> None:
        """Log a problem of the batch's own files once (later ones of the same ``key`` at debug level):
        a full disk must not print one warning per scan."""
        key = message if key is None else key
        with self._lock:
            first = key not in self._warned
            self._warned.add(key)
        (log.warning if first else log.debug)("%s", message)

    def emit(self, event: BatchEvent) -> None:
        if self.progress is None:
            return
        try:
            self.progress(event)
        except Exception:  # noqa: BLE001 - a display error must not fail a scan
            log.warning("batch progress callback failed", exc_info=True)

    def token(self, *parts: Any) -> str:
        return _token(self.run_id, *parts)

    def wait_for(self, name: str) -> None:
        """Block until scan ``name`` (an HR scan) has finished; refuse when it failed."""
        event = self.done_events.get(name)
        while event is not None and not event.wait(1.0):
            if self.stop.is_set():
                raise _Stopped()
        res = self.results.get(name)
        if res is None or not res.ok:
            raise ConfigError(f"the HR scan {name!r} of this scan did not complete"
                              + (f" ({shorten(res.error, 300)})" if res is not None and res.error else ""))

    def run_scan(self, scan: ScanEntry) -> ScanResult:
        res = _ScanRunner(self, scan).run()
        with self._lock:
            self.results[scan.name] = res
        if scan.name in self.done_events:
            self.done_events[scan.name].set()
        self.emit(BatchEvent("scan-done", scan=scan.name, result=res))
        return res


def _default_in_flight(manifest: Manifest, client: Any) -> int:
    if manifest.max_scans_in_flight is not None:
        return int(manifest.max_scans_in_flight)
    if client is None:
        return 1
    n = len(client.scheduler_info(n_workers=-1).get("workers", {}))
    return min(MAX_DEFAULT_IN_FLIGHT, max(2, 2 * n))


def run_batch(
    manifest: Manifest,
    *,
    client: Any,
    progress: Progress | None = None,
    report_dir: str | os.PathLike | None = None,
    max_in_flight: int | None = None,
    performance_report: bool = True,
    report_every_s: float = 10.0,
) -> BatchResult:
    """Run every scan of ``manifest`` through its stages (module docstring).

    Parameters
    ----------
    manifest
        A validated manifest (:func:`~tomoflow.io.manifest.load_manifest`).
    client
        A ``distributed.Client`` (the stages' graphs and the single tasks go there), or None: everything
        runs in this process (a thread pool per stage; one scan at a time by default).
    progress
        Called with a :class:`BatchEvent` as scans start, stages advance and scans finish (from the
        scan runner threads).
    report_dir
        Folder of ``batch-report.json``, ``batch-report.html``, ``thumbnails/`` and
        ``dask-performance.html``; default the output root.
    max_in_flight
        Most scans processed at once; default ``manifest.max_scans_in_flight``, else twice the
        number of workers (at least 2, at most :data:`MAX_DEFAULT_IN_FLIGHT`; 1 without a client).
    performance_report
        Wrap the run in :class:`distributed.performance_report` (needs a client).
    report_every_s
        How often the batch report is rewritten while the batch runs.

    Returns
    -------
    BatchResult
        Failed scans are in it (with their error); nothing is raised for them.

    Raises
    ------
    InputError, ConfigError, StoreError
        The batch cannot start (see :func:`preflight`), or another run holds the output root's lock
        (``<output> is being written by PID ... on host ... since ...; wait for it or stop it``);
        nothing was written.
    KeyboardInterrupt
        After writing the report of what finished (the rest resumes on the next run).
    """
    t0 = time.perf_counter()
    if max_in_flight is not None and (isinstance(max_in_flight, bool) or int(max_in_flight) < 1):
        raise ConfigError(f"max_in_flight must be at least 1, got {max_in_flight!r}")
    rdir = Path(report_dir) if report_dir is not None else Path(manifest.output)
    layouts = preflight(manifest, rdir)
    from tomoflow.io.output import plan_files

    # the report's files, by the file policy, before anything starts: never a user's file, never in a store
    plan_files(rdir, {REPORT_JSON: "batch-report", REPORT_HTML: "batch-report", PERFORMANCE_REPORT: "batch-report"},
               renew=[REPORT_JSON, REPORT_HTML, PERFORMANCE_REPORT], option="report folder")
    root = Path(manifest.output)
    if root.is_dir():
        check_unlocked(root, root=True)  # refuse a second runner before asking the cluster anything
    report_every_s = max(float(report_every_s), len(manifest.scans) / 100)  # a big report is rewritten less often
    n_flight = int(max_in_flight) if max_in_flight is not None else _default_in_flight(manifest, client)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{root}: cannot create the output root ({describe_os_error(exc)})") from None
    with output_lock(root, what="batch output root", root=True):
        return _run_locked(manifest, client, layouts, rdir, progress, n_flight, performance_report,
                           report_every_s, t0)


def _run_locked(manifest: Manifest, client: Any, layouts: dict[str, dict[str, Path]], rdir: Path,
                progress: Progress | None, n_flight: int, performance_report: bool, report_every_s: float,
                t0: float) -> BatchResult:
    """:func:`run_batch` once the output root's lock is held."""
    from tomoflow.pipeline.batch_report import write_report

    try:
        rdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{rdir}: cannot create the report folder ({describe_os_error(exc)})") from None
    batch = _Batch(manifest, client, layouts, rdir, progress)
    # HR scans (named by another scan's hr_scan) first: a scan waiting for one never waits for a scan not started.
    order = sorted(manifest.scans, key=lambda s: s.name not in batch.done_events)
    perf = rdir / PERFORMANCE_REPORT if performance_report and client is not None else None
    result = BatchResult(scans=[], performance_report=perf, report_dir=rdir)
    batch.emit(BatchEvent("batch-start", total=len(order), info={"max_in_flight": n_flight,
                                                                "output": str(manifest.output)}))

    def snapshot(final: bool) -> None:
        with batch._lock:
            result.scans = [batch.results.get(s.name) or ScanResult(name=s.name) for s in manifest.scans]
        result.seconds = time.perf_counter() - t0
        try:
            result.report_json, result.report_html = write_report(result, manifest, rdir, final=final)
            result.report_error = None
        except OSError as exc:
            result.report_json = result.report_html = None
            result.report_error = describe_os_error(exc, rdir)
            batch.warn(f"cannot write the batch report in {rdir} ({result.report_error})", key=("report", exc.errno))
        except TomoflowError as exc:  # the file policy refused (a full disk is a StoreError there too)
            result.report_json = result.report_html = None
            result.report_error = _write_problem(exc, rdir)
            batch.warn(f"cannot write the batch report in {rdir} ({result.report_error})", key=("report", "policy"))

    perf_writer = _performance_report(client, perf)
    with _quiet_task_failures(client), perf_writer:
        pool = ThreadPoolExecutor(max_workers=n_flight, thread_name_prefix="tomoflow-scan")
        pending: set[Future] = set()
        scans = iter(order)
        last = time.monotonic()
        try:
            exhausted = False
            while True:
                while not exhausted and len(pending) < n_flight:
                    nxt = next(scans, None)
                    if nxt is None:
                        exhausted = True
                        break
                    pending.add(pool.submit(batch.run_scan, nxt))
                if not pending:
                    break
                finished, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                for f in finished:
                    f.result()  # run_scan catches every scan's error; this surfaces runner bugs only
                if finished and time.monotonic() - last > report_every_s:
                    snapshot(final=False)
                    last = time.monotonic()
        except BaseException:
            batch.stop.set()
            result.interrupted = True
            pool.shutdown(wait=False, cancel_futures=True)
            snapshot(final=True)
            raise
        pool.shutdown(wait=True)
    if perf_writer.error is not None:
        result.performance_report, result.performance_error = None, perf_writer.error
    snapshot(final=True)
    batch.emit(BatchEvent("batch-done", info={"seconds": result.seconds}))
    return result


# ----------------------------------------------------------------------------- quiet task failures
_DASK_FAILURE_DUMPS = ("Compute Failed", "Exception during execution of task")


class _DropTaskFailureDumps(logging.Filter):
    """Drops distributed's multi-line dump of a failed task (key, task, exception, traceback): the batch
    reports every failure itself, in one line, with the traceback in the scan's log. Also drops
    distributed's "Sizeof calculation ... failed" warning: the workers' deep call-stack profiles, which
    the performance report collects, are too deep for ``sizeof`` (distributed then just measures them
    another way): nothing the user can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg if isinstance(record.msg, str) else ""
        if record.name == "distributed.sizeof":
            return "Sizeof calculation" not in record.getMessage()
        return not msg.startswith(_DASK_FAILURE_DUMPS)


_DROP = _DropTaskFailureDumps()
_QUIET_LOGGERS = ("distributed.worker", "distributed.sizeof")
_PLUGIN_NAME = "tomoflow-batch-quiet-task-failures"


def _quiet_here(on: bool) -> None:
    for name in _QUIET_LOGGERS:
        logger = logging.getLogger(name)
        (logger.addFilter if on else logger.removeFilter)(_DROP)


def _plugin_class() -> type:
    """The worker plugin class (made on first use: importing this module must not import distributed)."""
    cls = globals().get("_QuietTaskFailures")
    if cls is None:
        from distributed.diagnostics.plugin import WorkerPlugin

        class _QuietTaskFailures(WorkerPlugin):
            """Installs :class:`_DropTaskFailureDumps` on a worker for the duration of a batch."""

            name = _PLUGIN_NAME
            idempotent = True

            def setup(self, worker: Any) -> None:
                _quiet_here(True)

            def teardown(self, worker: Any) -> None:
                _quiet_here(False)

        _QuietTaskFailures.__module__ = __name__
        globals()["_QuietTaskFailures"] = cls = _QuietTaskFailures
    return cls


def __getattr__(name: str) -> Any:  # a worker unpickling the plugin finds its class here
    if name == "_QuietTaskFailures":
        return _plugin_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _quiet_task_failures:
    """While a batch runs: no "Compute Failed" dumps from the workers (a worker plugin, also on workers
    that join or restart) nor from this process (workers in threads)."""

    #: How many of these are open per client (the CLI's cluster and a batch inside it): the plugin is
    #: registered by the first and removed by the last.
    _depth: dict[int, int] = {}

    def __init__(self, client: Any) -> None:
        self.client = client
        self.registered = False

    def __enter__(self) -> None:
        _quiet_here(True)
        if self.client is None:
            return
        depth = self._depth.get(id(self.client), 0)
        self._depth[id(self.client)] = depth + 1
        if depth:
            return
        try:
            self.client.register_plugin(_plugin_class()(), name=_PLUGIN_NAME)
            self.registered = True
        except Exception as exc:  # noqa: BLE001 - quieter logs are a nicety: never fail the batch for them
            log.debug("cannot quiet the workers' task failure messages: %s", exc)

    def __exit__(self, *exc: Any) -> None:
        if self.client is not None:
            left = self._depth.get(id(self.client), 1) - 1
            if left:
                self._depth[id(self.client)] = left
                return
            self._depth.pop(id(self.client), None)
        _quiet_here(False)
        if self.registered:
            try:
                self.client.unregister_worker_plugin(_PLUGIN_NAME)
            except Exception as err:  # noqa: BLE001
                log.debug("cannot remove the worker plugin %s: %s", _PLUGIN_NAME, err)


class _performance_report:
    """``distributed.performance_report`` into ``path`` (written under a temporary name, then renamed),
    or nothing without a client or path."""

    def __init__(self, client: Any, path: Path | None) -> None:
        self.client, self.path = client, path
        self._stack: Any = None
        #: Why the report was not written (one line), or None.
        self.error: str | None = None

    def _failed(self, doing: str, exc: BaseException) -> None:
        self.error = _write_problem(exc, self.path) if self.path is not None else shorten(exc, 300)
        log.warning("cannot %s the Dask performance report %s (%s)", doing, self.path, self.error)
        log.debug("the Dask performance report failed", exc_info=True)

    def __enter__(self) -> "_performance_report":
        if self.client is None or self.path is None:
            return self
        import contextlib

        from distributed import performance_report

        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._stack = contextlib.ExitStack()
        try:
            self._stack.enter_context(self.client.as_current())
            self._stack.enter_context(performance_report(filename=str(self.tmp)))
        except Exception as exc:  # noqa: BLE001 - the report is a diagnostic: never fail the batch for it
            self._failed("start", exc)
            self._stack.close()
            self._stack = None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._stack is None:
            return
        try:
            self._stack.__exit__(*exc)
            from tomoflow.pipeline.batch_report import write_report_file

            html = self.tmp.read_text(encoding="utf-8")
            write_report_file(self.path, html)  # type: ignore[arg-type]  # stamped, through the file policy
        except Exception as err:  # noqa: BLE001 - a full disk, a lost scheduler: one line, never a traceback
            self._failed("write", err)
        finally:
            try:
                if self.tmp.exists():
                    self.tmp.unlink()
            except OSError:
                pass
