"""The 3D U-Net of resolution recovery (Andrew et al., ZEISS): LFOV volume in, high-resolution look out.

A low-resolution, large-field-of-view (LFOV) volume resampled onto the high-resolution grid goes in;
the network predicts the high-resolution (HR) look on the same grid. Volumes are ``(z, y, x)``.

Architecture (:func:`build_unet`, ``L = len(channels)`` levels):

- encoder level ``l`` (``l = 0 .. L-1``, voxel pitch ``2**l``): two 3x3x3 convolutions (padding 1,
  bias) each followed by LeakyReLU(0.01); a 2x2x2 max-pool (stride 2) between levels;
- decoder level ``l = L-2 .. 0``: transposed convolution 2x2x2 stride 2 (``channels[l+1] ->
  channels[l]``), concatenation with the encoder's level-``l`` features (skip), two 3x3x3
  convolutions + LeakyReLU;
- head: 1x1x1 convolution to ``out_channels``; with ``residual`` the input is added (the network
  predicts a correction to the LFOV volume, which trains faster).

There are **no normalisation layers**: every output voxel depends on the input voxels within the
:func:`receptive_field` radius only, never on statistics of the whole tile, so tiled inference
(:mod:`tomoflow.recover.tiling`) reproduces whole-volume inference. Because of the pooling, tiles must
start on multiples of :func:`alignment` (``2**(L-1)`` voxels) relative to the volume origin.

``forward`` accepts any size: an input whose sizes are not multiples of :func:`alignment` is
zero-padded at the high end of each axis to the next multiple and the output cropped back (the tiled
and whole-volume inference never rely on this: they pad explicitly, see
:mod:`~tomoflow.recover.tiling`).

Weights are stored as safetensors (never unpickled) with the :class:`UNetConfig` in the file's
metadata, next to a model card JSON that records their sha256 (:func:`tomoflow.train.files.save_unet`,
:func:`load_unet`). torch is imported lazily, so importing this module never imports torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np

from tomoflow._checks import check_int
from tomoflow.errors import ConfigError, InputError
from tomoflow.nn import resolve_device

__all__ = [
    "WEIGHTS_NAME",
    "CARD_NAME",
    "ARCHITECTURE_NAME",
    "NEGATIVE_SLOPE",
    "UNetConfig",
    "build_unet",
    "receptive_field",
    "alignment",
    "valid_region",
    "inference_bytes",
    "load_unet",
]

WEIGHTS_NAME = "recover_unet.safetensors"
"""File name of the trained weights in the output folder (the card is ``recover_unet.json``)."""

CARD_NAME = "recover_unet.json"

ARCHITECTURE_NAME = "UNet3d"
"""Name of the architecture in the safetensors metadata and the model card."""

NEGATIVE_SLOPE = 0.01
"""Negative slope of the LeakyReLU activations."""


# ----------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class UNetConfig:
    """Hyper-parameters of the 3D U-Net (JSON-serialisable; stored with the weights and in the card).

    Attributes
    ----------
    channels
        Feature channels per level, finest first; ``len(channels)`` levels (``L``), ``L - 1``
        poolings. Default ``(16, 32, 64)``.
    in_channels, out_channels
        Input and output channels (1 for a grey-value volume).
    residual
        Add the input to the output (the network predicts a correction). Needs
        ``in_channels == out_channels``.
    """

    channels: tuple[int, ...] = (16, 32, 64)
    in_channels: int = 1
    out_channels: int = 1
    residual: bool = True

    def __post_init__(self) -> None:
        try:
            chans = tuple(self.channels)
        except TypeError:
            raise ConfigError(f"channels must be a sequence of positive integers, got {self.channels!r}") from None
        if not chans:
            raise ConfigError("channels must name at least one level, got ()")
        chans = tuple(check_int(f"channels[{i}]", c, low=1) for i, c in enumerate(chans))
        object.__setattr__(self, "channels", chans)
        object.__setattr__(self, "in_channels", check_int("in_channels", self.in_channels, low=1))
        object.__setattr__(self, "out_channels", check_int("out_channels", self.out_channels, low=1))
        if not isinstance(self.residual, bool):
            raise ConfigError(f"residual must be True or False, got {self.residual!r}")
        if self.residual and self.in_channels != self.out_channels:
            raise ConfigError(
                f"residual=True needs in_channels == out_channels, got {self.in_channels} and {self.out_channels}"
            )

    @property
    def levels(self) -> int:
        """Number of levels ``L`` (``L - 1`` poolings)."""
        return len(self.channels)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (channels as a list), with the architecture name."""
        d = asdict(self)
        d["channels"] = list(self.channels)
        return {"name": ARCHITECTURE_NAME, **d}

    def to_json(self) -> str:
        """The configuration as a JSON string (:meth:`from_json` inverts it)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UNetConfig:
        """Inverse of :meth:`to_dict`; unknown keys or another architecture name raise ConfigError."""
        if not isinstance(d, dict):
            raise ConfigError(f"a U-Net configuration must be a dict, got {type(d).__name__}")
        d = dict(d)
        name = d.pop("name", ARCHITECTURE_NAME)
        if name != ARCHITECTURE_NAME:
            raise ConfigError(f"configuration is for architecture {name!r}, not {ARCHITECTURE_NAME!r}")
        unknown = sorted(set(d) - {"channels", "in_channels", "out_channels", "residual"})
        if unknown:
            raise ConfigError(f"unknown U-Net configuration keys {unknown}")
        if "channels" in d and isinstance(d["channels"], list | tuple):
            d["channels"] = tuple(d["channels"])
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> UNetConfig:
        """Parse :meth:`to_json` output."""
        try:
            d = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"U-Net configuration is not valid JSON: {exc}") from None
        return cls.from_dict(d)


def _as_config(model_or_config: Any) -> UNetConfig:
    if isinstance(model_or_config, UNetConfig):
        return model_or_config
    cfg = getattr(model_or_config, "config", None)
    if isinstance(cfg, UNetConfig):
        return cfg
    raise ConfigError(
        f"expected a UNetConfig or a network from build_unet, got {type(model_or_config).__name__}; "
        "give halo and alignment explicitly for other networks"
    )


# ----------------------------------------------------------------------------- geometry of the network
def _layers(config: UNetConfig) -> list[tuple[str, int, int]]:
    """The spatial layers in forward order as ``(kind, kernel, level)``.

    ``kind`` is ``"conv"`` (kernel ``k``, padding ``k // 2``), ``"pool"`` (kernel 2, stride 2, into
    ``level + 1``), ``"up"`` (transposed conv kernel 2, stride 2, from ``level + 1`` into ``level``),
    ``"skip"`` (concatenate the encoder's output of ``level``) or ``"head"`` (1x1x1).
    """
    L = config.levels
    out: list[tuple[str, int, int]] = []
    for lvl in range(L):
        if lvl > 0:
            out.append(("pool", 2, lvl - 1))
        out += [("conv", 3, lvl), ("conv", 3, lvl)]
    for lvl in range(L - 2, -1, -1):
        out += [("up", 2, lvl), ("skip", 0, lvl), ("conv", 3, lvl), ("conv", 3, lvl)]
    out.append(("head", 1, 0))
    return out


def receptive_field(model_or_config: Any) -> int:
    """Receptive-field radius of the network, in voxels of the input grid (per axis).

    Every output voxel ``y`` depends only on input voxels ``x`` with ``|x - y| <= radius`` on each
    axis; the bound is reached (for generic weights). Computed by walking :func:`_layers`: each
    feature voxel at level ``l`` stands for its cell of ``2**l`` input voxels, and its dependence on
    the input is that cell grown by ``(left, right)`` extents. A 3x3x3 convolution at level ``l``
    adds ``2**l`` on both sides, a 2x2x2 pool adds nothing (the coarse cell is the union of the two
    fine cells), a stride-2 transposed convolution into level ``l`` adds ``2**l`` on one side (which
    depends on the parity of the output voxel; both are counted), a skip concatenation takes the
    larger extents of its two inputs. Default ``(16, 32, 64)``: 23 voxels; ``L`` levels:
    ``2 * (2**L - 1) + 3 * (2**(L-1) - 1)``.

    Parameters
    ----------
    model_or_config
        A :class:`UNetConfig` or a network from :func:`build_unet`.

    Returns
    -------
    int
        Radius in voxels.
    """
    config = _as_config(model_or_config)
    left = right = 0
    skips: dict[int, tuple[int, int]] = {}
    for kind, k, lvl in _layers(config):
        pitch = 2**lvl
        if kind == "conv":
            left += (k // 2) * pitch
            right += (k // 2) * pitch
        elif kind == "pool":
            skips[lvl] = (left, right)
        elif kind == "up":
            left += pitch
            right += pitch
        elif kind == "skip":
            sl, sr = skips[lvl]
            left, right = max(left, sl), max(right, sr)
    return int(max(left, right))


def alignment(model_or_config: Any) -> int:
    """Down-sampling factor ``2**(L-1)`` of the network (voxels).

    Tiles must start on multiples of it relative to the volume origin, so that every tile pools on the
    same grid as the whole volume.
    """
    return int(2 ** (_as_config(model_or_config).levels - 1))


@dataclass(frozen=True)
class _ValidAxis:
    """Crops of valid evaluation along one axis (:func:`_valid_axis`); slices are tensor-relative."""

    pool: tuple[tuple[int, int], ...]  # before each max-pool, finest first
    up: tuple[tuple[int, int], ...]  # the transposed convolution's output, per decoder level (coarse first)
    skip: tuple[tuple[int, int], ...]  # the encoder features it meets
    out: tuple[int, int]  # the output region, box-relative input voxels [lo, hi)


def _valid_axis(config: UNetConfig, n: int) -> _ValidAxis | None:
    """Walk the layers along one axis of an aligned box of ``n`` voxels without padding.

    Coordinates are box-relative, at each level's pitch; the box starts on the global pooling grid,
    so "even" at level ``l`` is even in the whole volume too. A 3x3x3 convolution drops one voxel per
    side; before a max-pool the features are cut to an even start and stop (the pooling grid of the
    whole volume); a transposed convolution doubles the region; a skip keeps the intersection of its
    two inputs. None when the box is too small to leave any output.
    """
    lo, hi = 0, int(n)
    pool, up, skip = [], [], []
    enc: dict[int, tuple[int, int]] = {}
    for lvl in range(config.levels):
        if lvl > 0:
            a, b = lo + (lo % 2), hi - (hi % 2)
            if b - a < 2:
                return None
            pool.append((a - lo, b - lo))
            lo, hi = a // 2, b // 2
        lo, hi = lo + 2, hi - 2
        if hi <= lo:
            return None
        enc[lvl] = (lo, hi)
    for lvl in range(config.levels - 2, -1, -1):
        ulo, uhi = 2 * lo, 2 * hi
        slo, shi = enc[lvl]
        a, b = max(ulo, slo), min(uhi, shi)
        if b - a < 5:
            return None
        up.append((a - ulo, b - ulo))
        skip.append((a - slo, b - slo))
        lo, hi = a + 2, b - 2
    return _ValidAxis(tuple(pool), tuple(up), tuple(skip), (lo, hi))


def valid_region(model_or_config: Any, box_shape: Sequence[int]) -> tuple[tuple[int, int], ...] | None:
    """The output region that *valid* evaluation (``forward(x, valid=True)``) returns for a box.

    Valid evaluation runs every convolution without padding and cuts the feature maps to the pooling
    grid before each max-pool, so it computes only output voxels whose whole dependence lies inside
    the box: on a box that starts on a multiple of :func:`alignment` (relative to the volume origin)
    they equal the padded network's output on the whole volume, with none of the work the padded
    network spends on voxels the tiling then crops away (about 0.6x the operations of a padded pass
    on a 180³ box of the default network).

    Parameters
    ----------
    model_or_config
        A :class:`UNetConfig` or a network from :func:`build_unet`.
    box_shape
        Input box ``(z, y, x)`` in voxels (any sizes; its start must be aligned).

    Returns
    -------
    tuple of (lo, hi) or None
        Per axis, the box-relative voxel range ``[lo, hi)`` of the output; None when the box is too
        small to leave any (default network: 45 voxels or fewer). ``lo`` never exceeds
        :func:`receptive_field` (22 for the default network, whose radius is 23).
    """
    config = _as_config(model_or_config)
    axes = [_valid_axis(config, int(n)) for n in box_shape]
    if any(a is None for a in axes):
        return None
    return tuple(a.out for a in axes)  # type: ignore[union-attr]


INFERENCE_BYTES_PER_VOXEL_CHANNEL = 16
"""Peak CPU bytes of a forward pass per input voxel and first-level feature channel (float32).

Measured with ``ru_maxrss`` on torch 2.13 CPU, batch 1, after the process's baseline: 13-15.5 bytes
per voxel and channel for ``channels`` (16, 32, 64) at boxes of 96³-180³ and 17.8 for (32, 64, 128)
at 96³ (about 3.5 full-resolution feature maps alive at once: channels-last, no concatenated copy,
activations in place; the straightforward forward pass took 22-24); 16 with the baseline below is an
over-estimate at every size measured."""

INFERENCE_BASELINE_BYTES = 400 * 1024**2
"""Resident memory of a worker process with torch and the network loaded, before any block."""


def inference_bytes(model_or_config: Any, box_shape: Sequence[int], batch: int = 1) -> int:
    """Estimated peak memory (bytes) of a process running the network on input boxes of ``box_shape``.

    ``INFERENCE_BASELINE_BYTES + INFERENCE_BYTES_PER_VOXEL_CHANNEL * channels[0] * batch * prod(box)``:
    an over-estimate on CPU (e.g. 1.91 GB predicted for 180³ boxes of the default network where
    1.44 GB was measured for the forward pass in a fresh process).
    """
    config = _as_config(model_or_config)
    voxels = int(np.prod([int(s) for s in box_shape]))
    return int(INFERENCE_BASELINE_BYTES + INFERENCE_BYTES_PER_VOXEL_CHANNEL * config.channels[0] * batch * voxels)


# ----------------------------------------------------------------------------- network
_CLASS: Any = None


def _network_class() -> Any:
    """Define the torch class on first use (torch imported lazily)."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    import torch
    import torch.nn.functional as F
    from torch import nn

    def double_conv(c_in: int, c_out: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv3d(c_in, c_out, 3, padding=1),
            nn.LeakyReLU(NEGATIVE_SLOPE),
            nn.Conv3d(c_out, c_out, 3, padding=1),
            nn.LeakyReLU(NEGATIVE_SLOPE),
        )

    class UNet3d(nn.Module):
        """3D U-Net without normalisation layers; input ``(n, in_channels, z, y, x)``, output
        ``(n, out_channels, z, y, x)`` (see the module docstring). ``config`` holds its
        :class:`UNetConfig`."""

        def __init__(self, config: UNetConfig) -> None:
            super().__init__()
            self.config = config
            ch = config.channels
            self.encoders = nn.ModuleList()
            c_prev = config.in_channels
            for c in ch:
                self.encoders.append(double_conv(c_prev, c))
                c_prev = c
            self.pool = nn.MaxPool3d(2, stride=2)
            self.ups = nn.ModuleList()
            self.decoders = nn.ModuleList()
            for lvl in range(len(ch) - 2, -1, -1):
                self.ups.append(nn.ConvTranspose3d(ch[lvl + 1], ch[lvl], 2, stride=2))
                self.decoders.append(double_conv(2 * ch[lvl], ch[lvl]))
            self.head = nn.Conv3d(ch[0], config.out_channels, 1)

        def forward(self, x: torch.Tensor, valid: bool = False) -> torch.Tensor:
            """The network on ``x`` ``(n, in_channels, z, y, x)``.

            ``valid=False``: the output has the input's shape (zero padding at every layer).
            ``valid=True``: no padding; the output is the region :func:`valid_region` of the box
            (``x`` must start on the pooling grid of the volume it was cut from)."""
            if x.ndim != 5:
                raise InputError(f"the U-Net takes (n, channel, z, y, x) tensors, got shape {tuple(x.shape)}")
            a = 2 ** (len(self.config.channels) - 1)
            size = tuple(int(s) for s in x.shape[2:])
            inp = x
            plan: list[_ValidAxis] | None = None
            if valid:
                axes = [_valid_axis(self.config, s) for s in size]
                if any(p is None for p in axes):
                    raise InputError(
                        f"an input box of {size} voxels is too small for valid evaluation of this "
                        "network (it leaves no output voxel)"
                    )
                plan = cast("list[_ValidAxis]", axes)  # no None: checked above
                pad = [0, 0, 0]
            else:
                pad = [(-s) % a for s in size]
            if any(pad):  # F.pad lists the last axis first: (x_lo, x_hi, y_lo, y_hi, z_lo, z_hi)
                x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]))
            # channels-last feature maps and weights: oneDNN's convolutions then skip reordering copies
            # (CPU, 128³-180³ boxes: about 0.6x the peak memory and 1.5x the speed; same result)
            cl = not torch.onnx.is_in_onnx_export()
            h = x.contiguous(memory_format=torch.channels_last_3d) if cl else x

            def conv(layer: Any, t: Any, weight: Any = None, bias: Any = True) -> Any:
                w = layer.weight if weight is None else weight
                w = w.contiguous(memory_format=torch.channels_last_3d) if cl else w
                return F.conv3d(t, w, layer.bias if bias is True else bias, padding=0 if valid else layer.padding)

            def cut(t: Any, which: str, i: int) -> Any:  # valid evaluation: the planned crop of a feature map
                if plan is None:
                    return t
                sl = tuple(slice(*getattr(p, which)[i]) for p in plan)
                return t[(slice(None), slice(None)) + sl]

            def block(seq: Any, t: Any) -> Any:  # double_conv (activations in place: fresh conv outputs)
                t = F.leaky_relu(conv(seq[0], t), NEGATIVE_SLOPE, inplace=True)
                return F.leaky_relu(conv(seq[2], t), NEGATIVE_SLOPE, inplace=True)

            skips = []
            for lvl, enc in enumerate(self.encoders):
                if lvl > 0:
                    h = self.pool(cut(h, "pool", lvl - 1))
                h = block(enc, h)
                skips.append(h)
            skips.pop()
            # a ConvTranspose3d and a double_conv Sequential; nn.ModuleList yields them as nn.Module, whose
            # attributes torch types as Tensor | Module (Any, as the layers of conv and block above)
            up: Any
            dec: Any
            for i, (up, dec) in enumerate(zip(self.ups, self.decoders)):
                # dec's first convolution over the concatenation [up(h), skip], computed as the sum of its
                # two halves: the concatenated copy (2 feature maps at full resolution) is never made
                w = up.weight.contiguous(memory_format=torch.channels_last_3d) if cl else up.weight
                u = cut(F.conv_transpose3d(h, w, up.bias, stride=2), "up", i)
                skip = cut(skips.pop(), "skip", i)
                del h
                c = u.shape[1]
                h = conv(dec[0], u, dec[0].weight[:, :c])
                del u
                h = F.leaky_relu(h.add_(conv(dec[0], skip, dec[0].weight[:, c:], None)), NEGATIVE_SLOPE, inplace=True)
                del skip
                h = F.leaky_relu(conv(dec[2], h), NEGATIVE_SLOPE, inplace=True)
            y = conv(self.head, h)
            del h
            y = y.contiguous() if cl else y
            if any(pad):
                y = y[:, :, : size[0], : size[1], : size[2]]
            if self.config.residual:
                if plan is not None:
                    inp = inp[(slice(None), slice(None)) + tuple(slice(*p.out) for p in plan)]
                y = y + inp
            return y

    _CLASS = UNet3d
    return _CLASS


