"""Pore metrics of volume stores larger than memory: z-slabs labelled one at a time, merged exactly.

:func:`volume_pores` reads a region of a volume store's level 0 in slabs of whole z-chunks
(:func:`tomoflow.recover.block_pores` on each), then joins pores across slab faces
(:func:`tomoflow.recover.merge_block_pores`): the result equals :func:`tomoflow.recover.pore_metrics` on
the whole region, with memory O(slab). One fixed protocol (threshold, connectivity, minimum size) is
applied to every volume compared. :func:`plot_pore_sizes` saves the size histograms of several
volumes as a PNG (:func:`tomoflow.recover.pore_plot.pore_size_figure`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tomoflow._checks import check_int
from tomoflow.errors import ConfigError, InputError
from tomoflow.io.volume_store import VolumeStore

__all__ = ["volume_pores", "reference_threshold", "volume_pore_recall", "plot_pore_sizes", "RECALL_MAX_BYTES"]

#: Most bytes :func:`volume_pore_recall` reads into memory (the reference's labels and every volume's region).
RECALL_MAX_BYTES = 4 * 1024**3


def _region(shape: tuple[int, ...], region: Sequence[Sequence[int]] | None) -> tuple[tuple[int, int], ...]:
    if region is None:
        return tuple((0, int(n)) for n in shape)
    out = tuple((int(a), int(b)) for a, b in region)
    if len(out) != 3 or any(not 0 <= a < b <= n for (a, b), n in zip(out, shape)):
        raise ConfigError(
            f"region must be 3 (start, stop) voxel ranges inside the volume {tuple(shape)}, got {region!r}"
        )
    return out


def reference_threshold(
    path: str | os.PathLike,
    *,
    method: str = "otsu",
    region: Sequence[Sequence[int]] | None = None,
    max_voxels: int = 64**3 * 8,
) -> float:
    """The protocol's threshold from a reference (HR) volume store: :func:`tomoflow.recover.
    threshold_from_reference` on its ``region`` (a regular subsample of at most ``max_voxels`` voxels)."""
    from tomoflow.recover import threshold_from_reference

    store = VolumeStore.open(path)
    r = _region(store.shape, region)
    n = int(np.prod([b - a for a, b in r]))
    step = max(1, int(np.ceil((n / max_voxels) ** (1 / 3))))
    data = np.asarray(store.level(0)[tuple(slice(a, b, step) for a, b in r)], dtype=np.float32)
    return threshold_from_reference(data, method=method, name=str(path))


def volume_pores(
    path: str | os.PathLike,
    *,
    threshold: float,
    connectivity: int = 26,
    min_voxels: int = 8,
    region: Sequence[Sequence[int]] | None = None,
    slab: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Any:
    """Pore metrics (:class:`tomoflow.recover.PoreMetrics`) of a region of a volume store.

    Parameters
    ----------
    path
        Volume store (complete).
    threshold
        Pores are voxels below it (the protocol's value, e.g. :func:`reference_threshold` of the HR).
    connectivity
        6, 18 or 26.
    min_voxels
        Smallest pore (voxels); smaller components are neither counted nor in the porosity.
    region
        ``((z0, z1), (y0, y1), (x0, x1))`` voxel ranges; default the whole volume.
    slab
        z-planes per block; default the store's z-chunk (whole chunks are read).
    progress
        ``progress(done, total)`` after each slab.
    """
    from tomoflow.recover import block_pores, merge_block_pores

    store = VolumeStore.open(path)
    arr = store.level(0)
    r = _region(store.shape, region)
    slab = int(arr.chunks[0]) if slab is None else check_int("slab", slab, low=1)
    vs = store.attrs.voxel_size
    spacing = 1.0 if vs is None else float(vs.value)
    blocks = {}
    starts = list(range(r[0][0], r[0][1], slab))
    for i, z0 in enumerate(starts):
        z1 = min(z0 + slab, r[0][1])
        block = np.asarray(arr[z0:z1, r[1][0] : r[1][1], r[2][0] : r[2][1]], dtype=np.float32)
        blocks[(z0 - r[0][0], 0, 0)] = block_pores(
            block, threshold=threshold, connectivity=connectivity, name=f"{path} z {z0}-{z1}"
        )
        if progress is not None:
            progress(i + 1, len(starts))
    return merge_block_pores(blocks, spacing_um=spacing, min_voxels=min_voxels, name=str(path))


def volume_pore_recall(
    reference: str | os.PathLike,
    paths: Sequence[str | os.PathLike],
    *,
    threshold: float,
    connectivity: int = 26,
    min_voxels: int = 8,
    region: Sequence[Sequence[int]] | None = None,
    max_bytes: int = RECALL_MAX_BYTES,
) -> Any:
    """Recall by pore size (:func:`tomoflow.recover.pore_recall`) of volume stores against a reference
    store (the HR) over one region: which of the reference's pores each volume finds.

    In memory (pores are matched voxel by voxel): the region of the reference and of every volume is
    read whole, so it must fit in ``max_bytes`` (about 4 bytes per voxel per volume, plus 8 for the
    reference's labels); use ``region`` to measure a part of a larger volume. The volumes must share
    the reference's grid (shape and voxel size), e.g. the LFOV resampled onto the HR grid and the
    network's output of it.

    Returns
    -------
    tomoflow.recover.PoreRecall
        Keyed by each path's name (the path itself where two names clash).

    Raises
    ------
    InputError
        A volume on another grid than the reference's.
    ConfigError
        A bad region, or one too large for ``max_bytes``.
    """
    from tomoflow.recover import pore_recall

    ref = VolumeStore.open(reference)
    r = _region(ref.shape, region)
    n = int(np.prod([b - a for a, b in r]))
    need = n * (8 + 4 * (1 + len(paths)))
    if need > max_bytes:
        raise ConfigError(
            f"recall by pore size reads the region whole: {need / 1e9:.1f} GB for {n} voxels x "
            f"{1 + len(paths)} volumes, over {max_bytes / 1e9:.1f} GB; give a smaller region"
        )
    vs = ref.attrs.voxel_size
    spacing = 1.0 if vs is None else float(vs.value)
    sl = tuple(slice(a, b) for a, b in r)
    vols: dict[str, Any] = {}
    for p in paths:
        st = VolumeStore.open(p)
        if tuple(st.shape) != tuple(ref.shape):
            raise InputError(
                f"shape {tuple(st.shape)} differs from the reference {reference} {tuple(ref.shape)}; "
                "recall compares volumes on one grid (resample the LFOV onto the HR grid first)",
                path=p,
            )
        other = st.attrs.voxel_size
        if other is not None and vs is not None and not np.isclose(float(other.value), spacing, rtol=1e-3):
            raise InputError(f"voxels of {float(other.value):g} um, the reference's are {spacing:g} um", path=p)
        name = Path(p).name if Path(p).name not in vols else str(p)
        vols[name] = np.asarray(st.level(0)[sl], dtype=np.float32)
    return pore_recall(
        np.asarray(ref.level(0)[sl], dtype=np.float32),
        vols,
        threshold=threshold,
        spacing_um=spacing,
        connectivity=connectivity,
        min_voxels=min_voxels,
    )


def plot_pore_sizes(
    metrics: Mapping[str, Any], path: Any, *, bins: int = 30, title: str | None = None, overwrite: bool = False
) -> Path:
    """Overlay the equivalent-diameter histograms of several volumes in a PNG.

    Parameters
    ----------
    metrics
        ``{name: PoreMetrics}``, e.g. ``{"LFOV": ..., "HR": ..., "recovered": ...}``, all measured
        with the same threshold and connectivity.
    path
        PNG file to write (folders are created), or a :class:`tomoflow.io.output.FilePlan` of one. The
        file policy applies: a file tomoflow did not write is never replaced, one it wrote only with
        ``overwrite``.
    bins
        Number of log-spaced bins shared by all volumes.
    title
        Figure title; the protocol (threshold, connectivity, minimum size) is appended.

    Returns
    -------
    Path
        The PNG path.

    Raises
    ------
    ConfigError
        No metrics, or metrics of different thresholds or connectivities
        (:func:`tomoflow.recover.pore_plot.pore_size_figure`).
    """
    from tomoflow.io.output import save_figure
    from tomoflow.recover.pore_plot import pore_size_figure

    return save_figure(pore_size_figure(metrics, bins=bins, title=title), path, overwrite=overwrite)
