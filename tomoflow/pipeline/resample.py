"""A volume store resampled onto another grid through an affine matrix, on Dask: the ``resample`` stage.

Uses: the LFOV on the HR grid of the ROI (a registration's training pair), or the whole LFOV field at
the HR voxel size (what the recovery network is then run on). Each task computes one chunk of the
output's level 0 with :func:`tomoflow.register.resample.resample_to_grid` (one interpolation, reading
only the source region the chunk needs), written straight into the output OME-Zarr store and marked
(stage engine: resumable, identity = the source's identity + matrix + grid + order). Chunks agree with
a whole-volume computation to ~1e-7 (the spline prefilter's margin, see that function).

:class:`~tomoflow.register.resample.ResampledGrid` is the same resampling without a store: an array-like
over the target grid whose every read computes that box (the ``recover`` stage runs the network on the
LFOV resampled this way, box by box, with no intermediate store:
:func:`tomoflow.pipeline.recover.recover_volume`; the training reads its patches through it).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tomoflow import config as _config
from tomoflow._checks import check_int, check_number
from tomoflow.errors import ConfigError, InputError
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
from tomoflow.pipeline.pyramid import chunk_grid, run_pyramid
from tomoflow.register.resample import ResampledGrid

__all__ = [
    "resample_volume",
    "field_grid",
    "plan_resample",
    "ResamplePlan",
    "MIN_CHUNK_EDGE",
    "MAX_CHUNK_VOXELS",
]


def _three_ints(name: str, value: Any, form: str) -> tuple[int, int, int]:
    """``value`` as three positive integers, or a ConfigError naming ``name`` and its ``form``."""
    try:
        out = tuple(check_int(name, n, low=1) for n in value)
    except TypeError:
        raise ConfigError(f"{name} must be {form}, got {value!r}") from None
    if len(out) != 3:
        raise ConfigError(f"{name} must be {form}, got {tuple(value)}")
    return out


def field_grid(
    source_shape: Sequence[int], source_spacing_um: float, spacing_um: float
) -> tuple[tuple[int, int, int], np.ndarray]:
    """The whole field of a volume at another voxel size, axes aligned: ``(shape, matrix)``.

    The new grid's first voxel centre is the source's first voxel centre and its last one stays
    within the source's last voxel centre, so every output voxel interpolates inside the source.
    """
    ratio = check_number(
        "source / target voxel size", float(source_spacing_um) / float(spacing_um), low=0.0, low_open=True
    )
    shape = tuple(int(np.floor((int(n) - 1) * ratio + 1e-9)) + 1 for n in source_shape)
    return shape, np.eye(4)  # type: ignore[return-value]  # three sizes, one per axis


MIN_CHUNK_EDGE = 16
"""Smallest output chunk edge (voxels) on an axis longer than that. Each chunk is a task, a zarr file
and a completion marker; below 16³ voxels (16 KiB) their overhead, not the interpolation, is the work
(a 51³ grid in chunks of 1 is 132651 tasks for 0.5 MiB of data)."""

MAX_CHUNK_VOXELS = 2**27
"""Most voxels in one output chunk (512³, 512 MiB of float32): one task computes and holds it at once."""


@dataclass(frozen=True)
class ResamplePlan:
    """A checked resampling: what :func:`resample_volume` will write (from :func:`plan_resample`).

    Attributes
    ----------
    matrix
        ``(4, 4)`` output-physical -> source-physical matrix (checked: finite, affine, invertible).
    shape, spacing_um
        The output grid (voxels) and its voxel size (micrometres).
    source_spacing_um
        The source's voxel size (micrometres).
    chunks
        Output chunk shape.
    n_levels
        Pyramid levels written (level 0 included).
    nbytes
        Planned bytes of every level, uncompressed (float32).
    n_chunks
        Planned chunks (files) of every level.
    """

    matrix: np.ndarray
    shape: tuple[int, int, int]
    spacing_um: float
    source_spacing_um: float
    chunks: tuple[int, int, int]
    n_levels: int
    nbytes: int
    n_chunks: int


def plan_resample(
    source_path: str | Path,
    out_path: str | Path | None,
    *,
    matrix: Any,
    shape: Sequence[int],
    spacing_um: float,
    order: int = 3,
    chunks: Sequence[int] | None = None,
    output: str = "the resampled volume",
) -> ResamplePlan:
    """Check a resampling before anything is created (what :func:`resample_volume` runs first).

    The policy: the matrix is a finite, invertible, well conditioned affine map
    (:func:`tomoflow.register.transform.check_affine`); the grid maps inside the source; chunks are at
    least :data:`MIN_CHUNK_EDGE` per axis (or the whole axis) and at most :data:`MAX_CHUNK_VOXELS`; the
    whole planned output (every pyramid level, uncompressed) is within the cap one command may plan,
    its chunk count within the cap, and, for a new output, within the free space where it is written
    (:func:`tomoflow._checks.check_planned_output`). So a mistyped voxel size or chunk is refused at
    once, never planned for minutes.

    Parameters
    ----------
    source_path, out_path
        Source volume store, and the output store (None: no free-space check).
    matrix, shape, spacing_um, order, chunks
        As for :func:`resample_volume`.
    output
        What is written on the grid, for the messages (e.g. ``"the recovered volume"``).

    Returns
    -------
    ResamplePlan

    Raises
    ------
    ConfigError
        Bad matrix (singular, not affine, not finite), shape, spacing, order or chunks; a planned output
        over the caps; the source's voxel size unknown.
    InputError
        The grid maps (partly) outside the source.
    StoreError
        Source missing or incomplete; not enough free space for the output.
    """
    from tomoflow._checks import check_planned_output
    from tomoflow.register.resample import footprint
    from tomoflow.register.transform import check_affine

    src = VolumeStore.open(source_path)
    vs = src.attrs.voxel_size
    if vs is None:
        raise ConfigError(f"{source_path}: the voxel size is unknown; resampling needs micrometres")
    src_sp = float(vs.value)
    m = check_affine(matrix)
    shp = _three_ints("shape", shape, "(nz, ny, nx)")
    sp = check_number("spacing_um", spacing_um, low=0.0, low_open=True)
    if not (isinstance(order, int) and not isinstance(order, bool) and 0 <= order <= 5):
        raise ConfigError(f"order must be an integer spline order 0-5, got {order!r}")
    if chunks is None:
        chunk = tuple(min(64, n) for n in shp)
    else:
        chunk = _three_ints("chunks", chunks, "(cz, cy, cx)")
    small = [f"{ax} {c}" for ax, c, n in zip("zyx", chunk, shp) if c < min(MIN_CHUNK_EDGE, n)]
    if small:
        raise ConfigError(
            f"chunks {chunk} are too small ({', '.join(small)} voxels): an output chunk is at least "
            f"{MIN_CHUNK_EDGE} voxels per axis (or the whole axis); tiny chunks make a task and a file per "
            "few voxels"
        )
    held = math.prod(min(c, n) for c, n in zip(chunk, shp))
    if held > MAX_CHUNK_VOXELS:
        raise ConfigError(
            f"chunks {chunk} hold {held:,} voxels each, over the {MAX_CHUNK_VOXELS:,} one task may "
            "compute at once; use smaller chunks"
        )
    # the grid's size, before the footprint (its corners) or anything else looks at it
    n_levels = pyramid_levels(shp)
    levels = [level_shape(shp, k) for k in range(n_levels)]
    nbytes = sum(math.prod(ls) for ls in levels) * 4  # float32, uncompressed: the most it can take
    n_chunks = sum(math.prod(-(-n // c) for n, c in zip(ls, chunk)) for ls in levels)
    new_output = out_path is not None and not os.path.lexists(out_path)
    size = f"{' x '.join(str(n) if n < 10**9 else f'{float(n):.3g}' for n in shp)} voxels of {sp:g} um"
    check_planned_output(
        f"{output} ({size}, {n_levels} pyramid levels)",
        float(nbytes) if nbytes < 10**300 else math.inf,
        out_path if new_output else None,
        n_chunks=float(n_chunks) if n_chunks < 10**300 else math.inf,
    )
    lo, hi = footprint(m, shp, sp, src_sp)
    if np.any(lo < -0.5 - 1e-6) or np.any(hi > np.asarray(src.shape) - 0.5 + 1e-6):
        raise InputError(
            f"the output grid maps to source voxels {np.round(lo, 2).tolist()} .. "
            f"{np.round(hi, 2).tolist()}, outside the source of shape {src.shape}",
            path=source_path,
        )
    return ResamplePlan(
        matrix=m,
        shape=shp,
        spacing_um=sp,
        source_spacing_um=src_sp,
        chunks=chunk,  # type: ignore[arg-type]  # three sizes, one per axis
        n_levels=n_levels,
        nbytes=int(nbytes),
        n_chunks=int(n_chunks),
    )


def _resample_block(
    source_path: str,
    matrix: list[list[float]],
    shape: tuple[int, ...],
    spacing: float,
    source_spacing: float,
    order: int,
    region: tuple[slice, ...],
) -> np.ndarray:
    src = VolumeStore.open(source_path).level(0)
    return ResampledGrid(src, matrix, shape, spacing, source_spacing, order=order)[region]


@writes_outputs
def resample_volume(
    source_path: str | Path,
    out_path: str | Path,
    *,
    matrix: Any,
    shape: Sequence[int],
    spacing_um: float,
    order: int = 3,
    chunks: Sequence[int] | None = None,
    registration: dict[str, Any] | None = None,
    client: Any = None,
    overwrite: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> VolumeStore:
    """Resample a volume store onto a grid (``shape`` voxels of ``spacing_um``) mapped into it by ``matrix``.

    Parameters
    ----------
    source_path
        Source volume store (complete; its voxel size must be known).
    out_path
        Output volume store.
    matrix
        4 x 4 matrix from output physical micrometres to source physical micrometres (e.g. a
        registration's HR -> LFOV matrix with the HR grid as output; :func:`field_grid` for the
        whole source field at another voxel size).
    shape, spacing_um
        Output grid ``(nz, ny, nx)`` and its (isotropic) voxel size in micrometres.
    order
        Spline order (3 = cubic, 1 = trilinear).
    chunks
        Output chunk shape; default ``(64, 64, 64)`` clipped to the shape.
    registration
        The registration the matrix came from (the document of ``tomoflow register``), kept in the
        output store's extra metadata as ``registration`` (provenance; the identity is the matrix).
    client, overwrite, progress
        As for :func:`tomoflow.pipeline.reconstruct_scan`.

    Raises
    ------
    InputError
        The grid maps (partly) outside the source, or the source holds NaN/Inf there (checked on
        the grid's corners before anything is written, then per chunk).
    ConfigError
        Bad matrix (singular, ill-conditioned, not affine, not finite), shape, spacing, order or
        chunks; a planned output over the caps (:func:`plan_resample`, checked before anything is
        created); the source's voxel size is unknown.
    StoreError
        Source incomplete; not enough free space for the output; output refused.
    """
    t_start = time.perf_counter()
    rp = plan_resample(
        source_path, out_path, matrix=matrix, shape=shape, spacing_um=spacing_um, order=order, chunks=chunks
    )  # everything checked (matrix, grid, bounds, disk) before anything is created
    if registration is not None and not isinstance(registration, dict):
        raise ConfigError(f"registration must be a dict (a registration document), got {type(registration).__name__}")
    m, shp, sp, src_sp, chunk = rp.matrix, rp.shape, rp.spacing_um, rp.source_spacing_um, rp.chunks
    request = {"matrix": m.tolist(), "shape": list(shp), "spacing_um": sp, "order": order, "chunks": list(chunk)}
    fp = fingerprint("resample", inputs={"volume": identity_of(source_path)}, params=request)
    plan = prepare_output(
        out_path,
        kind=VOLUME_FORMAT,
        stage="resample",
        fingerprint=fp,
        params=request,
        inputs=[source_path],
        overwrite=overwrite,
    )
    if plan.action == "complete":
        return VolumeStore.open(out_path)
    cfg = _config.get()
    if plan.action == "resume":
        out_store = VolumeStore.open(out_path, mode="r+", require_complete=False)
    else:
        n_levels = pyramid_levels(shp)
        out_store = VolumeStore.create(
            plan,
            shp,
            sp,
            chunks=chunk,
            n_levels=n_levels,
            algorithm="resample",
            scan=str(source_path),
            run_config={**cfg.model_dump(mode="json"), "resample": request},
            extra={
                "resampled_from": str(source_path),
                "matrix": m.tolist(),
                **({"registration": registration} if registration else {}),
            },
        )
        steps = {
            f"level-{k}": len(chunk_grid(level_shape(shp, k), tuple(out_store.level(k).chunks)))
            for k in range(n_levels)
        }
        StageLog.begin(out_path, "resample", fingerprint=fp, params=request, steps=steps)
    client = client if client is not None else current_client()
    from tomoflow.cluster import cluster_resources

    res = cluster_resources(client)
    srcp, out = os.path.abspath(source_path), os.path.abspath(out_path)
    regions = chunk_grid(shp, chunk)
    blocks = [
        Block(
            units=(i,),
            region=r,
            args=(srcp, m.tolist(), shp, sp, src_sp, order, r),
            nbytes=int(np.prod([s.stop - s.start for s in r])) * 4 * 12,
            label=f"chunk {i}",
        )
        for i, r in enumerate(regions)
    ]
    rep = run_blocks(
        out,
        blocks,
        _resample_block,
        stage="resample",
        step="level-0",
        array="0",
        name="resample-volume",
        client=client,
        cluster=res,
        progress=progress,
        progress_label="resample",
    )
    timings = {"resample": rep.wall_s}
    timings.update(run_pyramid(out, out_store, "resample", client=client, cluster=res, progress=progress))
    StageLog(out, "resample").finish(
        output_id=fp,
        seconds=time.perf_counter() - t_start,
        timings=timings,
        blocks=len(blocks),
        blocks_computed=rep.computed,
    )
    return VolumeStore.open(out_path)
