"""The scan store: one tomography scan in a zarr v3 group, readable as an :class:`xarray.Dataset`.

Layout (all arrays carry zarr v3 ``dimension_names`` so xarray sees labelled dimensions)::

    scan.zarr/
      projections      (angle, row, col)  float32   raw counts or line integrals (attrs ``values``);
                                          uint16    raw counts given as uint8 / uint16 (kept as
                                                    counted: half the bytes of float32)
      flats            (flat, row, col)   float32   raw flat (white) fields; may have length 0 (uint16
      darks            (dark, row, col)   float32   raw dark fields; may have length 0  as above)
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

Completion and identity
-----------------------
:func:`write_scan` is the ``ingest`` stage: its record (``stages/ingest``, see
:mod:`tomoflow.io.stages`) is created incomplete and marked complete only after the last block was
written, with the sha256 of everything written as the store's identity. :func:`open_scan` refuses an
incomplete store. Output safety (never replacing a user's folder or the source) is
:func:`tomoflow.io.output.prepare_output`'s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from tomoflow import config as _config
from tomoflow._checks import check_frames as _check_frames
from tomoflow._checks import validate_angles
from tomoflow._hashing import file_sha256
from tomoflow._version import __version__
from tomoflow.errors import ConfigError, InputError, StoreError
from tomoflow.io.models import SCAN_FORMAT, Provenance, ScanAttrs, SourceFile, StageRecord
from tomoflow.io.output import OutputPlan, create_store, fingerprint, prepare_output
from tomoflow.io.lock import claim_output, writes_outputs
from tomoflow.io.stages import StageLog, stage_records, store_identity, store_kind

logger = logging.getLogger(__name__)

__all__ = [
    "ScanStore",
    "open_scan",
    "write_scan",
    "storage_dtype",
    "default_scan_chunks",
    "file_sha256",
    "validate_angles",
    "validate_center",
]


def default_scan_chunks(n_angles: int, n_rows: int, n_cols: int) -> tuple[int, int, int]:
    """Chunk shape ``(angle, row, col)`` of scan-store projections (see module docstring)."""
    cfg = _config.get()
    return (max(1, min(cfg.scan_chunk_angles, n_angles)), max(1, min(cfg.scan_chunk_rows, n_rows)), max(1, n_cols))


class ScanStore:
    """Handle on a scan store on disk (see module docstring for the layout).

    :func:`write_scan` makes one (the ``ingest`` stage, with output safety and identity); :meth:`open`
    opens one; :func:`open_scan` gives the labelled, lazy :class:`xarray.Dataset`.
    """

    def __init__(self, path: str | os.PathLike, group: zarr.Group) -> None:
        self.path = Path(path)
        self.group = group

    # ------------------------------------------------------------------ creation
    @staticmethod
    def build_attrs(
        *,
        values: str = "intensity",
        pixel_size_um: float | None = None,
        energy_kev: float | None = None,
        rotation_center: float | None = None,
        instrument: Mapping[str, Any] | None = None,
        source: SourceFile | None = None,
    ) -> ScanAttrs:
        """Validated root attributes of a new scan store.

        Raises
        ------
        ConfigError
            Pixel size or energy not positive and finite, unknown ``values``.
        """
        if values not in ("intensity", "line-integral"):
            raise ConfigError(f"values must be 'intensity' or 'line-integral', got {values!r}")
        for name, v, unit in (("pixel size", pixel_size_um, "micrometre"), ("energy", energy_kev, "keV")):
            if v is not None and not (isinstance(v, (int, float, np.number)) and np.isfinite(v) and v > 0):
                raise ConfigError(f"{name} must be a positive number of {unit}, got {v!r}")
        if rotation_center is not None and not np.isfinite(rotation_center):
            raise ConfigError(f"rotation centre must be a finite number of pixels, got {rotation_center!r}")
        return ScanAttrs(
            values=values,  # type: ignore[arg-type]
            pixel_size=None if pixel_size_um is None else {"value": float(pixel_size_um), "unit": "micrometer"},
            energy=None if energy_kev is None else {"value": float(energy_kev), "unit": "keV"},
            rotation_center=None if rotation_center is None else float(rotation_center),
            instrument=dict(instrument or {}),
            source=source,
            provenance=Provenance(tomoflow_version=__version__, config=_config.get().model_dump(mode="json"),
                                  inputs=[source] if source else []),
        )

    @classmethod
    def _create(cls, plan: OutputPlan, attrs: ScanAttrs, shape: tuple[int, int, int], angles: np.ndarray, *,
                n_flats: int, n_darks: int, chunks: tuple[int, int, int], stage_position_um: np.ndarray | None,
                dtypes: dict[str, np.dtype] | None = None) -> "ScanStore":
        """Create the (validated) store layout: root attributes, empty arrays, the angle coordinate.
        ``dtypes`` gives the storage type of projections, flats and darks (default float32)."""
        n_angles, n_rows, n_cols = shape
        dtypes = dtypes or {}

        def typed(name: str) -> dict[str, Any]:
            dt = np.dtype(dtypes.get(name, np.float32))
            return {"dtype": dt, "fill_value": np.nan if dt.kind == "f" else 0}

        root = create_store(plan, attrs.model_dump(mode="json"))
        root.create_array(
            "projections", shape=shape, chunks=chunks, **typed("projections"),
            dimension_names=["angle", "row", "col"],
            attributes={"long_name": "projections", "values": attrs.values},
        )
        for name, n, dim in (("flats", n_flats, "flat"), ("darks", n_darks, "dark")):
            root.create_array(
                name, shape=(int(n), n_rows, n_cols), chunks=(max(1, min(int(n), 8)), chunks[1], n_cols),
                **typed(name), dimension_names=[dim, "row", "col"],
            )
        ang = root.create_array("angle", shape=(n_angles,), dtype="float64", dimension_names=["angle"],
                                attributes={"units": "degree", "long_name": "rotation angle"}, fill_value=np.nan)
        ang[:] = angles
        if stage_position_um is not None:
            arr = root.create_array("stage_position", shape=stage_position_um.shape, dtype="float64",
                                    dimension_names=["angle", "axis"],
                                    attributes={"units": "micrometer", "axis_names": ["x", "y", "z"]},
                                    fill_value=np.nan)
            arr[:] = stage_position_um
        return cls(plan.path, root)

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
        if store_kind(path) != SCAN_FORMAT:
            raise StoreError(f"{path}: not a tomoflow scan store")
        try:
            root = zarr.open_group(str(path), mode=mode)
        except Exception as exc:  # noqa: BLE001 - zarr raises many types
            raise StoreError(f"{path}: not a zarr store ({type(exc).__name__}: {exc})") from None
        store = cls(path, root)
        store.validate(require_complete=require_complete)
        return store

    def validate(self, *, require_complete: bool = True) -> ScanAttrs:
        """Check layout and attributes; return the parsed attributes."""
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
        if require_complete:
            stages = self.stages()
            unfinished = [name for name, rec in stages.items() if not rec.complete]
            if not stages or unfinished:
                what = unfinished[0] if unfinished else "ingest"
                raise StoreError(f"{self.path}: {what} did not complete (interrupted?); run the same "
                                 f"command again")
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

    @property
    def identity(self) -> str:
        """What the store holds, independent of its path (see :func:`tomoflow.io.stages.store_identity`)."""
        return store_identity(self.path)

    # ------------------------------------------------------------------ stages
    def stages(self) -> dict[str, StageRecord]:
        """Every stage record of the store (``ingest``, later ``align`` ...)."""
        return stage_records(self.path)

    def stage(self, name: str) -> StageRecord:
        return self.stages().get(name, StageRecord())

    def is_complete(self, name: str) -> bool:
        return self.stage(name).complete

    def save_center(self, center: float) -> None:
        """Record the rotation centre (column, px) that ``reconstruct_scan`` uses by default.

        Raises
        ------
        ConfigError
            If ``center`` is not finite or lies outside the detector (0 .. ncol - 1).
        """
        c = validate_center(center, self.shape[2], self.path)
        data = self.attrs.model_dump(mode="json")
        data["rotation_center"] = c
        self.group.attrs.put(ScanAttrs.model_validate(data).model_dump(mode="json"))

    def to_xarray(self):  # -> xarray.Dataset
        """Lazy (dask-backed) :class:`xarray.Dataset` view of the store."""
        import xarray as xr

        return xr.open_zarr(str(self.path), consolidated=False, zarr_format=3, mask_and_scale=False)


def validate_center(center: Any, n_cols: int, path: Any = None) -> float:
    """A rotation centre (column, px) checked to be finite and on the detector (0 .. n_cols - 1).

    Raises
    ------
    ConfigError
        Not a number, not finite, or outside the detector.
    """
    try:
        c = float(center)
    except (TypeError, ValueError):
        raise ConfigError(f"rotation centre must be a number of pixels or 'auto', got {center!r}") from None
    if not np.isfinite(c) or not 0.0 <= c <= n_cols - 1:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}rotation centre {center!r} px is outside the detector: it must lie within "
                          f"0 .. {n_cols - 1} (detector centre {(n_cols - 1) / 2:g})")
    return c


def open_scan(path: str | os.PathLike):  # -> xarray.Dataset
    """Open a complete scan store as a lazy :class:`xarray.Dataset` (angle coordinate in degrees)."""
    return ScanStore.open(path).to_xarray()


class _ContentHash:
    """sha256 of everything an ingest writes, fed as it streams (the store's ``output_id``)."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def update(self, label: str, array: Any) -> None:
        a = np.ascontiguousarray(array)
        self._h.update(f"\0{label}\0{a.dtype.str}\0{a.shape}\0".encode())
        self._h.update(a.tobytes() if a.size == 0 else memoryview(a).cast("B"))

    def text(self, label: str, obj: Any) -> None:
        self._h.update(f"\0{label}\0{json.dumps(obj, sort_keys=True, default=str)}".encode())

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def _ingest_fingerprint(source: SourceFile | None, projections: Any, flats: np.ndarray, darks: np.ndarray,
                        angles: np.ndarray, meta: Mapping[str, Any], chunks: tuple[int, int, int],
                        extra: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Fingerprint of an ingest: the source's sha256 (or the in-memory data's) and every parameter."""
    h = _ContentHash()
    if source is not None and source.sha256:
        h.text("source", source.sha256)
    elif isinstance(projections, np.ndarray):
        h.update("projections", projections)
    else:  # a lazy array-like without a file identity: never resumed, never "already complete"
        h.text("nonce", uuid.uuid4().hex)
    h.update("flats", flats)
    h.update("darks", darks)
    h.update("angles", angles)
    for name, (dims, values, attributes) in sorted(extra.items()):
        h.update(f"extra:{name}", np.asarray(values))
        h.text(f"extra-meta:{name}", [list(dims), dict(attributes)])
    params = {"data": h.hexdigest(), "chunks": list(chunks),
              **{k: v for k, v in meta.items() if k != "provenance"}}
    return fingerprint("ingest", inputs={"source": params.pop("data")}, params=params), params


#: Integer types raw counts keep in a scan store (stored as uint16): detectors count in 8-16 bits.
_COUNT_TYPES = (np.dtype(np.uint8), np.dtype(np.uint16))


def storage_dtype(dtype: Any, values: str = "intensity") -> np.dtype:
    """How a scan store keeps data of ``dtype``: raw counts of 8 or 16 bits as ``uint16`` (exact, half
    the bytes of float32), everything else as ``float32``."""
    if values == "intensity" and dtype is not None and np.dtype(dtype) in _COUNT_TYPES:
        return np.dtype(np.uint16)
    return np.dtype(np.float32)


def _as_stored(frames: np.ndarray, values: str) -> np.ndarray:
    return frames.astype(storage_dtype(frames.dtype, values), copy=False)


@writes_outputs
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
    values: str = "intensity",
    pixel_size_um: float | None = None,
    energy_kev: float | None = None,
    rotation_center: float | None = None,
    stage_position_um: np.ndarray | None = None,
    instrument: Mapping[str, Any] | None = None,
    source: SourceFile | None = None,
    chunks: tuple[int, int, int] | None = None,
) -> ScanStore:
    """Write a scan held in (or streamed from) array-likes to a scan store: the ``ingest`` stage.

    ``projections`` may be a NumPy array, an h5py dataset, a zarr array, a dask array or any object
    with ``shape`` and slicing along the first axis: it is copied in chunk-aligned blocks of angles,
    so it is never read into memory whole.

    Everything is validated before anything is created. The output obeys the stage engine's rules
    (:mod:`tomoflow.io.output`): a store already holding this very ingest (same source sha256 and
    parameters) is returned at once without a write; an interrupted one is redone; a scan store of
    other data is refused unless ``overwrite``; a folder that is not a tomoflow scan store, or the
    source itself, is never replaced.

    Parameters
    ----------
    path
        Scan store to create (a directory, conventionally ``*.zarr``).
    projections
        ``(angle, row, col)`` raw counts (``values="intensity"``) or line integrals. Counts given as
        ``uint8`` / ``uint16`` are stored as ``uint16`` (exactly, half the bytes), other types as
        ``float32`` (see :func:`storage_dtype`); flats and darks likewise.
    angles_deg
        Rotation angle of every projection, degrees.
    flats, darks
        ``(frame, row, col)`` or ``(row, col)`` reference frames, or None.
    overwrite
        Replace a scan store made from other data or parameters.
    block_angles
        Angles per streamed block (default: the angle chunk).
    progress
        Called with the number of projections written after each block.
    extra_arrays
        Name -> ``(dimension names, array, attributes)`` of small additional variables (e.g. the true
        jitter of a synthetic scan), written before the store is marked complete.
    values
        ``"intensity"`` or ``"line-integral"``.
    pixel_size_um, energy_kev
        Detector pixel size (micrometre) and beam energy (keV), if known; positive.
    rotation_center
        Rotation axis column (pixels), if known.
    stage_position_um
        ``(n_angles, 3)`` stage x, y, z per projection in micrometres, if known.
    instrument
        Raw instrument metadata (JSON-able).
    source
        The file the scan comes from (path, format, sha256): its identity, and an input that the
        output may never be, contain or lie in.
    chunks
        Override the projection chunk shape (see :func:`default_scan_chunks`).

    Returns
    -------
    ScanStore
        The store, with a complete ``ingest`` stage.

    Raises
    ------
    InputError
        Bad data (shapes, empty, NaN projections, angle count), naming the source file.
    ConfigError
        Bad parameters (pixel size, energy, values).
    StoreError
        The output may not be written (see above) or cannot be created.
    """
    t0 = time.perf_counter()
    shape = tuple(getattr(projections, "shape", ()))
    src_path = source.path if source else None
    if len(shape) != 3:
        raise InputError(f"projections must be 3-D (angle, row, col), got shape {shape}", src_path, "projections")
    if 0 in shape:
        raise InputError(f"projections are empty (shape {shape})", src_path, "projections")
    n_angles, n_rows, n_cols = (int(v) for v in shape)
    angles = validate_angles(angles_deg, n_angles, src_path, "angles")
    proj_dtype = storage_dtype(getattr(projections, "dtype", None), values)
    flats_a = (np.zeros((0, n_rows, n_cols), proj_dtype) if flats is None
               else _as_stored(np.asarray(flats), values))
    darks_a = (np.zeros((0, n_rows, n_cols), proj_dtype) if darks is None
               else _as_stored(np.asarray(darks), values))
    if flats_a.ndim == 2:
        flats_a = flats_a[None]
    if darks_a.ndim == 2:
        darks_a = darks_a[None]
    _check_frames("flats", flats_a, n_rows, n_cols, src_path)
    _check_frames("darks", darks_a, n_rows, n_cols, src_path)
    sp = None
    if stage_position_um is not None:
        sp = np.asarray(stage_position_um, dtype=np.float64)
        if sp.shape != (n_angles, 3):
            raise InputError(f"stage positions must be (n_angles, 3) = ({n_angles}, 3), got {sp.shape}",
                             src_path, "stage_position")
    attrs = ScanStore.build_attrs(values=values, pixel_size_um=pixel_size_um, energy_kev=energy_kev,
                                  rotation_center=rotation_center, instrument=instrument, source=source)
    chunks = tuple(chunks) if chunks is not None else default_scan_chunks(n_angles, n_rows, n_cols)
    extra = dict(extra_arrays or {})
    meta = attrs.model_dump(mode="json")
    meta["stage_position"] = None if sp is None else hashlib.sha256(sp.tobytes()).hexdigest()
    meta["instrument"] = hashlib.sha256(json.dumps(meta["instrument"], sort_keys=True, default=str).encode()).hexdigest()
    fp, params = _ingest_fingerprint(source, projections, flats_a, darks_a, angles, meta, chunks, extra)
    inputs = [source.path] if source is not None and source.format != "synthetic" and os.path.exists(source.path) else []
    plan = claim_output(lambda: prepare_output(path, kind=SCAN_FORMAT, stage="ingest", fingerprint=fp, params=params,
                                               inputs=inputs, overwrite=overwrite), path, what="ingest output")
    if plan.action == "complete":
        logger.info("%s already holds this ingest; nothing to do", path)
        if progress is not None:
            progress(n_angles)
        return ScanStore.open(path)
    if plan.action == "resume":  # our own interrupted ingest of the same data: redo it from the start
        plan = OutputPlan("replace", plan.path)

    store = ScanStore._create(plan, attrs, (n_angles, n_rows, n_cols), angles, n_flats=flats_a.shape[0],
                              n_darks=darks_a.shape[0], chunks=chunks, stage_position_um=sp,
                              dtypes={"projections": proj_dtype, "flats": flats_a.dtype, "darks": darks_a.dtype})
    stage = StageLog.begin(path, "ingest", fingerprint=fp, params=params, steps={})
    content = _ContentHash()
    content.text("attrs", {k: v for k, v in meta.items() if k not in ("provenance", "source")})
    content.update("angles", angles)
    for name, frames in (("flats", flats_a), ("darks", darks_a)):
        if frames.size:
            store.group[name][:] = frames
        content.update(name, frames)
    step = block_angles or chunks[0]
    for start in range(0, n_angles, step):
        block = np.asarray(projections[start : start + step]).astype(proj_dtype, copy=False)
        if block.shape[1:] != (n_rows, n_cols):
            raise InputError(f"projection block at angle {start} has shape {block.shape}", src_path, "projections")
        bad = (~np.isfinite(block).reshape(block.shape[0], -1).any(axis=1) if block.dtype.kind == "f"
               else np.zeros(block.shape[0], bool))
        if bad.any():
            raise InputError(f"projection {start + int(np.argmax(bad))} contains no finite value (all NaN/Inf)",
                             src_path, "projections")
        store.projections[start : start + block.shape[0]] = block
        content.update("projections", block)
        if progress is not None:
            progress(block.shape[0])
    for name, (dims, vals, attributes) in extra.items():
        vals = np.asarray(vals)
        arr = store.group.create_array(name, shape=vals.shape, dtype=vals.dtype, dimension_names=list(dims),
                                       attributes=dict(attributes))
        arr[:] = vals
        content.update(f"extra:{name}", vals)
    stage.finish(output_id=content.hexdigest(), seconds=time.perf_counter() - t0)
    return store
