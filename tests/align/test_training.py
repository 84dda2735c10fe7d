"""Training of the ResNet aligner: pair simulator, tiny end-to-end run with resume, card and check set."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tomoflow.align import training  # noqa: E402
from tomoflow.align.resnet import CARD_NAME, CHECK_NAME, INPUT_SIZE, WEIGHTS_NAME, build_network, load_aligner  # noqa: E402
from tomoflow.align.training import TrainingRecipe, make_training_scans, train_aligner  # noqa: E402
from tomoflow.errors import ConfigError, InputError  # noqa: E402

TINY = dict(n_scans=2, size=48, n_angles=12, batch_size=8, seed=3, device="cpu", val_fraction=0.5)


@pytest.mark.slow
def test_simulated_pairs_match_the_recipe():
    recipe = TrainingRecipe(size=48, n_angles=12, anisotropic_fraction=0.0, clean_fraction=1.0, pillar_fraction=0.0)
    item = training.simulate_scan_pairs(0, recipe=recipe, seed=11)
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
    again = training.simulate_scan_pairs(0, recipe=recipe, seed=11)
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
        loss = torch.mean((model(training.normalize_pairs(x)) - y) ** 2)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.slow
def test_train_aligner_tiny_end_to_end_and_resume(tmp_path, monkeypatch):
    calls = []
    card = train_aligner(tmp_path, epochs=1, command="tomoflow train-aligner tiny", progress=lambda *a: calls.append(a),
                         **TINY)
    for name in (WEIGHTS_NAME, CARD_NAME, CHECK_NAME):
        assert (tmp_path / name).is_file()
    assert json.loads((tmp_path / CARD_NAME).read_text()) == json.loads(json.dumps(card, default=float))
    assert card["command"] == "tomoflow train-aligner tiny"
    assert card["training_data"]["n_scans"] == 2 and card["training_data"]["n_pairs"] == 24
    assert card["training_data"]["n_val_scans"] == 1 and card["training_data"]["seed"] == 3
    assert card["architecture"]["parameters"] == 2_784_386
    held = card["metrics"]["held_out"]
    assert len(held["rmse_px"]) == 2 and held["mse_px2"] >= 0
    assert card["metrics"]["check_set"]["n_pairs"] == 12
    assert [c[0] for c in calls if c[0] == 0] == [0, 0]  # simulation progress: one call per scan
    assert calls[-1][0] == 1 and calls[-1][2] == calls[-1][1] and calls[-1][4] is not None

    # the written weights load (sha256 checked) and reproduce the card's check metric
    aligner = load_aligner(tmp_path / WEIGHTS_NAME)
    from safetensors.numpy import load_file

    chk = load_file(str(tmp_path / CHECK_NAME))
    pred = aligner.predict(chk["projections"].astype(np.float32), chk["reprojections"].astype(np.float32))
    np.testing.assert_allclose(pred, card["metrics"]["check_set"]["predictions"], atol=1e-4)

    # resume: a second epoch continues from the checkpoint, the pairs come from the cache
    def no_simulation(*args, **kwargs):
        raise AssertionError("the cached pairs were simulated again")

    monkeypatch.setattr(training, "simulate_scan_pairs", no_simulation)
    card2 = train_aligner(tmp_path, epochs=2, command="again", **TINY)
    hist = card2["training"]["history"]
    assert [h["epoch"] for h in hist] == [1, 2]
    assert hist[0] == card["training"]["history"][0]
    # other training parameters in the same folder are refused, not mixed
    with pytest.raises(ConfigError, match="other training parameters"):
        train_aligner(tmp_path, epochs=2, **dict(TINY, batch_size=4))
    with pytest.raises(ConfigError, match="another recipe"):
        make_training_scans(2, recipe=TrainingRecipe(size=40), seed=3, cache_dir=tmp_path / "cache")


@pytest.mark.slow
def test_fine_tuning_starts_from_given_weights(tmp_path):
    from safetensors.torch import load_file

    first = train_aligner(tmp_path / "a", epochs=1, **TINY)
    # a vanishing learning rate: the fine-tuned convolutions are the given ones (BatchNorm statistics
    # still follow the data), which a random initialisation would not give
    card = train_aligner(tmp_path / "b", epochs=1, lr=1e-12, init_weights=tmp_path / "a" / WEIGHTS_NAME,
                         cache_dir=tmp_path / "a" / "cache", **TINY)
    assert card["training"]["initialized_from"] == {"file": WEIGHTS_NAME, "sha256": first["sha256"]}
    given, tuned = (load_file(str(tmp_path / d / WEIGHTS_NAME)) for d in ("a", "b"))
    convs = [k for k in given if k.endswith("weight") and given[k].ndim == 4]
    assert convs and all(torch.allclose(given[k], tuned[k], atol=1e-6) for k in convs)
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    for bad in (tmp_path / "missing.safetensors", tmp_path / "junk.safetensors"):
        with pytest.raises(InputError, match="init weights"):  # a ModelError: no card, no load
            train_aligner(tmp_path / "c", epochs=1, init_weights=bad, cache_dir=tmp_path / "a" / "cache", **TINY)


def test_split_is_by_scan():
    train, val = training._split_by_scan(20, 0.2, seed=1)
    assert len(val) == 4 and len(train) == 16 and not set(train) & set(val)


def test_bad_parameters():
    with pytest.raises(ConfigError):
        train_aligner("/nonexistent/never", n_scans=1)
    with pytest.raises(ConfigError):
        train_aligner("/nonexistent/never", val_fraction=0.0)
    with pytest.raises(ConfigError):
        make_training_scans(1, recipe=TrainingRecipe(families=("gold", "rock"), family_weights=(1, 1)))


def test_filling_family_spans_the_field():
    """The optional ``filling`` phantoms are as wide and tall as the detector at every angle (the jitter
    then pushes them out of it); the other families stay mostly inside."""
    from tomoflow.recon import project

    recipe = TrainingRecipe()
    angles = np.array([0.0, 45.0, 90.0, 135.0])

    def coverage(family, seed):
        vol = training._make_phantom(family, (40, 40, 40), np.random.default_rng(seed), recipe)
        p = np.asarray(project(vol, angles))
        hit = p > 0.02 * p.max()
        return float(hit.any(axis=1).mean(axis=1).min()), float(hit.any(axis=2).mean(axis=1).min())

    filling = [coverage("filling", s) for s in range(4)]
    assert min(c for c, _ in filling) >= 0.75 and min(r for _, r in filling) >= 0.75, filling
    gold = [coverage("gold", s) for s in range(4)]
    assert min(c for c, _ in gold) < 0.75, gold
    assert "filling" in training.FAMILIES and "filling" not in recipe.families  # optional, not the default
    with_filling = TrainingRecipe(families=training.FAMILIES, family_weights=(1, 1, 1, 1))
    training._check_recipe(with_filling)  # accepted


def test_unknown_family_is_named():
    with pytest.raises(ConfigError, match="rock.*filling"):
        make_training_scans(1, recipe=TrainingRecipe(families=("rock",), family_weights=(1,)))
