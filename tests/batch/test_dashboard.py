"""The Dask dashboard while a batch runs (issue 9): it answers with real content, and shows the batch.

A batch of small simulated DXchange scans (ingest -> align (phase) -> recon) runs in a background thread
on a real LocalCluster of two worker processes. While it runs:

* ``test_dashboard_serves_the_running_batch`` reads the scheduler's HTTP endpoints: ``/json/counts.json``
  (two workers, tasks processing), ``/info/main/workers.html`` (both workers listed),
  ``/info/worker/<address>.html`` (the task keys each worker processes / holds: the batch's keys must be
  among them), the Bokeh pages ``/status``, ``/individual-progress`` and ``/individual-task-stream``, and
  the ``/eventstream`` websocket, which reports every task a worker finished: every scan's
  ``ingest-<token>-<scan>`` task and the align/recon task groups must come through it.
* ``test_browser_screenshot_of_status_during_batch`` loads ``/status`` in headless Chromium (Debian's
  ``chromium`` package; skipped with how to install it when there is none), waits, through the DevTools
  protocol, until the page's Bokeh documents hold the batch's task groups (a plain ``--screenshot`` or
  ``--dump-dom`` is taken before the dashboard's websocket has delivered anything: an empty page), then
  saves a screenshot (pytest's tmp_path, and ``$TOMOFLOW_SCREENSHOT_DIR`` when set) and checks it is
  not blank.
"""

from __future__ import annotations

import asyncio
import base64
import html
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tomoflow.batch import COMPLETE, BatchResult, load_manifest, run_batch
from tomoflow.testing import assert_dashboard_page, http_get, write_manifest_yaml, write_small_dxchange

pytestmark = pytest.mark.slow

# Small scans (32 angles of 16 x 32): ~0.3-0.5 s each through ingest, align and recon on two workers.
ANGLES = np.linspace(0, 180, 32, endpoint=False)
ROWS, COLS = 16, 32
N_HTTP = 12  # the HTTP checks need a second or two of a running batch
N_BROWSER = 24  # Chromium renders the page after 2-3 s here (it competes with the workers for the 2 cores)
IN_FLIGHT = 2
#: Task groups of the batch (tomoflow's readable task names) that the dashboard must show.
BATCH_GROUPS = (
    "ingest",
    "flat-field-correct",
    "align-mlem",
    "align-reproject",
    "align-register",
    "align-shift",
    "align-result",
    "recon",
)  # a scan this small is reconstructed in one task (batch.py)
SCREENSHOT_ENV = "TOMOFLOW_SCREENSHOT_DIR"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "headless_shell")
BROWSER_TIMEOUT_S = 60.0
WINDOW = (1400, 900)


# ----------------------------------------------------------------------------- archive, cluster, batch
@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dashboard-batch")
    (root / "raw").mkdir()
    for i in range(max(N_HTTP, N_BROWSER)):
        write_small_dxchange(root / "raw" / f"scan-{i:02d}.h5", i % 4, angles_deg=ANGLES, rows=ROWS, cols=COLS)
    return root


def _manifest(archive: Path, output: str, n: int):
    scans = [f"name: scan-{i:02d}, path: raw/scan-{i:02d}.h5, pixel_size_um: 0.5" for i in range(n)]
    path = write_manifest_yaml(archive / f"{output}.yaml", output, scans, max_scans_in_flight=IN_FLIGHT)
    return load_manifest(path)


@pytest.fixture(scope="module")
def client():
    """Two single-threaded worker processes, the dashboard on a free port."""
    from tomoflow.cluster import connect

    with connect("local", processes=True, n_workers=2, threads_per_worker=1, dashboard_address=":0") as c:
        yield c


@pytest.fixture(scope="module")
def dashboard(client) -> str:
    """Base URL of the scheduler's dashboard (``http://127.0.0.1:<port>``)."""
    from tomoflow.cluster import dashboard_url

    url = dashboard_url(client)
    assert url.startswith("http://127.0.0.1:") and url.endswith("/status"), url
    return url.rsplit("/", 1)[0]


class BatchThread(threading.Thread):
    """``run_batch`` in a background thread; :meth:`result` joins it and re-raises its error."""

    def __init__(self, manifest, client) -> None:
        super().__init__(name="tomoflow-test-batch", daemon=True)
        self.manifest, self.client = manifest, client
        self._result: BatchResult | None = None
        self._error: BaseException | None = None

    def run(self) -> None:
        try:
            self._result = run_batch(self.manifest, client=self.client, report_every_s=2.0)
        except BaseException as exc:  # noqa: BLE001 - re-raised by result()
            self._error = exc

    def result(self, timeout: float = 120.0) -> BatchResult:
        self.join(timeout)
        assert not self.is_alive(), f"the batch did not finish within {timeout:.0f} s"
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result


