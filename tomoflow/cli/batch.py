"""``tomoflow batch``: batch manifests. ``scan-archive`` makes one from a folder of raw scans, ``check``
validates one, ``run`` runs one (:func:`tomoflow.batch.run_batch`) with a live progress view."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from tomoflow.cli._app import _check_can_create, _cluster, _e, _fail, _friendly, _writing, app, console
from tomoflow.errors import ConfigError, shorten, summarise

batch_app = typer.Typer(
    name="batch",
    help="Batch processing of many scans: make a manifest from an archive folder (scan-archive), check one "
    "(check), run one (run).",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(batch_app, name="batch")

_SUFFIXES = (".yaml", ".yml", ".json")


def _shape(shape: Any) -> str:
    return " x ".join(map(str, shape)) if shape else "-"


def _rel(path: Path, root: Path) -> str:
    try:
        return os.path.relpath(path, root)
    except ValueError:  # another drive (Windows)
        return str(path)


def _pipeline(text: str) -> list[str]:
    stages = [s.strip().lower() for s in text.split(",") if s.strip()]
    if not stages:
        raise ConfigError("--pipeline: name at least one stage, e.g. ingest,align,recon")
    return stages


@batch_app.command("scan-archive")
@_friendly
def scan_archive(
    directory: Path = typer.Argument(..., help="Archive folder of raw scans (searched recursively)."),
    out: Path = typer.Option(..., "--out", "-o", help="Manifest to write: .yaml, .yml or .json."),
    output_root: Path | None = typer.Option(
        None, "--output-root", help="Output root of the batch (default: <DIR>-processed beside the archive)."
    ),
    pipeline: str = typer.Option(
        "ingest,align,recon",
        help="Stages, comma-separated, in order: ingest, align, "
        "recon (recover needs each scan's HR volume: add it by hand).",
    ),
    cluster: str = typer.Option(
        "local", help="Cluster of the batch: local, local-cuda, slurm, pbs, a scheduler address or file, or none."
    ),
    verify: bool = typer.Option(
        False,
        "--verify",
        help="Open every scan with its full reader (reads and hashes every file: slow on a large archive).",
    ),
    overwrite: bool = typer.Option(False, help="Replace a manifest tomoflow wrote (never a file it did not write)."),
) -> None:
    """Find the raw scans of an archive (DXchange, NeXus, TXRM files, folders of TIFFs), list them and the
    files that cannot be read (with the reason), and write a batch manifest of the readable ones."""
    from tomoflow.batch import save_manifest
    from tomoflow.batch import scan_archive as _scan
    from tomoflow.io.output import plan_file

    if out.suffix.lower() not in _SUFFIXES:
        raise ConfigError(f"{out}: the manifest must be a .yaml, .yml or .json file")
    # the file policy, before the archive is searched: a new file, or a manifest tomoflow wrote (--overwrite)
    plan = plan_file(out, kind="manifest", option="--out", overwrite=overwrite)
    found = _scan(directory, output=output_root, pipeline=_pipeline(pipeline), cluster=cluster, verify=verify)
    root = found.root
    if found.scans:
        table = Table(title=_e(f"scans found in {directory}"))
        for col in ("name", "format", "shape (angle x row x col)", "path", "notes"):
            table.add_column(col, overflow="fold")
        for f in found.scans:
            table.add_row(_e(f.name), _e(f.format), _shape(f.shape), _e(_rel(f.path, root)), _e("; ".join(f.notes)))
        console.print(table)
    if found.unreadable:
        table = Table(title=_e(f"not usable ({len(found.unreadable)})"))
        table.add_column("path", overflow="fold")
        table.add_column("reason", overflow="fold")
        for u in found.unreadable:
            table.add_row(_e(_rel(u.path, root)), _e(u.reason))
        console.print(table)
    if found.skipped:
        console.print(f"{len(found.skipped)} other file(s) and folder(s) skipped (not raw scans)")
    if found.manifest is None:
        _fail(f"{directory}: no usable scan found; nothing written")
    save_manifest(found.manifest, plan)
    console.print(
        f"wrote [bold]{_e(out)}[/]: {len(found.scans)} scan(s), {len(found.unreadable)} not usable; "
        f"pipeline {_e(', '.join(s.stage for s in found.manifest.pipeline))}; output root "
        f"{_e(found.manifest.output)}"
    )


def _options(stage: Any) -> str:
    fields = stage.model_dump(exclude_none=True)
    fields.pop("stage")
    return ", ".join(f"{k}={v}" for k, v in fields.items()) or "-"


@batch_app.command("check")
@_friendly
def check(
    manifest: Path = typer.Argument(..., help="Batch manifest (.yaml, .yml or .json)."),
    files: bool = typer.Option(True, "--files/--no-files", help="Also check that every input exists (default)."),
) -> None:
    """Validate a batch manifest without doing any work: keys, names, stages and their options, per-scan
    overrides, input files; print its stages and scans."""
    from tomoflow.batch import load_manifest

    m = load_manifest(manifest, check_files=files)
    stages = Table(title="pipeline")
    stages.add_column("stage")
    stages.add_column("options", overflow="fold")
    for s in m.pipeline:
        stages.add_row(_e(s.stage), _e(_options(s)))
    console.print(stages)
    base = manifest.absolute().parent
    scans = Table(title=_e(f"scans ({len(m.scans)})"))
    for col in ("name", "format", "input", "stages", "per-scan settings"):
        scans.add_column(col, overflow="fold")
    for scan in m.scans:
        settings = []
        for key in ("center", "pixel_size_um", "energy_kev", "entry", "hr", "hr_scan", "volume"):
            value = getattr(scan, key)
            if value is not None:
                settings.append(f"{key}={_rel(value, base) if isinstance(value, Path) else value}")
        settings += [f"{stage}: {_options(s)}" for s in m.stages_for(scan) if (stage := s.stage) in scan.overrides]
        scans.add_row(
            _e(scan.name),
            _e(scan.format),
            _e(_rel(scan.path, base) if scan.path else "-"),
            _e(", ".join(m.stage_names(scan))),
            _e("; ".join(settings) or "-"),
        )
    console.print(scans)
    console.print(
        f"[bold]{_e(manifest)}[/]: valid ({len(m.scans)} scan(s), output root {_e(m.output)}, cluster "
        f"{_e(m.cluster)}{'' if files else '; input files not checked'})"
    )


# ----------------------------------------------------------------------------- run
_SUMMARY_ROWS = 50


def failure_line(res: Any, report_dir: Path | None) -> str:
    """The one line of a failed scan: ``NAME [stage]: reason (traceback: <report dir>/batch-logs/NAME.log)``
    (the reason on one line, at most :data:`_REASON_CHARS` characters; the log has all of it)."""
    where = f" [{res.failed_stage}]" if res.failed_stage else ""
    log = f" (traceback: {Path(report_dir) / res.log if report_dir is not None else res.log})" if res.log else ""
    return f"{res.name}{where}: {shorten(res.error or res.status, _REASON_CHARS)}{log}"


#: Longest reason printed for a failed scan (the report and the scan's log hold the whole text).
_REASON_CHARS = 300


class _BatchDisplay:
    """The live view of a batch: one bar for the scans (done and failed of the total, with ETA) and one
    line per scan in flight (its current stage and step); one line for every scan that fails (its
    reason, and where its traceback is)."""

    def __init__(self, report_dir: Path | None = None) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
        )
        self.overall: Any = None
        self.scans: dict[str, Any] = {}
        self.done = self.failed = 0
        self.report_dir = report_dir

    def __enter__(self) -> _BatchDisplay:
        self.bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.stop()

    def _overall_text(self) -> str:
        return f"[bold]scans[/] ({self.done - self.failed} complete, {self.failed} failed)"

    def __call__(self, event: Any) -> None:
        kind = event.kind
        if kind == "batch-start":
            self.overall = self.bar.add_task(self._overall_text(), total=event.total)
        elif kind == "scan-start":
            self.scans[event.scan] = self.bar.add_task(f"  {_e(event.scan)}: starting", total=None)
        elif kind == "stage" and event.scan in self.scans:
            step = "" if event.step == event.stage else f" · {event.step}"
            self.bar.update(
                self.scans[event.scan],
                description=f"  {_e(event.scan)}: {_e(event.stage)}{_e(step)}",
                completed=event.done,
                total=max(1, event.total),
            )
        elif kind == "scan-done":
            task = self.scans.pop(event.scan, None)
            if task is not None:
                self.bar.remove_task(task)
            res = event.result
            self.done += 1
            if res.status == "failed":
                self.failed += 1
                self.bar.console.print(Text.assemble(("failed ", "bold red"), failure_line(res, self.report_dir)))
            if self.overall is not None:
                self.bar.update(self.overall, completed=self.done, description=self._overall_text())


def _stage_text(st: Any) -> str:
    if st.status == "skipped-complete":
        return f"{st.stage} skipped"
    return f"{st.stage} {st.seconds:.1f}s" + (" FAILED" if st.status == "failed" else "")


def _summary(result: Any) -> tuple[Table, list[str]]:
    """The summary table (failed scans first, at most ``_SUMMARY_ROWS`` rows) and the failure lines
    (:func:`failure_line`)."""
    scans = sorted(result.scans, key=lambda s: s.status != "failed")
    table = Table(title=f"batch: {len(result.scans)} scan(s) in {result.seconds:.1f} s")
    for col in ("scan", "status", "stages", "centre px", "align residual px"):
        table.add_column(col, overflow="fold")
    for s in scans[:_SUMMARY_ROWS]:
        residual = s.alignment.get("residual_rms_px") if s.alignment else None
        style = {"failed": "bold red", "complete": "green", "pending": "yellow"}.get(s.status, "")
        table.add_row(
            _e(s.name),
            Text(s.status, style=style),
            _e(", ".join(map(_stage_text, s.stages)) or "-"),
            "-" if s.center is None else f"{s.center:.2f}",
            "-" if residual is None else f"{residual:.3f}",
        )
    if len(scans) > _SUMMARY_ROWS:
        table.caption = f"... and {len(scans) - _SUMMARY_ROWS} more scan(s): see the batch report"
    errors = [
        failure_line(s, getattr(result, "report_dir", None)) for s in scans[:_SUMMARY_ROWS] if s.status == "failed"
    ]
    return table, errors


@batch_app.command("run")
@_friendly
def run(
    manifest: Path = typer.Argument(..., help="Batch manifest (.yaml, .yml or .json)."),
    cluster: str | None = typer.Option(
        None,
        help="Where to run, overriding the manifest's cluster: local, "
        "local-cuda, slurm, pbs, a scheduler address or file, or none.",
    ),
    workers: int | None = typer.Option(None, help="Workers of a local cluster."),
    max_in_flight: int | None = typer.Option(
        None,
        "--max-in-flight",
        help="Most scans processed at once "
        "(default: the manifest's max_scans_in_flight, else twice the workers, "
        "at most 256).",
    ),
) -> None:
    """Run every scan of a batch manifest through its stages on a Dask cluster, many scans at once.

    The manifest is validated completely before anything starts.

    Output stores are the state: a rerun skips what is complete (writing nothing to it) and resumes the rest.

    A scan that fails (a bad file, a crash) is reported and the others go on.

    Writes batch-report.json, batch-report.html and dask-performance.html in the output root, and the
    traceback of each failed scan in batch-logs/NAME.log there.

    One runner per output root: a second run is refused (it says who runs).

    Exit code 0 when every scan is complete, 1 when some failed."""
    from tomoflow.batch import load_manifest, preflight, run_batch
    from tomoflow.cluster import invalid_spec, is_address, parse_kind
    from tomoflow.io.lock import check_unlocked

    m = load_manifest(manifest)
    spec = m.cluster if cluster is None else cluster.strip()
    if cluster is not None and not (
        spec == "none" or parse_kind(spec) is not None or is_address(spec) or Path(spec).is_file()
    ):
        raise invalid_spec(cluster)
    if max_in_flight is not None and max_in_flight < 1:
        raise ConfigError(f"--max-in-flight must be at least 1, got {max_in_flight}")
    if workers is not None and (workers < 1 or spec != "local"):
        raise ConfigError(
            f"--workers must be at least 1, got {workers}"
            if workers < 1
            else f"--workers applies to a local cluster only, not {spec!r}"
        )
    preflight(m)
    _check_can_create(Path(m.output))
    if Path(m.output).is_dir():
        check_unlocked(Path(m.output), root=True)  # another run of this output root: refused before a cluster starts
    console.print(
        f"batch [bold]{_e(manifest)}[/]: {len(m.scans)} scan(s), pipeline "
        f"{_e(', '.join(s.stage for s in m.pipeline))}, output root {_e(m.output)}"
    )
    try:
        with _cluster(spec, workers) as client, _BatchDisplay(Path(m.output)) as display, _writing(Path(m.output)):
            result = run_batch(m, client=client, progress=display, max_in_flight=max_in_flight)
    except KeyboardInterrupt:
        _fail(
            f"interrupted; the report in {m.output} shows what finished; run the same command again to resume", code=130
        )
    table, _ = _summary(result)  # each failure had its line as it happened (_BatchDisplay)
    console.print(table)
    counts = result.counts()
    if result.report_html is not None:
        report = f"report: [bold]{_e(result.report_html)}[/] and {_e(result.report_json)}"
    else:
        report = f"the batch report could not be written ({_e(result.report_error or 'unknown reason')})"
    perf = result.performance_report
    if perf is not None and perf.is_file():
        report += f"; Dask performance report: {_e(perf)}"
    elif result.performance_error:
        report += f"; no Dask performance report ({_e(result.performance_error)})"
    console.print(
        f"{counts['complete']} complete, {counts['skipped-complete']} already complete (skipped), "
        f"{counts['failed']} failed; {report}"
    )
    failed = result.failed
    if failed:
        see = (
            f"see {result.report_html}"
            if result.report_html is not None
            else f"the batch report could not be written: {result.report_error}"
        )
        _fail(
            f"{len(failed):,} of {len(result.scans):,} scan(s) failed ({summarise((s.name for s in failed), 10)}); "
            f"{see}",
            code=1,
        )
    if result.report_html is None:
        _fail(f"{m.output}: every scan is complete, but the batch report could not be written ({result.report_error})")
