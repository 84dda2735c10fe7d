"""Tests of tomoflow.cluster: starting, connecting to and closing Dask clusters, and the dashboard."""

from __future__ import annotations

import importlib
import json
import operator
import os
import shutil
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

import dask.array as da
import pytest
import yaml
from distributed import Client, LocalCluster
from distributed.core import Status

import tomoflow.cluster as tc
from tomoflow.errors import ConfigError, TomoflowError

CLUSTER_DIR = Path(__file__).resolve().parents[1] / "cluster"


def _importorskip(modname: str) -> tuple[bool, pytest.MarkDecorator]:
    try:
        importlib.import_module(modname)
        has = True
    except ImportError:
        has = False
    return has, pytest.mark.skipif(not has, reason=f"requires {modname}")


has_jobqueue, requires_jobqueue = _importorskip("dask_jobqueue")
has_dask_cuda, requires_dask_cuda = _importorskip("dask_cuda")
requires_gpu = pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="requires an NVIDIA GPU")

# A small in-process cluster: starts in well under a second.
SMALL = {"n_workers": 2, "threads_per_worker": 1, "processes": False, "dashboard_address": "127.0.0.1:0"}


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=20) as response:
        return response.status, response.read().decode("utf-8", "replace")


def assert_real_dashboard(url: str) -> None:
    """The /status page is the bokeh dashboard, not the 'Dask needs bokeh' stand-in (also HTTP 200)."""
    assert url.startswith("http://127.0.0.1:"), url
    assert url.endswith("/status"), url
    status, body = _get(url)
    assert status == 200
    assert "Dask needs" not in body
    assert "<title>Dask Diagnostic UI</title>" in body
    assert "bokeh.min.js" in body  # BokehJS is loaded ...
    assert "Bokeh.embed" in body  # ... and the status document is embedded with it
    # the BokehJS bundle the page refers to is really served
    js = body.split('src="static/js/bokeh.min.js', 1)[1].split('"', 1)[0]
    status, script = _get(url.rsplit("/", 1)[0] + "/static/js/bokeh.min.js" + js)
    assert status == 200 and "Bokeh" in script


def assert_nothing_listens(url: str) -> None:
    with pytest.raises(urllib.error.URLError):
        _get(url)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------------------------------
# local clusters
# --------------------------------------------------------------------------------------------------


def test_local_threads_compute_dashboard_and_close() -> None:
    with tc.connect("local", **SMALL) as client:
        assert isinstance(client, Client)
        cluster = client.owned_cluster
        assert isinstance(cluster, LocalCluster) and cluster is client.cluster
        assert len(client.scheduler_info()["workers"]) == 2

        x = da.arange(1000, chunks=100)
        assert int((x * 2).sum().compute()) == 999 * 1000
        assert client.submit(operator.add, 2, 3).result() == 5

        url = tc.dashboard_url(client)
        assert_real_dashboard(url)
        assert not tc.gpu_resources_available(client)
        text = tc.describe(client)
        assert "workers: 2" in text and "threads: 2" in text and "GPUs: 0" in text
        assert url in text
    assert client.status == "closed"
    assert cluster.status == Status.closed
    assert client.owned_cluster is None
    assert_nothing_listens(url)


def test_local_worker_processes() -> None:
    client = tc.connect("local", n_workers=1, threads_per_worker=1, processes=True,
                        dashboard_address="127.0.0.1:0")
    cluster = client.cluster
    try:
        worker_pids = client.run(os.getpid)
        assert len(worker_pids) == 1
        assert os.getpid() not in worker_pids.values()  # a real worker process
        assert int(da.ones((64, 64), chunks=16).sum().compute()) == 64 * 64
        assert_real_dashboard(tc.dashboard_url(client))
    finally:
        client.close()
    assert client.status == "closed"
    assert cluster.status == Status.closed


