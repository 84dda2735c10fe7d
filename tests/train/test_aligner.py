"""The trainer of the ResNet aligner: tiny end-to-end run with resume, card and check set, fine-tuning."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tomoflow.align.resnet import CARD_NAME, CHECK_NAME, WEIGHTS_NAME, load_aligner  # noqa: E402  (after pytest.importorskip)
from tomoflow.align.training_data import TrainingRecipe  # noqa: E402  (after pytest.importorskip)
from tomoflow.errors import ConfigError, InputError  # noqa: E402  (after pytest.importorskip)
from tomoflow.train import aligner as training  # noqa: E402  (after pytest.importorskip)
from tomoflow.train.aligner import make_training_scans, train_aligner  # noqa: E402  (after pytest.importorskip)

TINY = dict(n_scans=2, size=48, n_angles=12, batch_size=8, seed=3, device="cpu", val_fraction=0.5)


def test_train_aligner_tiny_end_to_end_and_resume(tmp_path, monkeypatch):
    calls = []
    card = train_aligner(
        tmp_path, epochs=1, command="tomoflow train-aligner tiny", progress=lambda *a: calls.append(a), **TINY
    )
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
    aligner = load_aligner(tmp_path / WEIGHTS_NAME, device="cpu")
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
    card = train_aligner(
        tmp_path / "b",
        epochs=1,
        lr=1e-12,
        init_weights=tmp_path / "a" / WEIGHTS_NAME,
        cache_dir=tmp_path / "a" / "cache",
        **TINY,
    )
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
