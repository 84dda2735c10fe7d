"""Pore metrics (tomoflow.recover.pores): known pores, protocol options, blockwise == whole, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from tomoflow.errors import ConfigError, InputError
from tomoflow.pipeline.pores import plot_pore_sizes
from tomoflow.recover.pore_blocks import block_pores, merge_block_pores
from tomoflow.recover.pores import pore_metrics, threshold_from_reference
from tomoflow.recover.recall import pore_recall


# ----------------------------------------------------------------------------- helpers
def _ball(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    zz, yy, xx = np.meshgrid(r, r, r, indexing="ij")
    return zz**2 + yy**2 + xx**2 <= radius**2


def _blocks(volume, mask, shape, **kw):
    """Label ``volume`` in blocks of ``shape`` (the last ones smaller) -> {origin: BlockPores}."""
    out = {}
    for z in range(0, volume.shape[0], shape[0]):
        for y in range(0, volume.shape[1], shape[1]):
            for x in range(0, volume.shape[2], shape[2]):
                sl = np.s_[z : z + shape[0], y : y + shape[1], x : x + shape[2]]
                out[(z, y, x)] = block_pores(volume[sl], mask=None if mask is None else mask[sl], **kw)
    return out


def _same(a, b):
    assert a.count == b.count
    assert np.array_equal(a.voxel_counts, b.voxel_counts)
    assert np.array_equal(a.volumes_um3, b.volumes_um3)
    assert a.porosity == b.porosity
    assert a.analysed_voxels == b.analysed_voxels


@pytest.fixture(scope="module")
def porous():
    """Thresholded smoothed noise (seeded) in a cylinder mask: 48 x 40 x 44, 15 % pore, about 60
    pores from 5 voxels to several thousand (crossing many blocks)."""
    rng = np.random.default_rng(7)
    vol = ndimage.gaussian_filter(rng.standard_normal((48, 40, 44)), 1.5).astype(np.float32)
    yy, xx = np.mgrid[:40, :44]
    mask = np.broadcast_to(np.hypot(yy - 19.5, xx - 21.5) < 19.0, vol.shape).copy()
    threshold = float(np.quantile(vol[mask], 0.15))
    return vol, mask, threshold


# ----------------------------------------------------------------------------- known pores
def test_known_pores_exact():
    vol = np.full((40, 40, 40), 100, dtype=np.uint16)  # solid
    ball = _ball(4)  # 257 voxels
    vol[5:14, 5:14, 5:14][ball] = 10
    vol[20:25, 20:30, 25:28] = 10  # box 5 x 10 x 3 = 150 voxels
    vol[30:32, 2:4, 30:32] = 10  # cube of 8 voxels
    vol[35, 35, 35] = 10  # single voxel
    spacing = (0.5, 2.0, 1.0)  # 1 um^3 per voxel
    m = pore_metrics(vol, threshold=50, spacing_um=spacing, connectivity=6, min_voxels=8)
    n_ball = int(ball.sum())
    assert m.count == 3
    assert m.voxel_counts.tolist() == [n_ball, 150, 8]
    assert np.array_equal(m.volumes_um3, np.array([n_ball, 150, 8]) * 1.0)
    assert m.porosity == (n_ball + 150 + 8) / 40**3  # the 1-voxel pore counts for nothing
    assert m.analysed_volume_um3 == 40**3 * 1.0
    assert np.allclose(np.pi / 6 * m.equivalent_diameters_um**3, m.volumes_um3)
    # anisotropic voxels scale volumes, not porosity
    m2 = pore_metrics(vol, threshold=50, spacing_um=(2.0, 3.0, 0.5), connectivity=6, min_voxels=8)
    assert np.allclose(m2.volumes_um3, m.volumes_um3 * 3.0) and m2.porosity == m.porosity
    s = m.as_dict()
    json.dumps(s)
    assert s["count"] == 3 and s["porosity_percent"] == pytest.approx(100 * m.porosity)
    assert s["max_pore_volume_um3"] == n_ball and s["median_pore_volume_um3"] == 150


def test_min_voxels_excludes_small_pores():
    vol = np.ones((20, 20, 20))
    vol[2:4, 2:4, 2:4] = 0  # 8
    vol[10:13, 10:13, 10:13] = 0  # 27
    vol[16, 16, 16:18] = 0  # 2
    counts = {k: pore_metrics(vol, threshold=0.5, min_voxels=k).count for k in (0, 1, 3, 8, 9, 28)}
    assert counts == {0: 3, 1: 3, 3: 2, 8: 2, 9: 1, 28: 0}
    none = pore_metrics(vol, threshold=0.5, min_voxels=28)
    assert none.porosity == 0.0 and none.volumes_um3.size == 0
    assert none.as_dict()["mean_pore_volume_um3"] is None


def test_connectivity_diagonal_pair():
    vol = np.ones((10, 10, 10))
    vol[2:4, 2:4, 2:4] = 0
    vol[4:6, 4:6, 4:6] = 0  # touches the first cube by one corner only
    c = {k: pore_metrics(vol, threshold=0.5, connectivity=k, min_voxels=1).count for k in (6, 18, 26)}
    assert c == {6: 2, 18: 2, 26: 1}
    edge = np.ones((10, 10, 10))
    edge[2:4, 2:4, 2:6] = 0
    edge[4:6, 4:6, 2:6] = 0  # shares an edge (along x) with the first box
    c = {k: pore_metrics(edge, threshold=0.5, connectivity=k, min_voxels=1).count for k in (6, 18, 26)}
    assert c == {6: 2, 18: 1, 26: 1}


def test_mask_limits_region_and_cuts_pores():
    vol = np.ones((20, 20, 20))
    vol[5:15, 5:15, 5:15] = 0  # 1000-voxel pore
    mask = np.zeros(vol.shape, bool)
    mask[:, :, :10] = True  # keeps half of it
    m = pore_metrics(vol, threshold=0.5, mask=mask, min_voxels=1)
    assert m.count == 1 and m.voxel_counts[0] == 500
    assert m.analysed_voxels == 4000 and m.porosity == 500 / 4000


def test_threshold_from_reference_and_histogram():
    rng = np.random.default_rng(0)
    truth = rng.random((16, 16, 16)) < 0.3
    hr = np.where(truth, 20.0, 80.0) + rng.normal(0, 8, truth.shape)
    t = threshold_from_reference(hr)
    assert 40 < t < 60 and np.mean((hr < t) == truth) > 0.99
    mask = np.zeros(hr.shape, bool)
    mask[4:12] = True
    assert 40 < threshold_from_reference(hr, mask=mask, method="li") < 60
    m = pore_metrics(hr, threshold=t, min_voxels=1)
    counts, edges = m.histogram(bins=10)
    assert counts.sum() == m.count and edges.size == 11
    assert np.allclose(np.diff(np.log(edges)), np.log(edges[1] / edges[0]))  # log-spaced
    counts, edges = m.histogram([0.1, 1.0, 2.0, 100.0])
    assert counts.sum() == m.count and counts[0] == 0


# ----------------------------------------------------------------------------- blockwise
@pytest.mark.parametrize("connectivity", [6, 18, 26])
@pytest.mark.parametrize("shape", [(16, 16, 16), (10, 13, 7), (64, 64, 64), (1, 48, 5)])
def test_blockwise_equals_whole(porous, shape, connectivity):
    vol, mask, t = porous
    whole = pore_metrics(
        vol, threshold=t, mask=mask, connectivity=connectivity, min_voxels=5, spacing_um=(0.7, 0.7, 1.1)
    )
    assert whole.count > 20
    blocks = _blocks(vol, mask, shape, threshold=t, connectivity=connectivity)
    merged = merge_block_pores(blocks, min_voxels=5, spacing_um=(0.7, 0.7, 1.1))
    _same(merged, whole)
    # pairs in any order work too
    _same(merge_block_pores(list(blocks.items())[::-1], min_voxels=5, spacing_um=(0.7, 0.7, 1.1)), whole)


@pytest.mark.parametrize("connectivity, expected", [(6, 8), (18, 8), (26, 1)])
def test_diagonal_pore_through_a_block_corner(connectivity, expected):
    """A chain of voxels along the body diagonal crosses the corner where eight 4^3 blocks meet:
    with 26-connectivity it is one pore, split into two 4-voxel halves (each below min_voxels)."""
    vol = np.ones((8, 8, 8))
    for i in range(8):
        vol[i, i, i] = 0
    kw = dict(threshold=0.5, connectivity=connectivity)
    whole = pore_metrics(vol, min_voxels=1, **kw)
    assert whole.count == expected
    merged = merge_block_pores(_blocks(vol, None, (4, 4, 4), **kw), min_voxels=1)
    _same(merged, whole)
    # min size applies after merging: the halves (4 voxels) are one 8-voxel pore
    big = merge_block_pores(_blocks(vol, None, (4, 4, 4), **kw), min_voxels=8)
    assert big.count == (1 if connectivity == 26 else 0)


def test_edge_diagonal_between_blocks_meeting_at_an_edge():
    """18-connectivity joins voxels of two blocks that share only an edge."""
    vol = np.ones((8, 8, 4))
    vol[3, 3, :] = 0
    vol[4, 4, :] = 0
    for c, n in ((6, 2), (18, 1), (26, 1)):
        kw = dict(threshold=0.5, connectivity=c)
        assert merge_block_pores(_blocks(vol, None, (4, 4, 4), **kw), min_voxels=1).count == n
        assert pore_metrics(vol, min_voxels=1, **kw).count == n


def test_irregular_partition_and_empty_blocks(porous):
    vol, mask, t = porous
    whole = pore_metrics(vol, threshold=t, mask=mask)
    cuts = [
        ((0, 0, 0), np.s_[:20, :, :]),
        ((20, 0, 0), np.s_[20:, :17, :]),
        ((20, 17, 0), np.s_[20:, 17:, :30]),
        ((20, 17, 30), np.s_[20:, 17:, 30:]),
    ]
    parts = [(o, block_pores(vol[sl], threshold=t, mask=mask[sl])) for o, sl in cuts]
    _same(merge_block_pores(parts), whole)
    solid = np.ones((4, 4, 4))
    nothing = merge_block_pores({(0, 0, 0): block_pores(solid, threshold=0.5)})
    assert nothing.count == 0 and nothing.porosity == 0.0


# ----------------------------------------------------------------------------- plot
def test_plot_pore_sizes(porous, tmp_path):
    vol, mask, t = porous
    metrics = {
        "LFOV": pore_metrics(ndimage.uniform_filter(vol, 3), threshold=t, mask=mask),
        "HR": pore_metrics(vol, threshold=t, mask=mask),
        "recovered $x$": pore_metrics(ndimage.uniform_filter(vol, 2), threshold=t, mask=mask),
    }
    p = plot_pore_sizes(metrics, tmp_path / "sub" / "pores.png", title="sample A")
    assert p.is_file() and p.stat().st_size > 1000
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ConfigError, match="different protocols"):
        plot_pore_sizes({"a": metrics["HR"], "b": pore_metrics(vol, threshold=t + 0.01)}, tmp_path / "x.png")
    with pytest.raises(ConfigError, match="at least one"):
        plot_pore_sizes({}, tmp_path / "x.png")


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "volume, kwargs, error, match",
    [
        (np.ones((4, 4)), {}, InputError, r"\(z, y, x\) volume"),
        (np.ones((0, 4, 4)), {}, InputError, "empty"),
        (np.full((4, 4, 4), np.nan), {}, InputError, r"\[volume\].*NaN"),
        (np.ones((4, 4, 4), bool), {}, InputError, "dtype bool"),
        (np.ones((4, 4, 4)), {"mask": np.ones((4, 4, 3), bool)}, InputError, "mask shape"),
        (np.ones((4, 4, 4)), {"mask": np.ones((4, 4, 4))}, InputError, "mask must be boolean"),
        (np.ones((4, 4, 4)), {"mask": np.zeros((4, 4, 4), bool)}, InputError, "selects no voxels"),
        (np.ones((4, 4, 4)), {"threshold": float("nan")}, ConfigError, "threshold"),
        (np.ones((4, 4, 4)), {"threshold": "dark"}, ConfigError, "threshold"),
        (np.ones((4, 4, 4)), {"connectivity": 8}, ConfigError, "6, 18 or 26"),
        (np.ones((4, 4, 4)), {"min_voxels": -1}, ConfigError, "min_voxels"),
        (np.ones((4, 4, 4)), {"spacing_um": (1.0, 0.0, 1.0)}, ConfigError, "voxel size y"),
        (np.ones((4, 4, 4)), {"spacing_um": (1.0, 1.0)}, ConfigError, "spacing_um"),
    ],
)
def test_bad_input(volume, kwargs, error, match):
    kw = {"threshold": 0.5, **kwargs}
    with pytest.raises(error, match=match):
        pore_metrics(volume, **kw)


def test_bad_input_names_the_volume():
    with pytest.raises(InputError, match=r"\[LFOV\]: the volume contains NaN"):
        pore_metrics(np.full((2, 2, 2), np.inf), threshold=0.5, name="LFOV")


def test_bad_reference_and_blocks():
    with pytest.raises(InputError, match="all values are equal"):
        threshold_from_reference(np.ones((4, 4, 4)))
    with pytest.raises(ConfigError, match="unknown threshold method"):
        threshold_from_reference(np.arange(64.0).reshape(4, 4, 4), method="mean")
    a = block_pores(np.zeros((2, 2, 2)), threshold=0.5)
    b = block_pores(np.zeros((2, 2, 2)), threshold=0.6)
    with pytest.raises(InputError, match="one protocol for all blocks"):
        merge_block_pores({(0, 0, 0): a, (2, 0, 0): b})
    with pytest.raises(InputError, match="blocks overlap"):
        merge_block_pores({(0, 0, 0): a, (1, 0, 0): a})
    with pytest.raises(InputError, match="origin"):
        merge_block_pores({(0, 0): a})
    with pytest.raises(InputError, match="no blocks"):
        merge_block_pores({})


# ----------------------------------------------------------------------------- recall by size
def test_pore_recall_finds_which_reference_pores_each_volume_has_by_size():
    hr = np.ones((24, 24, 24), dtype=np.float32)
    hr[2:4, 2:4, 2:4] = 0.0  # 8 voxels
    hr[10:14, 10:14, 10:14] = 0.0  # 64 voxels
    hr[18:22, 2:6, 2:10] = 0.0  # 128 voxels
    hr[20, 20, 20] = 0.0  # 1 voxel: below the minimum size, not a pore
    part = hr.copy()
    part[10:14, 10:14, 10:14] = 1.0  # misses the 64-voxel pore
    part[18:22, 2:6, 2:3] = 1.0  # keeps 7/8 of the 128-voxel pore: found
    edges = [8, 16, 64, 128, np.inf]
    r = pore_recall(hr, {"same": hr, "part": part, "none": np.ones_like(hr)}, threshold=0.5, edges_um3=edges)
    assert r.reference.tolist() == [1, 0, 1, 1]
    assert r.found["same"].tolist() == [1, 0, 1, 1] and r.found["none"].tolist() == [0, 0, 0, 0]
    assert r.found["part"].tolist() == [1, 0, 0, 1]
    np.testing.assert_array_equal(r.recall("part"), [1.0, np.nan, 0.0, 1.0])
    doc = json.loads(json.dumps(r.as_dict()))
    assert doc["edges_um3"][-1] is None and doc["recall"]["part"][1] is None
    # voxel size: volumes in um^3; a stricter found_fraction drops the partly kept pore
    r2 = pore_recall(
        hr, {"part": part}, threshold=0.5, spacing_um=2.0, found_fraction=0.9, edges_um3=[64, 512, 1024, np.inf]
    )
    assert r2.reference.tolist() == [1, 1, 1] and r2.found["part"].tolist() == [1, 0, 0]
    # default edges: doubling from the smallest pore, the last bin open, every pore in a bin
    r3 = pore_recall(hr, {"same": hr}, threshold=0.5)
    assert r3.edges_um3[0] == 8 and np.isinf(r3.edges_um3[-1]) and r3.reference.sum() == 3


def test_pore_recall_refuses_bad_input():
    hr = np.ones((8, 8, 8))
    with pytest.raises(InputError, match="differs from the reference"):
        pore_recall(hr, {"small": np.ones((8, 8, 7))}, threshold=0.5)
    with pytest.raises(InputError, match="NaN"):
        pore_recall(hr, {"bad": np.full((8, 8, 8), np.nan)}, threshold=0.5)
    with pytest.raises(ConfigError, match="edges_um3"):
        pore_recall(hr, {}, threshold=0.5, edges_um3=[8, 8])
    with pytest.raises(ConfigError, match="found_fraction"):
        pore_recall(hr, {}, threshold=0.5, found_fraction=0.0)
