"""The scan store: one tomography scan in a zarr v3 group, readable as an :class:`xarray.Dataset`.

Layout (all arrays carry zarr v3 ``dimension_names`` so xarray sees labelled dimensions)::

    scan.zarr/
      projections      (angle, row, col)  float32   raw counts or line integrals (attrs ``values``)
      flats            (flat, row, col)   float32   raw flat (white) fields; may have length 0
      darks            (dark, row, col)   float32   raw dark fields; may have length 0
      angle            (angle,)           float64   rotation angle in degrees (index coordinate)
      stage_position   (angle, axis)      float64   optional, micrometres, axis = x, y, z (attribute)
      zarr.json        group attributes:  :class:`tomoflow.io.models.ScanAttrs`

Chunking
--------
``projections`` is chunked ``(8, 32, ncol)`` by default (angles x rows x all columns; see
:class:`tomoflow.config.TomoflowConfig`). Columns are never split because every consumer needs whole
detector lines. The two big consumers read along different axes: alignment reads whole projections
(a few angles, all rows) and reconstruction reads sinogram slabs (all angles, a few rows). A chunk
of a few angles by a few tens of rows is the compromise that serves both with whole-chunk reads:
a batch of 8 projections reads ``nrow / 32`` whole chunks, and a slab of 32 rows reads
``nangle / 8`` whole chunks, with no read amplification in either direction, while keeping chunks
around 1-4 MB for typical 1-2k detectors (small enough to stream, large enough for throughput).

Completion
----------
A store is created with ``stages.ingest.complete = False`` and marked complete only after the last
block was written (:meth:`ScanStore.mark_complete`). :func:`open_scan` refuses an incomplete store.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from tomoflow import config as _config
from tomoflow._version import __version__
from tomoflow.errors import InputError, StoreError
from tomoflow.io.models import Provenance, ScanAttrs, SourceFile, StageRecord, utc_now

__all__ = [
    "ScanStore",
    "open_scan",
    "write_scan",
    "default_scan_chunks",
    "file_sha256",
    "validate_angles",
]


def file_sha256(path: str | os.PathLike, block: int = 1 << 22) -> str:
    """sha256 of a file's bytes, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def default_scan_chunks(n_angles: int, n_rows: int, n_cols: int) -> tuple[int, int, int]:
    """Chunk shape ``(angle, row, col)`` of scan-store projections (see module docstring)."""
    cfg = _config.get()
    return (max(1, min(cfg.scan_chunk_angles, n_angles)), max(1, min(cfg.scan_chunk_rows, n_rows)), max(1, n_cols))


