"""ResNet aligner: architecture, batch invariance, any detector size, safetensors + sha256, shipped weights."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tomoflow.align.resnet import (  # noqa: E402  (after pytest.importorskip)
    CHECK_NAME,
    INPUT_SIZE,
    JitterAligner,
    build_network,
    default_weights_path,
    load_aligner,
    normalize_pairs,
    prepare_pairs,
)
from tomoflow.errors import ConfigError, InputError  # noqa: E402  (after pytest.importorskip)
from tomoflow.nn import count_parameters  # noqa: E402  (after pytest.importorskip)
from tomoflow.train.files import save_weights  # noqa: E402  (after pytest.importorskip)


def _random_model(seed: int = 0):
    """A network with random weights *and* random BatchNorm running statistics."""
    torch.manual_seed(seed)
    model = build_network()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model


def _pairs(n: int, shape=(INPUT_SIZE, INPUT_SIZE), seed: int = 0):
    rng = np.random.default_rng(seed)
    p = rng.random((n, *shape)).astype(np.float32) * 2.0
    r = p + 0.1 * rng.standard_normal((n, *shape)).astype(np.float32)
    return p, r


class _Constant(torch.nn.Module):
    """Stands in for the network: always answers (1, 1) network pixels."""

    def forward(self, x):
        return torch.ones(x.shape[0], 2, dtype=x.dtype, device=x.device)


# ----------------------------------------------------------------------------- architecture
def test_architecture_as_published():
    model = build_network()
    # 2.78 M parameters (2,784,386 with the BatchNorm scales and offsets)
    assert count_parameters(model) == 2_784_386
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert sum(c.kernel_size != (1, 1) for c in convs) == 13  # stem + 3 stages x 2 blocks x 2
    assert sum(c.kernel_size == (1, 1) and c.stride == (2, 2) for c in convs) == 3  # projection shortcuts
    assert convs[0].in_channels == 2 and convs[0].out_channels == 64 and convs[0].kernel_size == (7, 7)
    assert convs[0].stride == (2, 2)
    assert model.fc.in_features == 256 and model.fc.out_features == 2
    out = model.eval()(torch.zeros(3, 2, INPUT_SIZE, INPUT_SIZE))
    assert out.shape == (3, 2)


# ----------------------------------------------------------------------------- batch invariance
def test_same_pair_same_shift_in_any_batch():
    aligner = JitterAligner(model=_random_model())
    p, r = _pairs(4, seed=1)
    alone = aligner.predict(p[0], r[0])
    in_batch = aligner.predict(p, r, batch_size=4)[0]
    # other companions, other batch size, other position in the batch
    p2, r2 = _pairs(3, seed=2)
    p2[2], r2[2] = p[0], r[0]
    elsewhere = aligner.predict(p2, r2, batch_size=3)[2]
    assert alone.shape == (2,)
    np.testing.assert_allclose(in_batch, alone, atol=1e-5)
    np.testing.assert_allclose(elsewhere, alone, atol=1e-5)
    assert not aligner.model.training


@pytest.mark.slow
def test_flip_augmentation_is_equivariant_and_batch_invariant():
    """Averaging the readings of a pair flipped four ways makes the answer exactly equivariant: the
    pair mirrored left-right reads (dy, -dx), up-down (-dy, dx); and still per pair."""
    aligner = JitterAligner(model=_random_model(3))
    p, r = _pairs(3, seed=4)
    base = aligner.predict(p, r, flips=True)
    lr = aligner.predict(p[..., ::-1].copy(), r[..., ::-1].copy(), flips=True)
    ud = aligner.predict(p[:, ::-1].copy(), r[:, ::-1].copy(), flips=True)
    np.testing.assert_allclose(lr, base * [1, -1], atol=1e-5)
    np.testing.assert_allclose(ud, base * [-1, 1], atol=1e-5)
    np.testing.assert_allclose(aligner.predict(p[1], r[1], flips=True), base[1], atol=1e-5)
    assert not np.allclose(base, aligner.predict(p, r))  # a random network is not equivariant by itself


def test_normalisation_is_per_pair_and_keeps_relative_intensity():
    p, r = _pairs(4, seed=3)
    x = prepare_pairs(p, r, normalize=False)
    y = normalize_pairs(x)
    # an affine change of one pair's intensities (both channels) leaves its input unchanged
    x2 = x.clone()
    x2[1] = 3.0 * x2[1] + 5.0
    y2 = normalize_pairs(x2)
    torch.testing.assert_close(y2, y, atol=1e-4, rtol=1e-4)
    # the reprojection channel is centred and scaled; the measured one with the same statistics
    assert abs(float(y[0, 1].mean())) < 1e-4 and abs(float(y[0, 1].std(unbiased=False)) - 1.0) < 1e-3
    x3 = x.clone()
    x3[0, 0] *= 2.0  # a brighter measured projection stays brighter after normalisation
    assert float(normalize_pairs(x3)[0, 0].mean()) > float(y[0, 0].mean())


# ----------------------------------------------------------------------------- sizes
@pytest.mark.parametrize("shape", [(135, 160), (256, 256), (64, 512), (32, 32)])
def test_any_detector_size_and_shift_scaling(shape):
    aligner = JitterAligner(model=_Constant())
    p, r = _pairs(3, shape=shape)
    out = aligner.predict(p, r)
    assert out.shape == (3, 2) and out.dtype == np.float64
    np.testing.assert_allclose(out, np.tile([shape[0] / INPUT_SIZE, shape[1] / INPUT_SIZE], (3, 1)))


def test_resampling_is_antialiased_and_scales_positions():
    # a blob displaced by (12, -20) px on a 320 x 480 detector moves by (6, -6.67) network pixels
    rows, cols = 320, 480
    yy, xx = np.mgrid[:rows, :cols].astype(np.float64)

    def blob(cy, cx):
        return np.exp(-((yy - cy) ** 2 / 200.0 + (xx - cx) ** 2 / 300.0)).astype(np.float32)

    a, b = blob(150.0, 250.0), blob(162.0, 230.0)
    x = prepare_pairs(np.stack([a, b]), np.stack([a, a]), normalize=False)[:, 0].numpy()
    assert x.shape == (2, INPUT_SIZE, INPUT_SIZE)

    def centroid(img):
        g = np.mgrid[: img.shape[0], : img.shape[1]]
        return np.array([(g[k] * img).sum() / img.sum() for k in range(2)])

    moved = centroid(x[1]) - centroid(x[0])
    np.testing.assert_allclose(moved, [12 * INPUT_SIZE / rows, -20 * INPUT_SIZE / cols], atol=0.05)
    # anti-aliased: a pixel-scale checkerboard averages out instead of aliasing
    checker = ((yy + xx) % 2).astype(np.float32)
    y = prepare_pairs(checker[None], checker[None], normalize=False)[0, 0].numpy()
    assert abs(y.mean() - 0.5) < 0.01 and y.std() < 0.1


def test_bad_inputs():
    aligner = JitterAligner(model=_Constant())
    p, r = _pairs(2, shape=(31, 64))
    with pytest.raises(InputError, match="too small"):
        aligner.predict(p, r)
    p, r = _pairs(2, shape=(40, 40))
    with pytest.raises(InputError, match="differs"):
        aligner.predict(p, r[:1])
    p[1, 3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        aligner.predict(p, r)
    with pytest.raises(ConfigError):
        aligner.predict(p, r, batch_size=0)


# ----------------------------------------------------------------------------- weights on disk
def _save_with_card(model, tmp_path):
    path = tmp_path / "jitter_resnet.safetensors"
    sha = save_weights(model, path)
    (tmp_path / "jitter_resnet.json").write_text(json.dumps({"sha256": sha, "weights": path.name}))
    return path


def test_safetensors_round_trip_and_tampering(tmp_path):
    model = _random_model(seed=4)
    path = _save_with_card(model, tmp_path)
    aligner = load_aligner(path, device="cpu")
    p, r = _pairs(3, seed=5)
    np.testing.assert_allclose(aligner.predict(p, r), JitterAligner(model=model).predict(p, r), atol=1e-6)
    # one flipped bit in the weights: refused
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="sha256"):
        load_aligner(path)
    # no card: refused (no card, no load)
    (tmp_path / "jitter_resnet.json").unlink()
    with pytest.raises(InputError, match="model card"):
        load_aligner(path)
    with pytest.raises(InputError, match="no such weights"):
        load_aligner(tmp_path / "missing.safetensors")


def test_pickle_files_are_never_loaded(tmp_path):
    path = tmp_path / "jitter_resnet.safetensors"
    torch.save(build_network().state_dict(), path)  # a pickle disguised as safetensors
    from tomoflow._hashing import file_sha256

    (tmp_path / "jitter_resnet.json").write_text(json.dumps({"sha256": file_sha256(path), "weights": path.name}))
    with pytest.raises(InputError, match="safetensors"):
        load_aligner(path)


def test_device_choice():
    with pytest.raises(ConfigError):
        load_aligner(device="tpu")


# ----------------------------------------------------------------------------- shipped weights
@pytest.mark.skipif(not default_weights_path().is_file(), reason="shipped weights not added yet")
def test_shipped_weights_reproduce_the_card_check_metric():
    from safetensors.numpy import load_file

    aligner = load_aligner(device="cpu")  # checks the sha256 against the card
    card = aligner.card
    check = card["metrics"]["check_set"]
    files = default_weights_path().parent
    data = load_file(str(files / CHECK_NAME))
    pred = aligner.predict(data["projections"].astype(np.float32), data["reprojections"].astype(np.float32))
    err = pred - data["shifts"].astype(np.float64)
    np.testing.assert_allclose(pred, np.asarray(check["predictions"]), atol=1e-3)
    np.testing.assert_allclose(np.sqrt(np.mean(err**2, axis=0)), check["rmse_px"], atol=1e-3)
    assert card["architecture"]["parameters"] == 2_784_386
    assert card["command"]


# ----------------------------------------------------------------------------- GPU
@pytest.mark.gpu("torch")
def test_cupy_inputs_on_cuda_match_cpu():
    import cupy

    model = _random_model(seed=7)
    p, r = _pairs(5, shape=(135, 160), seed=8)
    cpu = JitterAligner(model=model, device="cpu").predict(p, r)
    gpu = JitterAligner(model=_random_model(seed=7), device="cuda").predict(cupy.asarray(p), cupy.asarray(r))
    assert isinstance(gpu, np.ndarray)
    np.testing.assert_allclose(gpu, cpu, atol=1e-3)
