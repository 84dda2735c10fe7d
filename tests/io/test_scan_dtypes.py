"""Scan stores keep 8/16-bit raw counts as uint16 (exact, half the bytes of float32)."""

import numpy as np

from tomoflow.io import write_scan
from tomoflow.io.scan_store import storage_dtype
from tomoflow.pipeline.reconstruct import read_line_integrals

ANGLES = np.linspace(0, 180, 8, endpoint=False)


def test_raw_counts_keep_their_16_bits(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.integers(100, 60000, (8, 6, 20)).astype(np.uint16)
    flats = np.full((2, 6, 20), 61000, np.uint16)
    darks = np.full((1, 6, 20), 90, np.uint16)
    a = write_scan(tmp_path / "u16.zarr", raw, ANGLES, flats=flats, darks=darks)
    assert (a.projections.dtype, a.flats.dtype, a.darks.dtype) == (np.uint16,) * 3
    np.testing.assert_array_equal(np.asarray(a.projections[:]), raw)
    b = write_scan(
        tmp_path / "f32.zarr",
        raw.astype(np.float32),
        ANGLES,
        flats=flats.astype(np.float32),
        darks=darks.astype(np.float32),
    )
    assert b.projections.dtype == np.float32
    line = read_line_integrals(a, 0, 6)
    assert line.dtype == np.float32
    np.testing.assert_array_equal(line, read_line_integrals(b, 0, 6))
    assert a.identity != b.identity  # what is stored is part of the identity
    assert a.to_xarray()["projections"].dtype == np.uint16


def test_which_types_are_kept():
    assert storage_dtype(np.uint8) == storage_dtype(np.uint16) == np.uint16
    for other in (np.int32, np.uint32, np.float64, np.float32, None):
        assert storage_dtype(other) == np.float32
    assert storage_dtype(np.uint16, "line-integral") == np.float32


def test_uint8_widens_and_line_integrals_stay_float(tmp_path):
    raw = np.full((8, 4, 12), 200, np.uint8)
    assert write_scan(tmp_path / "u8.zarr", raw, ANGLES).projections.dtype == np.uint16
    li = write_scan(tmp_path / "li.zarr", raw, ANGLES, values="line-integral")
    assert li.projections.dtype == np.float32
