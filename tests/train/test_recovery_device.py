"""Per-sample training on each torch device: a few steps of ``train_recovery`` run on the device asked for, record
it in the card, keep finite weights and losses, and give a network that runs on the CPU afterwards
(``@pytest.mark.gpu("torch")`` runs the CUDA variant on a GPU machine)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tomoflow.recover.tiling import predict_volume  # noqa: E402  (after pytest.importorskip)
from tomoflow.recover.unet import UNetConfig, load_unet  # noqa: E402  (after pytest.importorskip)
from tomoflow.train.recovery import train_recovery  # noqa: E402  (after pytest.importorskip)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu("torch"))]


@pytest.fixture(scope="module")
def pair():
    """32³ HR ROI (1 um) in a 32³ LFOV (2 um); the LFOV resampled onto the HR grid with the true matrix."""
    from tomoflow.register.resample import resample_to_grid
    from tomoflow.sim import simulate_multiscale_pair

    p = simulate_multiscale_pair(hr_shape=(32,) * 3, lfov_shape=(32,) * 3, lfov_spacing_um=2.0, seed=5)
    return resample_to_grid(p.lfov, p.true_matrix, p.hr.shape, p.hr_spacing_um, p.lfov_spacing_um), p.hr


@pytest.mark.parametrize("device", DEVICES)
def test_a_few_steps_on_the_device(pair, tmp_path, device):
    inp, hr = pair
    seen = []
    res = train_recovery(
        inp,
        hr,
        out_dir=tmp_path,
        config=UNetConfig(channels=(4, 8)),
        patch=16,
        batch=2,
        epochs=2,
        steps_per_epoch=3,
        num_workers=0,
        seed=0,
        device=device,
        progress=lambda e, s, n, tl, vl: seen.append(vl),
    )
    tr = res.card["training"]
    assert tr["device"].startswith(device) and tr["epochs_run"] == 2 and len(res.history) == 2
    assert all(np.isfinite([h["train_l1"] for h in res.history])) and all(
        np.isfinite([h["val_l1"] for h in res.history])
    )
    assert np.isfinite(res.metrics["val_l1"]) and res.metrics["val_l1"] > 0
    assert any(v is not None for v in seen)
    assert all(torch.isfinite(p).all() for p in res.model.parameters())
    # the files are device-independent: the weights load on the CPU and predict there
    card = json.loads(res.card_path.read_text())
    assert card["training"]["device"] == tr["device"]
    net = load_unet(res.weights, device="cpu")
    out = predict_volume(net, inp[:16, :16, :16], device="cpu")
    assert out.shape == (16, 16, 16) and np.all(np.isfinite(out))
