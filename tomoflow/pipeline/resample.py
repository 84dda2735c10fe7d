"""A volume store resampled onto another grid through an affine matrix, on Dask: the ``resample`` stage.

Uses: the LFOV on the HR grid of the ROI (a registration's training pair), or the whole LFOV field at
the HR voxel size (what the recovery network is then run on). Each task computes one chunk of the
output's level 0 with :func:`tomoflow.register.resample.resample_to_grid` (one interpolation, reading
only the source region the chunk needs), written straight into the output OME-Zarr store and marked
(stage engine: resumable, identity = the source's identity + matrix + grid + order). Chunks agree with
a whole-volume computation to ~1e-7 (the spline prefilter's margin, see that function).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tomoflow import config as _config
from tomoflow._checks import check_int, check_number
from tomoflow.errors import ConfigError
from tomoflow.io.models import VOLUME_FORMAT
from tomoflow.io.stages import StageLog
from tomoflow.io.volume_store import VolumeStore, level_shape, pyramid_levels
from tomoflow.pipeline.engine import Block, current_client, fingerprint, identity_of, prepare_output, run_blocks
from tomoflow.pipeline.engine import writes_outputs
from tomoflow.pipeline.reconstruct import _chunk_grid, run_pyramid

__all__ = ["resample_volume", "field_grid"]


def field_grid(source_shape: Sequence[int], source_spacing_um: float, spacing_um: float
               ) -> tuple[tuple[int, int, int], np.ndarray]:
    """The whole field of a volume at another voxel size, axes aligned: ``(shape, matrix)``.

    The new grid's first voxel centre is the source's first voxel centre and its last one stays
    within the source's last voxel centre, so every output voxel interpolates inside the source.
    """
    ratio = check_number("source / target voxel size", float(source_spacing_um) / float(spacing_um), low=0.0,
                         low_open=True)
    shape = tuple(int(np.floor((int(n) - 1) * ratio + 1e-9)) + 1 for n in source_shape)
    return shape, np.eye(4)  # type: ignore[return-value]


def _resample_block(source_path: str, matrix: list[list[float]], shape: tuple[int, ...], spacing: float,
                    source_spacing: float, order: int, region: tuple[slice, ...]) -> np.ndarray:
    from tomoflow.register.resample import resample_to_grid

    src = VolumeStore.open(source_path).level(0)
    box = tuple((s.start, s.stop) for s in region)
    return resample_to_grid(src, np.asarray(matrix), shape, spacing, source_spacing, box=box, order=order)


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
        Bad matrix, shape, spacing, order or chunks; the source's voxel size is unknown.
    StoreError
        Source incomplete; output refused.
    """
    from tomoflow.register.resample import footprint

    t_start = time.perf_counter()
    src = VolumeStore.open(source_path)
    vs = src.attrs.voxel_size
    if vs is None:
        raise ConfigError(f"{source_path}: the voxel size is unknown; resampling needs micrometres")
    src_sp = float(vs.value)
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise ConfigError(f"matrix must be a finite 4 x 4 affine matrix, got shape {m.shape}")
    shp = tuple(check_int("shape", n, low=1) for n in shape)
    if len(shp) != 3:
        raise ConfigError(f"shape must be (nz, ny, nx), got {tuple(shape)}")
    sp = check_number("spacing_um", spacing_um, low=0.0, low_open=True)
    if registration is not None and not isinstance(registration, dict):
        raise ConfigError(f"registration must be a dict (a registration document), got {type(registration).__name__}")
    if not (isinstance(order, int) and 0 <= order <= 5):
        raise ConfigError(f"order must be an integer spline order 0-5, got {order!r}")
    chunk = tuple(min(64, n) for n in shp) if chunks is None else tuple(check_int("chunks", c, low=1) for c in chunks)
    lo, hi = footprint(m, shp, sp, src_sp)
    if np.any(lo < -0.5 - 1e-6) or np.any(hi > np.asarray(src.shape) - 0.5 + 1e-6):
        from tomoflow.errors import InputError

        raise InputError(f"the output grid maps to source voxels {np.round(lo, 2).tolist()} .. "
                         f"{np.round(hi, 2).tolist()}, outside the source of shape {src.shape}",
                         path=source_path)
    request = {"matrix": m.tolist(), "shape": list(shp), "spacing_um": sp, "order": order, "chunks": list(chunk)}
    fp = fingerprint("resample", inputs={"volume": identity_of(source_path)}, params=request)
    plan = prepare_output(out_path, kind=VOLUME_FORMAT, stage="resample", fingerprint=fp, params=request,
                          inputs=[source_path], overwrite=overwrite)
    if plan.action == "complete":
        return VolumeStore.open(out_path)
    cfg = _config.get()
    if plan.action == "resume":
        out_store = VolumeStore.open(out_path, mode="r+", require_complete=False)
    else:
        n_levels = pyramid_levels(shp)
        out_store = VolumeStore.create(plan, shp, sp, chunks=chunk, n_levels=n_levels, algorithm="resample",
                                       scan=str(source_path),
                                       run_config={**cfg.model_dump(mode="json"), "resample": request},
                                       extra={"resampled_from": str(source_path), "matrix": m.tolist(),
                                              **({"registration": registration} if registration else {})})
        steps = {f"level-{k}": len(_chunk_grid(level_shape(shp, k), tuple(out_store.level(k).chunks)))
                 for k in range(n_levels)}
        StageLog.begin(out_path, "resample", fingerprint=fp, params=request, steps=steps)
    client = client if client is not None else current_client()
    from tomoflow.cluster import cluster_resources

    res = cluster_resources(client)
    srcp, out = os.path.abspath(source_path), os.path.abspath(out_path)
    regions = _chunk_grid(shp, chunk)
    blocks = [Block(units=(i,), region=r, args=(srcp, m.tolist(), shp, sp, src_sp, order, r),
                    nbytes=int(np.prod([s.stop - s.start for s in r])) * 4 * 12, label=f"chunk {i}")
              for i, r in enumerate(regions)]
    rep = run_blocks(out, blocks, _resample_block, stage="resample", step="level-0", array="0",
                     name="resample-volume", client=client, cluster=res, progress=progress,
                     progress_label="resample")
    timings = {"resample": rep.wall_s}
    timings.update(run_pyramid(out, out_store, "resample", client=client, cluster=res, progress=progress))
    StageLog(out, "resample").finish(output_id=fp, seconds=time.perf_counter() - t_start, timings=timings,
                                     blocks=len(blocks), blocks_computed=rep.computed)
    return VolumeStore.open(out_path)
