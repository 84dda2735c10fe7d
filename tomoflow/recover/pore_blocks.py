"""Pore metrics of volumes larger than memory, block by block, exactly.

:func:`block_pores` labels one block alone and keeps the voxel count of every label and the labels on
its six faces; :func:`merge_block_pores` joins labels of voxels that touch across block borders (faces,
and for 18- and 26-connectivity also edges and corners where 3 to 8 blocks meet) with a
connected-components pass over the block-boundary voxels, then applies the minimum size to the merged
pores. The result equals :func:`tomoflow.recover.pores.pore_metrics` of the whole volume for any
partition of it into boxes (same protocol: :mod:`tomoflow.recover.pores`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from tomoflow._checks import check_int
from tomoflow.errors import InputError
from tomoflow.recover.pores import (
    CONNECTIVITIES,
    PoreMetrics,
    _check_connectivity,
    _check_mask,
    _check_spacing,
    _check_threshold,
    _check_volume,
    _label,
    _metrics,
)

__all__ = ["BlockPores", "block_pores", "merge_block_pores", "FACES"]

#: Order of the faces kept by :class:`BlockPores`.
FACES = ("z-", "z+", "y-", "y+", "x-", "x+")


@dataclass
class BlockPores:
    """Pores of one block, labelled alone (:func:`block_pores`), ready for :func:`merge_block_pores`.

    Attributes
    ----------
    shape
        ``(z, y, x)`` shape of the block (voxels).
    voxel_counts
        ``(n_labels,)`` int64 voxels of labels ``1..n_labels`` (no minimum size applied yet).
    faces
        Six int32 label images of the block's faces, in the order ``z-, z+, y-, y+, x-, x+``
        (``block[0]``, ``block[-1]``, ``block[:, 0]``, ``block[:, -1]``, ``block[:, :, 0]``,
        ``block[:, :, -1]``); 0 is not pore.
    analysed_voxels
        Voxels of the block inside the mask.
    threshold, connectivity
        The protocol the block was labelled with.
    """

    shape: tuple[int, int, int]
    voxel_counts: np.ndarray
    faces: tuple[np.ndarray, ...] = field(repr=False)
    analysed_voxels: int
    threshold: float
    connectivity: int

    @property
    def n_labels(self) -> int:
        """Number of labels (pore components of the block alone)."""
        return int(self.voxel_counts.size)


# ----------------------------------------------------------------------------- blockwise
def block_pores(
    block: np.ndarray, *, threshold: float, connectivity: int = 26, mask: np.ndarray | None = None, name: str = "block"
) -> BlockPores:
    """Label the pore voxels of one block alone, keeping what :func:`merge_block_pores` needs.

    Parameters
    ----------
    block
        ``(z, y, x)`` grey values of one block of the volume (finite).
    threshold, connectivity
        As in :func:`~tomoflow.recover.pores.pore_metrics`; the same for every block.
    mask
        ``(z, y, x)`` boolean analysed region of this block, or None for all of it.
    name
        What the block is, named in errors.

    Returns
    -------
    BlockPores
        Voxel counts of the block's components and the labels on its six faces. No minimum size is
        applied: a pore split between blocks may be small in each.
    """
    threshold = _check_threshold(threshold)
    connectivity = _check_connectivity(connectivity)
    v = _check_volume(block, name)
    m = _check_mask(mask, v.shape, name)
    labels, counts, analysed = _label(v, threshold, connectivity, m)
    faces = tuple(
        np.ascontiguousarray(f, dtype=np.int32)
        for f in (labels[0], labels[-1], labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1])
    )
    return BlockPores(
        shape=cast("tuple[int, int, int]", tuple(int(s) for s in v.shape)),  # 3-D: _check_volume
        voxel_counts=counts,
        faces=faces,
        analysed_voxels=analysed,
        threshold=threshold,
        connectivity=connectivity,
    )


def _block_list(
    blocks: Mapping[Any, BlockPores] | Iterable[tuple[Any, BlockPores]],
) -> list[tuple[tuple[int, int, int], BlockPores]]:
    items = list(blocks.items()) if isinstance(blocks, Mapping) else list(blocks)
    if not items:
        raise InputError("no blocks to merge", dataset="blocks")
    out = []
    for item in items:
        try:
            origin, bp = item
        except (TypeError, ValueError):
            raise InputError(
                f"blocks must be {{origin: BlockPores}} or (origin, BlockPores) pairs, got {item!r}", dataset="blocks"
            ) from None
        if not isinstance(bp, BlockPores):
            raise InputError(f"block at {origin!r} is a {type(bp).__name__}, not BlockPores", dataset="blocks")
        o = tuple(np.asarray(origin).ravel().tolist()) if np.ndim(origin) else ()
        if len(o) != 3 or not all(isinstance(c, int) and c >= 0 for c in o):
            raise InputError(f"block origin must be 3 voxel indices >= 0 (z, y, x), got {origin!r}", dataset="blocks")
        out.append((o, bp))
    first = out[0][1]
    for o, bp in out:
        if bp.threshold != first.threshold or bp.connectivity != first.connectivity:
            raise InputError(
                f"block at {o} was labelled with threshold {bp.threshold:g} and connectivity {bp.connectivity}, "
                f"others with {first.threshold:g} and {first.connectivity}: one protocol for all blocks",
                dataset="blocks",
            )
    return out


def _face_voxels(origin: tuple[int, int, int], bp: BlockPores) -> tuple[np.ndarray, np.ndarray]:
    """Global ``(n, 3)`` coordinates and block labels of the pore voxels on a block's faces."""
    nz, ny, nx = bp.shape
    fixed = (0, nz - 1, 0, ny - 1, 0, nx - 1)
    coords, labels = [], []
    for k, face in enumerate(bp.faces):
        axis = k // 2
        idx = np.nonzero(face)
        c = np.empty((idx[0].size, 3), dtype=np.int64)
        free = [a for a in range(3) if a != axis]
        c[:, axis] = fixed[k]
        c[:, free[0]] = idx[0]
        c[:, free[1]] = idx[1]
        coords.append(c + np.asarray(origin, dtype=np.int64))
        labels.append(face[idx].astype(np.int64))
    return np.concatenate(coords), np.concatenate(labels)


