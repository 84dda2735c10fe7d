"""The spatial split of a recovery training pair (no training patch touches a held-out block) and the
patch augmentation (input and target alike)."""

from __future__ import annotations

import numpy as np
import pytest

from tomoflow.errors import ConfigError, InputError
from tomoflow.recover.augment import augment_pair
from tomoflow.recover.splits import plan_split


@pytest.mark.parametrize(
    "shape, patch, kind",
    [
        ((48, 48, 48), 16, "octants"),
        ((48, 48, 48), 32, "slabs"),
        ((20, 33, 27), 8, "octants"),
        ((30, 28, 26), 16, "slabs"),
    ],
)
def test_training_patches_never_overlap_held_out_blocks(shape, patch, kind):
    split = plan_split(shape, patch, val_fraction=0.25, seed=3)
    assert split.kind == kind
    held = split.held_out_mask
    assert held.any() and not held.all()
    # the corner mask is exactly "the patch box misses every held-out voxel" (brute force)
    ok = split.corner_mask()
    for c in np.ndindex(*ok.shape):
        box = held[tuple(slice(s, s + patch) for s in c)]
        assert ok[c] == (not box.any()), c
    corners = split.sample(500, np.random.default_rng(0))
    assert corners.min() >= 0 and np.all(corners <= np.array(shape) - patch)
    for c in corners:
        assert not held[tuple(slice(s, s + patch) for s in c)].any()
    assert len({tuple(c) for c in corners}) > 50  # not one position over and over
    # the held-out blocks are blocks of the tiling grid, whole
    for (a, _b), idx in zip(split.held_out_boxes, split.held_out):
        assert a == tuple(i * s for i, s in zip(idx, split.block))


def test_split_refuses_what_cannot_work():
    with pytest.raises(InputError, match="smaller than a training patch"):
        plan_split((40, 40, 12), 16)
    with pytest.raises(ConfigError, match="no 36-voxel training patch fits"):
        plan_split((40, 40, 40), 36)
    with pytest.raises(ConfigError, match="split"):
        plan_split((40, 40, 40), 16, kind="halves")


def test_augmentation_transforms_input_and_target_alike():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 7, 8)).astype(np.float32)
    y = x**2  # any voxel-wise relation must survive the augmentation
    seen = set()
    for _ in range(200):
        xa, ya, info = augment_pair(x, y, rng)
        g, b = info["gain"], info["offset"]
        assert 0.9 <= g <= 1.1 and -0.05 <= b <= 0.05
        want = np.transpose(x, info["perm"])[tuple(slice(None, None, -1) if f else slice(None) for f in info["flip"])]
        np.testing.assert_allclose(xa, g * want + b, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(ya, g * ((xa - b) / g) ** 2 + b, rtol=1e-4, atol=1e-5)
        assert xa.flags.c_contiguous and xa.dtype == np.float32
        seen.add((tuple(info["perm"]), tuple(info["flip"])))
    assert len(seen) == 48  # all 6 axis orders x 8 flips occur
    xa, ya, info = augment_pair(x, y, rng, flips=False, permute=False, gain=(1, 1), offset=(0, 0))
    np.testing.assert_array_equal(xa, x)
    np.testing.assert_array_equal(ya, y)


@pytest.mark.parametrize("shape, patch", [((48, 48, 48), 16), ((20, 33, 27), 8), ((30, 28, 26), 16)])
def test_positions_are_counted_without_a_corner_volume(shape, patch):
    split = plan_split(shape, patch, val_fraction=0.25, seed=3)
    assert split.n_positions == int(split.corner_mask().sum())
    assert split.val_voxels == int(split.held_out_mask.sum())
    box = ((3, 19), (0, 7), (5, shape[2]))
    np.testing.assert_array_equal(split.held_out_in(box), split.held_out_mask[tuple(slice(a, b) for a, b in box)])


def test_a_large_split_samples_and_describes_itself_in_bounded_memory():
    """A 768³ pair: no array of the volume's (or the corner grid's) size is made to sample or describe it."""
    import tracemalloc

    tracemalloc.start()
    split = plan_split((768, 768, 768), 32, seed=0)
    corners = split.sample(256, np.random.default_rng(0))
    doc = split.to_dict()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 * 1024**2, peak
    assert doc["val_voxels"] == 384**3 and doc["train_patch_positions"] > 0
    for c in corners:  # no patch overlaps the held-out octant
        assert not all(a - 32 < s < b for s, (a, b) in zip(c, zip(*split.held_out_boxes[0])))
