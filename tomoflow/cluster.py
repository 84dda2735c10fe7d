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
else in the directory named by the environment variable ``TOMOFLOW_CLUSTER_DIR``, else in the
``cluster/`` directory of a tomoflow source checkout. Keyword arguments override the file.

GPU tasks carry ``resources={"GPU": 1}``; only workers that advertise a ``GPU`` resource run them, and
a task asking for a resource that no worker has waits forever. :func:`gpu_resources_available` tells
whether a client's cluster can run GPU tasks.

>>> from tomoflow.cluster import connect, describe
>>> with connect("local", n_workers=2, processes=False) as client:  # doctest: +SKIP
...     print(describe(client))

CuPy, dask-cuda and dask-jobqueue are imported only inside the functions that need them: importing
this module never touches CUDA, and CUDA must not be touched before a ``local-cuda`` cluster starts
(otherwise every worker lands on GPU 0).
"""

from __future__ import annotations

import importlib.util
import inspect
import ipaddress
import json
import logging
import os
import re
import shutil
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from distributed import Client
from distributed.utils import format_dashboard_link

from tomoflow.errors import ConfigError, TomoflowError

__all__ = [
    "TomoflowClient",
    "VALID_SPECS",
    "CLUSTER_KINDS",
    "connect",
    "start_cluster",
    "load_cluster_config",
    "dashboard_url",
    "gpu_resources_available",
    "describe",
]

logger = logging.getLogger(__name__)

#: Cluster kinds tomoflow can start itself (each has a ``<kind>.yaml`` settings file).
CLUSTER_KINDS: tuple[str, ...] = ("local", "local-cuda", "slurm", "pbs")

#: Human-readable list of everything :func:`connect` accepts, used in error messages.
VALID_SPECS: tuple[str, ...] = (
    "local",
    "local-cuda",
    "slurm[:profile]",
    "pbs[:profile]",
    "tcp://host:port (or tls://, ucx://, inproc://, host:port)",
    "path/to/scheduler.json (an existing scheduler file)",
    "path/to/cluster.yaml (a settings file with a `kind:` key)",
)

#: Environment variable naming a directory of cluster settings files.
CLUSTER_DIR_ENV = "TOMOFLOW_CLUSTER_DIR"

_ADDRESS_SCHEMES = ("tcp", "tls", "inproc", "ucx", "ucxx", "ws", "wss")
_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")

# Built-in settings under the YAML files (the files in cluster/ repeat and annotate them).
_DEFAULTS: dict[str, dict[str, Any]] = {
    "local": {
        "n_workers": None,  # None: one worker per core (processes) or one worker (threads)
        "threads_per_worker": None,  # None: 1 with processes, all cores with threads
        "memory_limit": "auto",  # machine memory split evenly between workers
        "processes": True,
        "dashboard_address": "127.0.0.1:8787",
    },
    "local-cuda": {
        "n_workers": None,  # None: one worker per visible GPU
        "threads_per_worker": 4,
        "memory_limit": "auto",
        "dashboard_address": "127.0.0.1:8787",
        "rmm_pool_size": 0.5,
        "rmm_allocator_external_lib_list": ["cupy", "torch"],
    },
    "slurm": {"jobs": 1, "gpus_per_job": 0, "dashboard_address": "127.0.0.1:8787"},
    "pbs": {"jobs": 1, "gpus_per_job": 0, "dashboard_address": "127.0.0.1:8787"},
}

# Keys tomoflow reads itself; everything else in a jobqueue file goes to dask-jobqueue.
_JOBQUEUE_OWN_KEYS = ("jobs", "adapt", "gpus_per_job", "dashboard_address")


class TomoflowClient(Client):
    """A :class:`distributed.Client` that also closes the cluster :func:`connect` started for it.

    Use it as a context manager (``with connect("local") as client: ...``) or call :meth:`close`;
    either shuts down the client and, when tomoflow started the cluster, the cluster and its
    workers. A client connected to a scheduler that was already running leaves it running.
    """

    _tomoflow_cluster: Any = None

    @property
    def owned_cluster(self) -> Any:
        """The cluster this client started and will close, or ``None``."""
        return self._tomoflow_cluster

    def close(self, *args: Any, **kwargs: Any) -> Any:
        """Close the client, then the cluster it started (if any).

        Parameters
        ----------
        *args, **kwargs
            Passed to :meth:`distributed.Client.close` (``timeout``).
        """
        try:
            return super().close(*args, **kwargs)
        finally:
            cluster, self._tomoflow_cluster = self._tomoflow_cluster, None
            if cluster is not None and not sys.is_finalizing():
                try:
                    cluster.close()
                except Exception:  # noqa: BLE001 - closing must not mask the caller's error
                    logger.warning("closing the Dask cluster %r failed", cluster, exc_info=True)


# --------------------------------------------------------------------------------------------------
# settings files
# --------------------------------------------------------------------------------------------------


def _config_dirs(config_dir: str | os.PathLike | None) -> list[Path]:
    if config_dir is not None:
        return [Path(config_dir)]
    dirs = []
    if os.environ.get(CLUSTER_DIR_ENV):
        dirs.append(Path(os.environ[CLUSTER_DIR_ENV]))
    dirs.append(Path(__file__).resolve().parent.parent / "cluster")  # source checkout
    return dirs


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read cluster settings ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: cluster settings must be a mapping of keys to values")
    return dict(data)


def _apply_profile(data: dict[str, Any], profile: str | None, source: str) -> dict[str, Any]:
    profiles = data.pop("profiles", None) or {}
    if not isinstance(profiles, Mapping):
        raise ConfigError(f"{source}: `profiles` must map profile names to settings")
    if profile is None:
        return data
    if profile not in profiles:
        raise ConfigError(
            f"{source}: no profile {profile!r}; profiles in this file: {sorted(profiles) or 'none'}"
        )
    chosen = profiles[profile] or {}
    if not isinstance(chosen, Mapping):
        raise ConfigError(f"{source}: profile {profile!r} must be a mapping of settings")
    return {**data, **chosen}


def load_cluster_config(
    kind: str,
    *,
    config_dir: str | os.PathLike | None = None,
    profile: str | None = None,
    path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Read the settings of a cluster kind: built-in defaults, then its YAML file, then a profile.

    Parameters
    ----------
    kind
        ``"local"``, ``"local-cuda"``, ``"slurm"`` or ``"pbs"``.
    config_dir
        Directory holding ``<kind>.yaml``. Default: ``$TOMOFLOW_CLUSTER_DIR``, else the ``cluster/``
        directory of a tomoflow source checkout. A missing file leaves the built-in defaults.
    profile
        Name of an entry of the file's ``profiles:`` mapping (e.g. ``"gpu"``) whose keys override
        the top-level ones.
    path
        Read this file instead of looking ``<kind>.yaml`` up.

    Returns
    -------
    dict
        The merged settings, with ``kind`` set and, when a file was read, ``source`` (its path).

    Raises
    ------
    ConfigError
        Unknown kind, unreadable or invalid YAML, a ``kind:`` that contradicts ``kind``, or an
        unknown profile.
    """
    if kind not in CLUSTER_KINDS:
        raise ConfigError(f"unknown cluster kind {kind!r}; known kinds: {', '.join(CLUSTER_KINDS)}")
    settings: dict[str, Any] = dict(_DEFAULTS[kind])
    file: Path | None = None
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"{file}: cluster settings file not found")
    else:
        for d in _config_dirs(config_dir):
            candidate = d / f"{kind}.yaml"
            if candidate.is_file():
                file = candidate
                break
    data: dict[str, Any] = {}
    source = "built-in defaults"
    if file is not None:
        source = str(file)
        data = _read_yaml(file)
        file_kind = data.pop("kind", kind)
        if file_kind != kind:
            raise ConfigError(f"{file}: `kind: {file_kind}` but settings for {kind!r} were asked for")
        logger.debug("cluster settings for %r read from %s", kind, file)
    else:
        logger.debug(
            "no %s.yaml in %s; using built-in %r defaults",
            kind,
            ", ".join(map(str, _config_dirs(config_dir))),
            kind,
        )
    data = _apply_profile(data, profile, source)
    settings.update(data)
    settings["kind"] = kind
    if file is not None:
        settings["source"] = str(file)
    return settings


