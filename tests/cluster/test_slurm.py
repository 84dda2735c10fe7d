"""The HPC path for real: tomoflow on workers that are SLURM batch jobs.

Needs a SLURM that answers ``sinfo``: ``make test`` brings up a one-node one on this machine with
``scripts/start-slurm`` (as root on Debian/Ubuntu, about 30 s; ``NO_SLURM=1`` leaves it out). Where none
answers, every test here is skipped with the reason that script logged. Select them with ``-m slurm``.

As on a login node, the Dask scheduler runs in the ``tomoflow`` process and each worker is an ``sbatch``
job (here on localhost: ``interface: lo``), talking TLS with temporary credentials (the default). The
tests run ``tomoflow recon`` and a 6-scan ``tomoflow batch run`` on such workers, ``scancel`` one worker
job in the middle of a batch, and check that the batch still completes with outputs identical to a run
without a cluster; with ``adapt`` in the settings the lost job is replaced by a new one.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slurm

#: Where scripts/start-slurm logs what it did (its last "start-slurm:" line is the skip reason).
START_LOG = Path(os.environ.get("TOMOFLOW_SLURM_LOG", "/tmp/tomoflow-start-slurm.log"))
SCANS = tuple(f"scan-{i}" for i in range(6))
WILDCARDS = ("0.0.0.0", "::")


def _sinfo_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=15).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return any(state.strip().rstrip("*~#") in ("idle", "mixed", "allocated", "completing") for state in out.split())


def _why_no_slurm() -> str | None:
    """``None`` when tomoflow can run on SLURM here, else why not (one line)."""
    if importlib.util.find_spec("dask_jobqueue") is None:
        return "dask-jobqueue is not installed (pip install 'tomoflow[hpc]')"
    if importlib.util.find_spec("cryptography") is None:
        return "cryptography is not installed (pip install 'tomoflow[hpc]'): no TLS credentials"
    if _sinfo_answers():
        return None
    said = ""
    if START_LOG.is_file():
        lines = [ln for ln in START_LOG.read_text(errors="replace").splitlines() if ln.startswith("start-slurm:")]
        said = lines[-1] if lines else ""
    return (
        f"no SLURM answers `sinfo` here ({said or f'no log of scripts/start-slurm at {START_LOG}'}); "
        "`make test` starts one with scripts/start-slurm (as root on Debian/Ubuntu)"
    )


@pytest.fixture(scope="module")
def slurm() -> None:
    """Skip (with the reason) unless a SLURM answers."""
    why = _why_no_slurm()
    if why:
        pytest.skip(why)


def _jobs(name: str) -> dict[str, str]:
    """``{job id: state}`` of the SLURM jobs called ``name``."""
    out = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i %T"], capture_output=True, text=True, timeout=30)
    return dict(line.split(None, 1) for line in out.stdout.splitlines() if line.strip())


@pytest.fixture
def site(slurm, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A site settings file (one-core worker jobs on localhost, TLS by default) and its unique job name.
    Jobs of that name still queued at the end are cancelled."""
    name = f"tomoflow-test-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "site.yaml"
    path.write_text(
        "kind: slurm\n"
        "cores: 1\nmemory: 2GB\nprocesses: 1\nwalltime: '00:15:00'\n"
        f"job_name: {name}\n"
        "interface: lo\n"
        f"log_directory: {tmp_path / 'worker-logs'}\n"
        f"shared_temp_directory: {tmp_path / 'tls'}\n"
        "death_timeout: 30\n"
        "jobs: 2\n"
    )
    try:
        yield path, name
    finally:
        subprocess.run(["scancel", "-n", name], capture_output=True, timeout=30)


def _with(site_file: Path, **settings: object) -> Path:
    """A copy of the site file with some settings replaced (YAML text per key)."""
    lines = [ln for ln in site_file.read_text().splitlines() if ln.split(":", 1)[0] not in settings]
    text = "\n".join(lines + [f"{k}: {v}" for k, v in settings.items()]) + "\n"
    out = site_file.with_name(f"site-{uuid.uuid4().hex[:6]}.yaml")
    out.write_text(text)
    return out


def _env() -> dict[str, str]:
    # a lost worker job is noticed (and, with adapt, replaced) after 3 s instead of 15 s
    return {**os.environ, "COLUMNS": "100", "DASK_DISTRIBUTED__DEPLOY__LOST_WORKER_TIMEOUT": "3s"}


