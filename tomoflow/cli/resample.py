"""``tomoflow resample``: a volume store onto another voxel grid, on Dask (the ``resample`` stage).

Two grids: the HR region of interest through a registration (the LFOV on the HR grid: the input of a
training pair, compared voxel by voxel with the HR volume), or the whole field of the volume at
another voxel size (what the resolution-recovery network then runs on), optionally a region of it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from tomoflow.cli._app import _cluster, _e, _fail, _friendly, _stage_progress, _writing, _wrote, app, console


@app.command()
@_friendly
def resample(
    volume: Path = typer.Argument(..., help="Volume store to resample (e.g. the LFOV volume)."),
    out: Path = typer.Option(..., "--out", "-o", help="Volume store to write (OME-Zarr, with pyramid)."),
    registration: Path | None = typer.Option(
        None,
        "--registration",
        "-r",
        help="JSON written by `tomoflow register`: resample onto the grid of --hr through its matrix.",
    ),
    hr: Path | None = typer.Option(
        None, help="With --registration: the HR volume store whose grid (shape, voxel size) is the output's."
    ),
    voxel: float | None = typer.Option(
        None,
        help="Without --registration: the whole field of VOLUME at this "
        "voxel size (um), e.g. the HR voxel size before `tomoflow recover`.",
    ),
    region: str | None = typer.Option(None, help="With --voxel: only z0:z1,y0:y1,x0:x1 (voxels of the new grid)."),
    order: int = typer.Option(3, help="Spline order: 3 cubic, 1 trilinear, 0 nearest."),
    chunk: int = typer.Option(64, help="Output chunk edge (voxels)."),
    cluster: str = typer.Option("local", help="local, local-cuda, slurm, pbs, a scheduler address or file, or none."),
    workers: int | None = typer.Option(None, help="Workers of the local cluster."),
    overwrite: bool = typer.Option(False, help="Replace an output made from other inputs or parameters."),
) -> None:
    """Resample a volume store onto the HR ROI grid of a registration, or its whole field at another voxel
    size, with one cubic interpolation per voxel, chunk by chunk on Dask (resumable)."""
    import numpy as np

    from tomoflow.cli.recovery import _parse_region
    from tomoflow.pipeline.resample import plan_resample, resample_volume

    if chunk < 1:
        _fail(f"--chunk must be a positive number of voxels, got {chunk}")
    if region is not None and registration is not None:
        _fail("--region goes with --voxel (a part of the whole field); with --registration the grid is the HR ROI")
    grid = target_grid(volume, out, registration=registration, hr=hr, voxel=voxel, output="the resampled volume")
    if grid is None:
        _fail("give either --registration with --hr (the HR ROI grid) or --voxel (the whole field at that voxel size)")
    matrix, shape, spacing, doc, what = grid
    box = _parse_region(region)
    if box is not None:
        for (a, b), n, ax in zip(box, shape, "zyx"):
            if not 0 <= a < b <= n:
                _fail(f"--region {ax} range {a}:{b} is not inside the field's 0:{n} voxels")
        matrix = matrix.copy()
        matrix[:3, 3] += np.array([a for a, _ in box], dtype=np.float64) * spacing
        shape = tuple(b - a for a, b in box)
        what = f"the field of {volume.name} at {spacing:g} um ({' x '.join(map(str, shape))} voxels, region {region})"
    src_um = grid_source_um(volume)
    # the whole plan (matrix, grid, chunks, bytes against the caps and the free space) before any cluster
    plan_resample(volume, out, matrix=matrix, shape=shape, spacing_um=spacing, order=order, chunks=(chunk,) * 3)
    console.print(f"resampling {_e(volume)} ({src_um:g} um voxels) onto {_e(what)}")
    t0 = time.perf_counter()
    with _cluster(cluster, workers) as client, _stage_progress() as update, _writing(out):
        v = resample_volume(
            volume,
            out,
            matrix=matrix,
            shape=shape,
            spacing_um=spacing,
            order=order,
            chunks=(chunk,) * 3,
            registration=doc,
            client=client,
            overwrite=overwrite,
            progress=update,
        )
    _wrote(out, f"{' x '.join(map(str, v.shape))} voxels of {spacing:g} um in {time.perf_counter() - t0:.1f} s")


def grid_source_um(volume: Path) -> float:
    """The voxel size (micrometres) of a volume store to resample; ConfigError when it is unknown."""
    from tomoflow.io.volume_store import VolumeStore
    from tomoflow.pipeline.registration import volume_voxel_um

    return volume_voxel_um(VolumeStore.open(volume), volume)


def target_grid(
    volume: Path, out: Path, *, registration: Path | None, hr: Path | None, voxel: float | None, output: str
) -> tuple[Any, tuple[int, int, int], float, dict[str, Any] | None, str] | None:
    """The grid of ``--registration REG --hr HR`` or ``--voxel UM`` for resampling ``volume`` (commands
    ``resample`` and ``recover``): ``(matrix, shape, spacing_um, registration document, description)``,
    or None where neither is given. A mistake (both given, ``--registration`` without ``--hr`` or the
    reverse, a non-positive voxel size, a registration that cannot be read or registers other volumes,
    ``out`` being one of these inputs) exits with one line before anything is created."""
    import numpy as np

    from tomoflow.cli.train_recovery import _read_registration
    from tomoflow.io.volume_store import VolumeStore
    from tomoflow.pipeline.registration import volume_voxel_um
    from tomoflow.pipeline.resample import field_grid

    if registration is not None and voxel is not None:
        _fail("give either --registration with --hr (the HR ROI grid) or --voxel (the whole field at that voxel size)")
    if registration is None and voxel is None:
        if hr is not None:
            _fail("--hr goes with --registration")
        return None
    src_um = grid_source_um(volume)
    if registration is not None:
        if hr is None:
            _fail("--registration needs --hr, the HR volume store whose grid the output takes")
        from tomoflow.io.output import check_not_an_input

        check_not_an_input(out, [hr, registration], output)  # inputs of this run, never replaced
        h = VolumeStore.open(hr)
        spacing = volume_voxel_um(h, hr)
        matrix, doc = _read_registration(registration, spacing, src_um)
        shape: Any = tuple(int(n) for n in h.shape)
        return (
            matrix,
            shape,
            spacing,
            doc,
            f"the HR grid of {hr.name} ({' x '.join(map(str, shape))} voxels of {spacing:g} um)",
        )
    if hr is not None:
        _fail("--hr goes with --registration")
    if not (voxel is not None and voxel > 0 and np.isfinite(voxel)):
        _fail(f"--voxel must be a positive voxel size in um, got {voxel}")
    spacing = float(voxel)
    shape, matrix = field_grid(VolumeStore.open(volume).shape, src_um, spacing)
    return (
        matrix,
        shape,
        spacing,
        None,
        f"the field of {volume.name} at {spacing:g} um ({' x '.join(map(str, shape))} voxels)",
    )
