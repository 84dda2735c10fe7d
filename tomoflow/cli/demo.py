"""`tomoflow demo`: the main job on an embedded default."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer

from tomoflow.cli._app import (
    _check_positive,
    _cluster,
    _e,
    _friendly,
    _progress,
    _stage_progress,
    app,
    console,
)
from tomoflow.cli.scan import _simulate
from tomoflow.errors import ConfigError

#: Edge of the recovery part's HR ROI by default (1 um voxels; the LFOV field around it, in 4 um voxels, is a bit
#: over twice as wide).
RECOVERY_SIZE = 48
#: The recovery part's training time limit by default (seconds).
RECOVERY_TRAIN_SECONDS = 25.0


@app.command()
@_friendly
def demo(
    out: Path = typer.Option(Path("demo-output"), help="Directory for everything the demo writes."),
    size: int = typer.Option(128, min=32, help="Slice edge of the simulated sample (voxels)."),
    rows: int = typer.Option(32, min=1, help="Detector rows."),
    angles: int = typer.Option(181, min=16, help="Projections over 180 degrees."),
    cluster: str = typer.Option("local", help="Cluster to run on (see `tomoflow recon --help`)."),
    workers: int | None = typer.Option(2, help="Workers of the local cluster."),
    recovery_size: int = typer.Option(
        RECOVERY_SIZE,
        min=0,
        help="Edge of the HR ROI of the resolution-recovery "
        "part (1 um voxels, at least 40; the LFOV field around it, in 4 um voxels, is "
        "a bit over twice as wide); 0 skips that part.",
    ),
    recovery_train_seconds: float = typer.Option(
        RECOVERY_TRAIN_SECONDS, help="Time limit of the recovery network's training (seconds)."
    ),
) -> None:
    """The main job on an embedded default: simulate a jittered scan of a battery cathode particle,
    ingest it from its DXchange file, start a local Dask cluster (dashboard link printed), find the
    rotation centre, correct the jitter, reconstruct the volume and write PNGs (overview, and the
    alignment report with before/after slices).

    Then a small resolution recovery in ``OUT/recovery`` (skipped with ``--recovery-size 0``): simulate
    a porous sample scanned twice (an LFOV volume of 4 um voxels and an HR ROI of 1 um voxels inside
    it), register the ROI into the LFOV, resample the LFOV onto the ROI's grid, train a small U-Net on
    that pair for ``--recovery-train-seconds``, recover the whole LFOV field at the HR voxel size on the
    cluster, compare pores (LFOV, HR, recovered; one protocol: table, JSON, size histogram) and write
    the before/after slices (``recovery.png``)."""
    from tomoflow import config

    if recovery_size and recovery_size < 40:
        raise ConfigError(
            f"--recovery-size must be 0 (no recovery) or at least 40 voxels (a smaller ROI is too small "
            f"to register), got {recovery_size}"
        )
    _check_positive("--recovery-train-seconds", recovery_train_seconds, "seconds")
    if cluster == "local" and workers is not None:  # before the first step, not when the cluster starts
        from tomoflow.cluster import check_worker_count

        check_worker_count(workers, option="--workers")
    budget = config.get().worker_memory_budget  # --memory, for the recovery part (a network block needs ~0.5 GB)
    # Small slabs (8 rows, 24 MB per task) so the dashboard shows the work spread over the workers.
    with config.set(scan_chunk_rows=8, worker_memory_budget="24MB"):
        _demo(out, size, rows, angles, cluster, workers, recovery_size, recovery_train_seconds, budget)


def _demo(
    out: Path,
    size: int,
    rows: int,
    angles: int,
    cluster: str,
    workers: int | None,
    recovery_size: int = 0,
    recovery_seconds: float = RECOVERY_TRAIN_SECONDS,
    recovery_budget: int | str = "2GB",
) -> None:
    from tomoflow.io.output import plan_files

    # The file policy, before any work: the demo replaces only what an earlier demo wrote there.
    files = {"synthetic_scan.h5": "raw-scan", "overview.png": "picture", "alignment.png": "picture"}
    if recovery_size:
        files.update(
            {
                f"recovery/{n}": k
                for n, k in (
                    ("registration.json", "registration"),
                    ("pores.json", "pore-metrics"),
                    ("pores.png", "picture"),
                    ("recovery.png", "picture"),
                    ("model/recover_unet.safetensors", "model-weights"),
                    ("model/recover_unet.json", "model-card"),
                )
            }
        )
    plan_files(out, files, overwrite=True)
    out.mkdir(parents=True, exist_ok=True)
    raw = out / "synthetic_scan.h5"
    scan_store = out / "scan.zarr"
    volume = out / "volume.zarr"
    t0 = time.perf_counter()
    console.rule("[bold]tomoflow demo")
    console.print(
        f"1. simulating a {angles}-projection scan of a {size}x{size}x{rows} cathode particle "
        f"(jitter +-3 px, Poisson noise, rotation axis 2.5 px off centre) -> {_e(raw)}"
    )
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
    with _cluster(cluster, workers) as client:
        with _stage_progress() as update:
            align_scan(scan_store, aligned, method=method, center=ctr, client=client, overwrite=True, progress=update)
            reconstruct_scan(aligned, volume, client=client, overwrite=True, progress=update)
        from tomoflow.report import alignment_png, overview_png

        al = ScanStore.open(aligned)
        console.print(
            f"   refined rotation centre {al.attrs.rotation_center:.2f} px; "
            f"{al.stage('align').info.get('method')} alignment in {al.stage('align').seconds or 0:.1f} s"
        )
        png = overview_png(
            out / "overview.png",
            aligned,
            volume,
            title="tomoflow demo: simulated cathode particle, jitter-corrected",
            overwrite=True,
        )
        report = alignment_png(out / "alignment.png", scan_store, aligned, overwrite=True)
        console.print(f"5. overview: [bold]{_e(png)}[/]; before/after: [bold]{_e(report)}[/]")
        if recovery_size:
            from tomoflow import config

            # the budget of --memory again: the demo's 24 MB per task holds no network block
            with config.set(worker_memory_budget=recovery_budget):
                _recovery(out / "recovery", recovery_size, recovery_seconds, client)
    console.rule(f"done in {time.perf_counter() - t0:.1f} s")
    console.print(
        f"Look inside: `tomoflow info {_e(scan_store)}`, `tomoflow info {_e(aligned)}` and `tomoflow info {_e(volume)}`"
    )


def _recovery(rec: Path, size: int, train_seconds: float, client: Any) -> None:
    """Steps 6-12 of the demo: a resolution recovery of a simulated pair, everything written in ``rec``."""
    import numpy as np

    from tomoflow.cli.recovery import pores_document, pores_table
    from tomoflow.cli.train_recovery import training_bar
    from tomoflow.io.output import plan_file, write_json
    from tomoflow.io.synthetic import write_multiscale_pair
    from tomoflow.io.volume_store import VolumeStore
    from tomoflow.pipeline.pores import plot_pore_sizes, reference_threshold, volume_pores
    from tomoflow.pipeline.recover import recover_volume
    from tomoflow.pipeline.registration import register_volumes
    from tomoflow.pipeline.resample import field_grid, resample_volume
    from tomoflow.recover.unet import UNetConfig
    from tomoflow.report import recovery_png
    from tomoflow.sim import simulate_multiscale_pair
    from tomoflow.train.recovery import train_recovery

    t0 = time.perf_counter()
    rec.mkdir(parents=True, exist_ok=True)
    hr_path, lf_path = rec / "hr.zarr", rec / "lfov.zarr"
    hr_um, lf_um, lf_size = 1.0, 4.0, size // 2 + 2  # room for the simulated misregistration
    console.rule("[bold]resolution recovery")
    console.print(
        f"6. simulating a porous cathode scanned twice: a {lf_size}³ LFOV of {lf_um:g} um voxels and a "
        f"{size}³ HR ROI of {hr_um:g} um voxels inside it (misregistered) -> {_e(lf_path)}, {_e(hr_path)}"
    )
    pair = simulate_multiscale_pair(
        family="cathode",
        hr_shape=(size,) * 3,
        lfov_shape=(lf_size,) * 3,
        hr_spacing_um=hr_um,
        lfov_spacing_um=lf_um,
        seed=0,
    )
    write_multiscale_pair(pair, hr_path, lf_path, overwrite=True)

    h, lf = VolumeStore.open(hr_path), VolumeStore.open(lf_path)
    hr_vol = np.asarray(h.level(0)[...], dtype=np.float32)
    doc = register_volumes(hr_path, lf_path)  # the HR read chunk by chunk, as `tomoflow register` does
    reg = rec / "registration.json"
    write_json(plan_file(reg, kind="registration", overwrite=True), doc)
    matrix = np.asarray(doc["matrix"], dtype=np.float64)
    console.print(
        f"7. registered the ROI into the LFOV in {doc['seconds']:.1f} s (prior: {_e(doc['prior_source'])}): "
        f"NCC {doc['ncc_prior']:.3f} -> {doc['ncc']:.3f} -> {_e(reg)}"
    )

    roi_in = rec / "lfov_on_hr.zarr"
    console.print(f"8. resampling the LFOV onto the ROI's grid -> {_e(roi_in)}")
    with _stage_progress() as update:
        resample_volume(
            lf_path,
            roi_in,
            matrix=matrix,
            shape=h.shape,
            spacing_um=hr_um,
            client=client,
            overwrite=True,
            progress=update,
        )

    model_dir = rec / "model"
    steps, unet = 10, UNetConfig(channels=(16, 32))  # small: a few epochs fit in the time limit on a CPU
    console.print(
        f"9. training a small U-Net (LFOV on the ROI grid -> HR) for at most {train_seconds:g} s -> {_e(model_dir)}"
    )
    inp = np.asarray(VolumeStore.open(roi_in).level(0)[...], dtype=np.float32)
    with training_bar(steps) as progress:
        res = train_recovery(
            inp,
            hr_vol,
            out_dir=model_dir,
            config=unet,
            patch=16,
            batch=4,
            epochs=1000,
            steps_per_epoch=steps,
            lr=3e-3,
            patience=4,
            seed=0,
            time_limit_s=train_seconds,
            progress=progress,
            command=f"tomoflow demo --recovery-size {size} --recovery-train-seconds {train_seconds:g}",
            hr_voxel_um=hr_um,
            lfov_voxel_um=lf_um,
            source={
                "hr": str(hr_path),
                "lfov": str(lf_path),
                "registration": str(reg),
                "matrix": matrix.tolist(),
                "ncc": doc.get("ncc"),
            },
            overwrite=True,
        )
    m, tr = res.metrics, res.card["training"]
    console.print(
        f"   held-out blocks: PSNR {m['psnr_input_db']:.2f} dB (input) -> {m['psnr_prediction_db']:.2f} dB, "
        f"L1 {m['val_l1_input']:.4f} -> {m['val_l1']:.4f}; best epoch {tr['best_epoch']} of "
        f"{tr['epochs_run']} ({_e(tr['stopped_by'])})"
    )

    field_in, field_out, roi_out = rec / "lfov_field.zarr", rec / "recovered.zarr", rec / "recovered_roi.zarr"
    shape, field_matrix = field_grid(lf.shape, lf_um, hr_um)
    console.print(
        f"10. recovering the whole LFOV field ({' x '.join(map(str, shape))} voxels of {hr_um:g} um) "
        f"-> {_e(field_out)}, and the ROI -> {_e(roi_out)}"
    )
    with _stage_progress() as update:
        resample_volume(
            lf_path,
            field_in,
            matrix=field_matrix,
            shape=shape,
            spacing_um=hr_um,
            client=client,
            overwrite=True,
            progress=update,
        )
    with _stage_progress() as update:
        recover_volume(field_in, res.weights, field_out, client=client, overwrite=True, progress=update)
    with _stage_progress() as update:
        recover_volume(roi_in, res.weights, roi_out, client=client, overwrite=True, progress=update)

    threshold = reference_threshold(hr_path)
    connectivity, min_voxels = 26, 8
    volumes = {"LFOV on the HR grid": roi_in, "HR": hr_path, "recovered": roi_out}
    results = {
        name: volume_pores(p, threshold=threshold, connectivity=connectivity, min_voxels=min_voxels)
        for name, p in volumes.items()
    }
    console.print(f"11. pores over the ROI, one protocol (threshold {threshold:.4g}: Otsu on the HR):")
    console.print(pores_table(results, threshold, connectivity, min_voxels))
    pores_json, pores_png = rec / "pores.json", rec / "pores.png"
    write_json(
        plan_file(pores_json, kind="pore-metrics", overwrite=True),
        pores_document(results, threshold, connectivity, min_voxels),
    )
    plot_pore_sizes(results, pores_png, title="demo: LFOV, HR and recovered ROI", overwrite=True)

    def level0(path: Path) -> Any:
        return np.asarray(VolumeStore.open(path).level(0)[...], dtype=np.float32)

    png = recovery_png(
        rec / "recovery.png",
        level0(field_in),
        level0(field_out),
        inp,
        level0(roi_out),
        hr_vol,
        title=f"demo: resolution recovery, {lf_um:g} um LFOV -> {hr_um:g} um (held-out PSNR "
        f"{m['psnr_input_db']:.1f} -> {m['psnr_prediction_db']:.1f} dB)",
        overwrite=True,
    )
    console.print(f"12. pores: {_e(pores_json)}, histogram {_e(pores_png)}; before/after: [bold]{_e(png)}[/]")
    console.print(f"   recovery part in {time.perf_counter() - t0:.1f} s")
