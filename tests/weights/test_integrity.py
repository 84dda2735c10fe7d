"""Model integrity: every model file tomoflow loads — the jitter ResNet's and the U-Net's safetensors, the
U-Net's ONNX export, ``--init-weights`` of both trainings, training checkpoints — passes one gate
(:func:`tomoflow.weights.card.verified_model`): a card beside it, naming it, with its sha256. No card, no
load; a changed byte, a card naming another file, a card of another network: refused before anything is
written (API: :class:`~tomoflow.errors.ModelError`; CLI: one ``error:`` line, exit code 2, nothing left)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tomoflow.errors import InputError, ModelError  # noqa: E402  (after pytest.importorskip)
from tomoflow.weights.card import card_path, read_card, verified_checkpoint, verified_model  # noqa: E402  (after pytest.importorskip)

HAS_ONNX = importlib.util.find_spec("onnx") is not None and importlib.util.find_spec("onnxruntime") is not None
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="needs onnx and onnxruntime (pip install 'tomoflow[onnx]')")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------- helpers
def _flip(path: Path, n: int = 4, at: int | None = None) -> None:
    """Flip ``n`` bytes of ``path`` (in the tensor data, near the end unless ``at``)."""
    raw = bytearray(path.read_bytes())
    start = len(raw) - 64 if at is None else at
    for i in range(n):
        raw[start + 7 * i] ^= 0x5A
    path.write_bytes(bytes(raw))


def _tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` (or ``root`` itself) with its sha256: byte-identical before and after."""
    root = Path(root)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _cli(*args):
    from typer.testing import CliRunner

    from tomoflow.cli import app

    r = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    return r


def _one_line_error(r, *words) -> str:
    assert r.exit_code == 2, r.output
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.output, r.output
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


TINY_UNET = dict(channels=(4, 8))


@pytest.fixture
def unet_dir(tmp_path):
    """A tiny U-Net saved as a training folder would hold it: ``recover_unet.safetensors`` + card."""
    from tomoflow.recover.unet import UNetConfig, build_unet
    from tomoflow.train.files import save_unet

    torch.manual_seed(7)
    cfg = UNetConfig(**TINY_UNET)
    net = build_unet(config=cfg)
    d = tmp_path / "model"
    d.mkdir()
    w = d / "recover_unet.safetensors"
    save_unet(
        net,
        cfg,
        w,
        card={"name": "test", "normalisation": {"offset": 0.2, "scale": 2.0}, "training_data": {"hr_voxel_um": 1.0}},
    )
    return d, w


@pytest.fixture
def volume(tmp_path):
    from tomoflow.testing import write_volume_store

    data = np.random.default_rng(1).random((16, 20, 18)).astype(np.float32) + 0.03
    return write_volume_store(tmp_path / "vol.zarr", data, voxel_size_um=1.0).path


def _export(d: Path, w: Path) -> Path:
    from tomoflow.recover.normalization import with_normalization
    from tomoflow.recover.unet import load_unet
    from tomoflow.train.onnx_export import export_onnx

    return export_onnx(with_normalization(load_unet(w, device="cpu")), d / "recover_unet.onnx", patch_shape=(8, 8, 8))


