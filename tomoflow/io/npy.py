"""NumPy arrays and ``.npy`` files into a scan store: the ``numpy`` format of :func:`tomoflow.io.ingest`.

The projections are an ``(angle, row, col)`` array-like (NumPy array, memory map, dask or zarr array,
h5py dataset ...) or the path of a ``.npy`` file, which is memory-mapped (``allow_pickle=False``) and
streamed in blocks of angles, never read whole. Arrays carry no angles: they are always given
(degrees; array-like, text file or ``(start, stop, step)``, see
:func:`tomoflow.io.readers.resolve_angles`). Flats and darks are arrays or ``.npy`` paths too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from tomoflow._checks import check_choice
from tomoflow.errors import InputError
from tomoflow.io.metadata import SourceFile
from tomoflow.io.readers import LazyStack, RawScan, check_input_file, reader_errors, resolve_angles, source_file

if TYPE_CHECKING:
    from tomoflow.io.scan_store import ScanStore

__all__ = ["open_numpy", "ingest_numpy", "VALUES"]

VALUES = ("intensity", "line-integral")
"""What array values are: raw detector counts, or line integrals (already flat-corrected and -log)."""


def _load(obj: Any) -> Any:
    """A ``.npy`` path memory-mapped read-only; anything else unchanged."""
    if isinstance(obj, (str, os.PathLike)):
        p = check_input_file(obj)
        with reader_errors(p, None, "cannot read .npy file"):
            return np.load(p, mmap_mode="r", allow_pickle=False)
    return obj


def open_numpy(
    source: Any,
    *,
    angles: Any,
    flats: Any = None,
    darks: Any = None,
    values: str = "intensity",
    stage_position_um: Any = None,
    instrument: Mapping[str, Any] | None = None,
) -> RawScan:
    """Open arrays (or ``.npy`` files) as a lazy :class:`~tomoflow.io.readers.RawScan`.

    Parameters
    ----------
    source
        ``(angle, row, col)`` projections: an array-like or the path of a ``.npy`` file.
    angles
        Rotation angle of every projection in degrees: array-like, text file (one per line) or
        ``(start, stop, step)``. Required.
    flats, darks
        ``(frame, row, col)`` or ``(row, col)`` flat and dark fields (arrays or ``.npy`` paths), or None.
    values
        ``"intensity"`` (raw counts) or ``"line-integral"`` (already -log normalised).
    stage_position_um
        ``(angle, 3)`` stage x, y, z per projection in micrometres, if known.
    instrument
        Extra JSON-serialisable metadata.

    Returns
    -------
    RawScan
        ``source.sha256`` is the ``.npy`` file's digest (None for in-memory arrays).

    Raises
    ------
    InputError
        No angles, unreadable ``.npy`` file (checked shapes and angle count on ingest).
    ConfigError
        Unknown ``values``.
    """
    check_choice("values", values, VALUES)
    is_file = isinstance(source, (str, os.PathLike))
    src = source_file(source, "numpy") if is_file else SourceFile(path="<in-memory array>", format="numpy")
    if angles is None:
        raise InputError(
            "arrays carry no rotation angles; pass angles= (list, text file or (start, stop, step))",
            src.path if is_file else None,
            "angles",
        )
    proj = _load(source)
    if not hasattr(proj, "shape"):
        proj = np.asarray(proj)
    shape = tuple(proj.shape)
    stack = proj
    if len(shape) == 3 and not isinstance(proj, LazyStack):
        stack = LazyStack(shape, getattr(proj, "dtype", np.float32), lambda a, b: proj[a:b], src.path, "projections")
    raw = RawScan(
        projections=stack,
        angles_deg=None,
        source=src,
        flats=_load(flats),
        darks=_load(darks),
        stage_position_um=stage_position_um,
        instrument=dict(instrument or {}),
        values=values,
    )
    if len(shape) == 3 and 0 not in shape:  # else RawScan.validate names the shape problem
        raw.angles_deg = resolve_angles(angles, shape[0], src.path)
    return raw


def ingest_numpy(
    source: Any,
    store_path: str | os.PathLike,
    *,
    angles: Any = None,
    flats: Any = None,
    darks: Any = None,
    values: str = "intensity",
    overwrite: bool = False,
    progress: Callable[[int], Any] | None = None,
    pixel_size_um: float | None = None,
    energy_kev: float | None = None,
    stage_position_um: Any = None,
    instrument: Mapping[str, Any] | None = None,
) -> ScanStore:
    """Write in-memory (or ``.npy``) arrays to a new scan store, streaming blocks of angles.

    Parameters
    ----------
    source
        ``(angle, row, col)`` projections: an array-like or the path of a ``.npy`` file.
    store_path
        Scan store to create (zarr v3 directory, conventionally ``*.zarr``).
    angles, flats, darks, values, stage_position_um, instrument
        See :func:`open_numpy`; ``angles`` (degrees) is required.
    overwrite
        Replace an existing store.
    progress
        Called with the number of projections written after each block.
    pixel_size_um, energy_kev
        Detector pixel size (micrometre) and beam energy (keV), if known.

    Returns
    -------
    ScanStore
        The new store, ``ingest`` complete.
    """
    raw = open_numpy(
        source,
        angles=angles,
        flats=flats,
        darks=darks,
        values=values,
        stage_position_um=stage_position_um,
        instrument=instrument,
    )
    with raw:
        return raw.to_store(
            store_path, overwrite=overwrite, progress=progress, pixel_size_um=pixel_size_um, energy_kev=energy_kev
        )
