"""Running the scans of a batch: the state one batch run shares between its scans (:class:`BatchRun`:
the manifest, the client, the results so far, the stop flag, progress and warnings) and the runner of
one scan's stages, with its retries (:class:`ScanRunner`, in a thread of the runner process).

:func:`tomoflow.batch.runner.run_batch` feeds the scans to a pool of these; see its module for how a
batch runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from tomoflow import config as _config
from tomoflow._version import __version__
from tomoflow.batch.failures import (
    failure_message,
    is_deterministic,
    killed_worker,
    output_locked,
    write_problem,
)
from tomoflow.batch.manifest import Manifest, ScanEntry
from tomoflow.batch.names import LOGS, THUMBNAILS, TRAINING_MARKER
from tomoflow.batch.report import write_report_file, write_thumbnail
from tomoflow.batch.results import COMPLETE, FAILED, PENDING, SKIPPED, BatchEvent, Progress, ScanResult, StageResult
from tomoflow.batch.tasks import fits_one_slab, ingest_task, recon_task, register_task, train_task
from tomoflow.cluster import cluster_resources
from tomoflow.errors import ConfigError, StoreError, TomoflowError, shorten
from tomoflow.io.output import fingerprint, identity_of
from tomoflow.io.stages import STAGES_GROUP, read_zarr_json
from tomoflow.io.volume_store import VolumeStore
from tomoflow.pipeline.align import align_scan
from tomoflow.pipeline.reconstruct import reconstruct_scan
from tomoflow.pipeline.recover import recover_volume
from tomoflow.pipeline.registration import volume_voxel_um
from tomoflow.pipeline.resample import field_grid

__all__ = ["BatchRun", "ScanRunner"]

log = logging.getLogger(__name__)

#: Seconds a scan waits, times its attempt, before a retry after finding its output locked by another process.
LOCKED_RETRY_WAIT_S = 5.0


class _Stopped(Exception):
    """The batch was interrupted before this scan's next stage."""


# ----------------------------------------------------------------------------- helpers
def _record(store: Path, stage: str) -> tuple[bool, str | None, float | None]:
    """``(complete, finished, seconds)`` of a stage record in a store (all falsy when there is none)."""
    doc = read_zarr_json(Path(store) / STAGES_GROUP / stage)
    attrs = (doc or {}).get("attributes") or {}
    return bool(attrs.get("complete")), attrs.get("finished"), attrs.get("seconds")


def _write_json(path: Path, doc: Any) -> None:
    """Write a report JSON through the file policy (stamped, atomic; never over a user's file)."""
    write_report_file(path, dict(doc))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_text(path: Path, text: str) -> None:
    """Write a log through the file policy (stamped first line, atomic; never over a user's file)."""
    write_report_file(path, text)


def _token(*parts: Any) -> str:
    """A short hex token (keys: unique per run, scan and attempt)."""
    return hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()[:8]


