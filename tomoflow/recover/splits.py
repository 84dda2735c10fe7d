"""The spatial train/validation split of a resolution-recovery training pair.

**Split** (:func:`plan_split`): the volume is cut into spatial blocks on the grid of
:func:`~tomoflow.recover.tiling.plan_tiles` (block ``ceil(n / g)`` per axis): octants ``(2, 2, 2)``, or
4 slabs across the longest axis when a patch does not fit beside a held-out octant; ``max(1,
round(val_fraction * n_blocks))`` blocks, drawn from ``seed``, are held out. Training patches are drawn
uniformly among the corners whose patch box does not overlap any held-out block (:meth:`Split.sample`),
so no target voxel of a held-out block is ever trained on. Validation predicts the held-out blocks
exactly as inference does (``predict_tiled`` with the split's block size, ``pad_mode="reflect"``,
context from the input around them), so the validation numbers are those of the shipped inference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tomoflow._checks import check_choice, check_int, check_number
from tomoflow.errors import ConfigError, InputError

__all__ = ["SPLITS", "PAD_MODE", "Split", "plan_split", "spread_boxes", "halton"]

SPLITS = ("auto", "octants", "slabs")
PAD_MODE = "reflect"  # the border rule of validation (and the one the card tells inference to use)


@dataclass
class Split:
    """Spatial blocks of the training volume, some held out for validation (:func:`plan_split`).

    Attributes
    ----------
    shape
        Volume shape ``(z, y, x)``.
    kind
        ``"octants"`` or ``"slabs"``.
    block
        Block size per axis (voxels); block ``k`` of an axis is ``[k * block, min((k + 1) * block, n))``,
        the tiles of :func:`~tomoflow.recover.tiling.plan_tiles` with this block.
    grid
        Number of blocks per axis.
    held_out
        Block indices ``(iz, iy, ix)`` of the validation blocks.
    patch
        Training patch edge (voxels).
    """

    shape: tuple[int, int, int]
    kind: str
    block: tuple[int, int, int]
    grid: tuple[int, int, int]
    held_out: tuple[tuple[int, int, int], ...]
    patch: int

    def box(self, index: Sequence[int]) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """``(start, stop)`` of block ``index``."""
        start = tuple(int(i) * b for i, b in zip(index, self.block))
        stop = tuple(min(s + b, n) for s, b, n in zip(start, self.block, self.shape))
        return start, stop  # type: ignore[return-value]

    @property
    def held_out_boxes(self) -> list[tuple[tuple[int, int, int], tuple[int, int, int]]]:
        return [self.box(i) for i in self.held_out]

    @property
    def held_out_mask(self) -> np.ndarray:
        """Boolean volume, True on held-out voxels (a whole-volume array: for small volumes and tests;
        :meth:`held_out_in` gives one box's)."""
        return self.held_out_in(tuple((0, n) for n in self.shape))

    def held_out_in(self, box: Sequence[Sequence[int]]) -> np.ndarray:
        """Boolean array of ``box``'s shape (``((z0, z1), (y0, y1), (x0, x1))``), True on held-out voxels."""
        lo = [int(a) for a, _ in box]
        m = np.zeros(tuple(int(b) - int(a) for a, b in box), dtype=bool)
        for a, b in self.held_out_boxes:
            sl = tuple(slice(max(s - o, 0), max(e - o, 0)) for s, e, o in zip(a, b, lo))
            m[sl] = True
        return m

    @property
    def val_voxels(self) -> int:
        """Number of held-out voxels (the blocks do not overlap)."""
        return int(sum(np.prod([e - s for s, e in zip(a, b)]) for a, b in self.held_out_boxes))

    def _forbidden(self) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
        """Per held-out block, the box of patch corners overlapping it (``a - p < c < b`` on every axis)."""
        p = self.patch
        out = []
        for a, b in self.held_out_boxes:
            lo = tuple(max(s - p + 1, 0) for s in a)
            hi = tuple(min(max(e, 0), n - p + 1) for e, n in zip(b, self.shape))
            if all(h > low for low, h in zip(lo, hi)):
                out.append((lo, hi))
        return out

    def _allowed(self, corners: np.ndarray) -> np.ndarray:
        ok = np.ones(len(corners), dtype=bool)
        for lo, hi in self._forbidden():
            ok &= ~np.all((corners >= np.asarray(lo)) & (corners < np.asarray(hi)), axis=1)
        return ok

    def corner_mask(self) -> np.ndarray:
        """Boolean ``(n - patch + 1)`` per axis: True where a patch with that corner overlaps no
        held-out block (a whole-volume array: for small volumes and tests)."""
        ok = np.ones(tuple(n - self.patch + 1 for n in self.shape), dtype=bool)
        for lo, hi in self._forbidden():
            ok[tuple(slice(a, b) for a, b in zip(lo, hi))] = False
        return ok

    @property
    def n_positions(self) -> int:
        """Number of training patch positions (counted on the few cells the held-out blocks cut the
        corner grid into, never voxel by voxel)."""
        n = [s - self.patch + 1 for s in self.shape]
        boxes = self._forbidden()
        cuts = [sorted({0, m, *(lo[k] for lo, _ in boxes), *(hi[k] for _, hi in boxes)}) for k, m in enumerate(n)]
        total = 0
        for cell in np.ndindex(*(len(c) - 1 for c in cuts)):
            lo = [cuts[k][i] for k, i in enumerate(cell)]
            hi = [cuts[k][i + 1] for k, i in enumerate(cell)]
            if not any(all(bl[k] <= lo[k] and hi[k] <= bh[k] for k in range(3)) for bl, bh in boxes):
                total += int(np.prod([h - low for low, h in zip(lo, hi)]))
        return total

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``(n, 3)`` patch corners drawn uniformly among those overlapping no held-out block (rejection
        sampling: uniform corners, those overlapping a held-out block drawn again; memory O(n))."""
        if self.n_positions == 0:
            raise ConfigError(
                f"no {self.patch}-voxel patch fits beside the held-out blocks of a "
                f"{'x'.join(map(str, self.shape))} volume; use a smaller patch"
            )
        hi = np.asarray([s - self.patch + 1 for s in self.shape])
        out = np.empty((0, 3), dtype=np.int64)
        while len(out) < int(n):
            c = rng.integers(0, hi, size=(max(4 * int(n), 64), 3))
            out = np.concatenate([out, c[self._allowed(c)]])
        return out[: int(n)]

    def to_dict(self) -> dict[str, Any]:
        held = self.val_voxels
        total = int(np.prod(self.shape))
        return {
            "kind": self.kind,
            "grid": list(self.grid),
            "block": list(self.block),
            "held_out": [list(i) for i in self.held_out],
            "held_out_boxes": [[list(a), list(b)] for a, b in self.held_out_boxes],
            "val_voxels": held,
            "train_voxels": total - held,
            "train_patch_positions": self.n_positions,
            "rule": "training patches overlap no held-out block; validation = whole held-out blocks, "
            "predicted as at inference (predict_tiled, reflect border, input context around them)",
        }


def _grid_split(shape: tuple[int, int, int], kind: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    want: tuple[int, ...]
    if kind == "octants":
        want = (2, 2, 2)
    else:
        ax = int(np.argmax(shape))
        want = tuple(4 if k == ax else 1 for k in range(3))
    block = tuple(max(1, math.ceil(n / g)) for n, g in zip(shape, want))
    grid = tuple(math.ceil(n / b) for n, b in zip(shape, block))
    return block, grid  # type: ignore[return-value]


def plan_split(
    shape: Sequence[int], patch: int, *, kind: str = "auto", val_fraction: float = 0.125, seed: int = 0
) -> Split:
    """Spatial train/validation split of a ``shape`` volume for ``patch``-voxel training patches.

    Parameters
    ----------
    shape
        ``(z, y, x)``.
    patch
        Training patch edge (voxels).
    kind
        ``"octants"`` (2 x 2 x 2 blocks), ``"slabs"`` (4 across the longest axis) or ``"auto"``: octants
        when a patch fits beside the held-out octants, else slabs.
    val_fraction
        Fraction of the blocks held out: ``max(1, round(val_fraction * n_blocks))``, fewer than all.
    seed
        Which blocks are held out: a random order of the blocks drawn from ``seed``; the first
        ``n_val`` unless no patch fits beside them, then the next ``n_val`` (cyclically), and so on.

    Raises
    ------
    ConfigError
        Bad kind or fraction, or no patch fits beside the held-out blocks.
    """
    shp = tuple(int(s) for s in shape)
    if len(shp) != 3 or min(shp) < 1:
        raise ConfigError(f"shape must be three positive sizes (z, y, x), got {tuple(shape)}")
    patch = check_int("patch", patch, low=1)
    kind = check_choice("split", kind, SPLITS)
    val_fraction = check_number("val_fraction", val_fraction, low=0.0, high=0.5, low_open=True)
    if patch > min(shp):
        raise InputError(
            f"the volume {'x'.join(map(str, shp))} is smaller than a training patch of {patch} voxels "
            "on some axis; use a smaller patch",
            dataset="input",
        )
    split = None
    for k in ("octants", "slabs") if kind == "auto" else (kind,):
        block, grid = _grid_split(shp, k)
        blocks = [tuple(int(v) for v in i) for i in np.ndindex(*grid)]
        n_val = max(1, int(round(val_fraction * len(blocks))))
        if n_val >= len(blocks):
            continue
        order = np.random.default_rng([int(seed), 11]).permutation(len(blocks))
        for shift in range(len(blocks)):  # the seed's choice, else the next that leaves room for a patch
            held = tuple(sorted(blocks[order[(shift + j) % len(blocks)]] for j in range(n_val)))
            split = Split(
                shape=shp,
                kind=k,
                block=block,
                grid=grid,
                held_out=held,
                patch=patch,
            )
            if split.n_positions > 0:
                return split
    raise ConfigError(
        f"no {patch}-voxel training patch fits beside the held-out "
        f"{split.kind if split else kind} of a {'x'.join(map(str, shp))} volume; use a smaller patch "
        "(or a larger region of interest)"
    )


def halton(n: int, start: int = 1) -> np.ndarray:
    """``(n, 3)`` points of the Halton sequence (bases 2, 3, 5) in ``[0, 1)``, from index ``start``: evenly
    spread, deterministic points (index 0 is the origin, so the default starts after it).

    Examples
    --------
    >>> halton(2).round(3).tolist()
    [[0.5, 0.333, 0.2], [0.25, 0.667, 0.4]]
    """
    out = np.zeros((int(n), 3))
    for j, base in enumerate((2, 3, 5)):
        for k in range(int(n)):
            i, f, r = k + int(start), 1.0, 0.0
            while i > 0:
                f /= base
                r += f * (i % base)
                i //= base
            out[k, j] = r
    return out


def spread_boxes(shape: Sequence[int], edge: int, max_voxels: int) -> list[tuple[tuple[int, int], ...]]:
    """A deterministic sample of boxes spread evenly over a ``shape`` volume, at most ``max_voxels`` in all:
    the whole volume as one box when it fits, else ``max_voxels // edge³`` cubes of ``edge`` voxels whose
    corners follow the Halton sequence (:func:`halton`) over the volume, so the interior is sampled as well
    as the faces.

    Examples
    --------
    >>> spread_boxes((10, 10, 10), 4, 2000)
    [((0, 10), (0, 10), (0, 10))]
    >>> boxes = spread_boxes((100, 100, 100), 10, 8000)
    >>> len(boxes), boxes[0]
    (8, ((45, 55), (30, 40), (18, 28)))
    """
    shp = tuple(int(n) for n in shape)
    if int(np.prod(shp)) <= max_voxels:
        return [tuple((0, n) for n in shp)]
    e = [min(int(edge), n) for n in shp]
    count = max(1, int(max_voxels // int(np.prod(e))))
    room = np.asarray([n - ek for n, ek in zip(shp, e)], dtype=float)
    corners = np.floor(halton(count) * (room + 1)).astype(int)
    return [tuple((int(c), int(c) + ek) for c, ek in zip(corner, e)) for corner in corners]
