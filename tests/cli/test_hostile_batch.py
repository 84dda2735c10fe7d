"""``tomoflow batch run`` (and the single-scan commands) when things go wrong, as a user meets them: two
runs of one manifest at once, a lock left by a dead run or held on another host, scans that fail on a
cluster, a full disk, a manifest of 20,000 missing files, a rerun with nothing to do. Each refusal is
exit code 2 and one line; each failed scan one line pointing at its traceback; no traceback and no Dask
"Compute Failed" dump on the console; inputs byte-identical; nothing left behind."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tomoflow.io.lock import LOCK_NAME

ANGLES = np.linspace(0, 180, 32, endpoint=False)


def _archive(folder: Path, good=("a", "b"), nan=()) -> Path:
    """raw/<name>.h5 small DXchange scans; the ``nan`` ones half NaN (they ingest, recon refuses them)."""
    from tomoflow.testing import small_scan_counts, write_small_dxchange

    raw = folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(good + nan):
        counts = small_scan_counts(i, ANGLES, 16, 32)
        if name in nan:
            counts[:, :8] = np.nan
        write_small_dxchange(raw / f"{name}.h5", angles_deg=ANGLES, counts=counts)
    return raw


def _manifest(
    folder: Path, names, *, cluster: str = "none", output: str = "out", slow: int = 0, retries: int = 0
) -> Path:
    from tomoflow.testing import write_manifest_yaml

    extra = f", overrides: {{recon: {{algorithm: sirt, iterations: {slow}}}}}" if slow else ""
    scans = [f"name: {n}, path: raw/{n}.h5, pixel_size_um: 0.5{extra}" for n in names]
    return write_manifest_yaml(
        folder / f"{output}.yaml", output, scans, pipeline="[ingest, recon]", cluster=cluster, retries=retries
    )


def _sums(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _lock_doc(**fields) -> str:
    doc = {
        "tomoflow_lock": 1,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": "2026-12-06T03:40:00+00:00",
        "command": "tomoflow batch run out.yaml",
        "token": "t",
        **fields,
    }
    return json.dumps(doc)


# ----------------------------------------------------------------------------- one runner per output root
@pytest.mark.slow
def test_two_batch_runs_of_one_manifest_at_once(tmp_path, cli_process, one_line_error):
    """The reproduction: a second ``tomoflow batch run`` of a manifest that is running is refused at
    once, in one line naming the first run (PID, host, since, command), writing nothing; the first
    completes undisturbed."""
    raw = _archive(tmp_path, good=("a", "b", "c"))
    m = _manifest(tmp_path, ("a", "b", "c"), slow=3000)
    inputs = _sums(raw)
    env = {**os.environ, "COLUMNS": "100"}
    first = subprocess.Popen(
        [sys.executable, "-m", "tomoflow.cli", "batch", "run", str(m)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lock = tmp_path / "out" / LOCK_NAME
    try:
        deadline = time.monotonic() + 120
        while not lock.exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first run never took its lock"
            time.sleep(0.05)
        second = cli_process("batch", "run", m, cwd=tmp_path)
        running = first.poll() is None
    finally:
        out, err = first.communicate(timeout=600)
    assert running, "the first run ended before the second was refused: make its scans slower"
    line = one_line_error(
        second,
        f"{tmp_path / 'out'} is being written by PID {first.pid} on host {socket.gethostname()} since ",
        "wait for it or stop it",
    )
    assert "tomoflow batch run" in line and str(m.name) in line, line
    assert second.stdout == "", second
    assert first.returncode == 0, out + err
    assert "3 complete, 0 already complete (skipped), 0 failed" in " ".join(out.split()), out
    assert not lock.exists() and _sums(raw) == inputs


@pytest.mark.slow
def test_a_lock_left_by_a_dead_run_is_taken_over(tmp_path, cli_process):
    raw = _archive(tmp_path, good=("a",))
    m = _manifest(tmp_path, ("a",))
    (tmp_path / "out").mkdir()
    dead = _dead_pid()
    (tmp_path / "out" / LOCK_NAME).write_text(_lock_doc(pid=dead))
    ran = cli_process("batch", "run", m, cwd=tmp_path)
    assert ran.code == 0, ran
    assert f"taking over the stale lock {tmp_path / 'out' / LOCK_NAME} of PID {dead} on host" in ran.stderr, ran
    assert "Traceback" not in ran.output and not (tmp_path / "out" / LOCK_NAME).exists()
    assert raw.is_dir()


def test_a_lock_held_on_another_host_is_refused_and_left_alone(tmp_path, cli, one_line_error, unchanged):
    _archive(tmp_path, good=("a",))
    m = _manifest(tmp_path, ("a",))
    (tmp_path / "out").mkdir()
    lock = tmp_path / "out" / LOCK_NAME
    lock.write_text(_lock_doc(host="node-17.cluster", pid=4242))
    before = _sums(tmp_path)
    with unchanged(tmp_path):
        line = one_line_error(
            cli("batch", "run", m),
            "is being written by PID 4242 on host node-17.cluster",
            f"once it has stopped, delete {lock}",
        )
    assert "since 2026-12-06 03:40 UTC (tomoflow batch run out.yaml)" in line
    assert _sums(tmp_path) == before


def test_a_single_scan_command_refuses_a_store_a_batch_is_writing(tmp_path, cli, one_line_error, unchanged):
    _archive(tmp_path, good=("a",))
    assert cli("batch", "run", _manifest(tmp_path, ("a",))).code == 0
    scan = tmp_path / "out" / "a" / "scan.zarr"
    vol = tmp_path / "vol.zarr"
    (tmp_path / "vol.zarr.lock").write_text(_lock_doc(command="tomoflow batch run other.yaml"))
    with unchanged(tmp_path):
        one_line_error(
            cli("recon", scan, "--out", vol, "--cluster", "none"),
            f"{vol} is being written by PID {os.getpid()}",
            "(tomoflow batch run other.yaml)",
        )


# ----------------------------------------------------------------------------- one line per failure
@pytest.mark.slow
def test_failed_scans_on_a_cluster_are_one_line_each_with_their_traceback_in_a_log(tmp_path, cli_process):
    _archive(tmp_path, good=("good",), nan=("half-nan",))
    m = _manifest(tmp_path, ("good", "half-nan"), cluster="local")
    ran = cli_process("batch", "run", m, "--workers", "1", cwd=tmp_path)
    assert ran.code == 1, ran
    assert "Compute Failed" not in ran.output and "Traceback" not in ran.output, ran
    assert "worker died" not in ran.output and "None and None" not in ran.output, ran
    assert ran.stderr.splitlines() == [
        f"error: 1 of 2 scan(s) failed (half-nan); see {tmp_path / 'out' / 'batch-report.html'}"
    ], ran
    log = tmp_path / "out" / "batch-logs" / "half-nan.log"
    failures = [line for line in ran.stdout.splitlines() if line.startswith("failed ")]
    assert len(failures) == 1 and failures[0].startswith("failed half-nan ["), ran  # ingest or recon refuses it
    assert "NaN" in failures[0], failures
    assert failures[0].endswith(f"(traceback: {log})"), failures
    assert "Traceback (most recent call last)" in log.read_text()


# ----------------------------------------------------------------------------- a full disk
def _full_disk_blocks(monkeypatch) -> None:
    from tomoflow.io.stages import StageLog

    def full(self, step, units):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(StageLog, "mark_done", full)


def _full_disk_report(monkeypatch) -> None:
    """The batch report cannot be written: no space left (ENOSPC)."""
    import tomoflow.batch.runner as runner

    def full(result, manifest, report_dir, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(Path(report_dir) / "batch-report.json"))

    monkeypatch.setattr(runner, "write_report", full)


def test_a_batch_on_a_full_disk_says_so_in_one_line_per_scan(tmp_path, cli, monkeypatch):
    raw = _archive(tmp_path, good=("a", "b"))
    inputs = _sums(raw)
    m = _manifest(tmp_path, ("a", "b"), retries=2)
    _full_disk_blocks(monkeypatch)
    _full_disk_report(monkeypatch)
    ran = cli("batch", "run", m)
    assert ran.code == 1, ran
    text = ran.output
    for bad in ("None and None", "worker died", "out of memory", "Traceback", "report: None"):
        assert bad not in text, (bad, ran)
    assert len(ran.stderr.splitlines()) == 1 and ran.stderr.startswith(
        "error: 2 of 2 scan(s) failed (a and b); "
        "the batch report could not be written: "
        f"no space left on {tmp_path / 'out'}"
    ), ran
    failures = [line for line in ran.stdout.splitlines() if line.startswith("failed ")]
    assert len(failures) == 2 and all("[recon]: " in f and "no space left on" in f for f in failures), ran
    assert f"the batch report could not be written (no space left on {tmp_path / 'out'})" in ran.stdout, ran
    assert _sums(raw) == inputs
    assert not list((tmp_path / "out").rglob("*.tmp"))


def test_every_scan_complete_but_no_room_for_the_report_is_exit_2(tmp_path, cli, one_line_error, monkeypatch):
    raw = _archive(tmp_path, good=("a",))
    inputs = _sums(raw)
    m = _manifest(tmp_path, ("a",))
    _full_disk_report(monkeypatch)
    ran = cli("batch", "run", m)
    one_line_error(
        ran, "every scan is complete, but the batch report could not be written", f"no space left on {tmp_path / 'out'}"
    )
    assert "1 complete" in ran.stdout and "None" not in ran.stdout, ran
    assert _sums(raw) == inputs


# ----------------------------------------------------------------------------- huge messages
@pytest.mark.slow
def test_a_manifest_of_20000_missing_files_is_one_short_line(tmp_path, cli, one_line_error, unchanged):
    lines = ["version: 1", "output: out", "cluster: none", "pipeline: [ingest, recon]", "scans:"]
    lines += [f"  - {{name: s{i}, path: raw/missing-{i:05d}.h5}}" for i in range(20_000)]
    m = tmp_path / "big.yaml"
    m.write_text("\n".join(lines) + "\n")
    with unchanged(tmp_path):
        for command in ("check", "run"):
            line = one_line_error(
                cli("batch", command, m),
                "20,000 input(s) of the manifest missing",
                "missing-00000.h5",
                "and 19,990 more",
            )
            assert len(line) < 2000, len(line)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- a rerun with nothing to do
def test_a_rerun_that_writes_nothing_says_the_output_was_complete(tmp_path, cli):
    """``recon``, ``resample`` and ``recover`` run again on a complete output: no "wrote ... in 0.1 s (1 of
    1 blocks computed)", but that the output was already complete, nothing written."""
    import torch

    from tomoflow.recover import build_unet
    from tomoflow.recover.unet import UNetConfig
    from tomoflow.train.files import save_unet

    _archive(tmp_path, good=("a",))
    assert cli("batch", "run", _manifest(tmp_path, ("a",))).code == 0
    scan = tmp_path / "out" / "a" / "scan.zarr"
    vol, res, rec = tmp_path / "vol.zarr", tmp_path / "res.zarr", tmp_path / "rec.zarr"
    torch.manual_seed(1)
    cfg = UNetConfig(channels=(4, 8))
    weights = tmp_path / "unet.safetensors"
    save_unet(build_unet(config=cfg), cfg, weights, card={"name": "test"})
    commands = {
        vol: ("recon", scan, "--out", vol, "--cluster", "none"),
        res: ("resample", vol, "--out", res, "--voxel", "1.0", "--cluster", "none"),
        rec: ("recover", vol, "--model", weights, "--out", rec, "--cluster", "none"),
    }
    for out, args in commands.items():
        first = cli(*args)
        assert first.code == 0 and f"wrote {out}" in " ".join(first.stdout.split()), first
        mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
        again = cli(*args)
        text = " ".join(again.stdout.split())
        assert again.code == 0 and "wrote" not in text and "blocks computed" not in text, again
        assert f"{out} was already complete for these inputs and parameters: nothing written" in text, again
        assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == mtimes