def build_unet(
    *,
    channels: tuple[int, ...] = (16, 32, 64),
    in_channels: int = 1,
    out_channels: int = 1,
    residual: bool = True,
    config: UNetConfig | None = None,
) -> Any:
    """A fresh, randomly initialised 3D U-Net (``torch.nn.Module``, PyTorch default initialisation).

    Parameters
    ----------
    channels
        Feature channels per level, finest first (``len(channels)`` levels).
    in_channels, out_channels
        Input and output channels.
    residual
        Add the input to the output (predict a correction).
    config
        A :class:`UNetConfig` instead of the keywords above (they are then ignored).

    Returns
    -------
    torch.nn.Module
        The network; its ``config`` attribute is the :class:`UNetConfig`.

    Raises
    ------
    ConfigError
        Invalid hyper-parameters.
    """
    if config is None:
        config = UNetConfig(
            channels=tuple(channels) if isinstance(channels, list | tuple) else channels,
            in_channels=in_channels,
            out_channels=out_channels,
            residual=residual,
        )
    elif not isinstance(config, UNetConfig):
        raise ConfigError(f"config must be a UNetConfig, got {type(config).__name__}")
    return _network_class()(config)


def architecture(config: UNetConfig) -> dict[str, Any]:
    """Description of the network recorded in the model card (config, radius, alignment, layers)."""
    return {
        **config.to_dict(),
        "reference": "3D U-Net resolution recovery (Andrew et al., ZEISS); no normalisation layers",
        "levels": config.levels,
        "block": f"2 x (conv 3x3x3 padding 1 + LeakyReLU({NEGATIVE_SLOPE})) per level",
        "down": "max-pool 2x2x2 stride 2",
        "up": "transposed conv 2x2x2 stride 2, concatenate skip",
        "head": "conv 1x1x1" + (" + input (residual)" if config.residual else ""),
        "receptive_field": receptive_field(config),
        "alignment": alignment(config),
    }


