"""Inspect a running cluster: its dashboard link, its GPUs, a summary, and what a task may use.

Every question about the workers goes through one ``client.scheduler_info(n_workers=-1)`` call
(recent ``distributed`` lists only the first few workers otherwise). Nothing here imports Dask at
module import.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import weakref
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "ClusterResources",
    "cluster_resources",
    "dashboard_url",
    "gpu_resources_available",
    "describe",
]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# the workers
# --------------------------------------------------------------------------------------------------


def _workers(client: Client) -> dict[str, Mapping[str, Any]]:
    """Scheduler's view of every worker (address -> info), all of them, not the first few."""
    return dict(client.scheduler_info(n_workers=-1).get("workers", {}))


def _number(value: Any) -> float:
    """A worker's numeric field as a float; anything missing or malformed counts as 0."""
    try:
        return max(0.0, float(value or 0))
    except (TypeError, ValueError):
        return 0.0


def _gpu_amount(info: Mapping[str, Any]) -> float:
    """The ``GPU`` resource a worker advertises (0 for none)."""
    return _number((info.get("resources") or {}).get("GPU"))


def _host(address: str, info: Mapping[str, Any]) -> str:
    """The host a worker runs on, as the scheduler saw it (else taken from its address)."""
    host = info.get("host")
    if host:
        return str(host)
    try:
        from distributed.comm import get_address_host

        return get_address_host(address)
    except Exception:  # noqa: BLE001 - an odd address: the worker is its own host
        return address


# --------------------------------------------------------------------------------------------------
# the dashboard
# --------------------------------------------------------------------------------------------------


def _in_process_scheduler(client: Client) -> Any:
    from distributed import Scheduler

    scheduler = getattr(getattr(client, "cluster", None), "scheduler", None)
    return scheduler if isinstance(scheduler, Scheduler) else None


def _is_loopback_or_any(host: str) -> bool:
    if host in ("", "localhost", "0.0.0.0", "::"):
        return True
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified


def _format_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def dashboard_url(client: Client) -> str:
    """Link to the dashboard's status page that works from the machine this code runs on.

    For a scheduler running in this process (``local``, ``local-cuda``, SLURM/PBS via
    dask-jobqueue) the link uses the port the dashboard really bound and ``127.0.0.1`` when it
    listens on loopback or on every interface, instead of the non-loopback host name that
    ``client.dashboard_link`` may report. For a remote scheduler it uses the scheduler's host and
    dashboard port (``127.0.0.1`` when that host is loopback).

    Parameters
    ----------
    client
        A connected client.

    Returns
    -------
    str
        The ``.../status`` URL, or ``""`` when the scheduler serves no dashboard.
    """
    from distributed.utils import format_dashboard_link

    scheduler = _in_process_scheduler(client)
    server = getattr(scheduler, "http_server", None) if scheduler is not None else None
    if server is not None and getattr(server, "port", None):
        host = str(getattr(server, "address", "") or "")
        host = "127.0.0.1" if _is_loopback_or_any(host) else host
        return format_dashboard_link(_format_host(host), server.port)
    try:
        port = client.scheduler_info(n_workers=0).get("services", {}).get("dashboard")
    except Exception:  # noqa: BLE001 - a closed client has no dashboard
        port = None
    if not port:
        return ""
    address = client.scheduler.address if client.scheduler is not None else ""
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].split("/")[0].strip("[]")
    if address.startswith("inproc://") or _is_loopback_or_any(host):
        host = "127.0.0.1"
    return format_dashboard_link(_format_host(host), port)


# --------------------------------------------------------------------------------------------------
# GPUs and a summary
# --------------------------------------------------------------------------------------------------


def gpu_resources_available(client: Client) -> bool:
    """Whether at least one worker advertises a ``GPU`` resource (``resources={"GPU": 1}``).

    Tasks annotated with ``resources={"GPU": 1}`` only run on such workers; on a cluster without
    one they wait forever, so check this before submitting GPU work.

    Parameters
    ----------
    client
        A connected client.

    Returns
    -------
    bool
    """
    return any(_gpu_amount(info) >= 1 for info in _workers(client).values())


