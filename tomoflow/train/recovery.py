"""Per-sample training of the resolution-recovery 3D U-Net (Andrew et al., ZEISS): the trainer, which
writes weights, model card and checkpoint (layer 3; the pure pieces are in :mod:`tomoflow.recover`).

One sample, two scans: a large-field (LFOV) volume and a high-resolution (HR) region of interest
inside it. After registration the LFOV is resampled onto the HR voxel grid
(:func:`tomoflow.register.resample.resample_to_grid`), which gives the training pair over the ROI:
``input`` (LFOV on the HR grid) and ``target`` (HR), same shape. :func:`train_recovery` trains a
:func:`~tomoflow.recover.unet.build_unet` network on that pair; the network then runs over the whole
(resampled) LFOV volume (:func:`~tomoflow.recover.tiling.predict_tiled`,
:func:`tomoflow.pipeline.recover.recover_volume`).

Normalization (:mod:`tomoflow.recover.normalization`), spatial split (:mod:`tomoflow.recover.splits`),
augmentation (:mod:`tomoflow.recover.augment`), held-out metrics (:mod:`tomoflow.recover.metrics`), the
output calibration (:mod:`tomoflow.recover.calibration`) and the training loop
(:func:`tomoflow.nn.loop.train_epochs`) are kernels; this module puts them together and writes the files.

**Reading** (:func:`train_recovery`): the pair is a *pair source* (:mod:`tomoflow.recover.pairs`): two
arrays, or the stores themselves (:class:`tomoflow.io.pair_source.StorePair`: each HR box read from the
HR store and the LFOV region around its image resampled onto it, one interpolation), read box by box and
never whole. The normalisation, the target's grey range and the pore threshold come from a fixed sample
of boxes (the whole pair when small, :data:`SAMPLE_VOXELS`); the validation set is a bounded, fixed part of
the held-out blocks (:data:`EVAL_VOXELS`), read once and predicted tile by tile as inference predicts it;
the calibration is fitted on tiles of the training pair (:data:`CALIBRATION_VOXELS`). Training patches are
read, normalised and augmented by a ``torch`` data loader's worker processes
(:mod:`tomoflow.train.patches`). Memory: O(patch x batch + model + those bounded sets).
``time_limit_s`` bounds the whole call: training gets what the later phases need left of it.

**Training**: random patches (default 32³, batch 4), each augmented by
:func:`~tomoflow.recover.augment.augment_pair` (random flip of each axis, random axis permutation, one random
gain and offset applied identically to input and target in normalised space: the blur and resampling are
linear, so the transformed target is still the right answer for the transformed input, and the network learns
a correction that does not depend on the absolute grey level); L1 loss (robust to the residual misregistration
and HR noise, and less prone than MSE to the over-smoothed "mean" answer; optionally plus a pore term,
``pore_weight``, that rewards putting each voxel on the right side of the pore protocol's threshold); Adam
with a cosine decay to ``lr * lr_final`` (over the epochs or the time limit, as the jitter network's
training); the residual head starts at zero, so training starts from the identity (the LFOV itself;
``val_l1_input`` in the card); early stopping on the validation L1, best weights kept; a checkpoint every
epoch (safetensors + JSON, never pickle) that ``resume=True`` continues exactly (the random patches of batch
``k`` of epoch ``e`` come from ``(seed, e, k)``, whichever worker makes them). Written:
``recover_unet.safetensors`` and ``recover_unet.json`` (the model card, :func:`~tomoflow.train.files.save_unet`)
and ``checkpoint/``.

torch is imported lazily: importing this module never imports it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tomoflow._checks import check_int, check_number
from tomoflow.errors import ConfigError, InputError
from tomoflow.nn import resolve_device
from tomoflow.nn.loop import LoopState, ProgressCallback, copy_state, restore, train_epochs
from tomoflow.recover.calibration import apply_calibration, calibration_of, fit_calibration
from tomoflow.recover.metrics import EvalPlan, box_metrics, box_val_loss, plan_eval, predict_plan
from tomoflow.recover.normalization import apply_normalization, normalization_from, undo_normalization
from tomoflow.recover.pairs import ArrayPair, BoxView
from tomoflow.recover.splits import PAD_MODE, Split, plan_split, spread_boxes
from tomoflow.recover.tiling import read_box
from tomoflow.recover.unet import CARD_NAME, WEIGHTS_NAME, UNetConfig, alignment, build_unet, load_unet, receptive_field
from tomoflow.train.files import CHECKPOINT_STATE, CHECKPOINT_TENSORS, load_checkpoint, save_checkpoint, save_unet

__all__ = ["TrainResult", "train_recovery", "DEFAULTS", "WEIGHTS_NAME", "CARD_NAME"]

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What :func:`train_recovery` made.

    Attributes
    ----------
    weights, card_path
        ``recover_unet.safetensors`` and ``recover_unet.json`` in the output folder.
    card
        The model card as written (``normalisation``, ``metrics["held_out"]``, ``training``, ...).
    model
        The best network (eval mode; its ``card`` attribute is the card). Wrap it with
        :func:`~tomoflow.recover.normalization.with_normalization` to run it on raw volumes.
    history
        One dict per epoch: ``epoch``, ``lr``, ``train_l1``, ``val_l1``, ``seconds``.
    split
        The spatial split.
    """

    weights: Path
    card_path: Path
    card: dict[str, Any]
    model: Any
    history: list[dict[str, Any]]
    split: Split

    @property
    def metrics(self) -> dict[str, Any]:
        """Held-out metrics (``val_l1``, PSNR and SSIM of input and prediction)."""
        return self.card["metrics"]["held_out"]

    @property
    def normalization(self) -> dict[str, Any]:
        return self.card["normalisation"]

    @property
    def best_epoch(self) -> int:
        return int(self.card["training"]["best_epoch"])


