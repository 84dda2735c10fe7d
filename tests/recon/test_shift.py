import numpy as np
import pytest

from tomoflow.errors import InputError
from tomoflow.recon import shift_images


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
