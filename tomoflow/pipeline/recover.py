"""Tiled U-Net inference over a whole volume store, on Dask: the ``recover`` stage.

The input volume (an LFOV volume, or any volume store) is read block by block; each output block is
one zarr chunk of the output's level 0, predicted from an input box grown by the network's
receptive-field radius and aligned to its pooling grid (:func:`tomoflow.recover.plan_tiles`), so the
stitched volume equals whole-volume inference (:func:`tomoflow.recover.predict_volume`) to float
rounding, whatever the chunk size. Every block is a task of the stage engine
(:func:`tomoflow.pipeline.engine.run_blocks`): written straight into the output OME-Zarr store and
marked; memory per task is O(block), never O(volume); a rerun after an interruption skips the marked
blocks; the output's identity is the input volume's identity, the weights' sha256 and the tiling
parameters (not paths). The pyramid levels follow, as for reconstructions.

**Fused resampling.** Given a target grid (``matrix``, ``shape``, ``spacing_um``: the whole LFOV field
at the HR voxel size, :func:`tomoflow.pipeline.resample.field_grid`, or the HR ROI's grid through a
registration), the network runs on the input volume resampled onto that grid, box by box: each task
resamples the part of its input box inside the grid from the LFOV region it needs
(:class:`tomoflow.register.resample.ResampledGrid`, one interpolation) and extends it beyond the grid by
``pad_mode``, as :func:`tomoflow.recover.tiling.read_box` extends a stored volume. So the output equals
``resample_volume`` then ``recover_volume`` to float rounding, without the resampled volume (64 times
the LFOV's voxels at a 4x voxel-size ratio) ever being written; the identity adds the matrix, the grid
and the spline order.

Workers load the network once per process (cached by weights path and sha256) and run it on the GPU
when the cluster has GPU workers and the configured device is not ``cpu``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tomoflow import config as _config
from tomoflow._checks import check_choice
from tomoflow.backend import torch_threads
from tomoflow.errors import ConfigError
from tomoflow.io.metadata import VOLUME_FORMAT
from tomoflow.io.stages import StageLog
from tomoflow.io.volume_store import VolumeStore, level_shape, pyramid_levels
from tomoflow.pipeline.engine import (
    Block,
    current_client,
    fingerprint,
    identity_of,
    prepare_output,
    run_blocks,
    writes_outputs,
)
from tomoflow.pipeline.gpu import CONVEYOR_TASKS, gpu_slots, torch_gpu_section
from tomoflow.pipeline.pyramid import chunk_grid, run_pyramid
from tomoflow.pipeline.resample import ResamplePlan, plan_resample
from tomoflow.register.resample import ResampledGrid, resample_bytes

__all__ = ["recover_volume"]

log = logging.getLogger(__name__)

_MODELS: dict[tuple[str, str, str], Any] = {}
_MODELS_LOCK = threading.Lock()


def _model(path: str, sha256: str, device: str) -> Any:
    """The network of ``path`` on ``device``, loaded once per worker process (its threads wait for the
    first load rather than each loading one)."""
    key = (path, sha256, device)
    with _MODELS_LOCK:
        if key not in _MODELS:
            from tomoflow.recover.normalization import with_normalization
            from tomoflow.recover.onnx_network import is_onnx_path, load_onnx
            from tomoflow.recover.unet import load_unet

            _MODELS.clear()  # one model per process at a time
            if is_onnx_path(path):  # exported with its normalisation inside: raw grey values in and out
                _MODELS[key] = load_onnx(path)
            else:
                _MODELS[key] = with_normalization(load_unet(path, device=device))  # raw grey values in and out
        return _MODELS[key]


def _recover_block(
    volume_path: str,
    model_path: str,
    sha256: str,
    device: str,
    pad_mode: str,
    in_start: tuple[int, ...],
    in_stop: tuple[int, ...],
    crop: tuple[slice, ...],
    valid: bool = False,
    grid: dict[str, Any] | None = None,
) -> np.ndarray:
    """Block function: one output chunk, predicted from its halo'd, aligned input box; ``valid``: a torch
    U-Net run without padding, only the kept voxels computed (:func:`tomoflow.recover.tiling.valid_halo`);
    ``grid``: the keyword arguments of a :class:`~tomoflow.register.resample.ResampledGrid` (the box is
    resampled from the volume onto that grid), or None (the volume's own grid).

    On a GPU whose free memory (:func:`tomoflow.nn.device.device_memory_budget`, read now) cannot hold
    the box's network pass, the block is predicted in the largest sub-blocks that fit
    (:func:`tomoflow.recover.tiling.predict_tiled` over the block's region, halos read from the volume):
    the same values, whatever the volume and the block."""
    from tomoflow.recover.tiling import block_for_device, check_finite_box, predict_boxes, prepare_model, read_box

    model = _model(model_path, sha256, device)
    src: Any = VolumeStore.open(volume_path).level(0)
    if grid is not None:
        src = ResampledGrid(src, **grid)
    dev, dtype, _ = prepare_model(model, device)
    # where the network runs: one of the worker's GPU slots (the read before it holds none), the task's CPU
    # budget (not Dask's OMP_NUM_THREADS=1), or an ONNX session's own threads
    section: Any = (
        contextlib.nullcontext() if dev is None else torch_gpu_section(dev) if dev.type == "cuda" else torch_threads()
    )
    box = tuple(b - a for a, b in zip(in_start, in_stop))
    largest = max(sl.stop - sl.start for sl in crop)
    # the passes of the worker's GPU slots at once; None on a CPU, or where the box fits
    split = block_for_device(model, box, dev, largest=largest, share=gpu_slots())
    if split is not None:
        with section:
            return _predict_split(model, src, device, pad_mode, in_start, crop, split)
    x = read_box(src, in_start, in_stop, pad_mode)
    check_finite_box(x, in_start, in_stop)
    with section:
        return predict_boxes(model, [x], [crop], dev, dtype, valid)[0]


def _predict_split(
    model: Any,
    src: Any,
    device: str,
    pad_mode: str,
    in_start: tuple[int, ...],
    crop: tuple[slice, ...],
    block: int,
) -> np.ndarray:
    """The block ``in_start + crop`` predicted in sub-blocks of ``block`` voxels (its region's start
    lowered to the network's alignment, the extra rows cropped)."""
    from tomoflow.recover.tiling import predict_tiled
    from tomoflow.recover.unet import alignment

    a = alignment(model.config)
    lo = tuple(i + c.start for i, c in zip(in_start, crop))
    hi = tuple(i + c.stop for i, c in zip(in_start, crop))
    down = tuple(v - v % a for v in lo)
    y = predict_tiled(model, src, block=block, device=device, pad_mode=pad_mode, region=tuple(map(slice, down, hi)))
    return np.ascontiguousarray(y[tuple(slice(v - d, None) for v, d in zip(lo, down))])


def _grid_plan(
    volume_path: str | Path,
    out_path: str | Path,
    matrix: Any,
    shape: Sequence[int] | None,
    spacing_um: float | None,
    order: int,
    registration: dict[str, Any] | None,
) -> ResamplePlan | None:
    """The checked target grid of a fused recovery (:func:`tomoflow.pipeline.resample.plan_resample`), or
    None for the volume's own grid."""
    given = [k for k, v in (("matrix", matrix), ("shape", shape), ("spacing_um", spacing_um)) if v is not None]
    if not given:
        if registration is not None:
            raise ConfigError("registration is the provenance of a target grid: give matrix, shape and spacing_um")
        return None
    if matrix is None or shape is None or spacing_um is None:
        missing = [k for k in ("matrix", "shape", "spacing_um") if k not in given]
        raise ConfigError(f"a target grid needs matrix, shape and spacing_um together; {', '.join(missing)} missing")
    if registration is not None and not isinstance(registration, dict):
        raise ConfigError(f"registration must be a dict (a registration document), got {type(registration).__name__}")
    # matrix, grid inside the source, spline order, the output's size against the caps and the free space
    return plan_resample(
        volume_path,
        out_path,
        matrix=matrix,
        shape=shape,
        spacing_um=spacing_um,
        order=order,
        output="the recovered volume",
    )


def _tiling(model: Any, shape: tuple[int, ...], chunk: tuple[int, ...], align: int) -> tuple[bool, int, list[Any]]:
    """``(unpadded, halo, tiles)`` of ``chunk`` blocks over ``shape``."""
    from tomoflow.recover.tiling import plan_tiles, valid_halo
    from tomoflow.recover.unet import receptive_field

    tight = valid_halo(model, shape, chunk, align)  # a torch U-Net runs unpadded: a smaller box suffices
    valid = tight is not None  # decided here, with the halo: a box below the radius must run unpadded
    halo = tight if tight is not None else int(receptive_field(model))
    return valid, halo, plan_tiles(shape, chunk, halo, align)  # checks chunk >= alignment


@writes_outputs
def recover_volume(
    volume_path: str | Path,
    model_path: str | Path,
    out_path: str | Path,
    *,
    matrix: Any = None,
    shape: Sequence[int] | None = None,
    spacing_um: float | None = None,
    order: int = 3,
    registration: dict[str, Any] | None = None,
    pad_mode: str = "reflect",
    chunks: tuple[int, int, int] | None = None,
    memory_budget: int | str | None = None,
    client: Any = None,
    overwrite: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> VolumeStore:
    """Run a resolution-recovery U-Net over a whole volume store into a new OME-Zarr volume store.

    The network reads and writes raw grey values: the normalisation stored in its model card
    (:func:`tomoflow.recover.normalization.with_normalization`) is applied around it in every block.
    Given a target grid (``matrix``, ``shape``, ``spacing_um``), it runs on the volume resampled onto
    that grid, box by box, with no intermediate store (module docstring): the same volume as
    :func:`~tomoflow.pipeline.resample.resample_volume` then this function on its output, to float
    rounding.

    Parameters
    ----------
    volume_path
        Input volume store (complete): the volume to recover, or the LFOV volume to resample onto the
        target grid.
    model_path
        U-Net weights (``.safetensors`` with its model card beside it; :func:`tomoflow.train.files.save_unet`),
        or its ONNX export with the normalisation inside (``.onnx``,
        :func:`tomoflow.train.onnx_export.export_onnx` of the :func:`~tomoflow.recover.normalization.with_normalization`
        network), run by onnxruntime on the CPU.
    out_path
        Output volume store: the target grid's shape and voxel size (default the input's), plus a pyramid.
    matrix, shape, spacing_um
        The target grid, all three or none: 4 x 4 matrix from grid physical micrometres to the input's
        physical micrometres, ``(nz, ny, nx)`` voxels and their size in micrometres (as for
        :func:`~tomoflow.pipeline.resample.resample_volume`): the whole field at the HR voxel size
        (:func:`~tomoflow.pipeline.resample.field_grid`) or the HR ROI's grid (a registration's matrix,
        the HR store's shape and voxel size). Default: the input's own grid, no resampling.
    order
        Spline order of the resampling (3 = cubic, 1 = trilinear); with a target grid only.
    registration
        The registration document the matrix came from (``tomoflow register``), kept in the output's
        provenance (the identity is the matrix).
    pad_mode
        How the volume is extended beyond its border (``"reflect"`` or ``"zeros"``, as in training).
    chunks
        Output chunk shape = one inference block per chunk; default the largest cube whose inference
        (and resampling, with a target grid) fits in ``memory_budget``
        (:func:`tomoflow.recover.tiling.block_for_budget`: 128³ for the default network and 2 GiB).
    memory_budget
        Peak bytes per worker process (e.g. ``"2GB"``); default the configured ``worker_memory_budget``.
        Used to choose ``chunks``; an explicit ``chunks`` that needs more is refused.
    client
        A ``distributed.Client``; default the current one, else a local thread pool.
    overwrite
        Replace an output store made from other inputs or parameters (never a non-tomoflow folder or
        an input).
    progress
        ``progress(stage, done, total)`` as blocks finish.

    Returns
    -------
    VolumeStore
        The complete output store (``algorithm = "unet-recovery"``).

    Raises
    ------
    InputError
        Unreadable weights or card, NaN/Inf in the input volume (the block is not written); a target
        grid that maps (partly) outside the input volume.
    StoreError
        Input incomplete or missing; output refused (see :func:`tomoflow.pipeline.engine.prepare_output`).
    ConfigError
        Bad ``pad_mode`` or ``chunks`` smaller than the network's alignment; a volume (or target grid)
        whose voxel size differs from the one the network was trained on (``training_data.hr_voxel_um``
        of its card); an incomplete or bad target grid (matrix, shape, spacing, order; see
        :func:`~tomoflow.pipeline.resample.plan_resample`).
    """
    from tomoflow.recover.tiling import PAD_MODES, block_for_budget
    from tomoflow.recover.unet import alignment, inference_bytes, load_unet

    t_start = time.perf_counter()
    pad_mode = check_choice("pad_mode", pad_mode, PAD_MODES)
    src = VolumeStore.open(volume_path)
    rp = _grid_plan(volume_path, out_path, matrix, shape, spacing_um, order, registration)
    from tomoflow.recover.onnx_network import is_onnx_path, load_onnx

    onnx = is_onnx_path(model_path)
    if onnx:
        from tomoflow._hashing import file_sha256

        model = load_onnx(model_path)
        if not model.raw_values:
            raise ConfigError(
                f"{model_path}: this ONNX graph takes normalised values; export the network with "
                "its normalisation (export_onnx(with_normalization(load_unet(weights)), ...))"
            )
        sha = file_sha256(model_path)
    else:
        model = load_unet(model_path, device="cpu")  # verifies the card and the sha256 before anything is written
        sha = str(model.card["sha256"])
    align = alignment(model)
    grid_shape: Any = rp.shape if rp is not None else tuple(int(s) for s in src.shape)

    def box_bytes(box: Sequence[int]) -> int:  # the network's peak, and the resampler's on a target grid
        extra = 0 if rp is None else resample_bytes(rp.matrix, box, rp.spacing_um, rp.source_spacing_um, order)
        return inference_bytes(model, box) + extra

    budget = _config.get().worker_memory_budget if memory_budget is None else _config.parse_bytes(memory_budget)
    if chunks is None:
        largest, edge = 256, 0  # block_for_budget's default bound; lowered while the resampler does not fit
        while True:
            smaller = block_for_budget(model, budget, shape=grid_shape, largest=largest)
            if smaller == edge:  # the smallest block: refused below if it does not fit
                break
            edge = smaller
            chunk = tuple(min(edge, n) for n in grid_shape)
            valid, halo, tiles = _tiling(model, grid_shape, chunk, align)
            if rp is None or box_bytes(tiles[0].in_shape) <= budget:
                break
            largest = edge - 1
    else:
        chunk = tuple(int(c) for c in chunks)
        valid, halo, tiles = _tiling(model, grid_shape, chunk, align)
    need = box_bytes(tiles[0].in_shape)
    if need > budget:
        raise ConfigError(
            f"chunks {chunk} need input boxes of {tiles[0].in_shape} voxels, about {need / 1e9:.2f} GB "
            f"per worker, over the memory budget of {budget / 1e9:.2f} GB; use smaller chunks (or "
            "none: the largest that fits is chosen) or raise worker_memory_budget"
        )
    trained_um = (model.card.get("training_data") or {}).get("hr_voxel_um")
    vs = src.attrs.voxel_size
    grid_um = rp.spacing_um if rp is not None else None if vs is None else float(vs.value)
    if trained_um is not None and grid_um is not None and not np.isclose(grid_um, float(trained_um), rtol=1e-3):
        what = "a target grid" if rp is not None else f"{volume_path}: voxels"
        raise ConfigError(
            f"{what} of {grid_um:g} um, but the network was trained on {float(trained_um):g} um voxels; "
            f"recover the field at that voxel size (tomoflow recover --voxel {float(trained_um):g}, or "
            "recover_volume with field_grid)"
        )
    norm = model.card.get("normalisation")  # not covered by the weights' sha256: part of the identity
    fused = (
        None
        if rp is None
        else {"matrix": rp.matrix.tolist(), "shape": list(rp.shape), "spacing_um": rp.spacing_um, "order": order}
    )
    request = {
        "pad_mode": pad_mode,
        "chunks": list(chunk),
        "halo": halo,
        "alignment": align,
        "unpadded": valid,
        "normalisation": norm,
        **({"calibration": model.card["calibration"]} if model.card.get("calibration") else {}),
        **({"runtime": "onnxruntime"} if onnx else {}),
        **({"grid": fused} if fused is not None else {}),
    }
    volume_id = identity_of(volume_path)
    fp = fingerprint("recover", inputs={"volume": volume_id, "model": sha}, params=request)
    plan = prepare_output(
        out_path,
        kind=VOLUME_FORMAT,
        stage="recover",
        fingerprint=fp,
        params=request,
        inputs=[volume_path, model_path],
        overwrite=overwrite,
    )
    if plan.action == "complete":
        log.info("%s is complete for this volume, model and parameters; nothing to do", out_path)
        return VolumeStore.open(out_path)
    cfg = _config.get()
    if plan.action == "resume":
        out_store = VolumeStore.open(out_path, mode="r+", require_complete=False)
        log.info("resuming %s", out_path)
    else:
        n_levels = pyramid_levels(grid_shape)
        source = (
            {}
            if rp is None
            else {
                "fused_resample": {
                    "source": str(volume_path),
                    "source_identity": volume_id,
                    "source_voxel_um": rp.source_spacing_um,
                    **(fused or {}),
                    **({"registration": registration} if registration else {}),
                }
            }
        )
        out_store = VolumeStore.create(
            plan,
            grid_shape,
            grid_um,
            chunks=chunk,
            n_levels=n_levels,
            algorithm="unet-recovery",
            scan=str(volume_path),
            run_config={**cfg.model_dump(mode="json"), "recover": {**request, "model_sha256": sha}},
            extra={"recovered_from": str(volume_path), "model": str(model_path), "model_sha256": sha, **source},
        )
        steps = {"level-0": len(tiles)}
        steps.update(
            {
                f"level-{k}": len(chunk_grid(level_shape(grid_shape, k), tuple(out_store.level(k).chunks)))
                for k in range(1, n_levels)
            }
        )
        StageLog.begin(out_path, "recover", fingerprint=fp, params=request, steps=steps)

    from tomoflow.cluster import cluster_resources

    client = client if client is not None else current_client()
    res = cluster_resources(client)
    device = "cpu" if cfg.device == "cpu" or res.gpus == 0 or onnx else "cuda"
    vin, mod, out = (os.path.abspath(p) for p in (volume_path, model_path, out_path))
    grid = None if rp is None or fused is None else {**fused, "source_spacing_um": rp.source_spacing_um}
    blocks = [
        Block(
            units=(i,),
            region=t.out_slices,
            args=(vin, mod, sha, device, pad_mode, t.in_start, t.in_stop, t.crop, valid, grid),
            nbytes=need,
            label=f"block {t.index}",
        )
        for i, t in enumerate(tiles)
    ]
    rep = run_blocks(
        out,
        blocks,
        _recover_block,
        stage="recover",
        step="level-0",
        array="0",
        name="recover-unet" if rp is None else "resample-recover-unet",
        gpu=device == "cuda",
        gpu_tasks=CONVEYOR_TASKS if device == "cuda" else 1,  # reads overlap other blocks' network passes
        client=client,
        cluster=res,
        progress=progress,
        progress_label="recover",
    )
    timings = {"recover": rep.wall_s, "recover_compute": rep.compute_s}
    timings.update(run_pyramid(out, out_store, "recover", client=client, cluster=res, progress=progress))
    StageLog(out, "recover").finish(
        output_id=fp,
        seconds=time.perf_counter() - t_start,
        timings=timings,
        blocks=len(blocks),
        blocks_computed=rep.computed,
        halo=halo,
        device=device,
        fused_resample=rp is not None,
    )
    return VolumeStore.open(out_path)