PORE_WIDTH = 0.1
"""Width of the pore term's soft threshold, as a fraction of the gap between mean solid and mean pore."""


DEFAULTS: dict[str, Any] = {
    "patch": 32,
    "batch": 4,
    "epochs": 120,
    "steps_per_epoch": 32,
    "patience": 15,
    "lr": 1e-3,
    "time_limit_s": 1200.0,
    "num_workers": 1,
}
"""The defaults of :func:`train_recovery` and ``tomoflow train-recovery`` (one source: the command and
``benchmarks/bench_recover.py`` part (c) read them): 120 epochs of 32 steps of 4 patches of 32³, patience
15, which reach the figures of part (c) (benchmarks/BENCHMARKS.md); the whole command bounded by 20
minutes (on a 2-core CPU the epochs end first at about 15 minutes for a 160³ pair; on a GPU in a minute
or two)."""

SAMPLE_VOXELS = 2**22
"""At most this many voxels (evenly spread boxes of :data:`SAMPLE_EDGE`³, fixed) give the normalisation, the
target's grey range and the pore threshold; a smaller pair is read whole."""
SAMPLE_EDGE = 64
"""Edge (voxels) of the sample's boxes (few, large boxes: each read decodes whole store chunks)."""
EVAL_VOXELS = 2**19
"""At most this many held-out voxels are validated every epoch and measured at the end (evenly spread
boxes, fixed; all of them when they are fewer); the card says which."""
CALIBRATION_VOXELS = 2**23
"""At most this many voxels of the training pair fit the calibration (evenly spread tiles, fixed; the
whole pair when it is smaller). The calibration moves one quantile of the prediction onto the threshold,
so it needs the pair's pore fraction, not a few tiles': with 2**20 (two of the eight 80³ tiles of the
benchmark's 160³ pair) the recovered porosity came out 0.34 pp low on the held-out samples, against
0.04 pp when fitted on the whole pair. 2**23 voxels: 32 MB of predictions, ~30 core-seconds of
inference."""


def _pore_term(values: np.ndarray) -> dict[str, Any]:
    """Threshold (Otsu, the pore protocol's) and soft width of the training target, normalised units,
    from ``values``: target voxels not held out (all of them, or a fixed sample of a large pair)."""
    from tomoflow.recover.pores import threshold_from_reference

    thr = threshold_from_reference(values.reshape(-1, 1, 1), name="target")
    pore, solid = values[values < thr], values[values >= thr]
    gap = float(solid.mean() - pore.mean()) if pore.size and solid.size else 0.0
    if not gap > 0:
        raise InputError(
            "the training target has no pore and solid classes to separate (pore_weight needs both)", dataset="target"
        )
    return {
        "threshold": thr,
        "width": PORE_WIDTH * gap,
        "method": "otsu on the target's training voxels",
        "pore_fraction": float(pore.size / values.size),
    }


def _pair_of(inp: Any, target: Any) -> Any:
    """The pair source: ``inp`` itself (``target`` None), or the two arrays."""
    if target is None:
        if not all(hasattr(inp, a) for a in ("shape", "read_input", "read_target", "identity")):
            raise ConfigError(
                "with target=None the first argument must be a pair source (tomoflow.recover.pairs.ArrayPair, "
                f"tomoflow.io.pair_source.StorePair), got {type(inp).__name__}"
            )
        if len(inp.shape) != 3:
            raise InputError(f"the pair must be 3-D (z, y, x), got shape {tuple(inp.shape)}", dataset="input")
        return inp
    return ArrayPair(inp, target)


def _train_config(**kw: Any) -> dict[str, Any]:
    return json.loads(json.dumps(kw))


class _Phases:
    """Wall time of each phase of a training (``card["timing"]["phases"]``)."""

    def __init__(self, before: dict[str, float] | None = None) -> None:
        self.seconds: dict[str, float] = {k: float(v) for k, v in (before or {}).items()}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t


