"""Held-out metrics of a resolution-recovery network: PSNR, SSIM, L1 and the validation loss on the
held-out blocks of a :class:`~tomoflow.recover.splits.Split`."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tomoflow.recover.splits import PAD_MODE, Split, halton
from tomoflow.recover.tiling import Tile

__all__ = [
    "held_out_metrics",
    "predict_held_out",
    "l1_held_out",
    "val_loss",
    "EVAL_EDGE",
    "box_metrics",
    "box_val_loss",
    "EvalUnit",
    "EvalPlan",
    "plan_eval",
    "predict_plan",
]


def _ssim(ref: np.ndarray, img: np.ndarray, data_range: float) -> float | None:
    from skimage.metrics import structural_similarity

    m = min(ref.shape)
    win = min(7, m if m % 2 else m - 1)
    if win < 3:
        return None
    return float(structural_similarity(ref, img, data_range=data_range, win_size=win))


def held_out_metrics(
    pred: np.ndarray, inp: np.ndarray, target: np.ndarray, split: Split, data_range: float
) -> dict[str, Any]:
    """PSNR (dB) and SSIM of the input and of the prediction against the target, over the held-out
    blocks, in the volumes' own units (``data_range``: the target's max - min over the whole pair).
    PSNR pools the squared error of all held-out voxels; SSIM (scikit-image, 7³ window or the largest
    odd one that fits) is averaged over the blocks weighted by their voxels."""
    boxes = []
    for a, b in split.held_out_boxes:
        sl = tuple(slice(s, e) for s, e in zip(a, b))
        boxes.append((pred[sl], inp[sl], target[sl]))
    return box_metrics(boxes, data_range)


def predict_held_out(model: Any, inp_n: np.ndarray, split: Split, device: Any) -> np.ndarray:
    """The held-out blocks predicted exactly as inference does (elsewhere: the input copied)."""
    from tomoflow.recover.tiling import predict_tiled

    held = set(split.held_out)
    return predict_tiled(
        model,
        inp_n,
        block=split.block,
        device=str(device.type),
        pad_mode=PAD_MODE,
        skip=lambda t: tuple(t.index) not in held,
    )


def l1_held_out(pred_n: np.ndarray, tgt_n: np.ndarray, split: Split) -> float:
    """Mean absolute difference over the held-out blocks."""
    tot, n = 0.0, 0
    for a, b in split.held_out_boxes:
        sl = tuple(slice(s, e) for s, e in zip(a, b))
        d = np.abs(pred_n[sl].astype(np.float64) - tgt_n[sl])
        tot += float(d.sum())
        n += d.size
    return tot / max(n, 1)


def val_loss(
    pred_n: np.ndarray, tgt_n: np.ndarray, split: Split, pore_term: dict[str, Any] | None, pore_weight: float
) -> tuple[float, float]:
    """``(loss, l1)`` on the held-out blocks: the training loss (L1, plus the weighted pore term when
    there is one), which selects the best weights, and the L1 alone."""
    l1 = l1_held_out(pred_n, tgt_n, split)
    if pore_term is None:
        return l1, l1
    tot, n = 0.0, 0
    for a, b in split.held_out_boxes:
        sl = tuple(slice(s, e) for s, e in zip(a, b))
        y = tgt_n[sl].astype(np.float64)
        z = (pore_term["threshold"] - pred_n[sl].astype(np.float64)) / pore_term["width"]
        label = y < pore_term["threshold"]
        tot += float((np.maximum(z, 0.0) - z * label + np.log1p(np.exp(-np.abs(z)))).sum())
        n += y.size
    return l1 + pore_weight * tot / max(n, 1), l1


# ----------------------------------------------------------------------------- blockwise evaluation
EVAL_EDGE = 80
"""Largest edge (voxels) of the tiles an evaluation predicts (:func:`plan_eval`): the held-out octant of a
160³ pair is one tile, as whole-volume inference with that block predicts it; larger tiles cost memory."""


def box_metrics(boxes: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]], data_range: float) -> dict[str, Any]:
    """:func:`held_out_metrics` over ``(prediction, input, target)`` boxes (any shapes, one box each):
    PSNR pools the squared errors, SSIM is averaged over the boxes weighted by their voxels."""
    sq_in = sq_pred = 0.0
    n = 0
    ss_in: list[tuple[float, int]] = []
    ss_pred: list[tuple[float, int]] = []
    for p, i, t in boxes:
        t, i, p = (np.asarray(v, dtype=np.float64) for v in (t, i, p))
        sq_in += float(np.sum((i - t) ** 2))
        sq_pred += float(np.sum((p - t) ** 2))
        n += t.size
        si, sp = _ssim(t, i, data_range), _ssim(t, p, data_range)
        if si is not None and sp is not None:
            ss_in.append((si, t.size))
            ss_pred.append((sp, t.size))

    def psnr(sq: float) -> float:
        mse = sq / max(n, 1)
        return float(10.0 * math.log10(data_range**2 / mse)) if mse > 0 else math.inf

    def mean(v: list[tuple[float, int]]) -> float | None:
        return float(sum(s * w for s, w in v) / sum(w for _, w in v)) if v else None

    return {
        "psnr_input_db": psnr(sq_in),
        "psnr_prediction_db": psnr(sq_pred),
        "ssim_input": mean(ss_in),
        "ssim_prediction": mean(ss_pred),
        "rmse_input": math.sqrt(sq_in / max(n, 1)),
        "rmse_prediction": math.sqrt(sq_pred / max(n, 1)),
        "data_range": float(data_range),
        "n_voxels": int(n),
        "units": "the volumes' grey values; PSNR against the target's max - min",
    }


def box_val_loss(
    preds_n: Sequence[np.ndarray], tgts_n: Sequence[np.ndarray], pore_term: dict[str, Any] | None, pore_weight: float
) -> tuple[float, float]:
    """:func:`val_loss` over boxes: ``(loss, l1)``, normalised units, pooled over all voxels of the boxes."""
    l1_sum, pore_sum, n = 0.0, 0.0, 0
    for p, y in zip(preds_n, tgts_n):
        p64, y64 = p.astype(np.float64), y.astype(np.float64)
        l1_sum += float(np.abs(p64 - y64).sum())
        n += y64.size
        if pore_term is not None:
            z = (pore_term["threshold"] - p64) / pore_term["width"]
            label = y64 < pore_term["threshold"]
            pore_sum += float((np.maximum(z, 0.0) - z * label + np.log1p(np.exp(-np.abs(z)))).sum())
    l1 = l1_sum / max(n, 1)
    return (l1 + pore_weight * pore_sum / max(n, 1) if pore_term is not None else l1), l1


@dataclass
class EvalUnit:
    """One evaluated box: ``box`` (``(start, stop)`` per axis) inside the output block of ``tile``, which
    is predicted from ``tile``'s input box as tiled inference predicts it."""

    tile: Tile
    box: tuple[tuple[int, int], ...]

    @property
    def voxels(self) -> int:
        return int(np.prod([b - a for a, b in self.box]))

    @property
    def crop(self) -> tuple[slice, ...]:
        """Slices of ``box`` inside the tile's output block."""
        return tuple(slice(a - o, b - o) for (a, b), o in zip(self.box, self.tile.out_start))