# ----------------------------------------------------------------------------- one scan
class ScanRunner:
    """Runs one scan's stages (with retries) in a thread of the runner process."""

    def __init__(self, batch: BatchRun, scan: ScanEntry) -> None:
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
                    self.failures.append(
                        f"attempt {attempt}, stage {r.failed_stage or '-'}, {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                        + "".join(traceback.format_exception(exc))
                    )
                    killed = killed_worker(exc)
                    if killed is not None:
                        r.status, r.error_type = FAILED, "KilledWorker"
                        r.error = (
                            f"{r.failed_stage or 'a'} task of this scan killed the workers that ran it, one "
                            f"after the other (out of memory? a crash?); not retried. {failure_message(killed)}"
                        )
                        break
                    r.status, r.error, r.error_type = FAILED, failure_message(exc), type(exc).__name__
                    if self.batch.stop.is_set() and not is_deterministic(exc):
                        r.status, r.error = PENDING, None  # the batch was interrupted under it
                        break
                    if is_deterministic(exc) or attempt > retries:
                        break
                    log.warning(
                        "scan %s, attempt %d failed (%s); retrying", self.scan.name, attempt, shorten(r.error, 300)
                    )
                    r.retried_after.append(r.error)
                    if output_locked(exc):
                        # the holder may be a worker whose job was just cancelled: give it time to exit
                        self.batch.stop.wait(LOCKED_RETRY_WAIT_S * attempt)
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
            self.batch.warn(
                f"scan {self.scan.name}: cannot describe its outputs for the report: {failure_message(exc)}",
                key=("describe", type(exc).__name__),
            )
        self._write_log()
        try:
            self.out["dir"].mkdir(parents=True, exist_ok=True)
            _write_json(self.out["report"], r.as_dict())
        except (OSError, TomoflowError) as exc:
            why = write_problem(exc, self.out["report"])
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
        head = (
            f"tomoflow {__version__} batch: scan {self.scan.name}: {r.status}"
            + (f" in stage {r.failed_stage}" if r.failed_stage else "")
            + f" after {r.attempts} attempt(s)\n"
            + f"manifest output {self.batch.manifest.output}\n\n"
        )
        try:
            _write_text(path, head + "\n".join(self.failures))
        except (OSError, TomoflowError) as exc:
            why = write_problem(exc, path.parent)
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
                    return ingest_task(str(scan.path), str(scan_store), kwargs, settings)
                fut = client.submit(ingest_task, str(scan.path), str(scan_store), kwargs, settings, key=key, pure=False)
                try:
                    return fut.result()
                finally:
                    fut.release()

            self._stage("ingest", ingest, [(scan_store, "ingest")])
        source = scan_store
        if "align" in stages:
            opts = stages["align"].kwargs()
            self._stage(
                "align",
                lambda: align_scan(
                    scan_store,
                    out["aligned"],
                    center=scan.center,
                    client=client,
                    progress=self._progress("align"),
                    **opts,
                ),
                [(out["aligned"], "align")],
            )
            source = out["aligned"]
        if "recon" in stages:
            center = None if "align" in stages else scan.center  # the aligned store holds the refined centre
            opts = stages["recon"].kwargs()

            def recon() -> Any:
                res = self.batch.resources
                if res is not None and fits_one_slab(Path(source), opts, res.total_threads):
                    settings = _config.get().model_dump()
                    threads = res.task_threads
                    gpu = {"GPU": 1} if res.gpus > 0 and settings.get("device") != "cpu" else None
                    return self._task(
                        "recon", recon_task, (str(source), str(out["volume"]), center, opts, settings, threads), gpu
                    )
                return reconstruct_scan(
                    source, out["volume"], center=center, client=client, progress=self._progress("recon"), **opts
                )

            self._stage("recon", recon, [(out["volume"], "recon")])
        if "recover" in stages:
            lfov = out["volume"] if "recon" in stages else scan.volume
            assert lfov is not None  # the manifest requires volume of a scan that runs recover without recon
            self._recover(stages["recover"], lfov)

    # -- recover: register -> train (model: train) -> recover the field (resampled block by block, on the fly)
    def _recover(self, stage: Any, lfov: Path) -> None:
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
            reg_fp = fingerprint(
                "register", inputs=ids, params={"dof": stage.dof, "max_rotation_deg": stage.max_rotation_deg}
            )
            reg_path = out["registration"]

            def registration() -> dict[str, Any]:
                doc = self._own_json(reg_path, reg_fp)
                if doc is not None:
                    return doc
                args = (str(hr), str(lfov), stage.dof, stage.max_rotation_deg, device)
                doc = self._task("register-volumes", register_task, args, gpu)
                doc["fingerprint"] = reg_fp
                out["dir"].mkdir(parents=True, exist_ok=True)
                _write_json(reg_path, doc)
                return doc

            reg = self._stage("register", registration, [(reg_path, "")])
            options = stage.training().kwargs()
            shown = {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in options.items()}
            train_fp = fingerprint(
                "train", inputs={**ids, "registration": reg_fp}, params={**shown, "matrix": reg["matrix"]}
            )
            train_dir = out["training"]
            marker = train_dir / TRAINING_MARKER

            def train() -> Path:
                if self._own_json(marker, train_fp) is not None:
                    return Path(_read_json(marker)["weights"])
                t0 = time.perf_counter()
                threads = self.batch.resources.task_threads if self.batch.resources is not None else None
                source = {
                    "hr": str(hr),
                    "lfov": str(lfov),
                    "registration": str(reg_path),
                    "matrix": reg["matrix"],
                    "ncc": reg.get("ncc"),
                }
                args = (str(hr), str(lfov), reg["matrix"], str(train_dir), options, device, threads, source)
                res = self._task("train-recovery", train_task, args, gpu)
                _write_json(
                    marker,
                    {
                        "fingerprint": train_fp,
                        "weights": res["weights"],
                        "metrics": res["metrics"],
                        "seconds": time.perf_counter() - t0,
                    },
                )
                return Path(res["weights"])

            weights = self._stage("train", train, [(marker, "")])
        else:
            from tomoflow.recover.unet import load_unet  # torch: loaded only for a given weights file

            weights = Path(stage.model)
            trained = (load_unet(weights, device="cpu").card.get("training_data") or {}).get("hr_voxel_um")
            hr_um = float(trained) if trained is not None else volume_voxel_um(VolumeStore.open(hr), str(hr))
        shape, matrix = field_grid(lf.shape, lf_um, hr_um)
        self._stage(
            "recover",
            lambda: recover_volume(
                lfov,
                weights,
                out["recovered"],
                matrix=matrix,
                shape=shape,
                spacing_um=hr_um,
                order=stage.order,
                pad_mode=stage.pad_mode,
                client=client,
                progress=self._progress("recover"),
            ),
            [(out["recovered"], "recover")],
        )

    def _own_json(self, path: Path, fp: str) -> dict[str, Any] | None:
        """The batch's own JSON output ``path`` when it was made with fingerprint ``fp`` (None: absent);
        a file made from other inputs is refused, as a store would be."""
        if not os.path.lexists(path):
            return None
        doc = _read_json(path)
        if not isinstance(doc, dict) or "fingerprint" not in doc:
            raise StoreError(f"{path}: exists and was not written by tomoflow batch; refusing to replace it")
        if doc["fingerprint"] != fp:
            raise StoreError(
                f"{path}: was made from other inputs or parameters; move it away (and the outputs "
                "made from it) to redo this scan"
            )
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
        r, out, root = self.result, self.out, Path(self.batch.manifest.output)
        names = self.batch.manifest.stage_names(self.scan)
        keys = ["scan"] * ("ingest" in names) + ["aligned"] * ("align" in names) + ["volume"] * ("recon" in names)
        keys += ["registration", "training", "recovered"] if "recover" in names else []
        r.outputs = {k: os.path.relpath(out[k], root) for k in keys if os.path.lexists(out[k])}
        if "align" in names and _record(out["aligned"], "align")[0]:
            r.alignment = _alignment_summary(out["aligned"])
        final = out["recovered"] if "recover" in names else out["volume"] if "recon" in names else None
        if "recon" in names and _record(out["volume"], "recon")[0]:
            ctr = VolumeStore.open(out["volume"]).attrs.rotation_center
            r.center = None if ctr is None else float(ctr)
        if final is not None and r.ok:
            r.thumbnail = write_thumbnail(
                final, self.batch.report_dir / THUMBNAILS / f"{self.scan.name}.png", relative_to=self.batch.report_dir
            )


