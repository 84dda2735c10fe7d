"""Shared machinery of the raw-format readers: the lazy raw scan, file checks, HDF5 helpers, units, angles.

Every reader (:mod:`~tomoflow.io.dxchange`, :mod:`~tomoflow.io.nexus`, :mod:`~tomoflow.io.txrm`,
:mod:`~tomoflow.io.tiff`, :mod:`~tomoflow.io.npy`) opens its input into a :class:`RawScan`: a *lazy* projection stack
(:class:`LazyStack`, read in blocks of angles on slicing), the rotation angles in degrees, the flat
and dark frames, and instrument metadata. :meth:`RawScan.to_store` validates it and streams it into a
scan store with :func:`tomoflow.io.scan_store.write_scan`, so a projection stack is never held in
memory whole.

Errors raised by the file libraries (h5py, olefile, tifffile, NumPy) are turned into
:class:`tomoflow.errors.InputError` naming the file and dataset at this boundary
(:func:`reader_errors`, and inside :meth:`LazyStack.__getitem__` for reads made while streaming).
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tomoflow._checks import check_frames, validate_angles, validate_scan_geometry
from tomoflow._hashing import files_sha256
from tomoflow.errors import InputError, TomoflowError
from tomoflow.io.metadata import SourceFile

if TYPE_CHECKING:  # the store is imported when a scan is written, not to open a raw file
    from tomoflow.io.scan_store import ScanStore

__all__ = [
    "LazyStack",
    "RawScan",
    "reader_errors",
    "check_input_file",
    "open_hdf5",
    "is_hdf5",
    "h5_dataset",
    "h5_read",
    "h5_units",
    "h5_scalar",
    "unit_factor",
    "source_file",
    "resolve_angles",
]

logger = logging.getLogger(__name__)

#: Exceptions that file libraries raise for unreadable, truncated or malformed input.
_LIBRARY_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    KeyError,
    ValueError,
    TypeError,
    IndexError,
    RuntimeError,
    EOFError,
    struct.error,
)


@contextlib.contextmanager
def reader_errors(
    path: str | os.PathLike | None, dataset: str | None = None, what: str = "cannot read"
) -> Iterator[None]:
    """Turn library exceptions raised inside the block into :class:`InputError`.

    tomoflow errors pass through unchanged. The original exception is chained (``__cause__``) for
    debugging; the message names ``path``, ``dataset`` and the library's explanation.
    """
    try:
        yield
    except TomoflowError:
        raise
    except _LIBRARY_ERRORS as exc:
        msg = str(exc).strip() or type(exc).__name__
        raise InputError(f"{what} ({type(exc).__name__}: {msg})", path, dataset) from exc


def check_input_file(path: str | os.PathLike, *, allow_dir: bool = False) -> Path:
    """Check that ``path`` exists, is readable and (for files) is not empty; return it as a Path."""
    p = Path(path)
    if not p.exists():
        raise InputError("no such file or directory", p)
    if p.is_dir():
        if not allow_dir:
            raise InputError("is a directory, expected a file", p)
        return p
    if not os.access(p, os.R_OK):
        raise InputError("file is not readable (permission denied)", p)
    if p.stat().st_size == 0:
        raise InputError("file is empty (0 bytes)", p)
    return p


def source_file(path: str | os.PathLike, fmt: str, *, files: Sequence[str | os.PathLike] | None = None) -> SourceFile:
    """Provenance record of an input: path, format, sha256 and size.

    With ``files`` (a TIFF stack made of many files), ``sha256`` is the digest of the files' bytes
    concatenated in the given order and ``size_bytes`` their total size.
    """
    try:
        digest, total = files_sha256([path] if files is None else files)
    except OSError as exc:  # name the file that failed, not only the stack
        raise InputError(
            f"cannot hash file ({type(exc).__name__}: {exc.strerror or exc})", exc.filename or path
        ) from exc
    return SourceFile(path=str(path), format=fmt, sha256=digest, size_bytes=total)


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_hdf5(path: str | os.PathLike) -> bool:
    """True when the file starts with the HDF5 signature (also after a 512, 1024 ... byte user block)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            offset = 0
            while offset + 8 <= size:
                f.seek(offset)
                if f.read(8) == HDF5_SIGNATURE:
                    return True
                offset = 512 if offset == 0 else offset * 2
    except OSError:
        return False
    return False


def open_hdf5(path: str | os.PathLike) -> Any:
    """Open an HDF5 file read-only, or raise :class:`InputError` (missing, empty, not HDF5, truncated)."""
    import h5py

    p = check_input_file(path)
    if not is_hdf5(p):
        raise InputError("not an HDF5 file (no HDF5 signature)", p)
    with reader_errors(p, None, "cannot open HDF5 file (truncated or corrupt?)"):
        return h5py.File(p, "r")


