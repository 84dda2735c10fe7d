"""Data Exchange (DXchange) HDF5: read into a scan store, and write.

Layout (APS Data Exchange, as used by TomoPy/DXchange)::

    /exchange/data         (angle, row, col)  projections, raw counts
    /exchange/data_white   (flat, row, col)   flat (white) fields, optional
    /exchange/data_dark    (dark, row, col)   dark fields, optional
    /exchange/theta        (angle,)           rotation angles, degrees (``units`` attr ``rad`` honoured)

Optional metadata read when present: pixel size from
``/measurement/instrument/detection_system/objective/resolution`` or
``/measurement/instrument/detector/pixel_size_x`` (micrometre unless a ``units`` attribute says
otherwise) and beam energy from ``/measurement/instrument/monochromator/energy`` (keV unless
``units`` says otherwise).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tomoflow._checks import check_frames, validate_angles
from tomoflow.errors import InputError, StoreError
from tomoflow.io.readers import (
    LazyStack,
    RawScan,
    h5_dataset,
    h5_read,
    h5_scalar,
    h5_units,
    open_hdf5,
    reader_errors,
    source_file,
    unit_factor,
)
from tomoflow.io.scan_store import ScanStore

__all__ = ["open_dxchange", "ingest_dxchange", "write_dxchange", "DATA", "WHITE", "DARK", "THETA"]

logger = logging.getLogger(__name__)

DATA = "/exchange/data"
WHITE = "/exchange/data_white"
DARK = "/exchange/data_dark"
THETA = "/exchange/theta"

_PIXEL_SIZE = (
    "/measurement/instrument/detection_system/objective/resolution",
    "/measurement/instrument/detector/pixel_size_x",
)
_ENERGY = ("/measurement/instrument/monochromator/energy",)


def open_dxchange(path: str | os.PathLike, *, angles: Any = None) -> RawScan:
    """Open a Data Exchange file as a lazy :class:`~tomoflow.io.readers.RawScan` (nothing read yet
    but metadata, angles and flat/dark frames).

    Parameters
    ----------
    path
        The ``.h5`` file.
    angles
        Rotation angles in degrees overriding ``/exchange/theta`` (array-like, text file or
        ``(start, stop, step)``); required when the file has no theta.

    Returns
    -------
    RawScan
        Close it (or use it as a context manager) to close the file.

    Raises
    ------
    InputError
        Missing/empty/non-HDF5/corrupt file, missing ``/exchange/data``, wrong rank, angle count
        mismatch, flats/darks of another detector shape.
    """
    h5 = open_hdf5(path)
    try:
        data = h5_dataset(h5, DATA, path)
        if data.ndim != 3:
            raise InputError(f"projections must be 3-D (angle, row, col), got shape {data.shape}", path, DATA)
        stack = LazyStack(data.shape, data.dtype, lambda a, b: data[a:b], path, DATA)
        theta = None
        ds_theta = h5_dataset(h5, THETA, path, required=False)
        if ds_theta is not None and angles is None:
            theta = h5_read(ds_theta, path, THETA).astype(np.float64).reshape(-1)
            theta = theta * unit_factor(h5_units(ds_theta), "angle", "degree", path, THETA)
        flats = darks = None
        ds = h5_dataset(h5, WHITE, path, required=False)
        if ds is not None:
            flats = h5_read(ds, path, WHITE)
        ds = h5_dataset(h5, DARK, path, required=False)
        if ds is not None:
            darks = h5_read(ds, path, DARK)
        instrument: dict[str, Any] = {"format": "Data Exchange"}
        for key in ("/exchange/title", "/measurement/sample/name", "/implements"):
            d = h5_dataset(h5, key, path, required=False)
            if d is not None and d.shape == ():
                with reader_errors(path, key):
                    v = d[()]
                text = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
                instrument[key.strip("/").replace("/", ".")] = text
        raw = RawScan(
            projections=stack,
            angles_deg=theta,
            source=source_file(path, "dxchange"),
            flats=flats,
            darks=darks,
            dataset=DATA,
            angles_dataset=THETA,
            pixel_size_um=h5_scalar(h5, _PIXEL_SIZE, "length", "um", path),
            energy_kev=h5_scalar(h5, _ENERGY, "energy", "kev", path),
            instrument=instrument,
            closer=h5.close,
        )
        # Check the frames' detector shape now, naming their datasets.
        for name, ds_name, frames in (("flats", WHITE, flats), ("darks", DARK, darks)):
            if frames is not None:
                check_frames(name, frames, *data.shape[1:], path, ds_name)  # type: ignore[call-arg]  # shape[1:] is (rows, cols)
        raw.override_angles(angles)
        return raw
    except BaseException:
        h5.close()
        raise


def ingest_dxchange(
    path: str | os.PathLike,
    store_path: str | os.PathLike,
    *,
    angles: Any = None,
    overwrite: bool = False,
    progress: Callable[[int], Any] | None = None,
    pixel_size_um: float | None = None,
    energy_kev: float | None = None,
) -> ScanStore:
    """Ingest a Data Exchange HDF5 file into a new scan store, streaming blocks of angles.

    Parameters
    ----------
    path
        The Data Exchange ``.h5`` file.
    store_path
        Scan store to create.
    angles
        Angles in degrees overriding ``/exchange/theta`` (see :func:`open_dxchange`).
    overwrite
        Replace an existing store.
    progress
        Called with the number of projections written after each block.
    pixel_size_um, energy_kev
        Override (or supply) the pixel size (micrometre) and beam energy (keV).

    Returns
    -------
    ScanStore
        The store, ``ingest`` complete.
    """
    with open_dxchange(path, angles=angles) as raw:
        return raw.to_store(
            store_path, overwrite=overwrite, progress=progress, pixel_size_um=pixel_size_um, energy_kev=energy_kev
        )


WRITER_ATTR = "tomoflow_writer"
"""Root attribute marking a Data Exchange file written by tomoflow (the only kind it replaces)."""


def _written_by_tomoflow(path: Path) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get(WRITER_ATTR) in ("tomoflow", b"tomoflow")
    except (OSError, ValueError):
        return False


def write_dxchange(
    path: str | os.PathLike,
    projections: Any,
    angles_deg: Any,
    flats: Any = None,
    darks: Any = None,
    *,
    overwrite: bool = False,
    progress: Callable[[int], Any] | None = None,
) -> Path:
    """Write a scan as a Data Exchange HDF5 file.

    The file is written under a temporary name and renamed when complete, so an interrupted write
    never leaves a file that looks valid.

    Parameters
    ----------
    path
        File to write (``.h5``).
    projections
        ``(angle, row, col)`` array-like (anything with ``shape``, ``dtype`` and slicing on axis 0);
        copied in blocks of angles, keeping its dtype.
    angles_deg
        ``(angle,)`` rotation angles in degrees, written to ``/exchange/theta``.
    flats, darks
        ``(frame, row, col)`` (or ``(row, col)``) flat and dark fields, or None (not written).
    overwrite
        Replace an existing file, only if tomoflow wrote it (root attribute ``tomoflow_writer``):
        any other file is refused, whatever ``overwrite`` says.
    progress
        Called with the number of projections written after each block.

    Returns
    -------
    Path
        ``path``.
    """
    import h5py

    path = Path(path)
    if os.path.lexists(path):
        if not overwrite:
            raise StoreError(f"{path}: file exists; pass overwrite=True (--overwrite) to replace it")
        if not _written_by_tomoflow(path):
            raise StoreError(
                f"{path}: exists and is not a Data Exchange file tomoflow wrote; refusing to "
                "replace it; choose another path"
            )
    from tomoflow.io.output import STAMP_KEY, file_stamp, plan_file

    plan_file(path, kind="raw-scan", overwrite=overwrite)  # the file policy: never in a store, never a user's file
    shape = tuple(getattr(projections, "shape", np.shape(projections)))
    if len(shape) != 3 or 0 in shape:
        raise InputError(f"projections must be a non-empty 3-D (angle, row, col) stack, got shape {shape}", path, DATA)
    theta = validate_angles(angles_deg, shape[0], path, THETA)
    frames: dict[str, np.ndarray] = {}
    for name, ds_name, arr in (("flats", WHITE, flats), ("darks", DARK, darks)):
        if arr is not None:
            frames[ds_name] = check_frames(name, np.asarray(arr), *shape[1:], path, ds_name)
    dtype = np.dtype(getattr(projections, "dtype", np.float32))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        try:
            f = h5py.File(tmp, "w")
        except OSError as exc:  # name the file asked for, not the temporary one
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise StoreError(f"{path}: cannot create the file ({reason})") from None
        with f:
            f.attrs[WRITER_ATTR] = "tomoflow"
            f.attrs[STAMP_KEY] = json.dumps(file_stamp("raw-scan"))
            f.create_dataset("implements", data="exchange")
            ds = f.create_dataset(DATA, shape=shape, dtype=dtype)
            ds.attrs["axes"] = "theta:y:x"
            ds.attrs["units"] = "counts"
            step = max(1, min(shape[0], (64 << 20) // max(1, dtype.itemsize * shape[1] * shape[2])))
            for start in range(0, shape[0], step):
                block = np.asarray(projections[start : start + step], dtype=dtype)
                ds[start : start + block.shape[0]] = block
                if progress is not None:
                    progress(block.shape[0])
            t = f.create_dataset(THETA, data=theta)
            t.attrs["units"] = "degrees"
            for name, a in frames.items():
                d = f.create_dataset(name, data=a)
                d.attrs["axes"] = ("theta_white" if name == WHITE else "theta_dark") + ":y:x"
                d.attrs["units"] = "counts"
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    logger.info("wrote Data Exchange file %s %s", path, shape)
    return path
