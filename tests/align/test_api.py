"""The public alignment API (tomoflow.align): estimate_shifts, apply_shifts, the network methods."""

from __future__ import annotations

import numpy as np
import pytest

from tomoflow.align import apply_shifts, estimate_shifts
from tomoflow.align.gauge import fix_gauge
from tomoflow.align.resnet import default_weights_path
from tomoflow.errors import ConfigError, InputError
from tomoflow.recon import normalize_log
from tomoflow.sim import apply_jitter, gold_particle, random_jitter, simulate_scan

requires_weights = pytest.mark.skipif(
    not default_weights_path().is_file(), reason="the trained network weights are not shipped yet"
)


def test_shift_round_trip():
    """apply_shifts undoes the jitter: displace by +s, correct by the estimate s, get the original back
    (away from the borders, where displaced content left the field)."""
    rng = np.random.default_rng(0)
    img = rng.random((5, 40, 48)).astype(np.float32)
    from scipy.ndimage import gaussian_filter

    img = gaussian_filter(img, (0, 2, 2))
    s = random_jitter(5, 3.0, seed=1)
    back = apply_shifts(apply_jitter(img, s), s)
    np.testing.assert_allclose(back[:, 8:-8, 8:-8], img[:, 8:-8, 8:-8], atol=5e-3)


def test_unknown_method_and_bad_data():
    p = np.ones((20, 16, 16), np.float32)
    ang = np.linspace(0, 180, 20)
    with pytest.raises(ConfigError, match="alignment method"):
        estimate_shifts(p, ang, method="magic")
    with pytest.raises(InputError, match="angle"):
        estimate_shifts(p, ang[:-1], method="phase")
    bad = p.copy()
    bad[3, 2, 2] = np.nan
    with pytest.raises(InputError, match="NaN"):
        estimate_shifts(bad, ang, method="phase")
    with pytest.raises(InputError, match="too few"):
        estimate_shifts(p[:4], ang[:4], method="consistency")


def _scan(center_offset: float = 6.0, jitter: float = 8.0):
    """A noisy gold-particle scan on a non-square detector with the axis off centre."""
    ang = np.linspace(0, 180, 91)
    scan = simulate_scan(
        gold_particle((40, 64, 80), seed=3),
        ang,
        jitter_px=jitter,
        photons=5000,
        seed=4,
        center=(80 - 1) / 2 + center_offset,
    )
    return normalize_log(scan.projections, scan.flats, scan.darks), ang, fix_gauge(scan.shifts, angles_deg=ang).shifts


@pytest.mark.slow
@requires_weights
def test_network_methods_recover_known_jitter():
    """A scan the network never saw (noisy, non-square detector, axis 6 px off centre, ±8 px): the
    ResNet alone lands within about a pixel; the hybrid refines it to the accuracy of the consistency
    baseline run to convergence, both to a few hundredths of a pixel (0.34 px for both before the
    loops left out what their corrections pull in from beyond the detector)."""
    p, ang, truth = _scan()

    def rmse(res):
        return float(np.sqrt(np.mean((np.asarray(res.shifts) - truth) ** 2)))

    resnet = estimate_shifts(p, ang, method="resnet", return_result=True)
    hybrid = estimate_shifts(p, ang, method="hybrid", return_result=True)
    consistency = estimate_shifts(p, ang, method="consistency", return_result=True)
    assert rmse(resnet) < 1.5, rmse(resnet)
    assert rmse(hybrid) < 0.1 and rmse(consistency) < 0.1, (rmse(hybrid), rmse(consistency))  # 0.009, 0.014
    assert rmse(hybrid) <= rmse(consistency) + 0.02, (rmse(hybrid), rmse(consistency))
    assert hybrid.quality.shape == (91,) and np.isfinite(hybrid.center)
