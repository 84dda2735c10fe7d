import numpy as np
import pytest
from skimage.transform import iradon

from tomoflow.errors import ConfigError, InputError
from tomoflow.recon import project
from tomoflow.recon.fbp import angular_weights, circle_mask, fbp
from tomoflow.recon.filters import FILTERS, filter_projections
from tomoflow.testing import ellipse_slice


def _rmse(a, b, mask):
    return float(np.sqrt(np.mean((a - b)[mask] ** 2)))


N = 129
PHANTOM = ellipse_slice(N)
ANGLES = np.linspace(0, 180, 180, endpoint=False)
MASK = circle_mask((N, N), radius=0.45 * N)


def test_fbp_reconstructs_phantom():
    rec = fbp(project(PHANTOM, ANGLES), ANGLES)
    # Edges of the piecewise-constant phantom dominate the error; 0.06 is ~6% of the contrast range.
    assert _rmse(rec, PHANTOM, MASK) < 0.06
    # Flat interior regions (3 px away from any edge) are accurate to ~1%.
    from scipy.ndimage import binary_erosion

    interior = binary_erosion(PHANTOM == 0.5, iterations=3)
    assert float(np.median(rec[interior])) == pytest.approx(0.5, abs=0.005)


def test_fbp_matches_skimage_iradon():
    # Odd size: skimage's centre column n // 2 equals tomoflow's (n - 1) / 2. skimage's y axis points
    # the other way, so its image is tomoflow's flipped upside down.
    sino = project(PHANTOM, ANGLES)
    ours = fbp(sino, ANGLES, filter="ramp")
    ref = iradon(sino.T.astype(np.float64), ANGLES, filter_name="ramp", circle=True)
    assert _rmse(ours, np.flipud(ref), MASK) < 1e-3


@pytest.mark.parametrize("name", [f for f in FILTERS if f != "none"])
def test_every_filter_reconstructs(name):
    rec = fbp(project(PHANTOM, ANGLES), ANGLES, filter=name)
    assert _rmse(rec, PHANTOM, MASK) < 0.1


def test_centre_phase_ramp_equals_reconstructing_shifted_data():
    c = 67.3
    sino = project(PHANTOM, ANGLES, center=c)
    rec = fbp(sino, ANGLES, center=c)
    assert _rmse(rec, PHANTOM, MASK) < 0.06
    wrong = fbp(sino, ANGLES)  # ignoring the offset axis blurs the slice
    assert _rmse(wrong, PHANTOM, MASK) > 2 * _rmse(rec, PHANTOM, MASK)


def test_slab_and_360_degree_weights():
    vol = np.stack([PHANTOM, 0.5 * PHANTOM])
    ang360 = np.linspace(0, 360, 360, endpoint=False)
    rec = fbp(project(vol, ang360), ang360)
    assert rec.shape == (2, N, N)
    assert _rmse(rec[1], 0.5 * PHANTOM, MASK) < 0.04
    np.testing.assert_allclose(angular_weights(ANGLES).sum(), np.pi)
    np.testing.assert_allclose(angular_weights(ang360).sum(), np.pi)  # each line is measured twice


def test_fbp_bad_input():
    """Bad data raises InputError; bad parameters raise ConfigError."""
    sino = project(PHANTOM, ANGLES)
    with pytest.raises(InputError, match="angles"):
        fbp(sino, ANGLES[:-1])
    with pytest.raises(InputError, match="projections"):
        fbp(np.zeros(5), [0.0])
    with pytest.raises(ConfigError, match="filter"):
        fbp(sino, ANGLES, filter="bogus")
    with pytest.raises(ConfigError, match="center"):
        fbp(sino, ANGLES, center=1e6)
    with pytest.raises(ConfigError, match="shape"):
        fbp(sino, ANGLES, shape=(0, 4))
    with pytest.raises(ConfigError, match="pad_factor"):
        fbp(sino, ANGLES, pad_factor=0.5)
    with pytest.raises(ConfigError, match="backend"):
        fbp(sino, ANGLES, backend="gpu")
    with pytest.raises(TypeError):
        fbp(sino, ANGLES, 64.0)  # options are keyword-only


def test_ram_lak_is_the_ramp_filter():
    sino = project(PHANTOM, ANGLES)
    np.testing.assert_array_equal(fbp(sino, ANGLES, filter="Ram-Lak"), fbp(sino, ANGLES, filter="ramp"))


def test_filter_centre_shift_is_a_subpixel_shift():
    """The centre phase ramp inside the filter moves the projections like shift_images does."""
    from tomoflow.recon.shift import shift_images

    cols = np.arange(N)
    sino = np.exp(-((cols[None, None, :] - 60.0 - 0.1 * np.arange(5)[:, None, None]) ** 2) / 40.0)
    moved = filter_projections(sino, filter="none", shift_px=2.5)
    ref = shift_images(sino, np.tile([0.0, 2.5], (5, 1)))
    np.testing.assert_allclose(moved, ref, atol=1e-5)
