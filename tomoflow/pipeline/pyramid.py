"""The resolution pyramid of a volume store, on the stage engine: levels 1.. from level 0.

Every stage that writes a volume store (``recon``, ``resample``, ``recover``) writes its level 0 by
blocks, then calls :func:`run_pyramid`: each chunk of level ``k`` is the 2x block mean
(:func:`tomoflow.io.volume_store.block_mean_2x`) of the matching region of level ``k - 1``, one
``pyramid-level`` task per chunk, recorded as step ``level-k`` of the stage, so an interrupted pyramid
resumes like any other step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tomoflow.io.volume_store import VolumeStore, block_mean_2x
from tomoflow.pipeline.engine import Block, run_blocks

__all__ = ["chunk_grid", "run_pyramid"]


def chunk_grid(shape: tuple[int, ...], chunks: tuple[int, ...]) -> list[tuple[slice, ...]]:
    """Every chunk region of an array, in C order (the marker unit order).

    Parameters
    ----------
    shape
        The array's shape.
    chunks
        Its chunk shape (the last chunk along an axis may be partial).

    Returns
    -------
    list of tuple of slice
        One region per chunk; its position in the list is the chunk's unit number.

    Examples
    --------
    >>> chunk_grid((3, 4), (2, 4))
    [(slice(0, 2, None), slice(0, 4, None)), (slice(2, 3, None), slice(0, 4, None))]
    """
    counts = [-(-s // c) for s, c in zip(shape, chunks)]
    return [
        tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(idx, chunks, shape)) for idx in np.ndindex(*counts)
    ]


def _pyramid_block(out: str, level: int, region: tuple[slice, ...]) -> np.ndarray:
    """Block function: one chunk of ``level`` from ``level - 1`` of the same store."""
    src = VolumeStore.open(out, require_complete=False).level(level - 1)
    src_sl = tuple(slice(2 * s.start, min(2 * s.stop, n)) for s, n in zip(region, src.shape))
    return block_mean_2x(np.asarray(src[src_sl]))


def _pyramid_blocks(out: str, vstore: VolumeStore, level: int) -> list[Block]:
    arr = vstore.level(level)
    return [
        Block(
            units=(i,),
            region=r,
            args=(out, level, r),
            nbytes=9 * 4 * int(np.prod([s.stop - s.start for s in r])),
            label=f"level {level} chunk {i}",
        )
        for i, r in enumerate(chunk_grid(tuple(arr.shape), tuple(arr.chunks)))
    ]


def run_pyramid(
    out: str,
    store: VolumeStore,
    stage: str,
    *,
    client: Any,
    cluster: Any,
    progress: Callable[[str, int, int], None] | None,
) -> dict[str, float]:
    """Compute levels 1.. of a volume store from level 0, as steps ``level-k`` of ``stage``.

    Parameters
    ----------
    out
        Absolute path of the volume store (its level 0 complete).
    store
        The store, opened for writing.
    stage
        The stage whose record the steps belong to (``recon``, ``resample``, ``recover``).
    client, cluster
        The Dask client (None: a local thread pool) and its resources
        (:func:`tomoflow.cluster.cluster_resources`).
    progress
        Called as ``progress(label, done, total)`` as tasks finish.

    Returns
    -------
    dict
        Wall time in seconds of each level, keyed ``pyramid_level_<k>``.
    """
    timings = {}
    for level in range(1, store.n_levels):
        rep = run_blocks(
            out,
            _pyramid_blocks(out, store, level),
            _pyramid_block,
            stage=stage,
            step=f"level-{level}",
            array=str(level),
            name="pyramid-level",
            client=client,
            cluster=cluster,
            progress=progress,
            progress_label=f"pyramid level {level}",
        )
        timings[f"pyramid_level_{level}"] = rep.wall_s
    return timings
