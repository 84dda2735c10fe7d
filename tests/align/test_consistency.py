"""Classical alignment baselines on small simulated scans with known jitter.

Residuals are compared after gauge fixing (``fix_gauge(estimate - truth, angles_deg=...)``): the mean
``dy``, and the constant and object-translation sinusoid of ``dx``, are unobservable (see
:mod:`tomoflow.align.gauge`). Both scans have the rotation axis 6 px off the detector centre; the gold
scan has a non-square detector (48 rows x 80 columns).
"""

import numpy as np
import pytest

from tomoflow import sim
from tomoflow.align.consistency import AlignResult, align_consistency, align_phase
from tomoflow.align.gauge import fix_gauge
from tomoflow.errors import ConfigError, InputError
from tomoflow.recon import normalize_log


def _scan(phantom, n_angles, jitter_px, **kwargs):
    ang = np.linspace(0.0, 180.0, n_angles)
    center = (phantom.shape[2] - 1) / 2.0 + 6.0
    scan = sim.simulate_scan(phantom, ang, jitter_px=jitter_px, seed=2, center=center, **kwargs)
    return normalize_log(scan.projections, scan.flats, scan.darks), ang, scan.shifts, center


@pytest.fixture(scope="module")
def pc_gold_scan():
    """Gold particle, detector 48 x 80, axis at 45.5 (centred: 39.5), 91 angles, +-5 px jitter, no noise."""
    return _scan(sim.gold_particle((48, 80, 80), seed=1), 91, 5.0)


@pytest.fixture(scope="module")
def pc_cathode_scan():
    """Cathode particle with pores and cracks, 48 x 64 detector, axis 6 px off, photon noise (500/px)."""
    return _scan(sim.cathode_particle((48, 64, 64), seed=1, radius=0.6), 91, 5.0, photons=500)


@pytest.fixture(scope="module")
def pc_gold_aligned(pc_gold_scan):
    p, ang, _, _ = pc_gold_scan
    entries = []
    result = align_consistency(p, ang, callback=entries.append)
    return result, entries


def _residual(result, truth, ang):
    """Gauge-fixed residual RMSE (px, both axes) and the gauge of the difference."""
    g = fix_gauge(result.shifts - truth, angles_deg=ang)
    return float(np.sqrt(np.mean(np.sum(g.shifts**2, axis=1)))), g


def _true_center(truth, ang, center):
    """Axis of the raw data corrected with the gauge-fixed truth: the stage axis + the jitter's constant."""
    return fix_gauge(truth, angles_deg=ang, center=center).center


def test_consistency_recovers_jitter_off_centre_axis_non_square(pc_gold_scan, pc_gold_aligned):
    p, ang, truth, center = pc_gold_scan
    result, _ = pc_gold_aligned
    assert isinstance(result, AlignResult) and result.method == "consistency"
    assert result.shifts.shape == (91, 2) and result.shifts.dtype == np.float64
    rmse, _ = _residual(result, truth, ang)
    assert rmse < 0.15  # measured 0.04 px; jitter RMS 4.1 px
    assert result.center == pytest.approx(_true_center(truth, ang, center), abs=0.2)
    assert result.converged and result.n_iter == len(result.log) < 30
    assert result.quality.shape == (91,) and np.all((result.quality > 0.9) & (result.quality <= 1.0))


def test_consistency_output_is_gauge_fixed(pc_gold_aligned):
    result, _ = pc_gold_aligned
    np.testing.assert_allclose(result.shifts.mean(axis=0), [0.0, 0.0], atol=1e-9)
    ang = np.linspace(0.0, 180.0, 91)
    again = fix_gauge(result.shifts, angles_deg=ang)
    np.testing.assert_allclose(again.shifts, result.shifts, atol=1e-9)


def test_convergence_log(pc_gold_aligned):
    result, entries = pc_gold_aligned
    assert entries == result.log  # the callback saw every iteration
    keys = {"iteration", "max_update_px", "rms_update_px", "center", "seconds"}
    assert all(set(e) == keys for e in result.log)
    assert [e["iteration"] for e in result.log] == list(range(1, result.n_iter + 1))
    steps = [e["max_update_px"] for e in result.log]
    assert steps[0] > 2.0  # the first iteration takes the bulk of the jitter
    assert all(b <= 1.5 * a for a, b in zip(steps, steps[1:]))  # monotone-ish
    assert steps[-1] < 0.01 <= steps[-2]
    assert all(e["rms_update_px"] <= e["max_update_px"] + 1e-12 and e["seconds"] > 0 for e in result.log)


