"""ZEISS TXRM: the real chip scan, and damaged copies of it."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import olefile
import pytest

from tomoflow.errors import InputError, StoreError
from tomoflow.io.scan_store import ScanStore
from tomoflow.io.txrm import image_stream_name, ingest_txrm, open_txrm


def _stream(path: Path, name: str, dtype: str) -> np.ndarray:
    with olefile.OleFileIO(str(path)) as ole:
        return np.frombuffer(ole.openstream(name).read(), dtype=dtype)


def test_image_stream_name() -> None:
    assert image_stream_name(1) == "ImageData1/Image1"
    assert image_stream_name(100) == "ImageData1/Image100"
    assert image_stream_name(101) == "ImageData2/Image101"
    assert image_stream_name(1800) == "ImageData18/Image1800"


def test_ingest_real_txrm(txrm_file: Path, tmp_path: Path) -> None:
    store = ingest_txrm(txrm_file, tmp_path / "chip.zarr")
    assert store.shape == (7, 256, 256)
    ang = store.angles_deg
    np.testing.assert_allclose(ang, np.arange(-45.0, 46.0, 15.0), atol=0.05)
    np.testing.assert_allclose(np.diff(ang), 15.0, atol=0.01)
    np.testing.assert_allclose(ang, _stream(txrm_file, "ImageInfo/Angles", "<f4")[:7], rtol=1e-6)

    attrs = store.attrs
    assert attrs.pixel_size is not None and attrs.pixel_size.unit == "micrometer"
    assert attrs.pixel_size.value > 0
    assert attrs.pixel_size.value == pytest.approx(float(_stream(txrm_file, "ImageInfo/PixelSize", "<f4")[0]))
    assert 0.01 < attrs.pixel_size.value < 10  # a nano-CT pixel, micrometres
    assert attrs.energy is not None and 1.0 < attrs.energy.value < 100.0  # keV (stream holds eV)
    assert attrs.source.format == "txrm"
    assert attrs.source.sha256 == hashlib.sha256(txrm_file.read_bytes()).hexdigest()
    assert attrs.instrument["pixel_dtype"] == "uint16"
    assert store.is_complete("ingest")

    sp = store.group["stage_position"][:]
    assert sp.shape == (7, 3)
    for k, ax in enumerate("XYZ"):
        np.testing.assert_allclose(sp[:, k], _stream(txrm_file, f"ImageInfo/{ax}Position", "<f4")[:7], rtol=1e-7)
    assert np.isfinite(sp).all()
    assert np.ptp(sp, axis=0).max() < 1.0  # the stage barely moves during a scan (micrometres)

    proj = store.projections[:]
    for i in (0, 6):
        img = _stream(txrm_file, image_stream_name(i + 1), "<u2").reshape(256, 256)
        np.testing.assert_array_equal(proj[i], img.astype(np.float32))
    # sensible counts, not garbage from a wrong dtype
    assert proj.min() >= 0 and 10 < proj.mean() < 60000 and np.isfinite(proj).all()


def test_open_txrm_lazy_block(txrm_file: Path) -> None:
    with open_txrm(txrm_file) as raw:
        block = raw.projections[2:5]
        assert block.shape == (3, 256, 256) and block.dtype == np.uint16
        assert raw.flats is None  # no ReferenceData in this file


def _copy_with(src: Path, dst: Path, stream: str, value: np.ndarray) -> Path:
    shutil.copy(src, dst)
    dst.chmod(0o644)
    with olefile.OleFileIO(str(dst), write_mode=True) as ole:
        ole.write_stream(stream, value.tobytes())
    return dst


def test_datatype_mismatch(txrm_file: Path, tmp_path: Path) -> None:
    bad = _copy_with(txrm_file, tmp_path / "dt.txrm", "ImageInfo/DataType", np.array([10], "<i4"))
    with pytest.raises(InputError, match="DataType 10") as exc:
        ingest_txrm(bad, tmp_path / "x.zarr")
    assert str(bad) in str(exc.value) and exc.value.dataset == "ImageData1/Image1"


def test_missing_image_stream(txrm_file: Path, tmp_path: Path) -> None:
    bad = _copy_with(txrm_file, tmp_path / "n.txrm", "ImageInfo/NoOfImages", np.array([9], "<i4"))
    # ImagesTaken (7) < NoOfImages (9): read the 7 taken
    with open_txrm(bad) as raw:
        assert raw.shape[0] == 7
    bad2 = _copy_with(bad, tmp_path / "m.txrm", "ImageInfo/ImagesTaken", np.array([9], "<i4"))
    with pytest.raises(InputError, match="image streams are missing") as exc:
        ingest_txrm(bad2, tmp_path / "x.zarr")
    assert str(bad2) in str(exc.value) and exc.value.dataset == "ImageData1/Image8"


def test_angle_count_mismatch(txrm_file: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="angle count mismatch") as exc:
        ingest_txrm(txrm_file, tmp_path / "x.zarr", angles=np.arange(5.0))
    assert str(txrm_file) in str(exc.value)
    store = ingest_txrm(txrm_file, tmp_path / "y.zarr", angles=(-45, 45, 15))
    np.testing.assert_allclose(store.angles_deg, np.arange(-45, 46, 15))


def test_truncated_txrm(txrm_file: Path, truncate, tmp_path: Path) -> None:
    bad = truncate(txrm_file, 0.5)
    with pytest.raises(InputError, match="truncated") as exc:
        ingest_txrm(bad, tmp_path / "x.zarr")
    assert str(bad) in str(exc.value)
    if (tmp_path / "x.zarr").exists():
        with pytest.raises(StoreError):
            ScanStore.open(tmp_path / "x.zarr")


@pytest.mark.parametrize("content", [b"", b"not an OLE2 file at all" * 10])
def test_not_txrm(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.txrm"
    bad.write_bytes(content)
    with pytest.raises(InputError, match="empty|not an OLE2") as exc:
        ingest_txrm(bad, tmp_path / "x.zarr")
    assert str(bad) in str(exc.value)
