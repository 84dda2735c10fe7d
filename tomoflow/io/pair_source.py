"""The training pair of a resolution-recovery training read from its stores, box by box.

:class:`ResampledPair` is a pair source (:mod:`tomoflow.recover.pairs`) over two array-likes: the HR
volume (the target, read by slicing) and the LFOV volume, resampled onto each requested box of the HR
grid through the registration matrix (:class:`tomoflow.register.resample.ResampledGrid`: one
interpolation, reading only the LFOV region the box needs: exactly what ``tomoflow resample`` computes
there). No array of the overlap's size exists and nothing is written. :class:`StorePair` opens the two
volume stores itself, lazily and again in each process (a data-loader worker opens its own zarr arrays;
pickling it carries the paths and the matrix only).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from tomoflow._checks import box_of_slices
from tomoflow.errors import InputError
from tomoflow.recover.pairs import Box, as_box, box_slices
from tomoflow.register.resample import ResampledGrid, footprint
from tomoflow.register.transform import check_affine

__all__ = ["ChunkCache", "ResampledPair", "StorePair", "CHUNK_CACHE_BYTES"]

CHUNK_CACHE_BYTES = 256 * 1024**2
"""Decoded store chunks a :class:`StorePair` keeps per process and per volume (bytes): random patches of a
volume of a few chunks then decode each chunk once, not once a patch."""


class ChunkCache:
    """A chunked array-like (zarr) read through a cache of its decoded chunks (least recently used first out).

    Parameters
    ----------
    array
        ``(z, y, x)`` array-like with ``shape``, ``dtype``, ``chunks`` and basic slicing.
    budget_bytes
        Most bytes of decoded chunks kept; a chunk larger than it is read and not kept.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.arange(1000.0).reshape(10, 10, 10)
    >>> c = ChunkCache(a, 10**6, chunks=(4, 4, 4))
    >>> bool(np.array_equal(c[3:9, 0:5, 7:10], a[3:9, 0:5, 7:10])), c.cached
    (True, 12)
    """

    ndim = 3

    def __init__(self, array: Any, budget_bytes: int, chunks: Any = None) -> None:
        self.array = array
        self.shape = tuple(int(n) for n in array.shape)
        self.dtype = np.dtype(array.dtype)
        self.chunks = tuple(int(c) for c in (chunks or getattr(array, "chunks", None) or self.shape))
        self.budget = int(budget_bytes)
        self._lru: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()
        self._bytes = 0

    @property
    def cached(self) -> int:
        """Number of chunks held."""
        return len(self._lru)

    def _chunk(self, idx: tuple[int, ...]) -> np.ndarray:
        hit = self._lru.get(idx)
        if hit is not None:
            self._lru.move_to_end(idx)
            return hit
        sl = tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(idx, self.chunks, self.shape))
        a = np.asarray(self.array[sl])
        if a.nbytes <= self.budget:
            self._lru[idx] = a
            self._bytes += a.nbytes
            while self._bytes > self.budget:
                _, old = self._lru.popitem(last=False)
                self._bytes -= old.nbytes
        return a

    def __getitem__(self, key: Any) -> np.ndarray:
        box = box_of_slices(key, self.shape, "a ChunkCache")
        out = np.empty(tuple(max(b - a, 0) for a, b in box), dtype=self.dtype)
        if out.size == 0:
            return out
        ranges = [range(a // c, (b - 1) // c + 1) for (a, b), c in zip(box, self.chunks)]
        for idx in itertools.product(*ranges):
            chunk = self._chunk(idx)
            src, dst = [], []
            for (a, b), i, c in zip(box, idx, self.chunks):
                lo, hi = max(a, i * c), min(b, (i + 1) * c)
                src.append(slice(lo - i * c, hi - i * c))
                dst.append(slice(lo - a, hi - a))
            out[tuple(dst)] = chunk[tuple(src)]
        return out


def _json_sha256(doc: Any) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def _spacing(um: Any) -> tuple[float, float, float]:
    return tuple(float(v) for v in np.broadcast_to(np.asarray(um, dtype=np.float64), (3,)))  # type: ignore[return-value]


class ResampledPair:
    """Pair source: ``target`` (HR) sliced, ``lfov`` resampled onto each box of the HR grid.

    Parameters
    ----------
    lfov, hr
        ``(z, y, x)`` array-likes (NumPy, zarr): the LFOV volume and the HR region of interest.
    matrix
        4 x 4 HR -> LFOV matrix (physical micrometres, origins at the first voxel centres;
        ``tomoflow register``'s ``"matrix"``).
    hr_um, lfov_um
        Voxel sizes (micrometres, one or three ``(z, y, x)``).
    order
        Spline order of the interpolation (3: cubic, as ``tomoflow resample``).

    Examples
    --------
    >>> import numpy as np
    >>> lf = np.random.default_rng(0).random((24, 24, 24)).astype(np.float32)
    >>> p = ResampledPair(lf, np.zeros((16, 16, 16)), np.eye(4), 1.0, 1.0)
    >>> x, y = p.read(((2, 6), (0, 4), (0, 4)))
    >>> bool(np.allclose(x, lf[2:6, 0:4, 0:4], atol=1e-5)), y.shape
    (True, (4, 4, 4))
    """

    def __init__(self, lfov: Any, hr: Any, matrix: Any, hr_um: Any, lfov_um: Any, *, order: int = 3) -> None:
        self._lfov, self._hr = lfov, hr
        self.matrix = check_affine(np.asarray(matrix, dtype=np.float64))
        self.hr_um, self.lfov_um = _spacing(hr_um), _spacing(lfov_um)
        self.order = int(order)

    def _arrays(self) -> tuple[Any, Any]:
        return self._lfov, self._hr

    def check_footprint(self) -> None:
        """Refuse, before any work, a pair whose HR grid maps (partly) outside the LFOV volume.

        Raises
        ------
        InputError
            Some HR voxel centre maps outside the LFOV's voxel centres' extent (half a voxel of margin).
        """
        lfov, hr = self._arrays()
        lo, hi = footprint(self.matrix, hr.shape, self.hr_um, self.lfov_um)
        n = np.asarray(lfov.shape, dtype=float)
        if np.any(lo < -0.5 - 1e-6) or np.any(hi > n - 0.5 + 1e-6):
            raise InputError(
                f"the HR grid {tuple(hr.shape)} maps to LFOV voxels {np.round(lo, 2).tolist()} .. "
                f"{np.round(hi, 2).tolist()} through the registration, outside the LFOV volume of shape "
                f"{tuple(lfov.shape)}; check the registration (HR -> LFOV matrix) and the voxel sizes",
                dataset="input",
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self._arrays()[1].shape)  # type: ignore[return-value]

    def read_input(self, box: Box) -> np.ndarray:
        lfov, hr = self._arrays()
        grid = ResampledGrid(lfov, self.matrix, hr.shape, self.hr_um, self.lfov_um, order=self.order)
        return grid[box_slices(as_box(box, hr.shape))]

    def read_target(self, box: Box) -> np.ndarray:
        _, hr = self._arrays()
        b = as_box(box, hr.shape)
        y = np.asarray(hr[box_slices(b)], dtype=np.float32)
        if not np.all(np.isfinite(y)):
            raise InputError(f"NaN or Inf in the target (HR) box {b}", dataset="target")
        return y

    def read(self, box: Box) -> tuple[np.ndarray, np.ndarray]:
        return self.read_input(box), self.read_target(box)

    def identity(self) -> dict[str, str]:
        """sha256 of both volumes' values (read whole: :class:`StorePair` names stores by their identity)."""

        def digest(a: Any) -> str:
            return hashlib.sha256(np.ascontiguousarray(np.asarray(a[...], dtype=np.float32)).tobytes()).hexdigest()

        lfov, hr = self._arrays()
        return {"input_sha256": self._input_digest(digest(lfov)), "target_sha256": digest(hr)}

    def _input_digest(self, lfov_id: str) -> str:
        return _json_sha256(
            {
                "lfov": lfov_id,
                "matrix": self.matrix.tolist(),
                "hr_um": list(self.hr_um),
                "lfov_um": list(self.lfov_um),
                "order": self.order,
                "shape": list(self.shape),
            }
        )

    def for_worker(self) -> ResampledPair:
        """The source to use in a data-loader worker process."""
        return self


def _cached(array: Any) -> Any:
    """``array`` through a :class:`ChunkCache` when all of it fits in :data:`CHUNK_CACHE_BYTES` (then every
    chunk is decoded once); a larger volume is read directly (random patches would rarely find their
    chunk still cached, and decoding a whole chunk costs more than a patch's read)."""
    nbytes = int(np.prod(array.shape)) * np.dtype(array.dtype).itemsize
    return ChunkCache(array, CHUNK_CACHE_BYTES) if nbytes <= CHUNK_CACHE_BYTES else array


class StorePair(ResampledPair):
    """:class:`ResampledPair` over two volume stores' level 0, opened lazily in each process (a volume
    that fits in :data:`CHUNK_CACHE_BYTES` read through a :class:`ChunkCache`).

    Parameters
    ----------
    hr, lfov
        Paths of the HR and LFOV volume stores.
    matrix, hr_um, lfov_um, order
        As :class:`ResampledPair`.

    Raises
    ------
    StoreError
        A path is not a volume store.
    """

    def __init__(
        self,
        hr: str | os.PathLike,
        lfov: str | os.PathLike,
        matrix: Any,
        hr_um: Any,
        lfov_um: Any,
        *,
        order: int = 3,
    ) -> None:
        self.hr_path, self.lfov_path = Path(hr), Path(lfov)
        super().__init__(None, None, matrix, hr_um, lfov_um, order=order)
        self.check_footprint()  # open now: a bad store or registration fails here, before any work

    def _arrays(self) -> tuple[Any, Any]:
        if self._hr is None or self._lfov is None:
            from tomoflow.io.volume_store import VolumeStore

            self._hr = _cached(VolumeStore.open(self.hr_path).level(0))
            self._lfov = _cached(VolumeStore.open(self.lfov_path).level(0))
        return self._lfov, self._hr

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__, _hr=None, _lfov=None)  # paths and matrix only: each process opens its own

    def for_worker(self) -> StorePair:
        """A copy that opens the stores again (in the worker process that uses it)."""
        clone = object.__new__(StorePair)
        clone.__dict__.update(self.__getstate__())
        return clone

    def identity(self) -> dict[str, str]:
        """The stores' content identities (:func:`tomoflow.io.output.identity_of`), with the matrix."""
        from tomoflow.io.output import identity_of

        return {
            "input_sha256": self._input_digest(identity_of(self.lfov_path)),
            "target_sha256": _json_sha256({"hr": identity_of(self.hr_path)}),
        }
