"""Jitter: uniform bounds, reproducibility and the sign convention (+dx moves content right)."""

from __future__ import annotations

import numpy as np
import pytest

from tomoflow.errors import ConfigError, InputError
from tomoflow.sim.jitter import apply_jitter, random_jitter


def test_random_jitter_bounds_and_uniformity():
    j = random_jitter(2000, 1.5, seed=0)
    assert j.shape == (2000, 2) and j.dtype == np.float64
    assert np.all(np.abs(j) <= 1.5)
    assert np.abs(j).max() > 1.45  # fills the range
    assert j.mean(axis=0) == pytest.approx([0.0, 0.0], abs=0.1)
    # variance of U(-J, J) is J^2 / 3
    assert j.var(axis=0) == pytest.approx([1.5**2 / 3] * 2, rel=0.1)
    np.testing.assert_array_equal(j, random_jitter(2000, 1.5, seed=0))
    assert not np.array_equal(j, random_jitter(2000, 1.5, seed=1))


def test_random_jitter_horizontal_only_and_zero():
    j = random_jitter(50, 2.0, seed=0, vertical=False)
    assert np.all(j[:, 0] == 0) and np.any(j[:, 1] != 0)
    np.testing.assert_array_equal(random_jitter(10, 0.0, seed=0), 0.0)
    assert random_jitter(0, 1.0, seed=0).shape == (0, 2)


@pytest.mark.parametrize("amp", [-1.0, np.nan, np.inf])
def test_random_jitter_bad_amplitude(amp):
    with pytest.raises(ConfigError):
        random_jitter(5, amp, seed=0)


def _dot(rows: int, cols: int, r0: float, c0: float, sigma: float = 1.5) -> np.ndarray:
    r = np.arange(rows)[:, None]
    c = np.arange(cols)[None, :]
    return np.exp(-((r - r0) ** 2 + (c - c0) ** 2) / (2 * sigma**2)).astype(np.float32)


def _centroid(img: np.ndarray) -> tuple[float, float]:
    w = np.clip(img, 0, None)
    r, c = np.indices(img.shape)
    return float((w * r).sum() / w.sum()), float((w * c).sum() / w.sum())


def test_sign_convention_dot_moves_to_c_plus_dx():
    rows, cols, r0, c0 = 32, 48, 14.0, 20.0
    stack = np.stack([_dot(rows, cols, r0, c0)] * 3)
    shifts = np.array([[0.0, 3.0], [1.5, -2.25], [-0.7, 0.4]])
    out = apply_jitter(stack, shifts)
    assert out.shape == stack.shape and out.dtype == np.float32
    for img, (dy, dx) in zip(out, shifts):
        r, c = _centroid(img)
        assert c == pytest.approx(c0 + dx, abs=0.02)
        assert r == pytest.approx(r0 + dy, abs=0.02)
        # the peak (whole-pixel) follows too
        pr, pc = np.unravel_index(np.argmax(img), img.shape)
        assert abs(pc - (c0 + dx)) <= 0.5 and abs(pr - (r0 + dy)) <= 0.5


def test_correction_with_minus_shifts_restores():
    stack = np.stack([_dot(32, 40, 15.0, 19.0, sigma=2.5)] * 2)
    shifts = np.array([[0.8, -1.3], [-1.2, 0.6]])
    back = apply_jitter(apply_jitter(stack, shifts), -shifts)
    np.testing.assert_allclose(back, stack, atol=1e-3)


def test_apply_jitter_checks_shapes():
    with pytest.raises(InputError):
        apply_jitter(np.zeros((2, 8, 8), np.float32), np.zeros((2, 3)))
    with pytest.raises(InputError):
        apply_jitter(np.zeros((8, 8), np.float32), np.zeros((1, 2)))


@pytest.mark.gpu
def test_apply_jitter_on_gpu_matches_cpu():
    import cupy as cp

    stack = np.stack([_dot(32, 40, 15.0, 19.0)] * 2)
    shifts = np.array([[0.8, -1.3], [-1.2, 0.6]])
    g = apply_jitter(cp.asarray(stack), shifts)
    assert type(g).__module__.split(".")[0] == "cupy"
    np.testing.assert_allclose(cp.asnumpy(g), apply_jitter(stack, shifts), atol=1e-5)
