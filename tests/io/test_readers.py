"""The shared machinery of the raw readers (tomoflow.io.readers): no store involved."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from tomoflow.errors import InputError
from tomoflow.io.metadata import SourceFile
from tomoflow.io.readers import (
    LazyStack,
    RawScan,
    check_input_file,
    reader_errors,
    resolve_angles,
    source_file,
    unit_factor,
)


def test_lazy_stack_reads_only_what_is_sliced() -> None:
    data = np.arange(5 * 2 * 3).reshape(5, 2, 3)
    calls: list[tuple[int, int]] = []

    def read(a: int, b: int) -> np.ndarray:
        calls.append((a, b))
        return data[a:b]

    stack = LazyStack(data.shape, data.dtype, read, "f.h5", "/data")
    assert len(stack) == 5 and stack.ndim == 3 and not calls
    np.testing.assert_array_equal(stack[1:3], data[1:3])
    np.testing.assert_array_equal(stack[-1], data[4])
    np.testing.assert_array_equal(stack[::2], data[::2])
    np.testing.assert_array_equal(stack[2, 1], data[2, 1])
    assert calls[:2] == [(1, 3), (4, 5)]
    with pytest.raises(IndexError):
        stack[5]


def test_lazy_stack_names_file_and_frames_on_errors() -> None:
    def broken(a: int, b: int) -> np.ndarray:
        raise OSError("truncated")

    with pytest.raises(InputError, match=r"cannot read frames 2\.\.3") as exc:
        LazyStack((4, 2, 2), np.float32, broken, "f.h5", "/data")[2:4]
    assert "f.h5 [/data]" in str(exc.value)
    with pytest.raises(InputError, match="expected"):
        LazyStack((4, 2, 2), np.float32, lambda a, b: np.zeros((1, 2, 2)), "f.h5")[0:2]


def test_resolve_angles_forms(tmp_path: Path) -> None:
    np.testing.assert_allclose(resolve_angles((0, 180, 45), 4), [0, 45, 90, 135])  # stop exclusive
    np.testing.assert_allclose(resolve_angles((0, 180, 60), 4), [0, 60, 120, 180])  # stop inclusive
    (tmp_path / "a.txt").write_text("# angles\n0\n1.5\n3\n")
    np.testing.assert_allclose(resolve_angles(tmp_path / "a.txt", 3), [0, 1.5, 3])
    with pytest.raises(InputError, match="angle count mismatch"):
        resolve_angles([0, 1], 3, "scan.tif")
    with pytest.raises(InputError, match="NaN"):
        resolve_angles([0, np.nan], 2)
    with pytest.raises(InputError, match="angle range"):
        resolve_angles((0, 10, 1), 3)


def test_check_input_file_and_hash(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        check_input_file(tmp_path / "gone")
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        check_input_file(tmp_path / "empty")
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"abc")
    b.write_bytes(b"defg")
    one = source_file(a, "numpy")
    assert one.sha256 == hashlib.sha256(b"abc").hexdigest() and one.size_bytes == 3
    many = source_file(tmp_path, "tiff", files=[a, b])
    assert many.sha256 == hashlib.sha256(b"abcdefg").hexdigest() and many.size_bytes == 7
    with pytest.raises(InputError, match="cannot hash") as exc:
        source_file(tmp_path, "tiff", files=[a, tmp_path / "missing.tif"])
    assert "missing.tif" in str(exc.value)


def test_units_and_library_errors() -> None:
    assert unit_factor("mm", "length", "um") == 1e3
    assert unit_factor(None, "energy", "kev") == 1.0
    assert unit_factor("rad", "angle", "deg") == pytest.approx(180 / np.pi)
    with pytest.raises(InputError, match="unknown length unit"):
        unit_factor("furlong", "length", "um", "f.h5", "/px")
    with pytest.raises(InputError, match="f.h5 \\[/x\\]: cannot read"):
        with reader_errors("f.h5", "/x"):
            raise KeyError("x")


def test_raw_scan_validates_frames_and_angles() -> None:
    proj = np.ones((3, 2, 4), np.float32)
    raw = RawScan(
        proj, np.array([0.0, 1.0, 2.0]), SourceFile(path="mem", format="numpy"), flats=np.ones((2, 4), np.uint16)
    )
    raw.validate()
    assert raw.flats.shape == (1, 2, 4) and raw.flats.dtype == np.float32
    raw.darks = np.zeros((1, 4, 2))
    with pytest.raises(InputError, match="darks detector shape"):
        raw.validate()
    raw.darks, raw.angles_deg = None, None
    with pytest.raises(InputError, match="no rotation angles"):
        raw.validate()
    raw.flats, raw.angles_deg = np.array(["a"]), np.arange(3.0)
    with pytest.raises(InputError, match="not a real number"):
        raw.validate()
