"""The output calibration of the resolution-recovery network (fitted after training, applied at inference).

**Calibration** (:func:`fit_calibration`, ``card["calibration"]``, on by default: ``calibrate``): a network
trained voxel by voxel answers, for a voxel it is unsure of, what that voxel most likely is; thin cracks and
pores smaller than an LFOV voxel are unsure everywhere, so they come out a little above the pore threshold and
the recovered porosity falls short of HR's (by 0.9-1.7 percentage points on held-out simulated samples, with
the best grey values). After training, one monotone, piecewise-linear grey-value map is fitted on the whole
training pair so that the prediction has the target's pore fraction at the pore protocol's threshold (Otsu of
the target); it leaves the pore and solid levels and everything outside them unchanged.
:func:`~tomoflow.recover.normalization.with_normalization` applies it after the normalisation
(``calibrated=False``: the network alone); it is element-wise, so tiles stay exact, and it exports to ONNX.
The card's held-out metrics are the network's; ``metrics["held_out"]["calibrated"]`` and ``["pore_fraction"]``
give the calibrated prediction's.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tomoflow.errors import InputError

__all__ = ["fit_calibration", "calibration_of", "apply_calibration"]


def fit_calibration(
    prediction: np.ndarray, target: np.ndarray, *, threshold: float | None = None, mask: np.ndarray | None = None
) -> dict[str, Any] | None:
    """The output calibration that gives the prediction the target's pore fraction at the pore threshold.

    A network trained voxel by voxel (L1: the conditional median) puts a voxel on the pore side only
    where it is more likely pore than not, so the thin and small pores it is unsure of come out a
    little above the threshold: on held-out samples the recovered porosity fell 0.9-1.7 percentage
    points short of HR's while the grey values were the best yet. The calibration is one monotone,
    piecewise-linear grey-value map fitted on the training pair (raw grey values): ``q``, the
    prediction's quantile at the target's pore fraction (voxels below ``threshold``), is moved onto
    ``threshold``; the pore level (median target grey value of the pores) and the solid level (the
    solids') stay fixed, values between them are stretched linearly, values outside are unchanged.
    So on the training pair, the prediction thresholded at ``threshold`` has exactly the target's
    pore fraction; everywhere else the same map is applied (element-wise: tiles stay exact).

    Parameters
    ----------
    prediction, target
        Raw grey values of the network's prediction and of the target (HR), same shape.
    threshold
        The pore threshold (default: :func:`~tomoflow.recover.pores.threshold_from_reference` of the
        target: Otsu, the pore protocol's).
    mask
        Voxels to fit on (default all).

    Returns
    -------
    dict or None
        ``threshold``, ``from`` (``q``), ``pore_level``, ``solid_level``, ``pore_fraction`` (target),
        ``pore_fraction_before`` (prediction), ``voxels``, ``method``; None when the target has no
        pores or no solid at the threshold, or ``q`` is not strictly between the two levels (nothing
        sensible to map).
    """
    from tomoflow.recover.pores import threshold_from_reference

    pred = np.asarray(prediction, dtype=np.float64)
    tgt = np.asarray(target, dtype=np.float64)
    if pred.shape != tgt.shape:
        raise InputError(f"prediction and target shapes differ: {pred.shape} and {tgt.shape}", dataset="prediction")
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        pred, tgt = pred[m], tgt[m]
    pred, tgt = pred.ravel(), tgt.ravel()
    if threshold is None:
        thr = float(threshold_from_reference(tgt.reshape(-1, 1, 1), name="target"))
    else:
        thr = float(threshold)
    pore = tgt < thr
    if pore.all() or not pore.any():
        return None
    fraction = float(pore.mean())
    q = float(np.quantile(pred, fraction))
    lo, hi = float(np.median(tgt[pore])), float(np.median(tgt[~pore]))
    if not (lo < q < hi and lo < thr < hi):
        return None
    return {
        "threshold": thr,
        "from": q,
        "pore_level": lo,
        "solid_level": hi,
        "pore_fraction": fraction,
        "pore_fraction_before": float(np.mean(pred < thr)),
        "voxels": int(tgt.size),
        "method": "piecewise-linear grey-value map through (pore_level, pore_level), (from, threshold), "
        "(solid_level, solid_level), identity outside; from = the prediction's quantile at the "
        "target's pore fraction (tomoflow.recover.calibration.fit_calibration)",
    }


def calibration_of(card_or_model: Any) -> tuple[float, float, float, float] | None:
    """``(pore_level, from, threshold, solid_level)`` of a card's (or a loaded network's) calibration,
    or None (no calibration: a card written without it, or by an older tomoflow).

    Raises
    ------
    InputError
        A ``calibration`` entry that is not four finite, increasing levels.
    """
    card = card_or_model if isinstance(card_or_model, dict) else (getattr(card_or_model, "card", None) or {})
    cal = card.get("calibration")
    if cal is None:
        return None
    try:
        knots = tuple(float(cal[k]) for k in ("pore_level", "from", "threshold", "solid_level"))
    except (KeyError, TypeError, ValueError):
        raise InputError(
            f"model card calibration must hold numbers pore_level, from, threshold, solid_level; got {cal!r}"
        ) from None
    lo, q, thr, hi = knots
    if not (all(math.isfinite(v) for v in knots) and lo < q < hi and lo < thr < hi):
        raise InputError(
            f"model card calibration needs finite levels with pore_level < from, threshold < solid_level; got {cal!r}"
        )
    return lo, q, thr, hi


def apply_calibration(values: Any, calibration: tuple[float, float, float, float]) -> Any:
    """The calibration map (:func:`fit_calibration`) of ``(pore_level, from, threshold, solid_level)``
    applied element-wise to a NumPy array or torch tensor (clamps only: it exports to ONNX)."""
    lo, q, thr, hi = (float(v) for v in calibration)
    s1 = (thr - lo) / (q - lo) - 1.0
    s2 = (hi - thr) / (hi - q) - 1.0
    if isinstance(values, np.ndarray):
        return (values + s1 * (np.clip(values, lo, q) - lo) + s2 * (np.clip(values, q, hi) - q)).astype(values.dtype)
    return values + s1 * (values.clamp(lo, q) - lo) + s2 * (values.clamp(q, hi) - q)
