"""Simulated training pairs of the ResNet aligner: the recipe, the phantom families, the targets."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tomoflow.align import training_data  # noqa: E402
from tomoflow.align.resnet import INPUT_SIZE, build_network  # noqa: E402
from tomoflow.align.training_data import TrainingRecipe  # noqa: E402
from tomoflow.errors import ConfigError  # noqa: E402


@pytest.mark.slow
def test_simulated_pairs_match_the_recipe():
    recipe = TrainingRecipe(size=48, n_angles=12, anisotropic_fraction=0.0, clean_fraction=1.0, pillar_fraction=0.0)
    item = training_data.simulate_scan_pairs(0, recipe=recipe, seed=11)
    x, y, meta = item["x"], item["y"], item["meta"]
    assert x.shape == (12, 2, INPUT_SIZE, INPUT_SIZE) and x.dtype == np.float16
    assert y.shape == (12, 2) and y.dtype == np.float32
    assert np.all(np.isfinite(x.astype(np.float32)))
    # targets: jitter in network px, common vertical shift removed; within the half-range (+ centre error)
    assert abs(float(y[:, 0].mean())) < 1e-4
    assert np.abs(y[:, 0]).max() <= 2 * recipe.jitter + 1e-3
    assert abs(meta["center_error_net_px"]) <= recipe.max_center_error
    # ... and no object-translation sinusoid in dx (the reconstruction absorbs it: not learnable)
    theta = np.deg2rad(np.linspace(0, 180, 12))
    coef, *_ = np.linalg.lstsq(np.stack([np.cos(theta), np.sin(theta)], axis=1), y[:, 1] - y[:, 1].mean(), rcond=None)
    assert np.abs(coef).max() < 1e-3
    assert meta["family"] in recipe.families
    # the measured channel is not the reprojection, and both carry the object
    assert np.abs(x[:, 0].astype(np.float32) - x[:, 1].astype(np.float32)).mean() > 1e-3
    # deterministic per (seed, index)
    again = training_data.simulate_scan_pairs(0, recipe=recipe, seed=11)
    np.testing.assert_array_equal(again["x"], x)


@pytest.mark.slow
def test_loss_decreases_on_a_few_steps():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    # (the network takes any size; 64 x 64 keeps this test fast)
    img = torch.from_numpy(rng.random((4, 1, 64, 64)).astype(np.float32))
    x = torch.cat([img, torch.roll(img, shifts=(3, -2), dims=(2, 3))], dim=1)
    y = torch.tensor([[3.0, -2.0]] * 4)
    model = build_network().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss = torch.mean((model(training_data.normalize_pairs(x)) - y) ** 2)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_filling_family_spans_the_field():
    """The optional ``filling`` phantoms are as wide and tall as the detector at every angle (the jitter
    then pushes them out of it); the other families stay mostly inside."""
    from tomoflow.recon import project

    recipe = TrainingRecipe()
    angles = np.array([0.0, 45.0, 90.0, 135.0])

    def coverage(family, seed):
        vol = training_data._make_phantom(family, (40, 40, 40), np.random.default_rng(seed), recipe)
        p = np.asarray(project(vol, angles))
        hit = p > 0.02 * p.max()
        return float(hit.any(axis=1).mean(axis=1).min()), float(hit.any(axis=2).mean(axis=1).min())

    filling = [coverage("filling", s) for s in range(4)]
    assert min(c for c, _ in filling) >= 0.75 and min(r for _, r in filling) >= 0.75, filling
    gold = [coverage("gold", s) for s in range(4)]
    assert min(c for c, _ in gold) < 0.75, gold
    assert "filling" in training_data.FAMILIES and "filling" not in recipe.families  # optional, not the default
    with_filling = TrainingRecipe(families=training_data.FAMILIES, family_weights=(1, 1, 1, 1))
    training_data.check_recipe(with_filling)  # accepted


def test_unknown_family_is_named():
    with pytest.raises(ConfigError, match="rock.*filling"):
        training_data.check_recipe(TrainingRecipe(families=("rock",), family_weights=(1,)))
