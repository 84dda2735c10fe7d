"""The trainer of the ResNet jitter aligner: simulated pairs (cached per scan), training, weights, model
card and check set (layer 3: it writes files; the pair simulation is :mod:`tomoflow.align.training_data`).

Training (:func:`train_aligner`): Adam (default lr 1e-4, cosine decay to ``lr * lr_final`` over
``epochs`` or the time limit), MSE of the offsets in network pixels, random horizontal/vertical flips of whole pairs
(negating ``dx`` / ``dy``), validation split by scan, early stopping on the validation MSE, best
weights kept, a checkpoint every epoch (safetensors + JSON, never pickle) so a rerun resumes.
Simulated pairs are cached as one ``.npz`` per scan (read with ``allow_pickle=False``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from tomoflow._checks import check_int, check_number
from tomoflow.align.resnet import (
    ARCHITECTURE,
    CARD_NAME,
    CHECK_NAME,
    INPUT_SIZE,
    NORMALIZATION,
    WEIGHTS_NAME,
    JitterAligner,
    build_network,
    default_weights_path,
    load_state_into,
    normalize_pairs,
)
from tomoflow.align.training_data import PairSet, TrainingRecipe, check_recipe, simulate_scan_pairs
from tomoflow.errors import ConfigError, InputError
from tomoflow.nn import count_parameters, resolve_device
from tomoflow.nn.loop import LoopState, ProgressCallback, copy_state, restore, train_epochs
from tomoflow.train.files import (
    CHECKPOINT_STATE,
    CHECKPOINT_TENSORS,
    load_checkpoint,
    save_checkpoint,
    save_weights,
    write_card,
)

__all__ = ["make_training_scans", "train_aligner", "install_weights", "CHECK_PAIRS", "CACHE_VERSION"]

log = logging.getLogger(__name__)

CHECK_PAIRS = 24
"""Pairs in the held-out check set saved beside the weights."""

CACHE_VERSION = 3


def _cache_recipe(recipe: TrainingRecipe, seed: int) -> dict[str, Any]:
    return {"cache_version": CACHE_VERSION, "seed": int(seed), "recipe": recipe.to_dict(), "input_size": INPUT_SIZE}


def make_training_scans(
    n_scans: int,
    *,
    recipe: TrainingRecipe | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    progress: ProgressCallback | None = None,
) -> PairSet:
    """Simulate ``n_scans`` training scans (or read them from ``cache_dir``) as one :class:`PairSet`.

    With ``cache_dir`` each scan's pairs are written to ``scan_<index>.npz`` once; a later call with
    the same recipe and seed reads them instead of simulating again. A cache made with another recipe
    or seed raises :class:`~tomoflow.errors.ConfigError` (use another folder).
    """
    n_scans = check_int("n_scans", n_scans, low=1)
    recipe = recipe or TrainingRecipe()
    check_recipe(recipe)
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        want = _cache_recipe(recipe, seed)
        rfile = cache / "recipe.json"
        if rfile.is_file():
            have = json.loads(rfile.read_text())
            if isinstance(have, dict):
                have.pop("tomoflow_file", None)
            if have != json.loads(json.dumps(want)):
                raise ConfigError(
                    f"the pair cache {cache} was made with another recipe or seed; "
                    "use another output folder (or delete that cache)"
                )
        else:
            from tomoflow.io.output import stamped_json

            rfile.write_text(stamped_json(want, "training-data", indent=1))
    xs, ys, ids, metas = [], [], [], []
    t0 = time.perf_counter()
    for k in range(n_scans):
        f = cache / f"scan_{k:05d}.npz" if cache is not None else None
        if f is not None and f.is_file():
            with np.load(f, allow_pickle=False) as z:
                item = {"x": z["x"], "y": z["y"], "meta": json.loads(str(z["meta"]))}
        else:
            item = simulate_scan_pairs(k, recipe=recipe, seed=seed)
            if f is not None:
                tmp = f.with_name(f.stem + ".tmp.npz")
                np.savez(tmp, x=item["x"], y=item["y"], meta=np.array(json.dumps(item["meta"])))
                os.replace(tmp, f)
        xs.append(item["x"])
        ys.append(item["y"])
        ids.append(np.full(item["y"].shape[0], k, dtype=np.int32))
        metas.append(item["meta"])
        log.info("training scan %d/%d (%s, %.1f s)", k + 1, n_scans, item["meta"]["family"], time.perf_counter() - t0)
        if progress is not None:
            progress(0, k + 1, n_scans, None, None)
    return PairSet(x=np.concatenate(xs), y=np.concatenate(ys), scan=np.concatenate(ids), meta=metas)


def _split_by_scan(n_scans: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([int(seed), 7])
    order = rng.permutation(n_scans)
    n_val = max(1, int(round(val_fraction * n_scans))) if n_scans > 1 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _evaluate(
    model: Any, x: np.ndarray, y: np.ndarray, scan: np.ndarray, device: Any, batch_size: int
) -> dict[str, Any]:
    """Held-out metrics in network pixels: MSE, RMSE per axis, RMSE after removing each scan's
    common offset (the benchmark's residual), max error, fraction over 1 px."""
    import torch

    model.eval()
    pred = np.zeros_like(y, dtype=np.float64)
    with torch.no_grad():
        for i in range(0, len(y), batch_size):
            xb = normalize_pairs(torch.from_numpy(x[i : i + batch_size].astype(np.float32)).to(device))
            pred[i : i + batch_size] = model(xb).double().cpu().numpy()
    err = pred - y
    centred = err.copy()
    for s in np.unique(scan):
        centred[scan == s] -= centred[scan == s].mean(axis=0)
    return {
        "mse_px2": float(np.mean(err**2)),
        "rmse_px": [float(v) for v in np.sqrt(np.mean(err**2, axis=0))],
        "rmse_combined_px": float(np.sqrt(np.mean(np.sum(err**2, axis=1)))),
        "rmse_common_removed_px": [float(v) for v in np.sqrt(np.mean(centred**2, axis=0))],
        "max_abs_px": float(np.abs(err).max()) if err.size else 0.0,
        "fraction_over_1px": float(np.mean(np.abs(err).max(axis=1) > 1.0)) if err.size else 0.0,
        "n_pairs": int(len(y)),
    }


def _init_weights_state(init_weights: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state dict on the CPU, {"file", "sha256"})`` of JitterResNet ``init_weights``, through the gate.

    Raises
    ------
    ModelError
        No card beside the file, a card naming another file, a sha256 that is not the card's.
    InputError
        Not safetensors, or not a JitterResNet.
    """
    from tomoflow.weights.card import verified_model

    given = Path(init_weights)
    try:
        card, real = verified_model(given)
        model = load_state_into(build_network(), real, shown=given)
    except InputError as exc:  # ModelError included: say which argument it was
        raise type(exc)(f"{exc.problem} (the init weights)", exc.path, exc.dataset) from None
    return model.state_dict(), {"file": given.name, "sha256": str(card["sha256"])}


def train_aligner(
    out_dir: str | os.PathLike,
    *,
    n_scans: int = 120,
    size: int = INPUT_SIZE,
    n_angles: int = 181,
    epochs: int = 8,
    batch_size: int = 32,
    lr: float = 1e-4,
    lr_final: float = 0.05,
    val_fraction: float = 0.1,
    patience: int = 3,
    seed: int = 0,
    resume: bool = True,
    device: str | None = None,
    threads: int | None = None,
    time_limit_s: float | None = None,
    recipe: TrainingRecipe | None = None,
    cache_dir: str | os.PathLike | None = None,
    command: str | None = None,
    progress: ProgressCallback | None = None,
    init_weights: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Simulate training pairs, train the jitter ResNet and write its weights and model card.

    Parameters
    ----------
    out_dir
        Output folder. Written: ``jitter_resnet.safetensors`` (best weights), ``jitter_resnet.json``
        (the model card), ``jitter_resnet_check.safetensors`` (a tiny held-out check set: pairs, targets
        and the card's check metric reproduce from it), ``checkpoint/`` (last epoch's state, for
        resume) and, unless ``cache_dir`` is given, ``cache/`` (the simulated pairs, one ``.npz`` per
        scan). Only the first three belong in ``tomoflow/weights/``.
    n_scans
        Simulated scans (each gives ``n_angles`` pairs).
    size
        Detector size of the simulated scans (most are ``size x size``; see :class:`TrainingRecipe`).
    n_angles
        Projections per scan over 180 degrees.
    epochs
        Largest number of epochs (also the length of the cosine learning-rate decay). A resumed run
        may be given more epochs than the first one (the decay is then stretched from there on).
    batch_size
        Pairs per optimisation step.
    lr, lr_final
        Adam learning rate, decayed (cosine, every step) to ``lr * lr_final`` at the end of the run:
        the last epoch, or ``time_limit_s`` when that comes first.
    val_fraction
        Fraction of the *scans* held out for validation (split by scan, never by pair).
    patience
        Stop after this many epochs without a better validation MSE.
    seed
        Seed of the data recipe, the split, the initialisation and the batch order.
    resume
        Continue from ``out_dir/checkpoint`` when it exists (and reuse the cached pairs); False
        starts over (the cache is still reused).
    device
        ``"cpu"``, ``"cuda"`` or ``"auto"``; None: the device of :mod:`tomoflow.config`.
    threads
        Torch CPU threads (default: torch's choice).
    time_limit_s
        Stop training (as early stopping does) once this much wall time has been spent on it (the
        learning-rate decay then follows the wall time, so the run ends at the low rate).
    recipe
        The data recipe; default :class:`TrainingRecipe` with ``size`` and ``n_angles``.
    cache_dir
        Where the simulated pairs are cached; default ``out_dir/cache``.
    command
        The exact command that ran this training, recorded in the card.
    progress
        ``progress(epoch, step, n_steps, train_loss, val_loss)`` (see :data:`ProgressCallback`).

    overwrite
        Replace weights, card and check set that tomoflow wrote into ``out_dir`` for another training
        (files tomoflow did not write are never replaced; a resumed run of the same training rewrites
        its own).
    init_weights
        Start from these JitterResNet weights (safetensors with their model card beside them, which must
        name them and hold their sha256) instead of a random initialisation: fine-tuning. Checked
        before anything is simulated or written.

    Returns
    -------
    dict
        The model card written to ``jitter_resnet.json``.

    Raises
    ------
    ModelError
        ``init_weights`` or the checkpoint fail the load gate (no card beside them, a card naming another
        file, a sha256 that is not the card's: :func:`tomoflow.weights.card.verified_model`); raised
        before anything is simulated or written.
    InputError
        ``init_weights`` that are not JitterResNet safetensors.
    ConfigError
        Bad parameters, or a checkpoint made with other training parameters.
    """
    import torch

    n_scans = check_int("n_scans", n_scans, low=2)
    epochs = check_int("epochs", epochs, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    patience = check_int("patience", patience, low=1)
    lr = check_number("lr", lr, low=0.0, low_open=True)
    lr_final = check_number("lr_final", lr_final, low=0.0, high=1.0)
    val_fraction = check_number("val_fraction", val_fraction, low=0.0, high=0.5, low_open=True)
    if time_limit_s is not None:
        time_limit_s = check_number("time_limit_s", time_limit_s, low=0.0, low_open=True)
    if recipe is None:
        recipe = TrainingRecipe(size=check_int("size", size, low=32), n_angles=check_int("n_angles", n_angles, low=2))
    dev = resolve_device(device)
    if threads is not None:
        torch.set_num_threads(check_int("threads", threads, low=1))
    out = Path(out_dir)
    ckpt = out / "checkpoint"
    cache = Path(cache_dir) if cache_dir is not None else out / "cache"
    t_start = time.perf_counter()

    # ---- every model file read is checked before anything is simulated or written
    init_info, init_state = None, None
    if init_weights is not None:  # fine-tune: start from earlier weights (never unpickled), card-checked
        init_state, init_info = _init_weights_state(init_weights)
    resumed = None
    if resume and (ckpt / CHECKPOINT_STATE).is_file():
        resumed = load_checkpoint(ckpt)
        saved = dict(resumed[0].get("config") or {})
        saved.pop("epochs", None)  # may grow on resume
        if saved != _train_config(n_scans, recipe, seed, val_fraction, batch_size, lr, lr_final):
            raise ConfigError(
                f"the checkpoint in {ckpt} was made with other training parameters; "
                "use another output folder or resume=False"
            )
    # ---- every file this training writes, checked by the file policy before any work
    from tomoflow.io.output import fingerprint as digest
    from tomoflow.io.output import plan_files
    from tomoflow.weights.card import card_path

    train_fp = digest(
        "train-aligner",
        inputs={"init": (init_info or {}).get("sha256") or ""},
        params=_train_config(n_scans, recipe, seed, val_fraction, batch_size, lr, lr_final),
    )
    renew = [f"checkpoint/{CHECKPOINT_TENSORS}", f"checkpoint/{CHECKPOINT_STATE}"]
    read = [init_weights, card_path(Path(init_weights))] if init_weights is not None else []
    plan_files(
        out,
        {
            WEIGHTS_NAME: "model-weights",
            CARD_NAME: "model-card",
            CHECK_NAME: "training-data",
            **dict.fromkeys(renew, "aligner-checkpoint"),
        },
        fingerprint=train_fp,
        overwrite=overwrite,
        renew=renew,
        inputs=read,
    )
    if cache_dir is None:
        plan_files(cache, {"recipe.json": "training-data"}, renew=["recipe.json"])
    out.mkdir(parents=True, exist_ok=True)

    # ---- data (cached per scan)
    t_sim = time.perf_counter()
    data = make_training_scans(n_scans, recipe=recipe, seed=seed, cache_dir=cache, progress=progress)
    sim_s = time.perf_counter() - t_sim
    train_scans, val_scans = _split_by_scan(n_scans, val_fraction, seed)
    tr = np.flatnonzero(np.isin(data.scan, train_scans))
    va = np.flatnonzero(np.isin(data.scan, val_scans))
    x_val, y_val, s_val = data.x[va], data.y[va], data.scan[va]

    # ---- model, optimiser, resume
    torch.manual_seed(int(seed))
    model = build_network().to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    if init_state is not None:
        model.load_state_dict(init_state)
    state = LoopState(best_state=copy_state(model))
    if resumed is not None:
        info, tensors = resumed
        state.best_state = restore(model, opt, tensors, dev)
        state.epoch = int(info["epoch"])
        state.best_val, state.bad, state.history = float(info["best_val_mse"]), int(info["bad_epochs"]), info["history"]
        state.train_s = float(info.get("train_s", 0.0))
        log.info("resuming after epoch %d (best validation MSE %.4g)", state.epoch, state.best_val)

    n_steps = max(1, math.ceil(len(tr) / batch_size))
    order = tr

    def begin_epoch(epoch: int, rng: np.random.Generator) -> None:
        nonlocal order
        order = tr[rng.permutation(len(tr))]

    def step(epoch: int, k: int, rng: np.random.Generator) -> tuple[float, int]:
        idx = np.sort(order[k * batch_size : (k + 1) * batch_size])
        xb = data.x[idx].astype(np.float32)
        yb = data.y[idx].copy()
        flip_h = rng.random(len(idx)) < 0.5
        flip_v = rng.random(len(idx)) < 0.5
        xb[flip_h] = xb[flip_h][..., ::-1]
        xb[flip_v] = xb[flip_v][..., ::-1, :]
        yb[flip_h, 1] *= -1.0
        yb[flip_v, 0] *= -1.0
        xt = normalize_pairs(torch.from_numpy(np.ascontiguousarray(xb)).to(dev))
        xt = xt.contiguous(memory_format=torch.channels_last)
        yt = torch.from_numpy(yb).to(dev)
        opt.zero_grad(set_to_none=True)
        loss = torch.mean((model(xt) - yt) ** 2)
        loss.backward()
        opt.step()
        return float(loss.detach()) * len(idx), len(idx)

    def validate(epoch: int) -> tuple[float, dict[str, Any]]:
        metrics = _evaluate(model, x_val, y_val, s_val, dev, 64)
        return metrics["mse_px2"], metrics

    def record(
        epoch: int, train_loss: float, val: float, metrics: dict[str, Any], steps: int, t_ep: float
    ) -> dict[str, Any]:
        log.info(
            "epoch %d: train MSE %.4f, validation MSE %.4f px^2 (RMSE %s)%s",
            epoch,
            train_loss,
            val,
            metrics["rmse_px"],
            " *" if state.best_epoch == epoch else "",
        )
        return {
            "epoch": epoch,
            "lr": opt.param_groups[0]["lr"],
            "train_mse_px2": train_loss,
            "val_mse_px2": val,
            "val_rmse_px": metrics["rmse_px"],
            "seconds": time.perf_counter() - t_ep,
        }

    def checkpoint(state: LoopState) -> None:
        save_checkpoint(
            ckpt,
            model,
            state.best_state,
            opt,
            {
                "epoch": state.epoch,
                "best_val_mse": state.best_val,
                "bad_epochs": state.bad,
                "history": state.history,
                "train_s": state.train_s,
                "config": _train_config(n_scans, recipe, seed, val_fraction, batch_size, lr, lr_final),
            },
        )

    state = train_epochs(
        model,
        opt,
        state,
        epochs=epochs,
        n_steps=n_steps,
        lr=lr,
        lr_final=lr_final,
        seed=seed,
        patience=patience,
        time_limit_s=time_limit_s,
        step=step,
        validate=validate,
        record=record,
        checkpoint=checkpoint,
        begin_epoch=begin_epoch,
        progress=progress,
        progress_every=10,
        log_every=100,
        loss_name="train MSE (px^2)",
    )
    best_state, history, train_s, stopped = state.best_state, state.history, state.train_s, state.stopped

    # ---- outputs: best weights, check set, card
    model.load_state_dict(best_state)
    model.eval()
    final = _evaluate(model, x_val, y_val, s_val, dev, 64)
    weights = out / WEIGHTS_NAME
    sha = save_weights(model.to(memory_format=torch.contiguous_format), weights, fingerprint=train_fp)
    check = _write_check_set(out / CHECK_NAME, model, x_val, y_val, dev, fingerprint=train_fp)
    n_pairs = int(len(data))
    recipe_d = recipe.to_dict()
    families = {f: sum(m["family"] == f for m in data.meta) for f in recipe.families}
    card = {
        "name": "tomoflow jitter ResNet",
        "format": "safetensors",
        "weights": WEIGHTS_NAME,
        "sha256": sha,
        "architecture": dict(ARCHITECTURE, parameters=count_parameters(model)),
        "input_size": [INPUT_SIZE, INPUT_SIZE],
        "normalization": NORMALIZATION,
        "output": "(dy, dx) of the measured projection relative to its reprojection, network pixels "
        "(160-px input); JitterAligner.predict scales to detector pixels",
        "training_data": {
            "recipe": recipe_d,
            "seed": int(seed),
            "n_scans": n_scans,
            "n_pairs": n_pairs,
            "n_train_scans": int(len(train_scans)),
            "n_val_scans": int(len(val_scans)),
            "n_train_pairs": int(len(tr)),
            "n_val_pairs": int(len(va)),
            "families": families,
            "pair_maker": "clean_copy + start_network + network_pairs (tomoflow.align, as at inference)",
            "targets": "fix_gauge(jitter, angles) + (effective axis - estimated centre) on dx, network pixels",
        },
        "training": {
            "optimizer": "Adam",
            "lr": lr,
            "lr_schedule": f"cosine per step to {lr_final} x lr over {epochs} epochs"
            + (f" or {time_limit_s:.0f} s of training, whichever first" if time_limit_s else ""),
            "loss": "MSE of (dy, dx) in network pixels",
            "batch_size": batch_size,
            "epochs_run": len(history),
            "max_epochs": epochs,
            "patience": patience,
            "stopped_by": stopped,
            "augmentation": "random flips of pairs",
            "initialized_from": init_info,
            "split": "by scan",
            "device": str(dev),
            "torch": torch.__version__,
            "history": history,
        },
        "metrics": {
            "held_out": dict(
                final,
                units="network pixels (160-px input; x 1.6 for a 256-px detector)",
                rmse_combined_px_256_equivalent=final["rmse_combined_px"] * 256 / INPUT_SIZE,
            ),
            "check_set": check,
        },
        "command": command,
        "timing": {"simulation_s": sim_s, "training_s": train_s, "total_s": time.perf_counter() - t_start},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_card(out / CARD_NAME, card, train_fp)
    return card


def _train_config(
    n_scans: int, recipe: TrainingRecipe, seed: int, val_fraction: float, batch_size: int, lr: float, lr_final: float
) -> dict[str, Any]:
    return json.loads(
        json.dumps(
            {
                "n_scans": n_scans,
                "recipe": recipe.to_dict(),
                "seed": int(seed),
                "val_fraction": val_fraction,
                "batch_size": batch_size,
                "lr": lr,
                "lr_final": lr_final,
            }
        )
    )


def _write_check_set(
    path: Path, model: Any, x_val: np.ndarray, y_val: np.ndarray, device: Any, fingerprint: str | None = None
) -> dict[str, Any]:
    """Save a few held-out pairs (160 x 160, float16 as cached) with their targets, and the metric the
    saved weights give on them through the public :meth:`JitterAligner.predict` path."""
    from safetensors.numpy import save_file

    from tomoflow._hashing import file_sha256

    n = min(CHECK_PAIRS, len(y_val))
    pick = np.linspace(0, len(y_val) - 1, n).round().astype(int) if n else np.zeros(0, int)
    xs = np.ascontiguousarray(x_val[pick])
    ys = np.ascontiguousarray(y_val[pick]).astype(np.float32)
    tmp = path.with_name(path.name + ".tmp")
    from tomoflow.io.output import STAMP_KEY, file_stamp

    save_file(
        {"projections": np.ascontiguousarray(xs[:, 0]), "reprojections": np.ascontiguousarray(xs[:, 1]), "shifts": ys},
        str(tmp),
        metadata={STAMP_KEY: json.dumps(file_stamp("training-data", fingerprint))},
    )
    os.replace(tmp, path)
    os.chmod(path, 0o644)
    aligner = JitterAligner(model=model, device=device)
    pred = aligner.predict(xs[:, 0].astype(np.float32), xs[:, 1].astype(np.float32)) if n else np.zeros((0, 2))
    err = pred - ys
    return {
        "file": path.name,
        "sha256": file_sha256(path),
        "n_pairs": int(n),
        "rmse_px": [float(v) for v in np.sqrt(np.mean(err**2, axis=0))] if n else [0.0, 0.0],
        "mse_px2": float(np.mean(err**2)) if n else 0.0,
        "predictions": pred.tolist(),
        "units": "pixels of the 160 x 160 check pairs",
    }


def install_weights(out_dir: str | os.PathLike, models_dir: str | os.PathLike | None = None) -> list[Path]:
    """Copy the trained weights, card and check set from ``out_dir`` to ``tomoflow/weights/``."""
    from tomoflow.weights.card import verified_model

    verified_model(Path(out_dir) / WEIGHTS_NAME)  # only weights that pass the gate are installed
    dest = Path(models_dir) if models_dir is not None else default_weights_path().parent
    copied = []
    for name in (WEIGHTS_NAME, CARD_NAME, CHECK_NAME):
        shutil.copy2(Path(out_dir) / name, dest / name)
        copied.append(dest / name)
    return copied
