"""The batch report of :func:`tomoflow.batch.run_batch`: ``batch-report.json`` (everything, for
programs), ``batch-report.html`` (one table for people, no external resources), a PNG thumbnail of
each scan's central slice in ``thumbnails/``, and Dask's performance report (:class:`DaskPerformanceReport`).
The file names are those of :mod:`tomoflow.batch.names`.

Per scan: name, status (``complete``, ``skipped-complete``, ``failed``, ``pending``), every stage with
its status and seconds (this run's, and those its store recorded when it was computed), attempts,
rotation centre, alignment residual, error (one line, and the stage it happened in; the full traceback
of every failed attempt is in ``batch-logs/<name>.log``, linked), outputs and thumbnail.
All files are written atomically (a temporary file renamed), so a reader never sees half a report.
"""

from __future__ import annotations

import base64
import contextlib
import html
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from tomoflow._version import __version__
from tomoflow.batch.failures import write_problem
from tomoflow.batch.manifest import Manifest
from tomoflow.batch.names import REPORT_HTML, REPORT_JSON
from tomoflow.batch.results import COMPLETE, BatchResult
from tomoflow.errors import shorten
from tomoflow.io.metadata import utc_now
from tomoflow.io.output import plan_file, write_file
from tomoflow.io.stages import STAGES_GROUP
from tomoflow.io.volume_store import VolumeStore

__all__ = [
    "write_report",
    "write_report_file",
    "write_thumbnail",
    "report_document",
    "report_html",
    "DaskPerformanceReport",
    "THUMBNAIL_PX",
    "EMBED_LIMIT",
]

log = logging.getLogger(__name__)

#: Longest side of a thumbnail (pixels).
THUMBNAIL_PX = 128
#: Up to this many scans the HTML embeds the thumbnails (one self-contained file); beyond, it links them.
EMBED_LIMIT = 1000


#: What each file of a batch's report folder is (the file policy's kinds, :mod:`tomoflow.io.output`).
REPORT_KINDS = {".json": "batch-report", ".html": "batch-report", ".log": "log", ".png": "picture"}


def write_report_file(path: Path, content: str | bytes | Any) -> Path:
    """Write one file of a batch's report (JSON document, HTML page, log text, PNG writer) through the
    file policy: stamped, atomic, never inside a store, never over a file tomoflow did not write (a
    :class:`~tomoflow.errors.StoreError` naming it). A report file tomoflow wrote is rewritten: the
    report follows the run.

    ``content``: a JSON-able ``dict`` (stamped here), HTML or log text (a first-line stamp is added
    here), or a function ``write(tmp_path, plan)`` for other formats.
    """
    kind = REPORT_KINDS.get(path.suffix.lower(), "batch-report")
    plan = plan_file(path, kind=kind, overwrite=True)
    if isinstance(content, dict):
        data: Any = plan.json_text(content, indent=2, default=str)
    elif isinstance(content, str):
        data = plan.text_document(content, html=path.suffix.lower() == ".html")
    elif callable(content):
        return write_file(plan, lambda tmp: content(tmp, plan))
    else:
        data = content
    return write_file(plan, data)


# ----------------------------------------------------------------------------- thumbnails
def _newest_record(store: Path) -> float:
    """Modification time of the newest stage record of a store (when it was last completed)."""
    times = [p.stat().st_mtime for p in (Path(store) / STAGES_GROUP).glob("*/zarr.json")]
    return max(times, default=0.0)