def _alignment_summary(aligned: Path) -> dict[str, Any]:
    """Method, refined centre and residual of an aligned store: the last iteration's update (px, rms and
    max: how far the estimate still moved), the rms of the shifts, convergence, mean quality."""
    info = (read_zarr_json(aligned / STAGES_GROUP / "align") or {}).get("attributes", {}).get("info", {})
    g = zarr.open_group(str(aligned), mode="r")
    attrs = dict(g["shifts"].attrs)
    conv = attrs.get("convergence") or [{}]
    last = conv[-1] if isinstance(conv, list) and conv else {}
    quality = np.asarray(g["quality"][:], dtype=np.float64)
    return {
        "method": info.get("method"),
        "center": info.get("center"),
        "residual_rms_px": last.get("rms_update_px"),
        "residual_max_px": last.get("max_update_px"),
        "iterations": len(conv) if isinstance(conv, list) else None,
        "converged": attrs.get("converged"),
        "shifts_rms_px": info.get("shifts_rms_px"),
        "mean_quality": float(np.nanmean(quality)) if np.isfinite(quality).any() else None,
    }


# ----------------------------------------------------------------------------- the batch
class BatchRun:
    """The state one batch run shares between its scan runners: manifest, client, layouts, results,
    the stop flag, progress events, warnings said once, the HR scans others wait for."""

    def __init__(
        self,
        manifest: Manifest,
        client: Any,
        layouts: dict[str, dict[str, Path]],
        report_dir: Path,
        progress: Progress | None,
    ) -> None:
        self.manifest, self.client, self.layouts, self.report_dir = manifest, client, layouts, report_dir
        self.progress = progress
        self.stop = threading.Event()
        self.run_id = uuid.uuid4().hex
        self.results: dict[str, ScanResult] = {}
        self.done_events = {s.hr_scan: threading.Event() for s in manifest.scans if s.hr_scan is not None}
        self._warned: set[Any] = set()
        self.resources = None
        if client is not None:
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
        except Exception:
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
            raise ConfigError(
                f"the HR scan {name!r} of this scan did not complete"
                + (f" ({shorten(res.error, 300)})" if res is not None and res.error else "")
            )

    def scan_results(self) -> list[ScanResult]:
        """Every scan's result so far, in manifest order (``pending`` for a scan not finished)."""
        with self._lock:
            return [self.results.get(s.name) or ScanResult(name=s.name) for s in self.manifest.scans]

    def run_scan(self, scan: ScanEntry) -> ScanResult:
        res = ScanRunner(self, scan).run()
        with self._lock:
            self.results[scan.name] = res
        if scan.name in self.done_events:
            self.done_events[scan.name].set()
        self.emit(BatchEvent("scan-done", scan=scan.name, result=res))
        return res
