"""The batch runner: every scan of a manifest through its stages, many scans at once, on one cluster.

:func:`run_batch` takes a validated :class:`~tomoflow.batch.manifest.Manifest` and a Dask client.

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
  while the batch runs (a worker plugin, :class:`tomoflow.cluster.quiet_task_failures`; the batch
  reports every task failure itself). OS errors are said in words (``no space left on /data/out``),
  never guessed at as a dead worker (:mod:`tomoflow.batch.failures`).
* **Report.** ``batch-report.json`` and ``batch-report.html`` (one table, thumbnails of each scan's
  central slice in ``thumbnails/``) in the output root (or ``report_dir``), rewritten every few
  seconds while the batch runs and at its end; ``<output>/<name>/scan-report.json`` per scan; and a
  Dask ``performance_report`` (``dask-performance.html``) beside them. See
  :mod:`tomoflow.batch.report`. A report that cannot be written (a full disk) never fails
  or stops the batch: :attr:`BatchResult.report_error` says why.

This module holds the pool and the checks before any work; one scan's stages and retries are in
:mod:`tomoflow.batch.scans`, the work sent to workers as single tasks in :mod:`tomoflow.batch.tasks`.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from tomoflow.batch._manifest_util import real_path
from tomoflow.batch.failures import write_problem
from tomoflow.batch.manifest import SHOWN_PROBLEMS, Manifest, missing_inputs, scan_outputs
from tomoflow.batch.names import PERFORMANCE_REPORT, REPORT_HTML, REPORT_JSON, REPORT_NAMES
from tomoflow.batch.report import DaskPerformanceReport, write_report
from tomoflow.batch.results import BatchEvent, BatchResult, Progress
from tomoflow.batch.scans import BatchRun
from tomoflow.cluster import quiet_task_failures
from tomoflow.errors import ConfigError, InputError, StoreError, TomoflowError, describe_os_error, summarise
from tomoflow.io.lock import check_unlocked, output_lock
from tomoflow.io.output import plan_files

__all__ = ["run_batch", "preflight", "MAX_DEFAULT_IN_FLIGHT"]

#: Cap of the default number of scans in flight (one runner thread each; pass ``max_in_flight`` for more).
MAX_DEFAULT_IN_FLIGHT = 256
_RESERVED = {n.lower() for n in REPORT_NAMES}


# ----------------------------------------------------------------------------- checks before any work
def preflight(manifest: Manifest, report_dir: str | os.PathLike | None = None) -> dict[str, dict[str, Path]]:
    """Check, writing nothing, that the batch may run: every input exists, every scan's output folder
    lies inside the output root and is no other scan's (links resolved), no scan is named like a file
    of the batch report, and the report folder is no scan's folder.

    Returns
    -------
    dict
        Scan name -> :func:`~tomoflow.batch.manifest.scan_outputs`.

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
        raise InputError(
            f"{len(missing):,} input(s) of the manifest missing: "
            + summarise(missing, SHOWN_PROBLEMS, sep="; ", last="; and ")
        )
    layouts: dict[str, dict[str, Path]] = {}
    owners: dict[Path, str] = {}
    problems = []
    for scan in manifest.scans:
        if scan.name.lower() in _RESERVED:
            taken = ", ".join(sorted(_RESERVED))
            problems.append(
                f"scan {scan.name!r}: the name is taken by the batch report ({taken} are files of the "
                "output root); rename the scan"
            )
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
        raise ConfigError(
            f"{manifest.output}: the batch cannot run: " + summarise(problems, SHOWN_PROBLEMS, sep="; ", last="; and ")
        )
    return layouts


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
        A validated manifest (:func:`~tomoflow.batch.manifest.load_manifest`).
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
    # the report's files, by the file policy, before anything starts: never a user's file, never in a store
    plan_files(
        rdir,
        {REPORT_JSON: "batch-report", REPORT_HTML: "batch-report", PERFORMANCE_REPORT: "batch-report"},
        renew=[REPORT_JSON, REPORT_HTML, PERFORMANCE_REPORT],
        option="report folder",
    )
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
        return _run_locked(manifest, client, layouts, rdir, progress, n_flight, performance_report, report_every_s, t0)


def _run_locked(
    manifest: Manifest,
    client: Any,
    layouts: dict[str, dict[str, Path]],
    rdir: Path,
    progress: Progress | None,
    n_flight: int,
    performance_report: bool,
    report_every_s: float,
    t0: float,
) -> BatchResult:
    """:func:`run_batch` once the output root's lock is held."""
    try:
        rdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"{rdir}: cannot create the report folder ({describe_os_error(exc)})") from None
    batch = BatchRun(manifest, client, layouts, rdir, progress)
    # HR scans (named by another scan's hr_scan) first: a scan waiting for one never waits for a scan not started.
    order = sorted(manifest.scans, key=lambda s: s.name not in batch.done_events)
    perf = rdir / PERFORMANCE_REPORT if performance_report and client is not None else None
    result = BatchResult(scans=[], performance_report=perf, report_dir=rdir)
    batch.emit(
        BatchEvent("batch-start", total=len(order), info={"max_in_flight": n_flight, "output": str(manifest.output)})
    )

    def snapshot(final: bool) -> None:
        result.scans = batch.scan_results()
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
            result.report_error = write_problem(exc, rdir)
            batch.warn(f"cannot write the batch report in {rdir} ({result.report_error})", key=("report", "policy"))

    perf_writer = DaskPerformanceReport(client, perf)
    with quiet_task_failures(client), perf_writer:
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