def describe(client: Client) -> str:
    """One short paragraph about the cluster: kind, workers, threads, memory, GPUs, dashboard.

    Parameters
    ----------
    client
        A connected client.

    Returns
    -------
    str
        Several lines of text, e.g.::

            Dask cluster LocalCluster at tcp://127.0.0.1:40423
              workers: 2, threads: 2, memory: 7.81 GiB, GPUs: 0
              dashboard: http://127.0.0.1:8787/status
    """
    from dask.utils import format_bytes

    workers = _workers(client).values()
    threads = sum(int(_number(w.get("nthreads"))) for w in workers)
    memory = sum(int(_number(w.get("memory_limit"))) for w in workers)
    gpus = sum(_gpu_amount(w) for w in workers)
    cluster = getattr(client, "cluster", None)
    kind = type(cluster).__name__ if cluster is not None else "scheduler"
    address = client.scheduler.address if client.scheduler is not None else "?"
    lines = [f"Dask cluster {kind} at {address}"]
    lines.append(
        f"  workers: {len(workers)}, threads: {threads}, "
        f"memory: {format_bytes(memory) if memory else 'unlimited'}, GPUs: {gpus:g}"
    )
    jobs = getattr(cluster, "worker_spec", None)
    if jobs is not None and hasattr(cluster, "job_cls"):
        lines.append(f"  batch jobs requested: {len(jobs)} (workers appear as jobs start)")
    link = dashboard_url(client)
    lines.append(f"  dashboard: {link or 'none'}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# what a task may use
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterResources:
    """What a cluster offers the tasks of a stage: how many run at once, and what each may use.

    Attributes
    ----------
    n_workers : int
        Workers counted (all of them; ``0`` while a batch-job cluster waits for its jobs).
    total_threads : int
        Sum of the workers' ``nthreads``: how many tasks can run at once.
    gpus : int
        Number of workers advertising ``resources={"GPU": n}`` with ``n >= 1`` (tomoflow's GPU
        convention is one GPU per worker).
    task_threads : int
        Thread budget of one task (for :func:`tomoflow.backend.limit_threads`): the minimum over
        workers of ``max(1, cpus // threads)``, where ``cpus`` is the CPU count of the worker's host
        (as its workers see it, affinity respected) and ``threads`` the sum of ``nthreads`` of all
        workers on that host. So a host running one task per worker thread is never
        oversubscribed. ``1`` when there are no workers.
    memory_per_thread : int or None
        Minimum over workers of ``memory_limit // nthreads``, in bytes: the memory one task may
        hold. ``None`` when no worker has a memory limit.
    """

    n_workers: int
    total_threads: int
    gpus: int
    task_threads: int
    memory_per_thread: int | None


# CPU counts already asked, per client: {(address, worker id): cpus}. A worker's CPU count does not
# change while it lives, so each worker is asked once per client, not once per stage (a batch of
# 10,000 scans would otherwise broadcast a ``client.run`` to every worker 10,000 times).
_CPU_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], int]] = weakref.WeakKeyDictionary()
_CPU_CACHE_LOCK = threading.Lock()


