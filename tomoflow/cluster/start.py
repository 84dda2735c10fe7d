"""Start the clusters tomoflow can start: local, local-cuda (dask-cuda), SLURM and PBS (dask-jobqueue).

Dask, dask-cuda and dask-jobqueue are imported inside the functions that start a cluster, never at
module import: importing this module touches neither Dask nor CUDA.

What a started cluster exposes (see ``cluster/README.md``):

- nothing tomoflow starts listens on every interface (``0.0.0.0``) unless the settings say so
  (``host: 0.0.0.0``, ``dashboard_address: "0.0.0.0:8787"``): local clusters and every dashboard
  listen on ``127.0.0.1``; a SLURM / PBS scheduler listens on the address of ``interface`` (else on
  the address this machine reaches the network with), and its workers on the address of their node
  that reaches the scheduler;
- SLURM / PBS clusters, whose workers are on other machines, use TLS with temporary credentials
  (``security: true``, the default; ``security: false`` turns it off, a mapping names site
  certificates).

Worker counts of local clusters are checked against this machine before anything starts
(:func:`check_worker_count`).
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
import os
import re
import shlex
import shutil
import socket
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tomoflow.cluster._spec import invalid_spec, parse_kind
from tomoflow.cluster.settings import CLUSTER_KINDS, _config_dirs, _read_yaml, load_cluster_config
from tomoflow.errors import ConfigError, TomoflowError

__all__ = ["MAX_WORKERS_PER_CORE", "check_worker_count", "start_cluster"]

logger = logging.getLogger(__name__)

# Keys tomoflow reads itself; everything else in a jobqueue file goes to dask-jobqueue.
_JOBQUEUE_OWN_KEYS = ("jobs", "adapt", "gpus_per_job", "dashboard_address", "security")

#: Most workers (and threads per worker) a local cluster may have per CPU core of this machine. More
#: only oversubscribes it: ``--workers 1000`` on a 2-core machine once drove its load to 52.
MAX_WORKERS_PER_CORE = 4

#: Where temporary TLS credentials of SLURM / PBS workers are written (each file readable by its owner
#: only, deleted when the cluster closes) unless ``shared_temp_directory`` says otherwise. It must be
#: on a file system the compute nodes see: the home directory usually is.
DEFAULT_TLS_DIR = "~/.tomoflow/tls"

_WILDCARD_HOSTS = ("", "0.0.0.0", "::", "*")


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


def _free_dashboard_address(address: str | None) -> str:
    """Where the dashboard listens: ``address``, on loopback unless it names a host, on a free port.

    ``None`` is ``127.0.0.1:8787``; an address without a host (``":8787"``, ``"8787"``) means
    ``127.0.0.1`` too (Dask would listen on every interface): only an explicit ``0.0.0.0:8787`` (or
    ``[::]:8787``) does that. A busy port is replaced by one the OS picks (``:0``).
    """
    if address is None:
        address = "127.0.0.1:8787"
    host, port = _split_host_port(address)
    if not host:
        host = "127.0.0.1"
        logger.debug("dashboard address %r names no host; listening on 127.0.0.1", address)
    formatted = f"[{host}]" if ":" in host else host
    if port is None:
        port = 8787
    if port:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
        except OSError:
            logger.info("dashboard port %d is busy; the dashboard will use a free port instead", port)
            port = 0
    return f"{formatted}:{port}"


# --------------------------------------------------------------------------------------------------
# worker counts
# --------------------------------------------------------------------------------------------------


def _cpu_count() -> int:
    """CPU cores of this machine as Dask counts them (cgroup and affinity aware)."""
    from dask.system import CPU_COUNT

    return max(1, int(CPU_COUNT))


def check_worker_count(
    n_workers: Any, *, option: str = "n_workers", where: str = "local cluster", per_core: int | None = None
) -> int:
    """Check a number of local workers (or threads) against this machine before anything starts.

    Parameters
    ----------
    n_workers
        The number asked for.
    option
        How the caller spells the setting, for the message (``"n_workers"``, ``"--workers"``).
    where
        What the workers are for, the start of the message.
    per_core
        Most per CPU core; default :data:`MAX_WORKERS_PER_CORE`.

    Returns
    -------
    int
        ``n_workers``.

    Raises
    ------
    ConfigError
        Not an integer, less than 1, or more than ``per_core`` times this machine's CPU cores.
    """
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
        raise ConfigError(f"{where}: {option} must be a positive integer, got {n_workers!r}")
    per_core = MAX_WORKERS_PER_CORE if per_core is None else per_core
    cpus = _cpu_count()
    if n_workers > per_core * cpus:
        raise ConfigError(
            f"{where}: {n_workers} asked for {option}, more than this machine can run: it has {cpus} CPU "
            f"core{'s' if cpus != 1 else ''}, so at most {per_core * cpus} ({per_core} per core)"
        )
    return n_workers


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
        raise ConfigError(f"{settings.get('source', 'local cluster')}: unknown local-cluster settings {unknown}")
    processes = bool(opts.get("processes", True))
    opts["processes"] = processes
    if opts.get("n_workers") is None:
        opts["n_workers"] = CPU_COUNT if processes else 1
    check_worker_count(opts["n_workers"], option="n_workers (--workers)")
    if opts.get("threads_per_worker") is None:
        opts["threads_per_worker"] = 1 if processes else max(1, CPU_COUNT // opts["n_workers"])
    check_worker_count(opts["threads_per_worker"], option="threads_per_worker")
    opts["dashboard_address"] = _free_dashboard_address(opts.get("dashboard_address"))
    logger.info(
        "starting a local Dask cluster: %d workers x %d threads (%s)",
        opts["n_workers"],
        opts["threads_per_worker"],
        "processes" if processes else "threads",
    )
    return LocalCluster(**opts)


def _start_local_cuda(settings: dict[str, Any]) -> Any:
    if settings.get("n_workers") is not None:
        check_worker_count(settings["n_workers"], option="n_workers (--workers)", where="local-cuda cluster")
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError as exc:
        raise ConfigError(
            "cluster spec 'local-cuda' needs dask-cuda, which is not installed: pip install 'tomoflow[gpu]'"
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
    except Exception as exc:  # NVML / CUDA failures have many types
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
        raise TomoflowError(
            f"local-cuda cluster could not start: {exc} (is a CUDA GPU visible? CUDA_VISIBLE_DEVICES={visible})"
        ) from exc


def _jobqueue_class(kind: str) -> Any:
    try:
        import dask_jobqueue
    except ImportError as exc:
        raise ConfigError(
            f"cluster spec {kind!r} needs dask-jobqueue, which is not installed: pip install 'tomoflow[hpc]'"
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
        logger.info(
            "%s: gpus_per_job=%d: %d worker processes per job (one per GPU), not %s", source, gpus, gpus, processes
        )
    opts["processes"] = gpus
    # dask-cuda's worker starts one worker per visible GPU, each pinned with CUDA_VISIBLE_DEVICES.
    opts.setdefault("worker_command", "dask_cuda.cli")
    if opts["worker_command"] == "distributed.cli.dask_worker" and gpus > 1:
        logger.warning("%s: plain dask workers do not pin GPUs; all %d workers of a job will use GPU 0", source, gpus)
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


def _jobqueue_security(value: Any, source: str) -> Any:
    """The :class:`distributed.security.Security` of a SLURM / PBS cluster, ``None`` for plain TCP.

    ``False``: no TLS; a mapping: arguments of ``Security`` (the site's certificates:
    ``tls_ca_file``, ``tls_client_cert``, ...), encryption required; a ``Security`` object: used as it
    is. (``True`` / ``None``, temporary credentials, are made by :func:`_temporary_credentials`.)
    """
    from distributed.security import Security

    if value is False:
        return None
    if isinstance(value, Security):
        return value
    if isinstance(value, Mapping):
        try:
            return Security(**{"require_encryption": True, **dict(value)})
        except (TypeError, ValueError, OSError) as exc:
            raise ConfigError(f"{source}: invalid security settings: {exc}") from exc
    raise ConfigError(
        f"{source}: security must be true (TLS with temporary credentials, the default), false "
        f"(unencrypted TCP) or a mapping of distributed Security arguments (tls_ca_file, ...), got {value!r}"
    )


def _tls_directory(kind: str, opts: dict[str, Any], source: str) -> Path:
    """The folder for the workers' TLS files: ``shared_temp_directory``, else :data:`DEFAULT_TLS_DIR`
    (created readable by its owner only). Sets ``opts["shared_temp_directory"]`` to it."""
    import dask

    configured = opts.get("shared_temp_directory")
    if configured is None:
        configured = dask.config.get(f"jobqueue.{kind}.shared-temp-directory", None)
    path = Path(os.path.expandvars(os.path.expanduser(str(configured or DEFAULT_TLS_DIR))))
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        if configured is None:
            path.chmod(0o700)
    except OSError as exc:
        raise ConfigError(
            f"{source}: cannot create {path} for the workers' TLS credentials ({exc.strerror or exc}); "
            "set shared_temp_directory to a folder the compute nodes see"
        ) from exc
    opts["shared_temp_directory"] = str(path)
    return path


def _temporary_credentials(folder: Path, source: str) -> tuple[Any, Path]:
    """TLS credentials made for one cluster (:meth:`Security.temporary`): the scheduler and client keep
    them in memory; the workers' copies (CA, certificate, key) go to a new folder in ``folder``, every
    file readable by its owner only. Returns the ``Security`` and that folder (remove it at close)."""
    import tempfile

    from distributed.security import Security

    try:
        temp = Security.temporary()
    except ImportError as exc:
        raise ConfigError(
            f"{source}: TLS between machines (security: true, the default) needs the `cryptography` "
            "package: pip install 'tomoflow[hpc]' (or set security: false to run unencrypted)"
        ) from exc
    private = Path(tempfile.mkdtemp(prefix="tomoflow-cluster-", dir=folder))  # mode 0700
    paths = {}
    for name, text in (
        ("ca.pem", temp.tls_ca_file),
        ("worker.pem", temp.tls_worker_cert),
        ("worker.key", temp.tls_worker_key),
    ):
        paths[name] = private / name
        fd = os.open(paths[name], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(text)
    security = Security(
        require_encryption=True,
        tls_ca_file=str(paths["ca.pem"]),
        tls_worker_cert=str(paths["worker.pem"]),
        tls_worker_key=str(paths["worker.key"]),
        tls_scheduler_cert=temp.tls_scheduler_cert,
        tls_scheduler_key=temp.tls_scheduler_key,
        tls_client_cert=temp.tls_client_cert,
        tls_client_key=temp.tls_client_key,
    )
    return security, private


def _remove_with(cluster: Any, folder: Path) -> None:
    """Delete ``folder`` (the workers' credentials) when ``cluster`` closes, or at exit at the latest."""
    import weakref

    remove = weakref.finalize(cluster, shutil.rmtree, str(folder), True)
    close = cluster.close

    def close_and_remove(*args: Any, **kwargs: Any) -> Any:
        try:
            return close(*args, **kwargs)
        finally:
            remove()

    close_and_remove.__doc__ = close.__doc__
    cluster.close = close_and_remove


def _this_machine_address() -> str:
    """The IP address through which this machine reaches the network (as Dask advertises it)."""
    import warnings

    from distributed.utils import get_ip

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return str(get_ip())


def _flag_value(args: list[str], *flags: str) -> str | None:
    """The value of the first of ``flags`` in a command line (``""`` for a flag without one), else ``None``."""
    for i, arg in enumerate(args):
        for flag in flags:
            if arg == flag:
                return args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("-") else ""
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
    return None


def _restrict_listeners(kind: str, opts: dict[str, Any], scheduler_options: dict[str, Any], source: str) -> None:
    """Bind the scheduler and every worker listener to one address instead of all interfaces.

    The scheduler (in this process) listens on the address of ``interface`` when it is set, else on
    ``scheduler_options['host']``, else on the address this machine reaches the network with. Each
    worker job first prints (:mod:`tomoflow.cluster._node`) the address of its node that reaches the
    scheduler (or that of ``interface``) and starts ``dask worker --host <it> --dashboard-address
    <it>:0``: without that the worker and nanny would listen on every interface of the node, and the
    worker's diagnostics server does even with ``--interface``. Arguments the settings already give
    (``--host``, ``--listen-address``, ``--dashboard-address``, ``--no-dashboard``) are left alone.
    """
    import dask

    def setting(key: str, default: Any = None) -> Any:
        value = opts.get(key)
        if value is None:
            value = dask.config.get(f"jobqueue.{kind}.{key.replace('_', '-')}", default)
        return value

    interface = setting("interface")
    if interface is None and "host" not in scheduler_options and "interface" not in scheduler_options:
        scheduler_options["host"] = _this_machine_address()
        logger.info(
            "%s scheduler listens on %s (set `interface` to choose the network)", kind, scheduler_options["host"]
        )

    extra = [str(a) for a in (setting("worker_extra_args", []) or [])]
    worker_interface = interface or _flag_value(extra, "--interface")
    if worker_interface:
        locate = f"interface {shlex.quote(str(worker_interface))}"
    else:
        host = scheduler_options.get("host")
        if host is not None and str(host).strip("[]") not in _WILDCARD_HOSTS:
            target = str(host)
        elif scheduler_options.get("interface"):
            from tomoflow.cluster._node import interface_address

            try:
                target = interface_address(str(scheduler_options["interface"]))
            except ValueError as exc:
                raise ConfigError(f"{source}: scheduler_options.interface: {exc}") from exc
        else:
            target = _this_machine_address()
        locate = f"route {shlex.quote(target)}"

    add: list[str] = []
    if not worker_interface and _flag_value(extra, "--host", "--listen-address") is None:
        add += ["--host", "$TOMOFLOW_NODE_ADDRESS"]
    if _flag_value(extra, "--dashboard-address", "--dashboard", "--no-dashboard") is None:
        add += ["--dashboard-address", "$TOMOFLOW_NODE_HTTP"]
    if not add:
        return
    python = setting("python") or sys.executable
    prologue = [str(line) for line in (setting("job_script_prologue", []) or [])]
    prologue += [
        f'TOMOFLOW_NODE_ADDRESS="$({python} -m tomoflow.cluster._node {locate})" || exit 1',
        'case "$TOMOFLOW_NODE_ADDRESS" in *:*) TOMOFLOW_NODE_HTTP="[$TOMOFLOW_NODE_ADDRESS]:0" ;; '
        '*) TOMOFLOW_NODE_HTTP="$TOMOFLOW_NODE_ADDRESS:0" ;; esac',
    ]
    opts["job_script_prologue"] = prologue
    opts["worker_extra_args"] = extra + add


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

    value = own.get("security")
    security = None if value is None or value is True else _jobqueue_security(value, source)
    credentials: Path | None = None
    if value is not False:
        protocol = opts.get("protocol")
        if protocol not in (None, "tls", "tls://"):
            raise ConfigError(
                f"{source}: protocol {protocol!r} does not carry TLS; leave protocol unset (tls://) "
                "or set security: false"
            )
        folder = _tls_directory(kind, opts, source)
        opts["security"] = security  # None: temporary credentials, made just before the cluster starts
        opts["protocol"] = "tls://"
    else:
        logger.warning(
            "%s: security: false: scheduler and workers talk unencrypted TCP; whoever reaches their "
            "ports can run code as you",
            source,
        )

    scheduler_options = dict(opts.pop("scheduler_options", None) or {})
    dashboard = scheduler_options.get("dashboard_address", own.get("dashboard_address"))
    scheduler_options["dashboard_address"] = _free_dashboard_address(dashboard)
    _restrict_listeners(kind, opts, scheduler_options, source)
    opts["scheduler_options"] = scheduler_options

    unknown = sorted(set(opts) - _jobqueue_option_names(cls))
    if unknown:
        raise ConfigError(
            f"{source}: invalid {kind} settings: unknown keys {unknown} (see the comments in "
            f"cluster/{kind}.yaml and the {cls.__name__} documentation)"
        )
    logger.info("starting a %s Dask cluster (%s)", kind, source)
    if value is not False and security is None:
        opts["security"], credentials = _temporary_credentials(folder, source)
    try:
        cluster = cls(**opts)
    except BaseException as exc:
        if credentials is not None:
            shutil.rmtree(credentials, ignore_errors=True)
        if isinstance(exc, (TypeError, ValueError)):
            raise ConfigError(f"{source}: invalid {kind} settings: {exc}") from exc
        raise
    if credentials is not None:
        _remove_with(cluster, credentials)
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
        parsed = parse_kind(text)
        if parsed is None:
            raise invalid_spec(spec)
        kind, spec_profile = parsed
        profile = profile or spec_profile
    settings = load_cluster_config(kind, config_dir=config_dir, profile=profile, path=path)
    settings.update(options)
    if kind == "local":
        return _start_local(settings)
    if kind == "local-cuda":
        return _start_local_cuda(settings)
    return _start_jobqueue(settings)
