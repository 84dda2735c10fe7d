"""Data Exchange HDF5: the real tooth scan, write/read round trip, and bad input."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pytest

from tomoflow.errors import InputError, StoreError
from tomoflow.io.dxchange import ingest_dxchange, open_dxchange, write_dxchange
from tomoflow.io.scan_store import ScanStore, open_scan
from tomoflow.recon.normalize import normalize_log


def _assert_names(exc: pytest.ExceptionInfo, path: Path, dataset: str | None = None) -> None:
    assert str(path) in str(exc.value)
    assert exc.value.path == str(path)
    if dataset is not None:
        assert exc.value.dataset == dataset
        assert dataset in str(exc.value)


# ---------------------------------------------------------------------------------------- real data
def test_ingest_tooth(tooth_h5: Path, tmp_path: Path) -> None:
    store = ingest_dxchange(tooth_h5, tmp_path / "tooth.zarr")
    assert store.shape == (181, 2, 640)
    ang = store.angles_deg
    assert ang.shape == (181,)
    assert ang[0] == pytest.approx(0.0)
    assert 178.5 < ang[-1] < 180.0
    assert np.all(np.diff(ang) > 0)
    assert store.flats.shape == (10, 2, 640)
    assert store.darks.shape == (10, 2, 640)
    with h5py.File(tooth_h5, "r") as f:
        np.testing.assert_array_equal(store.projections[:], f["/exchange/data"][:].astype(np.float32))
        np.testing.assert_array_equal(store.flats[:], f["/exchange/data_white"][:].astype(np.float32))
        np.testing.assert_array_equal(store.darks[:], f["/exchange/data_dark"][:].astype(np.float32))
        np.testing.assert_allclose(ang, f["/exchange/theta"][:])
    attrs = store.attrs
    assert attrs.source is not None
    assert attrs.source.format == "dxchange"
    assert attrs.source.path == str(tooth_h5)
    assert attrs.source.sha256 == hashlib.sha256(tooth_h5.read_bytes()).hexdigest()
    assert attrs.source.size_bytes == tooth_h5.stat().st_size
    assert attrs.provenance.inputs[0].sha256 == attrs.source.sha256
    assert store.is_complete("ingest")
    assert attrs.values == "intensity"

    reopened = ScanStore.open(tmp_path / "tooth.zarr")
    ds = open_scan(reopened.path)
    assert ds["projections"].dims == ("angle", "row", "col")
    np.testing.assert_allclose(ds["angle"].values, ang)

    lines = normalize_log(store.projections[:], store.flats[:], store.darks[:])
    assert lines.dtype == np.float32
    assert np.isfinite(lines).all()
    # a tooth in a hard X-ray beam: line integrals of order 0..3, a little below 0 from noise
    assert -0.5 < lines.min() and lines.max() < 5.0
    assert 0.1 < float(lines.mean()) < 1.5


def test_open_dxchange_is_lazy(tooth_h5: Path) -> None:
    with open_dxchange(tooth_h5) as raw:
        assert raw.shape == (181, 2, 640)
        block = raw.projections[8:16]
        assert block.shape == (8, 2, 640)
        with h5py.File(tooth_h5, "r") as f:
            np.testing.assert_array_equal(block, f["/exchange/data"][8:16])
            np.testing.assert_array_equal(raw.projections[-1], f["/exchange/data"][180])


# ---------------------------------------------------------------------------------------- round trip
def test_write_dxchange_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    proj = rng.uniform(10, 100, (12, 3, 5)).astype(np.float32)
    flats = rng.uniform(100, 120, (2, 3, 5)).astype(np.float32)
    darks = rng.uniform(0, 5, (3, 5)).astype(np.float32)  # 2-D: one frame
    angles = np.linspace(0, 180, 12, endpoint=False)
    path = write_dxchange(tmp_path / "s.h5", proj, angles, flats, darks)
    assert path == tmp_path / "s.h5"
    with pytest.raises(StoreError, match="exists"):
        write_dxchange(path, proj, angles)
    write_dxchange(path, proj, angles, flats, darks, overwrite=True)
    assert not list(tmp_path.glob(".*.tmp"))
    store = ingest_dxchange(path, tmp_path / "s.zarr")
    np.testing.assert_array_equal(store.projections[:], proj)
    np.testing.assert_array_equal(store.flats[:], flats)
    np.testing.assert_array_equal(store.darks[:], darks[None])
    np.testing.assert_allclose(store.angles_deg, angles)
    # The same ingest again finds it complete; other data needs overwrite.
    assert ingest_dxchange(path, tmp_path / "s.zarr").is_complete("ingest")
    other = write_dxchange(tmp_path / "other.h5", proj + 1, angles)
    with pytest.raises(StoreError, match="overwrite"):
        ingest_dxchange(other, tmp_path / "s.zarr")
    np.testing.assert_array_equal(ingest_dxchange(other, tmp_path / "s.zarr", overwrite=True).projections[:], proj + 1)


def test_write_dxchange_rejects_bad_shapes(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="angle count"):
        write_dxchange(tmp_path / "a.h5", np.zeros((4, 2, 2)), [0, 1, 2])
    with pytest.raises(InputError, match="3-D"):
        write_dxchange(tmp_path / "b.h5", np.zeros((2, 2)), [0, 1])
    with pytest.raises(InputError, match="detector shape"):
        write_dxchange(tmp_path / "c.h5", np.zeros((2, 2, 2)), [0, 1], flats=np.zeros((1, 3, 2)))
    assert not list(tmp_path.iterdir())


def _h5(path: Path, **datasets: object) -> Path:
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            if isinstance(value, tuple):
                ds = f.create_dataset(f"/exchange/{name}", data=value[0])
                ds.attrs.update(value[1])
            else:
                f.create_dataset(f"/exchange/{name}", data=value)
    return path


def test_theta_missing_needs_angles(tmp_path: Path) -> None:
    path = _h5(tmp_path / "nothe.h5", data=np.ones((4, 2, 3), np.float32))
    with pytest.raises(InputError, match="no rotation angles") as exc:
        ingest_dxchange(path, tmp_path / "x.zarr")
    _assert_names(exc, path, "/exchange/theta")
    assert not (tmp_path / "x.zarr").exists()
    store = ingest_dxchange(path, tmp_path / "x.zarr", angles=(0, 180, 45))
    np.testing.assert_allclose(store.angles_deg, [0, 45, 90, 135])


def test_theta_in_radians(tmp_path: Path) -> None:
    theta = np.deg2rad([0.0, 30.0, 60.0])
    path = _h5(tmp_path / "rad.h5", data=np.ones((3, 2, 3), np.float32), theta=(theta, {"units": "rad"}))
    store = ingest_dxchange(path, tmp_path / "x.zarr")
    np.testing.assert_allclose(store.angles_deg, [0, 30, 60])
    bad = _h5(tmp_path / "furlong.h5", data=np.ones((3, 2, 3), np.float32), theta=(theta, {"units": "furlong"}))
    with pytest.raises(InputError, match="unknown angle unit") as exc:
        ingest_dxchange(bad, tmp_path / "y.zarr")
    _assert_names(exc, bad, "/exchange/theta")


# ---------------------------------------------------------------------------------------- bad input
def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.h5"
    with pytest.raises(InputError, match="no such file") as exc:
        ingest_dxchange(path, tmp_path / "x.zarr")
    _assert_names(exc, path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.h5"
    path.touch()
    with pytest.raises(InputError, match="empty") as exc:
        ingest_dxchange(path, tmp_path / "x.zarr")
    _assert_names(exc, path)


def test_not_hdf5(tmp_path: Path) -> None:
    path = tmp_path / "text.h5"
    path.write_text("this is not HDF5\n" * 20)
    with pytest.raises(InputError, match="not an HDF5 file") as exc:
        ingest_dxchange(path, tmp_path / "x.zarr")
    _assert_names(exc, path)


def test_truncated_tooth(tooth_h5: Path, truncate, tmp_path: Path) -> None:
    path = truncate(tooth_h5, 0.5)
    with pytest.raises(InputError, match="truncated or corrupt") as exc:
        ingest_dxchange(path, tmp_path / "x.zarr")
    _assert_names(exc, path)
    assert not (tmp_path / "x.zarr").exists()


def test_missing_data_dataset(tmp_path: Path) -> None:
    path = _h5(tmp_path / "nodata.h5", theta=np.arange(3.0))
    with pytest.raises(InputError, match="missing") as exc:
        ingest_dxchange(path, tmp_path / "x.zarr")
    _assert_names(exc, path, "/exchange/data")


def test_wrong_rank(tmp_path: Path) -> None:
    path = _h5(tmp_path / "flat.h5", data=np.ones((4, 5), np.float32), theta=np.arange(4.0))
    with pytest.raises(InputError, match="3-D") as exc:
        ingest_dxchange(path, tmp_path / "x.zarr")
    _assert_names(exc, path, "/exchange/data")


def test_angle_count_mismatch(tmp_path: Path) -> None:
    path = _h5(tmp_path / "ang.h5", data=np.ones((4, 2, 3), np.float32), theta=np.arange(5.0))
    with pytest.raises(InputError, match="angle count mismatch") as exc:
        ingest_dxchange(path, tmp_path / "x.zarr")
    _assert_names(exc, path, "/exchange/theta")
    with pytest.raises(InputError, match="angle count mismatch"):
        ingest_dxchange(path, tmp_path / "x.zarr", angles=[0, 1])
    assert not (tmp_path / "x.zarr").exists()


@pytest.mark.parametrize("name", ["data_white", "data_dark"])
def test_frames_of_another_detector(tmp_path: Path, name: str) -> None:
    path = _h5(
        tmp_path / "fd.h5",
        data=np.ones((4, 2, 3), np.float32),
        theta=np.arange(4.0),
        **{name: np.ones((2, 3, 3), np.float32)},
    )
    with pytest.raises(InputError, match="detector shape") as exc:
        ingest_dxchange(path, tmp_path / "x.zarr")
    _assert_names(exc, path, f"/exchange/{name}")


def test_all_nan_projection(tmp_path: Path) -> None:
    data = np.ones((20, 2, 3), np.float32)
    data[13] = np.nan
    path = _h5(tmp_path / "nan.h5", data=data, theta=np.arange(20.0))
    with pytest.raises(InputError, match="projection 13") as exc:
        ingest_dxchange(path, tmp_path / "x.zarr")
    _assert_names(exc, path)
    # the failure came after the first blocks were written, into a temporary store: nothing is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.h5"]
    with pytest.raises(StoreError, match="no such scan store"):
        ScanStore.open(tmp_path / "x.zarr")


def test_string_data(tmp_path: Path) -> None:
    path = tmp_path / "str.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("/exchange/data", data=np.array([[["a"]]], dtype="S1"))
        f.create_dataset("/exchange/theta", data=[0.0])
    with pytest.raises(InputError, match="not a real number") as exc:
        ingest_dxchange(path, tmp_path / "x.zarr")
    _assert_names(exc, path, "/exchange/data")


def test_corrupt_chunk_mid_stream(tmp_path: Path) -> None:
    """A damaged compressed chunk deep in the file fails the ingest with InputError mid-way."""
    path = tmp_path / "corrupt.h5"
    data = np.random.default_rng(0).uniform(0, 100, (40, 4, 16)).astype(np.float32)
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("/exchange/data", data=data, chunks=(1, 4, 16), compression="gzip")
        f.create_dataset("/exchange/theta", data=np.arange(40.0))
        info = ds.id.get_chunk_info_by_coord((30, 0, 0))
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(b"\xff" * info.size)
    with pytest.raises(InputError, match="cannot read frames") as exc:
        ingest_dxchange(path, tmp_path / "x.zarr")
    _assert_names(exc, path, "/exchange/data")
    assert not (tmp_path / "x.zarr").exists()  # the partial store was never put in place
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_write_dxchange_unwritable_names_the_file(tmp_path: Path) -> None:
    out = tmp_path / "no-such-folder" / "x.h5"
    with pytest.raises(StoreError, match="cannot create the file") as exc:
        write_dxchange(out, np.ones((2, 2, 2)), [0, 1])
    assert str(out) in str(exc.value) and ".tmp" not in str(exc.value)


def test_overwrite_replaces_only_files_tomoflow_wrote(tmp_path):
    """`--overwrite` may replace a Data Exchange file tomoflow wrote, never someone else's file."""
    import h5py

    from tomoflow.errors import StoreError
    from tomoflow.io.dxchange import write_dxchange

    ours = write_dxchange(tmp_path / "ours.h5", np.ones((2, 3, 4), np.float32), [0.0, 90.0])
    write_dxchange(ours, np.zeros((2, 3, 4), np.float32), [0.0, 90.0], overwrite=True)
    with h5py.File(ours, "r") as f:
        assert f["/exchange/data"][0, 0, 0] == 0
    theirs = tmp_path / "theirs.h5"
    with h5py.File(theirs, "w") as f:
        f["precious"] = np.arange(3)
    (tmp_path / "notes.txt").write_text("keep")
    for path in (theirs, tmp_path / "notes.txt"):
        before = path.read_bytes()
        with pytest.raises(StoreError, match="not a Data Exchange file tomoflow wrote"):
            write_dxchange(path, np.ones((2, 3, 4), np.float32), [0.0, 90.0], overwrite=True)
        assert path.read_bytes() == before