def test_dashboard_moves_to_a_free_port_when_default_is_busy() -> None:
    blocker = socket.socket()
    try:
        try:
            blocker.bind(("127.0.0.1", 8787))
            blocker.listen()
        except OSError:
            pass  # something already listens on 8787: just as good
        with tc.connect("local", n_workers=1, processes=False) as client:  # default address
            url = tc.dashboard_url(client)
            assert ":8787/" not in url
            assert_real_dashboard(url)
    finally:
        blocker.close()


def test_dashboard_url_uses_loopback_not_reported_host() -> None:
    with tc.connect("local", **SMALL) as client:
        port = client.cluster.scheduler.http_server.port
        assert tc.dashboard_url(client) == f"http://127.0.0.1:{port}/status"
        # client.dashboard_link may name a non-loopback host; ours always works from here
        assert client.dashboard_link.endswith(f":{port}/status")


def test_settings_from_config_dir_and_yaml_spec(tmp_path: Path) -> None:
    (tmp_path / "local.yaml").write_text(
        "kind: local\nn_workers: 1\nthreads_per_worker: 3\nprocesses: false\n"
        "dashboard_address: '127.0.0.1:0'\n"
    )
    with tc.connect("local", config_dir=tmp_path) as client:
        (worker,) = client.scheduler_info()["workers"].values()
        assert worker["nthreads"] == 3
    # keyword arguments override the file
    with tc.connect("local", config_dir=tmp_path, threads_per_worker=2) as client:
        (worker,) = client.scheduler_info()["workers"].values()
        assert worker["nthreads"] == 2
    # a settings file as the spec
    site = tmp_path / "site.yaml"
    text = (tmp_path / "local.yaml").read_text()
    site.write_text(text.replace("threads_per_worker: 3", "threads_per_worker: 1"))
    with tc.connect(site) as client:
        (worker,) = client.scheduler_info()["workers"].values()
        assert worker["nthreads"] == 1


# --------------------------------------------------------------------------------------------------
# a scheduler that already runs
# --------------------------------------------------------------------------------------------------


def test_connect_by_address_and_scheduler_file(tmp_path: Path) -> None:
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp",
                           host="127.0.0.1", dashboard_address="127.0.0.1:0")
    try:
        address = cluster.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")

        with tc.connect(address) as client:
            assert client.submit(operator.mul, 6, 7).result() == 42
            assert client.owned_cluster is None
            url = tc.dashboard_url(client)
            assert url == f"http://127.0.0.1:{cluster.scheduler.http_server.port}/status"
            assert_real_dashboard(url)
            scheduler_file = tmp_path / "scheduler.json"
            client.write_scheduler_file(str(scheduler_file))
        assert client.status == "closed"
        assert cluster.status == Status.running  # a pre-existing cluster is left running

        assert json.loads(scheduler_file.read_text())["address"] == address
        with tc.connect(str(scheduler_file)) as client:
            assert client.scheduler.address == address
            assert int(da.arange(10, chunks=5).sum().compute()) == 45
        assert cluster.status == Status.running
    finally:
        cluster.close()
    assert cluster.status == Status.closed


def test_unreachable_scheduler_raises_clear_error() -> None:
    address = f"tcp://127.0.0.1:{_free_port()}"
    with pytest.raises(TomoflowError, match="cannot reach the Dask scheduler"):
        tc.connect(address, timeout=0.5)


# --------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["nonsense", "", "   ", "local:gpu", "slurm-gpu", "ftp://host:21", 42])
def test_invalid_spec_lists_valid_specs(spec: object) -> None:
    with pytest.raises(ConfigError, match="invalid cluster spec") as info:
        tc.connect(spec)  # type: ignore[arg-type]
    for valid in ("local", "local-cuda", "slurm", "pbs", "tcp://", "scheduler.json"):
        assert valid in str(info.value)


def test_bad_scheduler_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="scheduler file not found"):
        tc.connect(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="bad.json"):
        tc.connect(str(bad))
    no_address = tmp_path / "empty.json"
    no_address.write_text("{}")
    with pytest.raises(ConfigError, match="no 'address'"):
        tc.connect(str(no_address))


