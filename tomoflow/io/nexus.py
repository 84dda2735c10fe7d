"""NeXus NXtomo (HDF5) into a scan store.

An NXtomo entry is an ``NXentry`` group whose ``definition`` dataset reads ``NXtomo``. One frame
stack holds projections, flats and darks, told apart by ``image_key``:

==========  =====================================
image_key   frame
==========  =====================================
0           projection
1           flat (white) field
2           dark field
3           invalid (skipped)
==========  =====================================

Where things are looked for (first found wins)::

    frames         <entry>/data/data, <entry>/instrument/detector/data              (frame, row, col)
    image_key      <entry>/data/image_key, <entry>/instrument/detector/image_key    (frame,)
    rotation_angle <entry>/data/rotation_angle, <entry>/sample/rotation_angle       (frame,) degrees
                   (a ``units`` attribute of rad/radian(s) is converted)
    pixel size     <entry>/instrument/detector/x_pixel_size                         (m unless ``units``)
    energy         <entry>/instrument/source/energy, .../monochromator/energy,
                   <entry>/beam/incident_energy                                     (keV unless ``units``)
    stage          <entry>/sample/{x,y,z}_translation                               (m unless ``units``)

Without ``image_key`` every frame is a projection. Projections are streamed in blocks through a
lazy selection of the frames with ``image_key == 0``; flats and darks (few) are read whole.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from tomoflow.errors import InputError
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

__all__ = ["find_nxtomo_entries", "open_nexus", "ingest_nexus", "PROJECTION", "FLAT", "DARK", "INVALID"]

logger = logging.getLogger(__name__)

PROJECTION, FLAT, DARK, INVALID = 0, 1, 2, 3


def _text(value: Any) -> str:
    if isinstance(value, np.ndarray):
        value = value.reshape(-1)[0] if value.size else ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value).strip()


def _is_nxtomo(group: Any) -> bool:
    d = group.get("definition")
    if d is None:
        return False
    try:
        return _text(d[()]).lower() == "nxtomo"
    except Exception:  # noqa: BLE001 - an unreadable definition is simply not NXtomo
        return False


def find_nxtomo_entries(h5: Any) -> list[str]:
    """Names of the NXentry (and their NXsubentry) groups of an open h5py file whose definition is NXtomo."""
    import h5py

    found: list[str] = []
    for name, obj in h5.items():
        if not isinstance(obj, h5py.Group):
            continue
        cls = _text(obj.attrs.get("NX_class", b""))
        # An entry without NX_class but with an NXtomo definition (written by hand) counts too.
        if cls in ("NXentry", "") and _is_nxtomo(obj):
            found.append("/" + name)
        elif cls == "NXentry":
            for sub, sobj in obj.items():
                if (
                    isinstance(sobj, h5py.Group)
                    and _text(sobj.attrs.get("NX_class", b"")) == "NXsubentry"
                    and _is_nxtomo(sobj)
                ):
                    found.append(f"/{name}/{sub}")
    return found


def _first(h5: Any, entry: str, names: tuple[str, ...], path: Any) -> tuple[str, Any] | tuple[None, None]:
    for n in names:
        full = f"{entry}/{n}"
        ds = h5_dataset(h5, full, path, required=False)
        if ds is not None:
            return full, ds
    return None, None


def _pixel_size_um(h5: Any, name: str, path: Any) -> float | None:
    """Detector pixel size in micrometre; without a ``units`` attribute, values below 0.01 are
    taken as metres (the NeXus default) and larger ones as micrometres (a common habit)."""
    ds = h5_dataset(h5, name, path, required=False)
    if ds is None:
        return None
    units = h5_units(ds)
    if units:
        return h5_scalar(h5, (name,), "length", "m", path)
    value = h5_scalar(h5, (name,), "length", "um", path)
    if value is not None and value < 0.01:
        value *= 1e6
    logger.warning("%s: %s has no units attribute; read as %s micrometre", path, name, value)
    return value


def _runs(idx: np.ndarray) -> list[tuple[int, int]]:
    """Split sorted frame indices into contiguous ``(start, stop)`` runs."""
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [idx.size]])
    return [(int(idx[a]), int(idx[b - 1]) + 1) for a, b in zip(starts, stops)]


def _select_reader(ds: Any, idx: np.ndarray) -> Callable[[int, int], np.ndarray]:
    """``read(a, b)`` returning frames ``idx[a:b]`` of ``ds``, one h5py read per contiguous run."""

    def read(a: int, b: int) -> np.ndarray:
        parts = [ds[s:e] for s, e in _runs(idx[a:b])]
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)

    return read


def open_nexus(path: str | os.PathLike, *, entry: str | None = None, angles: Any = None) -> RawScan:
    """Open a NeXus NXtomo file as a lazy :class:`~tomoflow.io.readers.RawScan`.

    Parameters
    ----------
    path
        The ``.nxs`` / ``.h5`` file.
    entry
        HDF5 path of the NXtomo entry (e.g. ``"/entry"``); found automatically when the file holds
        exactly one entry whose ``definition`` is NXtomo.
    angles
        Projection angles in degrees overriding ``rotation_angle`` (array-like, text file or
        ``(start, stop, step)``); required when the file has no rotation angle.

    Returns
    -------
    RawScan
        Projections ``(angle, row, col)`` are the frames with ``image_key == 0`` in file order.
    """
    h5 = open_hdf5(path)
    try:
        return _open(h5, path, entry, angles)
    except BaseException:
        h5.close()
        raise


def _open(h5: Any, path: Any, entry: str | None, angles: Any) -> RawScan:
    import h5py

    if entry is None:
        with reader_errors(path, None, "cannot list NeXus entries"):
            entries = find_nxtomo_entries(h5)
        if not entries:
            raise InputError(
                f"no NXentry with definition 'NXtomo' (top-level groups: {sorted(h5.keys())}); pass entry=",
                path,
                "/",
            )
        if len(entries) > 1:
            raise InputError(f"several NXtomo entries {entries}; choose one with entry=", path, "/")
        entry = entries[0]
    else:
        entry = "/" + entry.strip("/")
        with reader_errors(path, entry, "cannot read entry"):
            grp = h5.get(entry)
        if not isinstance(grp, h5py.Group):
            raise InputError("no such NeXus entry (group)", path, entry)

    data_name, data = _first(h5, entry, ("data/data", "instrument/detector/data"), path)
    if data is None:
        raise InputError("no frame data (looked for data/data and instrument/detector/data)", path, entry)
    if data.ndim != 3:
        raise InputError(f"frames must be 3-D (frame, row, col), got shape {data.shape}", path, data_name)
    n_frames = data.shape[0]

    key_name, key_ds = _first(h5, entry, ("data/image_key", "instrument/detector/image_key"), path)
    if key_ds is None:
        keys = np.zeros(n_frames, dtype=np.int64)
    else:
        raw_keys = h5_read(key_ds, path, key_name).reshape(-1)
        if raw_keys.size != n_frames:
            raise InputError(f"{raw_keys.size} image keys for {n_frames} frames", path, key_name)
        if not np.issubdtype(raw_keys.dtype, np.number):
            raise InputError(f"image_key has non-numeric type {raw_keys.dtype}", path, key_name)
        keys = raw_keys.astype(np.int64)
        unknown = sorted(set(np.unique(keys).tolist()) - {PROJECTION, FLAT, DARK, INVALID})
        if unknown:
            raise InputError(f"unknown image_key values {unknown} (expected 0, 1, 2 or 3)", path, key_name)
        n_invalid = int(np.count_nonzero(keys == INVALID))
        if n_invalid:
            logger.warning("%s: skipping %d frames with image_key 3 (invalid)", path, n_invalid)
    proj_idx = np.flatnonzero(keys == PROJECTION)
    if proj_idx.size == 0:
        raise InputError("no projection frames (image_key == 0)", path, key_name or data_name)

    # rotation angles: per frame (select projections) or per projection
    theta = None
    ang_name, ang_ds = _first(h5, entry, ("data/rotation_angle", "sample/rotation_angle"), path)
    if ang_ds is not None and angles is None:
        a = h5_read(ang_ds, path, ang_name).astype(np.float64).reshape(-1)
        a = a * unit_factor(h5_units(ang_ds), "angle", "degree", path, ang_name)
        if a.size == n_frames:
            theta = a[proj_idx]
        elif a.size == proj_idx.size:
            theta = a
        else:
            raise InputError(
                f"angle count mismatch: {a.size} rotation angles for {n_frames} frames ({proj_idx.size} projections)",
                path,
                ang_name,
            )

    def frames(key: int) -> np.ndarray | None:
        idx = np.flatnonzero(keys == key)
        if idx.size == 0:
            return None
        with reader_errors(path, data_name, "cannot read flat/dark frames"):
            return _select_reader(data, idx)(0, idx.size)

    stage = None
    trans = [_first(h5, entry, (f"sample/{ax}_translation",), path)[1] for ax in "xyz"]
    if all(t is not None for t in trans):
        cols: list[Any] = []
        for ax, t in zip("xyz", trans):
            v = h5_read(t, path, f"{entry}/sample/{ax}_translation").astype(np.float64).reshape(-1)
            v = v * unit_factor(h5_units(t), "length", "m", path, f"{entry}/sample/{ax}_translation")
            if v.size == n_frames:
                v = v[proj_idx]
            elif v.size == 1:
                v = np.full(proj_idx.size, v[0])
            elif v.size != proj_idx.size:
                logger.warning(
                    "%s: %s_translation has %d values for %d frames; stage positions not recorded",
                    path,
                    ax,
                    v.size,
                    n_frames,
                )
                cols = []
                break
            cols.append(v)
        if cols:
            stage = np.stack(cols, axis=1)

    stack = LazyStack((proj_idx.size, *data.shape[1:]), data.dtype, _select_reader(data, proj_idx), path, data_name)
    instrument: dict[str, Any] = {
        "format": "NeXus NXtomo",
        "entry": entry,
        "n_frames": int(n_frames),
        "n_invalid": int(np.count_nonzero(keys == INVALID)),
    }
    for name in ("title", "sample/name", "instrument/name", "start_time"):
        ds = h5_dataset(h5, f"{entry}/{name}", path, required=False)
        if ds is not None and ds.shape in ((), (1,)):
            with reader_errors(path, f"{entry}/{name}"):
                instrument[name.replace("/", ".")] = _text(ds[()])
    raw = RawScan(
        projections=stack,
        angles_deg=theta,
        source=source_file(path, "nexus"),
        flats=frames(FLAT),
        darks=frames(DARK),
        dataset=data_name,  # type: ignore[arg-type]  # found with the projections
        angles_dataset=ang_name or f"{entry}/sample/rotation_angle",
        pixel_size_um=_pixel_size_um(h5, f"{entry}/instrument/detector/x_pixel_size", path),
        energy_kev=h5_scalar(
            h5,
            (
                f"{entry}/instrument/source/energy",
                f"{entry}/instrument/monochromator/energy",
                f"{entry}/beam/incident_energy",
            ),
            "energy",
            "kev",
            path,
        ),
        stage_position_um=stage,
        instrument=instrument,
        closer=h5.close,
    )
    raw.override_angles(angles)
    return raw


def ingest_nexus(
    path: str | os.PathLike,
    store_path: str | os.PathLike,
    *,
    entry: str | None = None,
    angles: Any = None,
    overwrite: bool = False,
    progress: Callable[[int], Any] | None = None,
    pixel_size_um: float | None = None,
    energy_kev: float | None = None,
) -> ScanStore:
    """Ingest a NeXus NXtomo file into a new scan store, streaming blocks of projections.

    Parameters
    ----------
    path
        The NeXus file.
    store_path
        Scan store to create.
    entry
        NXtomo entry to read (default: the only one in the file).
    angles
        Projection angles in degrees overriding ``rotation_angle``.
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
    with open_nexus(path, entry=entry, angles=angles) as raw:
        return raw.to_store(
            store_path, overwrite=overwrite, progress=progress, pixel_size_um=pixel_size_um, energy_kev=energy_kev
        )
