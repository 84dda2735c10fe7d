"""Per-sample training of the resolution-recovery 3D U-Net (Andrew et al., ZEISS).

One sample, two scans: a large-field (LFOV) volume and a high-resolution (HR) region of interest
inside it. After registration the LFOV is resampled onto the HR voxel grid
(:func:`tomoflow.register.resample.resample_to_grid`), which gives the training pair over the ROI:
``input`` (LFOV on the HR grid) and ``target`` (HR), same shape. :func:`train_recovery` trains a
:func:`~tomoflow.recover.unet.build_unet` network on that pair; the network then runs over the whole
(resampled) LFOV volume (:func:`~tomoflow.recover.tiling.predict_tiled`,
:func:`tomoflow.pipeline.recover.recover_volume`).

**Normalisation** (:func:`normalisation_from`, stored in the model card as ``card["normalisation"]``):
one global affine map computed from the training *input* only: ``scale`` = its 99.5th minus 0.5th
percentile, ``offset`` = its mean after clipping to that range; applied identically to input and
target (``x_n = (x - offset) / scale``). One map for both keeps the residual network's identity
meaningful (a perfect LFOV would need a zero correction); taking it from the input only means that
inference, which has no HR data, computes nothing: it reads the two numbers from the card. Centring
on the mean (rather than mapping the percentiles to 0 and 1) matters: the first convolutions then see
zero-mean patches, and on simulated pairs the validation loss fell about three times as far in the
same number of steps.
Inference (the contract): ``y = undo_normalisation(model(apply_normalisation(x, card)), card)``,
element-wise on each box read, so tiled inference stays exact (:func:`with_normalisation` packs it into
one module that keeps the network's ``config``, usable by :func:`~tomoflow.recover.tiling.predict_tiled`
as is). A card without ``normalisation`` (a network saved by hand) means the identity.

**Split** (:func:`plan_split`): the volume is cut into spatial blocks on the grid of
:func:`~tomoflow.recover.tiling.plan_tiles` (block ``ceil(n / g)`` per axis): octants ``(2, 2, 2)``, or
4 slabs across the longest axis when a patch does not fit beside a held-out octant; ``max(1,
round(val_fraction * n_blocks))`` blocks, drawn from ``seed``, are held out. Training patches are drawn
uniformly among the corners whose patch box does not overlap any held-out block (:meth:`Split.sample`),
so no target voxel of a held-out block is ever trained on. Validation predicts the held-out blocks
exactly as inference does (``predict_tiled`` with the split's block size, ``pad_mode="reflect"``,
context from the input around them), so the validation numbers are those of the shipped inference.

**Training** (:func:`train_recovery`): random patches (default 32³, batch 4), each augmented by
:func:`augment_pair` (random flip of each axis, random axis permutation, one random gain and offset
applied identically to input and target in normalised space: the blur and resampling are linear, so
the transformed target is still the right answer for the transformed input, and the network learns a
correction that does not depend on the absolute grey level); L1 loss (robust to the residual
misregistration and HR noise, and less prone than MSE to the over-smoothed "mean" answer; optionally
plus a pore term, ``pore_weight``, that rewards putting each voxel on the right side of the pore
protocol's threshold); Adam with a
cosine decay to ``lr * lr_final`` (over the epochs or the time limit, as the jitter network's
training); the residual head starts at zero, so training starts from the identity (the LFOV
itself; ``val_l1_input`` in the card); early stopping on the validation L1, best weights kept; a
checkpoint every epoch (safetensors + JSON, never pickle) that ``resume=True`` continues exactly (the
random patches of epoch ``e`` come from ``(seed, e)``). Written: ``recover_unet.safetensors`` and
``recover_unet.json`` (the model card, :func:`~tomoflow.recover.unet.save_unet`) and ``checkpoint/``.

**Calibration** (:func:`fit_calibration`, ``card["calibration"]``, on by default: ``calibrate``): a
network trained voxel by voxel answers, for a voxel it is unsure of, what that voxel most likely is;
thin cracks and pores smaller than an LFOV voxel are unsure everywhere, so they come out a little
above the pore threshold and the recovered porosity falls short of HR's (by 0.9-1.7 percentage points
on held-out simulated samples, with the best grey values). After training, one monotone,
piecewise-linear grey-value map is fitted on the whole training pair so that the prediction has the
target's pore fraction at the pore protocol's threshold (Otsu of the target); it leaves the pore and
solid levels and everything outside them unchanged. :func:`with_normalisation` applies it after the
normalisation (``calibrated=False``: the network alone); it is element-wise, so tiles stay exact, and
it exports to ONNX. The card's held-out metrics are the network's; ``metrics["held_out"]["calibrated"]``
and ``["pore_fraction"]`` give the calibrated prediction's.

**ONNX** (:func:`export_onnx`, :func:`check_onnx`; optional: ``pip install 'tomoflow[onnx]'``): the
network traced with dynamic batch and spatial axes; the spatial sizes given to the ONNX graph must be
multiples of the network's :func:`~tomoflow.recover.unet.alignment` (the tiled inference's boxes
always are: the graph has no padding branch).

torch is imported lazily: importing this module never imports it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tomoflow._checks import check_choice, check_int, check_number
from tomoflow.align.training import (
    CHECKPOINT_STATE,
    ProgressCallback,
    _load_checkpoint,
    _save_checkpoint,
)
from tomoflow.errors import ConfigError, InputError
from tomoflow.recover.tiling import read_box
from tomoflow.nn import cosine_lr, load_optimizer, resolve_device
from tomoflow.recover.unet import UNetConfig, alignment, build_unet, receptive_field, save_unet

__all__ = [
    "WEIGHTS_NAME",
    "CARD_NAME",
    "NORMALISATION_PERCENTILES",
    "normalisation_from",
    "normalisation_of",
    "apply_normalisation",
    "undo_normalisation",
    "with_normalisation",
    "fit_calibration",
    "calibration_of",
    "apply_calibration",
    "Split",
    "plan_split",
    "augment_pair",
    "TrainResult",
    "train_recovery",
    "held_out_metrics",
    "export_onnx",
    "check_onnx",
    "ProgressCallback",
]

log = logging.getLogger(__name__)

WEIGHTS_NAME = "recover_unet.safetensors"
"""File name of the trained weights in the output folder (the card is ``recover_unet.json``)."""

CARD_NAME = "recover_unet.json"

NORMALISATION_PERCENTILES = (0.5, 99.5)
"""Percentiles of the training input whose distance is the normalisation scale (:func:`normalisation_from`)."""

SPLITS = ("auto", "octants", "slabs")
PAD_MODE = "reflect"  # the border rule of validation (and the one the card tells inference to use)


# ----------------------------------------------------------------------------- normalisation
def normalisation_from(inp: Any) -> dict[str, Any]:
    """The global intensity normalisation of a training pair, from its input (module docstring).

    Parameters
    ----------
    inp
        The training input (LFOV on the HR grid), any shape, finite.

    Returns
    -------
    dict
        ``{"offset", "scale", "percentiles", "method", "formula"}``: what goes into
        ``card["normalisation"]``.

    Raises
    ------
    InputError
        The input is (nearly) constant: nothing to normalise by.
    """
    a = np.asarray(inp, dtype=np.float32)
    lo, hi = (float(v) for v in np.percentile(a, NORMALISATION_PERCENTILES))
    scale = hi - lo
    if not (math.isfinite(scale) and scale > 0 and scale > 1e-6 * max(abs(lo), abs(hi))):
        raise InputError(f"the input volume is constant (its {NORMALISATION_PERCENTILES[0]}th and "
                         f"{NORMALISATION_PERCENTILES[1]}th percentiles are {lo:g} and {hi:g}): nothing to learn from",
                         dataset="input")
    offset = float(np.mean(np.clip(a, lo, hi), dtype=np.float64))
    return {"offset": offset, "scale": scale, "percentiles": list(NORMALISATION_PERCENTILES),
            "method": "offset = mean of the input clipped to its percentile range; scale = the range's width",
            "formula": "x_n = (x - offset) / scale on input and target; prediction = y_n * scale + offset"}


def normalisation_of(card_or_model: Any) -> tuple[float, float]:
    """``(offset, scale)`` from a model card (dict), its ``"normalisation"`` entry, or a network with a
    ``card`` attribute (:func:`~tomoflow.recover.unet.load_unet`). No ``normalisation`` entry: the
    identity ``(0.0, 1.0)`` (a network saved by hand, not by :func:`train_recovery`).

    Raises
    ------
    InputError
        A ``normalisation`` entry without a finite ``offset`` and a finite, positive ``scale``.
    """
    card = card_or_model
    if not isinstance(card, dict):
        card = getattr(card_or_model, "card", None) or {}
    norm = card.get("normalisation", card if "scale" in card and "offset" in card else None)
    if norm is None:
        return 0.0, 1.0
    try:
        offset, scale = float(norm["offset"]), float(norm["scale"])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"model card normalisation must hold numbers 'offset' and 'scale', got {norm!r}") from None
    if not (math.isfinite(offset) and math.isfinite(scale) and scale > 0):
        raise InputError(f"model card normalisation needs a finite offset and a positive scale, got {norm!r}")
    return offset, scale


def apply_normalisation(volume: Any, card: Any) -> Any:
    """``(volume - offset) / scale`` with the card's normalisation (:func:`normalisation_of`).

    A torch tensor stays a tensor (its dtype and device); anything else becomes a float32 NumPy array.
    Element-wise, so it commutes with reading boxes and with ``"reflect"`` border extension; apply it to
    every box the network sees, after reading it.
    """
    offset, scale = normalisation_of(card)
    if hasattr(volume, "detach"):  # torch tensor
        return (volume - offset) / scale
    a = np.asarray(volume, dtype=np.float32)
    return ((a - np.float32(offset)) / np.float32(scale)).astype(np.float32, copy=False)


def undo_normalisation(volume: Any, card: Any) -> Any:
    """``volume * scale + offset``: the network's output back in the input's units (inverse of
    :func:`apply_normalisation`)."""
    offset, scale = normalisation_of(card)
    if hasattr(volume, "detach"):
        return volume * scale + offset
    a = np.asarray(volume, dtype=np.float32)
    return (a * np.float32(scale) + np.float32(offset)).astype(np.float32, copy=False)


_NORM_CLASS: Any = None


def _normalised_class() -> Any:
    global _NORM_CLASS
    if _NORM_CLASS is not None:
        return _NORM_CLASS
    import torch
    from torch import nn

    class NormalisedUNet(nn.Module):
        """A U-Net with its card's normalisation around it: raw volume in, raw volume out.

        ``config`` (and ``card``) are the wrapped network's, so tiled inference sees the same receptive
        field and alignment. The normalisation is element-wise: tiles stay exact.
        """

        def __init__(self, net: Any, offset: float, scale: float,
                     calibration: tuple[float, float, float, float] | None = None) -> None:
            super().__init__()
            self.net = net
            self.config = getattr(net, "config", None)
            self.card = getattr(net, "card", {})
            self.offset, self.scale = float(offset), float(scale)
            self.calibration = calibration

        def forward(self, x: torch.Tensor, valid: bool = False) -> torch.Tensor:
            # ``valid``: the wrapped network's valid evaluation (tomoflow.recover.unet.valid_region)
            y = self.net((x - self.offset) / self.scale, valid=valid) * self.scale + self.offset
            return y if self.calibration is None else apply_calibration(y, self.calibration)

    _NORM_CLASS = NormalisedUNet
    return _NORM_CLASS


def with_normalisation(net: Any, card: Any = None, *, calibrated: bool = True) -> Any:
    """``net`` wrapped so that it takes and returns raw grey values: ``undo(net(apply(x)))`` with the
    normalisation of ``card`` (default ``net.card``; none: the identity), followed by the card's
    output calibration (:func:`fit_calibration`) if it has one and ``calibrated``.

    ``with_normalisation(load_unet(path))`` is the network inference runs: a ``torch.nn.Module`` whose
    ``config`` and ``card`` are the wrapped network's, so :func:`~tomoflow.recover.tiling.predict_tiled`,
    :func:`~tomoflow.recover.tiling.predict_volume` and :func:`export_onnx` accept it as it is. Both
    maps are element-wise: tiles stay exact.
    """
    offset, scale = normalisation_of(net if card is None else card)
    calibration = calibration_of(net if card is None else card) if calibrated else None
    wrapped = _normalised_class()(net, offset, scale, calibration)
    if isinstance(card, dict):
        wrapped.card = card
    return wrapped


# ----------------------------------------------------------------------------- output calibration
def fit_calibration(prediction: np.ndarray, target: np.ndarray, *, threshold: float | None = None,
                    mask: np.ndarray | None = None) -> dict[str, Any] | None:
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
    return {"threshold": thr, "from": q, "pore_level": lo, "solid_level": hi, "pore_fraction": fraction,
            "pore_fraction_before": float(np.mean(pred < thr)), "voxels": int(tgt.size),
            "method": "piecewise-linear grey-value map through (pore_level, pore_level), (from, threshold), "
                      "(solid_level, solid_level), identity outside; from = the prediction's quantile at the "
                      "target's pore fraction (tomoflow.recover.training.fit_calibration)"}


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
        raise InputError(f"model card calibration must hold numbers pore_level, from, threshold, solid_level; "
                         f"got {cal!r}") from None
    lo, q, thr, hi = knots
    if not (all(math.isfinite(v) for v in knots) and lo < q < hi and lo < thr < hi):
        raise InputError(f"model card calibration needs finite levels with pore_level < from, threshold < "
                         f"solid_level; got {cal!r}")
    return knots


def apply_calibration(values: Any, calibration: tuple[float, float, float, float]) -> Any:
    """The calibration map (:func:`fit_calibration`) of ``(pore_level, from, threshold, solid_level)``
    applied element-wise to a NumPy array or torch tensor (clamps only: it exports to ONNX)."""
    lo, q, thr, hi = (float(v) for v in calibration)
    s1 = (thr - lo) / (q - lo) - 1.0
    s2 = (hi - thr) / (hi - q) - 1.0
    if isinstance(values, np.ndarray):
        return (values + s1 * (np.clip(values, lo, q) - lo) + s2 * (np.clip(values, q, hi) - q)).astype(values.dtype)
    return values + s1 * (values.clamp(lo, q) - lo) + s2 * (values.clamp(q, hi) - q)


# ----------------------------------------------------------------------------- split and patches
@dataclass
class Split:
    """Spatial blocks of the training volume, some held out for validation (:func:`plan_split`).

    Attributes
    ----------
    shape
        Volume shape ``(z, y, x)``.
    kind
        ``"octants"`` or ``"slabs"``.
    block
        Block size per axis (voxels); block ``k`` of an axis is ``[k * block, min((k + 1) * block, n))``,
        the tiles of :func:`~tomoflow.recover.tiling.plan_tiles` with this block.
    grid
        Number of blocks per axis.
    held_out
        Block indices ``(iz, iy, ix)`` of the validation blocks.
    patch
        Training patch edge (voxels).
    """

    shape: tuple[int, int, int]
    kind: str
    block: tuple[int, int, int]
    grid: tuple[int, int, int]
    held_out: tuple[tuple[int, int, int], ...]
    patch: int
    _corners: np.ndarray | None = field(default=None, repr=False, compare=False)

    def box(self, index: Sequence[int]) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """``(start, stop)`` of block ``index``."""
        start = tuple(int(i) * b for i, b in zip(index, self.block))
        stop = tuple(min(s + b, n) for s, b, n in zip(start, self.block, self.shape))
        return start, stop  # type: ignore[return-value]

    @property
    def held_out_boxes(self) -> list[tuple[tuple[int, int, int], tuple[int, int, int]]]:
        return [self.box(i) for i in self.held_out]

    @property
    def held_out_mask(self) -> np.ndarray:
        """Boolean volume, True on held-out voxels."""
        m = np.zeros(self.shape, dtype=bool)
        for a, b in self.held_out_boxes:
            m[tuple(slice(s, e) for s, e in zip(a, b))] = True
        return m

    def corner_mask(self) -> np.ndarray:
        """Boolean ``(n - patch + 1)`` per axis: True where a patch with that corner overlaps no
        held-out block."""
        p = self.patch
        ok = np.ones(tuple(n - p + 1 for n in self.shape), dtype=bool)
        for a, b in self.held_out_boxes:
            # the patch [c, c + p) overlaps [a, b) on an axis iff a - p < c < b; on all axes: overlap
            sl = tuple(slice(max(s - p + 1, 0), max(e, 0)) for s, e in zip(a, b))
            ok[sl] = False
        return ok

    @property
    def n_positions(self) -> int:
        """Number of training patch positions."""
        return int(self._valid().size)

    def _valid(self) -> np.ndarray:
        if self._corners is None:
            self._corners = np.flatnonzero(self.corner_mask())
        return self._corners

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``(n, 3)`` patch corners drawn uniformly among those overlapping no held-out block."""
        valid = self._valid()
        if valid.size == 0:
            raise ConfigError(f"no {self.patch}-voxel patch fits beside the held-out blocks of a "
                              f"{'x'.join(map(str, self.shape))} volume; use a smaller patch")
        flat = valid[rng.integers(0, valid.size, size=int(n))]
        return np.stack(np.unravel_index(flat, tuple(s - self.patch + 1 for s in self.shape)), axis=1)

    def to_dict(self) -> dict[str, Any]:
        held = int(self.held_out_mask.sum())
        total = int(np.prod(self.shape))
        return {"kind": self.kind, "grid": list(self.grid), "block": list(self.block),
                "held_out": [list(i) for i in self.held_out],
                "held_out_boxes": [[list(a), list(b)] for a, b in self.held_out_boxes],
                "val_voxels": held, "train_voxels": total - held, "train_patch_positions": self.n_positions,
                "rule": "training patches overlap no held-out block; validation = whole held-out blocks, "
                        "predicted as at inference (predict_tiled, reflect border, input context around them)"}


