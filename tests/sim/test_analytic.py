"""Analytic projections of ellipses / ellipsoids against fine rasterisations and the geometry convention."""

from __future__ import annotations

import numpy as np
import pytest

from tomoflow.errors import InputError
from tomoflow.sim.analytic import (
    ellipse_sinogram,
    ellipsoid_projections,
    rasterize_ellipses,
    rasterize_ellipsoids,
)
from tomoflow.sim.phantoms import shepp_logan_ellipses, shepp_logan_ellipsoids

# An asymmetric, rotated, off-centre set (pixel units): value, a, b, x0, y0, phi_deg
ELLIPSES = np.array(
    [
        [0.05, 20.0, 14.0, 2.0, -1.5, 20.0],
        [0.08, 6.0, 3.0, 9.0, 6.0, -35.0],
        [-0.03, 4.0, 4.0, -7.0, -5.0, 0.0],
    ]
)


def test_circle_matches_closed_form():
    n, r, mu = 33, 10.0, 0.1
    sino = ellipse_sinogram([[mu, r, r, 0.0, 0.0, 0.0]], [0.0, 17.0, 90.0], n)
    t = np.arange(n) - (n - 1) / 2
    expect = 2 * mu * np.sqrt(np.maximum(r * r - t * t, 0))
    for row in sino:
        np.testing.assert_allclose(row, expect, atol=1e-12)


@pytest.mark.parametrize("table", [ELLIPSES, shepp_logan_ellipses(64)], ids=["custom", "shepp-logan"])
def test_ellipse_sinogram_matches_rasterised_sums(table):
    n = 64
    img = rasterize_ellipses(table, n, supersample=8)
    sino = ellipse_sinogram(table, [0.0, 90.0], n, oversample=8)
    scale = np.abs(sino).max()
    # theta = 0: rays along y, column = x
    np.testing.assert_allclose(img.sum(axis=0), sino[0], atol=0.015 * scale)
    # theta = 90: rays along x, column = y
    np.testing.assert_allclose(img.sum(axis=1), sino[1], atol=0.015 * scale)


def test_point_sampled_close_to_pixel_averaged():
    sino1 = ellipse_sinogram(ELLIPSES, np.arange(0, 180, 15), 64)
    sino8 = ellipse_sinogram(ELLIPSES, np.arange(0, 180, 15), 64, oversample=8)
    assert np.abs(sino1 - sino8).mean() < 0.01 * np.abs(sino8).max()


def test_center_shifts_columns():
    a = ellipse_sinogram(ELLIPSES, [0.0, 40.0], 64)
    b = ellipse_sinogram(ELLIPSES, [0.0, 40.0], 64, center=(64 - 1) / 2 + 3)
    np.testing.assert_allclose(b[:, 3:], a[:, :-3], atol=1e-12)


def test_pixel_size_is_a_change_of_units():
    pixel = 0.25  # ellipses in micrometres, 0.25 um pixels
    tab_um = ELLIPSES.copy()
    tab_um[:, 1:5] *= pixel
    tab_um[:, 0] /= pixel  # attenuation per micrometre
    np.testing.assert_allclose(
        ellipse_sinogram(tab_um, [10.0, 100.0], 64, pixel=pixel),
        ellipse_sinogram(ELLIPSES, [10.0, 100.0], 64),
        rtol=1e-10,
        atol=1e-12,
    )
    np.testing.assert_allclose(
        rasterize_ellipses(tab_um, 64, pixel=pixel), rasterize_ellipses(ELLIPSES, 64), rtol=1e-5, atol=1e-7
    )


def test_rasterised_area_is_exact():
    img = rasterize_ellipses([[1.0, 11.3, 7.2, 1.3, -2.1, 33.0]], 48, supersample=8)
    assert img.sum() == pytest.approx(np.pi * 11.3 * 7.2, rel=2e-3)


def test_ellipsoid_projections_match_rasterised_sums():
    shape = (24, 48, 48)
    tab = shepp_logan_ellipsoids(shape)
    vol = rasterize_ellipsoids(tab, shape, supersample=6)
    proj = ellipsoid_projections(tab, [0.0, 90.0], (shape[0], shape[2]), oversample=6)
    assert proj.shape == (2, 24, 48) and proj.dtype == np.float32
    scale = np.abs(proj).max()
    # rays tangent to the thin skull are where a rasterisation errs most (sampling along the ray)
    np.testing.assert_allclose(vol.sum(axis=1), proj[0], atol=0.02 * scale)
    np.testing.assert_allclose(vol.sum(axis=2), proj[1], atol=0.02 * scale)
    assert np.abs(vol.sum(axis=1) - proj[0]).mean() < 1e-3 * scale


def test_ellipsoid_section_is_the_ellipse_sinogram():
    # a row through the centre of an ellipsoid sees the ellipse of semi-axes (a, b)
    ell3 = [[0.1, 9.0, 5.0, 6.0, 2.0, -3.0, 0.0, 25.0]]
    proj = ellipsoid_projections(ell3, [0.0, 30.0, 75.0], (9, 40))
    sino = ellipse_sinogram([[0.1, 9.0, 5.0, 2.0, -3.0, 25.0]], [0.0, 30.0, 75.0], 40)
    np.testing.assert_allclose(proj[:, 4, :], sino, atol=1e-5)
    # and a row at height z sees it scaled by sqrt(1 - (z / c)^2)
    k = np.sqrt(1 - (3.0 / 6.0) ** 2)
    sino_k = ellipse_sinogram([[0.1, 9.0 * k, 5.0 * k, 2.0, -3.0, 25.0]], [0.0, 30.0, 75.0], 40)
    np.testing.assert_allclose(proj[:, 7, :], sino_k, atol=1e-5)


def test_geometry_matches_tomoflow_projector():
    """Centroids of the analytic sinogram equal those of project(rasterised) at every angle."""
    from tomoflow.recon import project

    n = 64
    img = rasterize_ellipses(ELLIPSES, n, supersample=8)
    angles = np.array([0.0, 30.0, 45.0, 90.0, 135.0, 210.0, 300.0])
    ana = ellipse_sinogram(ELLIPSES, angles, n, oversample=4)
    num = np.asarray(project(img[None], angles))[:, 0, :]
    cols = np.arange(n)
    np.testing.assert_allclose((ana * cols).sum(1) / ana.sum(1), (num * cols).sum(1) / num.sum(1), atol=0.02)
    assert np.abs(ana - num).mean() < 0.01 * np.abs(ana).max()


@pytest.mark.parametrize("bad", [np.zeros((2, 5)), [[1.0, -1.0, 2.0, 0, 0, 0]], [[np.nan, 1, 1, 0, 0, 0]]])
def test_bad_tables_raise(bad):
    with pytest.raises(InputError):
        ellipse_sinogram(bad, [0.0], 8)