# --------------------------------------------------------------------------------------------------
# helpers
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


def _is_address(spec: str) -> bool:
    scheme, sep, _ = spec.partition("://")
    if sep:
        return scheme in _ADDRESS_SCHEMES
    return bool(_HOST_PORT.match(spec))


def _invalid_spec(spec: Any, why: str = "") -> ConfigError:
    lines = "\n  ".join(VALID_SPECS)
    reason = f" ({why})" if why else ""
    return ConfigError(f"invalid cluster spec {spec!r}{reason}; valid specs are:\n  {lines}")


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


def _parse_kind(spec: str) -> tuple[str, str | None] | None:
    kind, _, profile = spec.partition(":")
    if kind in CLUSTER_KINDS:
        if profile and kind in ("local", "local-cuda"):
            return None
        return kind, profile or None
    return None


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


# --------------------------------------------------------------------------------------------------
# connect
# --------------------------------------------------------------------------------------------------


def _connect_existing(
    address: str | None, scheduler_file: str | None, kwargs: dict[str, Any]
) -> TomoflowClient:
    where = address or scheduler_file
    try:
        if scheduler_file is not None:
            return TomoflowClient(scheduler_file=scheduler_file, **kwargs)
        return TomoflowClient(address, **kwargs)
    except (OSError, TimeoutError) as exc:
        raise TomoflowError(f"cannot reach the Dask scheduler at {where}: {exc}") from exc