def h5_dataset(h5: Any, name: str, path: Any, *, required: bool = True) -> Any:
    """Dataset ``name`` of an open h5py file, None (if not ``required``) or :class:`InputError`."""
    import h5py

    with reader_errors(path, name, "cannot read dataset"):
        obj = h5.get(name)
    if obj is None:
        if required:
            raise InputError("dataset is missing", path, name)
        return None
    if not isinstance(obj, h5py.Dataset):
        raise InputError(f"expected a dataset, found {type(obj).__name__}", path, name)
    return obj


def h5_read(ds: Any, path: Any, name: str | None = None) -> np.ndarray:
    """Read a whole (small) h5py dataset, wrapping library errors."""
    with reader_errors(path, name or getattr(ds, "name", None), "cannot read dataset"):
        return np.asarray(ds[()])


def h5_units(ds: Any) -> str | None:
    """The ``units`` attribute of an h5py object as a lower-case string, or None."""
    u = ds.attrs.get("units", ds.attrs.get("unit"))
    if u is None:
        return None
    if isinstance(u, np.ndarray):
        u = u.reshape(-1)[0] if u.size else ""
    if isinstance(u, bytes):
        u = u.decode("utf-8", "replace")
    return str(u).strip().lower()


_LENGTH_TO_UM = {
    "m": 1e6,
    "meter": 1e6,
    "metre": 1e6,
    "meters": 1e6,
    "metres": 1e6,
    "mm": 1e3,
    "millimeter": 1e3,
    "millimetre": 1e3,
    "um": 1.0,
    "µm": 1.0,
    "μm": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "micrometer": 1.0,
    "micrometre": 1.0,
    "micrometers": 1.0,
    "micrometres": 1.0,
    "nm": 1e-3,
    "nanometer": 1e-3,
    "nanometre": 1e-3,
}
_ENERGY_TO_KEV = {"ev": 1e-3, "kev": 1.0, "mev": 1e3}
_ANGLE_TO_DEG = {
    "deg": 1.0,
    "degree": 1.0,
    "degrees": 1.0,
    "°": 1.0,
    "rad": 180.0 / np.pi,
    "radian": 180.0 / np.pi,
    "radians": 180.0 / np.pi,
}


def unit_factor(units: str | None, kind: str, default: str, path: Any = None, dataset: str | None = None) -> float:
    """Factor converting a value in ``units`` to micrometre (``kind="length"``), keV (``"energy"``)
    or degrees (``"angle"``); ``default`` is assumed when ``units`` is None or empty."""
    table = {"length": _LENGTH_TO_UM, "energy": _ENERGY_TO_KEV, "angle": _ANGLE_TO_DEG}[kind]
    u = (units or default).strip().lower()
    if u not in table:
        raise InputError(f"unknown {kind} unit {units!r} (known: {', '.join(sorted(table))})", path, dataset)
    return table[u]


def h5_scalar(h5: Any, names: Sequence[str], kind: str, default_unit: str, path: Any) -> float | None:
    """First finite positive scalar among datasets ``names``, converted by its ``units`` attribute."""
    for name in names:
        ds = h5_dataset(h5, name, path, required=False)
        if ds is None:
            continue
        try:
            val = np.asarray(ds[()], dtype=np.float64).reshape(-1)
        except (TypeError, ValueError, OSError):
            continue
        val = val[np.isfinite(val)]
        if val.size == 0 or val[0] <= 0:
            continue
        return float(val[0]) * unit_factor(h5_units(ds), kind, default_unit, path, name)
    return None


def _check_numeric(dtype: Any, path: Any, dataset: str | None) -> np.dtype:
    dt = np.dtype(dtype)
    if not (np.issubdtype(dt, np.integer) or np.issubdtype(dt, np.floating) or dt == np.bool_):
        raise InputError(f"data type {dt} is not a real number type", path, dataset)
    return dt


