"""simulate_scan: shapes, ground truth, flat/dark normalisation recovers the jittered line integrals,
noise statistics and parameter checks."""

from __future__ import annotations

import numpy as np
import pytest

from tomoflow.errors import ConfigError, InputError
from tomoflow.recon import project
from tomoflow.sim.jitter import apply_jitter
from tomoflow.sim.phantoms import gold_particle
from tomoflow.sim.scan import SyntheticScan, simulate_scan

ANGLES = np.linspace(0.0, 180.0, 24, endpoint=False)


@pytest.fixture(scope="module")
def phantom() -> np.ndarray:
    return gold_particle((8, 32, 32), seed=1, n_satellites=1)


def _normalise(scan: SyntheticScan) -> np.ndarray:
    dark = scan.darks.mean(axis=0)
    flat = scan.flats.mean(axis=0)
    return -np.log((scan.projections - dark) / (flat - dark))


def test_shapes_and_dtypes(phantom):
    scan = simulate_scan(phantom, ANGLES, jitter_px=1.0, n_flats=3, n_darks=2, seed=0)
    assert scan.projections.shape == (24, 8, 32) and scan.projections.dtype == np.float32
    assert scan.flats.shape == (3, 8, 32) and scan.flats.dtype == np.float32
    assert scan.darks.shape == (2, 8, 32) and scan.darks.dtype == np.float32
    assert scan.shifts.shape == (24, 2)
    assert scan.line_integrals.shape == scan.ideal_line_integrals.shape == (24, 8, 32)
    assert scan.angles_deg.dtype == np.float64
    np.testing.assert_array_equal(scan.angles_deg, ANGLES)
    np.testing.assert_array_equal(scan.phantom, phantom)
    assert scan.center == pytest.approx(15.5)
    assert scan.n_angles == 24 and scan.detector_shape == (8, 32)
    assert scan.flat_field.shape == scan.dark_field.shape == (8, 32)


def test_noise_free_normalisation_recovers_jittered_line_integrals(phantom):
    scan = simulate_scan(phantom, ANGLES, jitter_px=1.5, seed=3)
    assert np.any(scan.shifts != 0)
    assert np.all(np.abs(scan.shifts) <= 1.5)
    np.testing.assert_allclose(_normalise(scan), scan.line_integrals, atol=2e-4)
    # ... and so does the pipeline's own normalisation kernel
    from tomoflow.recon.normalize import normalize_log

    np.testing.assert_allclose(normalize_log(scan.projections, scan.flats, scan.darks), scan.line_integrals, atol=2e-4)
    # the ground truth chain: ideal = project(phantom), measured = shift(ideal, shifts)
    np.testing.assert_allclose(scan.ideal_line_integrals, project(phantom, ANGLES), atol=1e-6)
    np.testing.assert_allclose(scan.line_integrals, apply_jitter(scan.ideal_line_integrals, scan.shifts), atol=1e-6)
    assert np.abs(scan.line_integrals - scan.ideal_line_integrals).max() > 0.05
    # raw counts look like a detector: dark + flat * transmission, flat field varies
    assert scan.projections.mean() < scan.flats.mean()
    assert scan.projections.min() > scan.darks.max()
    assert scan.darks.mean() == pytest.approx(100.0, rel=0.05)
    assert scan.flat_field.std() > 0


def test_no_jitter_and_explicit_shifts(phantom):
    still = simulate_scan(phantom, ANGLES, seed=0)
    np.testing.assert_array_equal(still.shifts, 0.0)
    np.testing.assert_array_equal(still.line_integrals, still.ideal_line_integrals)
    shifts = np.zeros((24, 2))
    shifts[:, 1] = 2.0
    moved = simulate_scan(phantom, ANGLES, shifts=shifts, seed=0)
    np.testing.assert_array_equal(moved.shifts, shifts)
    # content moved to larger column index by 2 (away from the detector edges)
    np.testing.assert_allclose(moved.line_integrals[:, :, 6:-2], still.line_integrals[:, :, 4:-4], atol=2e-3)
    flat = simulate_scan(phantom, ANGLES, jitter_px=2.0, jitter_vertical=False, seed=0)
    assert np.all(flat.shifts[:, 0] == 0) and np.any(flat.shifts[:, 1] != 0)