def train_recovery(
    inp: Any,
    target: Any,
    *,
    out_dir: str | os.PathLike,
    config: UNetConfig | None = None,
    patch: int = DEFAULTS["patch"],
    context: int = 0,
    batch: int = DEFAULTS["batch"],
    epochs: int = DEFAULTS["epochs"],
    steps_per_epoch: int = DEFAULTS["steps_per_epoch"],
    lr: float = DEFAULTS["lr"],
    lr_final: float = 0.05,
    val_fraction: float = 0.125,
    split: str = "auto",
    patience: int = DEFAULTS["patience"],
    seed: int = 0,
    time_limit_s: float | None = DEFAULTS["time_limit_s"],
    num_workers: int = DEFAULTS["num_workers"],
    eval_voxels: int = EVAL_VOXELS,
    timing: dict[str, float] | None = None,
    threads: int | None = None,
    device: str | None = None,
    resume: bool = False,
    augment: bool = True,
    pore_weight: float = 0.0,
    calibrate: bool = True,
    progress: ProgressCallback | None = None,
    init_weights: str | os.PathLike | None = None,
    command: str | None = None,
    hr_voxel_um: float | None = None,
    lfov_voxel_um: float | None = None,
    source: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train a resolution-recovery U-Net on one (LFOV-on-HR-grid, HR) pair (module docstring).

    The pair is read patch by patch (a data loader's worker processes read, normalise and augment the
    patches), validated on held-out boxes and calibrated on tiles, never as a whole volume: memory is
    O(patch x batch + model + a bounded evaluation set), whatever the pair's size.

    Parameters
    ----------
    inp, target
        ``(z, y, x)`` input (the LFOV resampled onto the HR grid) and target (HR), same shape, finite; or
        a pair source (:mod:`tomoflow.recover.pairs`; :class:`tomoflow.io.pair_source.StorePair` reads the
        stores and resamples the LFOV around each box) and ``target=None``.
    out_dir
        Output folder: ``recover_unet.safetensors``, ``recover_unet.json`` (model card),
        ``checkpoint/`` (last epoch's state, for ``resume``).
    config
        The network (default :class:`~tomoflow.recover.unet.UNetConfig`, channels 16, 32, 64); one input
        and one output channel.
    patch
        Training patch edge (voxels), a multiple of the network's alignment, at most the volume's edge:
        the loss is computed on ``patch``-voxel cubes of the target.
    context
        Input context around each patch (voxels per side, a multiple of the alignment): the network
        sees a ``patch + 2 * context`` cube of the input (read with the reflect border rule, as at
        inference; it may overlap held-out blocks, whose *targets* are never trained on) and the loss
        is taken on the central ``patch`` cube of its output, so the loss sees less of the network's
        zero padding at the box faces, which inference (halo >= receptive field) never sees. 0: input
        and target patches coincide.
    batch
        Patches per optimisation step.
    epochs, steps_per_epoch
        Most epochs, and optimisation steps per epoch (one validation per epoch). Defaults (:data:`DEFAULTS`,
        also the command's): 120 epochs of 32 steps, patience 15, the settings that reach the figures of
        ``benchmarks/bench_recover.py`` part (c).
    lr, lr_final
        Adam learning rate, decayed (cosine, every step) to ``lr * lr_final`` at the last epoch or the
        time limit, whichever comes first.
    val_fraction, split
        Held-out fraction of the spatial blocks and the block layout (:func:`~tomoflow.recover.splits.plan_split`).
    patience
        Stop after this many epochs without a better validation L1.
    seed
        Seed of the split, the initial weights, the patches and the augmentation.
    time_limit_s
        Wall seconds this call may take, every phase included (reading the sample, validation, training,
        evaluation, calibration; writing the files takes about a second more): training gets what the
        phases after it need left of it (measured: one validation before training) and stops as early
        stopping does; its cosine decay then follows that time. Default 1200 s (20 minutes; on a 2-core CPU
        the default epochs usually end first). None: no limit (the schedule follows the epochs only, as a
        resumed run must to continue exactly).
    num_workers
        Data-loader worker processes reading the patches (0: in this process; also in a daemonic process,
        such as a Dask worker, which may not start processes). The patches do not depend on it.
    eval_voxels
        At most this many held-out voxels are validated and measured (all of them when fewer; else a
        fixed, evenly spread part, which ``metrics["held_out"]["evaluated"]`` states).
    timing
        Wall seconds of phases run before this call (e.g. ``{"registration": 12.0}``), recorded in
        ``card["timing"]["phases"]``.
    threads
        torch CPU threads (default torch's choice); set for the whole process.
    device
        ``"cpu"``, ``"cuda"`` or ``"auto"``; None: the device of :mod:`tomoflow.config`.
    resume
        Continue from ``out_dir/checkpoint`` when there is one (it must have been made with the same
        pair and parameters; ``epochs`` and ``time_limit_s`` may change); False starts over.
    overwrite
        Replace weights and a card that tomoflow wrote into ``out_dir`` for another training (files
        tomoflow did not write are never replaced; a resumed run of the same training rewrites its own).
    augment
        Random flips, axis permutations, gain and offset (:func:`~tomoflow.recover.augment.augment_pair`); False: none.
    pore_weight
        Weight of a pore term added to the L1 loss (0: none). The pore threshold is derived from the
        training target as the pore protocol derives it (:func:`tomoflow.recover.pores.threshold_from_reference`,
        Otsu, on the voxels not held out); the term is the binary cross-entropy between the target's
        pore mask and a soft threshold of the prediction, ``sigmoid((threshold - prediction) / width)``
        with ``width`` a tenth of the gap between the target's mean solid and mean pore values (both
        follow each patch's gain and offset). L1 rewards the mean of what an ambiguous voxel could be,
        which for a thin crack or a small pore is often on the solid side of the threshold; the term
        rewards the side, which is what porosity and pore counts measure. Early stopping and the
        choice of the best weights then follow the same loss on the held-out blocks (``val_loss`` in
        the history); the card's ``val_l1`` stays the L1.
    calibrate
        After training, fit the output calibration (:func:`~tomoflow.recover.calibration.fit_calibration`)
        on the whole training pair (at most :data:`CALIBRATION_VOXELS` of it: else on fixed, evenly
        spread tiles, as ``calibration["fitted_on"]`` says) and store it in the card (``card["calibration"]``;
        :func:`~tomoflow.recover.normalization.with_normalization` applies it): the prediction then has the
        target's pore fraction at the pore protocol's threshold.
        ``metrics["held_out"]["pore_fraction"]`` gives the held-out blocks' pore fraction of the
        target, and of the prediction before and after the calibration.
    progress
        ``progress(epoch, step, n_steps, train_loss, val_loss)``: every few steps and at the end of each
        epoch (``val_loss`` given then, with ``step == n_steps``); on a fresh start, epoch 0, step 0 reports the
        validation L1 of the starting network (the identity, i.e. the input itself, unless
        ``init_weights``), which competes as "epoch 0" for the best weights: a training that never
        beats it returns the starting network (``best_epoch`` 0). Losses are L1 in normalised units
        (the validation value includes the pore term when ``pore_weight`` > 0).
    init_weights
        Start from these weights (``recover_unet.safetensors`` with its card, which must name them and
        hold their sha256; same configuration) instead of a random initialisation: fine-tuning.
    command
        The exact command that ran this training (recorded in the card).
    hr_voxel_um, lfov_voxel_um, source
        Recorded in the card's data recipe (voxel sizes in micrometres; ``source``: paths, registration).

    Returns
    -------
    TrainResult

    Raises
    ------
    InputError
        Not 3-D, shapes differ, NaN/Inf, a constant input, or a volume smaller than a patch;
        ``init_weights`` that are not U-Net safetensors.
    ModelError
        ``init_weights`` or the checkpoint fail the load gate (no card beside them, a card naming another
        file, a sha256 that is not the card's: :func:`tomoflow.weights.card.verified_model`).
    ConfigError
        Bad parameters, a checkpoint made with other data or parameters, ``init_weights`` of another
        configuration.
    """
    import torch

    t_start = time.perf_counter()
    phases = _Phases(timing)
    config = UNetConfig() if config is None else config
    if not isinstance(config, UNetConfig):
        raise ConfigError(f"config must be a UNetConfig, got {type(config).__name__}")
    if config.in_channels != 1 or config.out_channels != 1:
        raise ConfigError(
            f"resolution recovery maps one volume to one: the network has {config.in_channels} input "
            f"and {config.out_channels} output channels"
        )
    pair = _pair_of(inp, target)
    shape = tuple(int(n) for n in pair.shape)
    patch = check_int("patch", patch, low=1)
    a = alignment(config)
    if patch % a:
        raise ConfigError(f"patch must be a multiple of the network's alignment {a} voxels, got {patch}")
    context = check_int("context", context, low=0)
    if context % a:
        raise ConfigError(f"context must be a multiple of the network's alignment {a} voxels, got {context}")
    batch = check_int("batch", batch, low=1)
    epochs = check_int("epochs", epochs, low=1)
    steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, low=1)
    patience = check_int("patience", patience, low=1)
    lr = check_number("lr", lr, low=0.0, low_open=True)
    lr_final = check_number("lr_final", lr_final, low=0.0, high=1.0)
    seed = check_int("seed", seed, low=0)
    num_workers = check_int("num_workers", num_workers, low=0)
    if num_workers:
        import multiprocessing

        if multiprocessing.current_process().daemon:  # e.g. a Dask worker: it may not start processes
            log.info("a daemonic process cannot start data-loader workers: the patches are read in this process")
            num_workers = 0
    eval_voxels = check_int("eval_voxels", eval_voxels, low=1)
    if time_limit_s is not None:
        time_limit_s = check_number("time_limit_s", time_limit_s, low=0.0, low_open=True)
    sp = plan_split(shape, patch, kind=split, val_fraction=val_fraction, seed=seed)
    if min(sp.block) < a:
        raise ConfigError(
            f"the split's blocks {sp.block} are smaller than the network's alignment {a}; "
            "use a larger volume or fewer levels"
        )
    pore_weight = check_number("pore_weight", pore_weight, low=0.0)
    # ---- a fixed sample of the pair (all of it when small): normalisation, grey range, pore threshold
    with phases("reading"):
        sample = spread_boxes(shape, SAMPLE_EDGE, SAMPLE_VOXELS)
        xs, ys, train_ys = [], [], []
        for box in sample:
            x, y = pair.read(box)
            xs.append(x.ravel())
            ys.append(y.ravel())
            if pore_weight > 0:
                train_ys.append(y[~sp.held_out_in(box)])
        norm = normalization_from(np.concatenate(xs))
        y_all = np.concatenate(ys)
        data_range = float(y_all.max() - y_all.min())
        del xs, ys, y_all
        sample_note = (
            "the whole pair"
            if len(sample) == 1 and sample[0] == tuple((0, n) for n in shape)
            else f"{len(sample)} boxes of {SAMPLE_EDGE}³ evenly spread over the pair (fixed)"
        )
        pore_term = _pore_term(apply_normalization(np.concatenate(train_ys), norm)) if pore_weight > 0 else None
        del train_ys
        identity = pair.identity()
    dev = resolve_device(device)
    if threads is not None:
        torch.set_num_threads(check_int("threads", threads, low=1))
    out = Path(out_dir)
    ckpt = out / "checkpoint"
    aug = {
        "flips": bool(augment),
        "permute": bool(augment),
        "gain": [0.9, 1.1] if augment else [1.0, 1.0],
        "offset": [-0.05, 0.05] if augment else [0.0, 0.0],
    }
    train_cfg = _train_config(
        input_sha256=identity["input_sha256"],
        target_sha256=identity["target_sha256"],
        config=config.to_dict(),
        patch=patch,
        **({"context": context} if context else {}),
        batch=batch,
        steps_per_epoch=steps_per_epoch,
        lr=lr,
        lr_final=lr_final,
        val_fraction=val_fraction,
        split=sp.kind,
        seed=seed,
        augmentation=aug,
    )
    if pore_term is not None:
        train_cfg["pore_term"] = {"weight": pore_weight, **pore_term}

    # ---- model, optimiser, resume
    torch.manual_seed(seed)
    model = build_unet(config=config).to(dev)
    init_info = None
    if init_weights is None and config.residual:  # start as the identity: zero correction (head at zero)
        torch.nn.init.zeros_(model.head.weight)
        torch.nn.init.zeros_(model.head.bias)
    if init_weights is not None:  # through the gate (card beside, naming the file, same sha256)
        try:
            init = load_unet(init_weights, device="cpu")
        except InputError as exc:  # ModelError included: say which argument it was
            raise type(exc)(f"{exc.problem} (the init weights)", exc.path, exc.dataset) from None
        if init.config != config:
            raise ConfigError(f"init weights have the configuration {init.config}, not {config}")
        model.load_state_dict(init.state_dict())
        init_info = {"file": Path(init_weights).name, "sha256": init.card.get("sha256")}
    train_cfg["init_weights"] = init_info
    resumed = None  # the checkpoint, through the gate, and its parameters: checked before anything is planned
    if resume and (ckpt / CHECKPOINT_STATE).is_file():
        resumed = load_checkpoint(ckpt)  # the state names the tensors and holds their sha256
        saved = dict(resumed[0].get("config") or {})
        if saved != train_cfg:
            diff = sorted(k for k in set(saved) | set(train_cfg) if saved.get(k) != train_cfg.get(k))
            raise ConfigError(
                f"the checkpoint in {ckpt} was made with other data or training parameters "
                f"({', '.join(diff)}); use another output folder or start over"
            )
    # ---- every file this training writes, checked by the file policy before any work
    from tomoflow.io.output import fingerprint as digest
    from tomoflow.io.output import plan_files
    from tomoflow.weights.card import card_path

    # the training's identity, as its checkpoint's (a resumed run, longer or not, is the same training)
    train_fp = digest("train-recovery", inputs={}, params={**train_cfg, "calibrate": calibrate})
    renew = [f"checkpoint/{CHECKPOINT_TENSORS}", f"checkpoint/{CHECKPOINT_STATE}"]
    read = [init_weights, card_path(Path(init_weights))] if init_weights is not None else []
    plan_files(
        out,
        {WEIGHTS_NAME: "model-weights", CARD_NAME: "model-card", **dict.fromkeys(renew, "recovery-checkpoint")},
        fingerprint=train_fp,
        overwrite=overwrite,
        renew=renew,
        inputs=read,
    )
    out.mkdir(parents=True, exist_ok=True)
    opt = torch.optim.Adam(model.parameters(), lr=lr)

    # ---- the held-out boxes validated (all, or a fixed, evenly spread part of a large pair), read once
    t_read_val = time.perf_counter()
    with phases("reading"):
        val_plan = plan_eval(model, shape, sp.held_out_boxes, block=sp.block, max_voxels=eval_voxels)
        view = BoxView(pair, "input")
        val_in: dict[tuple[int, ...], np.ndarray] = {}
        val_x: list[np.ndarray] = []  # raw input of each unit (for the metrics)
        for t in val_plan.tiles:
            val_in[t.index] = read_box(view, t.in_start, t.in_stop, PAD_MODE)
        for u in val_plan.units:
            off = [o - i for o, i in zip(u.tile.out_start, u.tile.in_start)]
            val_x.append(val_in[u.tile.index][tuple(slice(c.start + d, c.stop + d) for c, d in zip(u.crop, off))])
        val_y = [pair.read_target(u.box) for u in val_plan.units]
        val_in = {k: apply_normalization(v, norm) for k, v in val_in.items()}
        val_xn = [apply_normalization(x, norm) for x in val_x]
        val_yn = [apply_normalization(y, norm) for y in val_y]
    t_read_val = time.perf_counter() - t_read_val
    identity_l1 = box_val_loss(val_xn, val_yn, None, 0.0)[1]

    def validate_now() -> list[np.ndarray]:
        return predict_plan(model, val_plan, val_in, dev)

    state = LoopState(best_state=copy_state(model))
    t_val = 0.0
    with phases("validation"):
        if resumed is not None:
            info, tensors = resumed
            state.best_state = restore(model, opt, tensors, dev)
            state.epoch = int(info["epoch"])
            state.best_val, state.best_epoch = float(info["best_val_l1"]), int(info["best_epoch"])
            state.bad = int(info["bad_epochs"])
            state.history, state.train_s = list(info["history"]), float(info.get("train_s", 0.0))
            start_val = float(info["start_val_l1"])
            start_l1 = float(info.get("start_l1", start_val))
            log.info("resuming after epoch %d (best validation L1 %.4g)", state.epoch, state.best_val)
            if time_limit_s is not None:  # how long a validation takes, for the time plan
                t0 = time.perf_counter()
                validate_now()
                t_val = time.perf_counter() - t0
        else:  # epoch 0: the starting network competes too (a zero head is the identity: never worse than the input)
            zero_head = init_weights is None and config.residual
            t0 = time.perf_counter()
            start_pred = validate_now() if (time_limit_s is not None or not zero_head) else None
            t_val = time.perf_counter() - t0
            start_val, start_l1 = box_val_loss(
                val_xn if zero_head or start_pred is None else start_pred, val_yn, pore_term, pore_weight
            )
            del start_pred
            state.best_val = start_val
            if progress is not None:
                progress(0, 0, steps_per_epoch, None, start_val)

    # ---- the time plan: training gets what the phases after it (one validation that may overrun the
    # limit, the final one, the calibration's reading and prediction, writing) leave of the time limit
    cal_plan = None
    if calibrate:
        cal_plan = plan_eval(model, shape, [((0, 0, 0), shape)], block=sp.block, max_voxels=CALIBRATION_VOXELS)
    loop_limit = None
    reserve = 0.0
    if time_limit_s is not None:
        # the calibration reads and predicts its tiles as the validation set was read and predicted; a
        # validation may overrun the training's limit, the final evaluation is one more: margins for a
        # machine whose speed varies (shared CPUs)
        per_voxel = (t_val + t_read_val) / max(val_plan.voxels, 1)
        cal_s = 2.0 * per_voxel * (cal_plan.voxels if cal_plan is not None else 0)
        reserve = 2.5 * t_val + cal_s + 2.0
        left = time_limit_s - (time.perf_counter() - t_start) - reserve
        loop_limit = state.train_s + max(left, 1e-3)

    core = (Ellipsis,) + (slice(context, context + patch),) * 3
    from tomoflow.train.patches import PatchStream, patch_loader

    stream = PatchStream(
        pair,
        sp,
        norm,
        first_epoch=state.epoch + 1,
        n_steps=steps_per_epoch,
        patch=patch,
        context=context,
        batch=batch,
        seed=seed,
        augment=aug if augment else None,
    )
    batches: Iterator[dict[str, Any]] | None = None

    def step(epoch: int, k: int, rng: np.random.Generator) -> tuple[float, int]:
        nonlocal batches
        if batches is None:
            batches = iter(patch_loader(stream, num_workers, pin_memory=dev.type == "cuda"))
        b = next(batches)
        assert (int(b["epoch"]), int(b["step"])) == (epoch, k), "the patch stream is out of step"
        xt, yt = b["x"].to(dev, non_blocking=True), b["y"].to(dev, non_blocking=True)
        opt.zero_grad(set_to_none=True)
        pred = model(xt)[core]
        l1 = torch.mean(torch.abs(pred - yt))
        loss = l1
        if pore_term is not None:
            g = b["gains"].to(dev, non_blocking=True).view(batch, 2, 1, 1, 1, 1)
            thr = g[:, 0] * pore_term["threshold"] + g[:, 1]
            width = g[:, 0] * pore_term["width"]
            loss = l1 + pore_weight * torch.nn.functional.binary_cross_entropy_with_logits(
                (thr - pred) / width, (yt < thr).to(pred.dtype)
            )
        loss.backward()
        opt.step()
        return float(l1.detach()), 1

    def validate(epoch: int) -> tuple[float, float]:
        return box_val_loss(validate_now(), val_yn, pore_term, pore_weight)

    def record(epoch: int, train_loss: float, val: float, val_l1: float, steps: int, t_ep: float) -> dict[str, Any]:
        entry = {
            "epoch": epoch,
            "lr": opt.param_groups[0]["lr"],
            "train_l1": train_loss,
            "val_l1": val_l1,
            **({"val_loss": val} if pore_term is not None else {}),
            "steps": steps,
            "seconds": time.perf_counter() - t_ep,
        }
        log.info(
            "epoch %d: train L1 %.4f, validation L1 %.4f (identity %.4f), loss %.4f%s",
            epoch,
            train_loss,
            val_l1,
            identity_l1,
            val,
            " *" if state.best_epoch == epoch else "",
        )
        return entry

    def checkpoint(state: LoopState) -> None:
        save_checkpoint(
            ckpt,
            model,
            state.best_state,
            opt,
            {
                "epoch": state.epoch,
                "best_val_l1": state.best_val,
                "best_epoch": state.best_epoch,
                "bad_epochs": state.bad,
                "history": state.history,
                "train_s": state.train_s,
                "start_val_l1": start_val,
                "start_l1": start_l1,
                "config": train_cfg,
            },
            kind="recovery-checkpoint",
        )

    t_train = time.perf_counter()
    try:
        state = train_epochs(
            model,
            opt,
            state,
            epochs=epochs,
            n_steps=steps_per_epoch,
            lr=lr,
            lr_final=lr_final,
            seed=seed,
            patience=patience,
            time_limit_s=loop_limit,
            step=step,
            validate=validate,
            record=record,
            checkpoint=checkpoint,
            progress=progress,
            progress_every=4,
        )
    finally:
        batches = None  # the loader's workers end
    phases.seconds["training"] = time.perf_counter() - t_train
    best_state, best_epoch, history, train_s = state.best_state, state.best_epoch, state.history, state.train_s
    stopped = state.stopped

    # ---- outputs: best weights, held-out metrics, calibration, card
    model.load_state_dict(best_state)
    model.eval()
    with phases("evaluation"):
        pred_n = validate_now()
        final_l1 = box_val_loss(pred_n, val_yn, None, 0.0)[1]
        pred = [undo_normalization(p, norm) for p in pred_n]
        del pred_n
        metrics = box_metrics(zip(pred, val_x, val_y), data_range)
    metrics.update(
        {
            "val_l1": final_l1,
            "val_l1_input": identity_l1,
            "val_l1_units": "normalised grey values, (x - offset) / scale",
            "evaluated": val_plan.describe() + " of the held-out blocks",
        }
    )
    calibration, calibration_note = None, "not requested (calibrate=False)"
    if calibrate:
        assert cal_plan is not None
        with phases("calibration"):
            calibration, calibration_note = _calibrate(model, pair, cal_plan, norm, dev)
            if calibration is not None:
                cal = calibration_of({"calibration": calibration})
                assert cal is not None  # fitted: four increasing levels
                calibrated = [apply_calibration(p, cal) for p in pred]
                thr = calibration["threshold"]
                metrics["pore_fraction"] = {
                    "threshold": thr,
                    "target": _fraction_below(val_y, thr),
                    "prediction": _fraction_below(pred, thr),
                    "calibrated": _fraction_below(calibrated, thr),
                }
                after = box_metrics(zip(calibrated, val_x, val_y), data_range)
                metrics["calibrated"] = {k: after[k] for k in ("psnr_prediction_db", "ssim_prediction") if k in after}
    total_s = time.perf_counter() - t_start
    card = {
        "name": "tomoflow resolution-recovery 3D U-Net (per-sample)",
        "input_size": [patch, patch, patch],
        "normalisation": dict(norm, pad_mode=PAD_MODE, computed_from=sample_note),
        "inference": "y = undo_normalization(net(apply_normalization(x))) on the LFOV resampled onto the HR grid "
        f"(tomoflow.recover.normalization.with_normalization); pad_mode {PAD_MODE!r}, halo >= "
        f"{receptive_field(config)} voxels",
        "training_data": {
            "input": "LFOV volume resampled onto the HR grid (registration matrix HR -> LFOV)",
            "target": "HR region-of-interest volume",
            "shape": list(shape),
            "hr_voxel_um": hr_voxel_um,
            "lfov_voxel_um": lfov_voxel_um,
            "input_sha256": train_cfg["input_sha256"],
            "target_sha256": train_cfg["target_sha256"],
            "read": "patch by patch from the pair source "
            + ("(the LFOV resampled onto each box)" if target is None else "(two arrays)"),
            "patch": [patch] * 3,
            "context": context,
            "batch": batch,
            "steps_per_epoch": steps_per_epoch,
            "num_workers": num_workers,
            "augmentation": dict(
                aug, note="same flips, permutation, gain and offset on input and target, normalised space"
            ),
            "split": sp.to_dict(),
            "seed": seed,
            "source": source,
        },
        "training": {
            "optimizer": "Adam",
            "lr": lr,
            "lr_schedule": f"cosine per step to {lr_final} x lr over {epochs} epochs"
            + (f" or {loop_limit:g} s of training, whichever first" if loop_limit else ""),
            "loss": "L1 (mean absolute error), normalised units"
            + (
                f" + {pore_weight:g} x pore term (binary cross-entropy of a soft threshold at "
                f"{pore_term['threshold']:.4g}, width {pore_term['width']:.4g}, against the target's pores)"
                if pore_term is not None
                else ""
            ),
            "pore_term": None if pore_term is None else {"weight": pore_weight, **pore_term},
            "epochs_run": len(history),
            "max_epochs": epochs,
            "start_val_l1": start_l1,
            **({"start_val_loss": start_val} if pore_term is not None else {}),
            "best_epoch": best_epoch,
            "patience": patience,
            "stopped_by": stopped,
            "initialized_from": init_info,
            "device": str(dev),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "history": history,
        },
        "metrics": {"held_out": metrics},
        "calibration": calibration,
        **({"calibration_note": calibration_note} if calibration is None else {}),
        "seed": seed,
        "command": command,
        "timing": {
            "training_s": train_s,
            "total_s": total_s,
            "time_limit_s": time_limit_s,
            "training_limit_s": loop_limit,
            "reserved_after_training_s": reserve if time_limit_s is not None else None,
            "phases": dict(phases.seconds),
            "note": "wall seconds of each phase of this run (training_s: the training loop summed over resumed "
            "runs); writing the files comes after the card and is not in it",
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    weights = out / WEIGHTS_NAME
    card = save_unet(model, config, weights, card=card, fingerprint=train_fp)
    model.card = card
    return TrainResult(weights=weights, card_path=out / CARD_NAME, card=card, model=model, history=history, split=sp)


def _fraction_below(boxes: list[np.ndarray], threshold: float) -> float:
    n = sum(b.size for b in boxes)
    return float(sum(int(np.count_nonzero(b < threshold)) for b in boxes) / max(n, 1))


def _calibrate(
    model: Any, pair: Any, plan: EvalPlan, norm: dict[str, Any], device: Any
) -> tuple[dict[str, Any] | None, str]:
    """``(calibration, note)`` of a trained network fitted on the tiles of ``plan`` (the whole training pair,
    or a fixed, evenly spread sample of it), predicted tile by tile as inference predicts them."""
    view = BoxView(pair, "input")
    preds, tgts = [], []
    for t in plan.tiles:
        x = apply_normalization(read_box(view, t.in_start, t.in_stop, PAD_MODE), norm)
        one = EvalPlan(
            units=[u for u in plan.units if u.tile.index == t.index],
            tiles=[t],
            valid=plan.valid,
            complete=plan.complete,
            total_voxels=plan.total_voxels,
        )
        for u, p in zip(one.units, predict_plan(model, one, {t.index: x}, device)):
            preds.append(undo_normalization(p, norm).ravel())
            tgts.append(pair.read_target(u.box).ravel())
    try:
        cal = fit_calibration(np.concatenate(preds), np.concatenate(tgts))
    except InputError as exc:  # a constant target: no threshold
        return None, f"not fitted: {exc}"
    if cal is None:
        return None, "not fitted: the target has no pore and solid classes at its threshold"
    cal["fitted_on"] = (
        "the whole training pair (every voxel of the region of interest)"
        if plan.complete
        else f"a sample of the training pair: {plan.describe()}"
    )
    return cal, ""
