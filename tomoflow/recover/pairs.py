"""Training pairs read box by box: a *pair source* gives any box of the (input, target) pair of a
resolution-recovery training, so that training, validation and calibration never hold a whole volume.

A pair source has a ``shape`` ``(z, y, x)`` (the HR grid) and three methods on a box
``((z0, z1), (y0, y1), (x0, x1))`` inside it: ``read_input(box)`` (the LFOV on the HR grid),
``read_target(box)`` (HR) and ``read(box) -> (input, target)``, float32 arrays of the box's shape; and
``identity()``, a dict ``{"input_sha256", "target_sha256"}`` naming its content (for the checkpoint).
:class:`ArrayPair` is the in-memory one (two same-shape arrays); :class:`tomoflow.io.pair_source.StorePair`
reads the HR store and resamples the LFOV store around each box through the registration matrix.
:class:`BoxView` makes either side an array-like (``shape`` and slicing), which is what
:func:`~tomoflow.recover.tiling.read_box` and the tiled prediction take.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from tomoflow.errors import ConfigError, InputError

__all__ = ["Box", "PairSource", "ArrayPair", "BoxView", "as_box", "box_slices"]

Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
"""``((z0, z1), (y0, y1), (x0, x1))``: a box of the HR grid, stops exclusive."""


class PairSource(Protocol):
    """What a trainer reads a training pair through (module docstring)."""

    @property
    def shape(self) -> tuple[int, int, int]: ...

    def read_input(self, box: Box) -> np.ndarray: ...

    def read_target(self, box: Box) -> np.ndarray: ...

    def read(self, box: Box) -> tuple[np.ndarray, np.ndarray]: ...

    def identity(self) -> dict[str, str]: ...


def as_box(box: Any, shape: Sequence[int]) -> Box:
    """``box`` as three ``(start, stop)`` integer pairs, checked to lie inside ``shape``.

    Raises
    ------
    ConfigError
        Not three pairs, or a pair empty or outside the grid.
    """
    try:
        out = tuple((int(a), int(b)) for a, b in box)
    except (TypeError, ValueError):
        raise ConfigError(f"a box is three (start, stop) pairs, got {box!r}") from None
    if len(out) != 3 or any(not 0 <= a < b <= int(n) for (a, b), n in zip(out, shape)):
        raise ConfigError(f"box {box!r} is not a non-empty box inside the grid {tuple(shape)}")
    return out


def box_slices(box: Box) -> tuple[slice, slice, slice]:
    """The box as slices."""
    return tuple(slice(a, b) for a, b in box)  # type: ignore[return-value]


class ArrayPair:
    """A pair source over two same-shape in-memory arrays (input on the HR grid, target).

    Examples
    --------
    >>> import numpy as np
    >>> p = ArrayPair(np.zeros((4, 4, 4)), np.ones((4, 4, 4)))
    >>> x, y = p.read(((0, 2), (0, 4), (1, 3)))
    >>> x.shape, float(y.sum())
    ((2, 4, 2), 16.0)
    """

    def __init__(self, inp: Any, target: Any) -> None:
        x = np.asarray(inp, dtype=np.float32)
        y = np.asarray(target, dtype=np.float32)
        if x.ndim != 3:
            raise InputError(f"the input must be a 3-D (z, y, x) volume, got shape {x.shape}", dataset="input")
        if y.shape != x.shape:
            raise InputError(
                f"input and target shapes differ: {x.shape} and {y.shape}; resample the LFOV onto the HR "
                "grid first (tomoflow.register.resample.resample_to_grid)",
                dataset="target",
            )
        for name, a in (("input", x), ("target", y)):
            if not np.all(np.isfinite(a)):
                raise InputError(
                    f"the {name} volume contains NaN or Inf ({int(np.sum(~np.isfinite(a)))} voxels); "
                    "crop or repair it before training",
                    dataset=name,
                )
        self.input_array, self.target_array = x, y

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.input_array.shape)  # type: ignore[return-value]

    def read_input(self, box: Box) -> np.ndarray:
        return self.input_array[box_slices(as_box(box, self.shape))]

    def read_target(self, box: Box) -> np.ndarray:
        return self.target_array[box_slices(as_box(box, self.shape))]

    def read(self, box: Box) -> tuple[np.ndarray, np.ndarray]:
        return self.read_input(box), self.read_target(box)

    def identity(self) -> dict[str, str]:
        return {
            "input_sha256": hashlib.sha256(np.ascontiguousarray(self.input_array).tobytes()).hexdigest(),
            "target_sha256": hashlib.sha256(np.ascontiguousarray(self.target_array).tobytes()).hexdigest(),
        }

    def for_worker(self) -> ArrayPair:
        """The source to use in a data-loader worker process (itself: the arrays are in memory)."""
        return self


class BoxView:
    """One side of a pair source as an array-like: ``shape``, ``ndim``, ``dtype`` and basic slicing
    (unit steps, inside the grid), each read a box of the source.

    Parameters
    ----------
    source
        A pair source.
    side
        ``"input"`` or ``"target"``.

    Examples
    --------
    >>> import numpy as np
    >>> v = BoxView(ArrayPair(np.arange(64.0).reshape(4, 4, 4), np.zeros((4, 4, 4))), "input")
    >>> v.shape, float(v[1:2, 0:1, 2:4].sum())
    ((4, 4, 4), 37.0)
    """

    dtype = np.dtype(np.float32)
    ndim = 3

    def __init__(self, source: Any, side: str) -> None:
        if side not in ("input", "target"):
            raise ConfigError(f"side must be 'input' or 'target', got {side!r}")
        self.source, self.side = source, side

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.source.shape)  # type: ignore[return-value]

    def __getitem__(self, key: Any) -> np.ndarray:
        from tomoflow._checks import box_of_slices

        box = box_of_slices(key, self.shape, "a BoxView")
        read = self.source.read_input if self.side == "input" else self.source.read_target
        return read(box)
