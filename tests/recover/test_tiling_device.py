"""Tiled and whole-volume U-Net inference on each torch device: CUDA gives the CPU's result within tolerance,
tiles stitch exactly on the device, results come back as host float32 NumPy, the network's mode is restored
(``@pytest.mark.gpu("torch")`` runs the CUDA variants on a GPU machine)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tomoflow.recover.normalization import with_normalization  # noqa: E402  (after pytest.importorskip)
from tomoflow.recover.tiling import predict_tiled, predict_volume  # noqa: E402  (after pytest.importorskip)
from tomoflow.recover.unet import build_unet  # noqa: E402  (after pytest.importorskip)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu("torch"))]
SHAPE = (30, 37, 26)
# relative to max |reference|: float rounding on the CPU; on CUDA, cuDNN may round convolution inputs to TF32
# (torch's default ``torch.backends.cudnn.allow_tf32``), about 1e-3 relative per layer
TOL = {"cpu": 1e-5, "cuda": 2e-2}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_unet(channels=(4, 8)).eval()


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return np.random.default_rng(0).random(SHAPE, dtype=np.float32)


@pytest.fixture(scope="module")
def reference(model, volume):
    return predict_volume(model, volume, device="cpu")


def _rel(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


@pytest.mark.parametrize("device", DEVICES)
def test_predict_volume_on_device_equals_cpu(model, volume, reference, device):
    got = predict_volume(model, volume, device=device)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == SHAPE
    assert _rel(got, reference) <= TOL[device]
    assert not model.training


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("block, batch", [(8, 1), (16, 3)])
def test_predict_tiled_on_device_equals_whole_volume(model, volume, reference, device, block, batch):
    whole = predict_volume(model, volume, device=device)
    got = predict_tiled(model, volume, block=block, batch=batch, device=device)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    assert _rel(got, whole) <= TOL[device]  # tiles stitched on the device
    assert _rel(got, reference) <= TOL[device]  # and the CPU's result


@pytest.mark.parametrize("device", DEVICES)
def test_normalised_network_on_device_equals_cpu(model, volume, device):
    card = {"normalisation": {"offset": 0.25, "scale": 2.0}}
    net = with_normalization(model, card)
    want = predict_volume(net, volume, device="cpu")
    got = predict_tiled(net, volume, block=16, device=device)
    assert _rel(got, want) <= TOL[device]
    model.to("cpu")  # the module fixture is shared: put it back where the reference ran