def _change_head_bias(onnx_file: Path, delta: float = 0.5) -> None:
    """Edit the graph as an attacker or a bad copy would: the head's bias, metadata kept."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(onnx_file))
    heads = [t for t in g.graph.initializer if "head" in t.name and "bias" in t.name]
    assert heads, [t.name for t in g.graph.initializer]
    arr = numpy_helper.to_array(heads[0]).copy() + np.float32(delta)
    heads[0].CopyFrom(numpy_helper.from_array(arr, heads[0].name))
    onnx.save(g, str(onnx_file))


# ----------------------------------------------------------------------------- the shipped models
def test_the_shipped_models_pass_the_gate():
    from tomoflow._hashing import file_sha256
    from tomoflow.align.resnet import CHECK_NAME, default_weights_path, load_aligner

    weights = default_weights_path()
    if not weights.is_file():
        pytest.skip("shipped weights not added yet")
    card, real = verified_model(weights)
    assert card["weights"] == weights.name and real == weights.resolve()
    assert load_aligner(device="cpu").card["sha256"] == card["sha256"]
    check = card["metrics"]["check_set"]  # the check set the card's metric reproduces from is the shipped one
    assert check["file"] == CHECK_NAME and file_sha256(weights.parent / CHECK_NAME) == check["sha256"]


# ----------------------------------------------------------------------------- safetensors (both networks)
def _resnet(tmp_path: Path) -> Path:
    from tomoflow.align.resnet import build_network
    from tomoflow.train.files import save_weights

    torch.manual_seed(0)
    path = tmp_path / "jitter_resnet.safetensors"
    sha = save_weights(build_network(), path)
    (tmp_path / "jitter_resnet.json").write_text(
        json.dumps({"sha256": sha, "weights": path.name, "format": "safetensors"})
    )
    return path


def _unet(tmp_path: Path) -> Path:
    from tomoflow.recover.unet import UNetConfig, build_unet
    from tomoflow.train.files import save_unet

    cfg = UNetConfig(**TINY_UNET)
    path = tmp_path / "recover_unet.safetensors"
    save_unet(build_unet(config=cfg), cfg, path)
    return path


def _loader(kind: str):
    from tomoflow.align.resnet import load_aligner
    from tomoflow.recover.unet import load_unet

    return {"resnet": load_aligner, "unet": load_unet}[kind]


@pytest.mark.parametrize("kind", ["resnet", "unet"])
def test_safetensors_weights_are_loaded_only_through_the_gate(kind, tmp_path):
    path = {"resnet": _resnet, "unet": _unet}[kind](tmp_path)
    load = _loader(kind)
    load(path)  # as written: loads
    card_file = card_path(path)
    card = json.loads(card_file.read_text())
    original = path.read_bytes()

    # 4 flipped bytes: the file changed after training
    _flip(path)
    with pytest.raises(ModelError, match=rf"sha256 does not match its card {card_file.name}"):
        load(path)
    path.write_bytes(original)

    # the card must name the file it sits beside ...
    card_file.write_text(json.dumps({**card, "weights": "other.safetensors"}))
    with pytest.raises(ModelError, match=rf"card {card_file.name} names weights other.safetensors, not {path.name}"):
        load(path)
    card_file.write_text(json.dumps({k: v for k, v in card.items() if k != "weights"}))
    with pytest.raises(ModelError, match="names no weights"):
        load(path)
    # ... and be a card
    card_file.write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load(path)
    card_file.write_text(json.dumps({**card, "sha256": "0" * 63}))
    with pytest.raises(ModelError, match="invalid model card"):
        load(path)
    card_file.write_text(json.dumps(card))
    load(path)

    # the same bytes and card copied under another name: the card names the original, not the copy
    copy = tmp_path / "copy" / ("renamed" + path.suffix)
    copy.parent.mkdir()
    shutil.copy(path, copy)
    shutil.copy(card_file, card_path(copy))
    with pytest.raises(ModelError, match=f"not {copy.name}"):
        load(copy)

    # no card, no load
    card_file.unlink()
    with pytest.raises(ModelError, match=rf"no model card beside it \(expected {card_file.name}\)"):
        load(path)
    with pytest.raises(ModelError, match="no such weights file"):
        load(tmp_path / "missing.safetensors")
    assert issubclass(ModelError, InputError)  # callers catching InputError keep working


def test_a_symlinked_model_is_checked_against_the_card_of_the_file_it_points_to(tmp_path):
    path = _unet(tmp_path)
    link = tmp_path / "elsewhere" / "link.safetensors"
    link.parent.mkdir()
    link.symlink_to(path)
    card, real = verified_model(link)
    assert real == path.resolve() and card["weights"] == path.name
    _flip(path)
    with pytest.raises(ModelError, match="sha256"):
        verified_model(link)


# ----------------------------------------------------------------------------- ONNX
@needs_onnx
def test_the_onnx_export_is_recorded_in_the_card_and_checked(unet_dir, volume, tmp_path):
    """The reproduction: an ONNX export with its head bias changed, beside its valid card, used to recover
    a volume marked complete; an ONNX file with no card was accepted."""
    from tomoflow._hashing import file_sha256
    from tomoflow.pipeline.recover import recover_volume
    from tomoflow.recover.onnx_network import load_onnx

    d, w = unet_dir
    onnx_file = _export(d, w)
    card = read_card(d / "recover_unet.json")
    assert card["weights"] == w.name and card["sha256"] == file_sha256(w)  # still the safetensors' card
    assert card["onnx"]["file"] == onnx_file.name and card["onnx"]["sha256"] == file_sha256(onnx_file)
    assert card["onnx"]["values"] == "raw"
    assert load_onnx(onnx_file).sha256 == card["onnx"]["sha256"]
    good = recover_volume(volume, onnx_file, tmp_path / "good.zarr", chunks=(16, 20, 18))
    assert good.is_complete()

    before = _tree_digest(d) | _tree_digest(volume)
    _change_head_bias(onnx_file)
    changed = _tree_digest(d) | _tree_digest(volume)
    with pytest.raises(ModelError, match="sha256 does not match its card recover_unet.json"):
        load_onnx(onnx_file)
    with pytest.raises(ModelError, match="sha256 does not match"):
        recover_volume(volume, onnx_file, tmp_path / "bad.zarr", chunks=(16, 20, 18))
    assert not (tmp_path / "bad.zarr").exists()
    assert _tree_digest(d) | _tree_digest(volume) == changed != before

    # no card beside it: refused
    alone = tmp_path / "alone" / "net.onnx"
    alone.parent.mkdir()
    shutil.copy(onnx_file, alone)
    with pytest.raises(ModelError, match=r"no model card beside it \(expected net.json\)"):
        load_onnx(alone)
    # a card beside it that records no export (the safetensors' card only): refused
    (alone.parent / "net.json").write_text(json.dumps({k: v for k, v in card.items() if k != "onnx"}))
    with pytest.raises(ModelError, match="records no ONNX export"):
        load_onnx(alone)
    # a card recording another ONNX file: refused
    (alone.parent / "net.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="names ONNX file recover_unet.onnx, not net.onnx"):
        load_onnx(alone)


@needs_onnx
def test_exporting_a_bare_network_writes_its_own_card_and_never_takes_anothers(unet_dir, tmp_path):
    from tomoflow.errors import ConfigError
    from tomoflow.recover.onnx_network import load_onnx
    from tomoflow.recover.unet import UNetConfig, build_unet
    from tomoflow.train.onnx_export import export_onnx

    net = build_unet(config=UNetConfig(**TINY_UNET))
    path = export_onnx(net, tmp_path / "bare.onnx", patch_shape=(8, 8, 8))
    card = read_card(tmp_path / "bare.json")
    assert card["format"] == "onnx" and card["weights"] == "bare.onnx" and card["onnx"]["values"] == "normalised"
    assert not load_onnx(path).raw_values
    export_onnx(net, path, patch_shape=(8, 8, 8))  # again: its own export's card is renewed
    load_onnx(path)
    # beside another network's card (the training folder of unet_dir): refused, nothing written
    d, _ = unet_dir
    before = _tree_digest(d)
    other = build_unet(config=UNetConfig(**TINY_UNET))
    with pytest.raises(ConfigError, match="another network"):
        export_onnx(other, d / "recover_unet.onnx", patch_shape=(8, 8, 8))
    assert _tree_digest(d) == before
    # beside a JSON that is not a model card: refused, left as it is
    (tmp_path / "notes.json").write_text('{"mine": true}')
    with pytest.raises(ConfigError, match="not a model card"):
        export_onnx(net, tmp_path / "notes.onnx", patch_shape=(8, 8, 8))
    assert (tmp_path / "notes.json").read_text() == '{"mine": true}' and not (tmp_path / "notes.onnx").exists()


@needs_onnx
def test_cli_recover_refuses_a_changed_or_cardless_onnx(unet_dir, volume, tmp_path):
    d, w = unet_dir
    onnx_file = _export(d, w)
    _change_head_bias(onnx_file)
    before = _tree_digest(d) | _tree_digest(volume)
    out = tmp_path / "rec.zarr"
    _one_line_error(
        _cli("recover", volume, "--model", onnx_file, "--out", out, "--cluster", "none"),
        "recover_unet.onnx",
        "sha256 does not match",
    )
    alone = tmp_path / "alone.onnx"
    shutil.copy(onnx_file, alone)
    _one_line_error(
        _cli("recover", volume, "--model", alone, "--out", out, "--cluster", "none"),
        "alone.onnx",
        "no model card beside it (expected alone.json)",
    )
    assert not out.exists()
    assert _tree_digest(d) | _tree_digest(volume) == before


def test_cli_recover_refuses_weights_whose_card_names_another_file(unet_dir, volume, tmp_path):
    d, w = unet_dir
    card_file = d / "recover_unet.json"
    card = json.loads(card_file.read_text())
    card_file.write_text(json.dumps({**card, "weights": "best.safetensors"}))
    before = _tree_digest(d) | _tree_digest(volume)
    out = tmp_path / "rec.zarr"
    _one_line_error(
        _cli("recover", volume, "--model", w, "--out", out, "--cluster", "none"),
        "names weights best.safetensors, not recover_unet.safetensors",
    )
    assert not out.exists() and _tree_digest(d) | _tree_digest(volume) == before


# ----------------------------------------------------------------------------- --init-weights
@pytest.fixture
def shipped_copy(tmp_path):
    """The shipped jitter ResNet and its card, copied (the tests change the copy)."""
    from tomoflow.align.resnet import CARD_NAME, WEIGHTS_NAME, default_weights_path

    src = default_weights_path()
    if not src.is_file():
        pytest.skip("shipped weights not added yet")
    d = tmp_path / "given"
    d.mkdir()
    for name in (WEIGHTS_NAME, CARD_NAME):
        shutil.copy(src.parent / name, d / name)
    return d / WEIGHTS_NAME


def _no_simulation(monkeypatch):
    import tomoflow.train.aligner as training

    def refuse(*a, **k):  # the check must come before any work
        raise AssertionError("training data simulated before the init weights were checked")

    monkeypatch.setattr(training, "make_training_scans", refuse)


def test_train_aligner_checks_init_weights_against_their_card_before_any_work(shipped_copy, tmp_path, monkeypatch):
    from tomoflow.train.aligner import train_aligner

    _no_simulation(monkeypatch)
    out = tmp_path / "train"
    _flip(shipped_copy)  # 4 flipped bytes
    with pytest.raises(ModelError, match="sha256 does not match its card jitter_resnet.json.*init weights"):
        train_aligner(out, epochs=1, n_scans=2, size=48, n_angles=12, device="cpu", init_weights=shipped_copy)
    shipped_copy.with_suffix(".json").unlink()
    with pytest.raises(ModelError, match="no model card beside it"):
        train_aligner(out, epochs=1, n_scans=2, size=48, n_angles=12, device="cpu", init_weights=shipped_copy)
    assert not out.exists()


def test_cli_train_aligner_with_changed_init_weights_fails_up_front(shipped_copy, tmp_path, monkeypatch):
    _no_simulation(monkeypatch)
    _flip(shipped_copy)
    before = _tree_digest(shipped_copy.parent)
    out = tmp_path / "train"
    r = _cli(
        "train-aligner",
        "--out",
        out,
        "--n-scans",
        2,
        "--size",
        48,
        "--n-angles",
        12,
        "--epochs",
        1,
        "--device",
        "cpu",
        "--init-weights",
        shipped_copy,
    )
    _one_line_error(r, "jitter_resnet.safetensors", "sha256 does not match", "init weights")
    assert not out.exists() and _tree_digest(shipped_copy.parent) == before


def test_train_recovery_checks_init_weights_and_its_checkpoint(unet_dir, tmp_path):
    from tomoflow.recover.unet import UNetConfig
    from tomoflow.train.recovery import train_recovery

    d, w = unet_dir
    rng = np.random.default_rng(0)
    hr = rng.random((24, 24, 24)).astype(np.float32)
    inp = (hr + 0.1 * rng.standard_normal(hr.shape)).astype(np.float32)
    kw = dict(config=UNetConfig(**TINY_UNET), patch=8, batch=1, epochs=1, steps_per_epoch=1, device="cpu")
    _flip(w)
    with pytest.raises(ModelError, match="sha256 does not match.*init weights"):
        train_recovery(inp, hr, out_dir=tmp_path / "x", init_weights=w, **kw)
    assert not (tmp_path / "x").exists()
    # a checkpoint whose tensors changed after its state was written: refused on resume
    out = tmp_path / "run"
    train_recovery(inp, hr, out_dir=out, **kw)
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["weights"] == "last.safetensors" and len(state["sha256"]) == 64
    _flip(out / "checkpoint" / "last.safetensors")
    with pytest.raises(ModelError, match="last.safetensors: sha256 does not match its card state.json"):
        train_recovery(inp, hr, out_dir=out, resume=True, **dict(kw, epochs=2))


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoints_carry_their_own_card(tmp_path):
    from tomoflow.train.files import load_checkpoint, save_checkpoint

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    ckpt = tmp_path / "checkpoint"
    save_checkpoint(ckpt, model, {k: v.clone() for k, v in model.state_dict().items()}, opt, {"epoch": 1})
    info, tensors = load_checkpoint(ckpt)
    assert info["epoch"] == 1 and "model.weight" in tensors
    state = json.loads((ckpt / "state.json").read_text())
    verified_checkpoint(ckpt / "last.safetensors", ckpt / "state.json")
    _flip(ckpt / "last.safetensors", n=1)
    with pytest.raises(ModelError, match="sha256 does not match its card state.json"):
        load_checkpoint(ckpt)
    (ckpt / "state.json").write_text(json.dumps({k: v for k, v in state.items() if k != "sha256"}))
    with pytest.raises(ModelError, match="older tomoflow"):
        load_checkpoint(ckpt)
    (ckpt / "state.json").write_text("[")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_checkpoint(ckpt)
    (ckpt / "state.json").write_text(json.dumps(state))
    (ckpt / "last.safetensors").unlink()
    with pytest.raises(ModelError, match="no such checkpoint tensors file"):
        load_checkpoint(ckpt)
