"""TIFF stacks into a scan store.

A projection stack is given as one of

- a directory: every ``*.tif`` / ``*.tiff`` file in it, one 2-D image per file, in natural order
  (``proj_2.tif`` before ``proj_10.tif``);
- a glob pattern (``"scan/proj_*.tif"``), or an explicit list of files, same rules;
- one multi-page TIFF file: one page per projection.

Flats and darks are given the same way (``flats=``, ``darks=``), and are read whole. Angles (degrees)
come from ``angles=``: an array-like, a text file with one angle per line, or ``(start, stop, step)``
(see :func:`tomoflow.io.readers.resolve_angles`). Projections are read page by page / file by file
when the lazy stack is sliced, so the stack is never loaded whole.
"""

from __future__ import annotations

import glob as _glob
import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tomoflow._checks import check_frames
from tomoflow.errors import InputError
from tomoflow.io.readers import LazyStack, RawScan, check_input_file, reader_errors, source_file
from tomoflow.io.scan_store import ScanStore

__all__ = ["natural_key", "list_tiffs", "open_tiff", "ingest_tiff", "TiffSpec"]

logger = logging.getLogger(__name__)

#: A TIFF stack specification: directory, glob pattern, multi-page file, or list of files.
TiffSpec = str | os.PathLike | Sequence[str | os.PathLike]

_TIFF_SUFFIXES = (".tif", ".tiff")


def natural_key(path: str | os.PathLike) -> list[Any]:
    """Sort key ordering embedded numbers numerically (``a2`` < ``a10``)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(path))]


def list_tiffs(spec: TiffSpec) -> list[Path]:
    """Files of a TIFF specification (directory, glob, single file or list), naturally sorted.

    A list keeps the caller's order. Raises :class:`InputError` if nothing matches.
    """
    if isinstance(spec, (list, tuple)):
        files = [check_input_file(f) for f in spec]
        if not files:
            raise InputError("empty list of TIFF files")
        return files
    s = str(spec)
    p = Path(s)
    if p.is_dir():
        files = sorted((f for f in p.iterdir() if f.is_file() and f.suffix.lower() in _TIFF_SUFFIXES), key=natural_key)
        if not files:
            raise InputError("directory holds no .tif/.tiff files", p)
        return files
    if any(c in s for c in "*?["):
        files = sorted((Path(f) for f in _glob.glob(s) if Path(f).is_file()), key=natural_key)
        if not files:
            raise InputError("no file matches the pattern", s)
        return files
    return [check_input_file(p)]


def _spec_name(spec: TiffSpec) -> str | None:
    if isinstance(spec, (str, os.PathLike)):
        return str(spec)
    return str(spec[0]) if len(spec) else None


class _TiffStack:
    """Frames of a list of single-image TIFFs, or of the pages of one multi-page TIFF."""

    def __init__(self, files: list[Path], what: str) -> None:
        import tifffile

        self.files = files
        self.what = what
        first = files[0]
        check_input_file(first)
        with reader_errors(first, None, "cannot read TIFF (corrupt or not a TIFF?)"):
            with tifffile.TiffFile(first) as tf:
                page = tf.pages[0]
                shape, dtype, n_pages = tuple(page.shape), np.dtype(page.dtype), len(tf.pages)
        if len(shape) != 2:
            raise InputError(f"TIFF images must be 2-D (row, col), got page shape {shape}", first, "page 0")
        self.multipage = len(files) == 1 and n_pages > 1
        if len(files) > 1 and n_pages > 1:
            raise InputError(
                f"{n_pages} pages in one file of a {len(files)}-file stack; give a multi-page file alone", first
            )
        self.frame_shape = shape
        self.dtype = dtype
        self.n = n_pages if self.multipage else len(files)
        self.path = files[0] if len(files) == 1 else files[0].parent
        self._tf: Any = None

    def check_headers(self) -> None:
        """Check every file (or page) of the stack before anything is written: a readable TIFF holding
        one 2-D image of the stack's shape. Reads headers only (the pixels stream later)."""
        import tifffile

        if self.multipage:
            f = self.files[0]
            with reader_errors(f, None, "cannot read TIFF pages (corrupt or truncated?)"):
                with tifffile.TiffFile(f) as tf:
                    for j, page in enumerate(tf.pages):
                        if tuple(page.shape) != self.frame_shape:
                            raise InputError(
                                f"page shape {tuple(page.shape)} differs from the stack's {self.frame_shape}",
                                f,
                                f"page {j}",
                            )
            return
        for f in self.files[1:]:
            check_input_file(f)
            with reader_errors(f, None, "cannot read TIFF (corrupt or not a TIFF?)"):
                with tifffile.TiffFile(f) as tf:
                    n_pages = len(tf.pages)
                    shape = tuple(tf.pages[0].shape)
            if n_pages != 1:
                raise InputError(
                    f"{n_pages} pages in one file of a {len(self.files)}-file stack; give a multi-page file alone", f
                )
            if shape != self.frame_shape:
                raise InputError(f"image shape {shape} differs from the stack's {self.frame_shape}", f)

    def close(self) -> None:
        if self._tf is not None:
            self._tf.close()
            self._tf = None

    def read(self, a: int, b: int) -> np.ndarray:
        import tifffile

        out = np.empty((b - a, *self.frame_shape), self.dtype)
        if self.multipage:
            f = self.files[0]
            with reader_errors(f, f"pages {a}..{b - 1}", "cannot read TIFF pages"):
                if self._tf is None:  # kept open: page offsets are parsed once, not per block
                    self._tf = tifffile.TiffFile(f)
                for j in range(a, b):
                    img = self._tf.pages[j].asarray()
                    self._check(img, f, f"page {j}")
                    out[j - a] = img
            return out
        for j in range(a, b):
            f = self.files[j]
            check_input_file(f)
            with reader_errors(f, None, "cannot read TIFF (corrupt or not a TIFF?)"):
                img = tifffile.imread(f, key=0)
            self._check(img, f, None)
            out[j - a] = img
        return out

    def _check(self, img: np.ndarray, f: Path, ds: str | None) -> None:
        if img.shape != self.frame_shape:
            raise InputError(f"image shape {img.shape} differs from the stack's {self.frame_shape}", f, ds)

    def lazy(self) -> LazyStack:
        return LazyStack((self.n, *self.frame_shape), self.dtype, self.read, self.path, self.what)

    def read_all(self) -> np.ndarray:
        try:
            return self.read(0, self.n)
        finally:
            self.close()