def _assert_batch_succeeded(result: BatchResult, n: int) -> None:
    assert len(result.scans) == n and result.ok, result.counts()
    assert all(
        s.status == COMPLETE and [st.stage for st in s.stages] == ["ingest", "align", "recon"] for s in result.scans
    ), [(s.name, s.status, s.error) for s in result.scans if s.status != COMPLETE]


# ----------------------------------------------------------------------------- HTTP
_TASK_LINK = re.compile(r'href="\.\./task/[^"]*\.html">([^<]+)</a>')


def _worker_page_keys(base: str, worker: str) -> set[str]:
    """Task keys on the scheduler's page of one worker (its 'In Memory' and 'Processing' tables)."""
    status, body = http_get(f"{base}/info/worker/{urllib.parse.quote(worker, safe='')}.html")
    assert status == 200, (worker, status)
    return {html.unescape(k).strip() for k in _TASK_LINK.findall(body)}


def _group(key: Any) -> str:
    from dask.utils import key_split

    return key_split(tuple(key) if isinstance(key, list) else key)  # JSON turns tuple keys into lists


def _batch_groups(keys) -> set[str]:
    """The batch's task groups among ``keys`` (strings as the HTML pages print them, or JSON keys)."""
    out = set()
    for k in keys:
        text = str(k)
        out.update(g for g in BATCH_GROUPS if re.search(rf"(^|['\"(\[]){re.escape(g)}-[0-9a-f]{{8}}", text))
    return out


class EventStream:
    """The scheduler's ``/eventstream`` websocket (one message per finished task), read in a thread."""

    def __init__(self, base: str) -> None:
        self.url = base.replace("http://", "ws://", 1) + "/eventstream"
        self.messages: list[dict[str, Any]] = []
        self._open, self._stop = threading.Event(), threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="eventstream", daemon=True)

    async def _main(self) -> None:
        from tornado.websocket import websocket_connect

        try:
            ws = await websocket_connect(self.url, on_message_callback=self._receive)
        except BaseException as exc:  # noqa: BLE001 - reported by __enter__
            self._error = exc
            self._open.set()
            return
        try:
            while not self._stop.is_set():
                await asyncio.sleep(0.05)
        finally:
            ws.close()

    def _receive(self, message: str | bytes | None) -> None:
        if message is not None:
            self.messages.append(json.loads(message))
            if sum(m.get("name") == "add_worker" for m in self.messages) >= 2:  # sent on open: plugin registered
                self._open.set()

    def transitions(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("name") == "transition"]

    def __enter__(self) -> EventStream:
        self._thread.start()
        assert self._open.wait(20), f"{self.url}: no answer (messages: {self.messages[:3]})"
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: Any) -> None:
        time.sleep(0.5)  # the last transitions
        self._stop.set()
        self._thread.join(10)


