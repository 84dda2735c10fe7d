"""Quiet workers: no multi-line "Compute Failed" dumps while tomoflow reports task failures itself.

:class:`quiet_task_failures` is used by the command line around every cluster it starts and by
the batch runner (:func:`tomoflow.batch.run_batch`) around a batch: a failing task is one line (the
command's error, or the scan's line in the batch report, with the traceback in its log), not the
workers' dump of the task, exception and traceback. Distributed is imported only when a worker plugin
is made (importing this module does not import it).
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["quiet_task_failures"]

log = logging.getLogger(__name__)

_DASK_FAILURE_DUMPS = ("Compute Failed", "Exception during execution of task")


class _DropTaskFailureDumps(logging.Filter):
    """Drops distributed's multi-line dump of a failed task (key, task, exception, traceback): the batch
    reports every failure itself, in one line, with the traceback in the scan's log. Also drops
    distributed's "Sizeof calculation ... failed" warning: the workers' deep call-stack profiles, which
    the performance report collects, are too deep for ``sizeof`` (distributed then just measures them
    another way): nothing the user can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg if isinstance(record.msg, str) else ""
        if record.name == "distributed.sizeof":
            return "Sizeof calculation" not in record.getMessage()
        return not msg.startswith(_DASK_FAILURE_DUMPS)


_DROP = _DropTaskFailureDumps()
_QUIET_LOGGERS = ("distributed.worker", "distributed.sizeof")
_PLUGIN_NAME = "tomoflow-batch-quiet-task-failures"


def _quiet_here(on: bool) -> None:
    for name in _QUIET_LOGGERS:
        logger = logging.getLogger(name)
        (logger.addFilter if on else logger.removeFilter)(_DROP)


def _plugin_class() -> type:
    """The worker plugin class (made on first use: importing this module must not import distributed)."""
    cls = globals().get("_QuietTaskFailures")
    if cls is None:
        from distributed.diagnostics.plugin import WorkerPlugin

        class _QuietTaskFailures(WorkerPlugin):
            """Installs :class:`_DropTaskFailureDumps` on a worker for the duration of a batch."""

            name = _PLUGIN_NAME
            idempotent = True

            def setup(self, worker: Any) -> None:
                _quiet_here(True)

            def teardown(self, worker: Any) -> None:
                _quiet_here(False)

        _QuietTaskFailures.__module__ = __name__
        globals()["_QuietTaskFailures"] = cls = _QuietTaskFailures
    return cls


def __getattr__(name: str) -> Any:  # a worker unpickling the plugin finds its class here
    if name == "_QuietTaskFailures":
        return _plugin_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class quiet_task_failures:  # noqa: N801  (used as a function: `with quiet_task_failures(client):`)
    """While a batch runs: no "Compute Failed" dumps from the workers (a worker plugin, also on workers
    that join or restart) nor from this process (workers in threads)."""

    #: How many of these are open per client (the CLI's cluster and a batch inside it): the plugin is
    #: registered by the first and removed by the last.
    _depth: dict[int, int] = {}

    def __init__(self, client: Any) -> None:
        self.client = client
        self.registered = False

    def __enter__(self) -> None:
        _quiet_here(True)
        if self.client is None:
            return
        depth = self._depth.get(id(self.client), 0)
        self._depth[id(self.client)] = depth + 1
        if depth:
            return
        try:
            self.client.register_plugin(_plugin_class()(), name=_PLUGIN_NAME)
            self.registered = True
        except Exception as exc:  # noqa: BLE001 - quieter logs are a nicety: never fail the batch for them
            log.debug("cannot quiet the workers' task failure messages: %s", exc)

    def __exit__(self, *exc: Any) -> None:
        if self.client is not None:
            left = self._depth.get(id(self.client), 1) - 1
            if left:
                self._depth[id(self.client)] = left
                return
            self._depth.pop(id(self.client), None)
        _quiet_here(False)
        if self.registered:
            try:
                self.client.unregister_worker_plugin(_PLUGIN_NAME)
            except Exception as err:  # noqa: BLE001
                log.debug("cannot remove the worker plugin %s: %s", _PLUGIN_NAME, err)