def _tomoflow(*args: object, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    ran = subprocess.run(
        [sys.executable, "-m", "tomoflow.cli", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
    )
    command = " ".join(map(str, args))
    assert ran.returncode == 0, f"tomoflow {command}: exit {ran.returncode}\n{ran.stdout}\n{ran.stderr}"
    return ran


def _worker_logs(site_file: Path) -> str:
    folder = site_file.parent / "worker-logs"
    return "\n".join(p.read_text(errors="replace") for p in sorted(folder.glob("*.err")))


def _store_checksums(store: Path) -> dict[str, str]:
    from tomoflow.testing import store_checksums

    return store_checksums(store)


def _checksums(root: Path) -> dict[str, dict[str, str]]:
    return {f"{n}/{s.name}": _store_checksums(s) for n in SCANS for s in sorted((root / n).glob("*.zarr"))}


def _complete_volumes(root: Path) -> int:
    from tomoflow.io import VolumeStore

    done = 0
    for name in SCANS:
        try:
            done += bool(VolumeStore.open(root / name / "volume.zarr").is_complete())
        except Exception:  # noqa: BLE001 - absent or being written
            pass
    return done


# --------------------------------------------------------------------------------------------------
# one reconstruction; what listens where
# --------------------------------------------------------------------------------------------------


def test_recon_on_slurm_workers_matches_a_local_run(site, tmp_path: Path) -> None:
    from tomoflow.io import open_volume

    site_file, name = site
    _tomoflow("simulate", "scan.zarr", "--size", 32, "--rows", 8, "--angles", 64, cwd=tmp_path)
    _tomoflow("recon", "scan.zarr", "-o", "local.zarr", "--cluster", "none", cwd=tmp_path)
    t0 = time.perf_counter()
    ran = _tomoflow("recon", "scan.zarr", "-o", "slurm.zarr", "--cluster", _with(site_file, jobs=1), cwd=tmp_path)
    seconds = time.perf_counter() - t0
    assert "Dask dashboard: http://127.0.0.1:" in ran.stdout, ran.stdout
    local = open_volume(tmp_path / "local.zarr").values
    on_slurm = open_volume(tmp_path / "slurm.zarr").values
    assert local.shape == (8, 32, 32)
    np.testing.assert_array_equal(on_slurm, local)
    # the work ran in a SLURM job whose worker talked TLS to the scheduler on loopback
    logs = _worker_logs(site_file)
    assert "Registered to:" in logs and "tls://127.0.0.1:" in logs, logs[-2000:]
    assert seconds < 240


def test_slurm_workers_talk_tls_and_listen_on_one_address(site) -> None:
    import psutil
    from distributed import Client
    from distributed.security import Security

    import tomoflow.cluster as tc

    site_file, name = site
    with tc.connect(_with(site_file, jobs=1)) as client:
        client.wait_for_workers(1, timeout=120)
        assert client.scheduler.address.startswith("tls://127.0.0.1:")
        (worker,) = client.scheduler_info()["workers"]
        assert worker.startswith("tls://127.0.0.1:")
        assert client.submit(sum, [1, 2, 3]).result(timeout=60) == 6
        (job,) = _jobs(name)
        # every listener of the worker job and of this process (scheduler, dashboard) is on one address
        procs = [psutil.Process()]
        for p in psutil.process_iter(["name"]):
            if p.info["name"] == "slurmstepd":
                procs += p.children(recursive=True)
        listening = set()
        for p in procs:
            try:
                listening |= {
                    (c.laddr.ip, c.laddr.port, p.pid)
                    for c in p.net_connections(kind="inet")
                    if c.status == psutil.CONN_LISTEN
                }
            except psutil.Error:
                continue
        assert len(listening) >= 5, listening  # scheduler, dashboard; nanny, worker, worker diagnostics
        assert not [item for item in listening if item[0] in WILDCARDS], listening
        # a client without the cluster's credentials is turned away
        with pytest.raises((OSError, TimeoutError, TypeError, ValueError)):
            Client(client.scheduler.address, security=Security.temporary(), timeout=5)
        with pytest.raises((OSError, TimeoutError, TypeError, ValueError)):
            Client(client.scheduler.address.replace("tls://", "tcp://"), timeout=5)
    assert job


# --------------------------------------------------------------------------------------------------
# a batch that loses a worker job
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def archive(slurm, tmp_path_factory) -> Path:
    """Six small DXchange scans and the outputs of a run without a cluster (``reference/``)."""
    from tomoflow.testing import write_manifest_yaml, write_small_dxchange

    root = tmp_path_factory.mktemp("slurm-batch")
    (root / "raw").mkdir()
    angles = np.linspace(0, 180, 48, endpoint=False)
    for i, name in enumerate(SCANS):
        write_small_dxchange(root / "raw" / f"{name}.h5", i, angles_deg=angles, rows=16, cols=32)
    entries = [f"name: {n}, path: raw/{n}.h5, pixel_size_um: 0.5" for n in SCANS]
    for output in ("reference", "jobs", "adapt"):
        write_manifest_yaml(root / f"{output}.yaml", output, entries)
    _tomoflow("batch", "run", "reference.yaml", "--cluster", "none", cwd=root)
    return root


def _run_and_cancel_one_job(
    root: Path, manifest: str, site_file: Path, name: str, *extra: object, wait_for_new_job: bool = False
) -> tuple[subprocess.CompletedProcess, dict]:
    """Run the batch on SLURM; once both worker jobs run and a scan is complete, ``scancel`` one of them.
    Returns the finished run and what was seen: the job cancelled, the jobs seen, complete scans then."""
    cmd = [
        sys.executable,
        "-m",
        "tomoflow.cli",
        "batch",
        "run",
        manifest,
        "--cluster",
        str(site_file),
        *map(str, extra),
    ]
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    seen: dict = {"jobs": set(), "cancelled": None, "done_then": None, "new_job": None}
    deadline = time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            jobs = _jobs(name)
            seen["jobs"] |= set(jobs)
            if seen["cancelled"] is None:
                running = sorted(j for j, state in jobs.items() if state == "RUNNING")
                done = _complete_volumes(root / manifest.removesuffix(".yaml"))
                if len(running) == 2 and done >= 1:
                    seen["cancelled"], seen["done_then"] = running[0], done
                    subprocess.run(["scancel", running[0]], check=True, timeout=30)
                    seen["before"] = set(seen["jobs"])
                    if not wait_for_new_job:
                        break
            elif seen["new_job"] is None and set(jobs) - seen["before"]:
                seen["new_job"] = sorted(set(jobs) - seen["before"])[0]
                break
            time.sleep(0.2)
        stdout, stderr = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr), seen


def _assert_batch_complete_and_identical(root: Path, output: str, ran: subprocess.CompletedProcess) -> None:
    assert ran.returncode == 0, f"exit {ran.returncode}\n{ran.stdout}\n{ran.stderr}"
    text = " ".join(ran.stdout.split())
    assert "6 complete" in text and "0 failed" in text, ran.stdout
    reference, got = _checksums(root / "reference"), _checksums(root / output)
    assert len(reference) == 3 * len(SCANS)  # scan, aligned and volume store of each
    assert got == reference


def test_batch_on_slurm_survives_a_cancelled_worker_job(site, archive: Path) -> None:
    """Two worker jobs; one is cancelled mid-batch: the batch finishes on the job left, outputs identical."""
    site_file, name = site
    ran, seen = _run_and_cancel_one_job(archive, "jobs.yaml", site_file, name)
    assert seen["cancelled"] is not None, f"the batch ended before both jobs ran ({seen})\n{ran.stdout}\n{ran.stderr}"
    assert seen["done_then"] < len(SCANS), seen  # cancelled mid-batch
    _assert_batch_complete_and_identical(archive, "jobs", ran)
    assert "tls://127.0.0.1:" in _worker_logs(site_file)


def test_batch_with_adapt_replaces_the_cancelled_job(site, archive: Path) -> None:
    """``adapt: {minimum_jobs: 2, maximum_jobs: 2}``: a cancelled worker job is replaced by a new one,
    and the batch then runs on the renewed pool with outputs identical to a local run.

    The cluster is started here (not by a ``batch run`` process) so that the replacement is waited for
    however fast the batch would have finished on the job left."""
    import dask

    from tomoflow.batch import load_manifest, run_batch
    from tomoflow.cluster import connect

    site_file, name = site
    adaptive = _with(site_file, adapt="{minimum_jobs: 2, maximum_jobs: 2}")
    with dask.config.set({"distributed.deploy.lost-worker-timeout": "3s"}), connect(str(adaptive)) as client:
        deadline = time.monotonic() + 180
        running: list[str] = []
        while time.monotonic() < deadline and len(running) < 2:
            running = sorted(j for j, state in _jobs(name).items() if state == "RUNNING")
            time.sleep(0.5)
        assert len(running) == 2, f"two worker jobs never ran ({_jobs(name)})"
        client.wait_for_workers(2, timeout=120)
        subprocess.run(["scancel", running[0]], check=True, timeout=30)
        new_job = None
        while time.monotonic() < deadline and new_job is None:
            fresh = set(_jobs(name)) - set(running)
            new_job = min(fresh) if fresh else None
            time.sleep(0.5)
        assert new_job is not None, f"no job replaced {running[0]} ({_jobs(name)})"
        manifest = load_manifest(archive / "adapt.yaml")
        result = run_batch(manifest, client=client)
    assert result.ok, [(r.name, r.error) for r in result.scans]
    assert _checksums(archive / "adapt") == _checksums(archive / "reference")


def test_jobs_that_never_start_end_in_one_line_not_a_hang(site, tmp_path: Path) -> None:
    """A worker job asking for more than any node has stays queued: the command says it waits, then fails
    with one line after TOMOFLOW_WORKER_WAIT_S, writing nothing."""
    site_file, name = site
    greedy = _with(site_file, cores=64, memory="500GB")
    _tomoflow("simulate", "scan.zarr", "--size", 32, "--rows", 4, "--angles", 24, cwd=tmp_path)
    t0 = time.monotonic()
    ran = subprocess.run(
        [sys.executable, "-m", "tomoflow.cli", "recon", "scan.zarr", "-o", "v.zarr", "--cluster", str(greedy)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**_env(), "TOMOFLOW_WORKER_WAIT_S": "8"},
    )
    assert time.monotonic() - t0 < 120
    assert ran.returncode == 2, ran
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no worker job") and "Traceback" not in ran.stderr, ran
    assert not (tmp_path / "v.zarr").exists()
