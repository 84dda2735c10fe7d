"""One runner per output (tomoflow/io/lock.py): a second writer is refused with who holds the lock, a
stale lock (dead PID on this host) is taken over with a warning, a lock from another host never is,
and the lock goes away on success, errors and Ctrl-C. The stage functions (ingest, recon, align,
resample) take the lock of their store only when there is something to write."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tomoflow.errors import StoreError
from tomoflow.io.lock import (
    LOCK_NAME,
    check_unlocked,
    claim_output,
    lock_file,
    output_lock,
    output_lock_scope,
    recorded_plans,
    writes_outputs,
)


def _dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _write_lock(lock: Path, **fields) -> None:
    doc = {
        "tomoflow_lock": 1,
        "what": "output",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_start": None,
        "started": "2026-12-06T03:40:12+00:00",
        "command": "tomoflow batch run m.yaml",
        "token": "someone-else",
        **fields,
    }
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(json.dumps(doc))


def test_lock_files_live_inside_a_root_and_beside_a_store(tmp_path):
    tmp_path = Path(os.path.realpath(tmp_path))
    assert lock_file(tmp_path / "out", root=True) == tmp_path / "out" / LOCK_NAME
    assert lock_file(tmp_path / "a" / "volume.zarr") == tmp_path / "a" / "volume.zarr.lock"


def test_held_then_released_on_success_error_and_ctrl_c(tmp_path):
    out = tmp_path / "vol.zarr"
    with output_lock(out, what="recon output", command="tomoflow recon s.zarr -o vol.zarr") as lock:
        doc = json.loads(lock.read_text())
        assert doc["pid"] == os.getpid() and doc["host"] == socket.gethostname() and doc["what"] == "recon output"
        assert doc["command"] == "tomoflow recon s.zarr -o vol.zarr" and doc["started"].endswith("+00:00")
    assert not lock.exists() and sorted(os.listdir(tmp_path)) == []
    for exc in (ValueError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with output_lock(out):
                raise exc
        assert not lock.exists()


def test_a_second_runner_is_refused_with_who_holds_it(tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    with output_lock(root, root=True, command="tomoflow batch run m.yaml"):
        with pytest.raises(StoreError) as info:
            with output_lock(root, root=True):
                pass
        text = str(info.value)
        assert text.startswith(f"{root} is being written by PID {os.getpid()} on host {socket.gethostname()} since ")
        assert " UTC (tomoflow batch run m.yaml); wait for it or stop it" in text and "\n" not in text
        with pytest.raises(StoreError, match="is being written by PID"):
            check_unlocked(root, root=True)
        # another thread of this process is a second runner too
        errors: list[BaseException] = []

        def second() -> None:
            try:
                with output_lock(root, root=True):
                    pass
            except StoreError as exc:
                errors.append(exc)

        t = threading.Thread(target=second)
        t.start()
        t.join()
        assert len(errors) == 1 and "is being written by PID" in str(errors[0])
    assert check_unlocked(root, root=True) is None
    assert sorted(os.listdir(root)) == []


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path, caplog):
    out = tmp_path / "vol.zarr"
    lock = lock_file(out)
    dead = _dead_pid()
    _write_lock(lock, pid=dead)
    assert check_unlocked(out).pid == dead  # stale: reported, not refused, nothing written
    assert json.loads(lock.read_text())["pid"] == dead
    with caplog.at_level(logging.WARNING, logger="tomoflow.io.lock"):
        with output_lock(out):
            assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()
    assert any(f"taking over the stale lock {lock} of PID {dead} on host" in r.getMessage() for r in caplog.records)


def test_a_reused_pid_is_told_apart_by_its_start_time(tmp_path):
    out = tmp_path / "vol.zarr"
    if not Path(f"/proc/{os.getpid()}/stat").is_file():
        pytest.skip("no /proc: process start times unknown")
    _write_lock(lock_file(out), pid=os.getpid(), pid_start=1)  # our PID, but not our start time
    with output_lock(out):
        pass
    assert not lock_file(out).exists()


def test_a_lock_from_another_host_is_never_taken_over(tmp_path):
    out = tmp_path / "vol.zarr"
    lock = lock_file(out)
    _write_lock(lock, host="node-17.cluster", pid=_dead_pid())
    before = lock.read_bytes()
    for attempt in (lambda: output_lock(out).__enter__(), lambda: check_unlocked(out)):
        with pytest.raises(StoreError) as info:
            attempt()
        text = str(info.value)
        assert "is being written by PID" in text and "on host node-17.cluster" in text, text
        assert f"once it has stopped, delete {lock}" in text, text
    assert lock.read_bytes() == before


def test_a_file_that_is_not_a_lock_is_never_removed(tmp_path):
    out = tmp_path / "vol.zarr"
    lock = lock_file(out)
    lock.write_text("my notes")
    os.utime(lock, (1_000_000, 1_000_000))  # old: nobody is writing it right now
    with pytest.raises(StoreError, match="not a tomoflow lock file"):
        with output_lock(out):
            pass
    assert lock.read_text() == "my notes"


def test_missing_parent_folders_are_made_and_removed_again(tmp_path):
    out = tmp_path / "new" / "deeper" / "vol.zarr"
    with output_lock(out) as lock:
        assert lock.is_file()
    assert sorted(os.listdir(tmp_path)) == []


def test_an_unwritable_folder_is_a_one_line_store_error(tmp_path):
    if os.geteuid() == 0:
        folder = Path("/proc/1")  # root ignores permission bits; /proc refuses new files to everyone
    else:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
    try:
        with pytest.raises(StoreError) as info:
            with output_lock(folder / "vol.zarr"):
                pass
    finally:
        if folder != Path("/proc/1"):
            folder.chmod(0o755)
    assert "cannot create its lock file" in str(info.value) and "\n" not in str(info.value)


@dataclass(frozen=True)
class _Plan:
    action: str


def test_claim_plans_again_under_the_lock_and_keeps_it_for_the_scope(tmp_path):
    out = tmp_path / "vol.zarr"
    lock = lock_file(out)
    plans = iter(["create", "complete"])  # another runner finished the store before we got the lock
    with output_lock_scope(), recorded_plans() as seen:
        assert claim_output(lambda: _Plan(next(plans)), out).action == "complete"
        assert not lock.exists()  # released at once: nothing to write
        assert claim_output(lambda: _Plan("resume"), out).action == "resume"
        assert lock.is_file()
    assert not lock.exists()
    assert seen == [(out, "complete"), (out, "resume")]
    # a complete plan takes no lock at all, even while another run holds it
    with output_lock(out):
        with output_lock_scope():
            assert claim_output(lambda: _Plan("complete"), out).action == "complete"
            with pytest.raises(StoreError, match="is being written by PID"):
                claim_output(lambda: _Plan("create"), out)


def test_writes_outputs_releases_when_the_stage_raises(tmp_path):
    out = tmp_path / "vol.zarr"

    @writes_outputs
    def stage():
        claim_output(lambda: _Plan("create"), out)
        assert lock_file(out).is_file()
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        stage()
    assert not lock_file(out).exists()


# ----------------------------------------------------------------------------- the stages
@pytest.fixture
def small_scan(tmp_path):
    from tomoflow.io.scan_store import write_scan
    from tomoflow.testing import small_scan_counts

    angles = np.linspace(0, 180, 32, endpoint=False)
    counts = small_scan_counts(0, angles, 8, 32)
    store = tmp_path / "scan.zarr"
    write_scan(
        store,
        counts,
        angles,
        flats=np.full((2, 8, 32), float(counts.max()) * 1.1, np.float32),
        darks=np.zeros((1, 8, 32), np.float32),
        pixel_size_um=0.5,
    )
    return store, counts, angles


def test_every_stage_refuses_a_store_another_run_is_writing(small_scan, tmp_path):
    """ingest, recon, align and resample: refused with who writes the store, nothing created; the same
    stage then runs, and a complete store is returned without a lock (even while one is held)."""
    from tomoflow.io.scan_store import write_scan
    from tomoflow.pipeline.align import align_scan
    from tomoflow.pipeline.reconstruct import reconstruct_scan
    from tomoflow.pipeline.resample import resample_volume

    scan, counts, angles = small_scan
    vol = tmp_path / "vol.zarr"
    reconstruct_scan(scan, vol)
    runs = {
        "ingest": (tmp_path / "scan2.zarr", lambda out: write_scan(out, counts, angles, pixel_size_um=0.5)),
        "recon": (tmp_path / "vol2.zarr", lambda out: reconstruct_scan(scan, out)),
        "align": (tmp_path / "aligned.zarr", lambda out: align_scan(scan, out, method="phase")),
        "resample": (
            tmp_path / "res.zarr",
            lambda out: resample_volume(vol, out, matrix=np.eye(4), shape=(4, 16, 16), spacing_um=0.5),
        ),
    }
    for name, (out, run) in runs.items():
        before = sorted(os.listdir(tmp_path))
        with output_lock(out, command=f"tomoflow {name} (another run)"):
            with pytest.raises(StoreError) as info:
                run(out)
            assert f"{out} is being written by PID {os.getpid()}" in str(info.value), (name, info.value)
            assert f"(tomoflow {name} (another run))" in str(info.value)
            assert sorted(os.listdir(tmp_path)) == sorted(before + [out.name + ".lock"]), name
        run(out)  # free: runs, and leaves no lock behind
        assert not lock_file(out).exists(), name
        with output_lock(out):  # complete: nothing to write, no lock needed
            run(out)


def test_two_runs_of_one_stage_at_once_never_trip_over_each_other(small_scan, tmp_path):
    """The race of the issue: two runs planning the same new store at once used to both create it, one
    deleting the other's (``cannot write (No such file or directory)``). Now one writes and the other is
    refused with who writes, or finds the store complete; nothing else."""
    from tomoflow.pipeline.reconstruct import reconstruct_scan

    scan, _, _ = small_scan
    for i in range(3):
        out = tmp_path / f"race-{i}.zarr"
        barrier = threading.Barrier(2)
        outcomes: list[object] = []

        def run(barrier=barrier, outcomes=outcomes, out=out) -> None:
            barrier.wait()
            try:
                outcomes.append(reconstruct_scan(scan, out))
            except Exception as exc:  # noqa: BLE001 - collected and checked below
                outcomes.append(exc)

        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        errors = [o for o in outcomes if isinstance(o, Exception)]
        assert len(errors) <= 1, outcomes
        assert all(isinstance(e, StoreError) and "is being written by PID" in str(e) for e in errors), errors
        assert not lock_file(out).exists()
        from tomoflow.io import VolumeStore

        assert VolumeStore.open(out).is_complete()


def test_one_output_reached_through_a_link_shares_its_lock(tmp_path):
    real = tmp_path / "data"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with output_lock(real / "vol.zarr"):
        with pytest.raises(StoreError, match="is being written by PID"):
            with output_lock(tmp_path / "link" / "vol.zarr"):
                pass
