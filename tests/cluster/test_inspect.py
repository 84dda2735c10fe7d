"""Tests of tomoflow/cluster/inspect.py: dashboard links, GPUs, describe() and cluster_resources()."""

from __future__ import annotations

import dataclasses
import logging
import operator
import socket
from collections.abc import Callable
from typing import Any

import pytest

import tomoflow.cluster as tc
from tomoflow.backend import cpu_count
from tomoflow.cluster import ClusterResources, cluster_resources

# --------------------------------------------------------------------------------------------------
# the dashboard
# --------------------------------------------------------------------------------------------------


def test_dashboard_moves_to_a_free_port_when_default_is_busy(assert_real_dashboard: Callable) -> None:
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


def test_dashboard_url_uses_loopback_not_reported_host(small: dict) -> None:
    with tc.connect("local", **small) as client:
        port = client.cluster.scheduler.http_server.port
        assert tc.dashboard_url(client) == f"http://127.0.0.1:{port}/status"
        # client.dashboard_link may name a non-loopback host; ours always works from here
        assert client.dashboard_link.endswith(f":{port}/status")


# --------------------------------------------------------------------------------------------------
# cluster_resources on real clusters
# --------------------------------------------------------------------------------------------------


def _memory_limits(client: Any) -> list[int]:
    return [w["memory_limit"] for w in client.scheduler_info(n_workers=-1)["workers"].values()]


def test_cluster_resources_without_a_client() -> None:
    assert cluster_resources(None) == ClusterResources(
        n_workers=1, total_threads=cpu_count(), gpus=0, task_threads=1, memory_per_thread=None
    )


def test_cluster_resources_without_a_client_inside_a_task_budget() -> None:
    """A stage run whole inside one task: one block at a time, each with the task's whole budget."""
    from tomoflow.backend import limit_threads

    with limit_threads(3):
        assert cluster_resources(None) == ClusterResources(1, 1, 0, 3, None)


