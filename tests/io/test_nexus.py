"""NeXus NXtomo: small files written with h5py, streamed through the image_key selection."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from tomoflow.errors import InputError
from tomoflow.io.nexus import find_nxtomo_entries, ingest_nexus, open_nexus


def test_ingest_nxtomo(make_nxtomo, tmp_path: Path) -> None:
    path, truth = make_nxtomo()
    store = ingest_nexus(path, tmp_path / "n.zarr")
    assert store.shape == (10, 4, 6)
    np.testing.assert_array_equal(store.projections[:], truth["projections"].astype(np.float32))
    np.testing.assert_array_equal(store.flats[:], truth["flats"].astype(np.float32))
    np.testing.assert_array_equal(store.darks[:], truth["darks"].astype(np.float32))
    np.testing.assert_allclose(store.angles_deg, truth["angles"])
    attrs = store.attrs
    assert attrs.source.format == "nexus"
    assert attrs.source.sha256 and len(attrs.source.sha256) == 64
    assert attrs.pixel_size.value == pytest.approx(0.65)
    assert attrs.energy.value == pytest.approx(25.0)
    assert attrs.instrument["entry"] == "/entry"
    assert attrs.instrument["n_invalid"] == 1
    sp = store.group["stage_position"][:]
    assert sp.shape == (10, 3)
    np.testing.assert_allclose(sp[0], [1000.0, 2000.0, 3.0])
    assert store.is_complete("ingest")


def test_lazy_selection_reads_blocks(make_nxtomo) -> None:
    path, truth = make_nxtomo(n_proj=12)
    with open_nexus(path) as raw:
        # frames 4..7 straddle the invalid frame: two runs, one read each
        np.testing.assert_array_equal(raw.projections[4:8], truth["projections"][4:8])
        np.testing.assert_array_equal(raw.projections[::5], truth["projections"][::5])
        np.testing.assert_array_equal(raw.projections[-1], truth["projections"][-1])


def test_data_under_nxdata_and_radians(make_nxtomo, tmp_path: Path) -> None:
    path, truth = make_nxtomo(data_at="data/data", angle_units="rad")
    store = ingest_nexus(path, tmp_path / "n.zarr")
    np.testing.assert_allclose(store.angles_deg, truth["angles"], atol=1e-9)
    np.testing.assert_array_equal(store.projections[:], truth["projections"].astype(np.float32))


def test_angles_without_units_are_degrees(make_nxtomo, tmp_path: Path) -> None:
    path, truth = make_nxtomo(angle_units=None)
    store = ingest_nexus(path, tmp_path / "n.zarr")
    np.testing.assert_allclose(store.angles_deg, truth["angles"])


def test_entry_discovery_and_override(make_nxtomo, tmp_path: Path) -> None:
    path, _ = make_nxtomo(extra_entry="entry2")
    with h5py.File(path, "r") as f:
        assert find_nxtomo_entries(f) == ["/entry", "/entry2"]
    with pytest.raises(InputError, match="several NXtomo entries") as exc:
        ingest_nexus(path, tmp_path / "n.zarr")
    assert str(path) in str(exc.value)
    store = ingest_nexus(path, tmp_path / "n.zarr", entry="entry2")
    assert store.attrs.instrument["entry"] == "/entry2"
    with pytest.raises(InputError, match="no such NeXus entry") as exc:
        ingest_nexus(path, tmp_path / "m.zarr", entry="/nope")
    assert str(path) in str(exc.value) and "/nope" in str(exc.value)


def test_no_nxtomo_entry(make_nxtomo, tmp_path: Path) -> None:
    path, _ = make_nxtomo(definition="NXmx")
    with pytest.raises(InputError, match="no NXentry with definition 'NXtomo'") as exc:
        ingest_nexus(path, tmp_path / "n.zarr")
    assert str(path) in str(exc.value)
    # an explicit entry still works
    store = ingest_nexus(path, tmp_path / "n.zarr", entry="entry")
    assert store.shape[0] == 10


def test_missing_rotation_angle(make_nxtomo, tmp_path: Path) -> None:
    path, truth = make_nxtomo(with_angles=False)
    with pytest.raises(InputError, match="no rotation angles") as exc:
        ingest_nexus(path, tmp_path / "n.zarr")
    assert exc.value.path == str(path)
    assert exc.value.dataset == "/entry/sample/rotation_angle"
    store = ingest_nexus(path, tmp_path / "n.zarr", angles=truth["angles"])
    np.testing.assert_allclose(store.angles_deg, truth["angles"])


def _edit(path: Path, name: str, data: np.ndarray) -> None:
    with h5py.File(path, "a") as f:
        del f[name]
        f.create_dataset(name, data=data)


def test_bad_image_keys(make_nxtomo, tmp_path: Path) -> None:
    path, _ = make_nxtomo()
    with h5py.File(path, "r") as f:
        keys = f["/entry/instrument/detector/image_key"][:]
    bad = keys.copy()
    bad[6] = 7
    _edit(path, "/entry/instrument/detector/image_key", bad)
    with pytest.raises(InputError, match="unknown image_key values") as exc:
        ingest_nexus(path, tmp_path / "n.zarr")
    assert exc.value.dataset == "/entry/instrument/detector/image_key" and str(path) in str(exc.value)
    _edit(path, "/entry/instrument/detector/image_key", keys[:-1])
    with pytest.raises(InputError, match="image keys for"):
        ingest_nexus(path, tmp_path / "n.zarr")
    _edit(path, "/entry/instrument/detector/image_key", np.ones_like(keys))
    with pytest.raises(InputError, match="no projection frames"):
        ingest_nexus(path, tmp_path / "n.zarr")


def test_angle_count_mismatch(make_nxtomo, tmp_path: Path) -> None:
    path, _ = make_nxtomo()
    _edit(path, "/entry/sample/rotation_angle", np.arange(7.0))
    with pytest.raises(InputError, match="angle count mismatch") as exc:
        ingest_nexus(path, tmp_path / "n.zarr")
    assert exc.value.dataset == "/entry/sample/rotation_angle" and str(path) in str(exc.value)


def test_wrong_rank(make_nxtomo, tmp_path: Path) -> None:
    path, _ = make_nxtomo()
    _edit(path, "/entry/instrument/detector/data", np.ones((18, 24), np.float32))
    with pytest.raises(InputError, match="3-D") as exc:
        ingest_nexus(path, tmp_path / "n.zarr")
    assert exc.value.dataset == "/entry/instrument/detector/data" and str(path) in str(exc.value)


def test_missing_data(make_nxtomo, tmp_path: Path) -> None:
    path, _ = make_nxtomo()
    with h5py.File(path, "a") as f:
        del f["/entry/instrument/detector/data"]
    with pytest.raises(InputError, match="no frame data") as exc:
        ingest_nexus(path, tmp_path / "n.zarr")
    assert str(path) in str(exc.value)


def test_truncated_nexus(make_nxtomo, truncate, tmp_path: Path) -> None:
    path, _ = make_nxtomo()
    bad = truncate(path, 0.6)
    with pytest.raises(InputError) as exc:
        ingest_nexus(bad, tmp_path / "n.zarr")
    assert str(bad) in str(exc.value)
