"""The global intensity normalization of the resolution-recovery network (used in training and at inference).

**Normalisation** (:func:`normalization_from`, stored in the model card as ``card["normalisation"]``):
one global affine map computed from the training *input* only: ``scale`` = its 99.5th minus 0.5th
percentile, ``offset`` = its mean after clipping to that range; applied identically to input and
target (``x_n = (x - offset) / scale``). One map for both keeps the residual network's identity
meaningful (a perfect LFOV would need a zero correction); taking it from the input only means that
inference, which has no HR data, computes nothing: it reads the two numbers from the card. Centring
on the mean (rather than mapping the percentiles to 0 and 1) matters: the first convolutions then see
zero-mean patches, and on simulated pairs the validation loss fell about three times as far in the
same number of steps.
Inference (the contract): ``y = undo_normalization(model(apply_normalization(x, card)), card)``,
element-wise on each box read, so tiled inference stays exact (:func:`with_normalization` packs it into
one module that keeps the network's ``config``, usable by :func:`~tomoflow.recover.tiling.predict_tiled`
as is). A card without ``normalisation`` (a network saved by hand) means the identity.

torch is imported lazily: importing this module never imports it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tomoflow.errors import InputError
from tomoflow.recover.calibration import apply_calibration, calibration_of

__all__ = [
    "NORMALIZATION_PERCENTILES",
    "normalization_from",
    "normalization_of",
    "apply_normalization",
    "undo_normalization",
    "with_normalization",
    "is_normalized",
]

NORMALIZATION_PERCENTILES = (0.5, 99.5)
"""Percentiles of the training input whose distance is the normalisation scale (:func:`normalization_from`)."""


def normalization_from(inp: Any) -> dict[str, Any]:
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
    lo, hi = (float(v) for v in np.percentile(a, NORMALIZATION_PERCENTILES))
    scale = hi - lo
    if not (math.isfinite(scale) and scale > 0 and scale > 1e-6 * max(abs(lo), abs(hi))):
        raise InputError(
            f"the input volume is constant (its {NORMALIZATION_PERCENTILES[0]}th and "
            f"{NORMALIZATION_PERCENTILES[1]}th percentiles are {lo:g} and {hi:g}): nothing to learn from",
            dataset="input",
        )
    offset = float(np.mean(np.clip(a, lo, hi), dtype=np.float64))
    return {
        "offset": offset,
        "scale": scale,
        "percentiles": list(NORMALIZATION_PERCENTILES),
        "method": "offset = mean of the input clipped to its percentile range; scale = the range's width",
        "formula": "x_n = (x - offset) / scale on input and target; prediction = y_n * scale + offset",
    }


def normalization_of(card_or_model: Any) -> tuple[float, float]:
    """``(offset, scale)`` from a model card (dict), its ``"normalisation"`` entry, or a network with a
    ``card`` attribute (:func:`~tomoflow.recover.unet.load_unet`). No ``normalisation`` entry: the
    identity ``(0.0, 1.0)`` (a network saved by hand, not by :func:`~tomoflow.train.recovery.train_recovery`).

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


def apply_normalization(volume: Any, card: Any) -> Any:
    """``(volume - offset) / scale`` with the card's normalisation (:func:`normalization_of`).

    A torch tensor stays a tensor (its dtype and device); anything else becomes a float32 NumPy array.
    Element-wise, so it commutes with reading boxes and with ``"reflect"`` border extension; apply it to
    every box the network sees, after reading it.
    """
    offset, scale = normalization_of(card)
    if hasattr(volume, "detach"):  # torch tensor
        return (volume - offset) / scale
    a = np.asarray(volume, dtype=np.float32)
    return ((a - np.float32(offset)) / np.float32(scale)).astype(np.float32, copy=False)


def undo_normalization(volume: Any, card: Any) -> Any:
    """``volume * scale + offset``: the network's output back in the input's units (inverse of
    :func:`apply_normalization`)."""
    offset, scale = normalization_of(card)
    if hasattr(volume, "detach"):
        return volume * scale + offset
    a = np.asarray(volume, dtype=np.float32)
    return (a * np.float32(scale) + np.float32(offset)).astype(np.float32, copy=False)


_NORM_CLASS: Any = None


def _normalized_class() -> Any:
    global _NORM_CLASS
    if _NORM_CLASS is not None:
        return _NORM_CLASS
    import torch
    from torch import nn

    class NormalizedUNet(nn.Module):
        """A U-Net with its card's normalisation around it: raw volume in, raw volume out.

        ``config`` (and ``card``) are the wrapped network's, so tiled inference sees the same receptive
        field and alignment. The normalisation is element-wise: tiles stay exact.
        """

        def __init__(
            self, net: Any, offset: float, scale: float, calibration: tuple[float, float, float, float] | None = None
        ) -> None:
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

    _NORM_CLASS = NormalizedUNet
    return _NORM_CLASS


def with_normalization(net: Any, card: Any = None, *, calibrated: bool = True) -> Any:
    """``net`` wrapped so that it takes and returns raw grey values: ``undo(net(apply(x)))`` with the
    normalisation of ``card`` (default ``net.card``; none: the identity), followed by the card's
    output calibration (:func:`~tomoflow.recover.calibration.fit_calibration`) if it has one and ``calibrated``.

    ``with_normalization(load_unet(path))`` is the network inference runs: a ``torch.nn.Module`` whose
    ``config`` and ``card`` are the wrapped network's, so :func:`~tomoflow.recover.tiling.predict_tiled`,
    :func:`~tomoflow.recover.tiling.predict_volume` and :func:`~tomoflow.train.onnx_export.export_onnx`
    accept it as it is. Both maps are element-wise: tiles stay exact.
    """
    offset, scale = normalization_of(net if card is None else card)
    calibration = calibration_of(net if card is None else card) if calibrated else None
    wrapped = _normalized_class()(net, offset, scale, calibration)
    if isinstance(card, dict):
        wrapped.card = card
    return wrapped


def is_normalized(net: Any) -> bool:
    """Is ``net`` a :func:`with_normalization` wrapper (raw grey values in and out)?"""
    return isinstance(net, _normalized_class())
