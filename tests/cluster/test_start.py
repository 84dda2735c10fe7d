"""Tests of tomoflow/cluster/start.py: starting and closing local, local-cuda, SLURM and PBS clusters."""

from __future__ import annotations

import importlib.util
import operator
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import dask.array as da
import pytest
from distributed import Client, LocalCluster
from distributed.core import Status

import tomoflow.cluster as tc
from tomoflow.errors import ConfigError

requires_jobqueue = pytest.mark.skipif(
    importlib.util.find_spec("dask_jobqueue") is None, reason="requires dask_jobqueue"
)


# --------------------------------------------------------------------------------------------------
# local clusters
# --------------------------------------------------------------------------------------------------


def test_local_threads_compute_dashboard_and_close(
    small: dict, assert_real_dashboard: Callable, assert_nothing_listens: Callable
) -> None:
    with tc.connect("local", **small) as client:
        assert isinstance(client, Client) and isinstance(client, tc.TomoflowClient)
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


@pytest.mark.slow
def test_local_worker_processes(assert_real_dashboard: Callable) -> None:
    client = tc.connect("local", n_workers=1, threads_per_worker=1, processes=True, dashboard_address="127.0.0.1:0")
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


def test_settings_from_config_dir_and_yaml_spec(tmp_path: Path) -> None:
    (tmp_path / "local.yaml").write_text(
        "kind: local\nn_workers: 1\nthreads_per_worker: 3\nprocesses: false\ndashboard_address: '127.0.0.1:0'\n"
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


def test_start_cluster_without_a_client(tmp_path: Path) -> None:
    cluster = tc.start_cluster(
        "local", n_workers=1, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0"
    )
    try:
        assert isinstance(cluster, LocalCluster) and len(cluster.workers) == 1
    finally:
        cluster.close()
    with pytest.raises(ConfigError, match="invalid cluster spec"):
        tc.start_cluster("tcp://127.0.0.1:8786")
    (tmp_path / "bad.yaml").write_text("kind: kubernetes\n")
    with pytest.raises(ConfigError, match="`kind:` must be one of"):
        tc.start_cluster(str(tmp_path / "bad.yaml"))
    with pytest.raises(ConfigError, match=r"n_workers \(--workers\) must be a positive integer"):
        tc.start_cluster("local", n_workers=-1, processes=False)


def test_missing_dask_cuda_names_the_gpu_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # import dask_cuda -> ImportError
    with pytest.raises(ConfigError, match=r"dask-cuda.*pip install 'tomoflow\[gpu\]'"):
        tc.connect("local-cuda")


@pytest.mark.parametrize("spec", ["slurm", "pbs", "slurm:gpu"])
def test_missing_jobqueue_names_the_hpc_extra(monkeypatch: pytest.MonkeyPatch, spec: str, cluster_dir: Path) -> None:
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)
    with pytest.raises(ConfigError, match=r"dask-jobqueue.*pip install 'tomoflow\[hpc\]'"):
        tc.connect(spec, jobs=0, config_dir=cluster_dir)


# --------------------------------------------------------------------------------------------------
# SLURM / PBS through dask-jobqueue (no job is submitted)
# --------------------------------------------------------------------------------------------------


@requires_jobqueue
def test_slurm_job_script_from_cluster_yaml(cluster_dir: Path) -> None:
    with tc.connect("slurm", jobs=0, config_dir=cluster_dir) as client:
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
        # no workers yet: nothing to count, budgets fall back to 1 thread
        assert tc.cluster_resources(client) == tc.ClusterResources(0, 0, 0, 1, None)
    assert cluster.status == Status.closed


@requires_jobqueue
def test_slurm_packaged_defaults_without_config_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed tomoflow (no source checkout) still finds slurm.yaml: the package ships it."""
    monkeypatch.delenv(tc.CLUSTER_DIR_ENV, raising=False)
    cluster = tc.start_cluster("slurm", jobs=0)
    try:
        assert "#SBATCH --cpus-per-task=32" in cluster.job_script()
    finally:
        cluster.close()


@requires_jobqueue
def test_slurm_gpu_profile_and_overrides(cluster_dir: Path) -> None:
    with tc.connect("slurm:gpu", jobs=0, config_dir=cluster_dir, queue="a100") as client:
        script = client.cluster.job_script()
    assert "#SBATCH -p a100" in script
    assert "#SBATCH --gres=gpu:4" in script
    assert "-m dask_cuda.cli" in script  # one worker per GPU, pinned by dask-cuda
    assert "--resources GPU=1" in script
    assert "--nworkers" not in script
    assert "--nthreads 8" in script  # 32 cores / 4 GPUs

    # an explicit GPU directive is kept, not duplicated
    cluster = tc.start_cluster("slurm:gpu-a100", jobs=0, config_dir=cluster_dir)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH --gres=gpu:a100:2" in script and "--gres=gpu:2" not in script


@requires_jobqueue
def test_pbs_gpu_resource_spec(cluster_dir: Path) -> None:
    cluster = tc.start_cluster("pbs:gpu", jobs=0, config_dir=cluster_dir)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#PBS -l select=1:ncpus=32:ngpus=4:mem=" in script
    assert "--resources GPU=1" in script and "-m dask_cuda.cli" in script


@requires_jobqueue
def test_jobqueue_errors(cluster_dir: Path) -> None:
    with pytest.raises(ConfigError, match="invalid slurm settings"):
        tc.connect("slurm", jobs=0, config_dir=cluster_dir, not_a_setting=1)
    with pytest.raises(ConfigError, match="jobs must be an integer"):
        tc.connect("slurm", jobs=-1, config_dir=cluster_dir)
    if shutil.which("sbatch") is None:
        with pytest.raises(ConfigError, match="`sbatch` not found"):
            tc.connect("slurm", jobs=1, config_dir=cluster_dir)


# --------------------------------------------------------------------------------------------------
# GPU (skipped without dask-cuda and a CUDA device)
# --------------------------------------------------------------------------------------------------


@pytest.mark.gpu("dask_cuda")
def test_local_cuda_cluster_has_gpu_resources(assert_real_dashboard: Callable) -> None:
    with tc.connect("local-cuda", n_workers=1, dashboard_address="127.0.0.1:0") as client:
        assert tc.gpu_resources_available(client)
        assert client.submit(operator.add, 1, 2, resources={"GPU": 1}).result(timeout=120) == 3
        (visible,) = client.run(os.getenv, "CUDA_VISIBLE_DEVICES").values()
        assert visible
        assert "GPUs: 1" in tc.describe(client)
        assert tc.cluster_resources(client).gpus == 1
        assert_real_dashboard(tc.dashboard_url(client))
        cluster = client.cluster
    assert cluster.status == Status.closed
