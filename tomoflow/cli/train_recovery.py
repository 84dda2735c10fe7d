"""``tomoflow train-recovery``: train the resolution-recovery U-Net on one sample's HR ROI and LFOV volumes.

The LFOV volume is registered to the HR ROI (or the matrix is read from ``tomoflow register``'s JSON),
and the pair trains a 3D U-Net (:func:`tomoflow.train.recovery.train_recovery`): weights, model card and
checkpoint in ``--out``. The pair is read patch by patch from the stores (the HR box, and the LFOV region
around its image resampled onto it: :class:`tomoflow.io.pair_source.StorePair`), never whole.
``--time-limit`` bounds the whole command (registration, reading, training, evaluation, calibration,
writing); the time of each phase is printed and kept in the card (``timing``).
"""

from __future__ import annotations

import contextlib
import json
import math
import shlex
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer

from tomoflow.cli._app import _e, _friendly, _hold_output, _writing, app, console
from tomoflow.errors import ConfigError, InputError
from tomoflow.pipeline.registration import register_volumes, volume_voxel_um
from tomoflow.train.recovery import DEFAULTS

ONNX_RESERVE_S = 20.0
"""Seconds of ``--time-limit`` kept for the ONNX export and its check (``--onnx``)."""

REGISTRATION_NAME = "registration.json"
"""Where the command keeps the registration it ran itself (reused by ``--resume``)."""


def _read_registration(path: Path, hr_um: float, lf_um: float) -> tuple[Any, dict[str, Any]]:
    """The 4x4 matrix of a ``tomoflow register`` JSON, checked (and its voxel sizes against the stores')."""
    import numpy as np

    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise InputError(f"cannot read the registration: {exc.strerror or exc}", path=path) from None
    except ValueError as exc:
        raise InputError(f"the registration is not valid JSON: {exc}", path=path) from None
    if not isinstance(doc, dict) or "matrix" not in doc:
        raise InputError(
            'no "matrix" in the registration (expected the JSON written by `tomoflow register`)', path=path
        )
    try:
        m = np.asarray(doc["matrix"], dtype=np.float64)
    except (TypeError, ValueError):
        m = np.zeros(0)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)) or not np.allclose(m[3], [0, 0, 0, 1]):
        raise InputError('"matrix" must be a finite 4 x 4 affine matrix (last row 0 0 0 1)', path=path)
    from tomoflow.register.transform import check_affine

    m = check_affine(m, '"matrix"', path=path)  # invertible and well conditioned (a zero matrix is refused)
    for key, have in (("hr_voxel_um", hr_um), ("lfov_voxel_um", lf_um)):
        want = doc.get(key)
        if isinstance(want, int | float) and not math.isclose(float(want), have, rel_tol=1e-6):
            raise InputError(
                f"{key} is {want:g} um in the registration but {have:g} um in the volume store: it "
                "registers other volumes",
                path=path,
            )
    return m, doc


@contextlib.contextmanager
def training_bar(
    steps: int, epochs: int | None = None, on_report: Callable[[], None] | None = None
) -> Iterator[Callable[..., None]]:
    """A progress bar for :func:`tomoflow.train.recovery.train_recovery`: yields its ``progress``
    callback (epoch, steps of the epoch, train and validation L1); ``on_report`` runs at every report."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("training", total=steps, loss="")

        def progress(epoch: int, step: int, n_steps: int, train_loss: float | None, val_loss: float | None) -> None:
            if on_report is not None:
                on_report()
            if train_loss is None:  # epoch 0: the starting network (the identity)
                bar.update(
                    task,
                    description="epoch 0",
                    completed=0,
                    total=n_steps,
                    loss=f"val L1 {val_loss:.4f} (input as it is)",
                )
                return
            val = "-" if val_loss is None else f"{val_loss:.4f}"
            bar.update(
                task,
                description=f"epoch {epoch}" + (f"/{epochs}" if epochs else ""),
                completed=step,
                total=n_steps,
                loss=f"train L1 {train_loss:.4f} val L1 {val}",
            )

        yield progress


def _channels(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(c) for c in text.split(",") if c.strip())
    except ValueError:
        raise ConfigError(f"--channels: expected comma-separated integers such as 16,32,64, got {text!r}") from None


def _check_network_size(config: Any, patch: int, batch: int) -> None:
    """Refuse, before any work, a U-Net (``--channels``) whose training cannot fit in memory: weights,
    gradients and Adam's two moments (16 bytes a parameter) plus the activations of one batch."""
    from tomoflow._checks import check_int, check_planned_memory

    c = (int(config.in_channels), *config.channels)
    enc = sum(27 * (c[i] * c[i + 1] + c[i + 1] ** 2) for i in range(len(c) - 1))
    dec = sum(8 * b * a + 27 * (2 * a * a + a * a) for a, b in zip(config.channels, config.channels[1:]))
    params = enc + dec + config.channels[0] * config.out_channels
    voxels = check_int("--batch", batch) * check_int("--patch", patch) ** 3
    activations = 4.0 * voxels * sum(6 * ch / 8**lev for lev, ch in enumerate(config.channels))
    check_planned_memory(
        f"train-recovery --channels {','.join(map(str, config.channels))}: the network "
        f"({params:,} parameters) and its training",
        16.0 * params + activations,
    )


