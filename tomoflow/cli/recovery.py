"""Resolution-recovery commands: simulate-pair (a test pair), register (an HR ROI volume into an LFOV
volume), recover (a trained U-Net over a whole volume store), pores (porosity and pore sizes)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import typer

from tomoflow.cli._app import (
    _cluster,
    _e,
    _fail,
    _friendly,
    _hold_output,
    _stage_progress,
    _writing,
    _wrote,
    app,
    console,
)
from tomoflow.pipeline.registration import central_planes, register_volumes, registration_prior, volume_voxel_um


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
    from tomoflow._checks import check_seed
    from tomoflow.io.synthetic import write_multiscale_pair
    from tomoflow.sim import simulate_multiscale_pair

    check_seed("--seed", seed)
    t0 = time.perf_counter()
    pair = simulate_multiscale_pair(
        family=family,
        hr_shape=(hr_size,) * 3,
        lfov_shape=(lfov_size,) * 3,
        hr_spacing_um=hr_voxel,
        lfov_spacing_um=lfov_voxel,
        seed=seed,
    )
    with _writing(hr), _writing(lfov):
        write_multiscale_pair(pair, hr, lfov, overwrite=overwrite)
    console.print(
        f"wrote [bold]{_e(hr)}[/] ({hr_size}³ x {hr_voxel:g} um) and [bold]{_e(lfov)}[/] ({lfov_size}³ x "
        f"{lfov_voxel:g} um) in {time.perf_counter() - t0:.1f} s; HR porosity {100 * pair.porosity:.2f} %"
    )


@app.command()
@_friendly
def register(
    hr: Path = typer.Argument(..., help="HR region-of-interest volume store (OME-Zarr; read chunk by chunk)."),
    lfov: Path = typer.Argument(..., help="LFOV volume store of the same sample (read only around the ROI)."),
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        help="JSON file to write: the HR -> LFOV matrix, its parameters, NCC before/after, stage timings.",
    ),
    dof: int = typer.Option(9, help="Degrees of freedom: 3 (translation), 6 (rigid) or 9 (+ per-axis scale)."),
    png: Path | None = typer.Option(None, help="Also write a QC PNG (HR, LFOV resampled onto it, checkerboard)."),
    device: str = typer.Option("auto", help="torch device: cpu, cuda or auto."),
    max_rotation: float = typer.Option(10.0, help="Refuse a result rotated by more than this (degrees)."),
    overwrite: bool = typer.Option(
        False,
        help="Replace a JSON or PNG that tomoflow wrote from other inputs or "
        "parameters (never a file tomoflow did not write).",
    ),
) -> None:
    """Register an HR ROI volume into an LFOV volume: stage prior, translation, then 9 DOF.

    The prior comes from the stores' stage positions (``stage_position_um`` in their extra metadata);
    without them the ROI is assumed centred in the LFOV field. The matrix maps HR physical (z, y, x)
    micrometres to LFOV physical micrometres (origins at each volume's first voxel centre).
    """
    import numpy as np

    from tomoflow.io.output import fingerprint, identity_of, plan_file, write_json
    from tomoflow.io.volume_store import VolumeStore
    from tomoflow.register.resample import resample_to_grid

    h, lf = VolumeStore.open(hr), VolumeStore.open(lfov)
    inputs = {"hr": identity_of(hr), "lfov": identity_of(lfov)}
    request = {"dof": dof, "max_rotation_deg": max_rotation}
    out_plan = plan_file(
        out,
        kind="registration",
        option="--out",
        inputs=[hr, lfov],
        overwrite=overwrite,
        fingerprint=fingerprint("register", inputs=inputs, params=request),
    )
    png_plan = (
        None
        if png is None
        else plan_file(
            png,
            kind="picture",
            option="--png",
            inputs=[hr, lfov, out],
            overwrite=overwrite,
            fingerprint=fingerprint("register-png", inputs=inputs, params=request),
        )
    )
    _hold_output(out, "registration")  # one writer at a time
    hr_um, lf_um = volume_voxel_um(h, hr), volume_voxel_um(lf, lfov)
    _, source = registration_prior(h, lf, hr_um, lf_um)
    console.print(
        f"HR {' x '.join(map(str, h.shape))} voxels of {hr_um:g} um, LFOV "
        f"{' x '.join(map(str, lf.shape))} voxels of {lf_um:g} um; prior: {_e(source)}"
    )
    doc = register_volumes(hr, lfov, dof=dof, device=device, max_rotation_deg=max_rotation)
    seconds, tr, matrix = doc["seconds"], doc["transform"], np.asarray(doc["matrix"])
    write_json(out_plan, doc)
    console.print(
        f"{'kept' if out_plan.action == 'same' else 'wrote'} [bold]{_e(out)}[/] ({seconds:.1f} s): "
        f"NCC {doc['ncc_prior']:.3f} -> {doc['ncc']:.3f}, "
        f"rotation {tr['rotation_deg']:.2f} deg, scale {' '.join(f'{s:.4f}' for s in tr['scale'])}, "
        f"translation {' '.join(f'{t:+.2f}' for t in tr['translation_um'])} um"
    )
    if png_plan is not None:
        from tomoflow.report import registration_png

        # only the three central planes: of the HR, read chunk by chunk, and of the LFOV resampled onto them
        centre = [n // 2 for n in h.shape]
        boxes = [tuple((c, c + 1) if a == b else (0, n) for b, n in enumerate(h.shape)) for a, c in enumerate(centre)]
        lf_planes = [
            resample_to_grid(lf.level(0), matrix, h.shape, hr_um, lf_um, box=box).squeeze(axis=a)
            for a, box in enumerate(boxes)
        ]
        registration_png(
            png_plan,
            central_planes(h.level(0)),
            lf_planes,
            title=f"{hr.name} in {lfov.name}: NCC {doc['ncc']:.3f}, rotation {tr['rotation_deg']:.2f} deg",
        )
        console.print(f"QC: {_e(png)}")


@app.command()
@_friendly
def recover(
    volume: Path = typer.Argument(
        ..., help="Volume store to recover: the LFOV volume (with --voxel or --registration), or one on the HR grid."
    ),
    model: Path = typer.Option(
        ...,
        "--model",
        "-m",
        help="U-Net weights (.safetensors, model card beside), or "
        "its ONNX export (.onnx from `train-recovery --onnx`, run by onnxruntime).",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Volume store to write (OME-Zarr, with pyramid)."),
    voxel: float | None = typer.Option(
        None,
        help="Recover the whole field of VOLUME at this voxel size (um; the HR voxel size the network was "
        "trained on), resampled block by block on the fly (no intermediate store).",
    ),
    registration: Path | None = typer.Option(
        None,
        "--registration",
        "-r",
        help="JSON written by `tomoflow register`: recover on the grid of --hr, VOLUME resampled on the fly "
        "through its matrix.",
    ),
    hr: Path | None = typer.Option(
        None, help="With --registration: the HR volume store whose grid (shape, voxel size) is the output's."
    ),
    order: int | None = typer.Option(
        None, help="With --voxel or --registration: spline order of the resampling (default 3 cubic, 1 trilinear)."
    ),
    pad_mode: str = typer.Option("reflect", help="Volume border extension: reflect or zeros (as in training)."),
    cluster: str = typer.Option("local", help="local, local-cuda, slurm, pbs, a scheduler address or file, or none."),
    workers: int | None = typer.Option(None, help="Workers of the local cluster."),
    overwrite: bool = typer.Option(False, help="Replace an output made from other inputs or parameters."),
) -> None:
    """Run a resolution-recovery U-Net over a whole volume, block by block on Dask (exact stitching,
    resumable: rerun the same command after an interruption). With --voxel (the whole field) or
    --registration and --hr (the HR ROI's grid), each block's input is resampled from VOLUME on the fly:
    the result of `tomoflow resample` then `tomoflow recover`, without writing the resampled volume."""
    from tomoflow.cli.resample import target_grid
    from tomoflow.pipeline.recover import recover_volume
    from tomoflow.pipeline.resample import plan_resample

    grid = target_grid(volume, out, registration=registration, hr=hr, voxel=voxel, output="the recovered volume")
    kw: dict[str, Any] = {}
    if grid is None:
        if order is not None:
            _fail("--order is the resampling's: it goes with --voxel or --registration")
    else:
        matrix, shape, spacing, doc, what = grid
        kw = {"matrix": matrix, "shape": shape, "spacing_um": spacing, "order": 3 if order is None else order}
        # the grid (matrix, inside the volume, order, size against the caps and free space) before any cluster
        plan_resample(
            volume,
            out,
            matrix=matrix,
            shape=shape,
            spacing_um=spacing,
            order=kw["order"],
            output="the recovered volume",
        )
        kw["registration"] = doc
        console.print(f"recovering {_e(volume)} resampled onto {_e(what)}")
    t0 = time.perf_counter()
    with _cluster(cluster, workers) as client, _stage_progress() as update, _writing(out):
        v = recover_volume(
            volume, model, out, pad_mode=pad_mode, client=client, overwrite=overwrite, progress=update, **kw
        )
    info = v.stages()["recover"].info
    _wrote(
        out,
        f"{' x '.join(map(str, v.shape))} voxels in {time.perf_counter() - t0:.1f} s "
        f"({info.get('blocks_computed', 0)} of {info.get('blocks', 0)} blocks computed, halo "
        f"{info.get('halo')} voxels, {info.get('device')})",
    )


def pores_table(results: dict[str, Any], threshold: float, connectivity: int, min_voxels: int) -> Any:
    """The rich table of pore metrics (``{name: PoreMetrics}``, one protocol): porosity, pore count, mean
    pore volume and median equivalent diameter per volume (names printed as typed)."""
    from rich.table import Table

    def fmt(x: float | None, spec: str) -> str:
        return "-" if x is None else format(x, spec)

    table = Table(title=f"pores (threshold {threshold:.4g}, {connectivity}-connected, >= {min_voxels} voxels)")
    for col in ("volume", "porosity %", "count", "mean volume um3", "median diameter um"):
        table.add_column(col, justify="left" if col == "volume" else "right")
    for name, m in results.items():
        d = m.as_dict()
        table.add_row(
            _e(name),
            f"{d['porosity_percent']:.3f}",
            str(d["count"]),
            fmt(d["mean_pore_volume_um3"], ".1f"),
            fmt(d["median_equivalent_diameter_um"], ".2f"),
        )
    return table


def recall_table(found: Any, reference: str) -> Any:
    """The rich table of a :class:`~tomoflow.recover.PoreRecall`: per pore-volume bin, the reference's
    pores and the fraction each volume finds."""
    from rich.table import Table

    table = Table(
        title=f"which of {_e(reference)}'s pores each volume finds, by pore volume "
        f"(at least {100 * found.found_fraction:g} % of the pore below the threshold)"
    )
    table.add_column("pore volume um3")
    table.add_column(f"{_e(reference)} pores", justify="right")
    for name in found.found:
        table.add_column(f"{_e(name)} finds", justify="right")
    e = found.edges_um3
    for i in range(len(found.reference)):
        label = f"{e[i]:g} - {e[i + 1]:g}" if math.isfinite(e[i + 1]) else f">= {e[i]:g}"
        table.add_row(
            label,
            str(int(found.reference[i])),
            *("-" if not found.reference[i] else f"{100 * r:.0f} %" for r in (found.recall(k)[i] for k in found.found)),
        )
    return table


def pores_document(
    results: dict[str, Any], threshold: float, connectivity: int, min_voxels: int, region: Any = None
) -> dict[str, Any]:
    """The JSON document of pore metrics (``{name: PoreMetrics}``): the protocol and each volume's
    :meth:`~tomoflow.recover.PoreMetrics.as_dict`."""
    return {
        "threshold": threshold,
        "connectivity": connectivity,
        "min_voxels": min_voxels,
        "region": region,
        "volumes": {name: m.as_dict() for name, m in results.items()},
    }


def _parse_region(text: str | None) -> Any:
    if text is None:
        return None
    try:
        parts = [tuple(int(v) for v in p.split(":")) for p in text.split(",")]
        if len(parts) != 3 or any(len(p) != 2 for p in parts):
            raise ValueError
    except ValueError:
        _fail(f"--region must be z0:z1,y0:y1,x0:x1 (voxels), got {text!r}")
    return parts


@app.command()
@_friendly
def pores(
    volumes: list[Path] = typer.Argument(
        ..., help="Volume stores to measure (e.g. LFOV, HR, recovered) over the same region."
    ),
    threshold: float | None = typer.Option(
        None, help="Pore threshold (pores are darker); default: Otsu on --reference."
    ),
    reference: Path | None = typer.Option(None, help="Volume store the threshold is derived from (the HR)."),
    region: str | None = typer.Option(None, help="z0:z1,y0:y1,x0:x1 voxel region (default: whole volumes)."),
    connectivity: int = typer.Option(26, help="Voxel connectivity of a pore: 6, 18 or 26."),
    min_voxels: int = typer.Option(8, help="Smallest pore in voxels (smaller ones are not pores)."),
    json_out: Path | None = typer.Option(
        None, "--json", help="Write the metrics as JSON here (a new file, or one tomoflow wrote: see --overwrite)."
    ),
    png: Path | None = typer.Option(None, help="Write the pore-size histogram PNG here."),
    recall: bool = typer.Option(
        False,
        "--recall",
        help="Also say which of --reference's pores each volume "
        "finds, by pore size (volumes on the reference's grid; the region is read "
        "into memory).",
    ),
    overwrite: bool = typer.Option(
        False,
        help="Replace a JSON or PNG that tomoflow wrote from other inputs or "
        "parameters (never a file tomoflow did not write).",
    ),
) -> None:
    """Porosity, pore count and pore sizes of volume stores with one fixed protocol (threshold, connectivity,
    minimum size), blockwise (exact for volumes larger than memory)."""
    from tomoflow.io.output import fingerprint, identity_of, plan_file, write_json
    from tomoflow.pipeline.pores import reference_threshold, volume_pores

    box = _parse_region(region)
    sources = list(volumes) + ([reference] if reference is not None else [])
    ident = {f"volume{i}": identity_of(v) for i, v in enumerate(volumes)}
    if reference is not None:
        ident["reference"] = identity_of(reference)
    request = {
        "threshold": threshold,
        "region": box,
        "connectivity": connectivity,
        "min_voxels": min_voxels,
        "recall": recall,
        "names": [v.name for v in volumes],
    }
    json_plan = (
        None
        if json_out is None
        else plan_file(
            json_out,
            kind="pore-metrics",
            option="--json",
            inputs=sources,
            overwrite=overwrite,
            fingerprint=fingerprint("pores", inputs=ident, params=request),
        )
    )
    png_plan = (
        None
        if png is None
        else plan_file(
            png,
            kind="picture",
            option="--png",
            inputs=sources + ([json_out] if json_out else []),
            overwrite=overwrite,
            fingerprint=fingerprint("pores-png", inputs=ident, params=request),
        )
    )
    if json_out is not None:
        _hold_output(json_out, "pore metrics")  # one writer at a time
    if recall and reference is None:
        _fail("--recall compares with the reference's pores: give --reference (the HR)")
    if threshold is None:
        if reference is None:
            _fail("give --threshold, or --reference (a volume store, usually the HR) to derive it from")
        threshold = reference_threshold(reference, region=box if reference in volumes else None)
        console.print(f"threshold {threshold:.5g} (Otsu on {_e(reference)})")
    results = {}
    for v in volumes:
        results[v.name if v.name not in results else str(v)] = volume_pores(
            v, threshold=threshold, connectivity=connectivity, min_voxels=min_voxels, region=box
        )
    console.print(pores_table(results, threshold, connectivity, min_voxels))
    found = None
    if recall:
        from tomoflow.pipeline.pores import volume_pore_recall

        others = [v for v in volumes if v != reference]
        found = volume_pore_recall(
            reference,  # type: ignore[arg-type]  # --recall requires --reference
            others,
            threshold=threshold,
            connectivity=connectivity,
            min_voxels=min_voxels,
            region=box,
        )
        console.print(recall_table(found, reference.name))  # type: ignore[union-attr]  # --recall requires --reference
    if json_plan is not None:
        doc = pores_document(results, threshold, connectivity, min_voxels, box)
        if found is not None:
            doc["recall_by_size"] = {"reference": str(reference), **found.as_dict()}
        write_json(json_plan, doc)
        console.print(f"{'kept' if json_plan.action == 'same' else 'wrote'} {_e(json_out)}")
    if png_plan is not None:
        from tomoflow.pipeline.pores import plot_pore_sizes

        plot_pore_sizes(results, png_plan)
        console.print(f"histogram: {_e(png)}")