# ----------------------------------------------------------------------------- test: HTTP endpoints
def test_dashboard_serves_the_running_batch(archive, client, dashboard):
    m = _manifest(archive, "http", N_HTTP)
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    assert len(workers) == 2, workers
    checks: dict[str, bool] = dict.fromkeys(("counts", "workers-page", "worker-pages", "bokeh-pages"), False)
    keys_seen: set[str] = set()
    counts_seen: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with EventStream(dashboard) as events:
        batch = BatchThread(m, client)
        batch.start()
        while batch.is_alive() and not all(checks.values()):
            status, body = http_get(f"{dashboard}/json/counts.json")
            assert status == 200, status
            counts = json.loads(body)
            counts_seen.append(counts)
            assert counts["workers"] == 2 and counts["cores"] == 2, counts
            checks["counts"] |= counts["tasks"] > 0 and counts["processing"] > 0
            if not checks["workers-page"]:
                status, body = http_get(f"{dashboard}/info/main/workers.html")
                assert status == 200 and "Scheduler tcp://" in body, (status, body[:500])
                checks["workers-page"] = all(w in body for w in workers)
            for w in workers:
                keys_seen |= _worker_page_keys(dashboard, w)
            checks["worker-pages"] = len(_batch_groups(keys_seen)) >= 2
            if not checks["bokeh-pages"]:
                for page in ("status", "individual-progress", "individual-task-stream"):
                    assert_dashboard_page(f"{dashboard}/{page}")
                checks["bokeh-pages"] = True
            time.sleep(0.05)
        seen_while_running = batch.is_alive()
        checked_s = time.perf_counter() - t0
        result = batch.result()
    batch_s = time.perf_counter() - t0

    assert all(checks.values()) and seen_while_running, (
        f"the batch ended ({batch_s:.1f} s) before the dashboard showed it: checks {checks}; keys seen on the "
        f"worker pages {sorted(keys_seen)[:20]}; last counts {counts_seen[-1:]}"
    )
    print(
        f"dashboard checks done after {checked_s:.1f} s of a {batch_s:.1f} s batch; keys seen on the worker "
        f"pages: {len(keys_seen)} of groups {sorted(_batch_groups(keys_seen))}"
    )
    _assert_batch_succeeded(result, N_HTTP)

    # every task a worker finished came through /eventstream: each scan's ingest task by its key, the
    # align and recon groups, on both workers
    done = events.transitions()
    keys = {str(ev["key"]) for ev in done}
    for s in m.scans:
        assert any(re.fullmatch(rf"ingest-[0-9a-f]{{8}}-{re.escape(s.name)}", k) for k in keys), (s.name, keys)
    groups = {_group(ev["key"]) for ev in done}
    assert {"ingest", "flat-field-correct", "align-shift", "recon"} <= groups, groups
    assert {ev.get("worker") for ev in done} == set(workers)


# ----------------------------------------------------------------------------- headless Chromium
@pytest.fixture(scope="module")
def browser() -> str:
    """The headless Chromium to use (first on PATH of :data:`BROWSERS`); skips the test where there is none
    (module-scoped and asked first, so that no cluster starts for nothing)."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(
        f"no headless Chromium on PATH (looked for {', '.join(BROWSERS)}): install Debian's with "
        "`apt-get install --no-install-recommends chromium` (as root), or run `make browser`"
    )


class _DevTools:
    """A minimal Chrome DevTools Protocol client over tornado's websocket (tornado comes with distributed)."""

    def __init__(self, ws) -> None:
        self.ws, self.n = ws, 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.n += 1
        await self.ws.write_message(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            message = await self.ws.read_message()
            if message is None:
                raise RuntimeError(f"DevTools connection closed during {method}")
            reply = json.loads(message)
            if reply.get("id") == self.n:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    async def js(self, expression: str) -> Any:
        reply = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression[:60]}...: {reply['exceptionDetails']}")
        return reply["result"].get("value")


#: What the page's Bokeh documents hold: the strings of their data sources (task names, workers, ...),
#: the number of rendered views and of canvases (inside Bokeh's shadow roots).
_PROBE = r"""(() => {
  const B = window.Bokeh, strings = new Set();
  let canvases = 0;
  const walk = (root) => { for (const el of root.querySelectorAll('*')) {
    if (el.tagName === 'CANVAS') canvases++;
    if (el.shadowRoot) walk(el.shadowRoot);
  } };
  walk(document);
  if (!B || !B.documents) return {docs: 0, views: 0, canvases, strings: []};
  for (const doc of B.documents) for (const model of doc.all_models) {
    const data = model.data;
    if (!data || typeof data !== 'object') continue;
    for (const column of (data instanceof Map ? data.values() : Object.values(data)))
      if (Array.isArray(column)) for (const v of column.slice(-2000)) if (typeof v === 'string') strings.add(v);
  }
  return {docs: B.documents.length, views: Object.keys(B.index || {}).length, canvases, strings: [...strings]};
})()"""


