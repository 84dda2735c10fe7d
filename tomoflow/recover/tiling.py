"""Exact tiled inference of the resolution-recovery U-Net over volumes larger than memory.

A volume ``(z, y, x)`` is cut into output *blocks* that partition it (:func:`plan_tiles`); each block
is predicted from an input box grown by a *halo* and cropped back. The stitched result equals the
whole-volume result (:func:`predict_volume`) to float rounding (about ``1e-6`` relative in float32)
because:

1. the network has no layer with per-tile statistics (no normalisation layers,
   :mod:`tomoflow.recover.unet`), so an output voxel depends only on input voxels within the
   receptive-field radius ``R`` (:func:`~tomoflow.recover.unet.receptive_field`);
2. every input box extends at least ``halo >= R`` voxels beyond its output block, so the network's own
   zero padding at the box faces (at every layer) never reaches the kept voxels;
3. every input box starts on a multiple of the network's down-sampling factor ``A = 2**(L-1)``
   (:func:`~tomoflow.recover.unet.alignment`) relative to the volume origin and has sizes that are
   multiples of ``A``, so each tile max-pools on the same grid as the whole volume.

**The volume border.** Both paths see the volume *conceptually extended to infinity* by the same rule,
``pad_mode``:

- ``"reflect"`` (default): mirror about the first and last voxel without repeating them (NumPy's
  ``mode="reflect"``, applied periodically for any distance; an axis of length 1 is constant). No
  artificial step at the border, which a resolution-recovery network would otherwise "sharpen"
  into ringing; use it where the volume edge cuts through the sample (slabs of a larger scan).
- ``"zeros"``: zero beyond the border (the network sees an empty background).

Input boxes that run past the border are filled from that extension; :func:`predict_volume` runs the
network once on the volume extended by a margin ``>= R`` (rounded up to a multiple of ``A``) on every
side and crops it. So the output near the border is the network's response to the extended volume in
both paths, never to the network's internal zero padding, and volume sizes need not be multiples of
``A`` (nor of the block). All tiles of a plan have the same input shape (a little more than
``block + 2 * halo``), so several go through the network in one call (``batch``).

Kernels on in-memory or lazily sliced arrays: the volume is read with NumPy slicing only (a NumPy
array, a memory map or a zarr array), the result written by slice assignment into any array-like. No
Dask, no files. torch is imported lazily.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from tomoflow._checks import check_choice, check_int
from tomoflow.errors import ConfigError, InputError

__all__ = [
    "PAD_MODES",
    "Tile",
    "plan_tiles",
    "block_for_budget",
    "block_for_device",
    "read_box",
    "check_finite_box",
    "prepare_model",
    "predict_boxes",
    "predict_tiled",
    "predict_volume",
    "valid_evaluation",
    "valid_halo",
]

PAD_MODES = ("reflect", "zeros")
"""How the volume is conceptually extended beyond its border (module docstring)."""


# ----------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class Tile:
    """One tile: an output block of the volume and the (larger, aligned) input box it is predicted from.

    All coordinates are voxel indices ``(z, y, x)`` relative to the volume origin; stops are
    exclusive. Input boxes may reach outside the volume (negative starts, stops past the shape): that
    part is read from the conceptual extension (``pad_mode``).

    Attributes
    ----------
    index
        Block index per axis.
    out_start, out_stop
        The output block; the blocks of a plan partition the volume.
    in_start, in_stop
        The input box: contains ``[out_start - halo, out_stop + halo)``, starts on a multiple of the
        alignment, sizes multiples of the alignment.
    """

    index: tuple[int, ...]
    out_start: tuple[int, ...]
    out_stop: tuple[int, ...]
    in_start: tuple[int, ...]
    in_stop: tuple[int, ...]

    @property
    def out_slices(self) -> tuple[slice, ...]:
        """Slices of the output block in the volume."""
        return tuple(slice(a, b) for a, b in zip(self.out_start, self.out_stop))

    @property
    def out_shape(self) -> tuple[int, ...]:
        """Shape of the output block (voxels)."""
        return tuple(b - a for a, b in zip(self.out_start, self.out_stop))

    @property
    def in_shape(self) -> tuple[int, ...]:
        """Shape of the input box (voxels)."""
        return tuple(b - a for a, b in zip(self.in_start, self.in_stop))

    @property
    def crop(self) -> tuple[slice, ...]:
        """Slices of the output block inside the input box (to crop the network's output)."""
        return tuple(slice(o - i, p - i) for o, p, i in zip(self.out_start, self.out_stop, self.in_start))


def _per_axis(name: str, value: Any, ndim: int, low: int) -> tuple[int, ...]:
    if np.isscalar(value):
        return (check_int(name, value, low=low),) * ndim
    try:
        vals = tuple(value)
    except TypeError:
        raise ConfigError(f"{name} must be an integer or {ndim} integers, got {value!r}") from None
    if len(vals) != ndim:
        raise ConfigError(f"{name} must have {ndim} entries (one per axis), got {value!r}")
    return tuple(check_int(f"{name}[{i}]", v, low=low) for i, v in enumerate(vals))


def plan_tiles(
    shape: Sequence[int], block: int | Sequence[int], halo: int | Sequence[int], alignment: int
) -> list[Tile]:
    """Cut a volume into output blocks and their aligned, halo-grown input boxes.

    Parameters
    ----------
    shape
        Volume shape ``(z, y, x)`` in voxels (any number of axes works).
    block
        Output block size per axis (or one for all), voxels; need not divide ``shape``: the last block
        of an axis is shorter. At least ``alignment``.
    halo
        Context kept around each block, voxels (>= the network's receptive-field radius for exact
        stitching).
    alignment
        Input boxes start on multiples of it and have sizes that are multiples of it (the network's
        down-sampling factor).

    Returns
    -------
    list of Tile
        In C order of the block index. Every input box has the same shape,
        ``ceil((min(block, shape) + 2 * halo + alignment - 1) / alignment) * alignment`` per axis.

    Raises
    ------
    ConfigError
        Non-positive shape, block < alignment, negative halo, alignment < 1, or mismatched lengths.
    """
    try:
        shp = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise ConfigError(f"shape must be a sequence of integers, got {shape!r}") from None
    if not shp or any(s < 1 for s in shp):
        raise ConfigError(f"shape must have positive sizes, got {tuple(shape)}")
    nd = len(shp)
    a = check_int("alignment", alignment, low=1)
    blk = _per_axis("block", block, nd, 1)
    if any(b < a for b in blk):
        raise ConfigError(f"block {blk} must be at least the network's alignment {a} voxels on every axis")
    hal = _per_axis("halo", halo, nd, 0)
    axes = []
    for n, b, h in zip(shp, blk, hal):
        size = math.ceil((min(b, n) + 2 * h + a - 1) / a) * a
        ax = []
        for i, s in enumerate(range(0, n, b)):
            e = min(s + b, n)
            i0 = ((s - h) // a) * a
            ax.append((i, s, e, i0, i0 + size))
            assert i0 <= s - h and i0 + size >= e + h
        axes.append(ax)
    tiles = []
    for combo in np.ndindex(*(len(ax) for ax in axes)):
        parts = [axes[d][k] for d, k in enumerate(combo)]
        tiles.append(
            Tile(
                index=tuple(p[0] for p in parts),
                out_start=tuple(p[1] for p in parts),
                out_stop=tuple(p[2] for p in parts),
                in_start=tuple(p[3] for p in parts),
                in_stop=tuple(p[4] for p in parts),
            )
        )
    return tiles


def block_for_budget(
    model_or_config: Any, budget_bytes: int, *, shape: Sequence[int] | None = None, step: int = 16, largest: int = 256
) -> int:
    """The cubic output block for tiled inference within ``budget_bytes`` per process.

    The largest block that fits is a multiple of ``step`` (and of the network's alignment), from
    ``step`` to ``largest`` voxels; the input box is the block grown by the receptive-field radius on
    both sides and aligned (:func:`plan_tiles`), its peak memory
    :func:`~tomoflow.recover.unet.inference_bytes`. With the default network and a 2 GiB budget: 128
    (input boxes of 180³, estimated 1.9 GB). Given the volume ``shape``, the block is then balanced:
    the same number of blocks along the longest axis, made as equal as the alignment allows (less halo
    computed: a 157-voxel axis takes two blocks of 80 rather than 128 + 29; 600 takes five of 120).

    Parameters
    ----------
    model_or_config
        The network or its :class:`~tomoflow.recover.unet.UNetConfig`.
    budget_bytes
        Peak memory allowed per worker process (bytes).
    shape
        The volume ``(z, y, x)``: the block is balanced over its longest axis (never larger than it needs).
    step, largest
        Granularity and upper bound of the block edge (voxels).

    Raises
    ------
    ConfigError
        Even the smallest block does not fit in the budget.
    """
    from tomoflow.recover.unet import alignment, inference_bytes, receptive_field

    halo, a = receptive_field(model_or_config), alignment(model_or_config)
    step = math.lcm(check_int("step", step, low=1), a)
    top = check_int("largest", largest, low=1)
    best = 0
    for b in range(step, max(top, step) + 1, step):
        box = math.ceil((b + 2 * halo + a - 1) / a) * a  # as plan_tiles: the box start is aligned too
        if inference_bytes(model_or_config, (box,) * 3) <= budget_bytes:
            best = b
    if best == 0:
        need = inference_bytes(model_or_config, (math.ceil((step + 2 * halo + a - 1) / a) * a,) * 3)
        raise ConfigError(
            f"a worker memory budget of {budget_bytes / 1e9:.2f} GB cannot hold the network's "
            f"smallest block ({step}³ voxels needs about {need / 1e9:.2f} GB); raise "
            "worker_memory_budget"
        )
    if shape is not None:
        n = max(int(v) for v in shape)
        best = min(best, math.ceil(math.ceil(n / math.ceil(n / best)) / a) * a)
    return best


# ----------------------------------------------------------------------------- reading with the border rule
def _reflect_index(idx: np.ndarray, n: int) -> np.ndarray:
    """NumPy ``mode="reflect"`` index map, periodic for any distance (period ``2 * (n - 1)``)."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    r = np.mod(idx, period)
    return np.where(r >= n, period - r, r)


def read_box(
    volume: Any, start: Sequence[int], stop: Sequence[int], pad_mode: str = "reflect", dtype: Any = np.float32
) -> np.ndarray:
    """Read the box ``[start, stop)`` of ``volume``, extended beyond its border by ``pad_mode``.

    Parameters
    ----------
    volume
        Any array-like with ``shape`` and NumPy basic slicing (NumPy, memory map, zarr). Only the
        part of the volume the box needs is read.
    start, stop
        Box corners per axis in voxels, relative to the volume origin; may lie outside it.
    pad_mode
        ``"reflect"`` or ``"zeros"`` (module docstring).
    dtype
        Result dtype.

    Returns
    -------
    numpy.ndarray
        Shape ``stop - start``.
    """
    pad_mode = check_choice("pad_mode", pad_mode, PAD_MODES)
    shape = tuple(int(s) for s in volume.shape)
    start = tuple(int(s) for s in start)
    stop = tuple(int(s) for s in stop)
    inside = all(0 <= a and b <= n for a, b, n in zip(start, stop, shape))
    if inside:
        return np.asarray(volume[tuple(slice(a, b) for a, b in zip(start, stop))], dtype=dtype)
    box = tuple(b - a for a, b in zip(start, stop))
    if pad_mode == "zeros":
        res = np.zeros(box, dtype=dtype)
        lo = tuple(max(a, 0) for a in start)
        hi = tuple(min(b, n) for b, n in zip(stop, shape))
        if all(h > lo_ for lo_, h in zip(lo, hi)):
            res[tuple(slice(lo_ - a, h - a) for lo_, h, a in zip(lo, hi, start))] = np.asarray(
                volume[tuple(slice(lo_, h) for lo_, h in zip(lo, hi))], dtype=dtype
            )
        return res
    idx = [_reflect_index(np.arange(a, b), n) for a, b, n in zip(start, stop, shape)]
    lo = tuple(int(i.min()) for i in idx)
    hi = tuple(int(i.max()) + 1 for i in idx)
    slab = np.asarray(volume[tuple(slice(lo_, h) for lo_, h in zip(lo, hi))], dtype=dtype)
    return slab[np.ix_(*(i - lo_ for i, lo_ in zip(idx, lo)))]


# ----------------------------------------------------------------------------- inference
def _check_volume(volume: Any) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in getattr(volume, "shape", ()))
    if len(shape) != 3:
        raise InputError(f"volume must be 3-D (z, y, x), got shape {shape}", dataset="volume")
    if min(shape) < 1:
        raise InputError(f"volume is empty, shape {shape}", dataset="volume")
    return shape


def _geometry(model: Any, halo: Any, alignment: int | None, strict: bool) -> tuple[int, tuple[int, ...] | int, int]:
    """Receptive-field radius, halo and alignment for ``model`` (see :func:`predict_tiled`)."""
    from tomoflow.recover.unet import UNetConfig, receptive_field
    from tomoflow.recover.unet import alignment as net_alignment

    cfg = getattr(model, "config", None)
    if isinstance(cfg, UNetConfig):
        if cfg.in_channels != 1 or cfg.out_channels != 1:
            raise ConfigError(
                f"tiled inference maps one (z, y, x) volume to one; the network has "
                f"{cfg.in_channels} input and {cfg.out_channels} output channels"
            )
        radius = receptive_field(cfg)
        a_net = net_alignment(cfg)
        if alignment is None:
            alignment = a_net
        else:
            alignment = check_int("alignment", alignment, low=1)
            if alignment % a_net:
                raise ConfigError(f"alignment {alignment} must be a multiple of the network's {a_net}")
    else:
        if halo is None or alignment is None:
            raise ConfigError(
                "the model has no UNetConfig (not built by build_unet): give halo (>= its "
                "receptive-field radius) and alignment (its down-sampling factor) explicitly"
            )
        alignment = check_int("alignment", alignment, low=1)
        radius = None
    if halo is None:
        halo = radius
    hal = _per_axis("halo", halo, 3, 0)
    if radius is not None and min(hal) < radius:
        msg = (
            f"halo {halo} is smaller than the network's receptive-field radius {radius} voxels: the tiles "
            f"would not stitch exactly (seams at block faces); use halo >= {radius}"
        )
        if strict:
            raise ConfigError(msg + " (or strict=False to accept seams)")
        warnings.warn(msg, UserWarning, stacklevel=3)
    return (radius if radius is not None else max(hal)), hal, alignment


def _torch_unet_config(model: Any) -> Any:
    """The :class:`~tomoflow.recover.unet.UNetConfig` of a torch U-Net (which can run unpadded), else None."""
    from tomoflow.recover.unet import UNetConfig

    cfg = getattr(model, "config", None)
    return cfg if isinstance(cfg, UNetConfig) and not getattr(model, "runs_numpy", False) else None


def valid_evaluation(model: Any, box_shape: Sequence[int], crops: Sequence[Sequence[slice]]) -> bool:
    """Whether ``model`` can be run without padding (:func:`~tomoflow.recover.unet.valid_region`) on
    boxes of ``box_shape`` and still give every voxel of ``crops`` (box-relative slices).

    True for a torch U-Net from :func:`~tomoflow.recover.unet.build_unet` (or wrapped by
    :func:`~tomoflow.recover.normalization.with_normalization`) whenever its halo is at least the receptive
    field; False for an ONNX network or a network without a :class:`~tomoflow.recover.unet.UNetConfig`.
    """
    from tomoflow.recover.unet import valid_region

    cfg = _torch_unet_config(model)
    if cfg is None:
        return False
    region = valid_region(cfg, box_shape)
    return region is not None and all(
        lo <= sl.start and sl.stop <= hi for crop in crops for sl, (lo, hi) in zip(crop, region)
    )


def valid_halo(
    model: Any, shape: Sequence[int], block: int | Sequence[int], alignment: int | None = None
) -> int | None:
    """The smallest halo whose tiles :func:`valid_evaluation` can run, or None where it cannot.

    Valid evaluation computes an aligned box's output from a margin of its own
    (:func:`~tomoflow.recover.unet.valid_region`, 22 voxels for the default network) rather than the
    receptive-field radius (23, reached only off the pooling grid); with the rounding of boxes to the
    alignment, 128³ blocks of the default network then take boxes of 176³ instead of 180³ (about 7 %
    less work). Tries halos from that margin up to the radius on the tiles :func:`plan_tiles` makes
    and keeps the first whose every block lies in its box's valid region.
    """
    from tomoflow.recover.unet import alignment as net_alignment
    from tomoflow.recover.unet import receptive_field, valid_region

    cfg = _torch_unet_config(model)
    if cfg is None:
        return None
    a = net_alignment(cfg) if alignment is None else int(alignment)
    radius = receptive_field(cfg)
    probe = valid_region(cfg, (4 * radius + 8 * a,))
    low = radius if probe is None else probe[0][0]
    for h in range(low, radius + 1):
        tiles = plan_tiles(shape, block, h, a)
        if valid_evaluation(model, tiles[0].in_shape, [t.crop for t in tiles]):
            return h
    return None


def predict_boxes(
    model: Any, arrays: list[np.ndarray], crops: Sequence[Sequence[slice]], dev: Any, dtype: Any, valid: bool = False
) -> list[np.ndarray]:
    """The network on equally shaped input boxes in one call, each output cut to its crop.

    Parameters
    ----------
    model
        A U-Net placed by :func:`prepare_model`, or an ONNX network (``runs_numpy``).
    arrays
        Input boxes ``(z, y, x)``, all of one shape.
    crops
        Per box, the kept output region as box-relative slices.
    dev, dtype
        The torch device and parameter dtype returned by :func:`prepare_model` (ignored for ONNX).
    valid
        Evaluate without padding; the crops must then lie in :func:`~tomoflow.recover.unet.valid_region`
        (see :func:`valid_evaluation`).

    Returns
    -------
    list of numpy.ndarray
        One float32 array per box, the network's output over its crop.
    """
    if getattr(model, "runs_numpy", False):  # an ONNX network (tomoflow.recover.onnx_network)
        y = model(np.stack(arrays)[:, None])[:, 0].astype(np.float32, copy=False)
        return [yi[tuple(c)] for yi, c in zip(y, crops)]
    import torch

    shift = (0,) * arrays[0].ndim
    if valid:
        from tomoflow.recover.unet import valid_region

        shift = tuple(lo for lo, _ in valid_region(model.config, arrays[0].shape))  # type: ignore[union-attr]  # valid: the region exists
    x = torch.from_numpy(np.stack(arrays)[:, None]).to(device=dev, dtype=dtype)
    with torch.inference_mode():
        y = model(x, valid=True) if valid else model(x)
        del x
        out = [y[i, 0][tuple(slice(sl.start - d, sl.stop - d) for sl, d in zip(c, shift))] for i, c in enumerate(crops)]
        return [o.to(device="cpu", dtype=torch.float32).numpy().copy() for o in out]


def prepare_model(model: Any, device: str | None) -> tuple[Any, Any, bool]:
    """Put a U-Net on ``device`` in evaluation mode, for :func:`predict_boxes`.

    Parameters
    ----------
    model
        A torch U-Net, or an ONNX network (``runs_numpy``: left as it is).
    device
        ``"cpu"``, ``"cuda"`` or ``"auto"``; None (default): the device of :func:`tomoflow.config.get`.

    Returns
    -------
    tuple
        ``(device, dtype, was_training)``: the torch device and parameter dtype to feed the network
        (``None, None`` for an ONNX network), and whether it was in training mode before (so a caller
        can restore it).
    """
    if getattr(model, "runs_numpy", False):
        return None, None, False
    from tomoflow.nn import resolve_device

    dev = resolve_device(device)
    was_training = bool(model.training)
    model.to(dev).eval()
    params = list(model.parameters())
    dtype = params[0].dtype if params else None
    if dtype is None:
        import torch

        dtype = torch.float32
    return dev, dtype, was_training


def check_finite_box(x: np.ndarray, start: Sequence[int], stop: Sequence[int]) -> None:
    """Refuse an input box holding NaN or Inf.

    Parameters
    ----------
    x
        The box as read (:func:`read_box`).
    start, stop
        Its corners in volume voxels ``(z, y, x)``, named in the message.

    Raises
    ------
    InputError
        If any voxel of ``x`` is not finite.
    """
    if not np.all(np.isfinite(x)):
        raise InputError(
            f"volume contains NaN or Inf in the box {tuple(start)} - {tuple(stop)} (z, y, x); "
            "repair or mask them before resolution recovery",
            dataset="volume",
        )


def _region(
    region: Sequence[slice] | None, shape: tuple[int, int, int], a: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(origin, shape)`` of a :func:`predict_tiled` region (the whole volume for None), checked."""
    if region is None:
        return (0, 0, 0), shape
    try:
        sls = tuple(region)
    except TypeError:
        raise ConfigError(f"region must be three slices (z, y, x), got {region!r}") from None
    if len(sls) != 3 or not all(isinstance(sl, slice) and sl.step in (None, 1) for sl in sls):
        raise ConfigError(f"region must be three slices (z, y, x) with step 1, got {region!r}")
    bounds = []
    for axis, (sl, n) in enumerate(zip(sls, shape)):
        lo, hi = sl.start, sl.stop
        if not (isinstance(lo, (int, np.integer)) and isinstance(hi, (int, np.integer)) and 0 <= lo < hi <= n):
            raise ConfigError(
                f"region axis {axis} must be a slice with explicit start and stop, 0 <= start < stop <= {n}; got {sl}"
            )
        if lo % a:
            raise ConfigError(f"region axis {axis} starts at {lo}, not a multiple of the network's alignment {a}")
        bounds.append((int(lo), int(hi)))
    return tuple(lo for lo, _ in bounds), tuple(hi - lo for lo, hi in bounds)


def _device_budget(model: Any, dev: Any, share: int = 1) -> tuple[Any, int] | None:
    """``(UNetConfig, bytes)`` a pass of a torch U-Net on the GPU ``dev`` may use now
    (:func:`~tomoflow.nn.device.device_memory_budget`); None where no device bound applies (a CPU, ONNX)."""
    from tomoflow.nn.device import device_memory_budget

    cfg = _torch_unet_config(model)
    budget = None if cfg is None else device_memory_budget(dev, share=share)
    return None if budget is None else (cfg, budget)


def _device_batch(
    model: Any,
    box_shape: Sequence[int],
    batch: int,
    dev: Any,
    remedy: str = "use a smaller block (block_for_device gives the largest that fits)",
) -> int:
    """``batch`` lowered to the boxes of ``box_shape`` that fit the GPU's free memory; the CPU's is unchanged.

    Raises :class:`ConfigError` when one box does not fit (before any network call)."""
    from tomoflow.recover.unet import inference_bytes

    got = _device_budget(model, dev)
    if got is None:
        return batch
    cfg, budget = got
    one = inference_bytes(cfg, box_shape)
    if one > budget:
        raise ConfigError(
            f"one input box of {tuple(box_shape)} voxels needs about {one / 1e9:.2f} GB of GPU memory; "
            f"{budget / 1e9:.2f} GB may be used on {dev} now: {remedy}"
        )
    return max(1, min(batch, budget // one))


def block_for_device(model: Any, box_shape: Sequence[int], dev: Any, *, largest: int, share: int = 1) -> int | None:
    """Where a network pass over one box of ``box_shape`` does not fit the GPU ``dev``'s free memory now:
    the largest cubic block (a multiple of the network's alignment, at most ``largest`` voxels) whose
    box does; None where it fits or no device bound applies (a CPU, ONNX).

    Parameters
    ----------
    model
        The network (a torch U-Net; anything else has no device bound).
    box_shape
        The input box ``(z, y, x)`` in voxels.
    dev
        The torch device the network runs on.
    largest
        Upper bound of the block edge (voxels), e.g. the block the box was planned for.
    share
        Passes of this process that may run on the GPU at once (each gets ``1 / share`` of it).

    Raises
    ------
    ConfigError
        Not even the smallest block fits.
    """
    from tomoflow.recover.unet import alignment, inference_bytes

    got = _device_budget(model, dev, share)
    if got is None:
        return None
    cfg, budget = got
    if inference_bytes(cfg, box_shape) <= budget:
        return None
    try:  # steps of the alignment: a GPU's bound, unlike a worker's, can be small next to the block
        return block_for_budget(cfg, budget, step=alignment(cfg), largest=largest)
    except ConfigError:
        raise ConfigError(
            f"{budget / 1e9:.2f} GB may be used on {dev} now, less than the network's smallest block needs; "
            "free GPU memory (other processes on this GPU?) or run on the CPU (device 'cpu')"
        ) from None


def predict_tiled(
    model: Any,
    volume: Any,
    *,
    block: int | Sequence[int] = (64, 64, 64),
    halo: int | Sequence[int] | None = None,
    batch: int = 1,
    device: str | None = None,
    out: Any = None,
    skip: Callable[[Tile], bool] | None = None,
    progress: Callable[[int, int], None] | None = None,
    pad_mode: str = "reflect",
    alignment: int | None = None,
    strict: bool = True,
    valid: bool | None = None,
    region: Sequence[slice] | None = None,
) -> Any:
    """Apply the U-Net block by block; the result equals :func:`predict_volume` to float rounding.

    Parameters
    ----------
    model
        A network from :func:`~tomoflow.recover.unet.build_unet` /
        :func:`~tomoflow.recover.unet.load_unet` (one input, one output channel). It is moved to
        ``device`` and run in eval mode under ``torch.inference_mode``, in its parameters' dtype; its
        train/eval mode is restored afterwards. Or an exported network run by onnxruntime
        (:func:`tomoflow.recover.onnx_network.load_onnx`; ``device`` is then ignored). Another network
        needs ``halo`` and ``alignment``.
    volume
        ``(z, y, x)`` LFOV volume resampled onto the HR grid: any array-like with ``shape`` and NumPy
        slicing (NumPy, memory map, zarr array); read box by box.
    block
        Output block per axis (voxels), or one size for all; need not divide the volume. At least the
        alignment.
    halo
        Context read around each block (voxels); default the network's receptive-field radius (the
        smallest exact value for any tiling), or with valid evaluation the smallest halo it can run
        (:func:`valid_halo`). Smaller values raise :class:`ConfigError` (``strict=False``: warn and
        run, the stitched result then has seams).
    batch
        Tiles per network call (all tiles of a plan have the same input shape). Memory only: the
        result does not depend on it beyond float rounding. On a GPU it is lowered to what fits the
        device's free memory (:func:`~tomoflow.nn.device.device_memory_budget`); a block whose single
        box does not fit is refused before anything runs.
    device
        ``"cpu"``, ``"cuda"`` or ``"auto"``; None (default): the device of :func:`tomoflow.config.get`.
    out
        Where to write: any array-like of the volume's shape supporting slice assignment (NumPy, zarr);
        default a new float32 NumPy array. Each finished block is written once.
    skip
        ``skip(tile) -> bool``: True skips the network for that block (e.g. background); its output
        block is the *input copied through* (the identity, which is what a residual network predicts
        for a zero correction) — not the network's output. Called from the thread that reads the next
        box while the network runs on the current one.
    progress
        ``progress(done, total)`` called after each written block.
    pad_mode
        How the volume is extended beyond its border: ``"reflect"`` (default) or ``"zeros"``
        (module docstring). Must match the :func:`predict_volume` it is compared with.
    alignment
        Tile-origin multiple (voxels); default (and minimum) the network's ``2**(L-1)``.
    strict
        Refuse a halo below the receptive-field radius (default) instead of warning.
    valid
        Run the network without padding on each box (:func:`~tomoflow.recover.unet.valid_region`):
        only the voxels kept are computed, about 0.6x the work of a padded pass for the default network
        and 128³ blocks, same result to float rounding. ``None`` (default): wherever the network allows
        it (a torch U-Net from :func:`~tomoflow.recover.unet.build_unet`; not ONNX); ``False``: the
        padded network, cropped.
    region
        Predict only this box of the volume: three slices with explicit starts and stops inside the
        volume, each start a multiple of the alignment. Halos are read from the volume around it (the
        border rule applies only at the volume's own faces), so the result equals the same box of the
        whole prediction. ``out``, the tiles given to ``skip`` and ``progress`` are then the region's.

    Returns
    -------
    array-like
        ``out``: the predicted HR-look volume ``(z, y, x)`` (the region's box, with ``region``).

    Raises
    ------
    InputError
        Volume not 3-D or empty; NaN or Inf in a box read (raised when that box is reached: blocks
        before it are already written).
    ConfigError
        Bad block, halo, batch, device, pad mode, out shape, or a network with several channels.
    """
    full = _check_volume(volume)
    pad_mode = check_choice("pad_mode", pad_mode, PAD_MODES)
    batch = check_int("batch", batch, low=1)
    _, hal, a = _geometry(model, halo, alignment, strict)
    origin, shape = _region(region, full, a)
    tight = valid_halo(model, shape, block, a) if halo is None and valid is not False else None
    if tight is not None:
        hal = (tight,) * 3
    tiles = plan_tiles(shape, block, hal, a)
    if out is None:
        out = np.zeros(shape, dtype=np.float32)
    elif tuple(int(s) for s in getattr(out, "shape", ())) != shape:
        raise ConfigError(f"out has shape {tuple(getattr(out, 'shape', ()))}, the prediction {shape}")
    if skip is not None and not callable(skip):
        raise ConfigError(f"skip must be a callable skip(tile) -> bool, got {skip!r}")
    use_valid = valid is not False and (
        tight is not None or valid_evaluation(model, tiles[0].in_shape, [t.crop for t in tiles])
    )
    if valid and not use_valid:
        raise ConfigError(
            "valid evaluation needs a torch U-Net from build_unet and a halo of at least its "
            "receptive field; use valid=None"
        )
    dev, dtype, was_training = prepare_model(model, device)
    total, done = len(tiles), 0

    def finished() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    try:
        batch = _device_batch(model, tiles[0].in_shape, batch, dev)
        pending: list[tuple[Tile, np.ndarray]] = []

        def flush() -> None:
            if not pending:
                return
            y = predict_boxes(model, [x for _, x in pending], [t.crop for t, _ in pending], dev, dtype, use_valid)
            for (t, _), yt in zip(pending, y):
                out[t.out_slices] = yt
                finished()
            pending.clear()

        def read(t: Tile) -> np.ndarray | None:
            """The tile's input box, checked; None for a skipped tile."""
            if skip is not None and skip(t):
                return None
            i0 = tuple(o + v for o, v in zip(origin, t.in_start))
            i1 = tuple(o + v for o, v in zip(origin, t.in_stop))
            x = read_box(volume, i0, i1, pad_mode)
            check_finite_box(x, i0, i1)
            return x

        # the next box is read while the network runs on this one (a GPU no longer waits for the reads)
        with ThreadPoolExecutor(1, thread_name_prefix="tomoflow-read-box") as reader:
            ahead = reader.submit(read, tiles[0])
            for k, t in enumerate(tiles):
                x = ahead.result()
                if k + 1 < len(tiles):
                    ahead = reader.submit(read, tiles[k + 1])
                if x is None:
                    at = tuple(slice(o + sl.start, o + sl.stop) for o, sl in zip(origin, t.out_slices))
                    out[t.out_slices] = np.asarray(volume[at], dtype=np.float32)
                    finished()
                    continue
                pending.append((t, x))
                if len(pending) == batch:
                    flush()
            flush()
    finally:
        if not getattr(model, "runs_numpy", False):
            model.train(was_training)
    return out


def predict_volume(
    model: Any,
    volume: Any,
    *,
    device: str | None = None,
    pad_mode: str = "reflect",
    halo: int | None = None,
    alignment: int | None = None,
) -> np.ndarray:
    """The whole-volume reference: one network call on the extended volume, cropped.

    The volume is extended by ``pad_mode`` (module docstring) by a margin of at least the receptive
    field radius, rounded up to a multiple of the alignment, on every side (the high side also up to
    a multiple of the alignment), the network runs once on all of it, and the volume's box is kept.
    Equals :func:`predict_tiled` with the same ``pad_mode`` for any block (needs the whole volume
    and the network's activations for it in memory).

    Parameters
    ----------
    model
        As for :func:`predict_tiled`.
    volume
        ``(z, y, x)`` array-like.
    device
        ``"cpu"``, ``"cuda"`` or ``"auto"``; None (default): the device of :func:`tomoflow.config.get`.
    pad_mode
        ``"reflect"`` (default) or ``"zeros"``.
    halo, alignment
        Margin and alignment for a network without a :class:`~tomoflow.recover.unet.UNetConfig`.

    Returns
    -------
    numpy.ndarray
        float32 ``(z, y, x)``.
    """
    shape = _check_volume(volume)
    pad_mode = check_choice("pad_mode", pad_mode, PAD_MODES)
    _, hal, a = _geometry(model, halo, alignment, True)
    start = tuple(-math.ceil(h / a) * a for h in hal)  # type: ignore[union-attr]  # strict geometry: a tuple per axis
    stop = tuple(s0 + math.ceil((n + h - s0) / a) * a for s0, n, h in zip(start, shape, hal))  # type: ignore[arg-type]  # strict geometry: a tuple per axis
    dev, dtype, was_training = prepare_model(model, device)
    try:  # the padded network on the extended volume: the reference tiled inference is held to
        box = tuple(b - a for a, b in zip(start, stop))
        _device_batch(model, box, 1, dev, "predict it block by block with predict_tiled (same result)")
        x = read_box(volume, start, stop, pad_mode)
        check_finite_box(x, start, stop)
        y = predict_boxes(model, [x], [tuple(slice(-s0, -s0 + n) for s0, n in zip(start, shape))], dev, dtype)[0]
    finally:
        if not getattr(model, "runs_numpy", False):
            model.train(was_training)
    return np.ascontiguousarray(y)
