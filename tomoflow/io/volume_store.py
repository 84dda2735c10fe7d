"""The volume store: a reconstructed volume as OME-Zarr 0.5 (zarr v3), with a multiscale pyramid.

Layout::

    volume.zarr/
      zarr.json             attributes: ``ome`` (OME-Zarr 0.5 multiscales: axes z, y, x in micrometre,
                            one ``scale`` per level) and the tomoflow attributes (:class:`VolumeAttrs`)
      0/                    level 0, (z, y, x) float32, chunks (cz, cy, cx)
      1/ ...                level k is 2**k coarser (block mean), same chunk shape
      stages/recon/         the ``recon`` stage record (fingerprint, parameters, timings) and its block
                            markers: ``level-0`` one uint8 per z-chunk row of level 0, ``level-k`` one
                            per chunk of level k, each in its own chunk (see :mod:`tomoflow.io.stages`)

Level 0 is written by z-slabs of whole chunks; level k chunks are each computed by exactly one task
from level k-1 after level k-1 is complete. :func:`open_volume` refuses a store whose ``recon`` stage
did not complete: an unwritten chunk would read as zeros.

Extra metadata: an optional root attribute ``extra`` (:data:`EXTRA_ATTRS`), any JSON object, holds
metadata outside the tomoflow attribute model (e.g. stage positions, or the ground truth of a
simulated volume); :attr:`VolumeStore.extra` reads it (empty when absent) and :meth:`VolumeStore.to_xarray`
copies it into the DataArray's ``attrs``. Stores without it read as before.

Unknown pixel size: when the scan has none, ``voxel_size`` is recorded as null (unknown) and the
OME-Zarr ``scale`` is 1.0, meaning one detector pixel.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from tomoflow import config as _config
from tomoflow._version import __version__
from tomoflow.errors import ConfigError, StoreError
from tomoflow.io.metadata import VOLUME_FORMAT, Provenance, SourceFile, StageRecord, VolumeAttrs
from tomoflow.io.output import OutputPlan, create_store
from tomoflow.io.stages import stage_records, store_kind

__all__ = ["VolumeStore", "open_volume", "ome_multiscales", "pyramid_levels", "EXTRA_ATTRS"]

#: Stages that make a volume store, the first one recorded in a store being its producer.
PRODUCER_STAGES = ("recover", "resample", "recon")

EXTRA_ATTRS = "extra"
"""Root attribute of a volume store holding extra metadata (a JSON object), outside :class:`VolumeAttrs`."""
_NOT_TOMOFLOW_ATTRS = ("ome", EXTRA_ATTRS)


def ome_multiscales(n_levels: int, voxel_size_um: float, name: str = "volume") -> dict[str, Any]:
    """OME-Zarr 0.5 ``multiscales`` metadata for ``n_levels`` levels of 2x block-mean downsampling."""
    return {
        "version": "0.5",
        "multiscales": [
            {
                "name": name,
                "axes": [{"name": a, "type": "space", "unit": "micrometer"} for a in ("z", "y", "x")],
                "datasets": [
                    {
                        "path": str(k),
                        "coordinateTransformations": [
                            {"type": "scale", "scale": [voxel_size_um * 2**k] * 3},
                            {"type": "translation", "translation": [voxel_size_um * (2**k - 1) / 2.0] * 3},
                        ],
                    }
                    for k in range(n_levels)
                ],
                "type": "mean",
            }
        ],
    }


def block_mean_2x(block: np.ndarray) -> np.ndarray:
    """2x2x2 block mean of a ``(z, y, x)`` block (odd edges replicated): one pyramid level from the one
    below, float32."""
    pads = [(0, s % 2) for s in block.shape]
    if any(p[1] for p in pads):
        block = np.pad(block, pads, mode="edge")
    z, y, x = (s // 2 for s in block.shape)
    return block.reshape(z, 2, y, 2, x, 2).mean(axis=(1, 3, 5), dtype=np.float64).astype(np.float32)


def pyramid_levels(shape: tuple[int, int, int], extra_levels: int | None = None) -> int:
    """Total levels (level 0 included): ``1 + extra_levels`` (default: the configured
    ``pyramid_levels``), stopping before a level's smallest edge would fall under 8 voxels."""
    extra = _config.get().pyramid_levels if extra_levels is None else int(extra_levels)
    n = 1
    while n <= extra and min(shape) // 2**n >= 8:
        n += 1
    return n


