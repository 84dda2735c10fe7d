"""Multiscale pair simulator: determinism, exact transform, prior, validation, store round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from tomoflow.errors import ConfigError, InputError, StoreError
from tomoflow.io import VolumeStore, open_volume
from tomoflow.io.synthetic import SIMULATION_TRUTH, write_multiscale_pair
from tomoflow.sim.multiscale import (
    PHASES,
    MultiscalePair,
    PorousSample,
    compose_matrix,
    porous_sample,
    rasterize_sample,
    rotation_from_euler_deg,
    simulate_multiscale_pair,
)

# Small pair: LFOV 16^3 x 4 µm (64 µm field), HR 24^3 x 1 µm.
SMALL = dict(hr_shape=(24, 24, 24), hr_spacing_um=1.0, lfov_shape=(16, 16, 16), lfov_spacing_um=4.0)


@pytest.fixture(scope="module")
def pair() -> MultiscalePair:
    return simulate_multiscale_pair(**SMALL, seed=5)


def _centroid_phys(vol: np.ndarray, spacing: float) -> np.ndarray:
    idx = np.indices(vol.shape).reshape(3, -1)
    w = vol.reshape(-1).astype(np.float64)
    return (idx @ w) / w.sum() * spacing


def _moments_phys(vol: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    idx = np.indices(vol.shape).reshape(3, -1) * spacing
    w = vol.reshape(-1).astype(np.float64)
    c = (idx @ w) / w.sum()
    d = idx - c[:, None]
    return c, (d * w) @ d.T / w.sum()


# ----------------------------------------------------------------------------- basics
@pytest.mark.parametrize("family", ["cathode", "foam"])
def test_deterministic_by_seed(family):
    a = simulate_multiscale_pair(**SMALL, family=family, seed=3)
    b = simulate_multiscale_pair(**SMALL, family=family, seed=3)
    c = simulate_multiscale_pair(**SMALL, family=family, seed=4)
    for name in ("hr", "lfov", "true_matrix", "prior_matrix", "hr_stage_position_um", "lfov_stage_position_um"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.phase_fractions == b.phase_fractions
    assert not np.array_equal(a.lfov, c.lfov)
    assert not np.allclose(a.true_matrix, c.true_matrix)


def test_shapes_dtypes_spacings_and_dof(pair):
    assert pair.hr.shape == (24, 24, 24) and pair.hr.dtype == np.float32
    assert pair.lfov.shape == (16, 16, 16) and pair.lfov.dtype == np.float32
    assert pair.hr_spacing_um == (1.0, 1.0, 1.0) and pair.lfov_spacing_um == (4.0, 4.0, 4.0)
    assert np.all(np.isfinite(pair.hr)) and np.all(np.isfinite(pair.lfov))
    assert np.all(np.abs(pair.rotation_deg) <= 3.0) and np.all(np.abs(pair.scale - 1) <= 0.02)
    m = pair.true_matrix
    np.testing.assert_array_equal(m[3], [0, 0, 0, 1])
    np.testing.assert_allclose(m[:3, :3], rotation_from_euler_deg(pair.rotation_deg) @ np.diag(pair.scale), atol=1e-15)
    np.testing.assert_allclose(m @ [*pair.hr_center_um, 1.0], [*pair.translation_um, 1.0], atol=1e-12)
    # the ROI centre is within max_translation LFOV voxels of the LFOV centre
    assert np.all(np.abs(pair.translation_um - pair.lfov_center_um) <= 3.0 * 4.0 + 1e-9)
    assert set(pair.phase_fractions) == set(PHASES)
    assert sum(pair.phase_fractions.values()) == pytest.approx(1.0)
    assert 0.0 < pair.pore_fraction < 0.3 and pair.porosity >= pair.pore_fraction
    json.dumps(pair.params)  # JSON-able


def test_rotation_convention():
    # R_z rotates y towards x, R_y x towards z, R_x z towards y; R = R_z @ R_y @ R_x
    np.testing.assert_allclose(rotation_from_euler_deg((90, 0, 0)) @ [0, 1, 0], [0, 0, 1], atol=1e-15)
    np.testing.assert_allclose(rotation_from_euler_deg((0, 90, 0)) @ [0, 0, 1], [1, 0, 0], atol=1e-15)
    np.testing.assert_allclose(rotation_from_euler_deg((0, 0, 90)) @ [1, 0, 0], [0, 1, 0], atol=1e-15)
    r = rotation_from_euler_deg((7, -3, 11))
    rz, ry, rx = (
        rotation_from_euler_deg((7, 0, 0)),
        rotation_from_euler_deg((0, -3, 0)),
        rotation_from_euler_deg((0, 0, 11)),
    )
    np.testing.assert_allclose(r, rz @ ry @ rx)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-15)
    m = compose_matrix((7, -3, 11), (1.01, 0.99, 1.02), (5.0, 6.0, 7.0), (1.0, 2.0, 3.0))
    np.testing.assert_allclose(m @ [1.0, 2.0, 3.0, 1.0], [5.0, 6.0, 7.0, 1.0], atol=1e-14)


@pytest.mark.parametrize("family", ["cathode", "foam"])
def test_sample_families(family):
    s = porous_sample(family, size_um=64.0, center_um=32.0, seed=1)
    assert s.family == family
    counts = np.bincount(s.phases, minlength=4)
    assert counts[1] >= 1 and counts[2] >= 1 and counts[3] >= 20
    pores = s.phases == 3
    r = s.semi_axes_um[pores, 0]
    assert r.min() >= 1.0 - 1e-12 and r.max() <= (5.0 if family == "cathode" else 10.0) + 1e-12


def test_rasterize_partial_volume_and_phases():
    # one sphere of radius 5 µm: the sum of the supersampled voxels approximates its volume
    s = PorousSample.spheres([[10.3, 9.7, 10.1]], 5.0, 1.0, phases=3)
    vol, ph = rasterize_sample(s, (20, 20, 20), 1.0, supersample=4, return_phases=True)
    assert vol.sum() == pytest.approx(4 / 3 * np.pi * 125, rel=0.01)
    np.testing.assert_allclose(ph.sum(axis=0), 1.0, atol=1e-6)
    np.testing.assert_allclose(ph[3], vol, atol=1e-6)
    # painting order: a later primitive overwrites an earlier one
    two = PorousSample.spheres([[10, 10, 10], [10, 10, 10]], [6.0, 3.0], [1.0, 0.0], phases=[1, 3])
    v2 = rasterize_sample(two, 20, 1.0)
    assert v2[10, 10, 10] == 0.0 and v2[10, 10, 15] == 1.0
    with pytest.raises(InputError):
        rasterize_sample(s, 8, 1.0, np.ones((3, 3)))
    with pytest.raises(InputError):
        PorousSample.spheres([[0, 0, 0]], -1.0, 1.0)


# ----------------------------------------------------------------------------- exact transform
@pytest.mark.parametrize("big", [False, True])
def test_single_primitive_lands_where_the_matrix_says(big):
    """An ellipsoid rasterised on the HR grid through true_matrix and on the LFOV grid: same centroid
    (to 0.05 LFOV voxels), and second moments on the HR grid that the matrix maps to the ellipsoid's
    (on the 4 µm LFOV grid the sampled moments of a 3-6 µm ellipsoid alias by up to ~15 %: not checked)."""
    kw = dict(max_rotation_deg=12.0, max_scale=0.08, max_translation_lfov_vox=0.5) if big else {}
    p = simulate_multiscale_pair(**SMALL, **kw, seed=11, noise=0.0)
    m = p.true_matrix
    target = m @ [*(p.hr_center_um + [2.3, -3.1, 1.7]), 1.0]  # off the HR centre: rotation matters
    rot = rotation_from_euler_deg((20, 40, -30))
    s = PorousSample(target[None, :3], [[6.0, 4.0, 3.0]], rot[None], [1.0], [1])
    lf = rasterize_sample(s, p.lfov.shape, 4.0, supersample=6)
    hr = rasterize_sample(s, p.hr.shape, 1.0, m, supersample=4)
    c_lf = _centroid_phys(lf, 4.0)
    c_hr, cov_hr = _moments_phys(hr, 1.0)
    assert np.abs(c_lf - target[:3]).max() / 4.0 < 0.05
    assert np.abs((m @ [*c_hr, 1.0])[:3] - target[:3]).max() / 4.0 < 0.05
    a = m[:3, :3]
    cov_true = rot @ np.diag([36.0, 16.0, 9.0]) / 5 @ rot.T  # solid ellipsoid: a_k^2 / 5
    # a voxel's box average adds spacing^2 / 12 per axis (in its own frame)
    np.testing.assert_allclose(a @ (cov_hr - np.eye(3) / 12) @ a.T, cov_true, atol=0.05)  # ~1 %


def test_hr_and_lfov_rasterisations_agree_through_the_true_matrix():
    p = simulate_multiscale_pair(
        **SMALL, family="foam", max_rotation_deg=10.0, max_scale=0.05, max_translation_lfov_vox=0.5, seed=2
    )
    hr = rasterize_sample(p.sample, p.hr.shape, 1.0, p.true_matrix)
    lf = rasterize_sample(p.sample, p.lfov.shape, 4.0, supersample=4)
    hr_lowres = ndimage.uniform_filter(hr, 4, mode="nearest")  # about one LFOV voxel

    def corr(matrix):
        idx = np.indices(p.hr.shape).reshape(3, -1).astype(np.float64)
        pts = (matrix[:3, :3] @ idx + matrix[:3, 3:4]) / 4.0  # HR index -> LFOV index (spacing 1 and 4)
        sampled = ndimage.map_coordinates(lf, pts, order=1, mode="nearest").reshape(p.hr.shape)
        return np.corrcoef(sampled[4:-4, 4:-4, 4:-4].ravel(), hr_lowres[4:-4, 4:-4, 4:-4].ravel())[0, 1]

    c_true, c_prior = corr(p.true_matrix), corr(p.prior_matrix)
    assert c_true > 0.9
    assert c_true > c_prior + 0.1


# ----------------------------------------------------------------------------- prior and stage positions
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_prior_is_within_the_stated_error_and_follows_from_stage_positions(seed):
    p = simulate_multiscale_pair(**SMALL, prior_error_lfov_vox=1.5, seed=seed)
    pm = p.prior_matrix
    np.testing.assert_array_equal(pm[:3, :3], np.eye(3))
    np.testing.assert_array_equal(pm[3], [0, 0, 0, 1])
    from_stage = p.hr_stage_position_um - p.lfov_stage_position_um + p.lfov_center_um - p.hr_center_um
    np.testing.assert_allclose(pm[:3, 3], from_stage, atol=1e-9)
    err_vox = np.linalg.norm(((pm @ [*p.hr_center_um, 1.0])[:3] - p.translation_um) / 4.0)
    assert 0.5 * 1.5 - 1e-9 <= err_vox <= 1.5 + 1e-9
    np.testing.assert_allclose(p.prior_error_um, (pm @ [*p.hr_center_um, 1.0])[:3] - p.translation_um, atol=1e-9)


# ----------------------------------------------------------------------------- validation
def test_roi_outside_lfov_is_a_config_error():
    with pytest.raises(ConfigError, match=r"outside the LFOV field \[0, 60\] µm"):
        simulate_multiscale_pair(**SMALL, roi_center_um=(32.0, 32.0, 50.0))
    with pytest.raises(ConfigError, match="outside the LFOV field"):
        simulate_multiscale_pair(hr_shape=64, lfov_shape=16, lfov_spacing_um=4.0)


@pytest.mark.parametrize(
    "bad",
    [
        {"family": "rock"},
        {"max_rotation_deg": -1},
        {"max_rotation_deg": 90},
        {"max_scale": 0.5},
        {"max_translation_lfov_vox": -1},
        {"prior_error_lfov_vox": float("nan")},
        {"psf_sigma_lfov_vox": -0.1},
        {"noise": -1},
        {"hr_shape": (24, 24)},
        {"hr_spacing_um": 0.0},
        {"lfov_spacing_um": "x"},
        {"supersample_lfov": 20},
        {"lfov_shape": 1},
    ],
)
def test_bad_parameters_raise_config_error(bad):
    with pytest.raises(ConfigError):
        simulate_multiscale_pair(**{**SMALL, **bad})


# ----------------------------------------------------------------------------- writer
def test_write_and_read_back(tmp_path, pair):
    hr_path, lf_path = write_multiscale_pair(pair, tmp_path / "hr.zarr", tmp_path / "lfov.zarr")
    for path, vol, sp, stage in (
        (hr_path, pair.hr, 1.0, pair.hr_stage_position_um),
        (lf_path, pair.lfov, 4.0, pair.lfov_stage_position_um),
    ):
        da = open_volume(path)
        np.testing.assert_array_equal(da.values, vol)
        np.testing.assert_allclose(da.z.values, np.arange(vol.shape[0]) * sp)
        store = VolumeStore.open(path)
        assert store.attrs.voxel_size.value == sp and store.attrs.algorithm == "synthetic"
        extra = store.extra
        assert extra == da.attrs
        assert extra["voxel_size_um"] == [sp] * 3
        np.testing.assert_array_equal(extra["stage_position_um"], stage)
        truth = extra[SIMULATION_TRUTH]
        np.testing.assert_array_equal(truth["hr_to_lfov_matrix"], pair.true_matrix)
        np.testing.assert_array_equal(truth["prior_matrix"], pair.prior_matrix)
        assert truth["phase_fractions"] == pair.phase_fractions
        assert extra["synthetic"]["params"] == pair.params
    assert open_volume(lf_path, level=1).shape == (8, 8, 8)
    # the same pair again: nothing to do; another pair: refused unless overwrite
    write_multiscale_pair(pair, hr_path, lf_path)
    other = simulate_multiscale_pair(**SMALL, seed=6)
    with pytest.raises(StoreError, match="overwrite"):
        write_multiscale_pair(other, hr_path, lf_path)
    write_multiscale_pair(other, hr_path, lf_path, overwrite=True)
    np.testing.assert_array_equal(open_volume(hr_path).values, other.hr)


def test_writer_refuses_foreign_folders_and_same_path(tmp_path, pair):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(StoreError, match="not a tomoflow store"):
        write_multiscale_pair(pair, foreign, tmp_path / "lfov.zarr", overwrite=True)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert not (tmp_path / "lfov.zarr").exists()  # nothing written when one output is refused
    with pytest.raises(ConfigError, match="separate"):
        write_multiscale_pair(pair, tmp_path / "a.zarr", tmp_path / "a.zarr")
