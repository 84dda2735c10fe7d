"""Held-out metrics of a resolution-recovery network: PSNR, SSIM, L1 and the validation loss on the
held-out blocks of a :class:`~tomoflow.recover.splits.Split`."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tomoflow.recover.splits import PAD_MODE, Split

__all__ = ["held_out_metrics", "predict_held_out", "l1_held_out", "val_loss"]


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
    sq_in = sq_pred = 0.0
    n = 0
    ss_in: list[tuple[float, int]] = []
    ss_pred: list[tuple[float, int]] = []
    for a, b in split.held_out_boxes:
        sl = tuple(slice(s, e) for s, e in zip(a, b))
        t, i, p = (np.asarray(v[sl], dtype=np.float64) for v in (target, inp, pred))
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
