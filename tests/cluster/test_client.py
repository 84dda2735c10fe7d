"""Tests of tomoflow/cluster/client.py: specs, TomoflowClient, connecting to a running scheduler."""

from __future__ import annotations

import json
import operator
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import dask.array as da
import pytest
from distributed import Client, LocalCluster
from distributed.core import Status

import tomoflow.cluster as tc
from tomoflow.errors import ConfigError, TomoflowError


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------------------------------
# a scheduler that already runs
# --------------------------------------------------------------------------------------------------


def test_connect_by_address_and_scheduler_file(tmp_path: Path, assert_real_dashboard: Callable) -> None:
    # The scheduler writes its own file at start-up, as ``dask scheduler --scheduler-file`` does.
    # (``Client.write_scheduler_file`` is not used: in distributed 2026.7 it can fail to serialise
    # worker metrics with tuple keys once a heartbeat has reported them.)
    scheduler_file = tmp_path / "scheduler.json"
    cluster = LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        scheduler_kwargs={"scheduler_file": str(scheduler_file)},
    )
    try:
        address = cluster.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")

        with tc.connect(address) as client:
            assert client.submit(operator.mul, 6, 7).result() == 42
            assert client.owned_cluster is None
            url = tc.dashboard_url(client)
            assert url == f"http://127.0.0.1:{cluster.scheduler.http_server.port}/status"
            assert_real_dashboard(url)
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
    assert all(valid in str(info.value) for valid in tc.VALID_SPECS)


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


def test_invalid_settings_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="only apply to clusters tomoflow starts"):
        tc.connect("tcp://127.0.0.1:8786", n_workers=2)
    with pytest.raises(ConfigError, match="jobs only applies"):
        tc.connect("local", jobs=2)
    with pytest.raises(ConfigError, match="do not apply to slurm"):
        tc.connect("slurm", n_workers=2)
    with pytest.raises(ConfigError, match="unknown local-cluster settings"):
        tc.connect("local", processes=False, n_workers=1, not_a_setting=1)


# --------------------------------------------------------------------------------------------------
# TomoflowClient and lazy imports
# --------------------------------------------------------------------------------------------------


def test_tomoflow_client_is_one_distributed_client_class() -> None:
    from tomoflow.cluster import TomoflowClient

    assert TomoflowClient is tc.TomoflowClient is sys.modules["tomoflow.cluster.client"].TomoflowClient
    assert issubclass(TomoflowClient, Client)
    assert TomoflowClient.__module__ == "tomoflow.cluster" and TomoflowClient.__name__ == "TomoflowClient"
    assert "TomoflowClient" in dir(tc)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tc.nope  # noqa: B018  (the attribute access is the test)


def test_importing_tomoflow_cluster_imports_no_optional_backend() -> None:
    code = (
        "import sys, tomoflow.cluster; "
        "bad = [m for m in ('cupy', 'dask_cuda', 'dask_jobqueue', 'torch') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_tomoflow_cluster_alone_imports_no_dask() -> None:
    """The cluster package itself (whatever ``tomoflow/__init__`` imports) imports no Dask or zarr."""
    code = (
        "import sys, types, pathlib, importlib.util; "
        "spec = importlib.util.find_spec('tomoflow'); "
        "stub = types.ModuleType('tomoflow'); stub.__path__ = list(spec.submodule_search_locations); "
        "sys.modules['tomoflow'] = stub; "  # skip tomoflow/__init__.py, import only the cluster package
        "import tomoflow.cluster as tc; assert tc.connect and tc.cluster_resources; "
        "bad = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'dask', 'distributed', 'zarr', 'numpy', 'yaml', 'cupy', 'dask_cuda', 'dask_jobqueue', 'torch'}); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
