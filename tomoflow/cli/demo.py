"""`tomoflow demo`: the main job on an embedded default."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from tomoflow.cli.scan import _simulate
from tomoflow.cli._app import (
    _cluster,
    _e,
    _friendly,
    _progress,
    _stage_progress,
    app,
    console,
)


@app.command()
@_friendly
def demo(
    out: Path = typer.Option(Path("demo-output"), help="Directory for everything the demo writes."),
    size: int = typer.Option(128, min=32, help="Slice edge of the simulated sample (voxels)."),
    rows: int = typer.Option(32, min=1, help="Detector rows."),
    angles: int = typer.Option(181, min=16, help="Projections over 180 degrees."),
    cluster: str = typer.Option("local", help="Cluster to run on (see `tomoflow recon --help`)."),
    workers: Optional[int] = typer.Option(2, help="Workers of the local cluster."),
) -> None:
    """The main job on an embedded default: simulate a jittered scan of a battery cathode particle,
    ingest it from its DXchange file, start a local Dask cluster (dashboard link printed), find the
    rotation centre, correct the jitter, reconstruct the volume and write PNGs (overview, and the
    alignment report with before/after slices)."""
    from tomoflow import config

    # Small slabs (8 rows, 24 MB per task) so the dashboard shows the work spread over the workers.
    with config.set(scan_chunk_rows=8, worker_memory_budget="24MB"):
        _demo(out, size, rows, angles, cluster, workers)


def _demo(out: Path, size: int, rows: int, angles: int, cluster: str, workers: int | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    raw = out / "synthetic_scan.h5"
    scan_store = out / "scan.zarr"
    volume = out / "volume.zarr"
    t0 = time.perf_counter()
    console.rule("[bold]tomoflow demo")
    console.print(f"1. simulating a {angles}-projection scan of a {size}x{size}x{rows} cathode particle "
                  f"(jitter +-3 px, Poisson noise, rotation axis 2.5 px off centre) -> {_e(raw)}")
    _simulate(raw, "cathode", size, rows, angles, 3.0, 5000.0, 2.5, 0, True)
    from tomoflow.io.ingest import ingest as _ingest

    console.print(f"2. ingesting {_e(raw.name)} (DXchange) -> {_e(scan_store)}")
    with _progress("ingest", angles) as advance:
        _ingest(raw, scan_store, overwrite=True, progress=advance, pixel_size_um=0.03)
    from tomoflow.align.resnet import default_weights_path
    from tomoflow.io.scan_store import ScanStore
    from tomoflow.pipeline import reconstruct_scan
    from tomoflow.pipeline.align import align_scan
    from tomoflow.pipeline.reconstruct import estimate_center

    ctr = estimate_center(ScanStore.open(scan_store))
    console.print(f"3. rotation centre {ctr:.2f} px (true {(size - 1) / 2 + 2.5:.2f} px)")
    from tomoflow.align.resnet import MIN_SIZE

    # the network needs at least 32 x 32 px projections (and its shipped weights)
    method = "hybrid" if default_weights_path().is_file() and min(rows, size) >= MIN_SIZE else "consistency"
    aligned = out / "aligned.zarr"
    console.print(f"4. jitter correction ({method}) and reconstruction (FBP) on a local Dask cluster")
    with _cluster(cluster, workers) as client, _stage_progress() as update:
        align_scan(scan_store, aligned, method=method, center=ctr, client=client, overwrite=True, progress=update)
        reconstruct_scan(aligned, volume, client=client, overwrite=True, progress=update)
    from tomoflow.report import alignment_png, overview_png

    al = ScanStore.open(aligned)
    console.print(f"   refined rotation centre {al.attrs.rotation_center:.2f} px; "
                  f"{al.stage('align').info.get('method')} alignment in {al.stage('align').seconds or 0:.1f} s")
    png = overview_png(out / "overview.png", aligned, volume, title="tomoflow demo: simulated cathode particle, "
                       "jitter-corrected")
    report = alignment_png(out / "alignment.png", scan_store, aligned)
    console.print(f"5. overview: [bold]{_e(png)}[/]; before/after: [bold]{_e(report)}[/]")
    console.rule(f"done in {time.perf_counter() - t0:.1f} s")
    console.print(f"Look inside: `tomoflow info {_e(scan_store)}`, `tomoflow info {_e(aligned)}` and "
                  f"`tomoflow info {_e(volume)}`")
