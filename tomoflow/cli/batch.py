"""``tomoflow batch``: batch manifests. ``scan-archive`` makes one from a folder of raw scans, ``check``
validates one (the runner, ``tomoflow batch run``, reads the same file)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from tomoflow.cli._app import _check_can_create, _e, _fail, _friendly, _writing, app, console
from tomoflow.errors import ConfigError

batch_app = typer.Typer(
    name="batch",
    help="Batch processing of many scans: make a manifest from an archive folder (scan-archive), check one (check).",
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
    output_root: Optional[Path] = typer.Option(None, "--output-root", help="Output root of the batch (default: "
                                               "<DIR>-processed beside the archive)."),
    pipeline: str = typer.Option("ingest,align,recon", help="Stages, comma-separated, in order: ingest, align, "
                                 "recon (recover needs each scan's HR volume: add it by hand)."),
    cluster: str = typer.Option("local", help="Cluster of the batch: local, local-cuda, slurm, pbs, a scheduler "
                                "address or file, or none."),
    verify: bool = typer.Option(False, "--verify", help="Open every scan with its full reader (reads and hashes "
                                "every file: slow on a large archive)."),
    overwrite: bool = typer.Option(False, help="Replace an existing manifest file."),
) -> None:
    """Find the raw scans of an archive (DXchange, NeXus, TXRM files, folders of TIFFs), list them and the
    files that cannot be read (with the reason), and write a batch manifest of the readable ones."""
    from tomoflow.io.archive import scan_archive as _scan
    from tomoflow.io.manifest import save_manifest

    if out.suffix.lower() not in _SUFFIXES:
        raise ConfigError(f"{out}: the manifest must be a .yaml, .yml or .json file")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out}: exists; pass --overwrite to replace it")
    _check_can_create(out)
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
    with _writing(out):
        save_manifest(found.manifest, out)
    console.print(f"wrote [bold]{_e(out)}[/]: {len(found.scans)} scan(s), {len(found.unreadable)} not usable; "
                  f"pipeline {_e(', '.join(s.stage for s in found.manifest.pipeline))}; output root "
                  f"{_e(found.manifest.output)}")


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
    from tomoflow.io.manifest import load_manifest

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
        scans.add_row(_e(scan.name), _e(scan.format), _e(_rel(scan.path, base) if scan.path else "-"),
                      _e(", ".join(m.stage_names(scan))), _e("; ".join(settings) or "-"))
    console.print(scans)
    console.print(f"[bold]{_e(manifest)}[/]: valid ({len(m.scans)} scan(s), output root {_e(m.output)}, cluster "
                  f"{_e(m.cluster)}{'' if files else '; input files not checked'})")
