"""The ``tomoflow`` command line.

Every command has ``--help``. Long work shows a progress bar; a Dask dashboard link is printed when a
cluster is started. Errors from bad input are shown as one clear line (exit code 2), not a traceback.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from tomoflow.errors import TomoflowError

app = typer.Typer(
    name="tomoflow",
    help="Nano-tomography at facility scale: ingest raw scans into zarr stores, find the rotation "
    "centre, reconstruct volumes on a Dask cluster. Start with `tomoflow demo`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=False)
err_console = Console(stderr=True)


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn tomoflow errors into one red line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TomoflowError as exc:
            err_console.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(code=2) from None

    return wrapper


@app.callback()
def _main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what tomoflow does (INFO level)."),
    device: str = typer.Option("auto", help="Where kernels run: cpu, cuda or auto."),
    memory: str = typer.Option("2GB", help="Peak memory one Dask task may use (slab sizing), e.g. 2GB."),
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        logging.getLogger("distributed").setLevel(logging.WARNING)
    from tomoflow import config

    try:
        config.set(device=device, worker_memory_budget=memory)
    except TomoflowError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(code=2) from None


@contextlib.contextmanager
def _progress(description: str, total: int | None) -> Iterator[Callable[..., None]]:
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("eta"), TimeRemainingColumn(), console=console, transient=False) as bar:
        task = bar.add_task(description, total=total)

        def advance(n: int = 1) -> None:
            bar.advance(task, n)

        yield advance


def _stage_progress() -> tuple[Progress, Callable[[str, int, int], None]]:
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("eta"), TimeRemainingColumn(), console=console)
    tasks: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    return bar, update


@contextlib.contextmanager
def _cluster(spec: str | None, workers: int | None = None) -> Iterator[Any]:
    """Connect to (or start) a Dask cluster and print the dashboard link; ``None`` = no cluster."""
    if spec is None or spec == "none":
        yield None
        return
    from tomoflow.cluster import connect, dashboard_url

    import distributed  # noqa: F401 - configures its loggers on import; quieten them afterwards

    if not logging.getLogger().isEnabledFor(logging.INFO):
        logging.getLogger("distributed").setLevel(logging.WARNING)
    kwargs: dict[str, Any] = {}
    if spec == "local" and workers:
        kwargs["n_workers"] = workers
    with connect(spec, **kwargs) as client:
        console.print(f"Dask dashboard: [link]{dashboard_url(client)}[/link]")
        try:
            yield client
        finally:
            # Workers going away at shutdown are expected; do not print their connection errors.
            for name in ("distributed", "tornado"):
                logging.getLogger(name).setLevel(logging.CRITICAL)


# ----------------------------------------------------------------------------- ingest / info
@app.command()
@_friendly
def ingest(
    source: str = typer.Argument(..., help="Raw scan: DXchange/NeXus .h5, ZEISS .txrm, TIFF file/dir/glob or .npy."),
    store: Path = typer.Argument(..., help="Scan store to create (a directory, e.g. scan.zarr)."),
    format: str = typer.Option("auto", "--format", "-f", help="auto, dxchange, nexus, txrm, tiff or numpy."),
    angles: Optional[str] = typer.Option(None, help="Angles (deg): a text file (one per line) or START,STOP,STEP. Required for TIFF."),
    flats: Optional[str] = typer.Option(None, help="TIFF flat (white) fields: file, dir or glob."),
    darks: Optional[str] = typer.Option(None, help="TIFF dark fields: file, dir or glob."),
    entry: Optional[str] = typer.Option(None, help="NeXus entry to read (default: the NXtomo entry found)."),
    pixel_size: Optional[float] = typer.Option(None, help="Override the pixel size (micrometre)."),
    overwrite: bool = typer.Option(False, help="Replace an existing store."),
) -> None:
    """Copy a raw scan into a zarr scan store, streaming (the file is never read whole)."""
    from tomoflow.io.ingest import detect_format
    from tomoflow.io.ingest import ingest as _ingest

    kw: dict[str, Any] = {}
    if angles is not None:
        kw["angles"] = tuple(float(v) for v in angles.split(",")) if "," in angles else angles
    for k, v in (("flats", flats), ("darks", darks), ("entry", entry), ("pixel_size_um", pixel_size)):
        if v is not None:
            kw[k] = v
    fmt = detect_format(source) if format == "auto" else format
    t0 = time.perf_counter()
    with _progress(f"ingest {fmt}", None) as advance:
        st = _ingest(source, store, format=fmt, overwrite=overwrite, progress=advance, **kw)
    console.print(f"wrote [bold]{store}[/] ({st.shape[0]} projections of {st.shape[1]} x {st.shape[2]}) "
                  f"in {time.perf_counter() - t0:.1f} s")


@app.command()
@_friendly
def info(
    store: Path = typer.Argument(..., help="A scan store or a volume store."),
    as_json: bool = typer.Option(False, "--json", help="Print the attributes as JSON."),
) -> None:
    """Show what a store holds: shape, angles, metadata and which stages are complete."""
    import zarr

    from tomoflow.errors import StoreError
    from tomoflow.io.scan_store import ScanStore
    from tomoflow.io.volume_store import VolumeStore

    try:
        kind = zarr.open_group(str(store), mode="r").attrs.get("tomoflow_format")
    except Exception as exc:  # noqa: BLE001
        raise StoreError(f"{store}: not a zarr store ({type(exc).__name__})") from None
    if kind == "tomoflow-volume":
        v = VolumeStore.open(store)
        a = v.attrs
        if as_json:
            console.print_json(json.dumps(a.model_dump(mode="json")))
            return
        t = Table(title=f"volume store {store}", show_header=False)
        t.add_row("shape (z, y, x)", " x ".join(map(str, v.shape)))
        t.add_row("voxel size", f"{a.voxel_size.value:g} {a.voxel_size.unit}")
        t.add_row("levels", str(v.n_levels))
        t.add_row("algorithm", str(a.algorithm))
        t.add_row("rotation centre", f"{a.rotation_center:.2f} px" if a.rotation_center is not None else "-")
        t.add_row("slabs done", f"{int(v.done_slabs().sum())} / {len(v.slabs())}")
        for name, rec in a.stages.items():
            t.add_row(f"stage {name}", ("complete" if rec.complete else "NOT complete") + (f" ({rec.seconds:.1f} s)" if rec.seconds else ""))
        console.print(t)
        return
    s = ScanStore.open(store, require_complete=False)
    a = s.attrs
    if as_json:
        console.print_json(json.dumps(a.model_dump(mode="json")))
        return
    ang = s.angles_deg
    t = Table(title=f"scan store {store}", show_header=False)
    t.add_row("projections", f"{s.shape[0]} angles x {s.shape[1]} rows x {s.shape[2]} cols (float32)")
    t.add_row("angles", f"{ang.size} from {ang.min():.2f} to {ang.max():.2f} deg" + (f", step {np.median(np.diff(ang)):.3f}" if ang.size > 1 else ""))
    t.add_row("flats / darks", f"{s.flats.shape[0]} / {s.darks.shape[0]}")
    t.add_row("values", a.values)
    t.add_row("pixel size", f"{a.pixel_size.value:g} {a.pixel_size.unit}" if a.pixel_size else "unknown")
    t.add_row("energy", f"{a.energy.value:g} {a.energy.unit}" if a.energy else "unknown")
    t.add_row("rotation centre", f"{a.rotation_center:.2f} px" if a.rotation_center is not None else "not set (tomoflow center)")
    t.add_row("chunks", " x ".join(map(str, s.projections.chunks)))
    if a.source:
        t.add_row("source", f"{a.source.path} ({a.source.format})")
        t.add_row("sha256", a.source.sha256 or "-")
    for name, rec in a.stages.items():
        t.add_row(f"stage {name}", ("complete" if rec.complete else "NOT complete") + (f" ({rec.seconds:.1f} s)" if rec.seconds else ""))
    t.add_row("tomoflow", a.provenance.tomoflow_version)
    console.print(t)


# ----------------------------------------------------------------------------- simulate
PHANTOMS = ("cathode", "gold", "shepp-logan")


def _phantom(name: str, size: int, rows: int, seed: int) -> Any:
    from tomoflow.sim import phantoms

    shape = (rows, size, size)
    if name == "cathode":
        return phantoms.cathode_particle(shape, seed=seed)
    if name == "gold":
        return phantoms.gold_particle(shape, seed=seed)
    if name == "shepp-logan":
        return phantoms.shepp_logan_3d(shape)
    raise typer.BadParameter(f"unknown phantom {name!r}; choose {', '.join(PHANTOMS)}")


@app.command()
@_friendly
def simulate(
    out: Path = typer.Argument(..., help="Output: a DXchange file (*.h5) or a scan store (*.zarr)."),
    phantom: str = typer.Option("cathode", help="cathode, gold or shepp-logan."),
    size: int = typer.Option(128, min=16, help="Slice edge (voxels) = detector columns."),
    rows: int = typer.Option(32, min=1, help="Detector rows (volume z)."),
    angles: int = typer.Option(181, min=2, help="Number of projections over 180 degrees (endpoint included)."),
    jitter: float = typer.Option(3.0, min=0.0, help="Jitter half-range J (px): shifts uniform in [-J, J]."),
    photons: Optional[float] = typer.Option(2000.0, help="Photons per pixel for Poisson noise (none: no noise)."),
    center_offset: float = typer.Option(0.0, help="Rotation axis offset from the detector centre (px)."),
    seed: int = typer.Option(0, help="Random seed."),
    overwrite: bool = typer.Option(False, help="Replace existing output."),
) -> None:
    """Simulate a jittered scan of a phantom (with flats and darks) and write it to a file or store."""
    out_path = _simulate(out, phantom, size, rows, angles, jitter, photons, center_offset, seed, overwrite)
    console.print(f"wrote [bold]{out_path}[/]")


def _simulate(out: Path, phantom: str, size: int, rows: int, angles: int, jitter: float, photons: float | None,
              center_offset: float, seed: int, overwrite: bool) -> Path:
    import numpy as np

    from tomoflow.io.synthetic import write_synthetic_scan
    from tomoflow.sim.scan import simulate_scan

    vol = _phantom(phantom, size, rows, seed)
    ang = np.linspace(0.0, 180.0, angles)
    center = (size - 1) / 2.0 + center_offset
    scan = simulate_scan(vol, ang, jitter_px=jitter, photons=photons, seed=seed, center=center)
    fmt = "dxchange" if out.suffix.lower() in (".h5", ".hdf5") else "zarr"
    return write_synthetic_scan(out, scan, format=fmt, overwrite=overwrite, pixel_size_um=0.03)


# ----------------------------------------------------------------------------- centre / recon
@app.command()
@_friendly
def center(
    store: Path = typer.Argument(..., help="Scan store."),
    method: str = typer.Option("vo", help="vo (Fourier metric) or pair (0/180 degree correlation)."),
    try_: Optional[Path] = typer.Option(None, "--try", help="Also reconstruct one slice per centre around the estimate and write PNGs to this directory."),
    try_range: float = typer.Option(5.0, help="--try sweeps centre +- this many pixels."),
    try_step: float = typer.Option(0.5, help="--try step (px)."),
    save: bool = typer.Option(False, help="Store the centre in the scan store's attributes."),
) -> None:
    """Estimate the rotation centre (column, px; (ncol-1)/2 = centred) and print it."""
    import numpy as np

    from tomoflow.io.scan_store import ScanStore
    from tomoflow.pipeline.reconstruct import estimate_center, read_line_integrals
    from tomoflow.recon.center import center_sweep

    scan = ScanStore.open(store, mode="r+" if save else "r")
    c = estimate_center(scan, method=method)
    console.print(f"rotation centre: [bold]{c:.2f}[/] px (detector centre {(scan.shape[2] - 1) / 2:.1f})")
    if save:
        scan.update_attrs(rotation_center=c)
    if try_ is not None:
        from tomoflow.report import sweep_png

        centers = np.arange(c - try_range, c + try_range + 1e-9, try_step)
        mid = scan.shape[1] // 2
        p = read_line_integrals(scan, mid, mid + 1)
        with _progress("centre sweep", 1) as advance:
            slices, metric = center_sweep(p, scan.angles_deg, centers)
            advance()
        files = sweep_png(try_, slices, centers, metric)
        console.print(f"sharpest slice at {centers[int(np.argmax(metric))]:.2f} px; {len(files)} PNGs in {try_}")


@app.command()
@_friendly
def recon(
    store: Path = typer.Argument(..., help="Scan store to reconstruct."),
    out: Path = typer.Option(..., "--out", "-o", help="Volume store to write (OME-Zarr 0.5)."),
    algorithm: str = typer.Option("fbp", help="fbp, mlem or sirt."),
    center: str = typer.Option("auto", help="Rotation centre column (px) or auto."),
    filter: str = typer.Option("ramp", help="FBP filter: ramp, shepp-logan, cosine, hann, hamming, parzen."),
    iterations: Optional[int] = typer.Option(None, help="MLEM/SIRT iterations (default 20 / 50)."),
    cluster: str = typer.Option("local", help="local, local-cuda, slurm, pbs, a scheduler address or file, or none."),
    workers: Optional[int] = typer.Option(None, help="Workers of the local cluster."),
    overwrite: bool = typer.Option(False, help="Replace the output instead of resuming it."),
    png: Optional[Path] = typer.Option(None, help="Also write a PNG overview here."),
) -> None:
    """Reconstruct a scan store into a volume store by sinogram slabs on Dask (resumable)."""
    from tomoflow.pipeline.reconstruct import reconstruct_scan

    ctr: float | str = center if center == "auto" else float(center)
    bar, update = _stage_progress()
    with _cluster(cluster, workers) as client, bar:
        v = reconstruct_scan(store, out, algorithm=algorithm, center=ctr, filter=filter, n_iter=iterations,
                             client=client, overwrite=overwrite, progress=update)
    rec = v.attrs.stages["recon"]
    console.print(f"wrote [bold]{out}[/] {' x '.join(map(str, v.shape))} voxels, centre "
                  f"{v.attrs.rotation_center:.2f} px, {rec.seconds:.1f} s")
    if png is not None:
        from tomoflow.report import overview_png

        console.print(f"overview: {overview_png(png, store, out)}")


# ----------------------------------------------------------------------------- schema / demo
@app.command()
@_friendly
def schema(
    out: Path = typer.Option(Path("schemas"), help="Directory to write the JSON Schemas to."),
    check: bool = typer.Option(False, help="Only check the files are up to date (exit 1 if not)."),
) -> None:
    """Write (or check) the JSON Schemas of the stores and the configuration."""
    from tomoflow.schemas import stale_schemas, write_schemas

    if check:
        stale = stale_schemas(out)
        if stale:
            err_console.print(f"[red]out of date:[/] {', '.join(stale)} (run `tomoflow schema`)")
            raise typer.Exit(code=1)
        console.print("schemas up to date")
        return
    for p in write_schemas(out):
        console.print(f"wrote {p}")


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
    rotation centre, reconstruct the volume and write a PNG overview."""
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
                  f"(jitter +-3 px, Poisson noise, rotation axis 2.5 px off centre) -> {raw}")
    _simulate(raw, "cathode", size, rows, angles, 3.0, 5000.0, 2.5, 0, True)
    from tomoflow.io.ingest import ingest as _ingest

    console.print(f"2. ingesting {raw.name} (DXchange) -> {scan_store}")
    with _progress("ingest", angles) as advance:
        _ingest(raw, scan_store, overwrite=True, progress=advance, pixel_size_um=0.03)
    from tomoflow.pipeline.reconstruct import estimate_center, reconstruct_scan
    from tomoflow.io.scan_store import ScanStore

    ctr = estimate_center(ScanStore.open(scan_store))
    console.print(f"3. rotation centre {ctr:.2f} px (true {(size - 1) / 2 + 2.5:.2f} px)")
    console.print("4. reconstructing (FBP) on a local Dask cluster")
    bar, update = _stage_progress()
    with _cluster(cluster, workers) as client, bar:
        reconstruct_scan(scan_store, volume, center=ctr, client=client, overwrite=True, progress=update)
    from tomoflow.report import overview_png

    png = overview_png(out / "overview.png", scan_store, volume, title="tomoflow demo: simulated cathode particle")
    console.print(f"5. overview: [bold]{png}[/]")
    console.rule(f"done in {time.perf_counter() - t0:.1f} s")
    console.print(f"Look inside: `tomoflow info {scan_store}` and `tomoflow info {volume}`")


import numpy as np  # noqa: E402  (used by info; kept at the bottom so --help stays fast to import)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
