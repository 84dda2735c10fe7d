"""The ``tomoflow`` command line.

Every command has ``--help``. Long work shows a progress bar; a Dask dashboard link is printed when a
cluster is started. An ordinary mistake (bad input, a parameter out of range, an unwritable folder) is
shown as one line on stderr with exit code 2, never a traceback, and is found before anything is written.

Everything a user typed or a file held (paths, error messages, metadata) is printed as plain text:
Rich markup in it (``scan [b].zarr``, ``tomoflow[gpu]``) is escaped, never interpreted.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.style import Style
from rich.table import Table
from rich.text import Text

from tomoflow.errors import ConfigError, TomoflowError

app = typer.Typer(
    name="tomoflow",
    help="Nano-tomography at facility scale: ingest raw scans into zarr stores, find the rotation "
    "centre, reconstruct volumes on a Dask cluster. Start with `tomoflow demo`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# soft_wrap: a long path is printed on one line (not cut at 80 columns when output is not a terminal).
console = Console(stderr=False, soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True, highlight=False)

#: Most trial centres ``tomoflow center --try`` reconstructs (one slice and one PNG each).
MAX_TRIAL_CENTERS = 401


def _e(value: Any) -> str:
    """``value`` as text safe to embed in Rich markup (``[...]`` printed as typed).

    >>> print(_e("scan [b].zarr"))
    scan \\[b].zarr
    """
    return escape(str(value))


def _one_line(text: str) -> str:
    """A message on one line: its non-blank lines joined with ``; ``."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return "; ".join(lines)


def _os_reason(exc: OSError) -> str:
    """What the system said, briefly (``Permission denied``), also for h5py's and zarr's wordy errors."""
    if isinstance(exc.errno, int) and exc.errno > 0:
        return os.strerror(exc.errno)
    return exc.strerror or str(exc) or type(exc).__name__


def _os_error_message(exc: OSError) -> str:
    """One line naming the path(s) of an OS error and what the system said."""
    what = _os_reason(exc)
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    if paths:
        return f"{' -> '.join(paths)}: {what}"
    return str(exc) or type(exc).__name__


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Report an OS error that names no file (h5py, zarr, a Dask worker) against ``path``, the output
    being written, so the one-line message says where."""
    try:
        yield
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, _os_reason(exc), str(path)) from None


def _check_can_create(path: Path) -> None:
    """Refuse up front an output (file or folder) that cannot be created or written, before long work.

    Only a preflight: a folder the system refuses anyway (``/sys``, root on a read-only mount) is still
    reported when the write fails (see :func:`_writing`).
    """
    path = Path(path)
    parent = path.absolute() if path.is_dir() else path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{path}: cannot be created: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{path}: cannot be created: the folder {parent} is not writable")


def _fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` (plain text, one line) on stderr and exit with ``code``."""
    err_console.print(Text.assemble(("error: ", "bold red"), _one_line(message) or "unknown error"))
    raise typer.Exit(code=code)


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn tomoflow errors, and as a last resort OS errors (a read-only or missing folder), into one
    line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TomoflowError as exc:
            _fail(str(exc))
        except OSError as exc:
            _fail(_os_error_message(exc))

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
        _fail(str(exc))


