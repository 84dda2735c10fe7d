"""The ``recover`` stage's block function on each torch device: the blocks that ``recover_volume`` sends to a GPU
worker (device ``"cuda"``) stitch to the CPU's whole-volume inference within tolerance
(``@pytest.mark.gpu("torch")`` runs the CUDA variant on a GPU machine)."""

from __future__ import annotations

import numpy as np
import pytest

from tomoflow._hashing import file_sha256

pytest.importorskip("torch")

from tomoflow.pipeline.recover import _recover_block
from tomoflow.recover import plan_tiles, predict_volume
from tomoflow.recover.tiling import valid_halo
from tomoflow.recover.unet import alignment, receptive_field
from tomoflow.testing import write_random_unet, write_volume_store

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu("torch"))]
TOL = {"cpu": 1e-5, "cuda": 2e-2}  # relative to max |reference|; CUDA: cuDNN's TF32 convolutions (torch's default)
SHAPE = (20, 37, 29)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("recover-device")
    weights = d / "unet.safetensors"
    model = write_random_unet(weights)
    data = np.random.default_rng(1).random(SHAPE).astype(np.float32)
    src = write_volume_store(d / "in.zarr", data)
    return weights, model, data, src


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("valid", [False, True])
def test_blocks_on_device_equal_cpu_whole_volume(setup, device, valid):
    weights, model, data, src = setup
    want = predict_volume(model, data, device="cpu")
    a = alignment(model)
    halo = valid_halo(model, SHAPE, 16, a) if valid else receptive_field(model)
    assert halo is not None  # the default U-Net runs unpadded on these boxes, as recover_volume plans them
    tiles = plan_tiles(SHAPE, 16, halo, a)
    got = np.full(SHAPE, np.nan, np.float32)
    sha = file_sha256(weights)
    for t in tiles:
        y = _recover_block(str(src.path), str(weights), sha, device, "reflect", t.in_start, t.in_stop, t.crop, valid)
        assert isinstance(y, np.ndarray) and y.dtype == np.float32
        got[t.out_slices] = y
    assert np.all(np.isfinite(got))
    assert np.abs(got - want).max() <= TOL[device] * np.abs(want).max()
