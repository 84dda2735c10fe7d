"""TIFF stacks: directories of single images, multi-page files, globs, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from tomoflow.errors import InputError
from tomoflow.io.tiff import ingest_tiff, list_tiffs, natural_key, open_tiff

SHAPE = (5, 7)


def _stack(n: int, seed: int = 0, dtype: str = "uint16") -> np.ndarray:
    return np.random.default_rng(seed).integers(100, 4000, (n, *SHAPE)).astype(dtype)


def _write_dir(d: Path, frames: np.ndarray, prefix: str = "proj_") -> list[Path]:
    d.mkdir(parents=True, exist_ok=True)
    files = []
    for i, fr in enumerate(frames):
        f = d / f"{prefix}{i}.tif"  # not zero-padded: natural order matters
        tifffile.imwrite(f, fr)
        files.append(f)
    return files


def test_natural_key() -> None:
    names = ["p10.tif", "p2.tif", "p1.tif", "P3.tif"]
    assert sorted(names, key=natural_key) == ["p1.tif", "p2.tif", "P3.tif", "p10.tif"]


def test_directory_stack(tmp_path: Path) -> None:
    proj = _stack(12)
    flats = _stack(3, 1) + 5000
    darks = _stack(2, 2) // 40
    _write_dir(tmp_path / "proj", proj)
    _write_dir(tmp_path / "flat", flats, "flat_")
    tifffile.imwrite(tmp_path / "darks.tif", darks)  # multi-page
    (tmp_path / "angles.txt").write_text("# degrees\n" + "\n".join(str(15.0 * i) for i in range(12)) + "\n")
    store = ingest_tiff(
        tmp_path / "proj",
        tmp_path / "s.zarr",
        angles=tmp_path / "angles.txt",
        flats=tmp_path / "flat",
        darks=tmp_path / "darks.tif",
        pixel_size_um=0.5,
    )
    assert store.shape == (12, *SHAPE)
    np.testing.assert_array_equal(store.projections[:], proj.astype(np.float32))  # 0, 1, 2, ..., 10, 11
    np.testing.assert_array_equal(store.flats[:], flats.astype(np.float32))
    np.testing.assert_array_equal(store.darks[:], darks.astype(np.float32))
    np.testing.assert_allclose(store.angles_deg, 15.0 * np.arange(12))
    attrs = store.attrs
    assert attrs.source.format == "tiff" and len(attrs.source.sha256) == 64
    assert attrs.pixel_size.value == 0.5
    assert attrs.instrument["n_files"] == 12 and attrs.instrument["last_file"] == "proj_11.tif"
    assert store.is_complete("ingest")


def test_multipage_glob_and_angle_range(tmp_path: Path) -> None:
    proj = _stack(9, dtype="float32")
    tifffile.imwrite(tmp_path / "all.tiff", proj)
    s1 = ingest_tiff(tmp_path / "all.tiff", tmp_path / "a.zarr", angles=(0, 180, 20))  # stop exclusive
    np.testing.assert_array_equal(s1.projections[:], proj)
    np.testing.assert_allclose(s1.angles_deg, np.arange(0, 180, 20))
    s2 = ingest_tiff(tmp_path / "all.tiff", tmp_path / "b.zarr", angles=(0, 160, 20))  # stop inclusive
    np.testing.assert_allclose(s2.angles_deg, np.arange(0, 161, 20))
    _write_dir(tmp_path / "d", proj)
    s3 = ingest_tiff(str(tmp_path / "d" / "proj_*.tif"), tmp_path / "c.zarr", angles=np.arange(9.0))
    np.testing.assert_array_equal(s3.projections[:], proj)
    files = list_tiffs(str(tmp_path / "d" / "*.tif"))
    s4 = ingest_tiff(files[::-1], tmp_path / "e.zarr", angles=np.arange(9.0))  # a list keeps its order
    np.testing.assert_array_equal(s4.projections[:], proj[::-1])


def test_lazy_reads(tmp_path: Path) -> None:
    proj = _stack(6)
    tifffile.imwrite(tmp_path / "m.tif", proj)
    with open_tiff(tmp_path / "m.tif", angles=np.arange(6.0)) as raw:
        np.testing.assert_array_equal(raw.projections[2:4], proj[2:4])
        np.testing.assert_array_equal(raw.projections[-1], proj[-1])


def test_flats_in_projection_directory_are_excluded(tmp_path: Path) -> None:
    proj = _stack(4)
    _write_dir(tmp_path / "scan", proj)
    _write_dir(tmp_path / "scan", _stack(2, 3), "zflat_")
    store = ingest_tiff(
        tmp_path / "scan", tmp_path / "s.zarr", angles=np.arange(4.0), flats=str(tmp_path / "scan" / "zflat_*.tif")
    )
    assert store.shape[0] == 4 and store.flats.shape[0] == 2


def test_angles_required_and_counted(tmp_path: Path) -> None:
    _write_dir(tmp_path / "p", _stack(4))
    with pytest.raises(InputError, match="no rotation angles") as exc:
        ingest_tiff(tmp_path / "p", tmp_path / "s.zarr")
    assert str(tmp_path / "p") in str(exc.value)
    with pytest.raises(InputError, match="angle count mismatch") as exc:
        ingest_tiff(tmp_path / "p", tmp_path / "s.zarr", angles=[0, 1, 2])
    assert str(tmp_path / "p") in str(exc.value)
    (tmp_path / "a.txt").write_text("0\n1\nfoo\n2\n")
    with pytest.raises(InputError, match="angle list") as exc:
        ingest_tiff(tmp_path / "p", tmp_path / "s.zarr", angles=tmp_path / "a.txt")
    assert str(tmp_path / "a.txt") in str(exc.value)
    with pytest.raises(InputError, match="angle range"):
        ingest_tiff(tmp_path / "p", tmp_path / "s.zarr", angles=(0, 180, 1))
    assert not (tmp_path / "s.zarr").exists()


def test_flats_of_another_detector(tmp_path: Path) -> None:
    _write_dir(tmp_path / "p", _stack(3))
    tifffile.imwrite(tmp_path / "flat.tif", np.ones((2, 6, 7), np.uint16))
    with pytest.raises(InputError, match="detector shape") as exc:
        ingest_tiff(tmp_path / "p", tmp_path / "s.zarr", angles=[0, 1, 2], flats=tmp_path / "flat.tif")
    assert str(tmp_path / "flat.tif") in str(exc.value)


def test_mixed_image_shapes(tmp_path: Path) -> None:
    files = _write_dir(tmp_path / "p", _stack(3))
    tifffile.imwrite(files[2], np.ones((4, 4), np.uint16))
    with pytest.raises(InputError, match="differs") as exc:
        ingest_tiff(tmp_path / "p", tmp_path / "s.zarr", angles=[0, 1, 2])
    assert str(files[2]) in str(exc.value)


def test_corrupt_and_empty_tiff(tmp_path: Path) -> None:
    files = _write_dir(tmp_path / "p", _stack(3))
    files[1].write_bytes(b"II*\x00garbage" * 3)
    with pytest.raises(InputError) as exc:
        ingest_tiff(tmp_path / "p", tmp_path / "s.zarr", angles=[0, 1, 2])
    assert str(files[1]) in str(exc.value)
    files[1].write_bytes(b"")
    with pytest.raises(InputError, match="empty") as exc:
        ingest_tiff(tmp_path / "p", tmp_path / "s2.zarr", angles=[0, 1, 2])
    assert str(files[1]) in str(exc.value)
    notiff = tmp_path / "x.tif"
    notiff.write_text("plain text")
    with pytest.raises(InputError, match="cannot read TIFF") as exc:
        ingest_tiff(notiff, tmp_path / "s3.zarr", angles=[0])
    assert str(notiff) in str(exc.value)


def test_rgb_is_wrong_rank(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "rgb.tif", np.zeros((5, 7, 3), np.uint8), photometric="rgb")
    with pytest.raises(InputError, match="2-D") as exc:
        ingest_tiff(tmp_path / "rgb.tif", tmp_path / "s.zarr", angles=[0])
    assert str(tmp_path / "rgb.tif") in str(exc.value)


def test_missing_sources(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file") as exc:
        ingest_tiff(tmp_path / "nope.tif", tmp_path / "s.zarr", angles=[0])
    assert str(tmp_path / "nope.tif") in str(exc.value)
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(InputError, match="no .tif"):
        ingest_tiff(tmp_path / "emptydir", tmp_path / "s.zarr", angles=[0])
    with pytest.raises(InputError, match="no file matches"):
        ingest_tiff(str(tmp_path / "q_*.tif"), tmp_path / "s.zarr", angles=[0])