# ----------------------------------------------------------------------------- weights
def load_unet(path: str | os.PathLike, *, device: str | None = None) -> Any:
    """Load a U-Net saved by :func:`tomoflow.train.files.save_unet` (safetensors, never unpickled), in eval mode.

    Parameters
    ----------
    path
        Weights file; the model card is the ``.json`` of the same stem beside it, and must name this
        file and hold its sha256 (:func:`tomoflow.weights.card.verified_model`: no card, no load).
    device
        ``"cpu"``, ``"cuda"`` or ``"auto"``; None: the device of :mod:`tomoflow.config`.

    Returns
    -------
    torch.nn.Module
        The network on ``device``, eval mode; ``model.config`` is its :class:`UNetConfig`,
        ``model.card`` its model card (dict).

    Raises
    ------
    ModelError
        Missing file or card, invalid card, a card naming another file, sha256 mismatch (an ``InputError``).
    InputError
        No or bad configuration in the metadata, or weights that do not fit the architecture.
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    from tomoflow.weights.card import card_path, verified_model

    dev = resolve_device(device)
    weights = Path(path)
    card, real = verified_model(weights)
    card_file = card_path(real)
    try:
        with safe_open(str(real), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(real), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"not a readable safetensors file: {exc}", path=weights) from None
    if meta.get("architecture") != ARCHITECTURE_NAME or "config" not in meta:
        raise InputError(f"weights are not a {ARCHITECTURE_NAME} (metadata {sorted(meta)})", path=weights)
    try:
        config = UNetConfig.from_json(meta["config"])
    except ConfigError as exc:
        raise InputError(f"bad U-Net configuration in the metadata: {exc}", path=weights) from None
    check_card_config(card, config, card_file)
    model = build_unet(config=config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InputError(f"weights do not fit the U-Net configuration {config}: {exc}", path=weights) from None
    model.card = card
    return model.to(dev).eval()


def check_card_config(
    card: dict[str, Any], config: UNetConfig, card_file: str | os.PathLike, holder: str = "the weights'"
) -> None:
    """The card's ``architecture`` (when it gives the channels) is ``config``, the one the file holds
    (``holder`` names it in the error).

    Raises
    ------
    InputError
        A bad configuration in the card, or one that differs from ``config``.
    """
    arch = card.get("architecture") or {}
    if "channels" in arch:
        try:
            card_config = UNetConfig.from_dict(
                {k: arch[k] for k in ("name", "channels", "in_channels", "out_channels", "residual") if k in arch}
            )
        except ConfigError as exc:
            raise InputError(f"bad U-Net configuration in the model card: {exc}", path=card_file) from None
        if card_config != config:
            raise InputError(f"model card configuration {card_config} differs from {holder} {config}", path=card_file)