def test_cluster_resources_is_a_frozen_dataclass() -> None:
    res = cluster_resources(None)
    assert [f.name for f in dataclasses.fields(res)] == [
        "n_workers",
        "total_threads",
        "gpus",
        "task_threads",
        "memory_per_thread",
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.gpus = 1  # type: ignore[misc]


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_cluster_resources_of_a_local_cluster(processes: bool, caplog: pytest.LogCaptureFixture) -> None:
    with tc.connect("local", processes=processes, n_workers=2, threads_per_worker=1, dashboard_address=":0") as client:
        with caplog.at_level(logging.WARNING, logger="tomoflow.cluster.inspect"):
            res = cluster_resources(client)
        # every worker reported its CPU count (no 1-CPU fallback)
        assert not [r for r in caplog.records if r.name == "tomoflow.cluster.inspect"]
        assert res.n_workers == 2
        assert res.total_threads == 2
        assert res.gpus == 0
        assert res.task_threads == max(1, cpu_count() // 2)  # both workers share this host
        assert res.memory_per_thread == min(_memory_limits(client))
        assert res.memory_per_thread > 0
    # unlimited workers: no memory budget
    with tc.connect(
        "local", processes=False, n_workers=1, threads_per_worker=2, memory_limit=0, dashboard_address=":0"
    ) as client:
        res = cluster_resources(client)
        assert (res.n_workers, res.total_threads, res.memory_per_thread) == (1, 2, None)
        assert res.task_threads == max(1, cpu_count() // 2)


def test_cluster_resources_counts_gpu_workers() -> None:
    with tc.connect(
        "local", processes=False, n_workers=2, threads_per_worker=1, resources={"GPU": 1}, dashboard_address=":0"
    ) as client:
        res = cluster_resources(client)
        assert res.gpus == res.n_workers == 2
        assert tc.gpu_resources_available(client)
        assert "GPUs: 2" in tc.describe(client)
        assert client.submit(operator.add, 1, 2, resources={"GPU": 1}).result(timeout=60) == 3


# --------------------------------------------------------------------------------------------------
# cluster_resources with a scheduler's answers made up (many hosts, missing information)
# --------------------------------------------------------------------------------------------------


class FakeClient:
    """Answers scheduler_info and run as a distributed.Client would, from given worker records."""

    def __init__(self, workers: dict[str, dict[str, Any]], cpus: dict[str, Any] | Exception):
        self.workers, self.cpus = workers, cpus
        self.info_calls: list[int] = []
        self.asked: list[list[str]] = []

    def scheduler_info(self, n_workers: int = 5) -> dict[str, Any]:
        self.info_calls.append(n_workers)
        shown = list(self.workers.items())
        return {"workers": dict(shown if n_workers < 0 else shown[:n_workers])}

    def run(self, function: Callable, *, workers: list[str], on_error: str = "raise") -> dict:
        assert function is cpu_count and on_error == "return"
        self.asked.append(list(workers))
        if isinstance(self.cpus, Exception):
            raise self.cpus
        return {w: self.cpus[w] for w in workers if w in self.cpus}


def _worker(host: str | None, nthreads: Any = 1, memory: Any = 0, gpu: Any = None) -> dict[str, Any]:
    info: dict[str, Any] = {"nthreads": nthreads, "memory_limit": memory}
    if host is not None:
        info["host"] = host
    if gpu is not None:
        info["resources"] = {"GPU": gpu}
    return info


def test_cluster_resources_counts_every_worker_and_groups_by_host() -> None:
    gib = 2**30
    workers = {
        # node a: 16 CPUs, 4 workers x 2 threads -> 16 // 8 = 2 threads per task
        **{f"tcp://10.0.0.1:{9000 + i}": _worker("10.0.0.1", 2, 8 * gib, gpu=1) for i in range(4)},
        # node b: 32 CPUs, 2 workers x 4 threads -> 32 // 8 = 4
        **{f"tcp://10.0.0.2:{9000 + i}": _worker("10.0.0.2", 4, 4 * gib) for i in range(2)},
        # node c: the scheduler did not say its host: taken from the address
        "tcp://10.0.0.3:9000": _worker(None, 1, 0),
    }
    cpus = {
        **{a: 16 for a in workers if "10.0.0.1" in a},
        **{a: 32 for a in workers if "10.0.0.2" in a},
        "tcp://10.0.0.3:9000": 8,
    }
    client = FakeClient(workers, cpus)
    res = cluster_resources(client)
    assert client.info_calls == [-1]  # all workers, not the first few
    assert res == ClusterResources(n_workers=7, total_threads=17, gpus=4, task_threads=2, memory_per_thread=gib)
    assert tc.gpu_resources_available(client)  # type: ignore[arg-type]
    assert client.info_calls == [-1, -1]


def test_cluster_resources_falls_back_when_information_is_missing() -> None:
    workers = {
        "tcp://a:1": _worker("a", 1),
        "tcp://a:2": _worker("a", 1, memory=None, gpu="lots"),  # a malformed GPU amount is no GPU
        "tcp://b:1": _worker("b", None),  # no nthreads: counts as 1 thread for the budget
    }
    # worker a:1 failed to answer (an exception), a:2 answered nonsense, b:1 answered 8 CPUs
    client = FakeClient(workers, {"tcp://a:1": RuntimeError("no tomoflow"), "tcp://a:2": "x", "tcp://b:1": 8})
    res = cluster_resources(client)
    # host a: 1 CPU assumed // 2 threads -> 1; host b: 8 // 1 -> 8; minimum 1
    assert res == ClusterResources(n_workers=3, total_threads=2, gpus=0, task_threads=1, memory_per_thread=None)

    # host a alone, with a real count from one of its workers: the host has that many CPUs
    client = FakeClient({k: v for k, v in workers.items() if k.startswith("tcp://a")}, {"tcp://a:2": 12})
    assert cluster_resources(client).task_threads == 6

    # no answer at all: every worker counts as 1 CPU
    client = FakeClient(workers, OSError("scheduler gone"))
    assert cluster_resources(client).task_threads == 1


def test_cluster_resources_of_a_cluster_without_workers() -> None:
    assert cluster_resources(FakeClient({}, {})) == ClusterResources(0, 0, 0, 1, None)


def test_each_worker_is_asked_its_cpu_count_once_per_client() -> None:
    workers = {"tcp://a:1": _worker("a", 1), "tcp://a:2": _worker("a", 1)}
    client = FakeClient(workers, {"tcp://a:1": 4, "tcp://a:2": 4, "tcp://a:3": 4, "tcp://b:1": 1})
    first = cluster_resources(client)
    assert first.task_threads == 2 and client.asked == [["tcp://a:1", "tcp://a:2"]]
    for _ in range(3):  # a batch's stages: no broadcast to every worker each time
        assert cluster_resources(client) == first
    assert client.asked == [["tcp://a:1", "tcp://a:2"]]
    # a worker joins: only it is asked; a worker restarted at an address under a new id is asked again
    workers["tcp://a:3"] = _worker("a", 1)
    workers["tcp://a:1"] = {**_worker("a", 1), "id": "restarted"}
    assert cluster_resources(client).task_threads == 1  # 4 CPUs // 3 threads
    assert client.asked[1:] == [["tcp://a:1", "tcp://a:3"]]
    # a worker that did not answer is asked again next time
    workers["tcp://b:1"] = _worker("b", 1)
    client.cpus.pop("tcp://b:1")  # type: ignore[union-attr]
    cluster_resources(client)
    cluster_resources(client)
    assert client.asked[2:] == [["tcp://b:1"], ["tcp://b:1"]]
    # another client asks for itself
    other = FakeClient(workers, {"tcp://a:1": 4, "tcp://a:2": 4, "tcp://a:3": 4})
    cluster_resources(other)
    assert sorted(other.asked[0]) == ["tcp://a:1", "tcp://a:2", "tcp://a:3", "tcp://b:1"]