def _check_scheduler_file(path: Path) -> None:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable Dask scheduler file ({exc})") from exc
    if not isinstance(info, Mapping) or "address" not in info:
        raise ConfigError(f"{path}: not a Dask scheduler file (no 'address' key)")


def connect(
    spec: str | os.PathLike = "local",
    *,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | int | float | None = None,
    processes: bool | int | None = None,
    dashboard_address: str | None = None,
    jobs: int | None = None,
    profile: str | None = None,
    config_dir: str | os.PathLike | None = None,
    **kwargs: Any,
) -> TomoflowClient:
    """Connect to a Dask cluster, starting one if the spec asks for it.

    Parameters
    ----------
    spec
        Where to run (see the module documentation): ``"local"`` (default), ``"local-cuda"``,
        ``"slurm[:profile]"``, ``"pbs[:profile]"``, a scheduler address (``"tcp://host:8786"``), an
        existing scheduler file (``"scheduler.json"``) or a ``.yaml`` settings file.
    n_workers, threads_per_worker, memory_limit
        Shape of a ``local`` / ``local-cuda`` cluster. Defaults (``cluster/local.yaml``): one
        single-threaded worker process per core, the machine's memory split evenly
        (``memory_limit="auto"``). With ``processes=False``: one worker using every core.
    processes
        ``local``: ``False`` runs workers as threads of this process (fast to start; for tests and
        small jobs). ``slurm`` / ``pbs``: Dask worker processes per job.
    dashboard_address
        Where the scheduler serves its dashboard; default ``"127.0.0.1:8787"``, or a free port on the
        same host when 8787 is taken. Reach it with :func:`dashboard_url`.
    jobs
        ``slurm`` / ``pbs``: number of batch jobs to submit (``0`` submits none).
    profile
        Profile of the settings file (e.g. ``"gpu"``); same as ``"slurm:gpu"``.
    config_dir
        Directory holding ``local.yaml``, ``slurm.yaml``, ...; see :func:`load_cluster_config`.
    **kwargs
        For clusters tomoflow starts: further settings of the cluster class (``LocalCluster``,
        ``LocalCUDACluster``, ``SLURMCluster``, ``PBSCluster``), overriding the file. For an address
        or scheduler file: arguments of :class:`distributed.Client` (``timeout``, ``security``).

    Returns
    -------
    TomoflowClient
        A :class:`distributed.Client`. Closing it (or leaving its ``with`` block) also closes the
        cluster that was started for it; a pre-existing scheduler is left running.

    Raises
    ------
    ConfigError
        Unknown spec (the message lists the valid ones), invalid settings, a scheduler file that does
        not exist, or a missing optional dependency (``pip install 'tomoflow[gpu]'`` / ``[hpc]``).
    TomoflowError
        The scheduler at an address or in a scheduler file cannot be reached.

    Examples
    --------
    >>> with connect("local", n_workers=2, processes=False) as client:  # doctest: +SKIP
    ...     client.submit(sum, [1, 2, 3]).result()
    6
    """
    text = os.fspath(spec).strip() if isinstance(spec, (str, os.PathLike)) else None
    if not text:
        raise _invalid_spec(spec, "empty or not a string")
    if text.startswith("~"):
        text = os.path.expanduser(text)
    shape = {
        "n_workers": n_workers,
        "threads_per_worker": threads_per_worker,
        "memory_limit": memory_limit,
        "processes": processes,
        "dashboard_address": dashboard_address,
        "jobs": jobs,
    }
    given = {k: v for k, v in shape.items() if v is not None}

    parsed = _parse_kind(text)
    is_settings_file = text.endswith((".yaml", ".yml"))

    # --- a scheduler that already runs --------------------------------------------------------
    existing_address: str | None = None
    existing_file: str | None = None
    if parsed is None and not is_settings_file:
        if _is_address(text):
            existing_address = text
        elif text.endswith(".json") or Path(text).is_file():
            path = Path(text)
            if not path.is_file():
                raise ConfigError(
                    f"{path}: scheduler file not found (has the scheduler started, and does this "
                    "machine see its file system?)"
                )
            _check_scheduler_file(path)
            existing_file = str(path)
        else:
            raise _invalid_spec(spec)
    if existing_address or existing_file:
        if given or profile or config_dir is not None:
            settings = sorted(given) + ([f"profile={profile}"] if profile else [])
            settings += ["config_dir"] if config_dir is not None else []
            raise ConfigError(
                f"{text!r} names a running scheduler; {settings} only apply to clusters tomoflow starts"
            )
        client = _connect_existing(existing_address, existing_file, kwargs)
        logger.info("connected to the Dask scheduler at %s", client.scheduler.address)
        return client

    # --- a cluster tomoflow starts ------------------------------------------------------------
    kind = parsed[0] if parsed is not None else None
    if kind in ("slurm", "pbs"):
        wrong = sorted(k for k in ("n_workers", "threads_per_worker", "memory_limit") if k in given)
        if wrong:
            raise ConfigError(
                f"{wrong} do not apply to {kind}; size jobs with cores, memory, processes and jobs"
            )
        if isinstance(processes, bool):
            raise ConfigError(f"{kind}: processes is the number of worker processes per job (an int)")
    elif kind is not None and "jobs" in given:
        raise ConfigError(f"jobs only applies to slurm and pbs, not {kind!r}")

    cluster = start_cluster(text, config_dir=config_dir, profile=profile, **given, **kwargs)
    try:
        client = TomoflowClient(cluster)
    except BaseException:
        cluster.close()
        raise
    client._tomoflow_cluster = cluster
    logger.info("Dask dashboard: %s", dashboard_url(client))
    return client


# --------------------------------------------------------------------------------------------------
# inspection
# --------------------------------------------------------------------------------------------------


def _in_process_scheduler(client: Client) -> Any:
    from distributed import Scheduler

    scheduler = getattr(getattr(client, "cluster", None), "scheduler", None)
    return scheduler if isinstance(scheduler, Scheduler) else None


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


def _workers(client: Client) -> dict[str, Any]:
    return dict(client.scheduler_info(n_workers=-1).get("workers", {}))


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
    return any(
        float((info.get("resources") or {}).get("GPU", 0)) >= 1 for info in _workers(client).values()
    )


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

    workers = _workers(client)
    threads = sum(int(w.get("nthreads", 0) or 0) for w in workers.values())
    memory = sum(int(w.get("memory_limit", 0) or 0) for w in workers.values())
    gpus = sum(float((w.get("resources") or {}).get("GPU", 0)) for w in workers.values())
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