def level_shape(shape: tuple[int, int, int], k: int) -> tuple[int, int, int]:
    """Shape of pyramid level ``k`` of a level-0 ``shape`` (each level halves, rounding up)."""
    return tuple(max(1, -(-int(s) // 2**k)) for s in shape)


class VolumeStore:
    """Handle on an OME-Zarr 0.5 volume store (see module docstring)."""

    def __init__(self, path: str | os.PathLike, group: zarr.Group) -> None:
        self.path = Path(path)
        self.group = group

    @classmethod
    def create(
        cls,
        plan: OutputPlan,
        shape: tuple[int, int, int],
        voxel_size_um: float | None,
        *,
        chunks: tuple[int, int, int],
        n_levels: int,
        algorithm: str | None = None,
        rotation_center: float | None = None,
        scan: str | None = None,
        run_config: dict[str, Any] | None = None,
        inputs: list[SourceFile] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> VolumeStore:
        """Create an empty volume store where :func:`tomoflow.io.output.prepare_output` allowed it.

        Parameters
        ----------
        plan
            A ``create`` or ``replace`` plan for the output path.
        shape
            ``(nz, ny, nx)`` of level 0.
        voxel_size_um
            Voxel edge in micrometres, or None when unknown (recorded as unknown; OME scale 1).
        chunks
            Zarr chunk shape ``(cz, cy, cx)`` of every level (clipped to the level's shape).
        n_levels
            Total levels including level 0 (see :func:`pyramid_levels`).
        extra
            Optional extra metadata (JSON-able mapping), stored under the root attribute ``extra``.
        """
        extra_doc: dict[str, Any] | None = None
        if extra is not None:
            if not isinstance(extra, Mapping):
                raise ConfigError(f"extra metadata must be a mapping, got {type(extra).__name__}")
            try:
                extra_doc = json.loads(json.dumps(dict(extra), allow_nan=False))
            except (TypeError, ValueError) as exc:
                raise ConfigError(
                    f"extra metadata must be JSON-able (finite numbers, strings, lists, mappings): {exc}"
                ) from None
        if voxel_size_um is not None and not (np.isfinite(voxel_size_um) and voxel_size_um > 0):
            raise ConfigError(f"voxel size must be a positive number of micrometres, got {voxel_size_um!r}")
        cfg = _config.get()
        attrs = VolumeAttrs(
            voxel_size=None if voxel_size_um is None else {"value": float(voxel_size_um), "unit": "micrometer"},  # type: ignore[arg-type]  # pydantic validates the dict into a Quantity
            algorithm=algorithm,
            rotation_center=rotation_center,
            scan=scan,
            provenance=Provenance(
                tomoflow_version=__version__, config=run_config or cfg.model_dump(mode="json"), inputs=inputs or []
            ),
        )
        scale = 1.0 if voxel_size_um is None else float(voxel_size_um)
        root_attrs = {"ome": ome_multiscales(n_levels, scale), **attrs.model_dump(mode="json")}
        if extra_doc is not None:
            root_attrs[EXTRA_ATTRS] = extra_doc
        root = create_store(plan, root_attrs)
        for k in range(n_levels):
            lshape = level_shape(shape, k)
            root.create_array(
                str(k),
                shape=lshape,
                chunks=tuple(min(c, s) for c, s in zip(chunks, lshape)),
                dtype="float32",
                dimension_names=["z", "y", "x"],
                fill_value=0.0,
            )
        return cls(plan.path, root)

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r", *, require_complete: bool = True) -> VolumeStore:
        """Open an existing volume store, checking the layout (and, by default, that it is complete).

        Raises
        ------
        StoreError
            Not a tomoflow volume store, or (``require_complete``) its ``recon`` stage did not finish.
        """
        path = Path(path)
        if not path.exists():
            raise StoreError(f"{path}: no such volume store")
        if store_kind(path) != VOLUME_FORMAT:
            raise StoreError(f"{path}: not a tomoflow volume store (OME-Zarr 0.5 + tomoflow attributes)")
        try:
            root = zarr.open_group(str(path), mode=mode)
        except Exception as exc:  # noqa: BLE001  (zarr raises many types)
            raise StoreError(f"{path}: not a zarr store ({type(exc).__name__}: {exc})") from None
        if "ome" not in root.attrs:
            raise StoreError(f"{path}: not a tomoflow volume store (no OME-Zarr metadata)")
        store = cls(path, root)
        if require_complete and not store.is_complete():
            raise StoreError(
                f"{path}: the volume did not complete (interrupted?); run the same command "
                "(`tomoflow recon` / `tomoflow recover`) again to resume it"
            )
        return store

    # ------------------------------------------------------------------ access
    @property
    def attrs(self) -> VolumeAttrs:
        data = {k: v for k, v in self.group.attrs.items() if k not in _NOT_TOMOFLOW_ATTRS}
        return VolumeAttrs.model_validate(data)

    @property
    def extra(self) -> dict[str, Any]:
        """The extra metadata (root attribute ``extra``), a copy; empty when the store has none."""
        doc = self.group.attrs.get(EXTRA_ATTRS)
        return copy.deepcopy(dict(doc)) if isinstance(doc, Mapping) else {}

    @property
    def n_levels(self) -> int:
        return len(self.group.attrs["ome"]["multiscales"][0]["datasets"])

    def level(self, k: int = 0) -> zarr.Array:
        """Pyramid level ``k`` (0 = full resolution) as a zarr array.

        Raises
        ------
        ConfigError
            If the store has no level ``k``.
        """
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= int(k) < self.n_levels:
            raise ConfigError(f"{self.path}: no pyramid level {k!r}; levels are 0 .. {self.n_levels - 1}")
        return self.group[str(int(k))]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.level(0).shape)

    def stages(self) -> dict[str, StageRecord]:
        """Every stage record of the store (``recon``)."""
        return stage_records(self.path)

    def is_complete(self, name: str | None = None) -> bool:
        """Did the stage ``name`` finish? Default: the stage that made the volume (``recover`` for a
        resolution-recovered volume, else ``recon``)."""
        stages = self.stages()
        if name is None:
            name = next((s for s in PRODUCER_STAGES if s in stages), "recon")
        return stages.get(name, StageRecord()).complete

    def to_xarray(self, level: int = 0):  # -> xarray.DataArray
        """Lazy :class:`xarray.DataArray` of one level with z, y, x coordinates in micrometres
        (in pixels when the voxel size is unknown: then ``units`` says so); its ``attrs`` are the
        store's extra metadata (:attr:`extra`, empty for most stores)."""
        import dask.array as da
        import xarray as xr

        arr = da.from_zarr(self.level(level))
        ms = self.group.attrs["ome"]["multiscales"][0]["datasets"][level]["coordinateTransformations"]
        scale, trans = ms[0]["scale"], ms[1]["translation"]
        coords = {ax: trans[i] + scale[i] * np.arange(arr.shape[i]) for i, ax in enumerate("zyx")}
        out = xr.DataArray(arr, dims=("z", "y", "x"), coords=coords, name="volume", attrs=self.extra)
        unit = "micrometer" if self.attrs.voxel_size is not None else "pixel (voxel size unknown)"
        for ax in "zyx":
            out[ax].attrs["units"] = unit
        return out


def open_volume(path: str | os.PathLike, level: int = 0):  # -> xarray.DataArray
    """Open a complete volume store level as a lazy :class:`xarray.DataArray` (coordinates in µm).

    Raises
    ------
    StoreError
        Not a volume store, or its reconstruction did not complete.
    ConfigError
        No such pyramid level.
    """
    return VolumeStore.open(path).to_xarray(level)
