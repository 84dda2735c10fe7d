"""Cheap probes of raw scan files: is this a usable scan, of which shape, without reading it whole.

Each probe opens the file's header, checks the shape, the angle count and the flat/dark frame shape,
and reads the *last* projection (where a truncated file fails); no file is hashed or read whole. A
probe raises the tomoflow error the full reader would (:class:`~tomoflow.errors.InputError` naming the
file and dataset). The archive scanner (:func:`tomoflow.batch.archive.scan_archive`) runs them over a
folder of raw scans; the full readers are :mod:`tomoflow.io.dxchange`, :mod:`tomoflow.io.nexus`,
:mod:`tomoflow.io.txrm` and :mod:`tomoflow.io.tiff`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tomoflow.errors import InputError, TomoflowError, summarise
from tomoflow.io.dxchange import DARK, DATA, THETA, WHITE
from tomoflow.io.nexus import PROJECTION, find_nxtomo_entries
from tomoflow.io.readers import h5_dataset, h5_read, h5_units, open_hdf5, reader_errors, resolve_angles, unit_factor
from tomoflow.io.tiff import _TiffStack
from tomoflow.io.txrm import _image_dtype, _Ole, image_stream_name

__all__ = ["probe_dxchange", "probe_nexus", "probe_txrm", "probe_tiff_stack", "error_reason"]


def probe_dxchange(path: Path) -> tuple[int, int, int]:
    """Shape ``(angle, row, col)`` of a DXchange file: projections, angles (their count and unit) and
    flat/dark frame shape checked, the last projection read."""
    h5 = open_hdf5(path)
    try:
        data = h5_dataset(h5, DATA, path)
        shape = tuple(int(s) for s in data.shape)
        if len(shape) != 3 or 0 in shape:
            raise InputError(f"projections must be a non-empty (angle, row, col) stack, got shape {shape}", path, DATA)
        theta = h5_dataset(h5, THETA, path, required=False)
        if theta is None:
            raise InputError("no rotation angles; add the scan to the manifest by hand with angles:", path, THETA)
        deg = h5_read(theta, path, THETA).astype(np.float64).reshape(-1)
        resolve_angles(deg * unit_factor(h5_units(theta), "angle", "degree", path, THETA), shape[0], path)
        for name in (WHITE, DARK):
            ds = h5_dataset(h5, name, path, required=False)
            if ds is not None and tuple(ds.shape[-2:]) != shape[1:]:
                raise InputError(f"frames of {tuple(ds.shape[-2:])} px, projections of {shape[1:]}", path, name)
        with reader_errors(path, DATA, "cannot read the last projection (truncated or corrupt?)"):
            np.asarray(data[shape[0] - 1])
        return shape
    finally:
        h5.close()


def probe_nexus(path: Path) -> list[tuple[str, tuple[int, int, int] | None, str | None]]:
    """``(entry, shape, problem)`` for every NXtomo entry of the file."""
    h5 = open_hdf5(path)
    try:
        with reader_errors(path, None, "cannot list NeXus entries"):
            entries = find_nxtomo_entries(h5)
        if not entries:
            raise InputError(
                f"no NXentry with definition 'NXtomo' (top-level groups: {summarise(sorted(h5.keys()))})", path, "/"
            )
        out: list[tuple[str, tuple[int, int, int] | None, str | None]] = []
        for entry in entries:
            try:
                out.append((entry, _probe_nexus_entry(h5, path, entry, PROJECTION), None))
            except TomoflowError as exc:
                out.append((entry, None, error_reason(exc, path)))
        return out
    finally:
        h5.close()


def _first(h5: Any, path: Path, entry: str, names: tuple[str, ...]) -> tuple[str, Any]:
    for n in names:
        ds = h5_dataset(h5, f"{entry}/{n}", path, required=False)
        if ds is not None:
            return f"{entry}/{n}", ds
    return f"{entry}/{names[0]}", None


def _probe_nexus_entry(h5: Any, path: Path, entry: str, projection: int) -> tuple[int, int, int]:
    name, data = _first(h5, path, entry, ("data/data", "instrument/detector/data"))
    if data is None or data.ndim != 3 or 0 in data.shape:
        raise InputError(
            "no (frame, row, col) frame data (looked for data/data and instrument/detector/data)", path, entry
        )
    key_name, keys = _first(h5, path, entry, ("data/image_key", "instrument/detector/image_key"))
    n = int(data.shape[0])
    if keys is not None:
        k = h5_read(keys, path, key_name).reshape(-1)
        if k.size != data.shape[0]:
            raise InputError(f"{k.size} image keys for {data.shape[0]} frames", path, key_name)
        n = int(np.count_nonzero(k == projection))
        if n == 0:
            raise InputError("no projection frames (image_key == 0)", path, key_name)
    ang_name, ang = _first(h5, path, entry, ("data/rotation_angle", "sample/rotation_angle"))
    if ang is None:
        raise InputError("no rotation angles; add the scan to the manifest by hand with angles:", path, ang_name)
    if ang.size not in (n, data.shape[0]):
        raise InputError(f"{ang.size} rotation angles for {data.shape[0]} frames ({n} projections)", path, ang_name)
    with reader_errors(path, name, "cannot read the last frame (truncated or corrupt?)"):
        np.asarray(data[data.shape[0] - 1])
    return (n, int(data.shape[1]), int(data.shape[2]))


def probe_txrm(path: Path) -> tuple[int, int, int]:
    """Shape ``(angle, row, col)`` of a ZEISS TXRM file: image count and size, pixel type against the
    stream size, one angle per image, the last image read."""
    import olefile

    if not olefile.isOleFile(str(path)):
        raise InputError("not an OLE2 compound file (expected a ZEISS TXRM)", path)
    with reader_errors(path, None, "cannot open OLE2 file (truncated or corrupt?)"):
        ole = olefile.OleFileIO(str(path))
    try:
        f = _Ole(ole, path)
        n = f.scalar("ImageInfo/NoOfImages", "<i4")
        taken = f.scalar("ImageInfo/ImagesTaken", "<i4", required=False)
        n = taken if taken is not None and 0 < taken < n else n
        width, height = f.scalar("ImageInfo/ImageWidth", "<i4"), f.scalar("ImageInfo/ImageHeight", "<i4")
        if n <= 0 or width <= 0 or height <= 0:
            raise InputError(f"{n} images of {width} x {height} px", path, "ImageInfo")
        last = image_stream_name(n)
        if not f.exists(last):
            raise InputError(f"image stream is missing: the file holds fewer than {n} images (truncated?)", path, last)
        with reader_errors(path, last, "cannot stat stream"):
            size = ole.get_size(last)
        dtype = _image_dtype(f.scalar("ImageInfo/DataType", "<i4", required=False), size, width * height, path, last)
        got = len(f.raw(last))  # the last image: where a truncated file fails
        if got != width * height * dtype.itemsize:
            raise InputError(
                f"stream has {got} bytes, expected {width * height * dtype.itemsize} (truncated?)", path, last
            )
        angles = f.array("ImageInfo/Angles", "<f4", required=False)
        if angles is None or angles.size < n:
            raise InputError(
                "no rotation angle for every image; add the scan to the manifest by hand with angles:",
                path,
                "ImageInfo/Angles",
            )
        return (int(n), int(height), int(width))
    finally:
        ole.close()


def probe_tiff_stack(files: list[Path], what: str) -> tuple[int, int, int]:
    """Shape ``(frame, row, col)`` of a TIFF stack (``what``: projections, flats, darks; named in errors),
    its last frame read."""
    stack = _TiffStack(files, what)
    try:
        stack.read(stack.n - 1, stack.n)  # the last frame: where a truncated stack fails
    finally:
        stack.close()
    return (stack.n, *stack.frame_shape)


def error_reason(exc: TomoflowError, path: Path) -> str:
    """The error's message, without the path when it is ``path`` itself (listed beside it)."""
    if isinstance(exc, InputError) and exc.path == str(path):
        return (f"[{exc.dataset}] " if exc.dataset else "") + exc.problem
    return str(exc)