# ----------------------------------------------------------------------------- parsing options
def _parse_float(option: str, text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{option}: expected {what}, got {text!r}") from None


def _parse_center(text: str | None) -> float | str | None:
    """``--center``: None (omitted), ``"auto"`` or a finite number of pixels.

    >>> _parse_center(None), _parse_center("Auto"), _parse_center("295.5")
    (None, 'auto', 295.5)
    >>> _parse_center("abc")
    Traceback (most recent call last):
    ...
    tomoflow.errors.ConfigError: --center: expected a detector column in pixels or 'auto', got 'abc'
    """
    if text is None:
        return None
    if text.strip().lower() == "auto":
        return "auto"
    value = _parse_float("--center", text.strip(), "a detector column in pixels or 'auto'")
    if not math.isfinite(value):
        raise ConfigError(f"--center: expected a finite detector column in pixels or 'auto', got {text!r}")
    return value


def _parse_angles(text: str) -> tuple[float, float, float] | str:
    """``--angles``: ``START,STOP,STEP`` in degrees, or the path of a text file (one angle a line).

    >>> _parse_angles("0,180,0.5"), _parse_angles("angles.txt")
    ((0.0, 180.0, 0.5), 'angles.txt')
    """
    if "," not in text:
        return text
    parts = [p.strip() for p in text.split(",")]
    form = "START,STOP,STEP in degrees (three numbers) or a text file with one angle per line"
    if len(parts) != 3:
        raise ConfigError(f"--angles: expected {form}, got {text!r}")
    try:
        start, stop, step = (float(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--angles: expected {form}, got {text!r}") from None
    if not all(math.isfinite(v) for v in (start, stop, step)) or step == 0:
        raise ConfigError(f"--angles: START, STOP and STEP must be finite and STEP non-zero, got {text!r}")
    return start, stop, step


def _check_positive(option: str, value: float | None, unit: str) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{option} must be a positive number of {unit}, got {value:g}")


def _sweep_size(half_range: float, step: float) -> int:
    """Number of trial centres of ``--try-range``/``--try-step``, checked before any work is done.

    >>> _sweep_size(5, 0.5)
    21
    """
    if not (math.isfinite(step) and step > 0):
        raise ConfigError(f"--try-step must be a positive number of pixels, got {step:g}")
    if not (math.isfinite(half_range) and half_range >= 0):
        raise ConfigError(f"--try-range must be zero or a positive number of pixels, got {half_range:g}")
    n = int(math.floor(2 * half_range / step + 1e-9)) + 1
    if n > MAX_TRIAL_CENTERS:
        raise ConfigError(f"--try-range {half_range:g} with --try-step {step:g} gives {n} trial centres; at most "
                          f"{MAX_TRIAL_CENTERS} are allowed (lower --try-range or raise --try-step)")
    return n


def _trial_centers(center: float, half_range: float, step: float, n_cols: int) -> Any:
    """The trial centres of a sweep around ``center``; all must lie on the detector (0 .. ncol - 1)."""
    import numpy as np

    n = _sweep_size(half_range, step)
    lo, hi = center - half_range, center + half_range
    if lo < 0 or hi > n_cols - 1:
        room = max(0.0, min(center, n_cols - 1 - center))
        raise ConfigError(f"trial centres {lo:.2f} to {hi:.2f} px leave the detector (columns 0 to {n_cols - 1}); "
                          f"--try-range may be at most {math.floor(room * 100) / 100:g} around the centre {center:.2f} px")
    return lo + step * np.arange(n, dtype=np.float64)


# ----------------------------------------------------------------------------- progress, cluster
def _progress_bar() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("eta"), TimeRemainingColumn(), console=console)


@contextlib.contextmanager
def _progress(description: str, total: int | None) -> Iterator[Callable[..., None]]:
    with _progress_bar() as bar:
        task = bar.add_task(_e(description), total=total)

        def advance(n: int = 1) -> None:
            bar.advance(task, n)

        yield advance


@contextlib.contextmanager
def _stage_progress() -> Iterator[Callable[[str, int, int], None]]:
    """``progress(stage, done, total)`` for the pipeline: one bar per stage, shown from the first report
    (a run refused before any work prints no empty bar)."""
    bar = _progress_bar()
    tasks: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        if not tasks:
            bar.start()
        if stage not in tasks:
            tasks[stage] = bar.add_task(_e(stage), total=total)
        bar.update(tasks[stage], completed=done, total=total)

    try:
        yield update
    finally:
        if tasks:
            bar.stop()


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
        url = str(dashboard_url(client))
        console.print(Text.assemble("Dask dashboard: ", (url, Style(link=url))))
        try:
            yield client
        finally:
            # Workers going away at shutdown are expected; do not print their connection errors.
            for name in ("distributed", "tornado"):
                logging.getLogger(name).setLevel(logging.CRITICAL)


def _stage_rows(store: Any) -> list[tuple[str, str]]:
    """``("stage NAME", "complete (1.2 s)")`` rows for the stages recorded in a scan or volume store."""
    rows = []
    for name, rec in store.stages().items():
        state = "complete" if rec.complete else "NOT complete"
        rows.append((f"stage {name}", state + (f" ({rec.seconds:.1f} s)" if rec.seconds else "")))
    return rows


def _table(title: str, rows: list[tuple[str, Any]]) -> Table:
    t = Table(title=_e(title), show_header=False)
    for key, value in rows:
        t.add_row(_e(key), _e(value))
    return t


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
    pixel_size: Optional[float] = typer.Option(None, help="Override the pixel size (micrometre, > 0)."),
    overwrite: bool = typer.Option(False, help="Replace an existing store."),
) -> None:
    """Copy a raw scan into a zarr scan store, streaming (the file is never read whole)."""
    from tomoflow.io.ingest import detect_format
    from tomoflow.io.ingest import ingest as _ingest

    _check_positive("--pixel-size", pixel_size, "micrometres")
    kw: dict[str, Any] = {}
    if angles is not None:
        kw["angles"] = _parse_angles(angles)
    for k, v in (("flats", flats), ("darks", darks), ("entry", entry), ("pixel_size_um", pixel_size)):
        if v is not None:
            kw[k] = v
    fmt = detect_format(source) if format == "auto" else format
    t0 = time.perf_counter()
    with _writing(store), _progress(f"ingest {fmt}", None) as advance:
        st = _ingest(source, store, format=fmt, overwrite=overwrite, progress=advance, **kw)
    console.print(f"wrote [bold]{_e(store)}[/] ({st.shape[0]} projections of {st.shape[1]} x {st.shape[2]}) "
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
        vs = a.voxel_size
        rows: list[tuple[str, Any]] = [
            ("shape (z, y, x)", " x ".join(map(str, v.shape))),
            ("voxel size", f"{vs.value:g} {vs.unit}" if vs is not None else "unknown (scale 1 = one pixel)"),
            ("levels", v.n_levels),
            ("algorithm", a.algorithm),
            ("rotation centre", f"{a.rotation_center:.2f} px" if a.rotation_center is not None else "-"),
        ]
        console.print(_table(f"volume store {store}", rows + _stage_rows(v)))
        return
    s = ScanStore.open(store, require_complete=False)
    a = s.attrs
    if as_json:
        console.print_json(json.dumps(a.model_dump(mode="json")))
        return
    ang = s.angles_deg
    rows = [
        ("projections", f"{s.shape[0]} angles x {s.shape[1]} rows x {s.shape[2]} cols (float32)"),
        ("angles", f"{ang.size} from {ang.min():.2f} to {ang.max():.2f} deg"
                   + (f", step {np.median(np.diff(ang)):.3f}" if ang.size > 1 else "")),
        ("flats / darks", f"{s.flats.shape[0]} / {s.darks.shape[0]}"),
        ("values", a.values),
        ("pixel size", f"{a.pixel_size.value:g} {a.pixel_size.unit}" if a.pixel_size else "unknown"),
        ("energy", f"{a.energy.value:g} {a.energy.unit}" if a.energy else "unknown"),
        ("rotation centre", f"{a.rotation_center:.2f} px (saved; recon uses it)" if a.rotation_center is not None
         else "not saved (tomoflow center --save)"),
        ("chunks", " x ".join(map(str, s.projections.chunks))),
    ]
    if a.source:
        rows += [("source", f"{a.source.path} ({a.source.format})"), ("sha256", a.source.sha256 or "-")]
    rows += _stage_rows(s)
    rows.append(("tomoflow", a.provenance.tomoflow_version))
    console.print(_table(f"scan store {store}", rows))


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
    raise ConfigError(f"unknown phantom {name!r}; choose {', '.join(PHANTOMS)}")


@app.command()
@_friendly
def simulate(
    out: Path = typer.Argument(..., help="Output: a DXchange file (*.h5) or a scan store (*.zarr)."),
    phantom: str = typer.Option("cathode", help="cathode, gold or shepp-logan."),
    size: int = typer.Option(128, min=16, help="Slice edge (voxels) = detector columns."),
    rows: int = typer.Option(32, min=1, help="Detector rows (volume z)."),
    angles: int = typer.Option(181, min=2, help="Number of projections over 180 degrees (endpoint included)."),
    jitter: float = typer.Option(3.0, min=0.0, help="Jitter half-range J (px): shifts uniform in [-J, J]."),
    photons: str = typer.Option("2000", help="Photons per pixel for Poisson noise, or none (no noise)."),
    center_offset: float = typer.Option(0.0, help="Rotation axis offset from the detector centre (px)."),
    seed: int = typer.Option(0, help="Random seed."),
    overwrite: bool = typer.Option(False, help="Replace existing output."),
) -> None:
    """Simulate a jittered scan of a phantom (with flats and darks) and write it to a file or store."""
    if phantom not in PHANTOMS:
        raise ConfigError(f"--phantom: unknown phantom {phantom!r}; choose {', '.join(PHANTOMS)}")
    n_photons = None if photons.strip().lower() == "none" else _parse_float("--photons", photons, "a number or none")
    _check_positive("--photons", n_photons, "photons per pixel")
    if not (math.isfinite(jitter) and math.isfinite(center_offset)):
        raise ConfigError("--jitter and --center-offset must be finite numbers of pixels")
    if abs(center_offset) > (size - 1) / 2:
        raise ConfigError(f"--center-offset {center_offset:g} puts the rotation axis off the detector "
                          f"(at most {(size - 1) / 2:g} px for --size {size})")
    _check_can_create(out)
    with _writing(out):
        out_path = _simulate(out, phantom, size, rows, angles, jitter, n_photons, center_offset, seed, overwrite)
    console.print(f"wrote [bold]{_e(out_path)}[/]")


def _simulate(out: Path, phantom: str, size: int, rows: int, angles: int, jitter: float, photons: float | None,
              center_offset: float, seed: int, overwrite: bool) -> Path:
    import numpy as np

    from tomoflow.io.synthetic import write_synthetic_scan
    from tomoflow.sim.scan import ScanSimulator

    vol = _phantom(phantom, size, rows, seed)
    ang = np.linspace(0.0, 180.0, angles)
    center = (size - 1) / 2.0 + center_offset
    sim = ScanSimulator(vol, ang, jitter_px=jitter, photons=photons, seed=seed, center=center)
    fmt = "dxchange" if out.suffix.lower() in (".h5", ".hdf5") else "zarr"
    with _progress("simulate projections", angles) as advance:  # streamed: one block of angles in memory
        return write_synthetic_scan(out, sim, format=fmt, overwrite=overwrite, pixel_size_um=0.03, progress=advance)


# ----------------------------------------------------------------------------- centre / recon
@app.command()
@_friendly
def center(
    store: Path = typer.Argument(..., help="Scan store."),
    method: str = typer.Option("vo", help="vo (Fourier metric) or pair (0/180 degree correlation)."),
    try_: Optional[Path] = typer.Option(None, "--try", help="Also reconstruct one slice per centre around the estimate and write PNGs to this directory."),
    try_range: float = typer.Option(5.0, help=f"--try sweeps centre +- this many pixels (within the detector; at most {MAX_TRIAL_CENTERS} centres)."),
    try_step: float = typer.Option(0.5, help="--try step (px, > 0)."),
    save: bool = typer.Option(False, help="Store the centre in the scan store: `tomoflow recon` then uses it unless given --center."),
) -> None:
    """Estimate the rotation centre (column, px; (ncol-1)/2 = centred) and print it."""
    import numpy as np

    from tomoflow.io.scan_store import ScanStore
    from tomoflow.pipeline.reconstruct import estimate_center, read_line_integrals
    from tomoflow.recon.center import center_sweep

    if try_ is not None:  # before the estimate: a bad sweep fails at once
        _sweep_size(try_range, try_step)
        _check_can_create(try_)
    scan = ScanStore.open(store, mode="r+" if save else "r")
    n_cols = scan.shape[2]
    c = estimate_center(scan, method=method)
    centers = _trial_centers(c, try_range, try_step, n_cols) if try_ is not None else None
    console.print(f"rotation centre: [bold]{c:.2f}[/] px (detector centre {(n_cols - 1) / 2:.1f})")
    if save:
        with _writing(store):
            scan.save_center(c)
        console.print(f"saved in {_e(store)}: `tomoflow recon` uses it unless given --center")
    if centers is not None:
        from tomoflow.report import sweep_png

        mid = scan.shape[1] // 2
        p = read_line_integrals(scan, mid, mid + 1)
        with _progress("centre sweep", 1) as advance:
            slices, metric = center_sweep(p, scan.angles_deg, centers=centers)
            advance()
        with _writing(try_):
            files = sweep_png(try_, slices, centers, metric)
        console.print(f"sharpest slice at {centers[int(np.argmax(metric))]:.2f} px; {len(files)} PNGs in {_e(try_)}")


def _center_source(center: float | str | None, store: Path) -> str:
    """Where the centre ``recon`` uses comes from, in words (read before the run)."""
    if isinstance(center, float):
        return "given with --center"
    if center == "auto":
        return "estimated, --center auto"
    from tomoflow.io.scan_store import ScanStore

    saved = ScanStore.open(store).attrs.rotation_center
    if saved is not None:
        return "saved by `tomoflow center --save`"
    return "estimated: no centre saved by `tomoflow center --save`"


@app.command()
@_friendly
def recon(
    store: Path = typer.Argument(..., help="Scan store to reconstruct."),
    out: Path = typer.Option(..., "--out", "-o", help="Volume store to write (OME-Zarr 0.5)."),
    algorithm: str = typer.Option("fbp", help="fbp, mlem or sirt."),
    center: Optional[str] = typer.Option(
        None, help="Rotation centre: column in px, `auto`, or omitted = the centre saved by "
        "`tomoflow center --save`, else auto."),
    filter: str = typer.Option("ramp", help="FBP filter: ramp, shepp-logan, cosine, hann, hamming, parzen."),
    iterations: Optional[int] = typer.Option(None, help="MLEM/SIRT iterations (default 20 / 50)."),
    cluster: str = typer.Option("local", help="local, local-cuda, slurm, pbs, a scheduler address or file, or none."),
    workers: Optional[int] = typer.Option(None, help="Workers of the local cluster."),
    overwrite: bool = typer.Option(False, help="Replace the output instead of resuming it."),
    png: Optional[Path] = typer.Option(None, help="Also write a PNG overview here."),
) -> None:
    """Reconstruct a scan store into a volume store by sinogram slabs on Dask (resumable)."""
    from tomoflow.pipeline import reconstruct_scan

    ctr = _parse_center(center)
    if png is not None:
        _check_can_create(png)
    source = _center_source(ctr, store)  # also fails fast on a missing store, before a cluster starts
    t0 = time.perf_counter()
    with _cluster(cluster, workers) as client, _stage_progress() as update, _writing(out):
        v = reconstruct_scan(store, out, algorithm=algorithm, center=ctr, filter=filter, n_iter=iterations,
                             client=client, overwrite=overwrite, progress=update)
    used = v.attrs.rotation_center
    vs = v.attrs.voxel_size
    voxel = (f"{vs.value:g} {vs.unit}" if vs is not None
             else "unknown (the scan has no pixel size: pass --pixel-size at ingest)")
    console.print(f"wrote [bold]{_e(out)}[/] {' x '.join(map(str, v.shape))} voxels in {time.perf_counter() - t0:.1f} s, "
                  f"voxel size {_e(voxel)}")
    console.print(f"rotation centre {used:.2f} px ({_e(source)})" if used is not None
                  else f"rotation centre: {_e(source)}")
    if png is not None:
        from tomoflow.report import overview_png

        with _writing(png):
            console.print(f"overview: {_e(overview_png(png, store, out))}")


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
            _fail(f"out of date: {', '.join(stale)} (run `tomoflow schema`)", code=1)
        console.print("schemas up to date")
        return
    for p in write_schemas(out):
        console.print(f"wrote {_e(p)}")


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
                  f"(jitter +-3 px, Poisson noise, rotation axis 2.5 px off centre) -> {_e(raw)}")
    _simulate(raw, "cathode", size, rows, angles, 3.0, 5000.0, 2.5, 0, True)
    from tomoflow.io.ingest import ingest as _ingest

    console.print(f"2. ingesting {_e(raw.name)} (DXchange) -> {_e(scan_store)}")
    with _progress("ingest", angles) as advance:
        _ingest(raw, scan_store, overwrite=True, progress=advance, pixel_size_um=0.03)
    from tomoflow.io.scan_store import ScanStore
    from tomoflow.pipeline import reconstruct_scan
    from tomoflow.pipeline.reconstruct import estimate_center

    ctr = estimate_center(ScanStore.open(scan_store))
    console.print(f"3. rotation centre {ctr:.2f} px (true {(size - 1) / 2 + 2.5:.2f} px)")
    console.print("4. reconstructing (FBP) on a local Dask cluster")
    with _cluster(cluster, workers) as client, _stage_progress() as update:
        reconstruct_scan(scan_store, volume, center=ctr, client=client, overwrite=True, progress=update)
    from tomoflow.report import overview_png

    png = overview_png(out / "overview.png", scan_store, volume, title="tomoflow demo: simulated cathode particle")
    console.print(f"5. overview: [bold]{_e(png)}[/]")
    console.rule(f"done in {time.perf_counter() - t0:.1f} s")
    console.print(f"Look inside: `tomoflow info {_e(scan_store)}` and `tomoflow info {_e(volume)}`")


import numpy as np  # noqa: E402  (used by info; kept at the bottom so --help stays fast to import)


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
