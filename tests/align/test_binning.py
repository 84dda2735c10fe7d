"""Detector binning of the coarse-to-fine refinement (tomoflow.align.binning)."""

import numpy as np
import pytest

from tomoflow.align.binning import bin_center, bin_stack, unbin_center, unbin_volume


def test_bin_stack_is_the_block_mean_with_edge_repeat():
    rng = np.random.default_rng(0)
    p = rng.random((3, 7, 9)).astype(np.float32)
    b = bin_stack(p, 2, 3)
    assert b.shape == (3, 4, 3) and b.dtype == np.float32
    np.testing.assert_allclose(b[1, 0, 0], p[1, 0:2, 0:3].mean(), rtol=1e-6)
    # the last row bin holds row 6 twice (edge repeat), so it is row 6's mean over the columns
    np.testing.assert_allclose(b[2, 3, 1], p[2, 6, 3:6].mean(), rtol=1e-6)
    assert bin_stack(p, 1, 1) is not None and np.array_equal(bin_stack(p, 1, 1), p)


@pytest.mark.parametrize("f", [2, 3])
def test_a_feature_keeps_its_place_across_binning(f):
    """A Gaussian at full-resolution column c lies at bin_center(c) in the binned stack."""
    cols = np.arange(96, dtype=np.float64)
    c = 41.3
    line = np.exp(-0.5 * ((cols - c) / 4.0) ** 2)
    p = np.broadcast_to(line, (2, 6, 96)).astype(np.float32)
    b = bin_stack(p, 1, f)[0, 0].astype(np.float64)
    centroid = float(np.sum(np.arange(b.size) * b) / b.sum())
    assert centroid == pytest.approx(bin_center(c, f), abs=1e-3)
    assert unbin_center(bin_center(c, f), f) == pytest.approx(c)


def test_unbin_volume_shape_and_units():
    """Attenuation per binned pixel -> per full pixel (divided by the column factor), grid restored
    by repetition, cropped or edge-padded to the full shape."""
    v = np.full((4, 5, 5), 2.0, np.float32)
    v[:, 2, 2] = 6.0
    up = unbin_volume(v, 2, 2, (8, 11, 11))
    assert up.shape == (8, 11, 11)
    np.testing.assert_allclose(up[0, 4:6, 4:6], 3.0)
    np.testing.assert_allclose(up[:, 10, :10], 1.0)
    assert unbin_volume(v, 2, 2, (7, 9, 9)).shape == (7, 9, 9)
