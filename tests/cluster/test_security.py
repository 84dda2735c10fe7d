"""Security between machines (tomoflow/cluster/start.py, _node.py) and worker counts checked against the machine.

SLURM / PBS clusters use TLS with temporary credentials unless the settings say ``security: false``; no
listener tomoflow starts binds to every interface unless the settings ask for it; a local cluster never
gets more workers than the machine can run. No batch job is submitted here (``jobs=0``): the real SLURM
run is tests/cluster/test_slurm.py.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from distributed import Client

import tomoflow.cluster as tc
from tomoflow.cluster import _node
from tomoflow.cluster import start as start_mod
from tomoflow.errors import ConfigError

requires_jobqueue = pytest.mark.skipif(
    importlib.util.find_spec("dask_jobqueue") is None, reason="requires dask_jobqueue (tomoflow[hpc])"
)
requires_tls = pytest.mark.skipif(
    importlib.util.find_spec("cryptography") is None,
    reason="requires cryptography (tomoflow[hpc]) for temporary TLS credentials",
)

WILDCARDS = ("0.0.0.0", "::", "")


def _listen_host(cluster) -> str:
    """The host the scheduler's listener is really bound to."""
    return str(cluster.scheduler.listener.get_host_port()[0])


def _listeners() -> set[tuple[str, int]]:
    """(host, port) of every TCP socket this process and its children listen on."""
    import psutil

    me = psutil.Process()
    found = set()
    for proc in (me, *me.children(recursive=True)):
        try:
            conns = proc.net_connections(kind="inet")
        except psutil.Error:
            continue
        found |= {(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}
    return found


# --------------------------------------------------------------------------------------------------
# worker counts
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, -1, 2.5, True, "4"])
def test_worker_count_must_be_a_positive_integer(n) -> None:
    with pytest.raises(ConfigError, match=r"^local cluster: n_workers \(--workers\) must be a positive integer"):
        tc.connect("local", n_workers=n, processes=False)


def test_too_many_workers_are_refused_before_anything_starts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(start_mod, "_cpu_count", lambda: 2)

    import distributed

    @functools.wraps(distributed.LocalCluster)  # keeps its signature: the settings are still checked
    def no_cluster(*args, **kwargs):
        raise AssertionError("a cluster was started")

    monkeypatch.setattr("distributed.LocalCluster", no_cluster)
    with pytest.raises(ConfigError) as err:
        tc.connect("local", n_workers=1000)
    message = str(err.value)
    assert "\n" not in message
    for word in ("1000", "n_workers (--workers)", "2 CPU cores", "at most 8", "4 per core"):
        assert word in message, message
    with pytest.raises(ConfigError, match="threads_per_worker"):
        tc.start_cluster("local", n_workers=1, threads_per_worker=9, processes=False)
    # from a settings file too
    (tmp_path / "local.yaml").write_text("kind: local\nn_workers: 9\n")
    with pytest.raises(ConfigError, match="9 asked for n_workers"):
        tc.connect("local", config_dir=tmp_path)
    # the cap itself is allowed (the check only; no cluster is started here)
    assert tc.check_worker_count(8) == 8
    with pytest.raises(ConfigError, match="--workers"):
        tc.check_worker_count(9, option="--workers")


def test_local_cuda_worker_count_is_checked_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # the count fails before dask-cuda is needed
    with pytest.raises(ConfigError, match="local-cuda cluster: n_workers"):
        tc.connect("local-cuda", n_workers=0)


