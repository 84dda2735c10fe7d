"""FBP by gridding in Fourier space (``fbp(method="fourier")``, :mod:`tomoflow.recon.fourier`)."""

import numpy as np
import pytest

from tomoflow.errors import ConfigError
from tomoflow.recon import project
from tomoflow.recon.fbp import angular_weights, circle_mask, fbp
from tomoflow.recon.filters import filter_response, padded_length
from tomoflow.recon.fourier import fourier_backproject, kernel_width
from tomoflow.testing import ellipse_slice


def _rmse(a, b, mask):
    return float(np.sqrt(np.mean((a - b)[mask] ** 2)))


ANGLES = np.linspace(0, 180, 180, endpoint=False)


@pytest.mark.parametrize("n", [128, 129])
def test_fourier_matches_direct_inside_the_circle(n):
    phantom = ellipse_slice(n)
    mask = circle_mask((n, n), radius=0.45 * n)
    sino = project(phantom, ANGLES)
    direct = fbp(sino, ANGLES)
    fourier = fbp(sino, ANGLES, method="fourier")
    assert fourier.dtype == np.float32 and fourier.shape == (n, n)
    assert _rmse(fourier, phantom, mask) < 0.06
    # The two differ by their interpolation along the detector (trigonometric vs linear): edges only.
    assert _rmse(fourier, direct, mask) < 0.02
    from scipy.ndimage import binary_erosion

    interior = binary_erosion(phantom == 0.5, iterations=3)
    assert float(np.median(fourier[interior])) == pytest.approx(0.5, abs=0.005)


def test_fourier_off_centre_axis_and_rectangular_slice():
    n = 96
    phantom = ellipse_slice(n)
    c = 51.7
    sino = project(phantom, ANGLES, center=c, n_cols=110)
    shape = (n, n)
    direct = fbp(sino, ANGLES, center=c, shape=shape)
    fourier = fbp(sino, ANGLES, center=c, shape=shape, method="fourier")
    mask = circle_mask(shape, radius=0.42 * n)
    assert _rmse(fourier, direct, mask) < 0.02
    wide = fbp(sino, ANGLES, center=c, shape=(80, 120), method="fourier")
    ref = fbp(sino, ANGLES, center=c, shape=(80, 120))
    assert wide.shape == (80, 120)
    assert _rmse(wide, ref, circle_mask((80, 120), radius=36)) < 0.02


def test_slices_travel_in_pairs_without_cross_talk():
    """Two real slices share one complex transform; each must come back as if reconstructed alone."""
    n = 64
    vol = np.stack([ellipse_slice(n), np.rot90(ellipse_slice(n)), 0.3 * ellipse_slice(n)])
    sino = project(vol, ANGLES[::2])
    slab = fbp(sino, ANGLES[::2], method="fourier")
    for z in range(3):
        alone = fbp(sino[:, z], ANGLES[::2], method="fourier")
        np.testing.assert_allclose(slab[z], alone, atol=2e-5)


def test_gridding_equals_the_exact_sum():
    """The gridded result equals the sum it approximates, evaluated directly, to the asked accuracy."""
    rng = np.random.default_rng(0)
    na, ncol, n = 12, 24, 20
    angles = np.sort(rng.uniform(0, 180, na))
    p = rng.normal(size=(na, 1, ncol)).astype(np.float32)
    center = 12.3
    w = angular_weights(angles)
    L = padded_length(ncol)
    left = (L - ncol) // 2
    padded = np.pad(p[:, 0].astype(np.float64), [(0, 0), (left, L - ncol - left)], mode="edge")
    m = np.fft.fftfreq(L, d=1.0 / L)
    h = filter_response("ramp", L)[np.abs(m).astype(int)]
    h[L // 2] = 0.0
    spec = np.fft.fft(padded, axis=-1) * h
    v, u = np.mgrid[:n, :n] - (n - 1) / 2.0
    exact = np.zeros((n, n))
    for a, th in enumerate(np.deg2rad(angles)):
        s = u * np.cos(th) + v * np.sin(th) + center + left
        exact += w[a] * np.real(np.exp(2j * np.pi * np.multiply.outer(s, m) / L) @ spec[a]) / L
    scale = np.abs(exact).max()
    for eps in (1e-3, 1e-6):
        got = fourier_backproject(p, angles, w, center=center, filter="ramp", shape=(n, n), eps=eps)[0]
        assert np.abs(got - exact).max() < 10 * eps * scale + 1e-5 * scale


def test_kernel_width_grows_with_accuracy():
    assert [kernel_width(e) for e in (1e-2, 1e-3, 1e-4, 1e-6)] == [3, 4, 5, 7]


def test_fourier_mask_360_and_bad_method():
    n = 64
    phantom = ellipse_slice(n)
    ang360 = np.linspace(0, 360, 240, endpoint=False)
    rec = fbp(project(phantom, ang360), ang360, method="fourier", mask=True)
    assert _rmse(rec, phantom, circle_mask((n, n), radius=0.45 * n)) < 0.06
    assert rec[0, 0] == 0.0
    with pytest.raises(ConfigError, match="method"):
        fbp(project(phantom, ANGLES), ANGLES, method="gridrec")
    with pytest.raises(ConfigError, match="backend"):
        fbp(project(phantom, ANGLES), ANGLES, method="fourier", backend="gpu")
