"""NumPy arrays and .npy files into a scan store (tomoflow.io.npy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tomoflow.errors import ConfigError, InputError
from tomoflow.io.ingest import ingest
from tomoflow.io.npy import ingest_numpy, open_numpy


def test_ingest_arrays_memory_and_npy(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    proj = rng.uniform(0, 2, (10, 3, 4)).astype(np.float64)
    s = ingest_numpy(
        proj, tmp_path / "a.zarr", angles=np.arange(10.0) * 18, values="line-integral", pixel_size_um=1.5, energy_kev=30
    )
    assert s.attrs.values == "line-integral" and s.attrs.source.format == "numpy"
    assert s.flats.shape == (0, 3, 4) and s.darks.shape == (0, 3, 4)
    np.testing.assert_allclose(s.projections[:], proj.astype(np.float32))
    np.save(tmp_path / "p.npy", proj)
    np.save(tmp_path / "f.npy", np.ones((3, 4)))
    s = ingest(tmp_path / "p.npy", tmp_path / "b.zarr", angles=(0, 180, 18), flats=tmp_path / "f.npy")
    assert s.attrs.source.sha256 and s.flats.shape == (1, 3, 4)
    np.testing.assert_allclose(s.projections[:], proj.astype(np.float32))
    s = ingest(proj, tmp_path / "c.zarr", angles=np.arange(10.0))
    assert s.shape == (10, 3, 4)


def test_open_numpy_is_lazy_and_checks_without_a_store(tmp_path: Path) -> None:
    proj = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    np.save(tmp_path / "p.npy", proj)
    with open_numpy(tmp_path / "p.npy", angles=[0.0, 90.0], darks=np.zeros((3, 4))) as raw:
        assert isinstance(raw.projections[0], np.ndarray) and raw.shape == (2, 3, 4)
        np.testing.assert_array_equal(raw.projections[1], proj[1])
        assert raw.source.sha256 and raw.source.size_bytes == (tmp_path / "p.npy").stat().st_size
        raw.validate()
        assert raw.darks.shape == (1, 3, 4) and raw.angles_deg.tolist() == [0.0, 90.0]


def test_numpy_bad_input(tmp_path: Path) -> None:
    proj = np.zeros((10, 3, 4))
    with pytest.raises(InputError, match="no rotation angles"):
        ingest(proj, tmp_path / "d.zarr")
    with pytest.raises(InputError, match="3-D"):
        ingest_numpy(proj[0], tmp_path / "e.zarr", angles=[0.0])
    with pytest.raises(InputError, match="detector shape"):
        ingest_numpy(proj, tmp_path / "e.zarr", angles=np.arange(10.0), darks=np.zeros((2, 4, 3)))
    with pytest.raises(InputError, match="angle count mismatch"):
        ingest_numpy(proj, tmp_path / "e.zarr", angles=np.arange(9.0))
    with pytest.raises(ConfigError, match="values"):
        ingest_numpy(proj, tmp_path / "e.zarr", angles=np.arange(10.0), values="counts")
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(InputError, match="cannot read .npy") as exc:
        open_numpy(tmp_path / "bad.npy", angles=[0.0])
    assert str(tmp_path / "bad.npy") in str(exc.value)
    assert not (tmp_path / "e.zarr").exists()
