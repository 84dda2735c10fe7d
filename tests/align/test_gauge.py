"""Gauge fixing: what a common shift means (centre change, object translation) and the checks."""

import numpy as np
import pytest

from tomoflow.align.gauge import GaugeResult, fix_gauge
from tomoflow.errors import ConfigError, InputError
from tomoflow.recon import fbp, project, shift_images
from tomoflow.testing import ellipse_slice

ANGLES = np.linspace(0.0, 180.0, 90, endpoint=False)


def test_means_removed_and_folded_into_the_centre():
    rng = np.random.default_rng(0)
    shifts = rng.uniform(-5, 5, size=(30, 2)) + [1.5, -2.0]
    g = fix_gauge(shifts, center=40.0)
    assert isinstance(g, GaugeResult)
    np.testing.assert_allclose(g.shifts.mean(axis=0), [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(g.shifts, shifts - shifts.mean(axis=0))
    assert g.common_dy == pytest.approx(shifts[:, 0].mean())
    assert g.common_dx == pytest.approx(shifts[:, 1].mean())
    assert g.center == pytest.approx(40.0 + shifts[:, 1].mean())
    assert g.object_shift is None
    assert fix_gauge(shifts).center is None
    assert shifts[0, 0] != g.shifts[0, 0]  # the input is not modified in place ...
    np.testing.assert_allclose(fix_gauge(shifts).shifts, g.shifts)  # ... and gives the same answer again


def test_a_common_horizontal_shift_is_a_centre_change():
    """Every projection displaced by c columns, reconstructed about centre + c, is the undisplaced scan."""
    vol = ellipse_slice(64)[None].astype(np.float32)
    center = 33.0
    proj = project(vol, ANGLES, center=center)
    c = 2.6
    moved = shift_images(proj, np.tile([0.0, c], (ANGLES.size, 1)))
    g = fix_gauge(np.tile([0.0, c], (ANGLES.size, 1)), center=center)
    np.testing.assert_allclose(g.shifts, 0.0, atol=1e-12)
    ref = fbp(proj, ANGLES, center=center)
    same = fbp(moved, ANGLES, center=g.center)
    wrong = fbp(moved, ANGLES, center=center)
    inside = ellipse_slice(64) > 0  # the object, away from the circle's edge
    err_same = np.abs(same - ref)[0][inside].mean()
    err_wrong = np.abs(wrong - ref)[0][inside].mean()
    assert err_same < 0.1 * err_wrong


def test_object_translation_is_the_sinusoid_of_dx():
    """A translated object projects as dx = tx cos(theta) + ty sin(theta): removed, and reported."""
    vol = np.stack([ellipse_slice(64)] * 4)
    ty, tx = 3.0, -4.0
    moved_vol = np.roll(np.roll(vol, 3, axis=1), -4, axis=2)
    p0 = project(vol, ANGLES)
    p1 = project(moved_vol, ANGLES)
    from tomoflow.align.phase import phase_correlate

    found = phase_correlate(p1, p0).shifts
    found[:, 0] = 0.0  # a slab of identical slices: no vertical information
    th = np.deg2rad(ANGLES)
    np.testing.assert_allclose(found[:, 1], tx * np.cos(th) + ty * np.sin(th), atol=0.05)
    g = fix_gauge(found + [0.7, 1.2], angles_deg=ANGLES, center=31.5)
    assert g.object_shift == pytest.approx((ty, tx), abs=0.05)
    assert g.common_dx == pytest.approx(1.2, abs=0.05)
    assert g.common_dy == pytest.approx(0.7, abs=0.05)
    assert g.center == pytest.approx(32.7, abs=0.05)
    assert np.abs(g.shifts).max() < 0.05


def test_sinusoid_fit_keeps_other_jitter():
    rng = np.random.default_rng(1)
    jitter = rng.uniform(-3, 3, size=(ANGLES.size, 2))
    g = fix_gauge(jitter, angles_deg=ANGLES)
    th = np.deg2rad(ANGLES)
    basis = np.stack([np.ones_like(th), np.cos(th), np.sin(th)], axis=1)
    # what is left is orthogonal to the gauge (constant, cos, sin) ...
    np.testing.assert_allclose(basis.T @ g.shifts[:, 1], 0.0, atol=1e-9)
    assert g.shifts[:, 0].mean() == pytest.approx(0.0, abs=1e-12)
    # ... and a second pass removes nothing more
    again = fix_gauge(g.shifts, angles_deg=ANGLES)
    np.testing.assert_allclose(again.shifts, g.shifts, atol=1e-12)


def test_errors():
    with pytest.raises(InputError, match=r"\(n, 2\)"):
        fix_gauge(np.zeros((5, 3)))
    with pytest.raises(InputError, match=r"\(n, 2\)"):
        fix_gauge(np.zeros(4))
    with pytest.raises(InputError, match=r"\(n, 2\)"):
        fix_gauge(np.zeros((0, 2)))
    with pytest.raises(InputError, match="NaN"):
        fix_gauge(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(InputError, match="angle count mismatch"):
        fix_gauge(np.zeros((5, 2)), angles_deg=np.arange(4.0))
    with pytest.raises(ConfigError, match="center"):
        fix_gauge(np.zeros((5, 2)), center=float("nan"))
