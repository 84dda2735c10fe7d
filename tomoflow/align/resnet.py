"""The ResNet jitter aligner of Fu et al. (J. Synchrotron Rad. 2021), batch-invariant.

Each measured projection is read next to the reprojection of an MLEM reconstruction of the jittered
scan (:func:`tomoflow.align.reproject.reproject`) as one 2-channel image; the network regresses the
jitter ``(dy, dx)`` of the measured projection relative to the reprojection, in pixels, with the sign
convention of docs/architecture.md (``+dx``: the measured content sits at larger column index; correction
shifts by ``(-dy, -dx)``).

Architecture (as published): stem conv 7x7 stride 2 (2 -> 64) + BatchNorm + ReLU, max-pool 3x3/2,
three stages of two basic residual blocks with 64, 128 and 256 channels (the first block of every
stage has stride 2 and a 1x1 convolution + BatchNorm projection shortcut), adaptive average pool,
linear 256 -> 2: 13 convolution layers (plus 3 shortcut projections), 2,784,386 parameters
(2.78 M, BatchNorm affine parameters included).

What differs from the published code, so that a pair's estimate never depends on its batch:

- **Per-pair normalisation** (:func:`normalize_pairs`): both channels of a pair are centred and scaled
  with the *same* statistics, the mean and standard deviation of that pair's reprojection (the clean
  channel: salt-and-pepper outliers of the measured projection do not move them), so the relative
  intensity of projection and reprojection is kept; values are then clipped to ``+-CLIP`` so zingers
  and dead pixels cannot dominate. (The published code min-max normalised over the whole batch.)
- **Eval-mode inference**: BatchNorm uses its running statistics, under ``torch.no_grad``. (The
  published code left BatchNorm in training mode.)

Input size strategy: the network always sees ``INPUT_SIZE x INPUT_SIZE`` (160 x 160, as the paper).
A projection of any other size or aspect ratio (e.g. 135 x 160, 256 x 256, 64 x 512) is resampled to
it with anti-aliased bilinear interpolation (:func:`torch.nn.functional.interpolate`,
``antialias=True``: area-like averaging when shrinking, bilinear when enlarging), and the predicted
shifts, which are in network pixels, are scaled back per axis (``dy * rows / 160``,
``dx * cols / 160``). The resnet method goes one step further and reconstructs in that network space
(:func:`to_input_size`, :mod:`tomoflow.align.hybrid`), so that its reprojections are made at the
resolution the network reads. The precision is that of a 160-pixel image, which the hybrid method
refines at full resolution. Projections smaller than :data:`MIN_SIZE` pixels on an
axis are refused (:class:`~tomoflow.errors.InputError`).

Weights are stored as safetensors (never unpickled) next to a model card JSON that records their
sha256, checked on load (:func:`load_aligner`). torch is imported lazily (:func:`build_network`) so
importing tomoflow never imports torch.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tomoflow._checks import check_finite, check_int
from tomoflow.backend import is_cupy, to_numpy
from tomoflow.errors import InputError
from tomoflow.nn import resolve_device

__all__ = [
    "INPUT_SIZE",
    "MIN_SIZE",
    "CLIP",
    "ARCHITECTURE",
    "NORMALIZATION",
    "WEIGHTS_NAME",
    "CARD_NAME",
    "CHECK_NAME",
    "build_network",
    "normalize_pairs",
    "prepare_pairs",
    "JitterAligner",
    "load_aligner",
    "load_state_into",
    "default_weights_path",
]

log = logging.getLogger(__name__)

INPUT_SIZE = 160
"""Rows and columns of the network input (the paper's 160 x 160)."""

MIN_SIZE = 32
"""Smallest projection (rows or columns) the aligner accepts."""

CLIP = 8.0
"""Normalised input values are clipped to ``[-CLIP, CLIP]`` (zingers, dead pixels)."""

STAGES = (64, 128, 256)
"""Channels of the three residual stages."""

WEIGHTS_NAME = "jitter_resnet.safetensors"
CARD_NAME = "jitter_resnet.json"
CHECK_NAME = "jitter_resnet_check.safetensors"
"""File names of the shipped weights, their model card and the tiny held-out check set."""

ARCHITECTURE: dict[str, Any] = {
    "name": "JitterResNet",
    "reference": "Fu et al., J. Synchrotron Rad. 28 (2021), ResNet jitter regression",
    "input": "2 channels (measured projection, MLEM reprojection), 160 x 160",
    "stem": "conv 7x7 stride 2 (2 -> 64, no bias) + BatchNorm + ReLU, max-pool 3x3 stride 2 padding 1",
    "stages": [
        {"channels": c, "blocks": 2, "first_stride": 2, "shortcut": "conv 1x1 stride 2 + BatchNorm"} for c in STAGES
    ],
    "block": "basic: conv 3x3 + BN + ReLU, conv 3x3 + BN, add shortcut, ReLU",
    "head": "adaptive average pool 1x1, linear 256 -> 2 (dy, dx in network pixels)",
    "conv_layers": 13,
    "parameters": 2784386,
    "input_size": [INPUT_SIZE, INPUT_SIZE],
}
"""Description of the network recorded in every model card."""

NORMALIZATION: dict[str, Any] = {
    "per": "pair (batch-invariant)",
    "center": "mean of the pair's reprojection (after resampling to the input size)",
    "scale": "standard deviation of the pair's reprojection (floor 1e-6 + 1e-3 * max |reprojection|)",
    "applied_to": "both channels, same statistics",
    "clip": CLIP,
    "resampling": "torch.nn.functional.interpolate bilinear, antialias=True, align_corners=False; "
    "shifts scaled back by (rows / 160, cols / 160)",
}
"""Description of the input normalisation recorded in every model card."""


# ----------------------------------------------------------------------------- network
def build_network() -> Any:
    """A fresh, randomly initialised :class:`JitterResNet` (``torch.nn.Module``)."""
    return _network_class()()


_CLASS: Any = None


def _network_class() -> Any:
    """Define the torch classes on first use (torch imported lazily)."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        """Two 3x3 convolutions with BatchNorm and an identity or 1x1-projection shortcut."""

        def __init__(self, c_in: int, c_out: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(c_out)
            self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(c_out)
            self.relu = nn.ReLU(inplace=True)
            self.shortcut: nn.Module = nn.Identity()
            if stride != 1 or c_in != c_out:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
                )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + self.shortcut(x))

    class JitterResNet(nn.Module):
        """The published jitter-regression ResNet; input ``(n, 2, 160, 160)``, output ``(n, 2)``.

        ``forward`` expects *normalised* pairs (:func:`normalize_pairs`); use
        :meth:`JitterAligner.predict` for raw projections of any size.
        """

        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(2, STAGES[0], 7, stride=2, padding=3, bias=False),
                nn.BatchNorm2d(STAGES[0]),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, stride=2, padding=1),
            )
            layers = []
            c_in = STAGES[0]
            for c in STAGES:
                layers.append(nn.Sequential(BasicBlock(c_in, c, 2), BasicBlock(c, c, 1)))
                c_in = c
            self.stages = nn.Sequential(*layers)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(STAGES[-1], 2)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            # start each block as (nearly) the identity: stabler training (He et al., Goyal et al.)
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stages(self.stem(x))
            return self.fc(torch.flatten(self.pool(x), 1))

    _CLASS = JitterResNet
    return _CLASS


# ----------------------------------------------------------------------------- preprocessing
def normalize_pairs(x: Any) -> Any:
    """Per-pair normalisation of ``(n, 2, h, w)`` torch pairs (measured, reprojection).

    Both channels of pair ``i`` become ``(x - m_i) / s_i`` clipped to ``[-CLIP, CLIP]``, where
    ``m_i`` and ``s_i`` are the mean and standard deviation of pair ``i``'s reprojection (channel 1),
    ``s_i`` floored at ``1e-6 + 1e-3 * max |reprojection|``. Each pair depends on itself only.
    """
    import torch

    rep = x[:, 1:2].to(torch.float64)
    m = rep.mean(dim=(2, 3), keepdim=True)
    s = rep.std(dim=(2, 3), keepdim=True, unbiased=False)
    s = torch.maximum(s, 1e-6 + 1e-3 * rep.abs().amax(dim=(2, 3), keepdim=True))
    out = (x.to(torch.float64) - m) / s
    return out.clamp_(-CLIP, CLIP).to(torch.float32)


def _as_tensor(a: Any, device: Any) -> Any:
    import torch

    if is_cupy(a):
        if device.type == "cuda":
            return torch.as_tensor(a, device=device)
        a = to_numpy(a)
    return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32, device=device)


def _check_pairs(projections: Any, reprojections: Any) -> tuple[Any, Any, bool]:
    """Validate a pair of ``(n, row, col)`` (or single ``(row, col)``) stacks."""
    p_shape = tuple(getattr(projections, "shape", ()))
    r_shape = tuple(getattr(reprojections, "shape", ()))
    if len(p_shape) not in (2, 3):
        raise InputError(
            f"projections must be (angle, row, col) or one (row, col) image, got shape {p_shape}", dataset="projections"
        )
    if p_shape != r_shape:
        raise InputError(
            f"reprojections shape {r_shape} differs from projections shape {p_shape}", dataset="reprojections"
        )
    single = len(p_shape) == 2
    rows, cols = p_shape[-2:]
    if rows < MIN_SIZE or cols < MIN_SIZE:
        raise InputError(
            f"projections of {rows} x {cols} pixels are too small for the ResNet aligner "
            f"(at least {MIN_SIZE} x {MIN_SIZE}); use method='phase' or 'consistency'",
            dataset="projections",
        )
    return projections, reprojections, single


def prepare_pairs(projections: Any, reprojections: Any, *, device: Any = "cpu", normalize: bool = True) -> Any:
    """Stack measured projections and reprojections into network input ``(n, 2, 160, 160)``.

    Resamples any detector size to :data:`INPUT_SIZE` (anti-aliased bilinear) and, with
    ``normalize``, applies :func:`normalize_pairs`. The one preprocessing of training and inference.

    Parameters
    ----------
    projections, reprojections
        ``(n, row, col)`` stacks of the same shape (NumPy, CuPy or torch).
    device
        Torch device of the result.
    normalize
        Apply the per-pair normalisation.

    Returns
    -------
    torch.Tensor
        ``(n, 2, 160, 160)`` float32.
    """
    import torch
    import torch.nn.functional as F

    dev = torch.device(device)
    p = projections if isinstance(projections, torch.Tensor) else _as_tensor(projections, dev)
    r = reprojections if isinstance(reprojections, torch.Tensor) else _as_tensor(reprojections, dev)
    x = torch.stack([p.to(dev, torch.float32), r.to(dev, torch.float32)], dim=1)
    if tuple(x.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
    return normalize_pairs(x) if normalize else x


def to_input_size(stack: Any) -> np.ndarray:
    """Resample an ``(n, row, col)`` stack to the network's ``160 x 160`` (the resampling of
    :func:`prepare_pairs`: anti-aliased bilinear, pixel centres aligned), as float32 NumPy.

    The resnet method reconstructs and reprojects in this *network space* (parallel beam: rows and
    columns scale independently), so the reprojection is made at the resolution the network reads.
    """
    import torch
    import torch.nn.functional as F

    x = _as_tensor(stack, torch.device("cpu")).to(torch.float32)
    if tuple(x.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(
            x[:, None], size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True
        )[:, 0]
    return np.ascontiguousarray(x.numpy(), dtype=np.float32)


def shift_scale(shape: tuple[int, int]) -> np.ndarray:
    """Factors ``(rows / 160, cols / 160)`` from network pixels to detector pixels."""
    return np.array([shape[0] / INPUT_SIZE, shape[1] / INPUT_SIZE], dtype=np.float64)


# ----------------------------------------------------------------------------- weights
def default_weights_path() -> Path:
    """The shipped weights: ``tomoflow/weights/jitter_resnet.safetensors``."""
    return Path(__file__).resolve().parent.parent / "weights" / WEIGHTS_NAME


@dataclass
class JitterAligner:
    """A loaded, eval-mode :class:`JitterResNet` with its model card.

    Attributes
    ----------
    model
        The torch module (eval mode, on ``device``).
    device
        Torch device it runs on.
    card
        The model card (dict); empty for a model not loaded from disk.
    path
        The weights file, if loaded from one.
    """

    model: Any
    device: Any = "cpu"
    card: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def __post_init__(self) -> None:
        import torch

        self.device = torch.device(self.device)
        self.model = self.model.to(self.device).eval()

    def predict(self, projections: Any, reprojections: Any, *, batch_size: int = 64, flips: bool = False) -> np.ndarray:
        """Jitter ``(dy, dx)`` of each measured projection relative to its reprojection, in pixels.

        Parameters
        ----------
        projections
            ``(n, row, col)`` measured line integrals (flat/dark-normalised, ``-log``), or one
            ``(row, col)`` image; NumPy or CuPy (CuPy stays on the GPU when the aligner runs there).
            Any size of at least 32 x 32; resampled to 160 x 160 (see the module docstring).
        reprojections
            Reprojections of the same shape (:func:`tomoflow.align.reproject.reproject`).
        batch_size
            Pairs per forward pass (memory only: the result does not depend on it).
        flips
            Test-time augmentation: also read every pair flipped left-right, up-down and both (the
            training's augmentations), un-flip the predictions and average the four. Four times the
            network time, a lower variance.

        Returns
        -------
        numpy.ndarray
            ``(n, 2)`` float64 ``(dy, dx)`` in detector pixels (``(2,)`` for one image); ``+dx``:
            the measured content sits at larger column index than in the reprojection.
        """
        import torch

        batch_size = check_int("batch_size", batch_size, low=1)
        projections, reprojections, single = _check_pairs(projections, reprojections)
        if single:
            projections, reprojections = projections[None], reprojections[None]
        for a, what in ((projections, "projections"), (reprojections, "reprojections")):
            if isinstance(a, torch.Tensor):
                if not bool(torch.isfinite(a).all()):
                    raise InputError(f"{what} contain NaN or Inf", dataset=what)
            else:
                check_finite(a, what, "repair or mask them before alignment")
        n = int(projections.shape[0])
        out = np.zeros((n, 2), dtype=np.float64)
        self.model.eval()
        with torch.no_grad():
            for i0 in range(0, n, batch_size):
                x = prepare_pairs(
                    projections[i0 : i0 + batch_size], reprojections[i0 : i0 + batch_size], device=self.device
                )
                y = self.model(x).double()
                if flips:
                    sign = torch.tensor([[1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64, device=y.device)
                    for dims, sg in zip(((3,), (2,), (2, 3)), sign):
                        y = y + self.model(torch.flip(x, dims=dims)).double() * sg
                    y = y / 4.0
                out[i0 : i0 + x.shape[0]] = y.cpu().numpy()
        out *= shift_scale(tuple(projections.shape[-2:]))[None, :]
        return out[0] if single else out


def load_aligner(path: str | os.PathLike | None = None, *, device: str | None = None) -> JitterAligner:
    """Load the jitter ResNet from safetensors (never unpickled), checked against its model card.

    Parameters
    ----------
    path
        Weights file; default the shipped ``tomoflow/weights/jitter_resnet.safetensors``. The model
        card is the ``.json`` of the same stem beside it; it must name this file and hold its sha256
        (:func:`tomoflow.weights.card.verified_model`: no card, no load).
    device
        ``"cpu"``, ``"cuda"`` or ``"auto"``; None: the device of :mod:`tomoflow.config`.

    Raises
    ------
    ModelError
        Missing file or card, a card naming another file, sha256 mismatch (an ``InputError``).
    InputError
        Not safetensors, or weights that do not fit the architecture.
    """
    from tomoflow.weights.card import verified_model

    dev = resolve_device(device)
    weights = default_weights_path() if path is None else Path(path)
    if path is None and not weights.is_file():
        raise InputError(
            "no such weights file (the shipped weights are missing: train them with `tomoflow train-aligner`)",
            path=weights,
        )
    card, real = verified_model(weights)
    model = load_state_into(build_network(), real, shown=weights)
    return JitterAligner(model=model, device=dev, card=card, path=weights)


def load_state_into(model: Any, path: Path, *, shown: Path | None = None) -> Any:
    """Load the tensors of a verified JitterResNet safetensors file (:func:`tomoflow.weights.card.verified_model`)
    into ``model`` (strict: every key, every shape); ``shown`` is the path named in errors. Returns ``model``.

    Raises
    ------
    InputError
        Not a readable safetensors file, or tensors that do not fit the JitterResNet.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    shown = path if shown is None else shown
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"not a readable safetensors file: {exc}", path=shown) from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).strip().splitlines()[:3]]
        raise InputError("weights do not fit the JitterResNet architecture: " + " ".join(lines), path=shown) from None
    return model