def _half_offsets(connectivity: int) -> np.ndarray:
    """Neighbour offsets of one half of the connectivity's neighbourhood (each pair found once)."""
    rank = CONNECTIVITIES[connectivity]
    offs = [tuple(c - 1 for c in d) for d in np.ndindex(3, 3, 3)]
    return np.array([d for d in offs if d > (0, 0, 0) and sum(map(abs, d)) <= rank], dtype=np.int64)


def _border_edges(
    items: list[tuple[tuple[int, int, int], BlockPores]], offsets: np.ndarray, first_id: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of global label ids of pore voxels that touch across block borders."""
    coords, gids, owner = [], [], []
    for b, (origin, bp) in enumerate(items):
        c, lab = _face_voxels(origin, bp)
        coords.append(c)
        gids.append(first_id[b] + lab - 1)
        owner.append(np.full(lab.size, b, dtype=np.int64))
    c, gid, own = np.concatenate(coords), np.concatenate(gids), np.concatenate(owner)
    if c.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    extent = c.max(axis=0) + 2  # room for the +1 neighbour of the last voxel
    keys = np.ravel_multi_index(tuple((c + 1).T), tuple(extent + 1))
    order = np.argsort(keys, kind="stable")
    keys, gid, own, c = keys[order], gid[order], own[order], c[order]
    dup = np.nonzero(keys[1:] == keys[:-1])[0]
    if np.any(own[dup] != own[dup + 1]):
        z, y, x = c[dup[own[dup] != own[dup + 1]][0]]
        raise InputError(f"blocks overlap (voxel {(int(z), int(y), int(x))} is in two blocks)", dataset="blocks")
    keep = np.ones(keys.size, dtype=bool)
    keep[dup + 1] = False  # the same face voxel twice: a block one voxel thick
    keys, gid, own, c = keys[keep], gid[keep], own[keep], c[keep]
    left: list[np.ndarray] = []
    right: list[np.ndarray] = []
    for d in offsets:
        nb = np.ravel_multi_index(tuple((c + 1 + d).T), tuple(extent + 1))
        pos = np.minimum(np.searchsorted(keys, nb), keys.size - 1)
        hit = (keys[pos] == nb) & (own[pos] != own)
        left.append(gid[hit])
        right.append(gid[pos[hit]])
    return np.concatenate(left), np.concatenate(right)


def merge_block_pores(
    blocks: Mapping[tuple[int, int, int], BlockPores] | Iterable[tuple[tuple[int, int, int], BlockPores]],
    *,
    spacing_um: float | Sequence[float] = (1.0, 1.0, 1.0),
    min_voxels: int = 8,
    name: str = "volume",
) -> PoreMetrics:
    """Pore metrics of a volume from its independently labelled blocks, exactly as for the whole volume.

    Pore voxels that touch across block borders (by a face, and with 18/26-connectivity also by an
    edge or corner, including voxels of blocks that meet only at an edge or a corner) join their
    labels; the joined components are the pores. The minimum size is applied after joining, so a pore
    split into small parts is still one pore. Blocks must not overlap (checked on their pore voxels)
    and together make the analysed volume; any partition into boxes works, not only a regular grid.

    Parameters
    ----------
    blocks
        ``{origin: BlockPores}`` or ``(origin, BlockPores)`` pairs; ``origin`` is the ``(z, y, x)``
        voxel index of the block's first voxel in the volume. All labelled with one threshold and
        connectivity (:func:`block_pores`).
    spacing_um, min_voxels, name
        As in :func:`~tomoflow.recover.pores.pore_metrics`.

    Returns
    -------
    PoreMetrics
        Equal to :func:`~tomoflow.recover.pores.pore_metrics` of the assembled volume and mask.

    Raises
    ------
    InputError
        No blocks, bad origins, blocks of different protocols, overlapping blocks, no analysed voxels.
    ConfigError
        Negative ``min_voxels`` or bad voxel sizes.
    """
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components

    min_voxels = check_int("min_voxels (smallest pore, voxels)", min_voxels, low=0)
    spacing = _check_spacing(spacing_um)
    items = _block_list(blocks)
    sizes = np.array([bp.n_labels for _, bp in items], dtype=np.int64)
    first_id = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    counts = np.concatenate([bp.voxel_counts.astype(np.int64) for _, bp in items])
    analysed = sum(int(bp.analysed_voxels) for _, bp in items)
    connectivity = items[0][1].connectivity
    a, b = _border_edges(items, _half_offsets(connectivity), first_id)
    n = counts.size
    if a.size:
        graph = sparse.coo_matrix((np.ones(a.size, dtype=np.int8), (a, b)), shape=(n, n)).tocsr()
        n_comp, comp = connected_components(graph, directed=False)
        merged = np.zeros(n_comp, dtype=np.int64)
        np.add.at(merged, comp, counts)
    else:
        merged = counts
    return _metrics(
        merged,
        analysed,
        threshold=items[0][1].threshold,
        connectivity=connectivity,
        min_voxels=min_voxels,
        spacing_um=spacing,
        name=name,
    )