def open_tiff(
    source: TiffSpec,
    *,
    angles: Any = None,
    flats: TiffSpec | None = None,
    darks: TiffSpec | None = None,
) -> RawScan:
    """Open a TIFF stack as a lazy :class:`~tomoflow.io.readers.RawScan`.

    Parameters
    ----------
    source
        Projections: directory, glob pattern, list of files, or a multi-page TIFF (see module doc).
    angles
        Rotation angle of every projection, degrees: array-like, text file (one per line) or
        ``(start, stop, step)``. Required (TIFF files carry no angles).
    flats, darks
        Flat and dark frames, specified like ``source``; optional.

    Returns
    -------
    RawScan
        ``source.sha256`` is the digest of the projection files' bytes concatenated in stack order.
    """
    if angles is None:
        raise InputError(
            "TIFF stacks carry no rotation angles; pass angles= (list, text file or (start, stop, step))",
            _spec_name(source),
            "angles",
        )
    files = list_tiffs(source)
    flat_files = list_tiffs(flats) if flats is not None else []
    dark_files = list_tiffs(darks) if darks is not None else []
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        # Flats/darks living in the projection directory are not projections.
        exclude = {f.resolve() for f in flat_files + dark_files}
        files = [f for f in files if f.resolve() not in exclude]
        if not files:
            raise InputError("no projection files left after removing flats and darks", source)
    stack = _TiffStack(files, "projections")
    stack.check_headers()  # shape mismatches and corrupt headers: refused before a store exists
    flat_arr = _TiffStack(flat_files, "flats").read_all() if flat_files else None
    dark_arr = _TiffStack(dark_files, "darks").read_all() if dark_files else None
    for name, arr, fl in (("flats", flat_arr, flat_files), ("darks", dark_arr, dark_files)):
        if arr is not None:
            check_frames(name, arr, *stack.frame_shape, fl[0], name)
    src_path = str(source) if isinstance(source, (str, os.PathLike)) else str(files[0].parent)
    raw = RawScan(
        projections=stack.lazy(),
        angles_deg=None,
        source=source_file(src_path, "tiff", files=files)
        if len(files) > 1 or Path(src_path).is_dir()
        else source_file(files[0], "tiff"),
        flats=flat_arr,
        darks=dark_arr,
        dataset="projections",
        angles_dataset="angles",
        instrument={
            "format": "TIFF stack",
            "n_files": len(files),
            "first_file": files[0].name,
            "last_file": files[-1].name,
            "multipage": stack.multipage,
        },
        closer=stack.close,
    )
    raw.override_angles(angles)
    return raw


def ingest_tiff(
    source: TiffSpec,
    store_path: str | os.PathLike,
    *,
    angles: Any = None,
    flats: TiffSpec | None = None,
    darks: TiffSpec | None = None,
    overwrite: bool = False,
    progress: Callable[[int], Any] | None = None,
    pixel_size_um: float | None = None,
    energy_kev: float | None = None,
) -> ScanStore:
    """Ingest a TIFF stack into a new scan store, streaming blocks of projections.

    Parameters
    ----------
    source
        Projections: directory, glob pattern, list of files, or one multi-page TIFF.
    store_path
        Scan store to create.
    angles
        Angles in degrees (array-like, text file or ``(start, stop, step)``); required.
    flats, darks
        Flat and dark frames, specified like ``source``.
    overwrite
        Replace an existing store.
    progress
        Called with the number of projections written after each block.
    pixel_size_um, energy_kev
        Pixel size (micrometre) and beam energy (keV), if known.

    Returns
    -------
    ScanStore
        The store, ``ingest`` complete.
    """
    with open_tiff(source, angles=angles, flats=flats, darks=darks) as raw:
        return raw.to_store(
            store_path, overwrite=overwrite, progress=progress, pixel_size_um=pixel_size_um, energy_kev=energy_kev
        )
