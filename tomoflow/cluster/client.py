"""Connect to a Dask cluster from one short spec: :func:`connect` and the client it returns.

:class:`TomoflowClient` subclasses :class:`distributed.Client`. So that importing this module does
not import ``distributed``, the class is built on first use (:func:`_client_class`) and handed out
by the module's ``__getattr__``; its behaviour lives in :class:`_ClusterOwner`.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tomoflow.cluster._spec import VALID_SPECS, invalid_spec, is_address, parse_kind
from tomoflow.cluster.inspect import dashboard_url
from tomoflow.cluster.start import start_cluster
from tomoflow.errors import ConfigError, TomoflowError

__all__ = ["TomoflowClient", "VALID_SPECS", "connect"]

logger = logging.getLogger(__name__)


class _ClusterOwner:
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
            return super().close(*args, **kwargs)  # type: ignore[misc]  # distributed.Client.close
        finally:
            cluster, self._tomoflow_cluster = self._tomoflow_cluster, None
            if cluster is not None and not sys.is_finalizing():
                try:
                    cluster.close()
                except Exception:  # closing must not mask the caller's error
                    logger.warning("closing the Dask cluster %r failed", cluster, exc_info=True)


if TYPE_CHECKING:
    from distributed import Client

    class TomoflowClient(_ClusterOwner, Client):  # the class _client_class() builds
        ...


@functools.cache
def _client_class() -> type[TomoflowClient]:
    """Build :class:`TomoflowClient` (``_ClusterOwner`` + :class:`distributed.Client`) once."""
    from distributed import Client

    namespace = {"__module__": "tomoflow.cluster", "__doc__": _ClusterOwner.__doc__}
    return type("TomoflowClient", (_ClusterOwner, Client), namespace)


def __getattr__(name: str) -> Any:
    if name == "TomoflowClient":
        return _client_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _connect_existing(address: str | None, scheduler_file: str | None, kwargs: dict[str, Any]) -> TomoflowClient:
    where = address or scheduler_file
    try:
        if scheduler_file is not None:
            return _client_class()(scheduler_file=scheduler_file, **kwargs)
        return _client_class()(address, **kwargs)
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
        ``n_workers`` and ``threads_per_worker`` must be between 1 and 4 per CPU core of this machine
        (:func:`~tomoflow.cluster.check_worker_count`).
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
        ``LocalCUDACluster``, ``SLURMCluster``, ``PBSCluster``), overriding the file; for ``slurm`` /
        ``pbs`` also ``security`` (``True``, the default: TLS with temporary credentials; ``False``:
        plain TCP; or a mapping of :class:`distributed.security.Security` arguments). For an address
        or scheduler file: arguments of :class:`distributed.Client` (``timeout``, ``security``).

    Returns
    -------
    TomoflowClient
        A :class:`distributed.Client`. Closing it (or leaving its ``with`` block) also closes the
        cluster that was started for it; a pre-existing scheduler is left running.

    Raises
    ------
    ConfigError
        Unknown spec (the message lists the valid ones), invalid settings (among them a worker count
        this machine cannot run), a scheduler file that does not exist, or a missing optional
        dependency (``pip install 'tomoflow[gpu]'`` / ``[hpc]``).
    TomoflowError
        The scheduler at an address or in a scheduler file cannot be reached.

    Examples
    --------
    >>> with connect("local", n_workers=2, processes=False) as client:
    ...     client.submit(sum, [1, 2, 3]).result()
    6
    """
    text = os.fspath(spec).strip() if isinstance(spec, (str, os.PathLike)) else None
    if not text:
        raise invalid_spec(spec, "empty or not a string")
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

    parsed = parse_kind(text)
    is_settings_file = text.endswith((".yaml", ".yml"))

    # --- a scheduler that already runs --------------------------------------------------------
    existing_address: str | None = None
    existing_file: str | None = None
    if parsed is None and not is_settings_file:
        if is_address(text):
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
            raise invalid_spec(spec)
    if existing_address or existing_file:
        if given or profile or config_dir is not None:
            settings = sorted(given) + ([f"profile={profile}"] if profile else [])
            settings += ["config_dir"] if config_dir is not None else []
            raise ConfigError(f"{text!r} names a running scheduler; {settings} only apply to clusters tomoflow starts")
        client = _connect_existing(existing_address, existing_file, kwargs)
        logger.info("connected to the Dask scheduler at %s", client.scheduler.address)
        return client

    # --- a cluster tomoflow starts ------------------------------------------------------------
    kind = parsed[0] if parsed is not None else None
    if kind in ("slurm", "pbs"):
        wrong = sorted(k for k in ("n_workers", "threads_per_worker", "memory_limit") if k in given)
        if wrong:
            raise ConfigError(f"{wrong} do not apply to {kind}; size jobs with cores, memory, processes and jobs")
        if isinstance(processes, bool):
            raise ConfigError(f"{kind}: processes is the number of worker processes per job (an int)")
    elif kind is not None and "jobs" in given:
        raise ConfigError(f"jobs only applies to slurm and pbs, not {kind!r}")

    cluster = start_cluster(text, config_dir=config_dir, profile=profile, **given, **kwargs)
    try:
        client = _client_class()(cluster)
    except BaseException:
        cluster.close()
        raise
    client._tomoflow_cluster = cluster
    logger.info("Dask dashboard: %s", dashboard_url(client))
    return client
