"""Resolution-recovery commands: simulate-pair (a test pair), register (an HR ROI volume into an LFOV volume)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import typer

from tomoflow.cli._app import _check_can_create, _e, _fail, _friendly, _writing, app, console


def _voxel_um(store: Any, path: Path) -> float:
    vs = store.attrs.voxel_size
    if vs is None:
        _fail(f"{path}: the voxel size is unknown (the scan had no pixel size); registration needs micrometres")
    return float(vs.value)


def _stage_um(store: Any) -> Any:
    pos = store.extra.get("stage_position_um")
    return None if pos is None else [float(v) for v in pos]


@app.command("simulate-pair")
@_friendly
def simulate_pair(
    hr: Path = typer.Argument(..., help="HR ROI volume store to write (OME-Zarr)."),
    lfov: Path = typer.Argument(..., help="LFOV volume store to write (OME-Zarr)."),
    family: str = typer.Option("cathode", help="Porous sample: cathode or foam."),
    hr_size: int = typer.Option(64, help="HR ROI edge (voxels of --hr-voxel um)."),
    lfov_size: int = typer.Option(40, help="LFOV edge (voxels of --lfov-voxel um)."),
    hr_voxel: float = typer.Option(1.0, help="HR voxel size, um."),
    lfov_voxel: float = typer.Option(4.0, help="LFOV voxel size, um."),
    seed: int = typer.Option(0, help="Random seed (sample, misregistration, noise)."),
    overwrite: bool = typer.Option(False, help="Replace existing tomoflow volume stores."),
) -> None:
    """Simulate a porous sample scanned twice: an LFOV volume and an HR ROI inside it, with stage
    positions a few voxels off and a random 9-DOF misregistration (ground truth in the metadata)."""
    from tomoflow.io.synthetic import write_multiscale_pair
    from tomoflow.sim import simulate_multiscale_pair

    t0 = time.perf_counter()
    pair = simulate_multiscale_pair(family=family, hr_shape=(hr_size,) * 3, lfov_shape=(lfov_size,) * 3,
                                    hr_spacing_um=hr_voxel, lfov_spacing_um=lfov_voxel, seed=seed)
    with _writing(hr), _writing(lfov):
        write_multiscale_pair(pair, hr, lfov, overwrite=overwrite)
    console.print(f"wrote [bold]{_e(hr)}[/] ({hr_size}³ x {hr_voxel:g} um) and [bold]{_e(lfov)}[/] ({lfov_size}³ x "
                  f"{lfov_voxel:g} um) in {time.perf_counter() - t0:.1f} s; HR porosity {100 * pair.porosity:.2f} %")


@app.command()
@_friendly
def register(
    hr: Path = typer.Argument(..., help="HR region-of-interest volume store (OME-Zarr)."),
    lfov: Path = typer.Argument(..., help="LFOV volume store of the same sample (read only around the ROI)."),
    out: Path = typer.Option(..., "--out", "-o", help="JSON file to write: the HR -> LFOV matrix, its "
                             "parameters, NCC before/after, stage timings."),
    dof: int = typer.Option(9, help="Degrees of freedom: 3 (translation), 6 (rigid) or 9 (+ per-axis scale)."),
    png: Optional[Path] = typer.Option(None, help="Also write a QC PNG (HR, LFOV resampled onto it, checkerboard)."),
    device: str = typer.Option("auto", help="torch device: cpu, cuda or auto."),
    max_rotation: float = typer.Option(10.0, help="Refuse a result rotated by more than this (degrees)."),
) -> None:
    """Register an HR ROI volume into an LFOV volume: stage prior, translation, then 9 DOF.

    The prior comes from the stores' stage positions (``stage_position_um`` in their extra metadata);
    without them the ROI is assumed centred in the LFOV field. The matrix maps HR physical (z, y, x)
    micrometres to LFOV physical micrometres (origins at each volume's first voxel centre).
    """
    import numpy as np

    from tomoflow.io.volume_store import VolumeStore
    from tomoflow.register import register as run_register
    from tomoflow.register.resample import resample_to_grid
    from tomoflow.register.transform import prior_from_stage

    for p in (out, png):
        if p is not None:
            _check_can_create(p)
    h, lf = VolumeStore.open(hr), VolumeStore.open(lfov)
    hr_um, lf_um = _voxel_um(h, hr), _voxel_um(lf, lfov)
    hs, ls = _stage_um(h), _stage_um(lf)
    if hs is not None and ls is not None:
        prior = prior_from_stage(h.shape, hr_um, hs, lf.shape, lf_um, ls)
        source = "stage positions"
    else:
        prior, source = None, "none recorded: ROI assumed centred in the LFOV field"
    console.print(f"HR {' x '.join(map(str, h.shape))} voxels of {hr_um:g} um, LFOV "
                  f"{' x '.join(map(str, lf.shape))} voxels of {lf_um:g} um; prior: {_e(source)}")
    t0 = time.perf_counter()
    hr_vol = np.asarray(h.level(0)[...], dtype=np.float32)
    res = run_register(hr_vol, lf.level(0), hr_um, lf_um, prior=prior, dof=dof, device=device,
                       max_rotation_deg=max_rotation)
    seconds = time.perf_counter() - t0
    doc = {"hr": str(hr), "lfov": str(lfov), "hr_voxel_um": hr_um, "lfov_voxel_um": lf_um, "prior_source": source,
           "seconds": seconds, **res.as_dict()}
    with _writing(out):
        Path(out).write_text(json.dumps(doc, indent=2) + "\n")
    tr = res.transform
    console.print(f"wrote [bold]{_e(out)}[/] in {seconds:.1f} s: NCC {res.ncc_prior:.3f} -> {res.ncc:.3f}, rotation "
                  f"{tr.rotation_deg:.2f} deg, scale {' '.join(f'{s:.4f}' for s in tr.scale)}, translation "
                  f"{' '.join(f'{t:+.2f}' for t in tr.translation)} um")
    if png is not None:
        from tomoflow.report import registration_png

        resampled = resample_to_grid(lf.level(0), res.matrix, h.shape, hr_um, lf_um)
        with _writing(png):
            registration_png(png, hr_vol, resampled, title=f"{hr.name} in {lfov.name}: NCC {res.ncc:.3f}, "
                             f"rotation {tr.rotation_deg:.2f} deg")
        console.print(f"QC: {_e(png)}")
