"""The hybrid's refinement (tomoflow.align.hybrid.refine) from a given coarse estimate: no network
needed, so these run without the shipped weights."""

import numpy as np
import pytest

from tomoflow import sim
from tomoflow.align.consistency import AlignResult
from tomoflow.align.gauge import fix_gauge
from tomoflow.align.hybrid import refine
from tomoflow.errors import ConfigError
from tomoflow.recon import normalize_log


@pytest.fixture(scope="module")
def wide_scan():
    """Gold particle with empty margins on a 40 x 128 detector (wide enough for the binned stage),
    axis 5 px off centre, 91 angles, +-6 px jitter, no noise; a coarse estimate = truth + 0.8 px
    noise, centre 0.4 px off. (A sample filling the detector's rows leaves ``dy`` poorly observable:
    jitter moves content in and out of the field.)"""
    ang = np.linspace(0.0, 180.0, 91)
    center = (128 - 1) / 2.0 + 5.0
    vol = np.zeros((40, 128, 128), np.float32)
    vol[8:32, 16:112, 16:112] = sim.gold_particle((24, 96, 96), seed=2)
    scan = sim.simulate_scan(vol, ang, jitter_px=6.0, seed=3, center=center)
    p = normalize_log(scan.projections, scan.flats, scan.darks)
    g = fix_gauge(scan.shifts, angles_deg=ang, center=center)
    start = np.asarray(g.shifts) + np.random.default_rng(1).normal(0.0, 0.8, g.shifts.shape)
    coarse = AlignResult(
        shifts=start,
        center=float(g.center) + 0.4,
        method="resnet",
        log=[{"iteration": 1, "max_update_px": 5.0, "rms_update_px": 2.0}],
    )
    return p, ang, np.asarray(scan.shifts), coarse


def _rmse(shifts, truth, ang):
    g = fix_gauge(np.asarray(shifts) - truth, angles_deg=ang)
    return float(np.sqrt(np.mean(np.sum(g.shifts**2, axis=1))))


@pytest.mark.slow
def test_refine_runs_binned_then_full_resolution(wide_scan):
    p, ang, truth, coarse = wide_scan
    res = refine(p, ang, coarse)
    stages = [e.get("binning", 1.0) for e in res.log[1:]]
    assert res.method == "hybrid" and res.log[0] == coarse.log[0]
    assert stages[0] == 2.0 and stages[-1] == 1.0 and stages == sorted(stages, reverse=True)
    assert [e["iteration"] for e in res.log] == list(range(1, len(res.log) + 1))
    assert res.n_iter == len(res.log)
    assert _rmse(res.shifts, truth, ang) < 0.05 and _rmse(coarse.shifts, truth, ang) > 0.8
    # binned-stage updates are reported in full-resolution pixels, centres on the full detector
    assert all(abs(e["center"] - res.center) < 2.0 for e in res.log[1:])


@pytest.mark.slow
def test_refine_without_binning_and_bad_options(wide_scan):
    p, ang, truth, coarse = wide_scan
    res = refine(p, ang, coarse, binning=1, n_iter=4)
    assert all("binning" not in e for e in res.log) and res.n_iter <= 5
    assert _rmse(res.shifts, truth, ang) < 0.1
    with pytest.raises(ConfigError, match="binning"):
        refine(p, ang, coarse, binning=0)
    with pytest.raises(ConfigError, match="coarse_tol"):
        refine(p, ang, coarse, coarse_tol=-1.0)


def test_network_pairs_fill_what_the_correction_pulled_in():
    """Once the estimate moves the stack, the pairs the network reads carry the reprojection where the
    move pulled content in from beyond the detector, and the moved data everywhere else."""
    from tomoflow.align.consistency import _corrected, measured_fraction
    from tomoflow.align.hybrid import NetworkState, network_pairs
    from tomoflow.align.resnet import INPUT_SIZE

    ang = np.linspace(0.0, 180.0, 6)
    proj = sim.simulate_scan(sim.cathode_particle((INPUT_SIZE,) * 3, seed=1, radius=0.85), ang).line_integrals
    shifts = np.array([[3.0, -2.5], [0, 0], [-4.0, 0], [0, 6.0], [1.2, 1.2], [0, 0]])
    state = NetworkState(stack=proj, scale=np.ones(2), center=(INPUT_SIZE - 1) / 2.0, shifts=shifts)
    data, rep = network_pairs(state, ang, recon_iterations=2)
    m = measured_fraction(proj.shape, shifts)
    moved = np.asarray(_corrected(proj, shifts))
    np.testing.assert_allclose(data[m == 0], rep[m == 0], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(data[m == 1], moved[m == 1], rtol=1e-6, atol=1e-6)
    assert (m == 0).sum() > 1000 and np.abs(moved - rep)[m == 0].max() > 0.1  # the band was replaced
    # no move, nothing filled: the first pass (and the training pairs) read the data as measured
    data0, _ = network_pairs(
        NetworkState(stack=proj, scale=np.ones(2), center=state.center, shifts=np.zeros((6, 2))),
        ang,
        recon_iterations=2,
    )
    np.testing.assert_array_equal(data0, proj)