class LazyStack:
    """A read-only ``(frame, row, col)`` stack that reads frames from a file only when sliced.

    Slicing along axis 0 (``stack[a:b]``, ``stack[i]``) calls ``read_block(a, b)``, which must return
    the frames ``a .. b-1`` as an array of shape ``(b - a, row, col)``. Exceptions of the underlying
    library become :class:`InputError` naming the file, the dataset and the frames.

    Parameters
    ----------
    shape
        ``(n_frames, n_rows, n_cols)``.
    dtype
        Data type of the frames in the file (the scan store converts to float32).
    read_block
        Callable ``(start, stop) -> ndarray``.
    path, dataset
        File and dataset named in error messages.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        dtype: Any,
        read_block: Callable[[int, int], np.ndarray],
        path: str | os.PathLike | None = None,
        dataset: str | None = None,
    ) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self._read_block = read_block
        self.path = None if path is None else str(path)
        self.dataset = dataset

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"LazyStack(shape={self.shape}, dtype={self.dtype}, path={self.path!r}, dataset={self.dataset!r})"

    def _read(self, start: int, stop: int) -> np.ndarray:
        if stop <= start:
            return np.zeros((0, *self.shape[1:]), self.dtype)
        with reader_errors(self.path, self.dataset, f"cannot read frames {start}..{stop - 1}"):
            block = np.asarray(self._read_block(start, stop))
        if block.shape != (stop - start, *self.shape[1:]):
            raise InputError(
                f"frames {start}..{stop - 1} have shape {block.shape}, expected {(stop - start, *self.shape[1:])}",
                self.path,
                self.dataset,
            )
        return block

    def __getitem__(self, key: Any) -> np.ndarray:
        rest: tuple = ()
        if isinstance(key, tuple):
            key, rest = (key[0], key[1:]) if key else (slice(None), ())
        n = self.shape[0]
        if isinstance(key, (int, np.integer)):
            i = int(key) + n if key < 0 else int(key)
            if not 0 <= i < n:
                raise IndexError(f"frame {key} out of range for {n} frames")
            out = self._read(i, i + 1)[0]
        elif isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step == 1:
                out = self._read(start, max(start, stop))
            else:
                idx = range(start, stop, step)
                out = np.stack([self._read(i, i + 1)[0] for i in idx]) if len(idx) else self._read(0, 0)
        else:
            raise TypeError(f"LazyStack supports integer and slice indexing on axis 0, got {type(key).__name__}")
        return out[(slice(None),) * (out.ndim - len(self.shape) + 1) + rest] if rest else out

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)


def _as_frames(frames: Any, name: str, shape2d: tuple[int, int], path: Any, dataset: str | None) -> np.ndarray | None:
    """Flat/dark frames as ``(n, row, col)`` float32, checked against the detector shape."""
    if frames is None:
        return None
    with reader_errors(path, dataset, f"cannot read {name}"):
        arr = np.asarray(frames[()] if hasattr(frames, "id") else frames)
    _check_numeric(arr.dtype, path, dataset)
    arr = check_frames(name, arr, *shape2d, path, dataset)
    if arr.shape[0] == 0:
        return None
    return arr.astype(np.float32, copy=False)


@dataclass
class RawScan:
    """A scan opened from a raw file: lazy projections plus everything the scan store records.

    Attributes
    ----------
    projections
        ``(angle, row, col)`` array-like, usually a :class:`LazyStack` (read on slicing).
    angles_deg
        ``(angle,)`` rotation angles in degrees, or None when the file has none.
    flats, darks
        ``(frame, row, col)`` float32 flat (white) and dark frames, or None.
    source
        Provenance of the file (path, format, sha256).
    dataset
        Name of the projection dataset/stream in the file (for error messages).
    angles_dataset
        Name of the angle dataset in the file (for error messages).
    pixel_size_um, energy_kev
        Detector pixel size (micrometre) and beam energy (keV), if the file records them.
    stage_position_um
        ``(angle, 3)`` stage x, y, z per projection (micrometre), if recorded.
    instrument
        JSON-serialisable instrument metadata (goes to the scan-store ``instrument`` attribute).
    values
        ``"intensity"`` or ``"line-integral"``.
    """

    projections: Any
    angles_deg: np.ndarray | None
    source: SourceFile
    flats: np.ndarray | None = None
    darks: np.ndarray | None = None
    dataset: str = "projections"
    angles_dataset: str = "angles"
    pixel_size_um: float | None = None
    energy_kev: float | None = None
    stage_position_um: np.ndarray | None = None
    instrument: dict[str, Any] = field(default_factory=dict)
    values: str = "intensity"
    closer: Callable[[], None] | None = None

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Close the underlying file (idempotent)."""
        if self.closer is not None:
            closer, self.closer = self.closer, None
            with contextlib.suppress(Exception):
                closer()

    def __enter__(self) -> RawScan:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ checks
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.projections.shape)

    def validate(self) -> None:
        """Check ranks, shapes, the angles (count and the physics of a scan: see
        :func:`tomoflow._checks.validate_scan_geometry`) and flats/darks detector shape; raise
        :class:`InputError`."""
        path = self.source.path
        shape = tuple(getattr(self.projections, "shape", ()))
        if len(shape) != 3:
            raise InputError(f"projections must be 3-D (angle, row, col), got shape {shape}", path, self.dataset)
        if 0 in shape:
            raise InputError(f"projections are empty (shape {shape})", path, self.dataset)
        _check_numeric(getattr(self.projections, "dtype", np.float32), path, self.dataset)
        if self.angles_deg is None:
            raise InputError(
                "no rotation angles in the file; pass them explicitly (angles=..., CLI: --angles)",
                path,
                self.angles_dataset,
            )
        # The physics of the angles (count, span, distinct directions): before any store exists.
        self.angles_deg = validate_scan_geometry(
            self.angles_deg, shape[0], need="scan", path=path, dataset=self.angles_dataset, n_columns=shape[2]
        )
        self.flats = _as_frames(self.flats, "flats", shape[1:], path, "flats")
        self.darks = _as_frames(self.darks, "darks", shape[1:], path, "darks")
        if self.stage_position_um is not None:
            sp = np.asarray(self.stage_position_um, dtype=np.float64)
            if sp.shape != (shape[0], 3):
                raise InputError(f"stage positions must be ({shape[0]}, 3), got {sp.shape}", path, "stage_position")
            self.stage_position_um = sp

    def override_angles(self, angles: Any) -> None:
        """Replace the file's angles (degrees) by user-given ones (see :func:`resolve_angles`)."""
        if angles is None:
            return
        if self.angles_deg is not None:
            logger.info("%s: using %s user-given angles instead of the file's", self.source.path, np.size(angles))
        self.angles_deg = resolve_angles(angles, self.shape[0], self.source.path)
        self.angles_dataset = "angles (user-given)"

    # ------------------------------------------------------------------ writing
    def to_store(
        self,
        store_path: str | os.PathLike,
        *,
        overwrite: bool = False,
        progress: Callable[[int], Any] | None = None,
        chunks: tuple[int, int, int] | None = None,
        pixel_size_um: float | None = None,
        energy_kev: float | None = None,
    ) -> ScanStore:
        """Validate and stream the scan into a new scan store; return it marked ``ingest`` complete.

        The projections are copied in chunk-aligned blocks of angles. If reading fails midway the
        store is left with ``ingest`` incomplete, which :meth:`ScanStore.open` refuses.
        ``pixel_size_um`` (micrometre) and ``energy_kev`` (keV) override or supply the file's values.
        """
        if pixel_size_um is not None:
            self.pixel_size_um = float(pixel_size_um)
        if energy_kev is not None:
            self.energy_kev = float(energy_kev)
        self.validate()
        meta: dict[str, Any] = {
            "source": self.source,
            "values": self.values,
            "pixel_size_um": self.pixel_size_um,
            "energy_kev": self.energy_kev,
            "stage_position_um": self.stage_position_um,
            "instrument": _jsonable(self.instrument),
        }
        if chunks is not None:
            meta["chunks"] = chunks
        from tomoflow.io.scan_store import write_scan

        logger.info("ingesting %s (%s, %s) into %s", self.source.path, self.source.format, self.shape, store_path)
        return write_scan(
            store_path,
            self.projections,
            self.angles_deg,
            flats=self.flats,
            darks=self.darks,
            overwrite=overwrite,
            progress=progress,
            projections_dataset=self.dataset,
            **meta,
        )


