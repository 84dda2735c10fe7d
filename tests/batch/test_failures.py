"""The batch runner when things go wrong (tomoflow/batch/runner.py): one runner per output root, one
line per failed scan with its traceback in a log file, a full disk said in words (never "a worker
died?", never a traceback, never "report: None"), and messages that stay short for huge manifests."""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from tomoflow.batch import COMPLETE, FAILED, load_manifest, preflight, run_batch
from tomoflow.batch.names import LOGS, PERFORMANCE_REPORT, REPORT_JSON
from tomoflow.errors import InputError, PipelineError, StoreError
from tomoflow.io.lock import LOCK_NAME, output_lock
from tomoflow.testing import write_manifest_yaml, write_small_dxchange

ANGLES = np.linspace(0, 180, 32, endpoint=False)


@pytest.fixture
def archive(tmp_path) -> Path:
    """raw/good.h5, raw/other.h5 and raw/broken.h5 (truncated)."""
    raw = tmp_path / "raw"
    raw.mkdir()
    for i, name in enumerate(("good", "other", "broken")):
        write_small_dxchange(raw / f"{name}.h5", i, angles_deg=ANGLES)
    data = (raw / "broken.h5").read_bytes()
    (raw / "broken.h5").write_bytes(data[: len(data) // 3])
    return tmp_path


def _manifest(archive: Path, names=("good", "broken"), output: str = "out", retries: int = 1):
    scans = [f"name: {n}, path: raw/{n}.h5, pixel_size_um: 0.5" for n in names]
    return load_manifest(
        write_manifest_yaml(archive / f"{output}.yaml", output, scans, pipeline="[ingest, recon]", retries=retries)
    )


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# ----------------------------------------------------------------------------- the lock
def test_a_second_runner_of_an_output_root_is_refused_and_writes_nothing(archive):
    m = _manifest(archive)
    root = Path(m.output)
    root.mkdir()
    with output_lock(root, root=True, command="tomoflow batch run out.yaml"):
        before = _listing(archive)
        with pytest.raises(StoreError) as info:
            run_batch(m, client=None)
        assert _listing(archive) == before
    text = str(info.value)
    assert text.startswith(f"{root} is being written by PID {os.getpid()} on host {socket.gethostname()} since ")
    assert text.endswith("(tomoflow batch run out.yaml); wait for it or stop it"), text
    result = run_batch(m, client=None)  # free again
    assert [s.status for s in result.scans] == [COMPLETE, FAILED]
    assert not (root / LOCK_NAME).exists()


def test_the_lock_is_held_while_the_batch_runs_and_released_after_ctrl_c(archive):
    m = _manifest(archive, names=("good",))
    root = Path(m.output)
    seen = []

    def progress(event):
        if event.kind == "scan-start":
            seen.append(json.loads((root / LOCK_NAME).read_text()))
            raise KeyboardInterrupt  # Ctrl-C while the scan runs

    with pytest.raises(KeyboardInterrupt):
        run_batch(m, client=None, progress=progress)
    assert seen and seen[0]["pid"] == os.getpid() and seen[0]["what"] == "batch output root"
    assert not (root / LOCK_NAME).exists()


def test_a_stale_lock_of_a_dead_runner_is_taken_over_with_a_warning(archive, caplog):
    m = _manifest(archive, names=("good",))
    root = Path(m.output)
    root.mkdir()
    dead = _dead_pid()
    (root / LOCK_NAME).write_text(
        json.dumps(
            {
                "tomoflow_lock": 1,
                "host": socket.gethostname(),
                "pid": dead,
                "started": "2026-12-06T03:40:00+00:00",
                "command": "tomoflow batch run out.yaml",
                "token": "x",
            }
        )
    )
    with caplog.at_level(logging.WARNING, logger="tomoflow.io.lock"):
        result = run_batch(m, client=None)
    assert result.ok and not (root / LOCK_NAME).exists()
    assert [
        r.getMessage()
        for r in caplog.records
        if "taking over the stale lock" in r.getMessage() and f"PID {dead} " in r.getMessage()
    ], caplog.text


def test_two_runs_of_one_manifest_at_once_one_runs_one_is_refused(archive):
    """The reproduction: two ``run_batch`` of one manifest at the same moment (threads here, processes in
    the CLI test) no longer both compute everything with one failing on files the other replaced."""
    m = _manifest(archive, names=("good", "other"))
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def runner() -> None:
        barrier.wait()
        try:
            outcomes.append(run_batch(m, client=None))
        except StoreError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=runner) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results = [o for o in outcomes if not isinstance(o, Exception)]
    refused = [o for o in outcomes if isinstance(o, StoreError)]
    if len(results) == 2:  # the first finished before the second started: then it found everything complete
        assert all(r.ok for r in results)
    else:
        assert len(results) == 1 and len(refused) == 1 and results[0].ok, outcomes
        assert "is being written by PID" in str(refused[0])


# ----------------------------------------------------------------------------- one line per failure
def test_a_failed_scan_is_one_line_and_its_traceback_goes_to_a_log(archive):
    m = _manifest(archive)
    root = Path(m.output)
    result = run_batch(m, client=None)
    by = {s.name: s for s in result.scans}
    bad = by["broken"]
    assert bad.status == FAILED and "\n" not in bad.error and "truncated or corrupt" in bad.error, bad
    assert bad.log == f"{LOGS}/broken.log" and by["good"].log is None
    text = (root / bad.log).read_text()
    assert "scan broken: failed in stage ingest" in text and "Traceback (most recent call last)" in text
    doc = json.loads((root / REPORT_JSON).read_text())
    assert {s["name"]: s["log"] for s in doc["scans"]} == {"good": None, "broken": f"{LOGS}/broken.log"}
    assert "batch-logs/broken.log" in (root / "batch-report.html").read_text()
    # the scan is fixed: the next run completes it and drops its old log
    (archive / "raw" / "broken.h5").unlink()
    write_small_dxchange(archive / "raw" / "broken.h5", 5, angles_deg=ANGLES)
    again = run_batch(m, client=None)
    assert again.ok and not (root / LOGS / "broken.log").exists()


def test_huge_error_texts_are_cut_in_the_result_and_kept_whole_in_the_log(archive, monkeypatch):
    import tomoflow.batch.scans as rec  # where the runner calls reconstruct_scan

    def noisy(*args, **kwargs):
        raise RuntimeError("first line\n" + "x" * 100_000)

    monkeypatch.setattr(rec, "reconstruct_scan", noisy)
    m = _manifest(archive, names=("good",), retries=0)
    result = run_batch(m, client=None)
    err = result.scans[0].error
    assert len(err) <= 2000 and "\n" not in err and err.startswith("RuntimeError: first line; xxx"), err[:100]
    assert "x" * 100_000 in (Path(m.output) / result.scans[0].log).read_text()


# ----------------------------------------------------------------------------- a full disk
def _full_disk(monkeypatch) -> None:
    """Every block marker write fails as on a full disk (ENOSPC), in this process's tasks."""
    from tomoflow.io.stages import StageLog

    def full(self, step, units):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(StageLog, "mark_done", full)


def test_a_full_disk_is_said_in_words_not_blamed_on_a_worker(archive, monkeypatch, dask_client):
    from tomoflow.pipeline.reconstruct import reconstruct_scan

    m = _manifest(archive, names=("good",), retries=2)
    result = run_batch(m, client=None)  # ingest and recon complete
    assert result.ok
    scan = Path(m.output) / "good" / "scan.zarr"
    _full_disk(monkeypatch)
    for client in (None, dask_client):  # blocks in this process, and tasks on a (threaded) cluster
        out = archive / f"vol-{'cluster' if client else 'local'}.zarr"
        with pytest.raises(StoreError) as info:
            reconstruct_scan(scan, out, client=client)
        text = str(info.value)
        assert f"no space left on {os.path.abspath(out)}" in text and "worker died" not in text, text
        assert "\n" not in text and not isinstance(info.value, PipelineError)
    # in a batch: failed at once (a retry would meet the same full disk), one line
    m2 = _manifest(archive, names=("other",), output="out2", retries=2)
    res = run_batch(m2, client=None).scans[0]
    assert res.status == FAILED and res.attempts == 1 and res.failed_stage == "recon", res
    assert "no space left on" in res.error and "worker died" not in res.error, res.error


def _no_room_for_reports(monkeypatch) -> None:
    """The batch report's files cannot be written: the disk is full (ENOSPC), as the file policy reports it
    (a StoreError raised while handling the OSError)."""
    import tomoflow.batch.runner as runner

    def full(result, manifest, report_dir, **kwargs):
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(Path(report_dir) / REPORT_JSON))
        except OSError as exc:
            raise StoreError(f"{Path(report_dir) / REPORT_JSON}: cannot write ({exc.strerror})") from None

    monkeypatch.setattr(runner, "write_report", full)