def test_invalid_settings_raise_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="only apply to clusters tomoflow starts"):
        tc.connect("tcp://127.0.0.1:8786", n_workers=2)
    with pytest.raises(ConfigError, match="jobs only applies"):
        tc.connect("local", jobs=2)
    with pytest.raises(ConfigError, match="do not apply to slurm"):
        tc.connect("slurm", n_workers=2)
    with pytest.raises(ConfigError, match="unknown local-cluster settings"):
        tc.connect("local", processes=False, n_workers=1, not_a_setting=1)
    with pytest.raises(ConfigError, match="no profile 'nope'"):
        tc.load_cluster_config("slurm", config_dir=CLUSTER_DIR, profile="nope")
    (tmp_path / "local.yaml").write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        tc.connect("local", config_dir=tmp_path)
    (tmp_path / "local.yaml").write_text("kind: slurm\n")
    with pytest.raises(ConfigError, match="kind: slurm"):
        tc.connect("local", config_dir=tmp_path)
    (tmp_path / "local.yaml").write_text("n_workers: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        tc.connect("local", config_dir=tmp_path)


def test_missing_dask_cuda_names_the_gpu_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # import dask_cuda -> ImportError
    with pytest.raises(ConfigError, match=r"dask-cuda.*pip install 'tomoflow\[gpu\]'"):
        tc.connect("local-cuda")


@pytest.mark.parametrize("spec", ["slurm", "pbs", "slurm:gpu"])
def test_missing_jobqueue_names_the_hpc_extra(monkeypatch: pytest.MonkeyPatch, spec: str) -> None:
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)
    with pytest.raises(ConfigError, match=r"dask-jobqueue.*pip install 'tomoflow\[hpc\]'"):
        tc.connect(spec, jobs=0, config_dir=CLUSTER_DIR)


def test_importing_tomoflow_cluster_imports_no_optional_backend() -> None:
    code = (
        "import sys, tomoflow.cluster; "
        "bad = [m for m in ('cupy', 'dask_cuda', 'dask_jobqueue', 'torch') if m in sys.modules]; "
        "assert not bad, bad"
    )
    import subprocess

    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# --------------------------------------------------------------------------------------------------
# SLURM / PBS through dask-jobqueue (no job is submitted)
# --------------------------------------------------------------------------------------------------


@requires_jobqueue
def test_slurm_job_script_from_cluster_yaml() -> None:
    with tc.connect("slurm", jobs=0, config_dir=CLUSTER_DIR) as client:
        cluster = client.cluster
        assert type(cluster).__name__ == "SLURMCluster"
        script = cluster.job_script()
        assert "#SBATCH --cpus-per-task=32" in script
        assert "#SBATCH -t 04:00:00" in script
        assert "#SBATCH -J tomoflow-worker" in script
        assert "-m distributed.cli.dask_worker" in script
        assert "--nworkers 4" in script and "--nthreads 8" in script
        assert "--resources" not in script
        assert len(cluster.worker_spec) == 0  # nothing submitted
        assert tc.dashboard_url(client).startswith("http://127.0.0.1:")
        assert "batch jobs requested: 0" in tc.describe(client)
    assert cluster.status == Status.closed


@requires_jobqueue
def test_slurm_gpu_profile_and_overrides() -> None:
    with tc.connect("slurm:gpu", jobs=0, config_dir=CLUSTER_DIR, queue="a100") as client:
        script = client.cluster.job_script()
    assert "#SBATCH -p a100" in script
    assert "#SBATCH --gres=gpu:4" in script
    assert "-m dask_cuda.cli" in script  # one worker per GPU, pinned by dask-cuda
    assert "--resources GPU=1" in script
    assert "--nworkers" not in script
    assert "--nthreads 8" in script  # 32 cores / 4 GPUs

    # an explicit GPU directive is kept, not duplicated
    cluster = tc.start_cluster("slurm:gpu-a100", jobs=0, config_dir=CLUSTER_DIR)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH --gres=gpu:a100:2" in script and "--gres=gpu:2" not in script


