"""Resolution-recovery 3D U-Net: shapes, no normalisation, receptive field, config and weights round trips."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tomoflow.errors import ConfigError, InputError  # noqa: E402  (after pytest.importorskip)
from tomoflow.nn import count_parameters  # noqa: E402  (after pytest.importorskip)
from tomoflow.recover.unet import (  # noqa: E402  (after pytest.importorskip)
    UNetConfig,
    alignment,
    build_unet,
    load_unet,
    receptive_field,
    valid_region,
)
from tomoflow.train.files import save_unet  # noqa: E402  (after pytest.importorskip)

TINY = (4, 8)


def _tiny(seed: int = 0, channels=TINY, **kw):
    torch.manual_seed(seed)
    return build_unet(channels=channels, **kw).eval()


@pytest.mark.parametrize("shape", [(7, 9, 11), (1, 5, 3), (8, 8, 8), (13, 4, 6)])
def test_output_shape_any_size(shape) -> None:
    model = _tiny(channels=(2, 3, 4))
    x = torch.rand(2, 1, *shape)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


def test_residual_adds_input_and_channels() -> None:
    torch.manual_seed(0)
    res = build_unet(channels=TINY, residual=True).eval()
    plain = build_unet(channels=TINY, residual=False).eval()
    plain.load_state_dict(res.state_dict())
    x = torch.rand(1, 1, 8, 8, 8)
    with torch.no_grad():
        assert torch.allclose(res(x), plain(x) + x, atol=1e-6)
    two = build_unet(channels=TINY, in_channels=2, out_channels=3, residual=False)
    assert two(torch.rand(1, 2, 4, 6, 4)).shape == (1, 3, 4, 6, 4)
    with pytest.raises(ConfigError, match="in_channels == out_channels"):
        build_unet(in_channels=2, out_channels=1, residual=True)
    with pytest.raises(InputError, match=r"\(n, channel, z, y, x\)"):
        res(torch.rand(1, 8, 8, 8))


def _plain_forward(net, x):
    """The U-Net written out plainly (modules, a concatenated skip): the reference for the lean forward."""
    skips, h = [], x
    for lvl, enc in enumerate(net.encoders):
        h = enc(net.pool(h) if lvl else h)
        skips.append(h)
    skips.pop()
    for up, dec in zip(net.ups, net.decoders):
        h = dec(torch.cat([up(h), skips.pop()], dim=1))
    return net.head(h) + x


@pytest.mark.parametrize("channels", [(4, 8), (16, 32, 64)])
def test_lean_forward_equals_the_plain_network(channels) -> None:
    """The forward pass (channels-last, split skip convolution, in-place activations) computes the same
    function as the textbook network, and its gradients are the same too."""
    torch.manual_seed(3)
    net = build_unet(channels=channels)
    x = torch.randn(2, 1, 24, 20, 16)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))  # a non-zero head, so the whole network matters
        want, got = _plain_forward(net, x), net(x)
    assert got.is_contiguous() and got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
    grads = []
    for fn in (_plain_forward, lambda n, t: n(t)):
        net.zero_grad()
        fn(net, x).square().mean().backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(a.abs().max()) + 1e-8)


@pytest.mark.parametrize(
    "channels,box",
    [((4,), (9, 12, 10)), ((4, 8), (30, 27, 33)), ((2, 3, 3), (56, 61, 64)), ((2, 2, 2, 2), (104, 107, 112))],
)
def test_valid_evaluation_is_the_padded_network_cropped(channels, box) -> None:
    """Without padding (convolutions unpadded, features cut to the pooling grid), the network returns
    exactly the voxels of its valid region, equal to the padded network's output there; the region's
    margin never exceeds the receptive-field radius."""
    torch.manual_seed(4)
    net = build_unet(channels=channels).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    region = valid_region(net, box)
    assert region is not None
    assert all(0 < lo <= receptive_field(net) for lo, _ in region)
    x = torch.randn(2, 1, *box)
    with torch.inference_mode():
        want = net(x)[(slice(None), slice(None)) + tuple(slice(lo, hi) for lo, hi in region)]
        got = net(x, valid=True)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))


def test_valid_region_depends_on_box_parity_not_on_a_radius() -> None:
    # default network: margin 22 on an aligned box (the radius, 23, is reached only off the pooling grid)
    assert valid_region(UNetConfig(), (180, 176, 181)) == ((22, 158), (22, 154), (22, 158))
    assert valid_region(UNetConfig(), (45, 52, 60)) is None
    with pytest.raises(InputError, match="too small for valid evaluation"):
        build_unet(channels=TINY)(torch.zeros(1, 1, 8, 8, 8), valid=True)


def test_parameter_count_is_stable() -> None:
    assert count_parameters(build_unet()) == 339_249
    assert count_parameters(build_unet(channels=TINY)) == 4_725


def test_no_normalisation_layers() -> None:
    norms = (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm, torch.nn.LayerNorm, torch.nn.LocalResponseNorm)
    model = build_unet()
    assert not [m for m in model.modules() if isinstance(m, norms)]
    assert {type(m).__name__ for m in model.modules()} >= {"Conv3d", "ConvTranspose3d", "MaxPool3d", "LeakyReLU"}


def test_receptive_field_and_alignment_values() -> None:
    assert receptive_field(UNetConfig()) == 23
    assert alignment(UNetConfig()) == 4
    for levels in range(1, 6):
        cfg = UNetConfig(channels=(2,) * levels)
        assert receptive_field(cfg) == 2 * (2**levels - 1) + 3 * (2 ** (levels - 1) - 1)
        assert alignment(cfg) == 2 ** (levels - 1)
    assert receptive_field(build_unet(channels=TINY)) == 9
    with pytest.raises(ConfigError, match="UNetConfig"):
        receptive_field(torch.nn.Conv3d(1, 1, 3))


@pytest.mark.parametrize("channels", [(3,), TINY, (2, 3, 3)])
def test_receptive_field_analytic_equals_empirical(channels) -> None:
    """Perturb one input voxel and find how far the output changes (float64, every residue mod the
    alignment, so that the extreme parity pattern of the transposed convolutions is met)."""
    model = _tiny(channels=channels).double()
    r, a = receptive_field(model), alignment(model)
    n = 2 * r + 2 * a + 4
    x = torch.rand(1, 1, n, n, n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    reach = 0
    with torch.no_grad():
        y0 = model(x)
        for k in range(a):
            c = n // 2 + k
            x1 = x.clone()
            x1[0, 0, c, c, c] += 1.0
            changed = torch.nonzero((model(x1) - y0).abs()[0, 0] > 1e-12 * float(y0.abs().max()))
            reach = max(reach, int((changed - c).abs().max()))
    assert reach == r, (channels, reach, r)


def test_config_json_round_trip() -> None:
    cfg = UNetConfig(channels=(8, 16, 32, 64), residual=False)
    text = cfg.to_json()
    assert json.loads(text)["channels"] == [8, 16, 32, 64]
    assert UNetConfig.from_json(text) == cfg
    assert UNetConfig.from_dict(json.loads(json.dumps(UNetConfig().to_dict()))) == UNetConfig()
    assert build_unet(config=cfg).config == cfg
    with pytest.raises(ConfigError, match="unknown"):
        UNetConfig.from_dict({"channels": [4], "depth": 3})
    with pytest.raises(ConfigError, match="architecture"):
        UNetConfig.from_dict({"name": "JitterResNet"})
    with pytest.raises(ConfigError, match="channels"):
        UNetConfig(channels=())
    with pytest.raises(ConfigError, match=r"channels\[1\]"):
        UNetConfig(channels=(4, 0))


def test_save_load_round_trip(tmp_path) -> None:
    model = _tiny(3, channels=(2, 4, 4))
    path = tmp_path / "recover_unet.safetensors"
    card = save_unet(model, model.config, path, card={"training_data": {"seed": 3}})
    on_disk = json.loads((tmp_path / "recover_unet.json").read_text())
    assert on_disk == card
    assert card["format"] == "safetensors" and card["weights"] == path.name
    assert card["architecture"]["receptive_field"] == 14 + 9 == receptive_field(model)
    assert card["architecture"]["parameters"] == count_parameters(model)
    loaded = load_unet(path, device="cpu")
    assert loaded.config == model.config and not loaded.training
    assert loaded.card["training_data"] == {"seed": 3}
    x = torch.rand(1, 1, 9, 10, 11)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # the config travels in the safetensors metadata, not a pickle
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert UNetConfig.from_json(f.metadata()["config"]) == model.config


def test_load_refuses_tampered_or_mismatched(tmp_path) -> None:
    model = _tiny()
    path = tmp_path / "u.safetensors"
    save_unet(model, model.config, path)
    with pytest.raises(ConfigError, match="differs"):
        save_unet(model, UNetConfig(channels=(4, 16)), tmp_path / "v.safetensors")
    card_file = tmp_path / "u.json"
    card = json.loads(card_file.read_text())
    card["architecture"]["channels"] = [4, 16]
    card_file.write_text(json.dumps(card))
    with pytest.raises(InputError, match="differs from the weights"):
        load_unet(path)
    from tomoflow.errors import StoreError

    with pytest.raises(StoreError, match="not written by tomoflow"):  # an edited card is the user's now
        save_unet(model, model.config, path)
    card_file.unlink()
    save_unet(model, model.config, path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="sha256"):
        load_unet(path)
    with pytest.raises(InputError, match="no such weights"):
        load_unet(tmp_path / "missing.safetensors")
    card_file.unlink()
    with pytest.raises(InputError, match="no model card beside it"):
        load_unet(path)


def test_modules_import_without_torch() -> None:
    code = (
        "import json, sys\n"
        "import tomoflow.recover.unet, tomoflow.recover.tiling\n"
        "cfg = tomoflow.recover.unet.UNetConfig()\n"
        "r = tomoflow.recover.unet.receptive_field(cfg)\n"
        "t = tomoflow.recover.tiling.plan_tiles((40, 40, 40), 16, r, 4)\n"
        "print(json.dumps([m for m in ('torch', 'safetensors', 'dask', 'zarr') if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_config_accepts_numpy_integers() -> None:
    # a config built from numpy integers still serialises to plain JSON
    cfg = UNetConfig(channels=tuple(np.array([4, 8])), in_channels=np.int64(1))
    assert UNetConfig.from_json(cfg.to_json()) == cfg