def _no_room_for_the_performance_report(monkeypatch) -> None:
    """Dask writes its performance report into /dev/full (a real ENOSPC)."""
    from tomoflow.batch.report import DaskPerformanceReport

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    enter = DaskPerformanceReport.__enter__

    def full_enter(self):
        out = enter(self)
        if getattr(self, "tmp", None) is not None:
            Path(self.tmp).symlink_to("/dev/full")
        return out

    monkeypatch.setattr(DaskPerformanceReport, "__enter__", full_enter)


def test_a_report_that_cannot_be_written_says_why_and_never_fails_the_batch(archive, caplog, dask_client, monkeypatch):
    """The report files and Dask's performance report on a full disk: the scans still complete, the result
    says why there is no report, one warning line each, no traceback, no temporary file left behind."""
    m = _manifest(archive, names=("good",))
    root = Path(m.output)
    _no_room_for_reports(monkeypatch)
    _no_room_for_the_performance_report(monkeypatch)
    with caplog.at_level(logging.WARNING):
        result = run_batch(m, client=dask_client)
    assert result.ok and result.report_json is None and result.report_html is None
    assert result.report_error == f"no space left on {root}", result.report_error
    assert result.performance_report is None and result.performance_error.startswith("no space left on"), result
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("tomoflow")]
    assert len([r for r in warnings if "batch report" in r.getMessage()]) == 1, caplog.text
    assert len([r for r in warnings if "performance report" in r.getMessage()]) == 1, caplog.text
    assert not any(r.exc_info for r in warnings) and "Traceback" not in caplog.text
    assert not [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.is_symlink()]
    assert not (root / REPORT_JSON).exists() and not (root / PERFORMANCE_REPORT).exists()


