"""Commands that make volumes and schemas: recon, schema."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from tomoflow.cli._app import (
    _cluster,
    _e,
    _fail,
    _friendly,
    _parse_center,
    _plan_picture,
    _stage_progress,
    _writing,
    _wrote,
    app,
    console,
)


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
    center: str | None = typer.Option(
        None,
        help="Rotation centre: column in px, `auto`, or omitted = the centre saved by "
        "`tomoflow center --save`, else auto.",
    ),
    filter: str = typer.Option("ramp", help="FBP filter: ramp, shepp-logan, cosine, hann, hamming, parzen."),
    fbp_method: str = typer.Option(
        "auto", help="FBP method: direct, fourier (gridding), or auto = fourier on GPU workers, direct on CPUs."
    ),
    iterations: int | None = typer.Option(None, help="MLEM/SIRT iterations (default 20 / 50)."),
    cluster: str = typer.Option("local", help="local, local-cuda, slurm, pbs, a scheduler address or file, or none."),
    workers: int | None = typer.Option(None, help="Workers of the local cluster."),
    overwrite: bool = typer.Option(
        False,
        help="Replace the output (and the --png picture) made from other inputs or "
        "parameters; never what tomoflow did not make.",
    ),
    png: Path | None = typer.Option(None, help="Also write a PNG overview here."),
) -> None:
    """Reconstruct a scan store into a volume store by sinogram slabs on Dask (resumable)."""
    from tomoflow.pipeline import reconstruct_scan

    ctr = _parse_center(center)
    source = _center_source(ctr, store)  # also fails fast on a missing store, before a cluster starts
    if algorithm in ("fbp", "sirt", "mlem"):  # the scan's physics for this method, before a cluster starts
        from tomoflow.io.scan_store import ScanStore

        ScanStore.open(store).check_for(algorithm)
    png_plan = _plan_picture(
        png,
        command="recon",
        sources={"scan": store},
        overwrite=overwrite,
        outputs=(out,),
        params={
            "algorithm": algorithm,
            "center": ctr,
            "filter": filter,
            "fbp_method": fbp_method,
            "iterations": iterations,
        },
    )
    t0 = time.perf_counter()
    with _cluster(cluster, workers) as client, _stage_progress() as update, _writing(out):
        v = reconstruct_scan(
            store,
            out,
            algorithm=algorithm,
            center=ctr,
            filter=filter,
            n_iter=iterations,
            client=client,
            overwrite=overwrite,
            progress=update,
            fbp_method=fbp_method,
        )
    used = v.attrs.rotation_center
    vs = v.attrs.voxel_size
    voxel = (
        f"{vs.value:g} {vs.unit}"
        if vs is not None
        else "unknown (the scan has no pixel size: pass --pixel-size at ingest)"
    )
    _wrote(out, f"{' x '.join(map(str, v.shape))} voxels in {time.perf_counter() - t0:.1f} s, voxel size {_e(voxel)}")
    console.print(
        f"rotation centre {used:.2f} px ({_e(source)})" if used is not None else f"rotation centre: {_e(source)}"
    )
    if png_plan is not None:
        from tomoflow.report import overview_png

        console.print(f"overview: {_e(overview_png(png_plan, store, out))}")


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