async def _render_and_capture(browser: str, url: str, profile: Path, stderr, running) -> dict[str, Any]:
    """Open ``url`` in headless Chromium, wait until its Bokeh documents show the batch's task groups and
    have painted, then capture a screenshot; returns what was seen."""
    from tornado.websocket import websocket_connect

    args = [
        browser,
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--no-default-browser-check",
        "--hide-scrollbars",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--remote-debugging-port=0",
        "--remote-allow-origins=*",
        f"--user-data-dir={profile}",
        "about:blank",
    ]
    if Path(browser).name != "headless_shell":
        args.insert(1, "--headless=new")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    proc = subprocess.Popen(args, stdout=stderr, stderr=stderr, start_new_session=True)
    try:
        port_file = profile / "DevToolsActivePort"  # written by Chromium once DevTools listens
        while not (port_file.is_file() and len(port_file.read_text().split()) >= 2):
            if proc.poll() is not None:
                raise RuntimeError(f"{browser} exited with status {proc.returncode} before opening DevTools")
            await asyncio.sleep(0.05)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            page = next(t for t in json.loads(r.read()) if t.get("type") == "page")
        ws = await websocket_connect(page["webSocketDebuggerUrl"], max_message_size=512 * 2**20)
        try:
            dev = _DevTools(ws)
            await dev.call(
                "Emulation.setDeviceMetricsOverride",
                width=WINDOW[0],
                height=WINDOW[1],
                deviceScaleFactor=1,
                mobile=False,
            )
            t0 = time.monotonic()
            await dev.call("Page.navigate", url=url)
            while True:
                probe = await dev.js(_PROBE)
                groups = set(probe["strings"]) & set(BATCH_GROUPS)
                if probe["views"] and probe["canvases"] and groups:
                    break
                await asyncio.sleep(0.25)
            rendered_s = time.monotonic() - t0
            running_at_render = running()
            await dev.js("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
            await asyncio.sleep(1.0)  # the next updates of the plots (every 100-500 ms)
            probe = await dev.js(_PROBE)
            shot = (await dev.call("Page.captureScreenshot", format="png"))["data"]
            running_at_capture = running()
            dom = await dev.js("document.documentElement.outerHTML")
        finally:
            ws.close()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # the Debian launcher is a shell script: its whole group
            proc.wait(10)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return {
        "png": base64.b64decode(shot),
        "dom": dom,
        "probe": probe,
        "rendered_s": rendered_s,
        "running": running_at_render and running_at_capture,
    }


def test_browser_screenshot_of_status_during_batch(browser, archive, client, dashboard, tmp_path):
    from PIL import Image

    m = _manifest(archive, "browser", N_BROWSER)
    png = tmp_path / "dashboard_status.png"
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path))
    log = tmp_path / "chromium.log"
    t0 = time.perf_counter()
    batch = BatchThread(m, client)
    batch.start()
    try:
        with log.open("wb") as stderr:
            seen = asyncio.run(
                asyncio.wait_for(
                    _render_and_capture(browser, f"{dashboard}/status", profile, stderr, batch.is_alive),
                    BROWSER_TIMEOUT_S,
                )
            )
    except TimeoutError:
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        pytest.fail(
            f"headless Chromium ({browser}) did not render {dashboard}/status with the batch's tasks "
            f"within {BROWSER_TIMEOUT_S:.0f} s (batch still running: {batch.is_alive()}); its output:\n{tail}"
        )
    finally:
        result = batch.result()
    batch_s = time.perf_counter() - t0
    png.write_bytes(seen["png"])
    if os.environ.get(SCREENSHOT_ENV):
        dest = Path(os.environ[SCREENSHOT_ENV])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(png, dest / png.name)

    print(
        f"/status rendered the batch's tasks after {seen['rendered_s']:.1f} s of a {batch_s:.1f} s batch; "
        f"screenshot {png}"
    )
    assert seen["running"], (
        f"the batch ({batch_s:.1f} s) ended before the screenshot (page rendered after "
        f"{seen['rendered_s']:.1f} s): raise N_BROWSER"
    )
    _assert_batch_succeeded(result, N_BROWSER)

    # the page: the dashboard's status document, rendered by BokehJS, holding the batch's tasks and workers
    dom, probe = seen["dom"], seen["probe"]
    assert "<title>Dask: Status</title>" in dom and "bokeh.min.js" in dom and "Dask needs" not in dom, dom[:500]
    assert probe["docs"] >= 1 and probe["views"] >= 3 and probe["canvases"] >= 3, {
        k: v for k, v in probe.items() if k != "strings"
    }
    strings = set(probe["strings"])
    assert len(strings & set(BATCH_GROUPS)) >= 2, sorted(strings)[:50]
    workers = client.scheduler_info(n_workers=-1)["workers"]
    assert any(w in s for w in workers for s in strings), sorted(strings)[:50]

    # the screenshot: a PNG of the window's size, with the plots drawn (a blank page is one colour)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as im:
        assert im.size == WINDOW, im.size
        pixels = np.asarray(im.convert("RGB"))
    body = pixels[60:].reshape(-1, 3)  # below the navigation bar
    colours, counts = np.unique(body, axis=0, return_counts=True)
    assert len(colours) > 50 and counts.max() / counts.sum() < 0.95 and body.std() > 10, (
        f"{png}: looks blank ({len(colours)} colours, {counts.max() / counts.sum():.1%} one colour)"
    )