# ----------------------------------------------------------------------------- huge messages
@pytest.mark.slow
def test_twenty_thousand_missing_inputs_make_a_short_message(tmp_path):
    lines = ["version: 1", "output: out", "cluster: none", "pipeline: [ingest, recon]", "scans:"]
    lines += [f"  - {{name: s{i}, path: raw/missing-scan-file-number-{i:05d}.h5}}" for i in range(20_000)]
    path = tmp_path / "m.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as info:
        load_manifest(path)
    text = str(info.value)
    assert len(text) < 2000 and "\n" not in text, len(text)
    assert "20,000 input(s) of the manifest missing" in text and "and 19,990 more" in text
    assert "missing-scan-file-number-00000.h5" in text and "missing-scan-file-number-19999.h5" not in text
    m = load_manifest(path, check_files=False)
    with pytest.raises(InputError) as info:
        preflight(m)
    assert len(str(info.value)) < 2000 and "and 19,990 more" in str(info.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_twenty_thousand_invalid_scans_make_a_short_message(tmp_path):
    from tomoflow.errors import ConfigError

    lines = ["version: 1", "output: out", "pipeline: [ingest]", "scans:"]
    lines += [f"  - {{name: ../bad-{i}, path: raw/a.h5}}" for i in range(20_000)]
    path = tmp_path / "m.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as info:
        load_manifest(path, check_files=False)
    text = str(info.value)
    assert len(text) < 5000 and "scans[0].name" in text and "and 19,990 more problem(s)" in text, text[-300:]


def test_a_locked_output_is_retried_other_store_errors_are_not():
    """A lock held by another process may end (a worker whose SLURM job was cancelled still exiting):
    the scan is retried after a pause; a store that is wrong stays wrong and is not retried."""
    from tomoflow.batch.failures import is_deterministic
    from tomoflow.errors import OutputLockedError, StoreError

    assert is_deterministic(OutputLockedError("out.zarr is being written by PID 1 on host h")) is False
    assert is_deterministic(StoreError("out.zarr is not a tomoflow store")) is True
    try:
        try:
            raise OutputLockedError("scan.zarr is being written by PID 1 on host h")
        except OutputLockedError as inner:
            raise StoreError("cannot write scan.zarr") from inner  # a store error caused by the lock
    except StoreError as outer:
        assert is_deterministic(outer) is False