@requires_jobqueue
def test_pbs_gpu_resource_spec() -> None:
    cluster = tc.start_cluster("pbs:gpu", jobs=0, config_dir=CLUSTER_DIR)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#PBS -l select=1:ncpus=32:ngpus=4:mem=" in script
    assert "--resources GPU=1" in script and "-m dask_cuda.cli" in script


@requires_jobqueue
def test_jobqueue_errors() -> None:
    with pytest.raises(ConfigError, match="invalid slurm settings"):
        tc.connect("slurm", jobs=0, config_dir=CLUSTER_DIR, not_a_setting=1)
    with pytest.raises(ConfigError, match="jobs must be an integer"):
        tc.connect("slurm", jobs=-1, config_dir=CLUSTER_DIR)
    if shutil.which("sbatch") is None:
        with pytest.raises(ConfigError, match="`sbatch` not found"):
            tc.connect("slurm", jobs=1, config_dir=CLUSTER_DIR)


# --------------------------------------------------------------------------------------------------
# the deployment files
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", tc.CLUSTER_KINDS)
def test_cluster_yaml_files_load(kind: str) -> None:
    settings = tc.load_cluster_config(kind, config_dir=CLUSTER_DIR)
    assert settings["kind"] == kind
    assert settings["source"] == str(CLUSTER_DIR / f"{kind}.yaml")
    assert "profiles" not in settings
    if kind in ("slurm", "pbs"):
        for key in ("cores", "memory", "processes", "walltime", "queue", "job_extra_directives", "jobs"):
            assert key in settings
        gpu = tc.load_cluster_config(kind, config_dir=CLUSTER_DIR, profile="gpu")
        assert gpu["gpus_per_job"] > 0


def test_kubernetes_manifest() -> None:
    docs = [d for d in yaml.safe_load_all((CLUSTER_DIR / "kubernetes.yaml").read_text()) if d]
    cluster = next(d for d in docs if d["kind"] == "DaskCluster")
    assert cluster["apiVersion"] == "kubernetes.dask.org/v1"
    (scheduler,) = cluster["spec"]["scheduler"]["spec"]["containers"]
    assert scheduler["args"][:2] == ["dask", "scheduler"]
    ports = {p["name"]: p["containerPort"] for p in scheduler["ports"]}
    assert ports == {"tcp-comm": 8786, "http-dashboard": 8787}
    (worker,) = cluster["spec"]["worker"]["spec"]["containers"]
    args = worker["args"]
    assert args[args.index("--resources") + 1] == "GPU=1"
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "tomoflow" in worker["image"] and worker["image"] == scheduler["image"]


def test_readme_covers_every_deployment() -> None:
    text = (CLUSTER_DIR / "README.md").read_text()
    for needle in ("local-cuda", "SLURM", "PBS", "Kubernetes", "scheduler file", "ssh -N -L",
                   'resources={"GPU": 1}', "waits forever", "tomoflow[hpc]", "tomoflow[gpu]"):
        assert needle in text, needle


# --------------------------------------------------------------------------------------------------
# GPU (skipped without dask-cuda and a CUDA device)
# --------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@requires_dask_cuda
@requires_gpu
def test_local_cuda_cluster_has_gpu_resources() -> None:
    with tc.connect("local-cuda", n_workers=1, dashboard_address="127.0.0.1:0") as client:
        assert tc.gpu_resources_available(client)
        assert client.submit(operator.add, 1, 2, resources={"GPU": 1}).result(timeout=120) == 3
        (visible,) = client.run(os.getenv, "CUDA_VISIBLE_DEVICES").values()
        assert visible
        assert "GPUs: 1" in tc.describe(client)
        assert_real_dashboard(tc.dashboard_url(client))
        cluster = client.cluster
    assert cluster.status == Status.closed

