"""Per-sample training of the resolution-recovery U-Net: it beats the input on held-out blocks of a simulated
pair, writes loadable weights and a complete card, never trains on held-out voxels, augments input and target
alike, resumes exactly, round-trips its normalisation, exports to ONNX, refuses bad input; the CLI command."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tomoflow.errors import ConfigError, InputError  # noqa: E402  (after pytest.importorskip)
from tomoflow.recover.calibration import apply_calibration, calibration_of  # noqa: E402  (after pytest.importorskip)
from tomoflow.recover.metrics import held_out_metrics  # noqa: E402  (after pytest.importorskip)
from tomoflow.recover.normalization import apply_normalization, with_normalization  # noqa: E402  (after pytest.importorskip)
from tomoflow.recover.tiling import predict_volume  # noqa: E402  (after pytest.importorskip)
from tomoflow.recover.unet import CARD_NAME, WEIGHTS_NAME, UNetConfig, build_unet, load_unet  # noqa: E402  (after pytest.importorskip)
from tomoflow.train.onnx_export import check_onnx, export_onnx  # noqa: E402  (after pytest.importorskip)
from tomoflow.train.recovery import train_recovery  # noqa: E402  (after pytest.importorskip)
from tomoflow.weights.card import validate_card  # noqa: E402  (after pytest.importorskip)

TINY = UNetConfig(channels=(4, 8))


@pytest.fixture(scope="module")
def pair():
    """48³ HR ROI (1 um) in a 40³ LFOV (2 um); the LFOV resampled onto the HR grid with the TRUE matrix."""
    from tomoflow.register.resample import resample_to_grid
    from tomoflow.sim import simulate_multiscale_pair

    p = simulate_multiscale_pair(hr_shape=(48,) * 3, lfov_shape=(40,) * 3, lfov_spacing_um=2.0, seed=0)
    inp = resample_to_grid(p.lfov, p.true_matrix, p.hr.shape, p.hr_spacing_um, p.lfov_spacing_um)
    return inp, p.hr, p


@pytest.fixture(scope="module")
def trained(pair, tmp_path_factory):
    inp, hr, _ = pair
    out = tmp_path_factory.mktemp("train")
    calls = []
    n = torch.get_num_threads()  # module fixtures run before the function-scoped _one_thread
    torch.set_num_threads(1)
    try:
        res = train_recovery(
            inp,
            hr,
            out_dir=out,
            config=TINY,
            patch=16,
            batch=4,
            epochs=3,
            steps_per_epoch=20,
            lr=3e-3,
            seed=0,
            device="cpu",
            progress=lambda *a: calls.append(a),
            command="pytest train",
            hr_voxel_um=1.0,
            lfov_voxel_um=2.0,
            source={"test": True},
        )
    finally:
        torch.set_num_threads(n)
    return res, calls, out


# ----------------------------------------------------------------------------- training
def test_training_beats_the_input_on_held_out_blocks(trained):
    res, calls, _ = trained
    m = res.metrics
    assert res.split.kind == "octants" and len(res.split.held_out) == 1
    # the starting network is the identity: its validation loss is the input's own
    assert calls[0] == (0, 0, 20, None, pytest.approx(m["val_l1_input"]))
    assert res.best_epoch >= 1, res.history
    assert m["val_l1"] == pytest.approx(min(h["val_l1"] for h in res.history))
    assert m["val_l1"] < 0.92 * m["val_l1_input"], m
    assert m["psnr_prediction_db"] > m["psnr_input_db"] + 0.3, m
    assert m["ssim_prediction"] > m["ssim_input"], m
    ends = [c for c in calls if c[0] >= 1 and c[4] is not None]
    assert [c[0] for c in ends] == [1, 2, 3] and all(c[1] == c[2] == 20 for c in ends)
    assert [h["val_l1"] for h in res.history] == pytest.approx([c[4] for c in ends])


def test_weights_load_and_the_card_reproduces_the_held_out_metrics(trained, pair):
    inp, hr, _ = pair
    res, _, out = trained
    assert res.weights == out / WEIGHTS_NAME and res.card_path == out / CARD_NAME
    card = json.loads(res.card_path.read_text())
    validate_card(card)
    assert card["command"] == "pytest train" and card["seed"] == 0
    norm = card["normalisation"]
    assert norm["scale"] > 0 and norm["pad_mode"] == "reflect"
    data = card["training_data"]
    assert data["shape"] == [48, 48, 48] and data["patch"] == [16, 16, 16]
    assert data["hr_voxel_um"] == 1.0 and data["lfov_voxel_um"] == 2.0 and data["source"] == {"test": True}
    assert data["augmentation"]["flips"] and data["split"]["held_out"] == [list(i) for i in res.split.held_out]
    assert data["split"]["val_voxels"] == 24**3
    tr = card["training"]
    assert tr["loss"].startswith("L1") and tr["epochs_run"] == 3 and len(tr["history"]) == 3
    assert card["timing"]["training_s"] > 0
    for key in ("psnr_input_db", "psnr_prediction_db", "ssim_input", "ssim_prediction", "val_l1", "val_l1_input"):
        assert np.isfinite(card["metrics"]["held_out"][key]), key
    # inference contract: load (sha256 checked), wrap with the card's normalisation, predict the whole volume
    model = load_unet(res.weights, device="cpu")
    assert model.card["normalisation"]["offset"] == norm["offset"]
    raw = predict_volume(with_normalization(model, calibrated=False), inp)
    again = held_out_metrics(raw, inp, hr, res.split, float(hr.max() - hr.min()))
    assert again["psnr_prediction_db"] == pytest.approx(card["metrics"]["held_out"]["psnr_prediction_db"], abs=1e-3)
    assert again["ssim_prediction"] == pytest.approx(card["metrics"]["held_out"]["ssim_prediction"], abs=1e-4)
    # what inference returns by default: the calibrated prediction, whose figures the card gives beside
    pred = predict_volume(with_normalization(model), inp)
    cal = card["metrics"]["held_out"]["calibrated"]
    again = held_out_metrics(pred, inp, hr, res.split, float(hr.max() - hr.min()))
    assert again["psnr_prediction_db"] == pytest.approx(cal["psnr_prediction_db"], abs=1e-3)


def test_calibration_gives_the_prediction_the_targets_pore_fraction(trained, pair):
    """The card's calibration, fitted on the whole training pair, gives the prediction HR's pore fraction
    there at the pore threshold (within the voxels that tie), moves nothing outside the pore-solid range,
    and is what with_normalization applies."""
    inp, hr, _ = pair
    res, _, _ = trained
    cal = res.card["calibration"]
    assert cal["fitted_on"].startswith("the whole training pair") and cal["voxels"] == hr.size
    model = load_unet(res.weights, device="cpu")
    raw = predict_volume(with_normalization(model, calibrated=False), inp)
    pred = predict_volume(with_normalization(model), inp)
    knots = calibration_of(model)
    np.testing.assert_allclose(pred, apply_calibration(raw, knots), rtol=0, atol=1e-5)
    thr = cal["threshold"]
    assert cal["pore_fraction"] == pytest.approx(np.mean(hr < thr))
    assert cal["pore_fraction_before"] == pytest.approx(np.mean(raw < thr), abs=1e-6)
    assert np.mean(pred < thr) == pytest.approx(cal["pore_fraction"], abs=2.0 / hr.size + 1e-6)
    lo, hi = cal["pore_level"], cal["solid_level"]
    outside = (raw < lo) | (raw > hi)
    np.testing.assert_allclose(pred[outside], raw[outside], rtol=0, atol=1e-5)
    assert np.all(np.diff(apply_calibration(np.linspace(lo - 1, hi + 1, 999), knots)) > 0)  # monotone
    pf = res.metrics["pore_fraction"]
    assert pf["threshold"] == thr and 0 < pf["target"] < 1 and 0 <= pf["calibrated"] <= 1


def test_fine_tuning_starts_from_earlier_weights(trained, pair, tmp_path):
    inp, hr, _ = pair
    res, _, _ = trained
    calls = []
    tuned = train_recovery(
        inp,
        hr,
        out_dir=tmp_path,
        config=TINY,
        patch=16,
        epochs=1,
        steps_per_epoch=2,
        seed=0,
        device="cpu",
        init_weights=res.weights,
        progress=lambda *a: calls.append(a),
    )
    # the starting network is the trained one, not the identity
    assert calls[0][4] == pytest.approx(res.metrics["val_l1"], rel=1e-5)
    assert tuned.card["training"]["initialized_from"]["sha256"] == res.card["sha256"]
    assert tuned.metrics["val_l1"] <= res.metrics["val_l1"] * (1 + 1e-6)
    with pytest.raises(ConfigError, match="configuration"):
        train_recovery(
            inp,
            hr,
            out_dir=tmp_path / "x",
            config=UNetConfig(channels=(4, 8, 8)),
            patch=16,
            device="cpu",
            init_weights=res.weights,
        )
    assert not (tmp_path / "x").exists()


def test_resume_continues_from_the_checkpoint_exactly(pair, tmp_path):
    inp, hr, _ = pair
    kw = dict(config=TINY, patch=16, batch=2, epochs=2, steps_per_epoch=3, seed=1, device="cpu", time_limit_s=None)
    whole = train_recovery(inp, hr, out_dir=tmp_path / "a", **kw)

    class Stop(Exception):
        pass

    def stop_after_epoch_1(epoch, step, n_steps, train_loss, val_loss):
        if epoch == 1 and val_loss is not None:
            raise Stop

    with pytest.raises(Stop):
        train_recovery(inp, hr, out_dir=tmp_path / "b", progress=stop_after_epoch_1, **kw)
    assert (tmp_path / "b" / "checkpoint" / "state.json").is_file() and not (tmp_path / "b" / WEIGHTS_NAME).exists()
    epochs_seen = []
    resumed = train_recovery(
        inp, hr, out_dir=tmp_path / "b", resume=True, progress=lambda e, *a: epochs_seen.append(e), **kw
    )
    assert set(epochs_seen) == {2}  # epoch 1 came from the checkpoint
    assert [h["val_l1"] for h in resumed.history] == pytest.approx([h["val_l1"] for h in whole.history], rel=1e-5)
    for (k, a), (_, b) in zip(whole.model.state_dict().items(), resumed.model.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)
    with pytest.raises(ConfigError, match="other data or training parameters.*lr"):
        train_recovery(inp, hr, out_dir=tmp_path / "b", resume=True, **dict(kw, lr=5e-3))
    with pytest.raises(ConfigError, match="input_sha256"):
        train_recovery(inp * 1.01, hr, out_dir=tmp_path / "b", resume=True, **kw)


# ----------------------------------------------------------------------------- split, augmentation


# ----------------------------------------------------------------------------- normalisation


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs_are_refused_before_anything_is_written(pair, tmp_path):
    inp, hr, _ = pair
    out = tmp_path / "never"
    kw = dict(out_dir=out, config=TINY, patch=16, device="cpu")
    with pytest.raises(InputError, match="shapes differ"):
        train_recovery(inp, hr[:40], **kw)
    bad = inp.copy()
    bad[3, 4, 5] = np.nan
    with pytest.raises(InputError, match="input volume contains NaN"):
        train_recovery(bad, hr, **kw)
    with pytest.raises(InputError, match="target volume contains NaN"):
        train_recovery(inp, np.where(bad != bad, np.inf, hr), **kw)
    with pytest.raises(InputError, match="smaller than a training patch of 16"):
        train_recovery(inp[:12], hr[:12], **kw)
    with pytest.raises(InputError, match="3-D"):
        train_recovery(inp[0], hr[0], **kw)
    with pytest.raises(ConfigError, match="multiple of the network's alignment 2"):
        train_recovery(inp, hr, **dict(kw, patch=15))
    with pytest.raises(ConfigError, match="epochs"):
        train_recovery(inp, hr, **dict(kw, epochs=0))
    with pytest.raises(ConfigError, match="context must be a multiple of the network's alignment 2"):
        train_recovery(inp, hr, **dict(kw, context=3))
    assert not out.exists()


def test_context_feeds_a_larger_input_box_and_takes_the_loss_on_its_centre(pair, tmp_path, monkeypatch):
    """With ``context`` the network sees ``patch + 2 * context`` input voxels per axis (read with the
    reflect border rule near the volume faces) and the loss compares the centre of its output with the
    ``patch`` target cube."""
    import tomoflow.train.patches as training

    inp, hr, _ = pair
    seen = []
    real_augment = training.augment_pair

    def spy(x, y, rng, **kw):
        seen.append((x.shape, y.shape))
        return real_augment(x, y, rng, **kw)

    monkeypatch.setattr(training, "augment_pair", spy)
    res = train_recovery(
        inp,
        hr,
        out_dir=tmp_path / "m",
        config=TINY,
        patch=16,
        context=6,
        batch=2,
        epochs=1,
        steps_per_epoch=2,
        seed=2,
        device="cpu",
        num_workers=0,  # the patches are made in this process, where the spy is
    )
    assert seen and all(xs == (28, 28, 28) and ys == (16, 16, 16) for xs, ys in seen)
    assert res.card["training_data"]["context"] == 6 and np.isfinite(res.history[0]["train_l1"])
    with pytest.raises(ConfigError, match="context"):  # a checkpoint of other parameters is not continued
        train_recovery(
            inp,
            hr,
            out_dir=tmp_path / "m",
            config=TINY,
            patch=16,
            context=4,
            batch=2,
            epochs=1,
            steps_per_epoch=2,
            seed=2,
            device="cpu",
            resume=True,
        )


# ----------------------------------------------------------------------------- ONNX
@pytest.mark.slow
def test_pore_term_is_recorded_and_moves_the_prediction_toward_the_pores(pair, tmp_path):
    """pore_weight adds the soft-threshold cross-entropy: the card records the threshold (Otsu of the
    target's training voxels) and its width; the trained network differs from the L1-only one and
    puts more held-out voxels below the threshold than L1 alone (L1 hedges on ambiguous voxels)."""
    from tomoflow.recover.pores import threshold_from_reference

    inp, hr, _ = pair
    kw = dict(config=TINY, patch=16, batch=4, epochs=2, steps_per_epoch=12, lr=3e-3, seed=0, device="cpu", threads=1)
    plain = train_recovery(inp, hr, out_dir=tmp_path / "plain", **kw)
    pores = train_recovery(inp, hr, out_dir=tmp_path / "pores", pore_weight=2.0, **kw)
    term = pores.card["training"]["pore_term"]
    assert plain.card["training"]["pore_term"] is None
    assert term["weight"] == 2.0 and term["width"] > 0 and 0 < term["pore_fraction"] < 0.5
    hr_n = apply_normalization(hr, pores.card)
    mask = ~pores.split.held_out_mask
    assert term["threshold"] == pytest.approx(threshold_from_reference(hr_n, mask=mask))
    assert "pore term" in pores.card["training"]["loss"]
    # the best weights are chosen by the same loss on the held-out blocks, not by L1 alone
    hist = pores.history
    assert all("val_loss" in h for h in hist) and not any("val_loss" in h for h in plain.history)
    assert pores.card["training"]["best_epoch"] == min(hist, key=lambda h: h["val_loss"])["epoch"]
    tr = pores.card["training"]  # the card's L1 figures stay L1; the pore loss is recorded beside them
    assert tr["start_val_l1"] == pytest.approx(pores.card["metrics"]["held_out"]["val_l1_input"])
    assert tr["start_val_loss"] > tr["start_val_l1"] and "start_val_loss" not in plain.card["training"]
    validate_card(pores.card, tmp_path / "card.json")
    held = pores.split.held_out_mask
    thr_raw = threshold_from_reference(hr, mask=mask)
    below = [
        float((predict_volume(with_normalization(r.model, calibrated=False), inp)[held] < thr_raw).mean())
        for r in (plain, pores)
    ]  # the networks themselves, before the calibration evens them out
    assert below[1] > below[0], below
    with pytest.raises(ConfigError, match="pore_weight"):
        train_recovery(inp, hr, out_dir=tmp_path / "bad", pore_weight=-1.0, **kw)
    assert not (tmp_path / "bad").exists()


def test_onnx_export_matches_torch(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    net = build_unet(config=TINY).eval()
    path = export_onnx(net, tmp_path / "unet.onnx", patch_shape=(16, 16, 16))
    x = torch.randn(2, 1, 24, 16, 32)  # other sizes than traced: dynamic axes
    rep = check_onnx(path, net, x)
    assert rep["ok"] and rep["max_abs_diff"] < 1e-4, rep
    wrapped = with_normalization(
        net,
        {
            "normalisation": {"offset": 0.5, "scale": 2.0},
            "calibration": {"pore_level": -1.0, "from": 0.3, "threshold": 0.0, "solid_level": 1.0},
        },
    )
    assert wrapped.calibration is not None  # the calibration's clamps export too
    path2 = export_onnx(wrapped, tmp_path / "wrapped.onnx", patch_shape=(16, 16, 16))
    rep2 = check_onnx(path2, wrapped, x[:1].numpy()[0, 0])
    assert rep2["ok"], rep2
    with pytest.raises(ConfigError, match="multiples"):
        export_onnx(net, tmp_path / "bad.onnx", patch_shape=(15, 16, 16))


def test_onnx_export_without_onnx_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if onnx were not installed (find_spec gives None)
    with pytest.raises(ConfigError, match=r"tomoflow\[onnx\]"):
        export_onnx(build_unet(config=TINY), tmp_path / "x.onnx", patch_shape=(16, 16, 16))
    assert not (tmp_path / "x.onnx").exists()


# ----------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def stores(pair, tmp_path_factory):
    from tomoflow.io.synthetic import write_multiscale_pair

    d = tmp_path_factory.mktemp("stores")
    hr, lf = write_multiscale_pair(pair[2], d / "hr.zarr", d / "lfov.zarr")
    return hr, lf, pair[2]


def _cli(*args):
    from typer.testing import CliRunner

    from tomoflow.cli import app

    r = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    return r


def _one_line_error(r, *words):
    assert r.exit_code == 2, r.output
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.output, r.output
    for w in words:
        assert w in lines[0], (w, lines[0])


FAST = ["--epochs", 2, "--steps", 4, "--patch", 16, "--channels", "4,8", "--threads", 1, "--device", "cpu"]


@pytest.mark.slow
def test_cli_registers_trains_and_resumes(stores, tmp_path):
    hr, lf, _ = stores
    out = tmp_path / "model"
    r = _cli("train-recovery", hr, lf, "--out", out, *FAST)
    assert r.exit_code == 0, r.output
    assert "registering" in r.stdout and "PSNR input" in r.stdout and WEIGHTS_NAME in r.stdout, r.stdout
    card = json.loads((out / CARD_NAME).read_text())
    assert card["command"].startswith("tomoflow train-recovery") and "--registration" in card["command"]
    assert card["training_data"]["hr_voxel_um"] == 1.0 and card["training_data"]["lfov_voxel_um"] == 2.0
    reg = json.loads((out / "registration.json").read_text())
    truth = np.asarray(stores[2].true_matrix)
    assert np.abs(np.asarray(reg["matrix"]) - truth).max() < 0.5
    load_unet(out / WEIGHTS_NAME)
    # the same folder again: refused unless --resume, which continues without registering again
    _one_line_error(_cli("train-recovery", hr, lf, "--out", out, *FAST), "--resume")
    r = _cli("train-recovery", hr, lf, "--out", out, *FAST[:1], 3, *FAST[2:], "--resume")
    assert r.exit_code == 0, r.output
    assert "registering" not in r.stdout
    assert json.loads((out / CARD_NAME).read_text())["training"]["epochs_run"] == 3
    # the pore term from the command line, recorded in the card and in the command that reproduces it
    r = _cli(
        "train-recovery",
        hr,
        lf,
        "--out",
        tmp_path / "pores",
        "--registration",
        out / "registration.json",
        *FAST,
        "--pore-weight",
        0.5,
    )
    assert r.exit_code == 0, r.output
    card = json.loads((tmp_path / "pores" / CARD_NAME).read_text())
    assert card["training"]["pore_term"]["weight"] == 0.5 and "--pore-weight 0.5" in card["command"]
    assert card["calibration"]["threshold"] > 0 and "pore fraction of the held-out blocks" in r.stdout
    # the calibration is on by default; --no-calibrate leaves the network's output as it is
    r = _cli(
        "train-recovery",
        hr,
        lf,
        "--out",
        tmp_path / "plain",
        "--registration",
        out / "registration.json",
        *FAST,
        "--no-calibrate",
    )
    assert r.exit_code == 0, r.output
    card = json.loads((tmp_path / "plain" / CARD_NAME).read_text())
    assert card["calibration"] is None and "--no-calibrate" in card["command"]
    assert "pore fraction" not in r.stdout


def test_cli_with_a_registration_file_and_its_mistakes(stores, tmp_path):
    hr, lf, pair = stores
    reg = tmp_path / "reg.json"
    reg.write_text(json.dumps({"matrix": np.asarray(pair.true_matrix).tolist(), "hr_voxel_um": 1.0}))
    out = tmp_path / "m"
    onnx = ["--onnx"] if importlib.util.find_spec("onnx") and importlib.util.find_spec("onnxruntime") else []
    r = _cli("train-recovery", hr, lf, "--out", out, "--registration", reg, *FAST, *onnx)
    assert r.exit_code == 0 and "registering" not in r.stdout, r.output
    assert json.loads((out / CARD_NAME).read_text())["training_data"]["source"]["registration"] == str(reg)
    if onnx:  # the deployable export: raw values in and out, checked against torch
        from tomoflow.recover.onnx_network import load_onnx

        assert "onnxruntime matches torch" in r.stdout, r.stdout
        assert load_onnx(out / "recover_unet.onnx").raw_values
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"matrix": [[1, 0, 0], [0, 1, 0], [0, 0, 1]]}))
    _one_line_error(
        _cli("train-recovery", hr, lf, "--out", tmp_path / "x", "--registration", bad, *FAST), "bad.json", "4 x 4"
    )
    bad.write_text(json.dumps({"matrix": np.eye(4).tolist(), "lfov_voxel_um": 4.0}))
    _one_line_error(
        _cli("train-recovery", hr, lf, "--out", tmp_path / "x", "--registration", bad, *FAST), "lfov_voxel_um"
    )
    _one_line_error(_cli("train-recovery", lf, hr, "--out", tmp_path / "x", "--registration", reg, *FAST), "swapped")
    _one_line_error(
        _cli("train-recovery", hr, tmp_path / "missing.zarr", "--out", tmp_path / "x", *FAST), "missing.zarr"
    )
    _one_line_error(
        _cli("train-recovery", hr, lf, "--out", tmp_path / "x", "--registration", reg, *FAST[:-2], "--patch", 15),
        "alignment",
    )
    _one_line_error(_cli("train-recovery", hr, lf, "--out", tmp_path / "x", "--channels", "4,x"), "--channels")
    assert not (tmp_path / "x").exists()


def test_tiled_inference_runs_the_exported_onnx_graph(tmp_path):
    """The raw-values export of a trained network runs in predict_tiled through onnxruntime and gives the
    torch network's volume; its metadata carries the configuration and the training voxel size."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from tomoflow.recover import predict_tiled, predict_volume
    from tomoflow.recover.onnx_network import load_onnx

    torch.manual_seed(4)
    net = build_unet(config=TINY)
    net.card = {"normalisation": {"offset": 0.3, "scale": 2.0}, "training_data": {"hr_voxel_um": 0.5}}
    raw = with_normalization(net)
    path = export_onnx(raw, tmp_path / "raw.onnx", patch_shape=(16, 16, 16))
    onx = load_onnx(path)
    assert onx.raw_values and onx.config == TINY and onx.hr_voxel_um == 0.5
    vol = np.random.default_rng(5).random((21, 30, 17)).astype(np.float32)
    want = predict_volume(raw, vol)
    for model in (onx, raw):
        got = predict_tiled(model, vol, block=(8, 16, 12))
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())
    assert not load_onnx(export_onnx(net, tmp_path / "norm.onnx", patch_shape=(16, 16, 16))).raw_values


def test_onnx_files_not_from_tomoflow_are_refused(tmp_path):
    pytest.importorskip("onnxruntime")
    from tomoflow._hashing import file_sha256
    from tomoflow.recover.onnx_network import load_onnx

    bad = tmp_path / "x.onnx"
    bad.write_bytes(b"not a graph")
    with pytest.raises(InputError, match="no model card beside it"):  # no card, no load
        load_onnx(bad)
    sha = file_sha256(bad)  # a card that vouches for the bytes: then the graph itself is refused
    (tmp_path / "x.json").write_text(
        json.dumps({"format": "onnx", "weights": "x.onnx", "sha256": sha, "onnx": {"file": "x.onnx", "sha256": sha}})
    )
    with pytest.raises(InputError, match="not a readable ONNX graph"):
        load_onnx(bad)
    with pytest.raises(InputError, match="no such ONNX file"):
        load_onnx(tmp_path / "missing.onnx")
