"""The ingest entry point: format detection, dispatch and interrupted ingests."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

from tomoflow.errors import InputError, StoreError
from tomoflow.io.dxchange import write_dxchange
from tomoflow.io.ingest import FORMATS, detect_format, ingest


def test_detect_real_files(tooth_h5: Path, txrm_file: Path) -> None:
    assert detect_format(tooth_h5) == "dxchange"
    assert detect_format(txrm_file) == "txrm"


def test_detect_small_files(tmp_path: Path, make_nxtomo) -> None:
    nx, _ = make_nxtomo("scan.h5")
    assert detect_format(nx) == "nexus"
    dx = write_dxchange(tmp_path / "d.hdf", np.ones((2, 2, 2)), [0, 1])
    assert detect_format(dx) == "dxchange"
    renamed = tmp_path / "d.data"
    renamed.write_bytes(dx.read_bytes())
    assert detect_format(renamed) == "dxchange"  # recognised by signature
    (tmp_path / "tifs").mkdir()
    tifffile.imwrite(tmp_path / "tifs" / "a.tif", np.ones((2, 2), np.uint16))
    assert detect_format(tmp_path / "tifs") == "tiff"
    assert detect_format(tmp_path / "tifs" / "a.tif") == "tiff"
    assert detect_format(str(tmp_path / "tifs" / "*.tif")) == "tiff"
    np.save(tmp_path / "p.npy", np.ones((2, 2, 2)))
    assert detect_format(tmp_path / "p.npy") == "numpy"


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("x.h5", b"", "empty"),
        ("x.h5", b"just text, not hdf5" * 5, "not an HDF5 file"),
        ("x.txrm", b"just text" * 5, "not an OLE2"),
        ("x.tif", b"just text" * 5, "not a TIFF"),
        ("x.weird", b"\x00\x01\x02\x03" * 10, "unknown format"),
    ],
)
def test_detect_bad_files(tmp_path: Path, name: str, content: bytes, match: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=match) as exc:
        detect_format(path)
    assert str(path) in str(exc.value)
    with pytest.raises(InputError, match=match):
        ingest(path, tmp_path / "s.zarr")
    assert not (tmp_path / "s.zarr").exists()


def test_detect_missing_and_truncated(tmp_path: Path, tooth_h5: Path, truncate) -> None:
    with pytest.raises(InputError, match="no such file") as exc:
        detect_format(tmp_path / "gone.nxs")
    assert str(tmp_path / "gone.nxs") in str(exc.value)
    bad = truncate(tooth_h5, 0.5)
    with pytest.raises(InputError, match="truncated or corrupt") as exc:
        ingest(bad, tmp_path / "s.zarr")
    assert str(bad) in str(exc.value)


def test_ingest_dispatch(tooth_h5: Path, txrm_file: Path, make_nxtomo, tmp_path: Path) -> None:
    s = ingest(tooth_h5, tmp_path / "tooth.zarr")
    assert s.attrs.source.format == "dxchange" and s.shape == (181, 2, 640)
    s = ingest(txrm_file, tmp_path / "chip.zarr")
    assert s.attrs.source.format == "txrm" and s.shape == (7, 256, 256)
    nx, truth = make_nxtomo()
    s = ingest(nx, tmp_path / "nx.zarr", entry="/entry")
    assert s.attrs.source.format == "nexus"
    np.testing.assert_allclose(s.angles_deg, truth["angles"])
    # forcing a format
    s = ingest(tooth_h5, tmp_path / "tooth2.zarr", format="dxchange", angles=np.linspace(0, 180, 181))
    assert s.angles_deg[-1] == 180.0
    with pytest.raises(InputError, match="unknown format 'bogus'"):
        ingest(tooth_h5, tmp_path / "t3.zarr", format="bogus")
    assert set(FORMATS) == {"dxchange", "nexus", "txrm", "tiff", "numpy"}


def test_existing_store_needs_overwrite(tooth_h5: Path, tmp_path: Path) -> None:
    ingest(tooth_h5, tmp_path / "s.zarr")
    assert ingest(tooth_h5, tmp_path / "s.zarr").is_complete("ingest")  # the same ingest: already done
    other_angles = np.linspace(0, 360, 181)
    with pytest.raises(StoreError, match="overwrite"):
        ingest(tooth_h5, tmp_path / "s.zarr", angles=other_angles)
    assert ingest(tooth_h5, tmp_path / "s.zarr", angles=other_angles, overwrite=True).is_complete("ingest")


def test_interrupted_ingest_leaves_nothing(tooth_h5: Path, tmp_path: Path) -> None:
    """An exception midway (here from the progress callback, like a Ctrl-C or a killed worker)
    leaves nothing: the store is built under a temporary name and put in place only when complete."""
    calls = []

    def progress(n: int) -> None:
        calls.append(n)
        if len(calls) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ingest(tooth_h5, tmp_path / "s.zarr", progress=progress)
    assert sum(calls) == 24 < 181
    assert list(tmp_path.iterdir()) == []
    # the same command again completes (no --overwrite needed: nothing was there)
    done = ingest(tooth_h5, tmp_path / "s.zarr")
    assert done.is_complete("ingest")
    with h5py.File(tooth_h5, "r") as f:
        np.testing.assert_array_equal(done.projections[-1], f["/exchange/data"][-1])
