"""One entry point for every raw format: :func:`ingest` (and :func:`detect_format`).

Examples (not run as doctests: they read raw files of yours):

>>> from tomoflow.io.ingest import ingest
>>> store = ingest("tooth.h5", "tooth.zarr")                                  # doctest: +SKIP
>>> store = ingest("proj/", "scan.zarr", angles=(0, 180, 0.5), flats="flat/")  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tomoflow.errors import ConfigError, InputError
from tomoflow.io.readers import check_input_file, is_hdf5, open_hdf5, reader_errors
from tomoflow.io.scan_store import ScanStore

__all__ = ["FORMATS", "HDF5_SUFFIXES", "TXRM_SUFFIXES", "TIFF_SUFFIXES", "detect_format", "ingest"]

logger = logging.getLogger(__name__)

#: Formats :func:`ingest` understands.
FORMATS = ("dxchange", "nexus", "txrm", "tiff", "numpy")

#: File suffixes (lower case) of each kind of raw file, as :func:`detect_format` reads them (HDF5:
#: DXchange or NeXus, told apart by the content).
HDF5_SUFFIXES = {".h5", ".hdf5", ".hdf", ".nxs", ".nx5", ".he5"}
TXRM_SUFFIXES = {".txrm", ".txm"}
TIFF_SUFFIXES = {".tif", ".tiff"}
_OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_NPY_MAGIC = b"\x93NUMPY"


def _hdf5_flavour(path: Path) -> str:
    h5 = open_hdf5(path)
    try:
        with reader_errors(path, "/exchange", "cannot inspect HDF5 file"):
            return "dxchange" if "exchange" in h5 else "nexus"
    finally:
        h5.close()


def detect_format(path: str | os.PathLike | Sequence[str | os.PathLike]) -> str:
    """Name the raw format of ``path``: one of :data:`FORMATS`.

    Rules: a list of files, a directory or a glob pattern is a TIFF stack; ``.h5 .hdf5 .hdf .nxs`` is
    ``dxchange`` when the file has an ``/exchange`` group, else ``nexus``; ``.txrm .txm`` is ``txrm``;
    ``.tif .tiff`` is ``tiff``; ``.npy`` is ``numpy``. Other names are recognised by their first bytes
    (HDF5, OLE2, TIFF or NPY signature).

    Raises
    ------
    InputError
        Missing or empty file, an extension whose content does not match, or an unknown format.
    """
    if isinstance(path, (list, tuple)):
        return "tiff"
    s = str(path)
    p = Path(s)
    if not p.exists() and any(c in s for c in "*?["):
        return "tiff"
    check_input_file(p, allow_dir=True)
    if p.is_dir():
        if any(f.suffix.lower() in TIFF_SUFFIXES for f in p.iterdir()):
            return "tiff"
        raise InputError("unknown format: directory holds no .tif/.tiff files", p)
    suffix = p.suffix.lower()
    with reader_errors(p, None, "cannot read file"), open(p, "rb") as f:
        head = f.read(8)
    if suffix in HDF5_SUFFIXES:
        if not is_hdf5(p):
            raise InputError(f"not an HDF5 file (no HDF5 signature) despite the {suffix} extension", p)
        return _hdf5_flavour(p)
    if suffix in TXRM_SUFFIXES:
        if head != _OLE_MAGIC:
            raise InputError(f"not an OLE2 compound file (ZEISS TXRM) despite the {suffix} extension", p)
        return "txrm"
    if suffix in TIFF_SUFFIXES:
        if head[:4] not in _TIFF_MAGICS:
            raise InputError(f"not a TIFF file (no TIFF signature) despite the {suffix} extension", p)
        return "tiff"
    if suffix == ".npy":
        if not head.startswith(_NPY_MAGIC):
            raise InputError("not a NumPy .npy file (no NPY signature)", p)
        return "numpy"
    if is_hdf5(p):
        return _hdf5_flavour(p)
    if head == _OLE_MAGIC:
        return "txrm"
    if head[:4] in _TIFF_MAGICS:
        return "tiff"
    if head.startswith(_NPY_MAGIC):
        return "numpy"
    raise InputError(
        f"unknown format (extension {suffix or 'none'!r}, no known signature); supported: {', '.join(FORMATS)}",
        p,
    )


def ingest(
    source: Any,
    store_path: str | os.PathLike,
    *,
    format: str = "auto",  # the natural name for users
    overwrite: bool = False,
    angles: Any = None,
    progress: Callable[[int], Any] | None = None,
    **kw: Any,
) -> ScanStore:
    """Ingest a raw scan (any supported format) into a new scan store, streaming blocks of angles.

    Parameters
    ----------
    source
        The raw scan: a file (DXchange/NeXus HDF5, TXRM, TIFF, ``.npy``), a directory / glob / list of
        TIFF files, or a NumPy-like ``(angle, row, col)`` array.
    store_path
        Scan store (zarr v3 directory) to create.
    format
        ``"auto"`` (see :func:`detect_format`) or one of :data:`FORMATS`.
    overwrite
        Replace an existing store.
    angles
        Rotation angles in degrees (array-like, text file with one per line, or
        ``(start, stop, step)``); overrides the file's, required for TIFF and arrays.
    progress
        Called with the number of projections written after each block.
    **kw
        Passed to the format's reader: ``entry=`` (NeXus), ``flats=``/``darks=`` (TIFF, arrays),
        ``pixel_size_um=``, ``energy_kev=``, ``values=`` (arrays).

    Returns
    -------
    ScanStore
        The new store with ``stages.ingest.complete = True``.

    Raises
    ------
    InputError
        Bad input, naming the file and dataset: unreadable, or not a scan (the physics of its angles and
        counts, see :func:`tomoflow._checks.validate_scan_geometry` and
        :class:`tomoflow._checks.MeasuredCheck`). Nothing is left behind: the store is built under a
        temporary name and put in place only when complete.
    ConfigError
        An option the format does not take (``entry=`` for a Data Exchange file ...), or a bad value.
    StoreError
        The output may not be written (see :func:`tomoflow.io.scan_store.write_scan`).
    """
    from tomoflow.io import dxchange, nexus, npy, tiff, txrm

    if not isinstance(source, (str, os.PathLike, list, tuple)) and hasattr(source, "shape"):
        fmt = "numpy" if format == "auto" else format
    else:
        fmt = detect_format(source) if format == "auto" else format
    if fmt not in FORMATS:
        raise InputError(
            f"unknown format {fmt!r}; supported: {', '.join(FORMATS)}",
            source if isinstance(source, (str, os.PathLike)) else None,
        )
    readers: dict[str, Callable[..., Any]] = {
        "dxchange": dxchange.ingest_dxchange,
        "nexus": nexus.ingest_nexus,
        "txrm": txrm.ingest_txrm,
        "tiff": tiff.ingest_tiff,
        "numpy": npy.ingest_numpy,
    }
    _check_options(fmt, kw, readers, source)
    logger.info(
        "ingest %s as %s -> %s",
        source if isinstance(source, (str, os.PathLike)) else type(source).__name__,
        fmt,
        store_path,
    )
    return readers[fmt](source, store_path, angles=angles, overwrite=overwrite, progress=progress, **kw)


#: Command-line spelling of reader options, for messages.
_CLI_NAMES = {"entry": "--entry", "flats": "--flats", "darks": "--darks", "pixel_size_um": "--pixel-size"}


def _check_options(fmt: str, kw: dict[str, Any], readers: dict[str, Callable[..., Any]], source: Any) -> None:
    """Refuse, before anything is read or written, an option the format's reader does not take
    (``--entry`` for a Data Exchange file, ``--flats`` for a NeXus file ...), naming the formats that
    take it."""
    import inspect

    def accepted(fn: Callable[..., Any]) -> set[str]:
        return {n for n, p in inspect.signature(fn).parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}

    mine = accepted(readers[fmt])
    for name in kw:
        if name in mine:
            continue
        takers = [f for f, fn in readers.items() if name in accepted(fn)]
        spelled = f"{name}= ({_CLI_NAMES[name]})" if name in _CLI_NAMES else f"{name}="
        where = f"{source}: " if isinstance(source, (str, os.PathLike)) else ""
        if takers:
            raise ConfigError(
                f"{where}option {spelled} does not apply to {fmt} input; it applies to {' or '.join(takers)} input only"
            )
        raise ConfigError(
            f"{where}unknown ingest option {name}=; {fmt} input takes "
            f"{', '.join(sorted(mine - {'angles', 'overwrite', 'progress'})) or 'no other option'}"
        )
