import numpy as np
import pytest

from tomoflow.errors import ConfigError, InputError
from tomoflow.recon import project
from tomoflow.recon.center import center_sweep, find_center, find_center_pair, find_center_vo
from tomoflow.recon.fbp import fbp
from tomoflow.testing import disk_phantom

VOL = disk_phantom((4, 96, 96))


@pytest.mark.parametrize("true_center", [47.5, 41.3, 53.77])
def test_vo_finds_known_offset_within_quarter_pixel(true_center):
    ang = np.linspace(0, 180, 180, endpoint=False)
    p = project(VOL, ang, center=true_center)
    p += np.random.default_rng(0).normal(0, 0.3, p.shape).astype(np.float32)
    assert find_center_vo(p, ang) == pytest.approx(true_center, abs=0.25)


@pytest.mark.parametrize("true_center", [47.5, 44.2, 50.61])
def test_pair_finds_known_offset_within_quarter_pixel(true_center):
    ang = np.linspace(0, 180, 181)
    p = project(VOL, ang, center=true_center)
    p += np.random.default_rng(1).normal(0, 0.3, p.shape).astype(np.float32)
    assert find_center(p, ang, method="pair") == pytest.approx(true_center, abs=0.25)


def test_pair_needs_opposite_projections():
    ang = np.linspace(0, 90, 20)
    with pytest.raises(InputError, match="180 degrees"):
        find_center_pair(project(VOL, ang), ang)


def test_center_bad_input():
    ang = np.linspace(0, 180, 30, endpoint=False)
    p = project(VOL, ang)
    with pytest.raises(ConfigError, match="method"):
        find_center(p, ang, method="guess")
    with pytest.raises(ConfigError, match="search_radius"):
        find_center_vo(p, ang, search_radius=-1)
    with pytest.raises(InputError, match="angle count"):
        find_center(p, ang[1:])
    bad = p.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        find_center(bad, ang)


@pytest.mark.slow
def test_tooth_centre_and_sweep_agree(tooth_line_integrals):
    """On the real APS tooth scan the automatic centre is where the sweep is sharpest, and a centre
    a few pixels off is visibly worse."""
    p, theta = tooth_line_integrals
    c = find_center(p, theta)
    assert 280 < c < 310  # the axis sits ~24 px left of the detector centre (319.5)
    centers = np.arange(c - 6, c + 6.01, 0.5)
    _, metric = center_sweep(p, theta, centers, rows=0)
    assert abs(centers[int(np.argmax(metric))] - c) <= 1.0
    assert metric.max() - metric[0] > 0.02 * abs(metric.max())
    # A reconstruction at the auto centre is mostly non-negative; 5 px off it is not.
    good = fbp(p[:, 0], theta, center=c)
    bad = fbp(p[:, 0], theta, center=c + 5)
    assert (good < -0.002).mean() < (bad < -0.002).mean()
