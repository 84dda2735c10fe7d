"""Fixtures of the storage-layer tests: the real measured files in ../shared/data, small NeXus
files written on the fly, and damaged copies of real files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest


@pytest.fixture
def truncate(tmp_path: Path) -> Callable[[Path, float], Path]:
    """Copy the first ``fraction`` of a file's bytes into tmp_path (a truncated download)."""

    def make(src: Path, fraction: float = 0.5) -> Path:
        data = src.read_bytes()
        out = tmp_path / f"truncated_{src.name}"
        out.write_bytes(data[: int(len(data) * fraction)])
        return out

    return make


@pytest.fixture
def make_nxtomo(tmp_path: Path) -> Callable[..., tuple[Path, dict[str, Any]]]:
    """Write a small NXtomo file with h5py; returns ``(path, truth)``.

    Frame order: 2 darks, 3 flats, projections with one invalid frame (image_key 3) in the middle,
    2 flats at the end. ``truth`` holds the projections, flats, darks and projection angles (deg).
    """

    def make(
        name: str = "scan.nxs",
        *,
        n_proj: int = 10,
        shape: tuple[int, int] = (4, 6),
        angle_units: str | None = "degree",
        data_at: str = "instrument/detector/data",
        with_angles: bool = True,
        entry: str = "entry",
        extra_entry: str | None = None,
        definition: str = "NXtomo",
        seed: int = 0,
    ) -> tuple[Path, dict[str, Any]]:
        import h5py

        rng = np.random.default_rng(seed)
        darks = rng.uniform(90, 110, (2, *shape)).astype(np.uint16)
        flats = rng.uniform(900, 1100, (5, *shape)).astype(np.uint16)
        proj = rng.uniform(300, 800, (n_proj, *shape)).astype(np.uint16)
        invalid = np.full((1, *shape), 7, np.uint16)
        half = n_proj // 2
        frames = np.concatenate([darks, flats[:3], proj[:half], invalid, proj[half:], flats[3:]])
        keys = np.array([2] * 2 + [1] * 3 + [0] * half + [3] + [0] * (n_proj - half) + [1] * 2, np.int32)
        proj_angles = np.linspace(0.0, 180.0, n_proj, endpoint=False)
        angles = np.concatenate([[0, 0, 0, 0, 0], proj_angles[:half], [99.0], proj_angles[half:], [180, 180]])
        path = tmp_path / name
        with h5py.File(path, "w") as f:
            for ename in [entry] + ([extra_entry] if extra_entry else []):
                e = f.create_group(ename)
                e.attrs["NX_class"] = "NXentry"
                e.create_dataset("definition", data=definition)
                e.create_dataset("title", data="synthetic nxtomo")
                inst = e.create_group("instrument")
                inst.attrs["NX_class"] = "NXinstrument"
                det = inst.create_group("detector")
                det.attrs["NX_class"] = "NXdetector"
                d = e.create_group("data")
                d.attrs["NX_class"] = "NXdata"
                target = det if data_at == "instrument/detector/data" else d
                target.create_dataset("data", data=frames, chunks=(1, *shape))
                target.create_dataset("image_key", data=keys)
                px = det.create_dataset("x_pixel_size", data=6.5e-7)
                px.attrs["units"] = "m"
                src = inst.create_group("source")
                en = src.create_dataset("energy", data=25.0)
                en.attrs["units"] = "keV"
                s = e.create_group("sample")
                s.attrs["NX_class"] = "NXsample"
                if with_angles:
                    vals = np.deg2rad(angles) if angle_units in ("rad", "radians") else angles
                    ra = s.create_dataset("rotation_angle", data=vals)
                    if angle_units is not None:
                        ra.attrs["units"] = angle_units
                for i, ax in enumerate("xyz"):
                    t = s.create_dataset(f"{ax}_translation", data=np.full(frames.shape[0], (i + 1) * 1e-3))
                    t.attrs["units"] = "mm" if ax == "z" else "m"
        return path, {"projections": proj, "flats": flats, "darks": darks, "angles": proj_angles}

    return make