def test_center_is_passed_to_the_projector(phantom):
    scan = simulate_scan(phantom, ANGLES[:4], center=17.0, seed=0)
    assert scan.center == 17.0
    np.testing.assert_allclose(scan.ideal_line_integrals, project(phantom, ANGLES[:4], center=17.0), atol=1e-6)


def test_seeded_and_reproducible(phantom):
    kw = dict(jitter_px=1.0, photons=200, noise={"gaussian": 0.01, "salt_and_pepper": 0.001})
    a = simulate_scan(phantom, ANGLES, seed=7, **kw)
    b = simulate_scan(phantom, ANGLES, seed=7, **kw)
    c = simulate_scan(phantom, ANGLES, seed=8, **kw)
    for name in ("projections", "flats", "darks", "shifts"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.projections, c.projections)
    # switching noise on does not change the jitter drawn from the same seed
    np.testing.assert_array_equal(a.shifts, simulate_scan(phantom, ANGLES, seed=7, jitter_px=1.0).shifts)
    assert a.params["seed"] == 7 and a.params["photons"] == 200.0


def test_photon_noise_statistics(phantom):
    photons, level = 400.0, 1000.0
    scan = simulate_scan(phantom, ANGLES[:2], photons=photons, flat_level=level, n_flats=50, seed=1)
    rel = (scan.flats - scan.dark_field[None]) / scan.flat_field[None]  # ~ N / (photons * F) per pixel
    expect = 1.0 / np.sqrt(photons * scan.flat_field / level)
    assert rel.mean() == pytest.approx(1.0, abs=0.01)
    assert np.mean(rel.std(axis=0) / expect) == pytest.approx(1.0, rel=0.05)
    # noisy normalised projections are still close to the truth on average
    err = _normalise(scan) - scan.line_integrals
    assert abs(err.mean()) < 0.02 and err.std() < 0.2


def test_gaussian_and_salt_and_pepper_noise(phantom):
    scan = simulate_scan(phantom, ANGLES, noise={"gaussian": 0.02}, flat_level=1000.0, n_darks=20, seed=2)
    assert (scan.darks - scan.dark_field[None]).std() == pytest.approx(20.0, rel=0.1)
    clean = simulate_scan(phantom, ANGLES, seed=2)
    sp = simulate_scan(phantom, ANGLES, noise={"salt_and_pepper": 0.05}, seed=2)
    changed = sp.projections != clean.projections
    n_angles, rows, cols = clean.projections.shape
    assert changed.sum() == n_angles * round(0.05 * rows * cols)  # the same fraction of every projection
    np.testing.assert_array_equal(sp.flats, clean.flats)


def test_streamed_blocks_equal_the_scan_made_at_once(phantom):
    """Every random component has its own stream per projection: blocks of any size give the same
    projections as the whole scan, so writers can stream a scan of any size."""
    from tomoflow.sim.scan import ScanSimulator

    kw = dict(jitter_px=2.0, photons=500.0, noise={"gaussian": 0.01, "salt_and_pepper": 0.02}, seed=5)
    whole = simulate_scan(phantom, ANGLES, **kw)
    sim = ScanSimulator(phantom, ANGLES, **kw)
    streamed = np.concatenate([sim.raw[a : a + 7] for a in range(0, len(ANGLES), 7)])
    np.testing.assert_array_equal(streamed, whole.projections)
    np.testing.assert_array_equal(sim.raw[3], whole.projections[3])
    np.testing.assert_array_equal(sim.flats, whole.flats)


@pytest.mark.parametrize(
    "kw",
    [
        {"noise": {"speckle": 0.1}},
        {"noise": {"gaussian": -1.0}},
        {"noise": {"salt_and_pepper": 0.9}},
        {"photons": 0},
        {"n_flats": -1},
        {"flat_level": 0.0},
        {"dark_level": -1.0},
        {"jitter_px": -0.5},
        {"flat_variation": 0.9},
    ],
)
def test_parameter_checks(phantom, kw):
    with pytest.raises(ConfigError):
        simulate_scan(phantom, ANGLES[:2], **kw)


def test_input_checks(phantom):
    with pytest.raises(InputError):
        simulate_scan(phantom[0], ANGLES)
    with pytest.raises(InputError):
        simulate_scan(phantom, [0.0, np.nan])
    with pytest.raises(InputError):
        simulate_scan(phantom, ANGLES, shifts=np.zeros((3, 2)))