def test_phase_baseline_one_pass(pc_gold_scan):
    p, ang, truth, center = pc_gold_scan
    result = align_phase(p, ang)
    assert result.method == "phase" and result.n_iter == 1 and result.converged and len(result.log) == 1
    rmse, _ = _residual(result, truth, ang)
    assert rmse < 0.5  # measured 0.11 px
    assert result.center == pytest.approx(_true_center(truth, ang, center), abs=0.3)
    np.testing.assert_allclose(result.shifts.mean(axis=0), [0.0, 0.0], atol=1e-9)


def test_noisy_cathode_both_methods(pc_cathode_scan):
    p, ang, truth, center = pc_cathode_scan
    one = align_phase(p, ang)
    full = align_consistency(p, ang)
    assert _residual(one, truth, ang)[0] < 0.6  # measured 0.16 px
    assert _residual(full, truth, ang)[0] < 0.15  # measured 0.04 px
    assert full.converged
    assert full.center == pytest.approx(_true_center(truth, ang, center), abs=0.2)


def test_warm_start_from_a_coarse_estimate(pc_gold_scan, pc_gold_aligned):
    """A coarse start (what the ResNet gives the hybrid) converges in fewer iterations, to the same answer."""
    p, ang, truth, center = pc_gold_scan
    rng = np.random.default_rng(5)
    coarse = truth + rng.uniform(-0.5, 0.5, size=truth.shape) + [3.0, -2.0]  # plus an arbitrary common shift
    result = align_consistency(p, ang, init_shifts=coarse)
    assert result.converged and result.n_iter < pc_gold_aligned[0].n_iter
    assert _residual(result, truth, ang)[0] < 0.15
    assert result.center == pytest.approx(_true_center(truth, ang, center), abs=0.2)


def test_held_centre_keeps_the_common_shift(pc_gold_scan):
    """With the stage axis known and held, the constant part of dx is the jitter's own."""
    p, ang, truth, center = pc_gold_scan
    result = align_consistency(p, ang, center=center, refine_center=False, n_iter=15)
    assert result.center == center
    rmse, g = _residual(result, truth, ang)
    assert rmse < 0.15
    assert abs(g.common_dx) < 0.3  # the constant of dx matches the truth's
    assert result.shifts[:, 0].mean() == pytest.approx(0.0, abs=1e-9)


def test_iteration_cap_and_explicit_centre(pc_gold_scan):
    p, ang, _, center = pc_gold_scan
    result = align_consistency(p, ang, center=center + 1.0, n_iter=2, recon_iterations=4)
    assert result.n_iter == 2 and not result.converged and len(result.log) == 2
    assert result.log[0]["center"] != center + 1.0  # refined inside the loop


@pytest.mark.parametrize("fn", [align_consistency, align_phase])
def test_bad_inputs(pc_gold_scan, fn):
    p, ang, _, _ = pc_gold_scan
    bad = p.copy()
    bad[3, 5, 7] = np.nan
    with pytest.raises(InputError, match="NaN"):
        fn(bad, ang)
    with pytest.raises(InputError, match="angle count mismatch"):
        fn(p, ang[:-1])
    with pytest.raises(InputError, match="too few angles"):
        fn(p[:5], ang[:5])
    with pytest.raises(InputError, match="too small"):
        fn(p[:, :3, :3], ang)
    with pytest.raises(InputError, match=r"\(angle, row, col\)"):
        fn(p[0], ang[:1])
    with pytest.raises(ConfigError, match="center"):
        fn(p, ang, center="middle")
    with pytest.raises(ConfigError, match="center"):
        fn(p, ang, center=1e6)
    with pytest.raises(ConfigError, match="recon_iterations"):
        fn(p, ang, recon_iterations=0)
    with pytest.raises(ConfigError, match="upsample"):
        fn(p, ang, upsample=0)