def resolve_angles(angles: Any, n: int, path: Any = None) -> np.ndarray:
    """User-given angles in degrees, as a float64 array of length ``n``.

    ``angles`` may be an array-like of degrees, a path to a text file with one angle per line
    (``#`` comments allowed), or a ``(start, stop, step)`` tuple in degrees. For the tuple, ``stop``
    may be exclusive (NumPy ``arange``) or inclusive; whichever gives ``n`` angles is used.
    """
    if isinstance(angles, (str, os.PathLike)):
        p = check_input_file(angles)
        with reader_errors(p, None, "cannot read angle list (expected one number per line)"):
            arr = np.loadtxt(p, dtype=np.float64, comments="#", ndmin=1)
        return validate_angles(arr, n, p, "angles")
    if isinstance(angles, tuple) and len(angles) == 3 and all(np.isscalar(a) for a in angles):
        start, stop, step = (float(a) for a in angles)
        if step == 0 or not np.isfinite([start, stop, step]).all():
            raise InputError(f"angle range (start, stop, step) = {angles} is invalid", path, "angles")
        span = (stop - start) / step
        for count in (int(np.ceil(span - 1e-9)), int(np.floor(span + 1e-9)) + 1):
            if count == n:
                return start + step * np.arange(n, dtype=np.float64)
        raise InputError(
            f"angle range start={start}, stop={stop}, step={step} gives {max(int(np.ceil(span - 1e-9)), 0)} "
            f"(stop exclusive) or {max(int(np.floor(span + 1e-9)) + 1, 0)} (stop inclusive) angles for {n} projections",
            path,
            "angles",
        )
    return validate_angles(angles, n, path, "angles (user-given)")


def _jsonable(obj: Any) -> Any:
    """Convert NumPy scalars/arrays and bytes in nested metadata to plain JSON types."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
