import numpy as np
import pytest

from tomoflow.errors import ConfigError, InputError
from tomoflow.recon import shift_images
from tomoflow.recon.shift import phase_ramp


def test_sign_convention_content_moves_to_larger_index():
    img = np.zeros((1, 40, 40), np.float32)
    img[0, 10, 12] = 1.0
    out = shift_images(img, [[3.0, 5.0]])
    assert np.unravel_index(int(np.argmax(out[0])), out[0].shape) == (13, 17)


def test_subpixel_shift_and_inverse_roundtrip():
    yy, xx = np.mgrid[:48, :48]
    img = np.exp(-((yy - 20.0) ** 2 + (xx - 25.0) ** 2) / 18.0).astype(np.float32)[None]
    moved = shift_images(img, [[0.4, -2.3]])
    cy = (moved[0] * yy).sum() / moved[0].sum()
    cx = (moved[0] * xx).sum() / moved[0].sum()
    assert cy == pytest.approx(20.4, abs=1e-3)
    assert cx == pytest.approx(22.7, abs=1e-3)
    back = shift_images(moved, [[-0.4, 2.3]])
    np.testing.assert_allclose(back, img, atol=1e-4)


def test_shift_errors():
    with pytest.raises(InputError):
        shift_images(np.zeros((2, 8, 8)), [[0, 1]])
    with pytest.raises(InputError, match="NaN"):
        shift_images(np.zeros((1, 8, 8)), [[np.nan, 1]])
    with pytest.raises(ConfigError, match="pad"):
        shift_images(np.zeros((1, 8, 8)), [[0, 1]], pad=-1)


@pytest.mark.parametrize("n", [16, 17])
@pytest.mark.parametrize("rfft", [True, False])
def test_phase_ramp_integer_shift_is_a_roll(n, rfft):
    """An integer shift is exactly a circular roll, in both FFT layouts, at even and odd lengths."""
    x = np.random.default_rng(0).random(n)
    if rfft:
        y = np.fft.irfft(np.fft.rfft(x) * phase_ramp(n, 3, rfft=True), n)
    else:
        y = np.fft.ifft(np.fft.fft(x) * phase_ramp(n, 3, rfft=False)).real
    np.testing.assert_allclose(y, np.roll(x, 3), atol=1e-12)


def test_phase_ramp_keeps_real_signals_real_and_broadcasts():
    n = 12
    x = np.random.default_rng(1).random(n)
    r = phase_ramp(n, [[0.3], [-1.7]], rfft=False)
    assert r.shape == (2, 1, n)
    y = np.fft.ifft(np.fft.fft(x) * r[0, 0])
    assert np.abs(y.imag).max() < 1e-12  # Nyquist bin is real: the spectrum stays Hermitian
    assert r[0, 0, n // 2] == pytest.approx(np.cos(np.pi * 0.3))
    assert phase_ramp(n, 0.3).shape == (n // 2 + 1,)


def test_vertical_shift_of_column_nyquist_content_is_exact():
    """Content alternating column by column (the rfft Nyquist column) moves with a vertical shift
    like any other content (a joint 2-D ramp with a real Nyquist column left it 0.24 off)."""
    y, x = np.arange(48.0), np.arange(40)
    g = np.exp(-((y - 20.0) ** 2) / 20.0)
    img = g[:, None] * (-1.0) ** x[None, :]
    out = shift_images(img, [2.3, 1.0], pad=10)
    exact = np.exp(-((y - 22.3) ** 2) / 20.0)[:, None] * (-1.0) ** (x[None, :] - 1)
    np.testing.assert_allclose(out[5:-5, 5:-5], exact[5:-5, 5:-5], atol=1e-9)
