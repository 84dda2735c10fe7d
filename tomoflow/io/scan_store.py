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
      zarr.json        group attributes:  :class:`tomoflow.io.metadata.ScanAttrs`

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

An ingest is identified by *what* it reads, never by the path it was reached through: the source's
sha256 (a TIFF stack: its files' bytes in stack order) and the parameters; the path is provenance only
(``source.path``). The same file through a symlink, a relative path or another working directory is the
same ingest: a rerun finds it complete and writes nothing.

A store is written under a temporary name beside its final path (``.<name>.ingest-<id>``) and renamed
into place only once complete, so an ingest that fails part way (a NaN projection, a corrupt TIFF,
Ctrl-C) leaves nothing behind and never replaces a good store with a broken one.

Physics of a scan
-----------------
Every scan is checked before a store is created (angles: :func:`tomoflow._checks.validate_scan_geometry`
with the ``"scan"`` need) and while it streams (:class:`tomoflow._checks.MeasuredCheck`: every projection
carries a finite line integral somewhere, and at least half of all pixels do; the fraction is recorded in
the ingest record). A stage that reads a store checks its own need with :meth:`ScanStore.check_for`
(for example FBP: at least 4 distinct projection directions). Reads go through :class:`StoreArray`,
which turns an undecodable chunk (truncated or corrupt file) into a :class:`~tomoflow.errors.StoreError`
naming the store, the array and the chunk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from tomoflow import config as _config
from tomoflow._checks import (
    MIN_MEASURED_FRACTION,
    SCAN_NEEDS,
    MeasuredCheck,
    check_int,
    check_planned_output,
    validate_angles,
    validate_scan_geometry,
)
from tomoflow._checks import check_frames as _check_frames
from tomoflow._hashing import file_sha256
from tomoflow._version import __version__
from tomoflow.errors import ConfigError, InputError, StoreError, TomoflowError, describe_os_error
from tomoflow.io.lock import claim_output, writes_outputs
from tomoflow.io.metadata import SCAN_FORMAT, Provenance, ScanAttrs, SourceFile, StageRecord
from tomoflow.io.output import OutputPlan, create_store, fingerprint, prepare_output, resolved_path
from tomoflow.io.stages import StageLog, stage_records, store_identity, store_kind

logger = logging.getLogger(__name__)

__all__ = [
    "ScanStore",
    "StoreArray",
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


class StoreArray:
    """A zarr array of a store, read through one door.

    Everything of the wrapped :class:`zarr.Array` is available (``shape``, ``chunks``, ``dtype``,
    writing by ``[...] = ...``); reads (``[...]``, :meth:`get_orthogonal_selection`, ``numpy.asarray``)
    turn a chunk that cannot be read or decoded (a truncated or corrupt chunk file: a zstd error, a
    short buffer) into a :class:`~tomoflow.errors.StoreError` naming the store, the array and the chunk.

    Parameters
    ----------
    array
        The zarr array.
    store
        The store's path (named in errors).
    name
        The array's name in the store.
    """

    def __init__(self, array: Any, store: str | os.PathLike, name: str) -> None:
        self._array = array
        self._store = Path(store)
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") or attr in ("_array", "_store", "_name"):
            raise AttributeError(attr)
        return getattr(self._array, attr)

    def __repr__(self) -> str:
        return f"StoreArray({self._store}/{self._name}, shape={self._array.shape}, dtype={self._array.dtype})"

    def __len__(self) -> int:
        return int(self._array.shape[0])

    @property
    def zarr_array(self) -> Any:
        """The wrapped :class:`zarr.Array`."""
        return self._array

    def __getitem__(self, selection: Any) -> Any:
        return self._read(self._array.__getitem__, selection)

    def get_orthogonal_selection(self, selection: Any, **kwargs: Any) -> Any:
        return self._read(lambda sel: self._array.get_orthogonal_selection(sel, **kwargs), selection)

    def get_basic_selection(self, selection: Any = Ellipsis, **kwargs: Any) -> Any:
        return self._read(lambda sel: self._array.get_basic_selection(sel, **kwargs), selection)

    def __setitem__(self, selection: Any, value: Any) -> None:
        self._array[selection] = value

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = np.asarray(self[...])
        return out if dtype is None else out.astype(dtype, copy=False)

    # ------------------------------------------------------------------ damaged chunks
    def _read(self, fn: Any, selection: Any) -> Any:
        try:
            return fn(selection)
        except (TomoflowError, MemoryError):
            raise
        except Exception as exc:  # codecs raise RuntimeError, ValueError, OSError ...
            bad = self._damaged_chunk(selection)
            if bad is None:  # every chunk reads on its own: not a damaged chunk, let it through
                raise
            key, where, err = bad
            raise StoreError(
                f"{self._store}: array {self._name!r}, chunk {key} ({where}) cannot be read "
                f"({type(err).__name__}: {str(err).strip() or 'no detail'}): the chunk file is truncated or corrupt; "
                "make the store again (the command that made it, with --overwrite)"
            ) from exc

    def _chunk_ranges(self, selection: Any) -> list[range] | None:
        shape, chunks = tuple(self._array.shape), tuple(self._array.chunks)
        sel = selection if isinstance(selection, tuple) else (selection,)
        if any(s is Ellipsis for s in sel):
            i = next(i for i, s in enumerate(sel) if s is Ellipsis)
            sel = sel[:i] + (slice(None),) * (len(shape) - len(sel) + 1) + sel[i + 1 :]
        sel = tuple(sel) + (slice(None),) * (len(shape) - len(sel))
        ranges = []
        for s, n, c in zip(sel, shape, chunks):
            if isinstance(s, slice):
                idx = range(*s.indices(n))
                if not idx:
                    return None
                lo, hi = min(idx[0], idx[-1]), max(idx[0], idx[-1])
            elif isinstance(s, (int, np.integer)):
                lo = hi = int(s) % n if n else 0
            else:
                a = np.asarray(s)
                a = np.flatnonzero(a) if a.dtype == bool else a.astype(np.int64).reshape(-1) % max(n, 1)
                if a.size == 0:
                    return None
                lo, hi = int(a.min()), int(a.max())
            ranges.append(range(lo // c, hi // c + 1))
        return ranges

    def _damaged_chunk(self, selection: Any) -> tuple[str, str, BaseException] | None:
        """The first chunk of ``selection`` that does not read on its own: (key, region, error)."""
        import itertools

        try:
            ranges = self._chunk_ranges(selection)
        except Exception:  # noqa: BLE001 - an unusual selection: search the whole array
            ranges = [range(-(-n // c)) for n, c in zip(self._array.shape, self._array.chunks)]
        if not ranges:
            return None
        shape, chunks = tuple(self._array.shape), tuple(self._array.chunks)
        dims = list(getattr(self._array.metadata, "dimension_names", None) or [f"axis {i}" for i in range(len(shape))])
        for coords in itertools.product(*ranges):
            region = tuple(slice(k * c, min((k + 1) * c, n)) for k, c, n in zip(coords, chunks, shape))
            try:
                self._array[region]
            except (TomoflowError, MemoryError):
                raise
            except Exception as err:  # noqa: BLE001 - the damaged chunk
                key = "c/" + "/".join(map(str, coords))
                where = ", ".join(f"{d} {r.start}-{r.stop - 1}" for d, r in zip(dims, region))
                return key, where, err
        return None


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
            values=values,  # type: ignore[arg-type]  # pydantic checks the literal
            pixel_size=None if pixel_size_um is None else {"value": float(pixel_size_um), "unit": "micrometer"},  # type: ignore[arg-type]  # pydantic validates the dict into a Quantity
            energy=None if energy_kev is None else {"value": float(energy_kev), "unit": "keV"},  # type: ignore[arg-type]  # pydantic validates the dict into a Quantity
            rotation_center=None if rotation_center is None else float(rotation_center),
            instrument=dict(instrument or {}),
            source=source,
            provenance=Provenance(
                tomoflow_version=__version__,
                config=_config.get().model_dump(mode="json"),
                inputs=[source] if source else [],
            ),
        )

    @classmethod
    def _create(
        cls,
        plan: OutputPlan,
        attrs: ScanAttrs,
        shape: tuple[int, int, int],
        angles: np.ndarray,
        *,
        n_flats: int,
        n_darks: int,
        chunks: tuple[int, int, int],
        stage_position_um: np.ndarray | None,
        dtypes: dict[str, np.dtype] | None = None,
    ) -> ScanStore:
        """Create the (validated) store layout: root attributes, empty arrays, the angle coordinate.
        ``dtypes`` gives the storage type of projections, flats and darks (default float32)."""
        n_angles, n_rows, n_cols = shape
        dtypes = dtypes or {}

        def typed(name: str) -> dict[str, Any]:
            dt = np.dtype(dtypes.get(name, np.float32))
            return {"dtype": dt, "fill_value": np.nan if dt.kind == "f" else 0}

        root = create_store(plan, attrs.model_dump(mode="json"))
        root.create_array(
            "projections",
            shape=shape,
            chunks=chunks,
            **typed("projections"),
            dimension_names=["angle", "row", "col"],
            attributes={"long_name": "projections", "values": attrs.values},
        )
        for name, n, dim in (("flats", n_flats, "flat"), ("darks", n_darks, "dark")):
            root.create_array(
                name,
                shape=(int(n), n_rows, n_cols),
                chunks=(max(1, min(int(n), 8)), chunks[1], n_cols),
                **typed(name),
                dimension_names=[dim, "row", "col"],
            )
        ang = root.create_array(
            "angle",
            shape=(n_angles,),
            dtype="float64",
            dimension_names=["angle"],
            attributes={"units": "degree", "long_name": "rotation angle"},
            fill_value=np.nan,
        )
        ang[:] = angles
        if stage_position_um is not None:
            arr = root.create_array(
                "stage_position",
                shape=stage_position_um.shape,
                dtype="float64",
                dimension_names=["angle", "axis"],
                attributes={"units": "micrometer", "axis_names": ["x", "y", "z"]},
                fill_value=np.nan,
            )
            arr[:] = stage_position_um
        return cls(plan.path, root)

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r", *, require_complete: bool = True) -> ScanStore:
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
        except Exception as exc:  # noqa: BLE001  (pydantic and zarr raise several types)
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
                raise StoreError(f"{self.path}: {what} did not complete (interrupted?); run the same command again")
            # A store made before the physics checks (or edited by hand) is checked as a scan again.
            validate_scan_geometry(
                self.angles_deg, shape[0], need="scan", path=self.path, dataset="angle", n_columns=shape[2]
            )
        return attrs

    def check_for(self, need: str) -> np.ndarray:
        """Check that this scan can serve ``need`` before a stage creates anything; return its angles.

        ``need`` is a key of :data:`tomoflow._checks.SCAN_NEEDS` (``"fbp"``, ``"sirt"``, ``"mlem"``,
        ``"center-vo"``, ``"center-pair"``, ``"align"``, ``"scan"``): its minimum of distinct
        projection directions and angular coverage (:func:`tomoflow._checks.validate_scan_geometry`).
        The projections must carry measurements: at least
        :data:`tomoflow._checks.MIN_MEASURED_FRACTION` of their pixels give a finite line integral.
        That fraction is recorded by ingest; a store without it (an aligned store, a store of an
        older tomoflow) is judged on three sampled projections.

        Raises
        ------
        InputError
            Naming the store, the need and the rule broken.
        """
        if need not in SCAN_NEEDS:
            raise ConfigError(f"unknown scan need {need!r}; choose one of {', '.join(map(repr, SCAN_NEEDS))}")
        angles = validate_scan_geometry(
            self.angles_deg, self.shape[0], need=need, path=self.path, dataset="angle", n_columns=self.shape[2]
        )
        rec = self.stage("ingest")
        frac = rec.info.get("measured_fraction") if rec.complete else None
        if isinstance(frac, (int, float)):
            if frac < MIN_MEASURED_FRACTION:
                raise InputError(
                    f"only {100 * frac:.1f} % of the projection pixels give a finite line integral; "
                    f"at least {100 * MIN_MEASURED_FRACTION:g} % must",
                    self.path,
                    "projections",
                )
            return angles
        values = self.attrs.values
        check = MeasuredCheck(
            values, np.asarray(self.darks[...]) if values == "intensity" else None, self.path, "projections"
        )
        n = self.shape[0]
        for i in sorted({0, n // 2, n - 1}):
            check.update(i, np.asarray(self.projections[i : i + 1]))
        check.finish()
        return angles

    # ------------------------------------------------------------------ access
    @property
    def attrs(self) -> ScanAttrs:
        return ScanAttrs.model_validate(dict(self.group.attrs))

    def array(self, name: str) -> StoreArray:
        """Array ``name`` of the store, read through :class:`StoreArray` (damaged chunks: StoreError)."""
        try:
            arr = self.group[name]
        except KeyError:
            raise StoreError(f"{self.path}: array {name!r} is missing") from None
        return StoreArray(arr, self.path, name)

    @property
    def projections(self) -> StoreArray:
        return self.array("projections")

    @property
    def flats(self) -> StoreArray:
        return self.array("flats")

    @property
    def darks(self) -> StoreArray:
        return self.array("darks")

    @property
    def angles_deg(self) -> np.ndarray:
        return np.asarray(self.array("angle")[:], dtype=np.float64)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.projections.shape)

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
        raise ConfigError(
            f"{where}rotation centre {center!r} px is outside the detector: it must lie within "
            f"0 .. {n_cols - 1} (detector centre {(n_cols - 1) / 2:g})"
        )
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
        self._h.update(a.tobytes() if a.size == 0 else memoryview(a).cast("B"))  # type: ignore[arg-type]  # an ndarray has the buffer protocol

    def text(self, label: str, obj: Any) -> None:
        self._h.update(f"\0{label}\0{json.dumps(obj, sort_keys=True, default=str)}".encode())

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def _ingest_fingerprint(
    source: SourceFile | None,
    projections: Any,
    flats: np.ndarray,
    darks: np.ndarray,
    angles: np.ndarray,
    meta: Mapping[str, Any],
    chunks: tuple[int, int, int],
    extra: Mapping[str, Any],
) -> tuple[str, dict[str, Any], str]:
    """Fingerprint of an ingest: the source's sha256 (or the in-memory data's) and every parameter.

    Never the source's path: the same file reached through a symlink, a relative path or another
    working directory is the same ingest (the path stays in the store's attributes as provenance).
    Returns ``(fingerprint, params, data identity)``.
    """
    h = _ContentHash()
    if source is not None and source.sha256:
        h.text("source", source.sha256)
    elif isinstance(projections, np.ndarray):
        h.update("projections", projections)
    elif source is not None and source.format == "synthetic" and isinstance(meta.get("instrument"), str):
        # a simulation is identified by its recipe (phantom, sizes, noise, jitter, seed: the instrument
        # record, a digest here): the same simulation again is the same scan
        h.text("synthetic", meta["instrument"])
    else:  # a lazy array-like without a file identity: never resumed, never "already complete"
        h.text("nonce", uuid.uuid4().hex)
    h.update("flats", flats)
    h.update("darks", darks)
    h.update("angles", angles)
    for name, (dims, values, attributes) in sorted(extra.items()):
        h.update(f"extra:{name}", np.asarray(values))
        h.text(f"extra-meta:{name}", [list(dims), dict(attributes)])
    params = {"chunks": list(chunks), **{k: v for k, v in meta.items() if k != "provenance"}}
    if isinstance(params.get("source"), Mapping):
        params["source"] = {k: v for k, v in params["source"].items() if k != "path"}
    data = h.hexdigest()
    return fingerprint("ingest", inputs={"source": data}, params=params), params, data


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
    projections_dataset: str = "projections",
) -> ScanStore:
    """Write a scan held in (or streamed from) array-likes to a scan store: the ``ingest`` stage.

    ``projections`` may be a NumPy array, an h5py dataset, a zarr array, a dask array or any object
    with ``shape`` and slicing along the first axis: it is copied in chunk-aligned blocks of angles,
    so it is never read into memory whole.

    Everything that can be is validated before anything is created: shapes, the physics of the angles
    (:func:`tomoflow._checks.validate_scan_geometry`), parameters and the planned size (against the free
    space and :data:`tomoflow._checks.MAX_PLANNED_BYTES`). The data itself is checked as it streams
    (:class:`tomoflow._checks.MeasuredCheck`) into a store under a temporary name, renamed into place
    only when complete: a failure leaves nothing behind. The output obeys the stage engine's rules
    (:mod:`tomoflow.io.output`): a store already holding this very ingest (same source sha256 and
    parameters, whatever path reached the source) is returned at once without a write; a store whose
    ingest never completed is replaced (see :func:`_plan_ingest`); a complete scan store of other data
    is refused unless ``overwrite``; a folder that is not a tomoflow scan store, a store made by another
    stage, or the source itself, is never replaced.

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
    projections_dataset
        Name of the projections in the source file, for error messages.

    Returns
    -------
    ScanStore
        The store, with a complete ``ingest`` stage.

    Raises
    ------
    InputError
        Bad data (shapes, empty, NaN projections, projections without a finite line integral, angle
        count, too few distinct directions, angles spanning more than ten turns), naming the source
        file and dataset.
    ConfigError
        Bad parameters (pixel size, energy, values, chunks), or a planned size over the cap.
    StoreError
        The output may not be written (see above), cannot be created or lacks the space.
    """
    t0 = time.perf_counter()
    shape = tuple(getattr(projections, "shape", ()))
    src_path = source.path if source else None
    if len(shape) != 3:
        raise InputError(f"projections must be 3-D (angle, row, col), got shape {shape}", src_path, "projections")
    if 0 in shape:
        raise InputError(f"projections are empty (shape {shape})", src_path, "projections")
    n_angles, n_rows, n_cols = (int(v) for v in shape)
    angles = validate_scan_geometry(
        angles_deg, n_angles, need="scan", path=src_path, dataset="angles", n_columns=n_cols
    )
    proj_dtype = storage_dtype(getattr(projections, "dtype", None), values)
    flats_a = np.zeros((0, n_rows, n_cols), proj_dtype) if flats is None else _as_stored(np.asarray(flats), values)
    darks_a = np.zeros((0, n_rows, n_cols), proj_dtype) if darks is None else _as_stored(np.asarray(darks), values)
    if flats_a.ndim == 2:
        flats_a = flats_a[None]
    if darks_a.ndim == 2:
        darks_a = darks_a[None]
    _check_frames("flats", flats_a, n_rows, n_cols, src_path)
    _check_frames("darks", darks_a, n_rows, n_cols, src_path)
    if values == "intensity" and flats_a.shape[0]:  # flats that cannot normalise: refused before a store exists
        from tomoflow._checks import check_flats_brighter

        check_flats_brighter(
            np.nanmean(flats_a, axis=0), np.nanmean(darks_a, axis=0) if darks_a.shape[0] else None, src_path
        )
    sp = None
    if stage_position_um is not None:
        sp = np.asarray(stage_position_um, dtype=np.float64)
        if sp.shape != (n_angles, 3):
            raise InputError(
                f"stage positions must be (n_angles, 3) = ({n_angles}, 3), got {sp.shape}", src_path, "stage_position"
            )
    attrs = ScanStore.build_attrs(
        values=values,
        pixel_size_um=pixel_size_um,
        energy_kev=energy_kev,
        rotation_center=rotation_center,
        instrument=instrument,
        source=source,
    )
    chunks = (
        default_scan_chunks(n_angles, n_rows, n_cols)
        if chunks is None
        else _check_chunks(chunks, (n_angles, n_rows, n_cols))
    )
    step = chunks[0] if block_angles is None else check_int("block_angles", block_angles)
    extra = dict(extra_arrays or {})
    n_chunks = float(np.prod([-(-n // c) for n, c in zip((n_angles, n_rows, n_cols), chunks)], dtype=np.float64))
    planned = (
        float(n_angles) * n_rows * n_cols * proj_dtype.itemsize
        + flats_a.nbytes
        + darks_a.nbytes
        + 8.0 * n_angles
        + sum(np.asarray(v[1]).nbytes for v in extra.values())
    )
    check_planned_output(
        f"the scan store ({n_angles} x {n_rows} x {n_cols} {proj_dtype})", planned, path, n_chunks=n_chunks
    )
    meta = attrs.model_dump(mode="json")
    meta["stage_position"] = None if sp is None else hashlib.sha256(sp.tobytes()).hexdigest()
    meta["instrument"] = hashlib.sha256(
        json.dumps(meta["instrument"], sort_keys=True, default=str).encode()
    ).hexdigest()
    fp, params, data_id = _ingest_fingerprint(source, projections, flats_a, darks_a, angles, meta, chunks, extra)
    inputs = (
        [source.path] if source is not None and source.format != "synthetic" and os.path.exists(source.path) else []
    )
    plan = claim_output(lambda: _plan_ingest(path, fp, params, data_id, inputs, overwrite), path, what="ingest output")
    if plan.action == "complete":
        logger.info("%s already holds this ingest; nothing to do", path)
        if progress is not None:
            progress(n_angles)
        return ScanStore.open(path)

    with _staging(plan) as staged:  # built under a temporary name, renamed into place once complete
        store = ScanStore._create(
            staged,
            attrs,
            (n_angles, n_rows, n_cols),
            angles,
            n_flats=flats_a.shape[0],
            n_darks=darks_a.shape[0],
            chunks=chunks,
            stage_position_um=sp,
            dtypes={"projections": proj_dtype, "flats": flats_a.dtype, "darks": darks_a.dtype},
        )
        stage = StageLog.begin(staged.path, "ingest", fingerprint=fp, params=params, steps={})
        content = _ContentHash()
        content.text("attrs", {k: v for k, v in meta.items() if k not in ("provenance", "source")})
        content.update("angles", angles)
        for name, frames in (("flats", flats_a), ("darks", darks_a)):
            if frames.size:
                store.group[name][:] = frames
            content.update(name, frames)
        measured = MeasuredCheck(values, darks_a, src_path, projections_dataset)
        for start in range(0, n_angles, step):
            block = np.asarray(projections[start : start + step]).astype(proj_dtype, copy=False)
            if block.shape[1:] != (n_rows, n_cols):
                raise InputError(
                    f"projection block at angle {start} has shape {block.shape}", src_path, projections_dataset
                )
            measured.update(start, block)
            store.projections[start : start + block.shape[0]] = block
            content.update("projections", block)
            if progress is not None:
                progress(block.shape[0])
        fraction = measured.finish()
        for name, (dims, vals, attributes) in extra.items():
            vals = np.asarray(vals)
            arr = store.group.create_array(
                name, shape=vals.shape, dtype=vals.dtype, dimension_names=list(dims), attributes=dict(attributes)
            )
            arr[:] = vals
            content.update(f"extra:{name}", vals)
        stage.finish(
            output_id=content.hexdigest(), seconds=time.perf_counter() - t0, measured_fraction=round(fraction, 6)
        )
    return ScanStore.open(path)


def _check_chunks(chunks: Any, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """A projection chunk shape: three integers >= 1 (clipped to the array's shape)."""
    try:
        parts = tuple(chunks)
    except TypeError:
        raise ConfigError(f"chunks must be three integers (angle, row, col), got {chunks!r}") from None
    if len(parts) != 3:
        raise ConfigError(f"chunks must be three integers (angle, row, col), got {chunks!r}")
    out = tuple(min(check_int(f"chunks[{i}]", c), n) for i, (c, n) in enumerate(zip(parts, shape)))
    return out  # type: ignore[return-value]  # three values, checked above


# ----------------------------------------------------------------------------- ingest output
def _plan_ingest(
    path: str | os.PathLike,
    fp: str,
    params: Mapping[str, Any],
    data_id: str,
    inputs: Sequence[str | os.PathLike],
    overwrite: bool,
) -> OutputPlan:
    """What an ingest may do with its output (writing nothing): :func:`prepare_output`'s rules, plus

    * **an ingest that never completed** (the store holds an incomplete ``ingest`` record and no other
      stage) is replaced, whatever it was made from: nothing complete is lost, and the store cannot
      be used as it is. So a rerun of the same command finishes it, and a corrected source (another
      sha256) may take its place, without ``--overwrite``. A *complete* ingest of other data is still
      refused without ``--overwrite``: it may be the only copy of what it holds.
    * **the same ingest recorded by an older tomoflow**, whose fingerprint included the source's path,
      is recognised (its fingerprint is recomputed with the recorded path) and is complete.

    A ``resume`` plan becomes ``replace``: an ingest is redone from its start.
    """
    records = stage_records(path) if store_kind(path) == SCAN_FORMAT else {}
    rec = records.get("ingest")
    effective, force = fp, overwrite
    if rec is not None and not overwrite:
        if not rec.complete and set(records) == {"ingest"}:
            force = True
        elif rec.fingerprint != fp and rec.fingerprint == _legacy_fingerprint(params, data_id, rec.params):
            effective = rec.fingerprint  # type: ignore[assignment]  # equal to the legacy fingerprint: not None
    plan = prepare_output(
        path, kind=SCAN_FORMAT, stage="ingest", fingerprint=effective, params=params, inputs=inputs, overwrite=force
    )
    return OutputPlan("replace", plan.path) if plan.action == "resume" else plan


def _legacy_fingerprint(params: Mapping[str, Any], data_id: str, recorded: Mapping[str, Any]) -> str | None:
    """The fingerprint an older tomoflow gave this ingest when run on the recorded source path."""
    old = recorded.get("source") if isinstance(recorded, Mapping) else None
    new = params.get("source")
    if not isinstance(old, Mapping) or not isinstance(new, Mapping) or "path" not in old:
        return None
    return fingerprint("ingest", inputs={"source": data_id}, params={**params, "source": {**new, "path": old["path"]}})


_STAGING_TAG = ".ingest-"


@contextlib.contextmanager
def _staging(plan: OutputPlan) -> Iterator[OutputPlan]:
    """Build a store under a temporary name beside ``plan.path`` and rename it into place at the end.

    Yields a ``create`` plan for the temporary path. When the block completes, the store replaces
    ``plan.path`` (an empty folder, or, for a ``replace`` plan, the tomoflow scan store there: moved
    aside, then deleted once the new one is in place). When it raises, the temporary store, and any
    parent folder made for it, are deleted: an ingest that fails leaves nothing behind. A symlink at
    ``plan.path`` keeps pointing to the store, which is written where it points. Temporary stores left
    by a killed run (the output lock is held, so no other run is writing them) are deleted first.
    """
    final = resolved_path(plan.path)
    made: list[Path] = []
    try:
        missing = [p for p in final.parents if not p.exists()]
        for d in reversed(missing):
            d.mkdir()
            made.append(d)
    except OSError as exc:
        for d in reversed(made):
            with contextlib.suppress(OSError):
                d.rmdir()
        raise StoreError(f"{plan.path}: cannot create the store ({describe_os_error(exc)})") from None
    _remove_stale_staging(final)
    tmp = final.parent / f".{final.name}{_STAGING_TAG}{uuid.uuid4().hex[:12]}"
    try:
        os.mkdir(tmp)  # errors name the store asked for, not the temporary name
    except OSError as exc:
        for d in reversed(made):
            with contextlib.suppress(OSError):
                d.rmdir()
        raise StoreError(f"{plan.path}: cannot create the store ({describe_os_error(exc, final.parent)})") from None
    try:
        yield OutputPlan("create", tmp)
        _move_into_place(tmp, final, plan)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for d in reversed(made):
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


def _remove_stale_staging(final: Path) -> None:
    prefix = f".{final.name}{_STAGING_TAG}"
    try:
        siblings = [p for p in final.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return
    for p in siblings:
        if p.is_dir() and not p.is_symlink() and (store_kind(p) == SCAN_FORMAT or not any(p.iterdir())):
            logger.warning("removing %s, left by an ingest that was killed", p)
            shutil.rmtree(p, ignore_errors=True)


def _move_into_place(tmp: Path, final: Path, plan: OutputPlan) -> None:
    """Rename the complete store ``tmp`` to ``final`` (see :func:`_staging`)."""
    try:
        if not os.path.lexists(final):
            os.rename(tmp, final)
            return
        if final.is_dir() and store_kind(final) is None and not any(final.iterdir()):
            os.rmdir(final)  # the empty folder prepare_output accepted
            os.rename(tmp, final)
            return
        if plan.action != "replace" or store_kind(final) != SCAN_FORMAT:
            raise StoreError(f"{plan.path}: changed while the scan was ingested; the new store was not put there")
        old = final.parent / f".{final.name}.replaced-{uuid.uuid4().hex[:12]}"
        os.rename(final, old)
        try:
            os.rename(tmp, final)
        except BaseException:
            os.rename(old, final)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise StoreError(f"{plan.path}: cannot put the new store in place ({describe_os_error(exc)})") from None