@dataclass
class EvalPlan:
    """Tiles and boxes of a bounded, deterministic evaluation (:func:`plan_eval`)."""

    units: list[EvalUnit]
    tiles: list[Tile]
    valid: bool
    complete: bool
    total_voxels: int

    @property
    def voxels(self) -> int:
        return sum(u.voxels for u in self.units)

    def describe(self) -> str:
        if self.complete:
            return f"all {self.total_voxels} voxels"
        return (
            f"{self.voxels} of {self.total_voxels} voxels ({len(self.units)} boxes of at most {EVAL_EDGE}³, "
            "spread by a Halton sequence, fixed)"
        )


def plan_eval(
    model: Any,
    shape: Sequence[int],
    boxes: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    block: Sequence[int],
    max_voxels: int | None = None,
) -> EvalPlan:
    """The tiles that predict ``boxes`` (``(start, stop)`` each) of a ``shape`` volume, bounded.

    The volume is tiled as :func:`~tomoflow.recover.tiling.predict_tiled` tiles it (output blocks of at most
    :data:`EVAL_EDGE` voxels dividing ``block`` evenly, the network's halo), each tile's output cut by the
    boxes; when the boxes hold more than ``max_voxels``, an evenly spaced, fixed subset of the pieces is
    kept. Predictions of the kept pieces equal whole-volume inference to float rounding.
    """
    from tomoflow.recover.tiling import plan_tiles, valid_evaluation, valid_halo
    from tomoflow.recover.unet import alignment, receptive_field

    shp = tuple(int(n) for n in shape)
    tb = tuple(math.ceil(int(b) / math.ceil(int(b) / EVAL_EDGE)) for b in block)
    a = alignment(model.config)
    tight = valid_halo(model, shp, tb, a)
    tiles = plan_tiles(shp, tb, tight if tight is not None else receptive_field(model.config), a)
    valid = tight is not None or valid_evaluation(model, tiles[0].in_shape, [t.crop for t in tiles])
    units = []
    for t in tiles:
        for start, stop in boxes:
            box = tuple((max(int(s), o), min(int(e), p)) for s, e, o, p in zip(start, stop, t.out_start, t.out_stop))
            if all(b > a_ for a_, b in box):
                units.append(EvalUnit(t, box))
    total = sum(u.voxels for u in units)
    complete = max_voxels is None or total <= max_voxels
    if not complete:  # the pieces nearest to Halton points over the boxes' extent: spread, fixed
        assert max_voxels is not None
        lo = np.min([[a for a, _ in u.box] for u in units], axis=0).astype(float)
        hi = np.max([[b for _, b in u.box] for u in units], axis=0).astype(float)
        centres = np.array([[(a + b) / 2.0 for a, b in u.box] for u in units])
        free = np.ones(len(units), dtype=bool)
        chosen: list[int] = []
        used_voxels, k = 0, 1
        while free.any():
            point = lo + halton(1, start=k)[0] * (hi - lo)
            k += 1
            d = np.where(free, np.linalg.norm(centres - point, axis=1), np.inf)
            j = int(np.argmin(d))
            if chosen and used_voxels + units[j].voxels > max_voxels:
                break
            chosen.append(j)
            free[j] = False
            used_voxels += units[j].voxels
        units = [units[j] for j in sorted(chosen)]
    used = {u.tile.index for u in units}
    return EvalPlan(
        units=units, tiles=[t for t in tiles if t.index in used], valid=valid, complete=complete, total_voxels=total
    )


def predict_plan(
    model: Any, plan: EvalPlan, inputs: dict[tuple[int, ...], np.ndarray], device: Any
) -> list[np.ndarray]:
    """The network's prediction of each unit of ``plan`` from the tiles' input boxes ``inputs`` (by tile
    index, as :func:`~tomoflow.recover.tiling.read_box` reads them, already in the network's units)."""
    from tomoflow.recover.tiling import predict_boxes, prepare_model

    dev, dtype, was_training = prepare_model(model, str(getattr(device, "type", device)))
    try:
        out: dict[tuple[int, ...], np.ndarray] = {}
        for t in plan.tiles:
            out[t.index] = predict_boxes(model, [inputs[t.index]], [t.crop], dev, dtype, plan.valid)[0]
        return [out[u.tile.index][u.crop] for u in plan.units]
    finally:
        if not getattr(model, "runs_numpy", False):
            model.train(was_training)
