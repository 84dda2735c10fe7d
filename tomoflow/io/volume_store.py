"""The volume store: a reconstructed volume as OME-Zarr 0.5 (zarr v3), with a multiscale pyramid.

Layout::

    volume.zarr/
      zarr.json     attributes: ``ome`` (OME-Zarr 0.5 multiscales: axes z, y, x in micrometre,
                    one ``scale`` per level) and the tomoflow attributes (:class:`VolumeAttrs`)
      0/            level 0, (z, y, x) float32, chunks (cz, cy, cx)
      1/ ...        level k is 2**k coarser (block mean), same chunk shape
      slab_done/    (n_slabs,) uint8 resume markers, one chunk per slab so that every slab task
                    writes only its own marker chunk (no two tasks ever write one chunk)

Level 0 is written by z-slabs whose height is a whole multiple of ``cz``; level k chunks are each
computed by exactly one task from level k-1 after level 0 is complete.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from tomoflow import config as _config
from tomoflow._version import __version__
from tomoflow.errors import StoreError
from tomoflow.io.models import Provenance, StageRecord, VolumeAttrs, utc_now

__all__ = ["VolumeStore", "open_volume", "ome_multiscales"]


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


class VolumeStore:
    """Handle on an OME-Zarr 0.5 volume store (see module docstring)."""

    def __init__(self, path: str | os.PathLike, group: zarr.Group) -> None:
        self.path = Path(path)
        self.group = group

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        shape: tuple[int, int, int],
        voxel_size_um: float,
        *,
        slab_rows: int,
        chunks: tuple[int, int, int] | None = None,
        n_levels: int | None = None,
        algorithm: str | None = None,
        rotation_center: float | None = None,
        scan: str | None = None,
        run_config: dict[str, Any] | None = None,
        inputs: list[Any] | None = None,
        overwrite: bool = False,
    ) -> "VolumeStore":
        """Create an empty volume store.

        Parameters
        ----------
        shape
            ``(nz, ny, nx)`` of level 0.
        voxel_size_um
            Voxel edge in micrometres (1.0 when the pixel size is unknown).
        slab_rows
            Height (z) of the slabs level 0 is written in; a whole multiple of the z chunk.
        chunks
            Zarr chunk shape; default ``(cz, cfg.volume_chunk, cfg.volume_chunk)`` with ``cz`` the
            scan row chunk.
        n_levels
            Total levels including level 0; default ``1 + cfg.pyramid_levels`` (stopping before a
            level would be smaller than one chunk edge of 8).
        """
        path = Path(path)
        if path.exists() and not overwrite:
            raise StoreError(f"{path}: store exists; pass overwrite=True (CLI: --overwrite) to replace it")
        cfg = _config.get()
        nz, ny, nx = (int(s) for s in shape)
        cz = min(cfg.scan_chunk_rows, nz)
        chunks = chunks or (cz, min(cfg.volume_chunk, ny), min(cfg.volume_chunk, nx))
        if slab_rows % chunks[0] and slab_rows < nz:
            raise StoreError(f"slab height {slab_rows} is not a multiple of the z chunk {chunks[0]}")
        if n_levels is None:
            n_levels = 1
            while n_levels <= cfg.pyramid_levels and min(shape) // 2**n_levels >= 8:
                n_levels += 1
        root = zarr.open_group(str(path), mode="w" if overwrite else "w-", zarr_format=3)
        attrs = VolumeAttrs(
            voxel_size={"value": float(voxel_size_um), "unit": "micrometer"},
            algorithm=algorithm,
            rotation_center=rotation_center,
            scan=scan,
            slab_rows=int(slab_rows),
            stages={"recon": StageRecord(complete=False, started=utc_now())},
            provenance=Provenance(tomoflow_version=__version__, config=run_config or cfg.model_dump(mode="json"),
                                  inputs=inputs or []),
        )
        root.attrs.update({"ome": ome_multiscales(n_levels, float(voxel_size_um)), **attrs.model_dump(mode="json")})
        for k in range(n_levels):
            lshape = tuple(max(1, -(-s // 2**k)) for s in (nz, ny, nx))
            root.create_array(str(k), shape=lshape, chunks=tuple(min(c, s) for c, s in zip(chunks, lshape)),
                              dtype="float32", dimension_names=["z", "y", "x"], fill_value=0.0)
        n_slabs = -(-nz // slab_rows)
        root.create_array("slab_done", shape=(n_slabs,), chunks=(1,), dtype="uint8", fill_value=0,
                          dimension_names=["slab"])
        return cls(path, root)

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r") -> "VolumeStore":
        """Open an existing volume store, checking the layout."""
        path = Path(path)
        if not path.exists():
            raise StoreError(f"{path}: no such volume store")
        try:
            root = zarr.open_group(str(path), mode=mode)
        except Exception as exc:  # noqa: BLE001
            raise StoreError(f"{path}: not a zarr store ({type(exc).__name__}: {exc})") from None
        if root.attrs.get("tomoflow_format") != "tomoflow-volume" or "ome" not in root.attrs:
            raise StoreError(f"{path}: not a tomoflow volume store (OME-Zarr 0.5 + tomoflow attributes)")
        return cls(path, root)

    # ------------------------------------------------------------------ access
    @property
    def attrs(self) -> VolumeAttrs:
        data = {k: v for k, v in self.group.attrs.items() if k != "ome"}
        return VolumeAttrs.model_validate(data)

    @property
    def n_levels(self) -> int:
        return len(self.group.attrs["ome"]["multiscales"][0]["datasets"])

    @property
    def slab_rows(self) -> int:
        return self.attrs.slab_rows

    def level(self, k: int = 0) -> zarr.Array:
        return self.group[str(k)]  # type: ignore[return-value]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.level(0).shape)  # type: ignore[return-value]

    def slabs(self) -> list[tuple[int, int]]:
        """``(z0, z1)`` of every slab of level 0."""
        nz, h = self.shape[0], self.slab_rows
        return [(z0, min(nz, z0 + h)) for z0 in range(0, nz, h)]

    def done_slabs(self) -> np.ndarray:
        """Boolean array: which slabs are written (resume state)."""
        return np.asarray(self.group["slab_done"][:]).astype(bool)

    def mark_slab_done(self, index: int) -> None:
        """Set the marker of slab ``index`` (its own chunk: safe from concurrent tasks)."""
        self.group["slab_done"][index] = 1

    def is_complete(self) -> bool:
        return self.attrs.stages.get("recon", StageRecord()).complete

    def mark_complete(self, seconds: float | None = None, **info: Any) -> None:
        attrs = self.attrs
        prev = attrs.stages.get("recon", StageRecord())
        attrs.stages["recon"] = StageRecord(complete=True, started=prev.started, finished=utc_now(),
                                            seconds=seconds, info=info)
        if seconds is not None:
            attrs.provenance.timings["recon"] = float(seconds)
        self.group.attrs.update(attrs.model_dump(mode="json"))

    def to_xarray(self, level: int = 0):  # -> xarray.DataArray
        """Lazy :class:`xarray.DataArray` of one level with z, y, x coordinates in micrometres."""
        import dask.array as da
        import xarray as xr

        ms = self.group.attrs["ome"]["multiscales"][0]["datasets"][level]["coordinateTransformations"]
        scale, trans = ms[0]["scale"], ms[1]["translation"]
        arr = da.from_zarr(self.level(level))
        coords = {ax: trans[i] + scale[i] * np.arange(arr.shape[i]) for i, ax in enumerate("zyx")}
        da_ = xr.DataArray(arr, dims=("z", "y", "x"), coords=coords, name="volume")
        for ax in "zyx":
            da_[ax].attrs["units"] = "micrometer"
        return da_


def open_volume(path: str | os.PathLike, level: int = 0):  # -> xarray.DataArray
    """Open a volume store level as a lazy :class:`xarray.DataArray` (coordinates in micrometres)."""
    return VolumeStore.open(path).to_xarray(level)
