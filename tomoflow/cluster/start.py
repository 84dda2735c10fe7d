"""Start the clusters tomoflow can start: local, local-cuda (dask-cuda), SLURM and PBS (dask-jobqueue).

Dask, dask-cuda and dask-jobqueue are imported inside the functions that start a cluster, never at
module import: importing this module touches neither Dask nor CUDA.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
import re
import shutil
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tomoflow.cluster._spec import _invalid_spec, _parse_kind
from tomoflow.cluster.settings import CLUSTER_KINDS, _config_dirs, _read_yaml, load_cluster_config
from tomoflow.errors import ConfigError, TomoflowError

__all__ = ["start_cluster"]

logger = logging.getLogger(__name__)

# Keys tomoflow reads itself; everything else in a jobqueue file goes to dask-jobqueue.
_JOBQUEUE_OWN_KEYS = ("jobs", "adapt", "gpus_per_job", "dashboard_address")


# --------------------------------------------------------------------------------------------------
# the dashboard port
# --------------------------------------------------------------------------------------------------


def _split_host_port(address: str) -> tuple[str, int | None]:
    """``"127.0.0.1:8787"`` -> ("127.0.0.1", 8787); ``":8787"`` -> ("", 8787); ``"8787"`` -> ("", 8787)."""
    address = str(address).strip()
    if address.isdigit():
        return "", int(address)
    host, sep, port = address.rpartition(":")
    if not sep:
        return address, None
    host = host.strip("[]")
    try:
        return host, int(port)
    except ValueError as exc:
        raise ConfigError(f"dashboard address {address!r} is not 'host:port'") from exc


def _free_dashboard_address(address: str | None) -> str | None:
    """Keep ``address`` if its port is free, else the same host on a port the OS picks (``:0``)."""
    if address is None:
        return None
    host, port = _split_host_port(address)
    if not port:
        return address
    probe_host = host or "0.0.0.0"
    family = socket.AF_INET6 if ":" in probe_host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((probe_host, port))
    except OSError:
        fallback = f"[{host}]:0" if ":" in host else f"{host}:0"
        logger.info("dashboard port %d is busy; the dashboard will use a free port instead", port)
        return fallback
    return address


# --------------------------------------------------------------------------------------------------
# starting clusters
# --------------------------------------------------------------------------------------------------


def _local_option_names() -> set[str]:
    from distributed import LocalCluster, Worker

    names = set(inspect.signature(LocalCluster).parameters)
    names |= set(inspect.signature(Worker.__init__).parameters)
    return names - {"self", "kwargs", "worker_kwargs", "scheduler_ip", "scheduler_port"}


def _start_local(settings: dict[str, Any]) -> Any:
    from dask.system import CPU_COUNT
    from distributed import LocalCluster

    opts = {k: v for k, v in settings.items() if k not in ("kind", "source")}
    unknown = sorted(set(opts) - _local_option_names())
    if unknown:
        raise ConfigError(
            f"{settings.get('source', 'local cluster')}: unknown local-cluster settings {unknown}"
        )
    processes = bool(opts.get("processes", True))
    opts["processes"] = processes
    if opts.get("n_workers") is None:
        opts["n_workers"] = CPU_COUNT if processes else 1
    if opts.get("threads_per_worker") is None:
        opts["threads_per_worker"] = 1 if processes else max(1, CPU_COUNT // opts["n_workers"])
    for key in ("n_workers", "threads_per_worker"):
        value = opts[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "n_workers" else 1):
            raise ConfigError(f"local cluster: {key} must be a positive integer, got {value!r}")
    opts["dashboard_address"] = _free_dashboard_address(opts.get("dashboard_address"))
    logger.info(
        "starting a local Dask cluster: %d workers x %d threads (%s)",
        opts["n_workers"],
        opts["threads_per_worker"],
        "processes" if processes else "threads",
    )
    return LocalCluster(**opts)


def _start_local_cuda(settings: dict[str, Any]) -> Any:
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError as exc:
        raise ConfigError(
            "cluster spec 'local-cuda' needs dask-cuda, which is not installed: "
            "pip install 'tomoflow[gpu]'"
        ) from exc

    opts = {k: v for k, v in settings.items() if k not in ("kind", "source")}
    if opts.get("processes") is False:
        raise ConfigError("local-cuda: workers must be processes (one per GPU); remove processes=False")
    opts.pop("processes", None)
    resources = dict(opts.pop("resources", None) or {})
    resources.setdefault("GPU", 1)
    opts["resources"] = resources
    rmm_keys = [k for k in opts if k.startswith("rmm_")]
    if importlib.util.find_spec("rmm") is None:
        dropped = [k for k in rmm_keys if opts.get(k) not in (None, False)]
        if dropped:
            logger.info("RMM is not installed: GPU memory pool disabled (ignoring %s)", dropped)
        for k in rmm_keys:
            opts.pop(k)
    else:
        accepted = inspect.signature(LocalCUDACluster).parameters
        for k in rmm_keys:
            if k not in accepted:
                logger.info("this dask-cuda does not accept %s; ignoring it", k)
                opts.pop(k)
    opts["dashboard_address"] = _free_dashboard_address(opts.get("dashboard_address"))
    opts = {k: v for k, v in opts.items() if v is not None or k == "dashboard_address"}
    logger.info("starting a local CUDA Dask cluster (one worker per GPU, resources=%s)", resources)
    source = settings.get("source", "local-cuda settings")
    try:
        return LocalCUDACluster(**opts)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: invalid local-cuda settings: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - NVML / CUDA failures have many types
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
        raise TomoflowError(
            f"local-cuda cluster could not start: {exc} (is a CUDA GPU visible? "
            f"CUDA_VISIBLE_DEVICES={visible})"
        ) from exc


def _jobqueue_class(kind: str) -> Any:
    try:
        import dask_jobqueue
    except ImportError as exc:
        raise ConfigError(
            f"cluster spec {kind!r} needs dask-jobqueue, which is not installed: "
            "pip install 'tomoflow[hpc]'"
        ) from exc
    return {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[kind]


def _jobqueue_option_names(cls: Any) -> set[str]:
    """Keyword arguments a dask-jobqueue cluster class accepts (its own, its job class's, the bases')."""
    from dask_jobqueue.core import Job, JobQueueCluster

    names: set[str] = set()
    for fn in (cls.__init__, JobQueueCluster.__init__, cls.job_cls.__init__, Job.__init__):
        names |= set(inspect.signature(fn).parameters)
    return names - {"self", "args", "kwargs", "job_kwargs", "base_class_kwargs"}


def _apply_gpus(kind: str, opts: dict[str, Any], gpus: int, source: str) -> None:
    """One Dask worker per GPU: processes = gpus, dask-cuda worker, ``--resources GPU=1``."""
    processes = opts.get("processes")
    if processes not in (None, gpus):
        logger.info("%s: gpus_per_job=%d: %d worker processes per job (one per GPU), not %s",
                    source, gpus, gpus, processes)
    opts["processes"] = gpus
    # dask-cuda's worker starts one worker per visible GPU, each pinned with CUDA_VISIBLE_DEVICES.
    opts.setdefault("worker_command", "dask_cuda.cli")
    if opts["worker_command"] == "distributed.cli.dask_worker" and gpus > 1:
        logger.warning(
            "%s: plain dask workers do not pin GPUs; all %d workers of a job will use GPU 0", source, gpus
        )
    extra = [str(a) for a in (opts.get("worker_extra_args") or [])]
    if "--resources" not in extra:
        extra += ["--resources", "GPU=1"]
    opts["worker_extra_args"] = extra
    if kind == "slurm":
        directives = [str(d) for d in (opts.get("job_extra_directives") or [])]
        if not any(re.search(r"--(gres|gpus)\b|--gpus-per", d) for d in directives):
            directives.append(f"--gres=gpu:{gpus}")
        opts["job_extra_directives"] = directives
    elif kind == "pbs" and not opts.get("resource_spec"):
        from dask.utils import parse_bytes
        from dask_jobqueue.pbs import pbs_format_bytes_ceil

        if opts.get("cores") is None or opts.get("memory") is None:
            raise ConfigError(f"{source}: PBS GPU jobs need `cores` and `memory`")
        memory = pbs_format_bytes_ceil(parse_bytes(opts["memory"]))
        opts["resource_spec"] = f"select=1:ncpus={opts['cores']}:ngpus={gpus}:mem={memory}"


def _start_jobqueue(settings: dict[str, Any]) -> Any:
    kind = settings["kind"]
    source = settings.get("source", f"{kind} settings")
    cls = _jobqueue_class(kind)
    opts = {k: v for k, v in settings.items() if k not in ("kind", "source")}
    own = {k: opts.pop(k) for k in _JOBQUEUE_OWN_KEYS if k in opts}

    jobs = own.get("jobs", 1)
    if jobs is None:
        jobs = 0
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 0:
        raise ConfigError(f"{source}: jobs must be an integer >= 0, got {jobs!r}")
    gpus = own.get("gpus_per_job") or 0
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        raise ConfigError(f"{source}: gpus_per_job must be an integer >= 0, got {gpus!r}")
    adapt = own.get("adapt")
    if adapt is not None and not isinstance(adapt, Mapping):
        raise ConfigError(f"{source}: adapt must be a mapping like {{minimum_jobs: 0, maximum_jobs: 8}}")
    if opts.get("cores") is None or opts.get("memory") is None:
        raise ConfigError(
            f"{source}: a {kind} cluster needs `cores` and `memory` per job; set them in {kind}.yaml "
            f"(searched: {', '.join(str(d / (kind + '.yaml')) for d in _config_dirs(None))}) "
            "or pass them to connect()"
        )
    if gpus:
        _apply_gpus(kind, opts, gpus, source)

    scheduler_options = dict(opts.pop("scheduler_options", None) or {})
    dashboard = scheduler_options.get("dashboard_address", own.get("dashboard_address"))
    scheduler_options["dashboard_address"] = _free_dashboard_address(dashboard)
    opts["scheduler_options"] = scheduler_options

    unknown = sorted(set(opts) - _jobqueue_option_names(cls))
    if unknown:
        raise ConfigError(
            f"{source}: invalid {kind} settings: unknown keys {unknown} (see the comments in "
            f"cluster/{kind}.yaml and the {cls.__name__} documentation)"
        )
    logger.info("starting a %s Dask cluster (%s)", kind, source)
    try:
        cluster = cls(**opts)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: invalid {kind} settings: {exc}") from exc
    try:
        if jobs or adapt:
            submit = str(cluster.job_cls.submit_command).split()[0]
            if shutil.which(submit) is None:
                raise ConfigError(
                    f"{kind}: `{submit}` not found; start tomoflow on a {kind.upper()} login node "
                    "(or use jobs: 0 to only build the job script)"
                )
        if adapt:
            cluster.adapt(**dict(adapt))
            logger.info("%s cluster adapts between %s", kind, dict(adapt))
        elif jobs:
            cluster.scale(jobs=jobs)
            logger.info("%d %s job(s) submitted", jobs, kind)
    except BaseException:
        cluster.close()
        raise
    return cluster


def start_cluster(
    spec: str = "local",
    *,
    config_dir: str | os.PathLike | None = None,
    profile: str | None = None,
    **options: Any,
) -> Any:
    """Start (without connecting) a cluster of one of the kinds tomoflow can start.

    Parameters
    ----------
    spec
        ``"local"``, ``"local-cuda"``, ``"slurm[:profile]"``, ``"pbs[:profile]"`` or the path of a
        ``.yaml`` settings file with a ``kind:`` key.
    config_dir
        Directory of the ``<kind>.yaml`` settings files (see :func:`load_cluster_config`).
    profile
        Profile of the settings file to apply (same as the ``:profile`` suffix).
    **options
        Settings overriding the file, e.g. ``n_workers=2`` (local) or ``cores=8, jobs=0``
        (SLURM/PBS; ``jobs=0`` builds the cluster and its job script without submitting a job).

    Returns
    -------
    distributed.deploy.Cluster
        The running cluster; close it with ``cluster.close()``.

    Raises
    ------
    ConfigError
        Invalid spec or settings, or a missing optional dependency (named with its extra).
    """
    text = os.path.expanduser(os.fspath(spec))
    path = None
    if text.endswith((".yaml", ".yml")):
        path = Path(text)
        if not path.is_file():
            raise ConfigError(f"{path}: cluster settings file not found")
        kind = _read_yaml(path).get("kind")
        if kind not in CLUSTER_KINDS:
            raise ConfigError(f"{path}: `kind:` must be one of {', '.join(CLUSTER_KINDS)}, got {kind!r}")
    else:
        parsed = _parse_kind(text)
        if parsed is None:
            raise _invalid_spec(spec)
        kind, spec_profile = parsed
        profile = profile or spec_profile
    settings = load_cluster_config(kind, config_dir=config_dir, profile=profile, path=path)
    settings.update(options)
    if kind == "local":
        return _start_local(settings)
    if kind == "local-cuda":
        return _start_local_cuda(settings)
    return _start_jobqueue(settings)
