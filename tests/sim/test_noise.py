"""Noise models: statistics, reproducibility, dtypes and parameter checks."""

from __future__ import annotations

import numpy as np
import pytest

from tomoflow.errors import ConfigError, InputError
from tomoflow.sim.noise import gaussian_noise, poisson_noise, salt_and_pepper


def test_gaussian_statistics_and_seed():
    x = np.full((200, 500), 3.0, dtype=np.float32)
    y = gaussian_noise(x, 0.5, seed=1)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert (y - x).mean() == pytest.approx(0.0, abs=0.01)
    assert (y - x).std() == pytest.approx(0.5, rel=0.02)
    np.testing.assert_array_equal(y, gaussian_noise(x, 0.5, seed=1))
    assert not np.array_equal(y, gaussian_noise(x, 0.5, seed=2))
    np.testing.assert_array_equal(x, 3.0)  # input untouched
    assert gaussian_noise(x.astype(np.float64), 0.1, seed=0).dtype == np.float64
    np.testing.assert_array_equal(gaussian_noise(x, 0.0, seed=0), x)


@pytest.mark.parametrize("sigma", [-0.1, np.nan, "a"])
def test_gaussian_bad_sigma(sigma):
    with pytest.raises(ConfigError):
        gaussian_noise(np.zeros(4), sigma, seed=0)


@pytest.mark.parametrize("transmission", [1.0, 0.3, 0.02])
def test_poisson_mean_and_variance(transmission):
    photons = 500.0
    t = np.full((400, 500), transmission, dtype=np.float32)
    y = poisson_noise(t, photons, seed=3)
    assert y.dtype == np.float32
    assert y.mean() == pytest.approx(transmission, rel=0.01)
    assert y.var() == pytest.approx(transmission / photons, rel=0.03)
    # values are whole photon counts divided by photons
    np.testing.assert_allclose(y * photons, np.round(y * photons), atol=1e-3)


def test_poisson_checks():
    with pytest.raises(ConfigError):
        poisson_noise(np.ones(3), 0.0, seed=0)
    with pytest.raises(ConfigError):
        poisson_noise(np.ones(3), -5, seed=0)
    with pytest.raises(InputError):
        poisson_noise(np.array([0.5, -0.1]), 100, seed=0)
    with pytest.raises(InputError):
        poisson_noise(np.array([0.5, np.nan]), 100, seed=0)


def test_salt_and_pepper_fraction_and_values():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 0.9, size=(100, 200)).astype(np.float32)
    y = salt_and_pepper(x, 0.1, seed=4, low=0.0, high=1.0)
    changed = y != x
    assert changed.sum() == round(0.1 * x.size)
    assert set(np.unique(y[changed])) == {0.0, 1.0}
    assert (y[changed] == 1.0).mean() == pytest.approx(0.5, abs=0.05)
    np.testing.assert_array_equal(y, salt_and_pepper(x, 0.1, seed=4, low=0.0, high=1.0))
    # defaults: the data range
    z = salt_and_pepper(x, 0.6, seed=5)
    assert set(np.unique(z[z != x])) <= {x.min(), x.max()}
    np.testing.assert_array_equal(salt_and_pepper(x, 0.0, seed=0), x)


@pytest.mark.parametrize("fraction", [-0.01, 0.61, 1.0, np.inf])
def test_salt_and_pepper_out_of_range(fraction):
    with pytest.raises(ConfigError, match="fraction"):
        salt_and_pepper(np.zeros((4, 4)), fraction, seed=0)


@pytest.mark.gpu
def test_noise_on_gpu_matches_cpu():
    import cupy as cp

    x = np.random.default_rng(0).uniform(0.1, 0.9, size=(16, 16)).astype(np.float32)
    for func, arg in ((gaussian_noise, 0.1), (poisson_noise, 100.0), (salt_and_pepper, 0.2)):
        g = func(cp.asarray(x), arg, seed=3)
        assert type(g).__module__.split(".")[0] == "cupy"
        np.testing.assert_allclose(cp.asnumpy(g), func(x, arg, seed=3), rtol=1e-6)