@pytest.mark.slow
def test_cli_refuses_too_many_and_too_few_workers(tmp_path: Path) -> None:
    """``tomoflow recon ... --workers 1000`` once hung the machine: now one line, exit 2, nothing written."""
    scan = tmp_path / "scan.zarr"
    made = subprocess.run(
        [sys.executable, "-m", "tomoflow.cli", "simulate", str(scan), "--size", "16", "--rows", "2", "--angles", "8"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    cpus = start_mod._cpu_count()
    for workers, words in (
        (1000 * cpus, ("asked for n_workers (--workers)", f"{cpus} CPU core", "at most")),
        (0, ("must be a positive integer", "got 0")),
        (-1, ("got -1",)),
    ):
        out = tmp_path / f"v{workers}.zarr"
        ran = subprocess.run(
            [sys.executable, "-m", "tomoflow.cli", "recon", str(scan), "-o", str(out), "--workers", str(workers)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        lines = ran.stderr.strip().splitlines()
        assert ran.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), ran
        assert all(w in lines[0] for w in words), lines
        assert not out.exists()


# --------------------------------------------------------------------------------------------------
# what listens where
# --------------------------------------------------------------------------------------------------


def test_dashboard_addresses_default_to_loopback() -> None:
    free = start_mod._free_dashboard_address
    assert free(":0") == "127.0.0.1:0"
    assert free("0") == "127.0.0.1:0"
    assert free("0.0.0.0:0") == "0.0.0.0:0"  # asked for explicitly
    assert free("[::1]:0") == "[::1]:0"
    assert free("127.0.0.1") in ("127.0.0.1:8787", "127.0.0.1:0")  # 0: 8787 is busy
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert free(f":{port}") == "127.0.0.1:0"  # busy: a free one instead
    assert free(None) in ("127.0.0.1:8787", "127.0.0.1:0")


def test_local_cluster_listens_on_loopback_only() -> None:
    before = _listeners()
    with tc.connect("local", n_workers=1, processes=True, dashboard_address=":0") as client:
        assert client.cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        new = _listeners() - before
        # scheduler, its dashboard, the worker, its nanny and its diagnostics server
        assert len(new) >= 4 and {host for host, _ in new} == {"127.0.0.1"}, new


def test_node_address_helper() -> None:
    assert _node.route_address("127.0.0.1") == "127.0.0.1"
    assert _node.interface_address("lo") == "127.0.0.1"
    with pytest.raises(ValueError, match="no network interface 'nope0'"):
        _node.interface_address("nope0")
    ran = subprocess.run(
        [sys.executable, "-m", "tomoflow.cluster._node", "interface", "lo"], capture_output=True, text=True, timeout=60
    )
    assert ran.returncode == 0 and ran.stdout == "127.0.0.1\n", ran
    ran = subprocess.run(
        [sys.executable, "-m", "tomoflow.cluster._node", "interface", "nope0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 1 and ran.stderr.startswith("tomoflow: cannot find this node's address"), ran
    assert _node.main(["what"]) == 2


# --------------------------------------------------------------------------------------------------
# SLURM / PBS: TLS by default, listeners on one address (jobs=0: nothing is submitted)
# --------------------------------------------------------------------------------------------------


@requires_jobqueue
@requires_tls
@pytest.mark.parametrize("kind", ["slurm", "pbs"])
def test_jobqueue_clusters_use_tls_by_default(kind: str, cluster_dir: Path, tmp_path: Path) -> None:
    before = _listeners()
    cluster = tc.start_cluster(kind, jobs=0, config_dir=cluster_dir, shared_temp_directory=str(tmp_path))
    try:
        assert cluster.scheduler_address.startswith("tls://"), cluster.scheduler_address
        assert cluster.security.require_encryption
        script = cluster.job_script()
        for word in ("--protocol tls://", "--tls-ca-file", "--tls-cert", "--tls-key"):
            assert word in script, script
        # the workers' credentials: made for this cluster, in a folder of shared_temp_directory (where the
        # nodes see them), readable by their owner only
        (private,) = tmp_path.glob("tomoflow-cluster-*")
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
        files = sorted(private.iterdir())
        assert [f.name for f in files] == ["ca.pem", "worker.key", "worker.pem"]
        for f in files:
            assert str(f) in script
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        assert "PRIVATE KEY" in (private / "worker.key").read_text()
        assert "PRIVATE KEY" not in script
        # nothing listens on every interface: the scheduler is on this machine's network address
        host = _listen_host(cluster)
        assert host not in WILDCARDS
        assert cluster.scheduler_address.startswith(f"tls://{host}:")
        # and every worker on the address of its node that reaches the scheduler
        assert f'-m tomoflow.cluster._node route {host})" || exit 1' in script
        assert "--host $TOMOFLOW_NODE_ADDRESS" in script
        assert "--dashboard-address $TOMOFLOW_NODE_HTTP" in script
        # the scheduler's dashboard is on loopback; a client gets the cluster's credentials
        with Client(cluster) as client:
            assert tc.dashboard_url(client).startswith("http://127.0.0.1:")
            assert client.scheduler.address.startswith("tls://")
        new = _listeners() - before
        assert len(new) >= 2 and not {h for h, _ in new} & set(WILDCARDS), new  # scheduler, dashboard
    finally:
        cluster.close()
    assert not list(tmp_path.iterdir())  # the credentials went with the cluster


@requires_jobqueue
@requires_tls
def test_default_tls_folder_is_private(cluster_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dask

    monkeypatch.setenv("HOME", str(tmp_path))
    with dask.config.set({"jobqueue.slurm.shared-temp-directory": None}):
        cluster = tc.start_cluster("slurm", jobs=0, config_dir=cluster_dir)
    try:
        folder = tmp_path / ".tomoflow" / "tls"
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        (private,) = folder.glob("tomoflow-cluster-*")
        assert len(list(private.iterdir())) == 3
        assert f"--tls-key {private / 'worker.key'}" in cluster.job_script()
    finally:
        cluster.close()
    assert not private.exists()


@requires_jobqueue
def test_security_false_is_plain_tcp(cluster_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tomoflow.cluster.start"):
        cluster = tc.start_cluster("slurm", jobs=0, config_dir=cluster_dir, security=False)
    try:
        assert cluster.scheduler_address.startswith("tcp://")
        script = cluster.job_script()
        assert "--tls-" not in script and "--protocol" not in script
        assert "--host $TOMOFLOW_NODE_ADDRESS" in script  # still one address per listener
    finally:
        cluster.close()
    assert "unencrypted" in caplog.text


@requires_jobqueue
@requires_tls
def test_interface_and_explicit_hosts(cluster_dir: Path) -> None:
    # interface: the scheduler and workers use that interface's address; no --host is added
    cluster = tc.start_cluster("slurm", jobs=0, config_dir=cluster_dir, interface="lo")
    try:
        assert cluster.scheduler_address.startswith("tls://127.0.0.1:")
        script = cluster.job_script()
        assert "-m tomoflow.cluster._node interface lo)" in script and "--interface lo" in script
        assert "--host $TOMOFLOW_NODE_ADDRESS" not in script
        assert "--dashboard-address $TOMOFLOW_NODE_HTTP" in script  # dask binds it to 0.0.0.0 otherwise
    finally:
        cluster.close()
    # asked for explicitly: every interface for the scheduler; the user's own worker arguments are kept
    cluster = tc.start_cluster(
        "slurm",
        jobs=0,
        config_dir=cluster_dir,
        scheduler_options={"host": "0.0.0.0"},
        worker_extra_args=["--host", "10.9.8.7", "--no-dashboard"],
    )
    try:
        assert _listen_host(cluster) in ("0.0.0.0", "")
        script = cluster.job_script()
        assert "TOMOFLOW_NODE" not in script
        assert "--host 10.9.8.7 --no-dashboard" in script
    finally:
        cluster.close()


@requires_jobqueue
@requires_tls
def test_site_certificates_and_bad_security_settings(
    cluster_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from distributed.security import Security

    # a mapping: the site's own certificate files (here: ones written from temporary credentials)
    temp = Security.temporary()
    pem = tmp_path / "site.pem"
    pem.write_text(temp.tls_ca_file)
    for role in ("client", "scheduler", "worker"):
        (tmp_path / f"{role}.pem").write_text(getattr(temp, f"tls_{role}_cert"))
        (tmp_path / f"{role}.key").write_text(getattr(temp, f"tls_{role}_key"))
    files = {"tls_ca_file": str(pem)}
    for role in ("client", "scheduler", "worker"):
        files[f"tls_{role}_cert"] = str(tmp_path / f"{role}.pem")
        files[f"tls_{role}_key"] = str(tmp_path / f"{role}.key")
    cluster = tc.start_cluster("slurm", jobs=0, config_dir=cluster_dir, security=files)
    try:
        assert cluster.scheduler_address.startswith("tls://")
        assert f"--tls-ca-file {pem}" in cluster.job_script()
    finally:
        cluster.close()

    with pytest.raises(ConfigError, match=r"invalid security settings: Unknown parameters: \['tls_nope'\]"):
        tc.start_cluster("slurm", jobs=0, config_dir=cluster_dir, security={"tls_nope": 1})
    with pytest.raises(ConfigError, match="security must be true"):
        tc.start_cluster("slurm", jobs=0, config_dir=cluster_dir, security="yes")
    with pytest.raises(ConfigError, match="protocol 'tcp://' does not carry TLS"):
        tc.start_cluster("slurm", jobs=0, config_dir=cluster_dir, protocol="tcp://")

    def no_cryptography():
        raise ImportError("Using `Security.temporary` requires `cryptography`")

    monkeypatch.setattr(Security, "temporary", staticmethod(no_cryptography))
    with pytest.raises(ConfigError, match=r"needs the `cryptography` package: pip install 'tomoflow\[hpc\]'"):
        tc.start_cluster("slurm", jobs=0, config_dir=cluster_dir)


@requires_jobqueue
def test_settings_file_security_key(cluster_dir: Path, tmp_path: Path) -> None:
    """``security: false`` in a site file (and the shipped files say nothing: TLS)."""
    for kind in ("slurm", "pbs"):
        assert tc.load_cluster_config(kind, config_dir=cluster_dir)["security"] is True
    site = tmp_path / "site.yaml"
    site.write_text("kind: slurm\ncores: 1\nmemory: 1GB\njobs: 0\nsecurity: false\n")
    cluster = tc.start_cluster(str(site))
    try:
        assert cluster.scheduler_address.startswith("tcp://")
    finally:
        cluster.close()