def test_bad_loop_parameters(pc_gold_scan):
    p, ang, _, _ = pc_gold_scan
    for kwargs, match in [
        ({"n_iter": 0}, "n_iter"),
        ({"tol": 0.0}, "tol"),
        ({"max_step": -1.0}, "max_step"),
        ({"warm_iterations": 0}, "warm_iterations"),
        ({"callback": 3}, "callback"),
    ]:
        with pytest.raises(ConfigError, match=match):
            align_consistency(p, ang, **kwargs)
    with pytest.raises(InputError, match="init_shifts"):
        align_consistency(p, ang, init_shifts=np.zeros((90, 2)))
    with pytest.raises(InputError, match="init_shifts"):
        align_consistency(p, ang, init_shifts=np.full((91, 2), np.nan))


@pytest.fixture(scope="module")
def pc_gold_sp40_scan():
    """The gold scan with 40 % salt-and-pepper (zero-count pixels -log-clipped at 13.8, saturated ones)."""
    return _scan(sim.gold_particle((48, 80, 80), seed=1), 91, 5.0, noise={"salt_and_pepper": 0.4})


def test_salt_and_pepper_is_removed_before_registration(pc_gold_sp40_scan):
    """At 40 % salt-and-pepper the zingers dominate every correlation of the raw data (nothing found);
    with impulse removal (default) both registration methods recover the jitter."""
    p, ang, truth, center = pc_gold_sp40_scan
    raw = align_phase(p, ang, despeckle=False)
    assert _residual(raw, truth, ang)[0] > 3.0  # no shift found: the residual is the jitter itself
    one = align_phase(p, ang)
    full = align_consistency(p, ang)
    assert _residual(one, truth, ang)[0] < 1.0
    assert _residual(full, truth, ang)[0] < 0.4
    assert full.center == pytest.approx(_true_center(truth, ang, center), abs=0.5)


def test_measured_fraction_and_fill():
    """What a correction by ``-shifts`` pulls in from beyond the detector: 0 outside, a fraction on the
    boundary pixel, continuous in the shift; filled from the reprojection."""
    from tomoflow.align.consistency import fill_missing, measured_fraction

    assert measured_fraction((2, 8, 6), np.zeros((2, 2))) is None
    m = measured_fraction((2, 8, 6), [[-2.5, 0.0], [2.5, 0.25]])
    assert m.shape == (2, 8, 6) and m.dtype == np.float32
    np.testing.assert_allclose(m[0, :, 0], [0, 0, 0.5, 1, 1, 1, 1, 1])  # content moved down: top rows unknown
    np.testing.assert_allclose(m[1, :, 2], [1, 1, 1, 1, 1, 0.5, 0, 0])  # moved up: bottom rows unknown
    np.testing.assert_allclose(m[1, 0], [1, 1, 1, 1, 1, 0.75])  # a quarter pixel off the right edge
    a = measured_fraction((1, 8, 6), [[1.30, -0.70]])
    b = measured_fraction((1, 8, 6), [[1.31, -0.71]])
    assert np.abs(a - b).max() <= 0.0101  # no jump when a shift crosses a pixel boundary
    data, rep = np.ones((2, 8, 6), np.float32), np.zeros((2, 8, 6), np.float32)
    np.testing.assert_allclose(fill_missing(data, rep, m), m)
    assert fill_missing(data, rep, None) is data


@pytest.mark.slow
def test_consistency_aligns_a_sample_that_fills_the_field(monkeypatch):
    """A sample as wide and as tall as the field: the loop leaves what its corrections pull in from
    beyond the detector out of the reference and the registration, and gets far closer than the
    classical loop, whose replicated edges disagree with the reprojection in proportion to each shift."""
    import tomoflow.align.consistency as consistency

    p, ang, truth, _ = _scan(sim.cathode_particle((40, 56, 56), seed=3, radius=0.9), 61, 4.0)
    err, _ = _residual(align_consistency(p, ang), truth, ang)
    monkeypatch.setattr(consistency, "measured_fraction", lambda shape, shifts: None)  # the classical loop
    err_classical, _ = _residual(align_consistency(p, ang), truth, ang)
    assert err < 0.12 and err_classical > 1.6 * err, (err, err_classical)  # measured: 0.08 vs 0.19 px
