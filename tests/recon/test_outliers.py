"""Impulse-noise removal (tomoflow.recon.outliers): what it repairs, what it leaves alone, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from tomoflow.errors import ConfigError, InputError
from tomoflow.recon import normalize_log, project, remove_outliers
from tomoflow.recon.outliers import median3x3
from tomoflow.sim import cathode_particle, simulate_scan


@pytest.mark.parametrize("shape", [(3, 40, 37), (2, 1, 9), (1, 2, 2), (4, 3, 64)])
def test_median3x3_is_scipys_nearest_median(shape):
    a = np.random.default_rng(1).random(shape).astype(np.float32)
    a[:, ::3, ::2] = 7.0  # ties
    assert np.array_equal(median3x3(a), ndimage.median_filter(a, size=(1, 3, 3), mode="nearest"))


@pytest.fixture(scope="module")
def scan():
    vol = cathode_particle((24, 64, 64), seed=3)
    angles = np.linspace(0, 180, 61)
    clean = simulate_scan(vol, angles, seed=4)
    return vol, angles, normalize_log(clean.projections, clean.flats, clean.darks)


def test_clean_scan_is_left_alone(scan):
    _, _, clean = scan
    res = remove_outliers(clean)
    assert not res.applied and res.fraction == 0.0
    assert res.data is clean or np.array_equal(res.data, clean)


@pytest.mark.parametrize("fraction", [0.1, 0.4, 0.6])
def test_salt_and_pepper_is_repaired(scan, fraction):
    vol, angles, clean = scan
    noisy_scan = simulate_scan(vol, angles, seed=4, noise={"salt_and_pepper": fraction})
    noisy = normalize_log(noisy_scan.projections, noisy_scan.flats, noisy_scan.darks)
    res = remove_outliers(noisy)
    assert res.applied and 0.5 * fraction < res.fraction < 1.0
    before = np.abs(noisy - clean).mean()
    after = np.abs(res.data - clean).mean()
    # 40 % of zero-count pixels (-log clipped at 13.8) become an error of a few % of the data range
    assert after < (0.05 if fraction <= 0.4 else 0.15) * before, (before, after)
    assert np.isfinite(res.data).all() and res.data.dtype == np.float32


def test_zingers_and_dead_pixels():
    """Isolated hot pixels (any value) and a stuck column-free dead pixel set are replaced; the rest
    of the image is untouched."""
    yy, xx = np.mgrid[:48, :48]
    img = np.exp(-((yy - 24.0) ** 2 + (xx - 20.0) ** 2) / 150.0).astype(np.float32)
    stack = np.repeat(img[None], 6, axis=0)
    rng = np.random.default_rng(0)
    noisy = stack.copy()
    hit = rng.random(stack.shape) < 0.01
    noisy[hit] += rng.uniform(0.5, 3.0, size=int(hit.sum())).astype(np.float32)
    res = remove_outliers(noisy, detect="always")
    assert np.abs(res.data - stack)[hit].max() < 0.05
    assert np.array_equal(
        res.data[~ndimage.binary_dilation(hit, np.ones((1, 5, 5)))],
        stack[~ndimage.binary_dilation(hit, np.ones((1, 5, 5)))],
    )


def test_edges_survive():
    """Straight edges of a clean, sharp object are not outliers."""
    vol = np.zeros((4, 48, 48), np.float32)
    vol[:, 12:36, 16:30] = 1.0
    p = project(vol, np.linspace(0, 180, 12))
    res = remove_outliers(p, detect="always")
    assert res.fraction < 0.005


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"threshold": 0}, ConfigError),
        ({"threshold": 2}, ConfigError),
        ({"passes": 0}, ConfigError),
        ({"passes": 11}, ConfigError),
        ({"window": 4}, ConfigError),
        ({"window": 17}, ConfigError),
        ({"detect": "sometimes"}, ConfigError),
        ({"saturation_fraction": -1}, ConfigError),
    ],
)
def test_bad_parameters(kwargs, error):
    with pytest.raises(error):
        remove_outliers(np.zeros((2, 8, 8), np.float32), **kwargs)


def test_bad_input():
    with pytest.raises(InputError, match="angle, row, col"):
        remove_outliers(np.zeros((8, 8), np.float32))
    bad = np.zeros((2, 8, 8), np.float32)
    bad[0, 1, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        remove_outliers(bad)
    assert remove_outliers(np.zeros((0, 8, 8), np.float32)).fraction == 0.0


@pytest.mark.gpu
def test_cupy_matches_numpy(scan):  # pragma: no cover - GPU only
    import cupy as cp

    vol, angles, _ = scan
    noisy_scan = simulate_scan(vol, angles, seed=4, noise={"salt_and_pepper": 0.3})
    noisy = normalize_log(noisy_scan.projections, noisy_scan.flats, noisy_scan.darks)
    cpu = remove_outliers(noisy)
    gpu = remove_outliers(cp.asarray(noisy))
    np.testing.assert_allclose(cp.asnumpy(gpu.data), cpu.data, atol=1e-4)
