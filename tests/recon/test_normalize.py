"""Flat/dark normalisation and minus-log kernel (NumPy; CuPy when a GPU is present)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from tomoflow.errors import ConfigError, InputError
from tomoflow.recon.normalize import NormalizeReport, mean_frames, minus_log, normalize, normalize_log


def _data(seed: int = 0, shape: tuple[int, int, int] = (6, 4, 5)):
    rng = np.random.default_rng(seed)
    darks = rng.uniform(90, 110, (3, *shape[1:])).astype(np.float32)
    flats = rng.uniform(900, 1100, (4, *shape[1:])).astype(np.float32)
    trans = rng.uniform(0.05, 0.95, shape).astype(np.float32)
    proj = (trans * (flats.mean(0) - darks.mean(0)) + darks.mean(0)).astype(np.float32)
    return proj, flats, darks, trans


def test_normalize_recovers_transmission() -> None:
    proj, flats, darks, trans = _data()
    t, rep = normalize(proj, flats, darks, return_report=True)
    assert t.dtype == np.float32 and t.shape == proj.shape
    np.testing.assert_allclose(t, trans, rtol=1e-4, atol=1e-5)
    assert rep == NormalizeReport(0, 0, 0)
    lines = normalize_log(proj, flats, darks)
    np.testing.assert_allclose(lines, -np.log(trans), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(minus_log(t), -np.log(t), rtol=1e-6)


def test_integer_input_and_single_frames() -> None:
    proj = np.full((2, 3, 3), 550, np.uint16)
    t = normalize(proj, np.full((3, 3), 1000, np.uint16), np.full((3, 3), 100, np.uint16))
    assert t.dtype == np.float32
    np.testing.assert_allclose(t, 0.5)
    one = normalize(proj[0], np.full((3, 3), 1000.0), np.full((3, 3), 100.0))
    assert one.shape == (3, 3)
    np.testing.assert_allclose(one, 0.5)


def test_no_flats_no_darks() -> None:
    proj = np.full((2, 3, 3), 0.25, np.float32)
    np.testing.assert_allclose(normalize(proj, None, None), 0.25)
    np.testing.assert_allclose(normalize(proj, None, np.full((1, 3, 3), 0.05)), 0.2, rtol=1e-6)
    np.testing.assert_allclose(normalize(proj * 4, np.full((1, 3, 3), 1.0), None), 1.0)
    empty = np.zeros((0, 3, 3), np.float32)  # what a scan store holds when there are none
    np.testing.assert_allclose(normalize(proj, empty, empty), 0.25)


@pytest.mark.parametrize("flat_value", [0.0, -5.0, 100.0])  # 100 == dark: flat - dark = 0
def test_zero_and_negative_flats(flat_value: float, caplog: pytest.LogCaptureFixture) -> None:
    proj, flats, darks, trans = _data()
    darks[:, 1, 2] = 100.0
    flats[:, 1, 2] = flat_value
    flats[:, 3, 0] = 0.0
    with caplog.at_level(logging.WARNING, logger="tomoflow.recon.normalize"):
        t, rep = normalize(proj, flats, darks, return_report=True)
    assert np.isfinite(t).all()
    assert rep.bad_reference_pixels == 2 and rep.repaired == 2
    np.testing.assert_array_equal(t[:, 1, 2], 1.0)
    np.testing.assert_array_equal(t[:, 3, 0], 1.0)
    good = np.ones(t.shape[1:], bool)
    good[1, 2] = good[3, 0] = False
    np.testing.assert_allclose(t[:, good], trans[:, good], rtol=1e-4, atol=1e-5)
    assert "bad reference pixels" in caplog.text
    lines = normalize_log(proj, flats, darks)
    assert np.isfinite(lines).all()
    np.testing.assert_array_equal(lines[:, 1, 2], 0.0)
    with pytest.raises(InputError, match="flat <= dark"):
        normalize(proj, flats, darks, on_invalid="raise")


def test_nan_and_inf_inputs() -> None:
    proj, flats, darks, trans = _data()
    proj[0, 0, 0] = np.nan
    proj[2, 1, 1] = np.inf
    proj[3, 2, 2] = -np.inf
    flats[0, 0, 4] = np.nan  # one bad flat frame: the mean of the others is used
    darks[:, 3, 3] = np.nan  # no finite dark at all: a bad reference pixel
    t, rep = normalize(proj, flats, darks, return_report=True)
    assert np.isfinite(t).all() and t.min() >= 1e-6
    assert rep.nonfinite_values == 3 and rep.bad_reference_pixels == 1
    assert t[0, 0, 0] == 1.0 and t[2, 1, 1] == 1.0 and t[3, 2, 2] == 1.0
    ref = (proj[:, 0, 4] - darks[:, 0, 4].mean()) / (flats[1:, 0, 4].mean() - darks[:, 0, 4].mean())
    np.testing.assert_allclose(t[:, 0, 4], ref, rtol=1e-5)
    lines, rep2 = normalize_log(proj, flats, darks, return_report=True)
    assert np.isfinite(lines).all() and rep2 == rep
    with pytest.raises(InputError, match="NaN/Inf"):
        normalize(proj, flats[1:], np.nan_to_num(darks, nan=100.0), on_invalid="raise")


def test_all_nan_projection_is_repaired() -> None:
    proj, flats, darks, _ = _data()
    proj[4] = np.nan
    t, rep = normalize(proj, flats, darks, return_report=True)
    np.testing.assert_array_equal(t[4], 1.0)
    assert rep.nonfinite_values == proj[4].size


def test_clipping_and_minus_log_bounds() -> None:
    proj, flats, darks, _ = _data()
    proj[1, 0, 0] = 0.0  # below the dark: negative transmission
    t, rep = normalize(proj, flats, darks, min_transmission=1e-3, return_report=True)
    assert t[1, 0, 0] == pytest.approx(1e-3)
    assert rep.clipped_values == 1 and rep.repaired == 0
    lines = normalize_log(proj, flats, darks, min_transmission=1e-3)
    assert lines.max() == pytest.approx(-np.log(1e-3), rel=1e-5)
    tr = np.array([[0.5, 0.0, -1.0, np.nan, np.inf, 2.0]], np.float32)
    out, r = minus_log(tr, return_report=True)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[0], [np.log(2), -np.log(1e-6), -np.log(1e-6), 0.0, 0.0, -np.log(2)], rtol=1e-5)
    assert r.nonfinite_values == 2 and r.clipped_values == 2
    with pytest.raises(InputError, match="NaN/Inf"):
        minus_log(tr, on_invalid="raise")


def test_out_and_in_place() -> None:
    proj, flats, darks, trans = _data()
    out = np.empty(proj.shape, np.float32)
    res = normalize_log(proj, flats, darks, out=out)
    assert res is out
    p2 = proj.copy()
    res2 = normalize(p2, flats, darks, out=p2)
    assert res2 is p2
    np.testing.assert_allclose(p2, trans, rtol=1e-4, atol=1e-5)
    with pytest.raises(InputError, match="out must be float32"):
        normalize(proj, flats, darks, out=np.empty(proj.shape, np.float64))


def test_bad_arguments() -> None:
    proj, flats, darks, _ = _data()
    with pytest.raises(InputError, match="detector shape"):
        normalize(proj, flats[:, :3], darks)
    with pytest.raises(InputError, match="angle, row, col"):
        normalize(proj[None], flats, darks)
    with pytest.raises(ConfigError):
        normalize(proj, flats, darks, on_invalid="ignore")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        minus_log(proj, min_transmission=0.0)


def test_mean_frames() -> None:
    fr = np.array([[[1.0, np.nan]], [[3.0, np.nan]]])
    m = mean_frames(fr, (1, 2))
    assert m[0, 0] == 2.0 and np.isnan(m[0, 1])
    assert mean_frames(None, (1, 2)) is None
    assert mean_frames(np.zeros((0, 1, 2)), (1, 2)) is None


@pytest.mark.gpu
def test_cupy_matches_numpy() -> None:
    import cupy as cp

    proj, flats, darks, _ = _data(shape=(8, 16, 16))
    proj[0, 0, 0] = np.nan
    flats[:, 2, 2] = 0.0
    ref, rep = normalize_log(proj, flats, darks, return_report=True)
    got, rep_gpu = normalize_log(cp.asarray(proj), cp.asarray(flats), cp.asarray(darks), return_report=True)
    assert isinstance(got, cp.ndarray) and got.dtype == cp.float32
    np.testing.assert_allclose(cp.asnumpy(got), ref, rtol=1e-5, atol=1e-6)
    assert rep_gpu == rep
