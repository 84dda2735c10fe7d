"""write_synthetic_scan: scan store (zarr) and DXchange targets keep the data and the true jitter."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tomoflow.errors import ConfigError, StoreError
from tomoflow.io.scan_store import ScanStore, open_scan
from tomoflow.io.synthetic import DX_JITTER_TRUTH, TRUE_SHIFTS, write_synthetic_scan
from tomoflow.sim import gold_particle, simulate_scan


@pytest.fixture(scope="module")
def scan():
    vol = gold_particle((4, 24, 24), seed=2, n_satellites=0)
    return simulate_scan(
        vol, np.linspace(0, 180, 12, endpoint=False), jitter_px=1.0, n_flats=3, n_darks=2, photons=1000, seed=5
    )


def test_write_zarr_store(tmp_path, scan):
    path = write_synthetic_scan(tmp_path / "s.zarr", scan)
    assert path == tmp_path / "s.zarr"
    store = ScanStore.open(path)
    attrs = store.attrs
    assert attrs.values == "intensity"
    assert attrs.source is not None and attrs.source.format == "synthetic"
    assert attrs.rotation_center == pytest.approx(scan.center)
    assert attrs.instrument["synthetic"]["seed"] == 5
    assert attrs.instrument["synthetic"]["photons"] == 1000.0
    assert store.is_complete("ingest")
    np.testing.assert_array_equal(store.projections[:], scan.projections)
    np.testing.assert_array_equal(store.flats[:], scan.flats)
    np.testing.assert_array_equal(store.darks[:], scan.darks)
    np.testing.assert_array_equal(store.angles_deg, scan.angles_deg)
    np.testing.assert_array_equal(store.group[TRUE_SHIFTS][:], scan.shifts)
    ds = open_scan(path)
    assert ds[TRUE_SHIFTS].dims == ("angle", "yx")
    np.testing.assert_array_equal(ds[TRUE_SHIFTS].values, scan.shifts)


def test_zarr_overwrite(tmp_path, scan):
    path = tmp_path / "s.zarr"
    write_synthetic_scan(path, scan)
    write_synthetic_scan(path, scan)  # the same scan again: already complete
    other = dataclasses.replace(scan, projections=scan.projections + 1)
    with pytest.raises(StoreError, match="overwrite"):
        write_synthetic_scan(path, other)
    write_synthetic_scan(path, other, overwrite=True)
    assert ScanStore.open(path).is_complete("ingest")


def test_write_dxchange(tmp_path, scan):
    h5py = pytest.importorskip("h5py")
    from tomoflow.io.dxchange import open_dxchange

    path = write_synthetic_scan(tmp_path / "s.h5", scan, format="dxchange")
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f[DX_JITTER_TRUTH][:], scan.shifts)
        assert f[DX_JITTER_TRUTH].attrs["units"] == "pixel"
    with open_dxchange(path) as raw:
        np.testing.assert_array_equal(np.asarray(raw.projections[0:12]), scan.projections)
        np.testing.assert_allclose(raw.angles_deg, scan.angles_deg)
        np.testing.assert_array_equal(raw.flats, scan.flats)
        np.testing.assert_array_equal(raw.darks, scan.darks)


def test_bad_format(tmp_path, scan):
    with pytest.raises(ConfigError):
        write_synthetic_scan(tmp_path / "x", scan, format="tiff")
