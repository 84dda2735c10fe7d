"""Connect to a Dask cluster: local, local GPUs, SLURM, PBS, or one that already runs.

Every tomoflow graph runs on a :class:`distributed.Client`. :func:`connect` turns one short *spec*
into a client and, where it had to start one, the cluster behind it:

============================  ==============================================================
spec                          what it does
============================  ==============================================================
``"local"``                   :class:`distributed.LocalCluster` on this machine (default)
``"local-cuda"``              :class:`dask_cuda.LocalCUDACluster`, one worker per GPU, each
                              with ``resources={"GPU": 1}`` (extra ``tomoflow[gpu]``)
``"slurm"``, ``"pbs"``        :mod:`dask_jobqueue` cluster whose workers are batch jobs
                              (extra ``tomoflow[hpc]``); ``"slurm:gpu"`` picks a profile
``"tcp://host:8786"``         a scheduler that already runs (also ``tls://``, ``host:port``)
``"scheduler.json"``          the scheduler file written by ``dask scheduler
                              --scheduler-file`` or :meth:`distributed.Client.write_scheduler_file`
``"site.yaml"``               a cluster settings file whose ``kind:`` is one of the above
============================  ==============================================================

Settings for the clusters tomoflow starts come from YAML files named after the kind
(``local.yaml``, ``local-cuda.yaml``, ``slurm.yaml``, ``pbs.yaml``), looked up in ``config_dir``,
else in the directory named by the environment variable ``TOMOFLOW_CLUSTER_DIR``, else among the
defaults shipped inside the package (``tomoflow/cluster/defaults/``; ``cluster/`` of the source
tree links to them). Keyword arguments override the file.

Clusters whose workers are on other machines (``slurm``, ``pbs``) talk TLS with credentials made for
them (``security: false`` turns it off); nothing tomoflow starts listens on every interface unless the
settings ask for it; local worker counts are checked against this machine (:func:`check_worker_count`).
See ``cluster/README.md``, "What a cluster exposes".

GPU tasks carry ``resources={"GPU": 1}`` (the reconstruction's slab tasks a quarter each, so that four
share a GPU worker as a conveyor, see :mod:`tomoflow.pipeline.gpu`); only workers that advertise a
``GPU`` resource run them, and a task asking for a resource that no worker has waits forever.
:func:`gpu_resources_available` tells
whether a client's cluster can run GPU tasks; :func:`cluster_resources` gives the workers, threads,
GPUs and per-task thread and memory budget the stage engine plans with.

>>> from tomoflow.cluster import connect, describe
>>> with connect("local", n_workers=2, processes=False) as client:
...     print(describe(client))
Dask cluster LocalCluster at ...
  workers: 2, threads: ..., memory: ..., GPUs: 0
  dashboard: ...

The modules: :mod:`~tomoflow.cluster.settings` (settings files), :mod:`~tomoflow.cluster.start`
(starting each kind), :mod:`~tomoflow.cluster.client` (specs, :class:`TomoflowClient`,
:func:`connect`), :mod:`~tomoflow.cluster.inspect` (a running cluster), :mod:`~tomoflow.cluster.quiet`
(no "Compute Failed" dumps from the workers while tomoflow reports failures itself); the grammar of
specs (:func:`parse_kind`, :func:`is_address`, :func:`invalid_spec`) is in ``_spec``.

Dask, CuPy, dask-cuda and dask-jobqueue are imported only inside the functions that need them:
importing this package imports none of them (``TomoflowClient``, a :class:`distributed.Client`
subclass, is built on first access), never touches CUDA, and CUDA must not be touched before a
``local-cuda`` cluster starts (otherwise every worker lands on GPU 0).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tomoflow.cluster._spec import VALID_SPECS, invalid_spec, is_address, parse_kind
from tomoflow.cluster.client import connect
from tomoflow.cluster.inspect import (
    ClusterResources,
    cluster_resources,
    dashboard_url,
    describe,
    gpu_resources_available,
)
from tomoflow.cluster.quiet import quiet_task_failures
from tomoflow.cluster.settings import CLUSTER_DIR_ENV, CLUSTER_KINDS, load_cluster_config
from tomoflow.cluster.start import check_worker_count, start_cluster

if TYPE_CHECKING:
    from tomoflow.cluster.client import TomoflowClient

__all__ = [
    "TomoflowClient",
    "VALID_SPECS",
    "CLUSTER_KINDS",
    "CLUSTER_DIR_ENV",
    "ClusterResources",
    "connect",
    "start_cluster",
    "check_worker_count",
    "load_cluster_config",
    "dashboard_url",
    "gpu_resources_available",
    "describe",
    "cluster_resources",
    "parse_kind",
    "is_address",
    "invalid_spec",
    "quiet_task_failures",
]


def __getattr__(name: str) -> Any:
    """``TomoflowClient`` is built (importing ``distributed``) on first access."""
    if name == "TomoflowClient":
        from tomoflow.cluster.client import _client_class

        return _client_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"TomoflowClient"})