def validate_angles(angles_deg: Any, n_angles: int, path: str | os.PathLike | None = None, dataset: str | None = None) -> np.ndarray:
    """Check an angle list (degrees) against the number of projections; return float64 array."""
    try:
        angles = np.asarray(angles_deg, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise InputError(f"angles are not numbers ({exc})", path, dataset) from None
    if angles.size != n_angles:
        raise InputError(f"angle count mismatch: {angles.size} angles for {n_angles} projections", path, dataset)
    if not np.all(np.isfinite(angles)):
        raise InputError("angles contain NaN or Inf", path, dataset)
    return angles


def _check_frames(name: str, arr: Any, n_rows: int, n_cols: int, path: Any) -> tuple[int, int, int]:
    shape = tuple(getattr(arr, "shape", ()))
    if len(shape) != 3:
        raise InputError(f"{name} must be 3-D (frame, row, col), got shape {shape}", path, name)
    if shape[1:] != (n_rows, n_cols):
        raise InputError(f"{name} frames are {shape[1:]} but projections are {(n_rows, n_cols)}", path, name)
    return shape  # type: ignore[return-value]


class ScanStore:
    """Handle on a scan store on disk (see module docstring for the layout).

    Use :meth:`create` to start a new store and write into it block by block (streaming ingest), or
    :meth:`open` to read one. :func:`open_scan` gives the labelled, lazy :class:`xarray.Dataset`.
    """

    def __init__(self, path: str | os.PathLike, group: zarr.Group) -> None:
        self.path = Path(path)
        self.group = group

    # ------------------------------------------------------------------ creation
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        shape: tuple[int, int, int],
        angles_deg: Sequence[float] | np.ndarray,
        *,
        n_flats: int = 0,
        n_darks: int = 0,
        values: str = "intensity",
        pixel_size_um: float | None = None,
        energy_kev: float | None = None,
        rotation_center: float | None = None,
        stage_position_um: np.ndarray | None = None,
        instrument: Mapping[str, Any] | None = None,
        source: SourceFile | None = None,
        chunks: tuple[int, int, int] | None = None,
        overwrite: bool = False,
    ) -> "ScanStore":
        """Create an empty scan store with ``stages.ingest.complete = False``.

        Parameters
        ----------
        path
            Directory of the zarr v3 store (conventionally ``*.zarr``).
        shape
            ``(n_angles, n_rows, n_cols)`` of the projections.
        angles_deg
            Rotation angle of every projection, degrees.
        n_flats, n_darks
            Number of flat and dark frames that will be written.
        values
            ``"intensity"`` (raw) or ``"line-integral"`` (already -log normalised).
        pixel_size_um, energy_kev
            Detector pixel size (micrometre) and beam energy (keV), if known.
        rotation_center
            Rotation axis column (pixels) if known.
        stage_position_um
            ``(n_angles, 3)`` stage x, y, z per projection in micrometres, if known.
        chunks
            Override the projection chunk shape (see :func:`default_scan_chunks`).
        overwrite
            Replace an existing store at ``path``.
        """
        path = Path(path)
        if len(shape) != 3 or min(shape) < 1:
            raise InputError(f"projections must be a non-empty 3-D (angle, row, col) stack, got shape {tuple(shape)}", source.path if source else None)
        n_angles, n_rows, n_cols = (int(s) for s in shape)
        angles = validate_angles(angles_deg, n_angles, source.path if source else None, "angles")
        if values not in ("intensity", "line-integral"):
            raise InputError(f"values must be 'intensity' or 'line-integral', got {values!r}")
        if path.exists() and not overwrite:
            raise StoreError(f"{path}: store exists; pass overwrite=True (CLI: --overwrite) to replace it")
        chunks = chunks or default_scan_chunks(n_angles, n_rows, n_cols)
        cfg = _config.get()
        attrs = ScanAttrs(
            values=values,  # type: ignore[arg-type]
            pixel_size=None if pixel_size_um is None else {"value": float(pixel_size_um), "unit": "micrometer"},
            energy=None if energy_kev is None else {"value": float(energy_kev), "unit": "keV"},
            rotation_center=rotation_center,
            instrument=dict(instrument or {}),
            source=source,
            stages={"ingest": StageRecord(complete=False, started=utc_now())},
            provenance=Provenance(
                tomoflow_version=__version__,
                config=cfg.model_dump(mode="json"),
                inputs=[source] if source else [],
            ),
        )
        root = zarr.open_group(str(path), mode="w" if overwrite else "w-", zarr_format=3)
        root.attrs.update(attrs.model_dump(mode="json"))
        root.create_array(
            "projections", shape=(n_angles, n_rows, n_cols), chunks=chunks, dtype="float32",
            dimension_names=["angle", "row", "col"], fill_value=np.nan,
            attributes={"long_name": "projections", "values": values},
        )
        for name, n, dim in (("flats", n_flats, "flat"), ("darks", n_darks, "dark")):
            root.create_array(
                name, shape=(int(n), n_rows, n_cols), chunks=(max(1, min(int(n), 8)), chunks[1], n_cols),
                dtype="float32", dimension_names=[dim, "row", "col"], fill_value=np.nan,
            )
        ang = root.create_array("angle", shape=(n_angles,), dtype="float64", dimension_names=["angle"],
                                attributes={"units": "degree", "long_name": "rotation angle"}, fill_value=np.nan)
        ang[:] = angles
        if stage_position_um is not None:
            sp = np.asarray(stage_position_um, dtype=np.float64)
            if sp.shape != (n_angles, 3):
                raise InputError(f"stage positions must be (n_angles, 3) = ({n_angles}, 3), got {sp.shape}", source.path if source else None, "stage_position")
            arr = root.create_array("stage_position", shape=sp.shape, dtype="float64",
                                    dimension_names=["angle", "axis"],
                                    attributes={"units": "micrometer", "axis_names": ["x", "y", "z"]},
                                    fill_value=np.nan)
            arr[:] = sp
        return cls(path, root)

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r", *, require_complete: bool = True) -> "ScanStore":
        """Open and validate an existing scan store.

        Raises
        ------
        StoreError
            If ``path`` is not a tomoflow scan store, or ingest did not complete.
        """
        path = Path(path)
        if not path.exists():
            raise StoreError(f"{path}: no such scan store")
        try:
            root = zarr.open_group(str(path), mode=mode)
        except Exception as exc:  # noqa: BLE001 - zarr raises many types
            raise StoreError(f"{path}: not a zarr store ({type(exc).__name__}: {exc})") from None
        store = cls(path, root)
        store.validate(require_complete=require_complete)
        return store

    def validate(self, *, require_complete: bool = True) -> ScanAttrs:
        """Check layout and attributes; return the parsed attributes."""
        if self.group.attrs.get("tomoflow_format") != "tomoflow-scan":
            raise StoreError(f"{self.path}: not a tomoflow scan store (attribute tomoflow_format missing)")
        try:
            attrs = ScanAttrs.model_validate(dict(self.group.attrs))
        except Exception as exc:  # noqa: BLE001
            raise StoreError(f"{self.path}: invalid scan-store attributes: {exc}") from None
        for name in ("projections", "flats", "darks", "angle"):
            if name not in self.group:
                raise StoreError(f"{self.path}: array {name!r} is missing")
        shape = self.projections.shape
        if len(shape) != 3:
            raise StoreError(f"{self.path}: projections must be 3-D, got {shape}")
        if self.group["angle"].shape != (shape[0],):
            raise StoreError(f"{self.path}: {self.group['angle'].shape[0]} angles for {shape[0]} projections")
        if require_complete and not attrs.stages.get("ingest", StageRecord()).complete:
            raise StoreError(f"{self.path}: ingest did not complete (interrupted?); ingest the scan again with --overwrite")
        return attrs

    # ------------------------------------------------------------------ access
    @property
    def attrs(self) -> ScanAttrs:
        return ScanAttrs.model_validate(dict(self.group.attrs))

    @property
    def projections(self) -> zarr.Array:
        return self.group["projections"]  # type: ignore[return-value]

    @property
    def flats(self) -> zarr.Array:
        return self.group["flats"]  # type: ignore[return-value]

    @property
    def darks(self) -> zarr.Array:
        return self.group["darks"]  # type: ignore[return-value]

    @property
    def angles_deg(self) -> np.ndarray:
        return np.asarray(self.group["angle"][:], dtype=np.float64)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.projections.shape)  # type: ignore[return-value]

    def write_projections(self, start: int, block: np.ndarray) -> None:
        """Write projections ``start .. start + len(block)`` (use chunk-aligned starts)."""
        self.projections[start : start + block.shape[0]] = np.asarray(block, dtype=np.float32)

    def write_frames(self, name: str, frames: np.ndarray) -> None:
        """Write all ``flats`` or ``darks`` frames at once."""
        arr = self.group[name]
        frames = np.asarray(frames, dtype=np.float32)
        if frames.shape != arr.shape:
            raise InputError(f"{name} shape {frames.shape} does not match store {arr.shape}", self.path, name)
        if frames.size:
            arr[:] = frames

    # ------------------------------------------------------------------ stage markers
    def stage(self, name: str) -> StageRecord:
        return self.attrs.stages.get(name, StageRecord())

    def is_complete(self, name: str) -> bool:
        return self.stage(name).complete

    def mark_started(self, name: str) -> None:
        self._set_stage(name, StageRecord(complete=False, started=utc_now()))

    def mark_complete(self, name: str, seconds: float | None = None, **info: Any) -> None:
        """Write the completion marker of stage ``name`` (call only after all data is written)."""
        prev = self.stage(name)
        rec = StageRecord(complete=True, started=prev.started, finished=utc_now(), seconds=seconds, info=info)
        self._set_stage(name, rec, seconds=seconds)

    def _set_stage(self, name: str, rec: StageRecord, seconds: float | None = None) -> None:
        attrs = self.attrs
        attrs.stages[name] = rec
        if seconds is not None:
            attrs.provenance.timings[name] = float(seconds)
        self.group.attrs.update(attrs.model_dump(mode="json"))

    def update_attrs(self, **changes: Any) -> None:
        """Update top-level attributes (validated against :class:`ScanAttrs`)."""
        data = self.attrs.model_dump(mode="json")
        data.update(changes)
        self.group.attrs.update(ScanAttrs.model_validate(data).model_dump(mode="json"))

    def to_xarray(self):  # -> xarray.Dataset
        """Lazy (dask-backed) :class:`xarray.Dataset` view of the store."""
        import xarray as xr

        ds = xr.open_zarr(str(self.path), consolidated=False, zarr_format=3, mask_and_scale=False)
        return ds