@app.command("train-recovery")
@_friendly
def train_recovery(
    hr: Path = typer.Argument(..., help="HR region-of-interest volume store (the target)."),
    lfov: Path = typer.Argument(..., help="LFOV volume store of the same sample (the input; read around the ROI)."),
    out: Path = typer.Option(
        ...,
        "--out",
        "-o",
        help="Folder for recover_unet.safetensors, its model card recover_unet.json and the training checkpoint.",
    ),
    registration: Path | None = typer.Option(
        None,
        "--registration",
        "-r",
        help='JSON written by `tomoflow register` (its "matrix"); default: register now (stage prior).',
    ),
    epochs: int = typer.Option(
        DEFAULTS["epochs"],
        help="Most epochs (early stopping or the time limit may end sooner). The defaults (120 epochs of 32 "
        "steps, patience 15) reach the benchmark's recovery (benchmarks/BENCHMARKS.md, part (c)).",
    ),
    steps: int = typer.Option(
        DEFAULTS["steps_per_epoch"], help="Optimisation steps per epoch (one validation per epoch)."
    ),
    patch: int = typer.Option(
        DEFAULTS["patch"], help="Training patch edge, voxels (a multiple of the network's alignment)."
    ),
    batch: int = typer.Option(DEFAULTS["batch"], help="Patches per optimisation step."),
    lr: float = typer.Option(DEFAULTS["lr"], help="Adam learning rate (cosine decay to 5 % of it)."),
    channels: str = typer.Option("16,32,64", help="U-Net feature channels per level, finest first."),
    val_fraction: float = typer.Option(0.125, help="Fraction of the spatial blocks (octants or slabs) held out."),
    patience: int = typer.Option(DEFAULTS["patience"], help="Epochs without a better validation loss before stopping."),
    pore_weight: float = typer.Option(
        0.0,
        help="Weight of the pore term added to the L1 loss (soft threshold "
        "at the target's Otsu pore threshold; 0: L1 only).",
    ),
    calibrate: bool = typer.Option(
        True,
        "--calibrate/--no-calibrate",
        help="Fit the output calibration on the "
        "training pair (the prediction gets HR's pore fraction at the pore threshold; "
        "stored in the model card).",
    ),
    seed: int = typer.Option(0, help="Seed of the split, the initial weights and the patches."),
    time_limit: float = typer.Option(
        DEFAULTS["time_limit_s"],
        help="Wall seconds the whole command may take, every phase included (registration, reading, training, "
        "evaluation, calibration, writing): training stops early to leave the later phases their time "
        "(default 20 minutes; on a 2-core CPU the default epochs usually end first, on a GPU in a minute or two). "
        "0: no limit.",
    ),
    threads: int | None = typer.Option(None, help="torch CPU threads (default: all)."),
    workers: int = typer.Option(
        DEFAULTS["num_workers"], help="Worker processes reading the training patches from the stores (0: none)."
    ),
    device: str = typer.Option("auto", help="torch device: cpu, cuda or auto."),
    resume: bool = typer.Option(False, "--resume", help="Continue the training checkpoint in --out."),
    dof: int = typer.Option(9, help="Degrees of freedom when registering here: 3, 6 or 9."),
    onnx: bool = typer.Option(
        False,
        "--onnx",
        help="Also export recover_unet.onnx (raw grey values in and out, "
        "for `tomoflow recover --model` with onnxruntime), checked against torch.",
    ),
    overwrite: bool = typer.Option(
        False,
        help="Replace weights, card and export that tomoflow wrote into --out for "
        "another training (never files tomoflow did not write).",
    ),
) -> None:
    """Train the resolution-recovery U-Net on one sample: the LFOV volume resampled onto the HR ROI's grid
    is the input, the HR volume the target. Spatial blocks are held out for validation."""
    import numpy as np

    from tomoflow.io.pair_source import StorePair
    from tomoflow.io.volume_store import VolumeStore
    from tomoflow.recover.unet import CARD_NAME, WEIGHTS_NAME, UNetConfig
    from tomoflow.train.recovery import train_recovery as _train

    t0 = time.perf_counter()
    if time_limit < 0:
        raise ConfigError(f"--time-limit must be 0 (no limit) or a number of seconds, got {time_limit:g}")
    limit = time_limit if time_limit > 0 else None
    if workers < 0:
        raise ConfigError(f"--workers must be 0 or more, got {workers}")
    phases: dict[str, float] = {}
    config = UNetConfig(channels=_channels(channels))
    _check_network_size(config, patch, batch)
    from tomoflow.io.output import fingerprint, identity_of, plan_files, write_json

    # The file policy, before any work: --out is no store and no input, and every file this command
    # writes there is new or tomoflow's own of the same kind (the training checks the rest precisely).
    sources = [hr, lfov] + ([registration] if registration is not None else [])
    names = {
        WEIGHTS_NAME: "model-weights",
        CARD_NAME: "model-card",
        "checkpoint/last.safetensors": "recovery-checkpoint",
        "checkpoint/state.json": "recovery-checkpoint",
        **({"recover_unet.onnx": "model-onnx"} if onnx else {}),
    }
    plan_files(out, names, inputs=sources, renew=list(names))
    _hold_output(out, "training folder")  # one training at a time writes this folder
    kept_plan = plan_files(
        out,
        {REGISTRATION_NAME: "registration"},
        inputs=sources,
        overwrite=True,
        fingerprint=(
            fingerprint(
                "register",
                inputs={"hr": identity_of(hr), "lfov": identity_of(lfov)},
                params={"dof": dof, "max_rotation_deg": 10.0},
            )
        ),
    )[REGISTRATION_NAME]
    if (out / "checkpoint" / "state.json").is_file() and not (resume or overwrite):
        raise ConfigError(
            f"{out} already holds a training checkpoint; add --resume to continue it, --overwrite to "
            "start over, or choose another --out folder"
        )
    if registration is not None and not Path(registration).is_file():
        raise InputError("no such registration file", path=registration)
    h, lf = VolumeStore.open(hr), VolumeStore.open(lfov)
    hr_um, lf_um = volume_voxel_um(h, hr), volume_voxel_um(lf, lfov)
    if not hr_um < lf_um:
        raise ConfigError(
            f"HR voxels ({hr_um:g} um, {hr}) must be smaller than LFOV voxels ({lf_um:g} um, {lfov}); "
            "are HR and LFOV swapped?"
        )
    kept = out / REGISTRATION_NAME
    unsaved: dict[str, Any] | None = None  # a registration run here, kept once the training parameters passed
    if registration is not None:
        matrix, doc = _read_registration(registration, hr_um, lf_um)
        reg_source = str(registration)
    elif resume and kept.is_file():  # the registration this command ran before: same input, resumable
        matrix, doc = _read_registration(kept, hr_um, lf_um)
        reg_source = str(kept)
    else:
        console.print(f"registering {_e(hr)} into {_e(lfov)} ...")
        t_reg = time.perf_counter()
        doc = register_volumes(hr, lfov, dof=dof, device=device)
        phases["registration"] = time.perf_counter() - t_reg
        matrix = np.asarray(doc["matrix"], dtype=np.float64)
        unsaved, reg_source = doc, str(kept)
        console.print(
            f"registered in {doc['seconds']:.1f} s: NCC {doc['ncc_prior']:.3f} -> {doc['ncc']:.3f} "
            f"(prior: {_e(doc['prior_source'])}); kept in {_e(kept)}"
        )
    pair = StorePair(hr, lfov, matrix, hr_um, lf_um)
    console.print(
        f"training pair: {' x '.join(map(str, h.shape))} voxels of {hr_um:g} um (LFOV {lf_um:g} um "
        "resampled onto the HR grid patch by patch)"
    )

    parts: list[Any] = [
        "tomoflow",
        "train-recovery",
        hr,
        lfov,
        "--out",
        out,
        "--registration",
        reg_source,
        "--epochs",
        epochs,
        "--steps",
        steps,
        "--patch",
        patch,
        "--batch",
        batch,
        "--lr",
        lr,
        "--channels",
        ",".join(map(str, config.channels)),
        "--val-fraction",
        val_fraction,
        "--patience",
        patience,
        "--seed",
        seed,
        "--device",
        device,
    ]
    parts += ["--pore-weight", pore_weight] if pore_weight else []
    parts += [] if calibrate else ["--no-calibrate"]
    parts += ["--time-limit", time_limit, "--workers", workers]
    parts += ["--threads", threads] if threads is not None else []
    command = " ".join(shlex.quote(str(p)) for p in parts)
    source = {
        "hr": str(hr),
        "lfov": str(lfov),
        "registration": reg_source,
        "matrix": matrix.tolist(),
        "ncc": doc.get("ncc"),
    }

    def keep_registration() -> None:
        nonlocal unsaved
        if unsaved is not None:  # written once training has started, so that --resume reuses it
            write_json(kept_plan, unsaved)
            unsaved = None

    phases["opening"] = time.perf_counter() - t0 - sum(phases.values())
    left = None  # what the command has left for the training call (the ONNX export keeps its share)
    if limit is not None:
        left = max(limit - (time.perf_counter() - t0) - (ONNX_RESERVE_S if onnx else 0.0), 1.0)
    with training_bar(steps, epochs, on_report=keep_registration) as progress:
        with _writing(out):
            res = _train(
                pair,
                None,
                out_dir=out,
                config=config,
                patch=patch,
                batch=batch,
                epochs=epochs,
                steps_per_epoch=steps,
                lr=lr,
                val_fraction=val_fraction,
                patience=patience,
                seed=seed,
                pore_weight=pore_weight,
                calibrate=calibrate,
                time_limit_s=left,
                num_workers=workers,
                timing=phases,
                threads=threads,
                device=device,
                resume=resume,
                progress=progress,
                command=command,
                hr_voxel_um=hr_um,
                lfov_voxel_um=lf_um,
                source=source,
                overwrite=overwrite,
            )
            keep_registration()
    m, tr = res.metrics, res.card["training"]
    ssim = ""
    if m.get("ssim_input") is not None:
        ssim = f", SSIM {m['ssim_input']:.3f} -> {m['ssim_prediction']:.3f}"
    console.print(
        f"held-out blocks ({res.split.kind}, {m['n_voxels']} voxels): PSNR input {m['psnr_input_db']:.2f} dB "
        f"-> prediction {m['psnr_prediction_db']:.2f} dB{ssim}; best epoch {tr['best_epoch']} of "
        f"{tr['epochs_run']} ({_e(tr['stopped_by'])})"
    )
    pf = m.get("pore_fraction")
    if pf is not None:
        console.print(
            f"pore fraction of the held-out blocks at the threshold {pf['threshold']:.4g}: HR "
            f"{100 * pf['target']:.2f} %, prediction {100 * pf['prediction']:.2f} % -> calibrated "
            f"{100 * pf['calibrated']:.2f} %"
        )
    ev = m.get("evaluated")
    if ev:
        console.print(f"evaluated on {ev}")
    console.print("time per phase: " + ", ".join(f"{k} {v:.1f} s" for k, v in res.card["timing"]["phases"].items()))
    console.print(
        f"wrote [bold]{_e(out / WEIGHTS_NAME)}[/] and its model card {_e(CARD_NAME)} in "
        f"{time.perf_counter() - t0:.1f} s" + (f" (time limit {limit:g} s)" if limit is not None else "")
    )
    if onnx:
        from tomoflow.recover.normalization import with_normalization
        from tomoflow.recover.unet import alignment
        from tomoflow.train.onnx_export import check_onnx, export_onnx

        raw = with_normalization(res.model, res.card)
        path = out / "recover_unet.onnx"
        with _writing(path):
            export_onnx(raw, path, patch_shape=(patch,) * 3)
        a = alignment(config)
        bz, by, bx = (max(a, (n // a) * a) for n in (min(s, 64) for s in pair.shape))
        rep = check_onnx(path, raw, pair.read_input(((0, bz), (0, by), (0, bx))))
        if not rep["ok"]:
            raise InputError(
                f"the ONNX export differs from the torch network by {rep['relative']:.2e} (relative) "
                "on the training input",
                path=path,
            )
        console.print(f"wrote [bold]{_e(path)}[/] (onnxruntime matches torch to {rep['relative']:.1e} relative)")
