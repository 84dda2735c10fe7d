"""ZEISS Xradia TXRM / TXM tomography files into a scan store.

A TXRM file is an OLE2 compound document (read with :mod:`olefile`). What tomoflow reads, as found
in a real file (``txrm_test_chip_tomo.txrm``), all little-endian:

=================================  ===========  ===================================================
stream                             type         meaning
=================================  ===========  ===================================================
``ImageInfo/NoOfImages``           int32        number of projections ``n``
``ImageInfo/ImagesTaken``          int32        images actually acquired (< n if aborted)
``ImageInfo/ImageWidth``/``Height``int32        columns / rows
``ImageInfo/DataType``             int32        5 = uint16, 10 = float32 (checked against stream size)
``ImageInfo/Angles``               float32[n]   rotation angle per image, degrees
``ImageInfo/PixelSize``            float32      pixel size in micrometre (binning and magnification
                                                included: 7.4 um CCD x 8 bin / (38 x 10) = 0.1558)
``ImageInfo/X|Y|ZPosition``        float32[n]   sample stage position per image, micrometre
``ImageInfo/ExpTimes``             float32[n]   exposure time per image, seconds
``ImageInfo/Energy``               float32[..]  beam energy in **eV** (9200.0 in the test file);
                                                zero padding between entries is ignored
``ImageData{k}/Image{i}``          dtype[h, w]  image ``i`` (1-based), ``k = ceil(i / 100)``
``ReferenceData/Image``            dtype[h, w]  reference (flat) image, optional
=================================  ===========  ===================================================

Images are read one stream at a time when the lazy projection stack is sliced, so a large TXRM is
never loaded whole. There are no dark frames in a TXRM.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from tomoflow._checks import check_frames
from tomoflow.errors import InputError
from tomoflow.io.readers import LazyStack, RawScan, check_input_file, reader_errors, source_file
from tomoflow.io.scan_store import ScanStore

__all__ = ["open_txrm", "ingest_txrm", "image_stream_name", "DATA_TYPES"]

logger = logging.getLogger(__name__)

#: ``ImageInfo/DataType`` codes (verified on the real test file: code 5 with 2-byte pixels).
DATA_TYPES: dict[int, np.dtype] = {5: np.dtype("<u2"), 10: np.dtype("<f4")}
_BY_SIZE = {2: np.dtype("<u2"), 4: np.dtype("<f4")}


def image_stream_name(i: int) -> str:
    """Stream of 1-based image ``i``: ``ImageData{ceil(i/100)}/Image{i}``."""
    return f"ImageData{math.ceil(i / 100)}/Image{i}"


class _Ole:
    """Small typed reader of an open :class:`olefile.OleFileIO`, errors naming the stream."""

    def __init__(self, ole: Any, path: Any) -> None:
        self.ole = ole
        self.path = path

    def exists(self, name: str) -> bool:
        return bool(self.ole.exists(name))

    def raw(self, name: str) -> bytes:
        if not self.exists(name):
            raise InputError("stream is missing", self.path, name)
        with reader_errors(self.path, name, "cannot read stream"):
            return self.ole.openstream(name).read()

    def array(self, name: str, dtype: str, *, required: bool = True) -> np.ndarray | None:
        if not required and not self.exists(name):
            return None
        b = self.raw(name)
        itemsize = np.dtype(dtype).itemsize
        if len(b) < itemsize:
            raise InputError(f"stream has {len(b)} bytes, expected at least {itemsize}", self.path, name)
        return np.frombuffer(b[: len(b) // itemsize * itemsize], dtype=dtype)

    def scalar(self, name: str, dtype: str, *, required: bool = True) -> Any:
        a = self.array(name, dtype, required=required)
        return None if a is None else a[0].item()

    def text(self, name: str) -> str | None:
        if not self.exists(name):
            return None
        return self.raw(name).split(b"\x00", 1)[0].decode("latin-1").strip() or None


def _image_dtype(code: int | None, nbytes: int, npix: int, path: Any, stream: str) -> np.dtype:
    """Pixel dtype from ``DataType`` checked against the stream size (inferred when the code is unknown)."""
    if nbytes % npix:
        raise InputError(f"stream size {nbytes} bytes is not a whole number of {npix} pixels", path, stream)
    by_size = _BY_SIZE.get(nbytes // npix)
    dt = DATA_TYPES.get(code) if code is not None else None
    if dt is None:
        if by_size is None:
            raise InputError(f"unknown pixel type (DataType {code}, {nbytes // npix} bytes per pixel)", path, stream)
        return by_size  # type: ignore[return-value]  # a dtype from _BY_SIZE
    if dt.itemsize != nbytes // npix:
        raise InputError(
            f"DataType {code} ({dt}) does not match stream size {nbytes} bytes for {npix} pixels", path, stream
        )
    return dt


def open_txrm(path: str | os.PathLike, *, angles: Any = None) -> RawScan:
    """Open a ZEISS TXRM file as a lazy :class:`~tomoflow.io.readers.RawScan`.

    Parameters
    ----------
    path
        The ``.txrm`` / ``.txm`` file.
    angles
        Angles in degrees overriding ``ImageInfo/Angles`` (array-like, text file or
        ``(start, stop, step)``).

    Returns
    -------
    RawScan
        Projections ``(angle, row, col)`` in the file's pixel type; flats = the reference image
        (one frame) when present; stage positions ``(angle, 3)`` x, y, z in micrometre.
    """
    import olefile

    p = check_input_file(path)
    if not olefile.isOleFile(str(p)):
        raise InputError("not an OLE2 compound file (expected a ZEISS TXRM)", p)
    with reader_errors(p, None, "cannot open OLE2 file (truncated or corrupt?)"):
        ole = olefile.OleFileIO(str(p))
    try:
        return _open(_Ole(ole, p), p, angles)
    except BaseException:
        ole.close()
        raise


def _open(f: _Ole, path: Any, angles: Any) -> RawScan:
    n = f.scalar("ImageInfo/NoOfImages", "<i4")
    taken = f.scalar("ImageInfo/ImagesTaken", "<i4", required=False)
    if taken is not None and 0 < taken < n:
        logger.warning("%s: %d of %d images taken (aborted scan?); reading %d", path, taken, n, taken)
        n = taken
    width = f.scalar("ImageInfo/ImageWidth", "<i4")
    height = f.scalar("ImageInfo/ImageHeight", "<i4")
    if n < 1 or width < 1 or height < 1:
        raise InputError(f"invalid image count/size: {n} images of {height} x {width}", path, "ImageInfo")
    names = [image_stream_name(i) for i in range(1, n + 1)]
    missing = [s for s in names if not f.exists(s)]
    if missing:
        raise InputError(f"{len(missing)} of {n} image streams are missing (first: {missing[0]})", path, missing[0])
    code = f.scalar("ImageInfo/DataType", "<i4", required=False)
    with reader_errors(path, names[0], "cannot stat stream"):
        nbytes = f.ole.get_size(names[0])
    dtype = _image_dtype(code, nbytes, width * height, path, names[0])

    def read(a: int, b: int) -> np.ndarray:
        out = np.empty((b - a, height, width), dtype)
        for j, name in enumerate(names[a:b]):
            buf = f.raw(name)
            if len(buf) != width * height * dtype.itemsize:
                raise InputError(
                    f"stream has {len(buf)} bytes, expected {width * height * dtype.itemsize} (truncated?)", path, name
                )
            out[j] = np.frombuffer(buf, dtype).reshape(height, width)
        return out

    stack = LazyStack((n, height, width), dtype, read, path, "ImageData*/Image*")

    theta = None
    a = f.array("ImageInfo/Angles", "<f4", required=False)
    if a is not None:
        if a.size < n:
            raise InputError(f"angle count mismatch: {a.size} angles for {n} images", path, "ImageInfo/Angles")
        theta = a[:n].astype(np.float64)

    pixel = f.scalar("ImageInfo/PixelSize", "<f4", required=False)
    pixel_um = float(pixel) if pixel is not None and np.isfinite(pixel) and pixel > 0 else None

    energy_kev = None
    e = f.array("ImageInfo/Energy", "<f4", required=False)
    if e is not None:
        e = e[np.isfinite(e) & (e > 0)]
        if e.size:
            energy_kev = float(np.median(e)) / 1000.0  # stream is in eV

    stage = None
    pos = [f.array(f"ImageInfo/{ax}Position", "<f4", required=False) for ax in "XYZ"]
    if all(p_ is not None and p_.size >= n for p_ in pos):
        stage = np.stack([p_[:n].astype(np.float64) for p_ in pos], axis=1)  # type: ignore[index]  # all three positions are present here
    elif any(p_ is not None for p_ in pos):
        logger.warning("%s: stage position streams incomplete; stage positions not recorded", path)

    flats = None
    if f.exists("ReferenceData/Image"):
        rw = f.scalar("ReferenceData/ImageWidth", "<i4", required=False) or width
        rh = f.scalar("ReferenceData/ImageHeight", "<i4", required=False) or height
        rcode = f.scalar("ReferenceData/DataType", "<i4", required=False)
        buf = f.raw("ReferenceData/Image")
        rdt = _image_dtype(rcode, len(buf), rw * rh, path, "ReferenceData/Image")
        flats = np.frombuffer(buf, rdt).reshape(1, rh, rw).astype(np.float32)
        check_frames("reference image (flat)", flats, height, width, path, "ReferenceData/Image")

    instrument: dict[str, Any] = {"format": "ZEISS TXRM", "data_type_code": code, "pixel_dtype": str(dtype)}
    exp = f.array("ImageInfo/ExpTimes", "<f4", required=False)
    if exp is not None:
        instrument["exposure_time_s"] = exp[:n].astype(float).tolist()
    for key, stream, dt in (
        ("optical_magnification", "ImageInfo/OpticalMagnification", "<f4"),
        ("horizontal_bin", "ImageInfo/HorizontalBin", "<i4"),
        ("vertical_bin", "ImageInfo/VerticalalBin", "<i4"),  # sic: Zeiss's spelling
        ("reference_corrected", "ImageInfo/OriginalDataRefCorrected", "<i4"),
        ("txrm_version", "Version", "<f4"),
    ):
        v = f.scalar(stream, dt, required=False)
        if v is not None:
            instrument[key] = v
    for key, stream in (
        ("camera", "ImageInfo/CameraName"),
        ("objective", "ImageInfo/ObjectiveName"),
        ("date", "ImageInfo/Date"),
    ):
        v = f.text(stream)
        if v:
            instrument[key] = v
    xs = f.array("Alignment/X-Shifts", "<f4", required=False)
    ys = f.array("Alignment/Y-Shifts", "<f4", required=False)
    if xs is not None and ys is not None and xs.size >= n and ys.size >= n:
        instrument["xradia_alignment_shifts_px"] = {
            "x": xs[:n].astype(float).tolist(),
            "y": ys[:n].astype(float).tolist(),
        }

    raw = RawScan(
        projections=stack,
        angles_deg=theta,
        source=source_file(path, "txrm"),
        flats=flats,
        dataset="ImageData*/Image*",
        angles_dataset="ImageInfo/Angles",
        pixel_size_um=pixel_um,
        energy_kev=energy_kev,
        stage_position_um=stage,
        instrument=instrument,
        closer=f.ole.close,
    )
    raw.override_angles(angles)
    return raw


def ingest_txrm(
    path: str | os.PathLike,
    store_path: str | os.PathLike,
    *,
    angles: Any = None,
    overwrite: bool = False,
    progress: Callable[[int], Any] | None = None,
    pixel_size_um: float | None = None,
    energy_kev: float | None = None,
) -> ScanStore:
    """Ingest a ZEISS TXRM file into a new scan store, streaming blocks of images.

    Parameters
    ----------
    path
        The ``.txrm`` file.
    store_path
        Scan store to create.
    angles
        Angles in degrees overriding ``ImageInfo/Angles``.
    overwrite
        Replace an existing store.
    progress
        Called with the number of projections written after each block.
    pixel_size_um, energy_kev
        Override the pixel size (micrometre) and beam energy (keV) read from the file.

    Returns
    -------
    ScanStore
        The store, ``ingest`` complete; the reference image (if any) is its single flat.
    """
    with open_txrm(path, angles=angles) as raw:
        return raw.to_store(
            store_path, overwrite=overwrite, progress=progress, pixel_size_um=pixel_size_um, energy_kev=energy_kev
        )
