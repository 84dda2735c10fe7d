"""Dask scheduler preload of ``bench_gpu_align.py``: records every task a tomoflow command runs.

The benchmark runs the real CLI (``tomoflow correct``, ``tomoflow batch run``) in a child process with
this file as the scheduler's preload (``DASK_DISTRIBUTED__SCHEDULER__PRELOAD``) and the path of a JSON
Lines file in ``BENCH_TASK_RECORD``. Nothing in the command changes: the preload only listens.

Lines written (one JSON object each):

* ``{"event": "scheduler", "time": ..., "address": ..., "dashboard_port": ..., "dashboard_pages": [...]}``
  when the scheduler starts (the benchmark polls the dashboard with it while the command runs; the
  pages are the Bokeh applications the scheduler's dashboard serves);
* ``{"event": "task", "key": ..., "group": ..., "state": "memory" | "erred", "resources": {...},
  "worker": ..., "compute": [start, stop], "compute_s": ...}`` for every task that finished, with the
  resource restrictions the task carried when it was sent to a worker (``{"GPU": 1}`` on a GPU task).
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

ENV = "BENCH_TASK_RECORD"


class TaskRecorder:
    """Scheduler plugin: the resource restrictions and compute interval of every finished task."""

    name = "bench-task-recorder"

    def __init__(self, scheduler: Any, path: str) -> None:
        self.scheduler = scheduler
        self.path = path
        self.resources: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        with self._lock, open(self.path, "a") as fh:
            fh.write(json.dumps(record, default=str) + "\n")

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        from dask.utils import key_split

        k = str(key)
        if finish == "processing":
            ts = self.scheduler.tasks.get(key)
            self.resources[k] = dict(getattr(ts, "resource_restrictions", None) or {})
            return
        if start != "processing" or finish not in ("memory", "erred"):
            return
        spans = [s for s in kwargs.get("startstops") or () if s.get("action") == "compute"]
        rec: dict[str, Any] = {
            "event": "task",
            "key": k,
            "group": key_split(key),
            "state": finish,
            "resources": self.resources.pop(k, {}),
            "worker": kwargs.get("worker"),
        }
        if spans:
            t0, t1 = min(s["start"] for s in spans), max(s["stop"] for s in spans)
            rec["compute"] = [t0, t1]
            rec["compute_s"] = sum(s["stop"] - s["start"] for s in spans)
        self.write(rec)


def dask_setup(scheduler: Any) -> None:
    """Preload entry point (called by the scheduler as it starts)."""
    path = os.environ.get(ENV)
    if not path:
        return
    from distributed.diagnostics.plugin import SchedulerPlugin

    plugin_cls = type("BenchTaskRecorder", (TaskRecorder, SchedulerPlugin), {})
    plugin = plugin_cls(scheduler, path)
    scheduler.add_plugin(plugin)
    port = None
    try:
        port = scheduler.http_server.port
    except Exception:  # noqa: BLE001  (no dashboard: recorded as None)
        port = None
    pages: list[str] | str
    try:
        from distributed.dashboard.scheduler import applications

        pages = sorted(applications)
    except Exception as exc:  # noqa: BLE001  (no bokeh: no pages)
        pages = f"{type(exc).__name__}: {exc}"
    plugin.write(
        {
            "event": "scheduler",
            "time": time.time(),
            "address": scheduler.address,
            "dashboard_port": port,
            "dashboard_pages": pages,
        }
    )