def _grid_split(shape: tuple[int, int, int], kind: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    if kind == "octants":
        want = (2, 2, 2)
    else:
        ax = int(np.argmax(shape))
        want = tuple(4 if k == ax else 1 for k in range(3))
    block = tuple(max(1, math.ceil(n / g)) for n, g in zip(shape, want))
    grid = tuple(math.ceil(n / b) for n, b in zip(shape, block))
    return block, grid  # type: ignore[return-value]


def plan_split(shape: Sequence[int], patch: int, *, kind: str = "auto", val_fraction: float = 0.125,
               seed: int = 0) -> Split:
    """Spatial train/validation split of a ``shape`` volume for ``patch``-voxel training patches.

    Parameters
    ----------
    shape
        ``(z, y, x)``.
    patch
        Training patch edge (voxels).
    kind
        ``"octants"`` (2 x 2 x 2 blocks), ``"slabs"`` (4 across the longest axis) or ``"auto"``: octants
        when a patch fits beside the held-out octants, else slabs.
    val_fraction
        Fraction of the blocks held out: ``max(1, round(val_fraction * n_blocks))``, fewer than all.
    seed
        Which blocks are held out: a random order of the blocks drawn from ``seed``; the first
        ``n_val`` unless no patch fits beside them, then the next ``n_val`` (cyclically), and so on.

    Raises
    ------
    ConfigError
        Bad kind or fraction, or no patch fits beside the held-out blocks.
    """
    shp = tuple(int(s) for s in shape)
    if len(shp) != 3 or min(shp) < 1:
        raise ConfigError(f"shape must be three positive sizes (z, y, x), got {tuple(shape)}")
    patch = check_int("patch", patch, low=1)
    kind = check_choice("split", kind, SPLITS)
    val_fraction = check_number("val_fraction", val_fraction, low=0.0, high=0.5, low_open=True)
    if patch > min(shp):
        raise InputError(f"the volume {'x'.join(map(str, shp))} is smaller than a training patch of {patch} voxels "
                         "on some axis; use a smaller patch", dataset="input")
    split = None
    for k in (("octants", "slabs") if kind == "auto" else (kind,)):
        block, grid = _grid_split(shp, k)  # type: ignore[arg-type]
        blocks = [tuple(int(v) for v in i) for i in np.ndindex(*grid)]
        n_val = max(1, int(round(val_fraction * len(blocks))))
        if n_val >= len(blocks):
            continue
        order = np.random.default_rng([int(seed), 11]).permutation(len(blocks))
        for shift in range(len(blocks)):  # the seed's choice, else the next that leaves room for a patch
            held = tuple(sorted(blocks[order[(shift + j) % len(blocks)]] for j in range(n_val)))
            split = Split(shape=shp, kind=k, block=block, grid=grid, held_out=held,  # type: ignore[arg-type]
                          patch=patch)
            if split.n_positions > 0:
                return split
    raise ConfigError(f"no {patch}-voxel training patch fits beside the held-out "
                      f"{split.kind if split else kind} of a {'x'.join(map(str, shp))} volume; use a smaller patch "
                      "(or a larger region of interest)")


def augment_pair(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, *, flips: bool = True,
                 permute: bool = True, gain: tuple[float, float] = (0.9, 1.1),
                 offset: tuple[float, float] = (-0.05, 0.05)) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """The same random flips, axis permutation, gain and offset applied to an (input, target) patch.

    Parameters
    ----------
    x, y
        ``(z, y, x)`` input and target patches (normalised), same shape.
    rng
        Random generator.
    flips
        Flip each axis with probability 1/2.
    permute
        Permute the axes at random (6 orders; the HR grid is isotropic).
    gain, offset
        Ranges of the uniform random gain and offset (normalised units); ``(1, 1)`` and ``(0, 0)`` turn
        them off. ``x' = gain * T(x) + offset``, ``y' = gain * T(y) + offset``.

    Returns
    -------
    x, y, info
        Contiguous float32 patches and the drawn ``{"perm", "flip", "gain", "offset"}``.
    """
    perm = tuple(int(v) for v in rng.permutation(3)) if permute else (0, 1, 2)
    flip = tuple(bool(v) for v in rng.random(3) < 0.5) if flips else (False, False, False)
    g = float(rng.uniform(*gain)) if gain[0] != gain[1] else float(gain[0])
    b = float(rng.uniform(*offset)) if offset[0] != offset[1] else float(offset[0])
    sl = tuple(slice(None, None, -1) if f else slice(None) for f in flip)

    def one(a: np.ndarray) -> np.ndarray:
        a = np.transpose(a, perm)[sl]
        return np.ascontiguousarray(np.float32(g) * a + np.float32(b), dtype=np.float32)

    return one(x), one(y), {"perm": list(perm), "flip": list(flip), "gain": g, "offset": b}


# ----------------------------------------------------------------------------- metrics
def _ssim(ref: np.ndarray, img: np.ndarray, data_range: float) -> float | None:
    from skimage.metrics import structural_similarity

    m = min(ref.shape)
    win = min(7, m if m % 2 else m - 1)
    if win < 3:
        return None
    return float(structural_similarity(ref, img, data_range=data_range, win_size=win))


def held_out_metrics(pred: np.ndarray, inp: np.ndarray, target: np.ndarray, split: Split,
                     data_range: float) -> dict[str, Any]:
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

    return {"psnr_input_db": psnr(sq_in), "psnr_prediction_db": psnr(sq_pred), "ssim_input": mean(ss_in),
            "ssim_prediction": mean(ss_pred), "rmse_input": math.sqrt(sq_in / max(n, 1)),
            "rmse_prediction": math.sqrt(sq_pred / max(n, 1)), "data_range": float(data_range), "n_voxels": int(n),
            "units": "the volumes' grey values; PSNR against the target's max - min"}


def _predict_held_out(model: Any, inp_n: np.ndarray, split: Split, device: Any) -> np.ndarray:
    """The held-out blocks predicted exactly as inference does (elsewhere: the input copied)."""
    from tomoflow.recover.tiling import predict_tiled

    held = set(split.held_out)
    return predict_tiled(model, inp_n, block=split.block, device=str(device.type), pad_mode=PAD_MODE,
                         skip=lambda t: tuple(t.index) not in held)


def _l1_held_out(pred_n: np.ndarray, tgt_n: np.ndarray, split: Split) -> float:
    tot, n = 0.0, 0
    for a, b in split.held_out_boxes:
        sl = tuple(slice(s, e) for s, e in zip(a, b))
        d = np.abs(pred_n[sl].astype(np.float64) - tgt_n[sl])
        tot += float(d.sum())
        n += d.size
    return tot / max(n, 1)


def _val_loss(pred_n: np.ndarray, tgt_n: np.ndarray, split: Split, pore_term: dict[str, Any] | None,
              pore_weight: float) -> tuple[float, float]:
    """``(loss, l1)`` on the held-out blocks: the training loss (L1, plus the weighted pore term when
    there is one), which selects the best weights, and the L1 alone."""
    l1 = _l1_held_out(pred_n, tgt_n, split)
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


# ----------------------------------------------------------------------------- training
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
        :func:`with_normalisation` to run it on raw volumes.
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
    def normalisation(self) -> dict[str, Any]:
        return self.card["normalisation"]

    @property
    def best_epoch(self) -> int:
        return int(self.card["training"]["best_epoch"])


PORE_WIDTH = 0.1
"""Width of the pore term's soft threshold, as a fraction of the gap between mean solid and mean pore."""


def _pore_term(target_n: np.ndarray, split: Split) -> dict[str, float]:
    """Threshold (Otsu, the pore protocol's) and soft width of the training target, normalised units,
    from the voxels not held out."""
    from tomoflow.recover.pores import threshold_from_reference

    train = ~split.held_out_mask
    values = target_n[train]
    thr = threshold_from_reference(target_n, mask=train, name="target")
    pore, solid = values[values < thr], values[values >= thr]
    gap = float(solid.mean() - pore.mean()) if pore.size and solid.size else 0.0
    if not gap > 0:
        raise InputError("the training target has no pore and solid classes to separate (pore_weight needs "
                         "both)", dataset="target")
    return {"threshold": thr, "width": PORE_WIDTH * gap, "method": "otsu on the target's training voxels",
            "pore_fraction": float(pore.size / values.size)}


def _check_pair(inp: Any, target: Any) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(inp, dtype=np.float32)
    y = np.asarray(target, dtype=np.float32)
    if x.ndim != 3:
        raise InputError(f"the input must be a 3-D (z, y, x) volume, got shape {x.shape}", dataset="input")
    if y.shape != x.shape:
        raise InputError(f"input and target shapes differ: {x.shape} and {y.shape}; resample the LFOV onto the HR "
                         "grid first (tomoflow.register.resample.resample_to_grid)", dataset="target")
    for name, a in (("input", x), ("target", y)):
        if not np.all(np.isfinite(a)):
            raise InputError(f"the {name} volume contains NaN or Inf ({int(np.sum(~np.isfinite(a)))} voxels); "
                             "crop or repair it before training", dataset=name)
    return x, y


def _sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _train_config(**kw: Any) -> dict[str, Any]:
    return json.loads(json.dumps(kw))


def train_recovery(
    inp: Any,
    target: Any,
    *,
    out_dir: str | os.PathLike,
    config: UNetConfig | None = None,
    patch: int = 32,
    context: int = 0,
    batch: int = 4,
    epochs: int = 20,
    steps_per_epoch: int = 16,
    lr: float = 1e-3,
    lr_final: float = 0.05,
    val_fraction: float = 0.125,
    split: str = "auto",
    patience: int = 4,
    seed: int = 0,
    time_limit_s: float | None = None,
    threads: int | None = None,
    device: str = "auto",
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

    Parameters
    ----------
    inp, target
        ``(z, y, x)`` input (the LFOV resampled onto the HR grid) and target (HR), same shape, finite.
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
        Most epochs, and optimisation steps per epoch (one validation per epoch).
    lr, lr_final
        Adam learning rate, decayed (cosine, every step) to ``lr * lr_final`` at the last epoch or the
        time limit, whichever comes first.
    val_fraction, split
        Held-out fraction of the spatial blocks and the block layout (:func:`plan_split`).
    patience
        Stop after this many epochs without a better validation L1.
    seed
        Seed of the split, the initial weights, the patches and the augmentation.
    time_limit_s
        Stop (as early stopping does) once training has taken this long (wall seconds, summed over
        resumed runs).
    threads
        torch CPU threads (default torch's choice); set for the whole process.
    device
        ``"cpu"``, ``"cuda"`` or ``"auto"``.
    resume
        Continue from ``out_dir/checkpoint`` when there is one (it must have been made with the same
        pair and parameters; ``epochs`` and ``time_limit_s`` may change); False starts over.
    overwrite
        Replace weights and a card that tomoflow wrote into ``out_dir`` for another training (files
        tomoflow did not write are never replaced; a resumed run of the same training rewrites its own).
    augment
        Random flips, axis permutations, gain and offset (:func:`augment_pair`); False: none.
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
        After training, fit the output calibration (:func:`fit_calibration`) on the whole training
        pair and store it in the card (``card["calibration"]``; :func:`with_normalisation` applies
        it): the prediction then has the target's pore fraction at the pore protocol's threshold.
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
    config = UNetConfig() if config is None else config
    if not isinstance(config, UNetConfig):
        raise ConfigError(f"config must be a UNetConfig, got {type(config).__name__}")
    if config.in_channels != 1 or config.out_channels != 1:
        raise ConfigError(f"resolution recovery maps one volume to one: the network has {config.in_channels} input "
                          f"and {config.out_channels} output channels")
    x_raw, y_raw = _check_pair(inp, target)
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
    if time_limit_s is not None:
        time_limit_s = check_number("time_limit_s", time_limit_s, low=0.0, low_open=True)
    sp = plan_split(x_raw.shape, patch, kind=split, val_fraction=val_fraction, seed=seed)
    if min(sp.block) < a:
        raise ConfigError(f"the split's blocks {sp.block} are smaller than the network's alignment {a}; "
                          "use a larger volume or fewer levels")
    norm = normalisation_from(x_raw)
    x_n, y_n = apply_normalisation(x_raw, norm), apply_normalisation(y_raw, norm)
    dev = resolve_device(device)
    if threads is not None:
        torch.set_num_threads(check_int("threads", threads, low=1))
    out = Path(out_dir)
    ckpt = out / "checkpoint"
    aug = {"flips": bool(augment), "permute": bool(augment), "gain": [0.9, 1.1] if augment else [1.0, 1.0],
           "offset": [-0.05, 0.05] if augment else [0.0, 0.0]}
    train_cfg = _train_config(
        input_sha256=_sha(x_raw), target_sha256=_sha(y_raw), config=config.to_dict(), patch=patch,
        **({"context": context} if context else {}), batch=batch,
        steps_per_epoch=steps_per_epoch, lr=lr, lr_final=lr_final, val_fraction=val_fraction, split=sp.kind,
        seed=seed, augmentation=aug)
    pore_weight = check_number("pore_weight", pore_weight, low=0.0)
    pore_term = _pore_term(y_n, sp) if pore_weight > 0 else None
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
        from tomoflow.recover.unet import load_unet

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
        resumed = _load_checkpoint(ckpt)  # the state names the tensors and holds their sha256
        saved = {k: v for k, v in (resumed[0].get("config") or {}).items()}
        if saved != train_cfg:
            diff = sorted(k for k in set(saved) | set(train_cfg) if saved.get(k) != train_cfg.get(k))
            raise ConfigError(f"the checkpoint in {ckpt} was made with other data or training parameters "
                              f"({', '.join(diff)}); use another output folder or start over")
    # ---- every file this training writes, checked by the file policy before any work
    from tomoflow.align.training import CHECKPOINT_STATE as _STATE
    from tomoflow.align.training import CHECKPOINT_TENSORS as _TENSORS
    from tomoflow.io.output import fingerprint as digest
    from tomoflow.io.output import plan_files
    from tomoflow.weights.card import card_path

    # the training's identity, as its checkpoint's (a resumed run, longer or not, is the same training)
    train_fp = digest("train-recovery", inputs={}, params={**train_cfg, "calibrate": calibrate})
    renew = [f"checkpoint/{_TENSORS}", f"checkpoint/{_STATE}"]
    read = [init_weights, card_path(Path(init_weights))] if init_weights is not None else []
    plan_files(out, {WEIGHTS_NAME: "model-weights", CARD_NAME: "model-card",
                     **{n: "recovery-checkpoint" for n in renew}},
               fingerprint=train_fp, overwrite=overwrite, renew=renew, inputs=read)
    out.mkdir(parents=True, exist_ok=True)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    identity_l1 = _l1_held_out(x_n, y_n, sp)
    first_epoch, best_epoch, bad, history, train_s = 1, 0, 0, [], 0.0
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if resumed is not None:
        info, tensors = resumed
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        best_state = {k[5:]: v.to(dev) for k, v in tensors.items() if k.startswith("best.")}
        load_optimizer(opt, {k: v.to(dev) for k, v in tensors.items() if k.startswith("opt.")})
        first_epoch = int(info["epoch"]) + 1
        best_val, best_epoch, bad = float(info["best_val_l1"]), int(info["best_epoch"]), int(info["bad_epochs"])
        history, train_s = list(info["history"]), float(info.get("train_s", 0.0))
        start_val = float(info["start_val_l1"])
        start_l1 = float(info.get("start_l1", start_val))
        log.info("resuming after epoch %d (best validation L1 %.4g)", first_epoch - 1, best_val)
    else:  # epoch 0: the starting network competes too (a zero head is the identity: never worse than the input)
        zero_head = init_weights is None and config.residual
        start_pred = x_n if zero_head else _predict_held_out(model, x_n, sp, dev)
        start_val, start_l1 = _val_loss(start_pred, y_n, sp, pore_term, pore_weight)
        del start_pred
        best_val = start_val
        if progress is not None:
            progress(0, 0, steps_per_epoch, None, start_val)
    stopped = "epochs"
    if first_epoch > 1 and (bad >= patience or (time_limit_s is not None and train_s >= time_limit_s)):
        first_epoch = epochs + 1
        stopped = "resumed finished run"

    n_steps = steps_per_epoch
    for epoch in range(first_epoch, epochs + 1):
        t_ep = time.perf_counter()
        rng = np.random.default_rng([seed, epoch])
        model.train()
        run_loss, run_n = 0.0, 0
        for step in range(n_steps):
            done = ((epoch - 1) * n_steps + step) / (epochs * n_steps)
            if time_limit_s is not None:
                done = max(done, (train_s + time.perf_counter() - t_ep) / time_limit_s)
            for g in opt.param_groups:
                g["lr"] = cosine_lr(done, lr, lr_final)
            xb = np.empty((batch, 1) + (patch + 2 * context,) * 3, dtype=np.float32)
            yb = np.empty((batch, 1, patch, patch, patch), dtype=np.float32)
            gains = np.ones((batch, 2), dtype=np.float32)  # per patch: gain, offset of its augmentation
            gains[:, 1] = 0.0
            for i, c in enumerate(sp.sample(batch, rng)):
                sl = tuple(slice(int(s), int(s) + patch) for s in c)
                xi = x_n[sl] if not context else read_box(x_n, c - context, c + patch + context, PAD_MODE)
                if augment:
                    xb[i, 0], yb[i, 0], drawn = augment_pair(xi, y_n[sl], rng)
                    gains[i] = drawn["gain"], drawn["offset"]
                else:
                    xb[i, 0], yb[i, 0] = xi, y_n[sl]
            xt, yt = torch.from_numpy(xb).to(dev), torch.from_numpy(yb).to(dev)
            opt.zero_grad(set_to_none=True)
            core = (Ellipsis,) + (slice(context, context + patch),) * 3
            pred = model(xt)[core]
            l1 = torch.mean(torch.abs(pred - yt))
            loss = l1
            if pore_term is not None:
                g = torch.from_numpy(gains).to(dev).view(batch, 2, 1, 1, 1, 1)
                thr = g[:, 0] * pore_term["threshold"] + g[:, 1]
                width = g[:, 0] * pore_term["width"]
                loss = l1 + pore_weight * torch.nn.functional.binary_cross_entropy_with_logits(
                    (thr - pred) / width, (yt < thr).to(pred.dtype))
            loss.backward()
            opt.step()
            run_loss += float(l1.detach())
            run_n += 1
            if progress is not None and (step + 1) % 4 == 0 and step + 1 < n_steps:
                progress(epoch, step + 1, n_steps, run_loss / run_n, None)
            if time_limit_s is not None and train_s + time.perf_counter() - t_ep >= time_limit_s:
                break
        train_loss = run_loss / max(run_n, 1)
        val, val_l1 = _val_loss(_predict_held_out(model, x_n, sp, dev), y_n, sp, pore_term, pore_weight)
        train_s += time.perf_counter() - t_ep
        if val < best_val:
            best_val, best_epoch, bad = val, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
        history.append({"epoch": epoch, "lr": opt.param_groups[0]["lr"], "train_l1": train_loss, "val_l1": val_l1,
                        **({"val_loss": val} if pore_term is not None else {}),
                        "steps": run_n, "seconds": time.perf_counter() - t_ep})
        log.info("epoch %d: train L1 %.4f, validation L1 %.4f (identity %.4f), loss %.4f%s", epoch, train_loss,
                 val_l1, identity_l1, val, " *" if best_epoch == epoch else "")
        _save_checkpoint(ckpt, model, best_state, opt, {
            "epoch": epoch, "best_val_l1": best_val, "best_epoch": best_epoch, "bad_epochs": bad,
            "history": history, "train_s": train_s, "start_val_l1": start_val, "start_l1": start_l1,
            "config": train_cfg}, kind="recovery-checkpoint")
        if progress is not None:
            progress(epoch, n_steps, n_steps, train_loss, val)
        if bad >= patience:
            stopped = "early stopping"
            break
        if time_limit_s is not None and train_s >= time_limit_s:
            stopped = "time limit"
            break

    # ---- outputs: best weights, held-out metrics, card
    model.load_state_dict(best_state)
    model.eval()
    pred_n = _predict_held_out(model, x_n, sp, dev)
    final_l1 = _l1_held_out(pred_n, y_n, sp)
    pred = undo_normalisation(pred_n, norm)
    metrics = held_out_metrics(pred, x_raw, y_raw, sp, float(y_raw.max() - y_raw.min()))
    metrics.update({"val_l1": final_l1, "val_l1_input": identity_l1,
                    "val_l1_units": "normalised grey values, (x - offset) / scale"})
    calibration, calibration_note = None, "not requested (calibrate=False)"
    if calibrate:
        calibration, calibration_note, fractions, calibrated = _calibrate(model, x_n, y_raw, norm, sp, dev)
        if calibration is not None:
            metrics["pore_fraction"] = fractions
            after = held_out_metrics(calibrated, x_raw, y_raw, sp, float(y_raw.max() - y_raw.min()))
            metrics["calibrated"] = {k: after[k] for k in ("psnr_prediction_db", "ssim_prediction") if k in after}
    card = {
        "name": "tomoflow resolution-recovery 3D U-Net (per-sample)",
        "input_size": [patch, patch, patch],
        "normalisation": dict(norm, pad_mode=PAD_MODE),
        "inference": "y = undo_normalisation(net(apply_normalisation(x))) on the LFOV resampled onto the HR grid "
                     f"(tomoflow.recover.training.with_normalisation); pad_mode {PAD_MODE!r}, halo >= "
                     f"{receptive_field(config)} voxels",
        "training_data": {
            "input": "LFOV volume resampled onto the HR grid (registration matrix HR -> LFOV)",
            "target": "HR region-of-interest volume",
            "shape": list(x_raw.shape), "hr_voxel_um": hr_voxel_um, "lfov_voxel_um": lfov_voxel_um,
            "input_sha256": train_cfg["input_sha256"], "target_sha256": train_cfg["target_sha256"],
            "patch": [patch] * 3, "context": context, "batch": batch, "steps_per_epoch": steps_per_epoch,
            "augmentation": dict(aug, note="same flips, permutation, gain and offset on input and target, "
                                 "normalised space"),
            "split": sp.to_dict(), "seed": seed, "source": source,
        },
        "training": {
            "optimizer": "Adam", "lr": lr,
            "lr_schedule": f"cosine per step to {lr_final} x lr over {epochs} epochs"
            + (f" or {time_limit_s:g} s of training, whichever first" if time_limit_s else ""),
            "loss": "L1 (mean absolute error), normalised units"
            + (f" + {pore_weight:g} x pore term (binary cross-entropy of a soft threshold at "
               f"{pore_term['threshold']:.4g}, width {pore_term['width']:.4g}, against the target's pores)"
               if pore_term is not None else ""),
            "pore_term": None if pore_term is None else {"weight": pore_weight, **pore_term},
            "epochs_run": len(history), "max_epochs": epochs,
            "start_val_l1": start_l1, **({"start_val_loss": start_val} if pore_term is not None else {}),
            "best_epoch": best_epoch, "patience": patience, "stopped_by": stopped,
            "initialized_from": init_info,
            "device": str(dev), "threads": torch.get_num_threads(), "torch": torch.__version__, "history": history,
        },
        "metrics": {"held_out": metrics},
        "calibration": calibration,
        **({"calibration_note": calibration_note} if calibration is None else {}),
        "seed": seed,
        "command": command,
        "timing": {"training_s": train_s, "total_s": time.perf_counter() - t_start},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    weights = out / WEIGHTS_NAME
    card = save_unet(model, config, weights, card=card, fingerprint=train_fp)
    model.card = card
    return TrainResult(weights=weights, card_path=out / CARD_NAME, card=card, model=model, history=history, split=sp)


def _calibrate(model: Any, x_n: np.ndarray, y_raw: np.ndarray, norm: dict[str, Any], split: Split,
               device: Any) -> tuple[dict[str, Any] | None, str, dict[str, Any] | None, np.ndarray | None]:
    """``(calibration, note, held-out pore fractions, calibrated prediction)`` of a trained network on its
    whole training pair (raw grey values)."""
    from tomoflow.recover.tiling import predict_tiled

    pred = undo_normalisation(predict_tiled(model, x_n, block=split.block, device=str(device.type),
                                            pad_mode=PAD_MODE), norm)
    try:
        cal = fit_calibration(pred, y_raw)
    except InputError as exc:  # a constant target: no threshold
        return None, f"not fitted: {exc}", None, None
    if cal is None:
        return None, "not fitted: the target has no pore and solid classes at its threshold", None, None
    cal["fitted_on"] = "the whole training pair (every voxel of the region of interest)"
    held = split.held_out_mask
    calibrated = apply_calibration(pred, calibration_of({"calibration": cal}))  # type: ignore[arg-type]
    fractions = {"threshold": cal["threshold"], "target": float(np.mean(y_raw[held] < cal["threshold"])),
                 "prediction": float(np.mean(pred[held] < cal["threshold"])),
                 "calibrated": float(np.mean(calibrated[held] < cal["threshold"]))}
    return cal, "", fractions, calibrated


# ----------------------------------------------------------------------------- ONNX
def export_onnx(model: Any, path: str | os.PathLike, *, patch_shape: Sequence[int] = (32, 32, 32),
                dynamic: bool = True, opset: int = 17) -> Path:
    """Export the network (or a :func:`with_normalisation` wrapper) to ONNX.

    Parameters
    ----------
    model
        A network from :func:`~tomoflow.recover.unet.build_unet` / :func:`~tomoflow.recover.unet.load_unet`,
        or one wrapped by :func:`with_normalisation` (the graph then takes and returns raw values).
    path
        The ``.onnx`` file to write. Its model card ``<name>.json`` beside it records the export (file,
        sha256, values), which loading requires (:func:`tomoflow.weights.card.verified_model`): the
        network's card there (``recover_unet.json`` of a training folder) is updated; none there: one is
        written from ``model.card``. A card of another network there is refused.
    patch_shape
        ``(z, y, x)`` of the example input traced; multiples of the network's alignment.
    dynamic
        Dynamic batch and spatial axes (input ``"volume"``, output ``"recovered"``, both
        ``(n, 1, z, y, x)``). Spatial sizes fed to the graph must be multiples of the alignment.
        The file's metadata records the network's configuration, whether it takes raw values (a
        :func:`with_normalisation` network: the one to deploy) and the training voxel size, so that
        :func:`tomoflow.recover.onnx_network.load_onnx` runs it in tiled inference.
    opset
        ONNX opset.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ConfigError
        The ``onnx`` package is missing (``pip install 'tomoflow[onnx]'``), a bad ``patch_shape``, or a
        file beside ``path`` that is not this network's card.
    """
    import torch

    if importlib.util.find_spec("onnx") is None:  # torch's exporter needs it
        raise ConfigError("ONNX export needs the onnx package: pip install 'tomoflow[onnx]'") from None
    shp = tuple(check_int(f"patch_shape[{i}]", s, low=1) for i, s in enumerate(patch_shape))
    if len(shp) != 3:
        raise ConfigError(f"patch_shape must be (z, y, x), got {tuple(patch_shape)}")
    a = alignment(model) if getattr(model, "config", None) is not None else 1
    if any(s % a for s in shp):
        raise ConfigError(f"patch_shape {shp} must be multiples of the network's alignment {a}")
    path = Path(path)
    card_file, base = _onnx_card_base(path, model)  # checked before anything is written
    params = list(model.parameters())
    p0 = params[0] if params else torch.zeros(())
    was_training = bool(model.training)
    model.eval()
    x = torch.zeros((1, 1, *shp), dtype=p0.dtype, device=p0.device)
    axes = {0: "n", 2: "z", 3: "y", 4: "x"}
    kwargs: dict[str, Any] = {"input_names": ["volume"], "output_names": ["recovered"], "opset_version": int(opset)}
    if dynamic:
        kwargs["dynamic_axes"] = {"volume": axes, "recovered": axes}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript exporter: needs onnx only, not onnxscript
    from tomoflow.io.output import plan_file

    plan_file(path, kind="model-onnx", overwrite=True)  # never a file tomoflow did not write, never in a store
    tmp = path.with_name(path.name + ".tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about the Python-side shape arithmetic
            torch.onnx.export(model, (x,), str(tmp), **kwargs)
        _add_onnx_metadata(tmp, model)
        card = _onnx_card(base, path, tmp, model, opset)
        os.replace(tmp, path)
        _write_json(card_file, card)  # after the file: a crash between leaves an export its card refuses
    finally:
        model.train(was_training)
        if tmp.exists():
            tmp.unlink()
    return path


def _onnx_card_base(path: Path, model: Any) -> tuple[Path, dict[str, Any]]:
    """The card the export of ``model`` to ``path`` goes into, and what it starts from.

    The card beside the ``.onnx`` (``<name>.json``, :func:`tomoflow.weights.card.card_path`) records the
    export (``card["onnx"]``: file, sha256, values), so the export passes the load gate. An existing
    card there is updated only when it is this network's (same weights sha256: the training folder's
    ``recover_unet.json``) or an earlier export's own card of this file; any other file is refused.
    No card there: the network's own card (``model.card``) is the start.
    """
    from tomoflow.weights.card import card_path, read_card

    card_file = card_path(path)
    own = dict(getattr(model, "card", None) or {})
    if card_file.exists():
        try:
            existing = read_card(card_file, path)
        except InputError as exc:
            raise ConfigError(f"{card_file}: the card of the export would replace a file that is not a model card "
                              f"({exc.problem}); export under another name") from None
        same_net = bool(own.get("sha256")) and existing.get("sha256") == own.get("sha256")
        own_export = existing.get("format") == "onnx" and (existing.get("onnx") or {}).get("file") == path.name
        if not (same_net or own_export):
            raise ConfigError(f"{card_file}: the model card of another network is there; export beside this "
                              "network's own card or under another name")
        return card_file, dict(existing) if same_net else own
    return card_file, own


def _onnx_card(base: dict[str, Any], path: Path, onnx_file: Path, model: Any, opset: int) -> dict[str, Any]:
    """``base`` with the export recorded (and, when it describes no safetensors weights, the export
    as its weights: ``format`` 'onnx')."""
    from tomoflow._hashing import file_sha256
    from tomoflow.weights.card import card_path, validate_card
    from tomoflow.recover.unet import architecture

    sha = file_sha256(onnx_file)
    card = dict(base)
    if not card.get("sha256") or card.get("format") == "onnx" or not card.get("weights"):
        card.update({"format": "onnx", "weights": path.name, "sha256": sha})
    config = getattr(model, "config", None)
    if isinstance(config, UNetConfig) and not card.get("architecture"):
        card["architecture"] = architecture(config)
    card.setdefault("name", "tomoflow resolution-recovery 3D U-Net")
    from tomoflow.io.output import STAMP_KEY, file_stamp

    card.setdefault(STAMP_KEY, file_stamp("model-card"))
    card["onnx"] = {"file": path.name, "sha256": sha, "opset": int(opset),
                    "values": "raw" if isinstance(model, _normalised_class()) else "normalised"}
    validate_card(card, card_path(path))
    return card


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    from tomoflow.io.output import stamped_json

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(stamped_json(doc, indent=1, default=float))  # keeps the card's kind and fingerprint
    os.replace(tmp, path)


def _add_onnx_metadata(path: Path, model: Any) -> None:
    """What tiled inference needs to run the graph (:mod:`tomoflow.recover.onnx_network`)."""
    import onnx

    from tomoflow.recover.onnx_network import META_CONFIG, META_HR_VOXEL, META_VALUES

    config = getattr(model, "config", None)
    if not isinstance(config, UNetConfig):
        return
    card = getattr(model, "card", None) or {}
    hr_um = (card.get("training_data") or {}).get("hr_voxel_um")
    g = onnx.load(str(path))
    for key, value in ((META_CONFIG, json.dumps(config.to_dict())),
                       (META_VALUES, "raw" if isinstance(model, _normalised_class()) else "normalised"),
                       (META_HR_VOXEL, "" if hr_um is None else repr(float(hr_um)))):
        entry = g.metadata_props.add()
        entry.key, entry.value = key, value
    from tomoflow.io.output import STAMP_KEY, file_stamp

    entry = g.metadata_props.add()  # the file policy's stamp: tomoflow wrote this export
    entry.key, entry.value = STAMP_KEY, json.dumps(file_stamp("model-onnx"))
    onnx.save(g, str(path))


def check_onnx(path: str | os.PathLike, model: Any, x: Any, *, rtol: float = 1e-4) -> dict[str, Any]:
    """Run the ONNX file with onnxruntime (CPU) and compare with ``model`` on the same input.

    Parameters
    ----------
    path
        The ``.onnx`` file (:func:`export_onnx`).
    model
        The torch network it was exported from.
    x
        Input ``(n, 1, z, y, x)`` or ``(z, y, x)`` (NumPy or torch), sizes multiples of the alignment.
    rtol
        Tolerance on the largest absolute difference relative to the largest absolute torch output.

    Returns
    -------
    dict
        ``max_abs_diff``, ``max_abs_output``, ``relative``, ``ok`` (``relative <= rtol``).

    Raises
    ------
    ConfigError
        onnxruntime is not installed.
    """
    import torch

    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError("checking an ONNX export needs onnxruntime: pip install 'tomoflow[onnx]'") from None
    arr = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    arr = arr.astype(np.float32)
    if arr.ndim == 3:
        arr = arr[None, None]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: arr})[0]
    params = list(model.parameters())
    dev = params[0].device if params else torch.device("cpu")
    was_training = bool(model.training)
    model.eval()
    try:
        with torch.inference_mode():
            want = model(torch.from_numpy(arr).to(dev)).float().cpu().numpy()
    finally:
        model.train(was_training)
    diff = float(np.abs(got - want).max())
    ref = float(np.abs(want).max())
    rel = diff / ref if ref > 0 else diff
    return {"max_abs_diff": diff, "max_abs_output": ref, "relative": rel, "ok": bool(rel <= rtol)}

