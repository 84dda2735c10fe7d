"""Commands on scans: ingest, info, simulate, center."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import typer

from tomoflow.cli._app import (
    MAX_TRIAL_CENTERS,
    _check_can_create,
    _check_positive,
    _e,
    _friendly,
    _parse_angles,
    _parse_float,
    _progress,
    _stage_rows,
    _sweep_size,
    _table,
    _trial_centers,
    _writing,
    app,
    console,
)
from tomoflow.errors import ConfigError


# ----------------------------------------------------------------------------- ingest / info
@app.command()
@_friendly
def ingest(
    source: str = typer.Argument(..., help="Raw scan: DXchange/NeXus .h5, ZEISS .txrm, TIFF file/dir/glob or .npy."),
    store: Path = typer.Argument(..., help="Scan store to create (a directory, e.g. scan.zarr)."),
    format: str = typer.Option("auto", "--format", "-f", help="auto, dxchange, nexus, txrm, tiff or numpy."),
    angles: str | None = typer.Option(
        None, help="Angles (deg): a text file (one per line) or START,STOP,STEP. Required for TIFF."
    ),
    flats: str | None = typer.Option(None, help="TIFF flat (white) fields: file, dir or glob."),
    darks: str | None = typer.Option(None, help="TIFF dark fields: file, dir or glob."),
    entry: str | None = typer.Option(None, help="NeXus entry to read (default: the NXtomo entry found)."),
    pixel_size: float | None = typer.Option(None, help="Override the pixel size (micrometre, > 0)."),
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
    from tomoflow.cli._app import _wrote

    fmt = detect_format(source) if format == "auto" else format
    t0 = time.perf_counter()
    with _writing(store), _progress(f"ingest {fmt}", None) as advance:
        st = _ingest(source, store, format=fmt, overwrite=overwrite, progress=advance, **kw)
    # A rerun that found the same ingest complete (same source content and options, through any path)
    # says that nothing was written.
    _wrote(store, f"({st.shape[0]} projections of {st.shape[1]} x {st.shape[2]}) in {time.perf_counter() - t0:.1f} s")


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
    except Exception as exc:  # noqa: BLE001  (zarr raises many types for a folder that is not a store)
        raise StoreError(f"{store}: not a zarr store ({type(exc).__name__})") from None
    if kind == "tomoflow-volume":
        v = VolumeStore.open(store)
        va = v.attrs
        if as_json:
            console.print_json(json.dumps(va.model_dump(mode="json")))
            return
        vs = va.voxel_size
        rows: list[tuple[str, Any]] = [
            ("shape (z, y, x)", " x ".join(map(str, v.shape))),
            ("voxel size", f"{vs.value:g} {vs.unit}" if vs is not None else "unknown (scale 1 = one pixel)"),
            ("levels", v.n_levels),
            ("algorithm", va.algorithm),
            ("rotation centre", f"{va.rotation_center:.2f} px" if va.rotation_center is not None else "-"),
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
        (
            "angles",
            f"{ang.size} from {ang.min():.2f} to {ang.max():.2f} deg"
            + (f", step {np.median(np.diff(ang)):.3f}" if ang.size > 1 else ""),
        ),
        ("flats / darks", f"{s.flats.shape[0]} / {s.darks.shape[0]}"),
        ("values", a.values),
        ("pixel size", f"{a.pixel_size.value:g} {a.pixel_size.unit}" if a.pixel_size else "unknown"),
        ("energy", f"{a.energy.value:g} {a.energy.unit}" if a.energy else "unknown"),
        (
            "rotation centre",
            f"{a.rotation_center:.2f} px (saved; recon uses it)"
            if a.rotation_center is not None
            else "not saved (tomoflow center --save)",
        ),
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
    from tomoflow._checks import check_number, check_planned_memory, check_planned_output, check_seed
    from tomoflow.sim.noise import MAX_PHOTONS

    n_photons = None if photons.strip().lower() == "none" else _parse_float("--photons", photons, "a number or none")
    _check_positive("--photons", n_photons, "photons per pixel")
    if n_photons is not None:
        check_number(
            "--photons (photons per pixel; 'none' for no photon noise)",
            n_photons,
            low=0.0,
            low_open=True,
            high=MAX_PHOTONS,
        )
    if not (math.isfinite(jitter) and math.isfinite(center_offset)):
        raise ConfigError("--jitter and --center-offset must be finite numbers of pixels")
    if jitter >= size / 2:
        raise ConfigError(
            f"--jitter {jitter:g} px moves the sample off the detector: it must be below half the "
            f"detector width ({size / 2:g} px for --size {size})"
        )
    if abs(center_offset) > (size - 1) / 2:
        raise ConfigError(
            f"--center-offset {center_offset:g} puts the rotation axis off the detector "
            f"(at most {(size - 1) / 2:g} px for --size {size})"
        )
    check_seed("--seed", seed)
    # Sizes, before anything is allocated or created: the phantom is held in memory (its generators
    # peak at about 20 float32 copies of it), the scan is written (projections plus 10 flats and 10 darks).
    check_planned_memory(f"simulate --size {size} --rows {rows}: the phantom", 80.0 * rows * size * size)
    check_planned_output(
        f"simulate --angles {angles} --rows {rows} --size {size}: the scan",
        4.0 * (angles + 20) * rows * size,
        out,
        n_chunks=-(-angles // 8) * -(-rows // 32),
    )
    _check_can_create(out)
    with _writing(out):
        out_path = _simulate(out, phantom, size, rows, angles, jitter, n_photons, center_offset, seed, overwrite)
    console.print(f"wrote [bold]{_e(out_path)}[/]")


def _simulate(
    out: Path,
    phantom: str,
    size: int,
    rows: int,
    angles: int,
    jitter: float,
    photons: float | None,
    center_offset: float,
    seed: int,
    overwrite: bool,
) -> Path:
    import numpy as np

    from tomoflow.io.synthetic import write_synthetic_scan
    from tomoflow.sim.scan import ScanSimulator

    vol = _phantom(phantom, size, rows, seed)
    ang = np.linspace(0.0, 180.0, angles)
    center = (size - 1) / 2.0 + center_offset
    sim = ScanSimulator(vol, ang, jitter_px=jitter, photons=photons, seed=seed, center=center)
    fmt = "dxchange" if out.suffix.lower() in (".h5", ".hdf5") else "zarr"
    with _progress("simulate projections", angles) as advance:  # streamed: one block of angles in memory
        return write_synthetic_scan(out, sim, format=fmt, overwrite=overwrite, pixel_size_um=0.03, progress=advance)  # type: ignore[arg-type]  # one of the two literals


# ----------------------------------------------------------------------------- centre / recon
@app.command()
@_friendly
def center(
    store: Path = typer.Argument(..., help="Scan store."),
    method: str = typer.Option("vo", help="vo (Fourier metric) or pair (0/180 degree correlation)."),
    try_: Path | None = typer.Option(
        None,
        "--try",
        help="Also reconstruct one slice per centre around the estimate and write PNGs to this directory.",
    ),
    try_range: float = typer.Option(
        5.0, help=f"--try sweeps centre +- this many pixels (within the detector; at most {MAX_TRIAL_CENTERS} centres)."
    ),
    try_step: float = typer.Option(0.5, help="--try step (px, > 0)."),
    save: bool = typer.Option(
        False, help="Store the centre in the scan store: `tomoflow recon` then uses it unless given --center."
    ),
    overwrite: bool = typer.Option(
        False, help="Replace --try pictures tomoflow wrote for another sweep (never files tomoflow did not write)."
    ),
) -> None:
    """Estimate the rotation centre (column, px; (ncol-1)/2 = centred) and print it."""
    import numpy as np

    from tomoflow.io.scan_store import ScanStore
    from tomoflow.pipeline.reconstruct import estimate_center, read_line_integrals
    from tomoflow.recon.center import center_sweep

    if try_ is not None:  # before the estimate: a bad sweep fails at once
        from tomoflow.io.output import plan_folder

        _sweep_size(try_range, try_step)
        plan_folder(try_, inputs=[store], option="--try", what="PNG pictures")
    from tomoflow._checks import check_choice
    from tomoflow.recon.center import METHODS

    method = check_choice("--method", method, METHODS)
    scan = ScanStore.open(store, mode="r+" if save else "r")
    scan.check_for(f"center-{method}")  # the angles the method needs, before any work
    if try_ is not None:
        scan.check_for("fbp")  # the sweep reconstructs slices
    n_cols = scan.shape[2]
    c = estimate_center(scan, method=method)
    centers = _trial_centers(c, try_range, try_step, n_cols) if try_ is not None else None
    plans = None
    if centers is not None:  # every picture checked before the sweep runs
        from tomoflow.io.output import fingerprint, identity_of
        from tomoflow.report import sweep_plans

        plans = sweep_plans(
            try_,  # type: ignore[arg-type]  # set where centers is
            centers,
            inputs=[store],
            overwrite=overwrite,
            fingerprint=fingerprint(
                "center-try",
                inputs={"scan": identity_of(store)},
                params={"method": method, "try_range": try_range, "try_step": try_step},
            ),
        )
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
        files = sweep_png(plans, slices, centers, metric)
        console.print(f"sharpest slice at {centers[int(np.argmax(metric))]:.2f} px; {len(files)} PNGs in {_e(try_)}")
