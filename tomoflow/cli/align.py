"""Jitter correction commands: align, correct, train-aligner."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import typer

from tomoflow.cli._app import (
    _cluster,
    _e,
    _friendly,
    _hold_output,
    _parse_center,
    _plan_picture,
    _stage_progress,
    _writing,
    _wrote,
    app,
    console,
)

_METHOD_HELP = (
    "hybrid (ResNet estimate refined by consistency iterations; default), resnet (two network "
    "passes), phase "
    "(one reprojection + phase correlation) or consistency (iterative reprojection baseline)."
)


def _print_alignment(store: Path) -> None:
    import numpy as np

    from tomoflow.io.scan_store import ScanStore

    s = ScanStore.open(store)
    rec = s.stage("align")
    shifts = np.asarray(s.group["shifts"][:])
    quality = np.asarray(s.group["quality"][:])
    _wrote(
        store,
        f": {shifts.shape[0]} projections aligned with {_e(rec.info.get('method'))} "
        f"in {rec.seconds or 0:.1f} s; jitter RMS dy {np.sqrt(np.mean(shifts[:, 0] ** 2)):.2f} px, "
        f"dx {np.sqrt(np.mean(shifts[:, 1] ** 2)):.2f} px; rotation centre {s.attrs.rotation_center:.2f} px",
    )
    weak = int(np.sum(quality < 0.5)) if np.all(np.isfinite(quality)) else 0
    if weak:
        console.print(f"{weak} projection(s) registered with low confidence (quality < 0.5): see the report")


@app.command()
@_friendly
def align(
    store: Path = typer.Argument(..., help="Scan store to align."),
    out: Path = typer.Option(..., "--out", "-o", help="Aligned scan store to write (line integrals, shifts, centre)."),
    method: str = typer.Option("hybrid", help=_METHOD_HELP),
    center: str | None = typer.Option(
        None,
        help="Starting rotation centre: column in px, `auto`, or omitted = "
        "the centre saved in the scan store, else auto. The methods refine it.",
    ),
    max_size: int = typer.Option(256, help="Estimate the shifts on projections binned to at most this many pixels."),
    vertical: bool = typer.Option(
        True,
        "--vertical/--horizontal-only",
        help="Estimate vertical jitter too (default); --horizontal-only for detectors of a few rows.",
    ),
    cluster: str = typer.Option("local", help="local, local-cuda, slurm, pbs, a scheduler address or file, or none."),
    workers: int | None = typer.Option(None, help="Workers of the local cluster."),
    overwrite: bool = typer.Option(False, help="Replace an aligned store made from other inputs or parameters."),
    png: Path | None = typer.Option(None, help="Also write the alignment report PNG here."),
) -> None:
    """Estimate the jitter of every projection and write the corrected scan store (resumable)."""
    from tomoflow.pipeline.align import align_scan

    ctr = _parse_center(center)
    png_plan = _plan_picture(
        png,
        command="align",
        sources={"scan": store},
        overwrite=overwrite,
        outputs=(out,),
        params={"method": method, "center": ctr, "max_size": max_size, "vertical": vertical},
    )
    with _cluster(cluster, workers) as client, _stage_progress() as update, _writing(out):
        align_scan(
            store,
            out,
            method=method,
            center=ctr,
            max_size=max_size,
            client=client,
            overwrite=overwrite,
            progress=update,
            **({} if vertical else {"vertical": False}),
        )
    _print_alignment(out)
    if png_plan is not None:
        from tomoflow.report import alignment_png

        console.print(f"report: {_e(alignment_png(png_plan, store, out))}")


@app.command()
@_friendly
def correct(
    store: Path = typer.Argument(..., help="Scan store to correct."),
    out: Path = typer.Option(..., "--out", "-o", help="Volume store to write (OME-Zarr 0.5)."),
    aligned: Path | None = typer.Option(
        None, help="Aligned scan store (default: <out>-aligned.zarr beside the volume)."
    ),
    method: str = typer.Option("hybrid", help=_METHOD_HELP),
    center: str | None = typer.Option(
        None, help="Starting rotation centre (px), `auto`, or omitted (saved, else auto)."
    ),
    algorithm: str = typer.Option("fbp", help="fbp, mlem or sirt."),
    vertical: bool = typer.Option(
        True,
        "--vertical/--horizontal-only",
        help="Estimate vertical jitter too (default); --horizontal-only for detectors of a few rows.",
    ),
    cluster: str = typer.Option("local", help="local, local-cuda, slurm, pbs, a scheduler address or file, or none."),
    workers: int | None = typer.Option(None, help="Workers of the local cluster."),
    overwrite: bool = typer.Option(False, help="Replace outputs made from other inputs or parameters."),
    png: Path | None = typer.Option(None, help="Also write the alignment report PNG (before/after) here."),
) -> None:
    """The whole jitter-correction chain: align, then reconstruct with the refined centre."""
    from tomoflow.pipeline.align import correct_scan

    ctr = _parse_center(center)
    aligned_path = aligned if aligned is not None else out.with_name(out.name.removesuffix(".zarr") + "-aligned.zarr")
    png_plan = _plan_picture(
        png,
        command="correct",
        sources={"scan": store},
        overwrite=overwrite,
        outputs=(out, aligned_path),
        params={"method": method, "center": ctr, "algorithm": algorithm, "vertical": vertical},
    )
    t0 = time.perf_counter()
    with _cluster(cluster, workers) as client, _stage_progress() as update, _writing(out):
        v = correct_scan(
            store,
            out,
            aligned_path=aligned,
            method=method,
            center=ctr,
            algorithm=algorithm,
            client=client,
            overwrite=overwrite,
            progress=update,
            **({} if vertical else {"vertical": False}),  # type: ignore[arg-type]  # the keyword vertical, a bool
        )
    _print_alignment(aligned_path)
    _wrote(out, f"{' x '.join(map(str, v.shape))} voxels; whole chain {time.perf_counter() - t0:.1f} s")
    if png_plan is not None:
        from tomoflow.report import alignment_png

        console.print(f"report: {_e(alignment_png(png_plan, store, aligned_path))}")


@app.command("train-aligner")
@_friendly
def train_aligner(
    out: Path = typer.Option(
        Path("aligner-training"),
        "--out",
        "-o",
        help="Folder for the simulated pairs, checkpoints and the final weights + model card (rerun to resume).",
    ),
    n_scans: int = typer.Option(110, help="Simulated scans (each gives one pair per angle)."),
    size: int = typer.Option(160, help="Simulated detector edge (px); 160 is the network input."),
    n_angles: int = typer.Option(181, help="Projections per simulated scan, over 180 degrees."),
    epochs: int = typer.Option(12, help="Most epochs (early stopping or the time limit may end sooner)."),
    batch_size: int = typer.Option(32, help="Pairs per optimisation step."),
    lr: float = typer.Option(3e-4, help="Adam learning rate (cosine decay to lr * lr-final)."),
    lr_final: float = typer.Option(0.05, help="Final learning rate as a fraction of --lr."),
    val_fraction: float = typer.Option(0.1, help="Fraction of the scans held out for validation (split by scan)."),
    patience: int = typer.Option(3, help="Epochs without validation improvement before stopping."),
    time_limit: float | None = typer.Option(
        None, help="Stop training after this many seconds (the learning-rate schedule follows it)."
    ),
    threads: int | None = typer.Option(None, help="torch CPU threads (default: all)."),
    seed: int = typer.Option(0, help="Seed of the data recipe and the initial weights."),
    device: str = typer.Option("auto", help="cpu, cuda or auto."),
    init_weights: Path | None = typer.Option(
        None,
        help="Start from these weights (safetensors, e.g. the "
        "shipped ones) instead of a random initialisation: fine-tuning.",
    ),
    install: bool = typer.Option(
        False,
        help="Copy the final weights, model card and check set into the package "
        "(tomoflow/weights/) so that the network methods use them.",
    ),
    overwrite: bool = typer.Option(
        False,
        help="Replace weights, card and check set that tomoflow wrote into --out "
        "for another training (never files tomoflow did not write).",
    ),
) -> None:
    """Train the jitter ResNet on simulated scans (the shipped weights were made by this training;
    rerunning with the same folder resumes from its checkpoint)."""
    from tomoflow._checks import check_int, check_planned_memory, check_seed
    from tomoflow.train.aligner import install_weights
    from tomoflow.train.aligner import train_aligner as _train

    check_seed("--seed", seed)
    # one simulated scan's phantom is held in memory (its generators peak at ~20 float32 copies of a
    # volume up to ~1.1 size on each side): refuse a size that cannot fit before any work
    check_planned_memory(
        f"train-aligner --size {size}: one simulated phantom", 80.0 * check_int("--size", size, low=1) ** 3
    )
    # The card records the command that reproduces these weights, spelled out from the parameters.
    parts = [
        "tomoflow",
        "train-aligner",
        "--out",
        str(out),
        "--n-scans",
        n_scans,
        "--size",
        size,
        "--n-angles",
        n_angles,
        "--epochs",
        epochs,
        "--batch-size",
        batch_size,
        "--lr",
        lr,
        "--lr-final",
        lr_final,
        "--val-fraction",
        val_fraction,
        "--patience",
        patience,
        "--seed",
        seed,
        "--device",
        device,
    ]
    parts += ["--time-limit", time_limit] if time_limit is not None else []
    parts += ["--threads", threads] if threads is not None else []
    parts += ["--init-weights", init_weights] if init_weights is not None else []
    command = " ".join(shlex.quote(str(p)) for p in parts)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    _hold_output(out, "training folder")  # one training at a time writes this folder
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("simulating scans", total=None, loss="")

        plain = not console.is_terminal  # a background job's log: one line per milestone instead of a bar
        t0 = time.perf_counter()

        def progress(epoch: int, step: int, n_steps: int, train_loss: float | None, val_loss: float | None) -> None:
            if train_loss is None:  # still simulating the training scans
                bar.update(task, description="simulating scans", completed=step, total=n_steps, loss="")
                if plain and (step == n_steps or step % max(1, n_steps // 10) == 0):
                    console.print(f"simulated {step}/{n_steps} scans ({time.perf_counter() - t0:.0f} s)")
                return
            val = "-" if val_loss is None else f"{val_loss:.3f}"
            bar.update(
                task,
                description=f"epoch {epoch}",
                completed=step,
                total=n_steps,
                loss=f"train {train_loss:.3f} px² val {val} px²",
            )
            if plain and val_loss is not None:
                console.print(
                    f"epoch {epoch}: train MSE {train_loss:.3f} px², validation MSE {val} px² "
                    f"({time.perf_counter() - t0:.0f} s)"
                )

        card = _train(
            out,
            n_scans=n_scans,
            size=size,
            n_angles=n_angles,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            lr_final=lr_final,
            val_fraction=val_fraction,
            patience=patience,
            seed=seed,
            threads=threads,
            time_limit_s=time_limit,
            device=device,
            command=command,
            progress=progress,
            init_weights=init_weights,
            overwrite=overwrite,
        )
    console.print(
        f"wrote the weights and model card into [bold]{_e(out)}[/]; held-out metrics: {_e(card.get('metrics', {}))}"
    )
    if install:
        install_weights(out)
        console.print("installed into tomoflow/weights/: the hybrid and resnet methods now use these weights")