def thumbnail_image(store: str | os.PathLike, size: int = THUMBNAIL_PX) -> np.ndarray:
    """The central z slice of a volume store as ``uint8``, longest side at most ``size`` pixels, grey
    values stretched between the 1st and 99th percentiles. Reads the coarsest pyramid level that is
    still at least ``size`` pixels wide (level 0 for a small volume)."""
    from PIL import Image

    v = VolumeStore.open(store)
    level = 0
    for k in range(v.n_levels):
        if min(v.level(k).shape[1:]) >= size:
            level = k
    arr = v.level(level)
    img = np.asarray(arr[arr.shape[0] // 2], dtype=np.float32)
    finite = np.isfinite(img)
    lo, hi = np.percentile(img[finite], [1, 99]) if finite.any() else (0.0, 1.0)
    scaled = np.clip((np.nan_to_num(img, nan=lo) - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    pic = Image.fromarray((scaled * 255).astype(np.uint8))
    pic.thumbnail((size, size), Image.Resampling.LANCZOS)
    return np.asarray(pic)


def write_thumbnail(
    store: str | os.PathLike,
    png: str | os.PathLike,
    *,
    relative_to: str | os.PathLike | None = None,
    size: int = THUMBNAIL_PX,
) -> str:
    """Write the thumbnail of a volume store (:func:`thumbnail_image`) as a PNG, unless one newer than
    the store's last completed stage is there already; returns its path (relative to ``relative_to``)."""
    from PIL import Image

    png = Path(png)
    if not png.is_file() or png.stat().st_mtime < _newest_record(Path(store)):
        from PIL import PngImagePlugin

        def save(tmp: Path, plan: Any) -> None:
            info = PngImagePlugin.PngInfo()
            for key, value in plan.png_metadata().items():
                info.add_text(key, value)
            Image.fromarray(thumbnail_image(store, size)).save(tmp, format="PNG", pnginfo=info)

        write_report_file(png, save)
    return os.path.relpath(png, relative_to) if relative_to is not None else str(png)


# ----------------------------------------------------------------------------- JSON
def report_document(result: BatchResult, manifest: Manifest, report_dir: Path, *, final: bool = True) -> dict[str, Any]:
    """The batch report as plain data (what ``batch-report.json`` holds)."""
    counts = result.counts()
    stage_seconds: dict[str, float] = {}
    for s in result.scans:
        for st in s.stages:
            if st.status == COMPLETE:
                stage_seconds[st.stage] = stage_seconds.get(st.stage, 0.0) + st.seconds
    perf = result.performance_report
    return {
        "tomoflow_batch_report": 1,
        "tomoflow_version": __version__,
        "written": utc_now(),
        "final": bool(final),
        "interrupted": bool(result.interrupted),
        "output": str(manifest.output),
        "pipeline": [s.stage for s in manifest.pipeline],
        "retries": manifest.retries,
        "seconds": result.seconds,
        "counts": counts,
        "scans_total": len(result.scans),
        "stage_seconds_computed": stage_seconds,
        "performance_report": os.path.relpath(perf, report_dir) if perf is not None else None,
        "scans": [s.as_dict() for s in result.scans],
    }


# ----------------------------------------------------------------------------- HTML
_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; text-align: left; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.complete { color: #176317; } .skipped-complete { color: #35607a; } .failed { color: #a01010; font-weight: bold; }
.pending { color: #8a6d00; } .error { color: #a01010; max-width: 40em; white-space: pre-wrap; }
img { image-rendering: pixelated; display: block; width: 128px; height: auto; }
"""


def _f(value: Any, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def _img(report_dir: Path, rel: str | None, embed: bool) -> str:
    if not rel:
        return ""
    if embed:
        try:
            data = base64.b64encode((report_dir / rel).read_bytes()).decode("ascii")
        except OSError:
            return ""
        return f'<img alt="central slice" src="data:image/png;base64,{data}">'
    return f'<img alt="central slice" src="{html.escape(Path(rel).as_posix(), quote=True)}">'


def report_html(doc: dict[str, Any], report_dir: Path) -> str:
    """One HTML page with the summary and one table row per scan (all text escaped)."""
    e = html.escape
    c = doc["counts"]
    embed = doc["scans_total"] <= EMBED_LIMIT
    state = "final" if doc["final"] else "running (rewritten as scans finish)"
    if doc["interrupted"]:
        state = "interrupted: rerun the same manifest to resume"
    perf = doc["performance_report"]
    rows = []
    for s in doc["scans"]:
        stages = "<br>".join(
            f'{e(st["stage"])}: <span class="{e(st["status"])}">{e(st["status"])}</span> {st["seconds"]:.1f} s'
            + (
                f" (computed in {st['recorded_seconds']:.1f} s)"
                if st["status"] == "skipped-complete" and st["recorded_seconds"] is not None
                else ""
            )
            for st in s["stages"]
        )
        al = s.get("alignment") or {}
        residual = (
            "-"
            if not al
            else (
                f"{_f(al.get('residual_rms_px'), '.3f')} px rms, "
                f"{_f(al.get('residual_max_px'), '.3f')} max ({e(str(al.get('method')))}, "
                f"{'converged' if al.get('converged') else 'not converged'})"
            )
        )
        error = ""
        if s.get("error"):
            where = f"[{e(s['failed_stage'])}] " if s.get("failed_stage") else ""
            error = f"{where}{e(s['error'])}"
            if s.get("retried_after"):
                error += f"<br>(after {len(s['retried_after'])} retried failure(s))"
        if s.get("log"):
            error += (
                f'<br><a href="{e(Path(s["log"]).as_posix(), quote=True)}">traceback</a>'
                if error
                else f'<a href="{e(Path(s["log"]).as_posix(), quote=True)}">log of retried failures</a>'
            )
        rows.append(
            f'<tr><td>{e(s["name"])}</td><td class="{e(s["status"])}">{e(s["status"])}</td><td>{stages}</td>'
            f'<td class="num">{_f(s.get("center"))}</td><td>{residual}</td><td class="num">{s["attempts"]}</td>'
            f'<td class="num">{s["seconds"]:.1f}</td><td class="error">{error}</td>'
            f"<td>{_img(report_dir, s.get('thumbnail'), embed)}</td></tr>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "scan",
            "status",
            "stages (this run)",
            "centre (px)",
            "alignment residual",
            "attempts",
            "seconds",
            "error",
            "central slice",
        )
    )
    summary = (
        f"{c.get('complete', 0)} complete, {c.get('skipped-complete', 0)} already complete (skipped), "
        f"{c.get('failed', 0)} failed, {c.get('pending', 0)} pending, of {doc['scans_total']} scans "
        f"in {doc['seconds']:.1f} s"
    )
    perf_link = (
        f' &middot; <a href="{e(Path(perf).as_posix(), quote=True)}">Dask performance report</a>' if perf else ""
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>tomoflow batch report</title>'
        f"<style>{_CSS}</style></head><body>\n<h1>tomoflow batch report</h1>\n"
        f"<p>{e(summary)}. Output root <code>{e(doc['output'])}</code>; pipeline {e(', '.join(doc['pipeline']))}; "
        f"report {e(state)}, written {e(doc['written'])}{perf_link}.</p>\n"
        f"<table><thead><tr>{head}</tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table></body></html>\n"
    )


def write_report(
    result: BatchResult, manifest: Manifest, report_dir: str | os.PathLike, *, final: bool = True
) -> tuple[Path, Path]:
    """Write ``batch-report.json`` and ``batch-report.html`` into ``report_dir``; returns their paths."""
    rdir = Path(report_dir)
    rdir.mkdir(parents=True, exist_ok=True)
    doc = report_document(result, manifest, rdir, final=final)
    js, page = rdir / REPORT_JSON, rdir / REPORT_HTML
    write_report_file(js, doc)
    write_report_file(page, report_html(doc, rdir))
    return js, page


# ----------------------------------------------------------------------------- Dask
class DaskPerformanceReport:
    """``distributed.performance_report`` into ``path`` (written under a temporary name, then renamed),
    or nothing without a client or path."""

    def __init__(self, client: Any, path: Path | None) -> None:
        self.client, self.path = client, path
        self._stack: Any = None
        #: Why the report was not written (one line), or None.
        self.error: str | None = None

    def _failed(self, doing: str, exc: BaseException) -> None:
        self.error = write_problem(exc, self.path) if self.path is not None else shorten(exc, 300)
        log.warning("cannot %s the Dask performance report %s (%s)", doing, self.path, self.error)
        log.debug("the Dask performance report failed", exc_info=True)

    def __enter__(self) -> DaskPerformanceReport:
        if self.client is None or self.path is None:
            return self
        from distributed import performance_report

        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._stack = contextlib.ExitStack()
        try:
            self._stack.enter_context(self.client.as_current())
            self._stack.enter_context(performance_report(filename=str(self.tmp)))
        except Exception as exc:  # noqa: BLE001 - the report is a diagnostic: never fail the batch for it
            self._failed("start", exc)
            self._stack.close()
            self._stack = None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._stack is None:
            return
        try:
            self._stack.__exit__(*exc)
            page = self.tmp.read_text(encoding="utf-8")
            write_report_file(self.path, page)  # type: ignore[arg-type]  # stamped, through the file policy
        except Exception as err:  # noqa: BLE001 - a full disk, a lost scheduler: one line, never a traceback
            self._failed("write", err)
        finally:
            try:
                if self.tmp.exists():
                    self.tmp.unlink()
            except OSError:
                pass