def open_scan(path: str | os.PathLike):  # -> xarray.Dataset
    """Open a complete scan store as a lazy :class:`xarray.Dataset` (angle coordinate in degrees)."""
    return ScanStore.open(path).to_xarray()


def write_scan(
    path: str | os.PathLike,
    projections: Any,
    angles_deg: Sequence[float] | np.ndarray,
    *,
    flats: Any = None,
    darks: Any = None,
    overwrite: bool = False,
    block_angles: int | None = None,
    progress: Any = None,
    extra_arrays: Mapping[str, tuple[Sequence[str], np.ndarray, Mapping[str, Any]]] | None = None,
    **metadata: Any,
) -> ScanStore:
    """Write a scan held in (or streamed from) array-likes to a new scan store.

    ``projections`` may be a NumPy array, an h5py dataset, a zarr array, a dask array or any object
    with ``shape`` and slicing along the first axis: it is copied in chunk-aligned blocks of angles,
    so it is never read into memory whole. ``metadata`` goes to :meth:`ScanStore.create`.
    ``extra_arrays`` maps names to ``(dimension names, array, attributes)`` of small additional
    variables (e.g. the true jitter of a synthetic scan), written before the store is marked complete.
    Returns the store, marked ``ingest`` complete.
    """
    t0 = time.perf_counter()
    shape = tuple(getattr(projections, "shape", ()))
    src = metadata.get("source")
    src_path = src.path if src else None
    if len(shape) != 3:
        raise InputError(f"projections must be 3-D (angle, row, col), got shape {shape}", src_path, "projections")
    if 0 in shape:
        raise InputError(f"projections are empty (shape {shape})", src_path, "projections")
    _, n_rows, n_cols = shape
    flats_a = np.zeros((0, n_rows, n_cols), np.float32) if flats is None else np.asarray(flats, dtype=np.float32)
    darks_a = np.zeros((0, n_rows, n_cols), np.float32) if darks is None else np.asarray(darks, dtype=np.float32)
    if flats_a.ndim == 2:
        flats_a = flats_a[None]
    if darks_a.ndim == 2:
        darks_a = darks_a[None]
    _check_frames("flats", flats_a, n_rows, n_cols, src_path)
    _check_frames("darks", darks_a, n_rows, n_cols, src_path)
    store = ScanStore.create(path, shape, angles_deg, n_flats=flats_a.shape[0], n_darks=darks_a.shape[0],
                             overwrite=overwrite, **metadata)
    store.write_frames("flats", flats_a)
    store.write_frames("darks", darks_a)
    step = block_angles or store.projections.chunks[0]
    for start in range(0, shape[0], step):
        block = np.asarray(projections[start : start + step], dtype=np.float32)
        if block.shape[1:] != (n_rows, n_cols):
            raise InputError(f"projection block at angle {start} has shape {block.shape}", src_path, "projections")
        bad = ~np.isfinite(block).reshape(block.shape[0], -1).any(axis=1)
        if bad.any():
            raise InputError(f"projection {start + int(np.argmax(bad))} contains no finite value (all NaN/Inf)", src_path, "projections")
        store.write_projections(start, block)
        if progress is not None:
            progress(block.shape[0])
    for name, (dims, values, attributes) in (extra_arrays or {}).items():
        values = np.asarray(values)
        arr = store.group.create_array(name, shape=values.shape, dtype=values.dtype, dimension_names=list(dims),
                                       attributes=dict(attributes))
        arr[:] = values
    store.mark_complete("ingest", seconds=time.perf_counter() - t0)
    return store
