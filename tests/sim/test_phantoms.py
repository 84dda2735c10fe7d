"""Phantoms: determinism, shapes, value ranges, porosity, facets, Shepp-Logan table and orientation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from tomoflow.errors import ConfigError
from tomoflow.sim.analytic import rasterize_ellipsoids
from tomoflow.sim.phantoms import (
    SHEPP_LOGAN_3D,
    cathode_particle,
    gold_particle,
    shepp_logan_3d,
    shepp_logan_ellipses,
    shepp_logan_ellipsoids,
)


# ----------------------------------------------------------------------------- common
@pytest.mark.parametrize("make", [gold_particle, cathode_particle])
def test_random_phantoms_are_deterministic(make):
    a = make(24, seed=3)
    b = make(24, seed=3)
    c = make(24, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("make", [gold_particle, cathode_particle, shepp_logan_3d])
@pytest.mark.parametrize("shape", [20, (12, 24, 28)])
def test_shape_dtype_and_range(make, shape):
    vol = make(shape)
    expect = (shape,) * 3 if isinstance(shape, int) else shape
    assert vol.shape == expect
    assert vol.dtype == np.float32
    assert np.all(np.isfinite(vol))
    assert vol.min() >= -1e-6
    assert vol.max() > 0


@pytest.mark.parametrize("make", [gold_particle, cathode_particle, shepp_logan_3d])
def test_line_integrals_are_a_few_units_at_any_size(make):
    small = make(32).sum(axis=1).max()
    big = make(64).sum(axis=1).max()
    assert 1.0 < big < 4.0
    assert small == pytest.approx(big, rel=0.2)


@pytest.mark.parametrize("bad", [0, (4, 4), (4, -1, 4), "x"])
def test_bad_shape_raises(bad):
    with pytest.raises(ConfigError):
        gold_particle(bad)


# ----------------------------------------------------------------------------- gold
def test_gold_values_and_satellites():
    n = 64
    vol = gold_particle(n, seed=1, attenuation=2.5, n_satellites=3)
    mu = 2.5 / (n / 2)
    assert vol.max() == pytest.approx(mu, rel=1e-5)
    assert vol.min() == 0.0
    # soft (anti-aliased) edges: there are partial-volume voxels
    partial = (vol > 0.05 * mu) & (vol < 0.95 * mu)
    assert partial.sum() > 100
    _, n_parts = ndimage.label(vol > 0.5 * mu)
    assert n_parts >= 3  # main particle + at least 2 of 3 satellites placed
    single = gold_particle(n, seed=1, n_satellites=0)
    assert ndimage.label(single > 0.5 * mu)[1] == 1


def _support_and_cap(mask: np.ndarray, n_dirs: int = 1500) -> tuple[np.ndarray, np.ndarray]:
    """Support function h(u) and number of voxels within 1 voxel of each supporting plane."""
    pts = np.argwhere(mask).astype(float)
    pts -= pts.mean(axis=0)
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(n_dirs, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    proj = pts @ dirs.T  # (npts, ndirs)
    h = proj.max(axis=0)
    cap = (proj > h[None, :] - 1.0).sum(axis=0)
    return h, cap


def test_gold_is_faceted_not_round():
    n = 64
    mu = 2.5 / (n / 2)
    gold = gold_particle(n, seed=5, n_satellites=0) > 0.5 * mu
    # reference: a digital ball of the same volume
    r = (3 * gold.sum() / (4 * np.pi)) ** (1 / 3)
    c = np.arange(n) - (n - 1) / 2
    ball = c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2 <= r * r
    h_g, cap_g = _support_and_cap(gold)
    h_b, cap_b = _support_and_cap(ball)
    # a polyhedron's support function varies (facets vs vertices), a ball's does not
    assert h_g.max() / h_g.min() > 1.15
    assert h_b.max() / h_b.min() < 1.08
    # flat faces: many voxels lie in one supporting plane, far more than in a tangent cap of the ball
    assert cap_g.max() > 1.8 * cap_b.max()


def test_gold_parameter_checks():
    with pytest.raises(ConfigError):
        gold_particle(16, radius=0.9)
    with pytest.raises(ConfigError):
        gold_particle(16, n_satellites=-1)


# ----------------------------------------------------------------------------- cathode
@pytest.mark.parametrize("porosity", [0.0, 0.05, 0.15])
def test_cathode_porosity_close_to_request(porosity):
    vol, lab = cathode_particle(48, seed=2, porosity=porosity, return_labels=True)
    achieved = lab["pores"].sum() / lab["particle"].sum()
    assert achieved == pytest.approx(porosity, abs=0.01)
    assert achieved >= porosity
    assert np.all(vol[lab["pores"]] == 0)
    assert not np.any(lab["pores"] & ~lab["particle"])


def test_cathode_labels_and_structure():
    n = 48
    vol, lab = cathode_particle(n, seed=7, porosity=0.03, n_grains=30, n_cracks=2, return_labels=True)
    assert set(lab) == {"particle", "pores", "cracks", "grains"}
    for key in ("particle", "pores", "cracks"):
        assert lab[key].dtype == bool and lab[key].shape == vol.shape
    assert lab["grains"].dtype == np.int32
    ids = np.unique(lab["grains"][lab["particle"]])
    assert ids.min() >= 1 and 10 < ids.size <= 30
    assert np.all(lab["grains"][~lab["particle"]] == 0)
    assert lab["cracks"].sum() > 0
    solid = lab["particle"] & ~lab["pores"] & ~lab["cracks"]
    # cracks are low-density sheets
    assert vol[lab["cracks"]].mean() < 0.6 * vol[solid].mean()
    # grains differ slightly in density
    inner = ndimage.binary_erosion(solid, iterations=2)
    means = [vol[inner & (lab["grains"] == g)].mean() for g in ids if (inner & (lab["grains"] == g)).sum() > 20]
    spread = (max(means) - min(means)) / np.mean(means)
    assert 0.01 < spread < 0.2
    # outside the particle (beyond the soft edge) nothing
    outside = ~ndimage.binary_dilation(lab["particle"], iterations=2)
    assert np.all(vol[outside] == 0)


def test_cathode_returns_volume_only_by_default():
    out = cathode_particle(16, seed=1)
    assert isinstance(out, np.ndarray)


@pytest.mark.parametrize(
    "kw",
    [
        {"porosity": 0.5},
        {"porosity": -0.1},
        {"radius": 1.2},
        {"n_grains": 0},
        {"crack_density": 2.0},
        {"pore_radius": (0.1, 0.05)},
    ],
)
def test_cathode_parameter_checks(kw):
    with pytest.raises(ConfigError):
        cathode_particle(16, **kw)


# ----------------------------------------------------------------------------- Shepp-Logan
def test_shepp_logan_table_and_rasterisation_agree():
    shape = (16, 32, 32)
    tab = shepp_logan_ellipsoids(shape)
    assert tab.shape == (10, 8)
    np.testing.assert_array_equal(shepp_logan_3d(shape), rasterize_ellipsoids(tab, shape, supersample=2))
    assert SHEPP_LOGAN_3D.shape == (10, 8)
    assert shepp_logan_ellipses(32).shape == (10, 6)


def test_shepp_logan_values_and_orientation():
    n = 64
    scale = 4.0
    vol = shepp_logan_3d(n, scale=scale)
    L = n / 2
    unit = scale / L
    c = (n - 1) / 2
    # centre of the head: brain (1 - 0.8 = 0.2)
    assert vol[int(c), int(c), int(c)] == pytest.approx(0.2 * unit, rel=1e-5)
    # ellipsoid "e" (value +0.2 over the brain) at y = +0.35 (textbook up = smaller row index),
    # z = -0.25 of the half-height
    zi = int(round(c - 0.25 * n / 2))
    yi = int(round(c - 0.35 * L))
    assert vol[zi, yi, int(c)] == pytest.approx(0.4 * unit, rel=1e-5)
    # skull is the densest part
    assert vol.max() == pytest.approx(1.0 * unit, rel=1e-5)
    # the y flip: the table's y0 = +0.35 ellipsoid lies above the centre row
    assert shepp_logan_ellipsoids(n)[4, 5] == pytest.approx(-0.35 * L)