def _worker_cpus(client: Client, workers: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """CPU count each worker may run on (``tomoflow.backend.cpu_count`` run on the worker).

    Asked once per worker and client (cached by address and worker id); only workers not seen before
    are asked. Workers that do not answer with a positive integer (tomoflow not importable there,
    worker gone) are left out and asked again next time; the caller counts them as 1 CPU.
    """
    ids = {address: (address, str(info.get("id", ""))) for address, info in workers.items()}
    try:
        with _CPU_CACHE_LOCK:
            cache = _CPU_CACHE.setdefault(client, {})
    except TypeError:  # a client that cannot be weakly referenced: no cache
        cache = {}
    counts = {address: cache[key] for address, key in ids.items() if key in cache}
    ask = [address for address in ids if address not in counts]
    if not ask:
        return counts
    from tomoflow.backend import cpu_count

    try:
        replies = client.run(cpu_count, workers=ask, on_error="return")
    except Exception:  # no answer at all: count every worker as 1 CPU
        logger.warning("could not ask the Dask workers for their CPU counts; assuming 1 each", exc_info=True)
        return counts
    for address, reply in replies.items():
        if isinstance(reply, int) and not isinstance(reply, bool) and reply >= 1:
            counts[address] = reply
            if address in ids:
                with _CPU_CACHE_LOCK:
                    cache[ids[address]] = reply
        else:
            logger.warning("worker %s did not report its CPU count (%r); assuming 1", address, reply)
    return counts


def _task_threads(workers: Mapping[str, Mapping[str, Any]], cpus: Mapping[str, int]) -> int:
    """Minimum over hosts of ``max(1, host CPUs // threads of all workers on the host)``."""
    host_threads: dict[str, int] = defaultdict(int)
    host_cpus: dict[str, int] = defaultdict(lambda: 1)
    for address, info in workers.items():
        host = _host(address, info)
        host_threads[host] += max(1, int(_number(info.get("nthreads"))))
        host_cpus[host] = max(host_cpus[host], cpus.get(address, 1))
    return min((max(1, host_cpus[h] // n) for h, n in host_threads.items()), default=1)


def _memory_per_thread(workers: Mapping[str, Mapping[str, Any]]) -> int | None:
    """Minimum over workers with a memory limit of ``memory_limit // nthreads`` (bytes)."""
    shares = [
        int(_number(info.get("memory_limit"))) // max(1, int(_number(info.get("nthreads"))))
        for info in workers.values()
        if _number(info.get("memory_limit")) > 0
    ]
    return min(shares, default=None)


def cluster_resources(client: Client | None) -> ClusterResources:
    """Workers, threads, GPUs and the per-task thread and memory budget of a cluster.

    The stage engine sizes its block plans and the thread budget of its tasks with it. It costs one
    scheduler call, plus a ``client.run`` (a CPU count) on the workers this client has not asked
    before; call it once per stage, not per task.

    Parameters
    ----------
    client
        A connected client, or ``None`` for dask's local threaded scheduler in this process
        (one "worker" with one thread per CPU, each task single-threaded, no memory limit; inside
        :func:`tomoflow.backend.limit_threads`, as in a task running a whole stage, one thread whose
        tasks get that budget).

    Returns
    -------
    ClusterResources
        See its attributes. Robust to partial information: a worker that does not report its CPU
        count counts as 1 CPU, a missing ``nthreads`` as 1 thread (for budgets), a missing or zero
        ``memory_limit`` as no limit, and a missing ``host`` is taken from the worker's address.

    Examples
    --------
    >>> cluster_resources(None).task_threads
    1
    >>> from tomoflow.cluster import connect
    >>> with connect("local", n_workers=2, threads_per_worker=1, processes=False) as client:
    ...     cluster_resources(client)
    ClusterResources(n_workers=2, total_threads=2, gpus=0, task_threads=..., memory_per_thread=...)
    """
    if client is None:
        from tomoflow.backend import cpu_count, thread_budget_set

        budget = thread_budget_set()
        if budget is not None:  # inside a task with a thread budget: one block at a time, with all of it
            return ClusterResources(n_workers=1, total_threads=1, gpus=0, task_threads=budget, memory_per_thread=None)
        return ClusterResources(n_workers=1, total_threads=cpu_count(), gpus=0, task_threads=1, memory_per_thread=None)
    workers = _workers(client)
    cpus = _worker_cpus(client, workers)
    return ClusterResources(
        n_workers=len(workers),
        total_threads=sum(int(_number(info.get("nthreads"))) for info in workers.values()),
        gpus=sum(1 for info in workers.values() if _gpu_amount(info) >= 1),
        task_threads=_task_threads(workers, cpus),
        memory_per_thread=_memory_per_thread(workers),
    )
