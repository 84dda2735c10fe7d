"""``tomoflow recover`` with a target grid (``--voxel``, or ``--registration`` and ``--hr``): the LFOV store
resampled block by block on the fly, no intermediate store; mistakes are one line before anything is
created."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from tomoflow.io.synthetic import SIMULATION_TRUTH, write_multiscale_pair
from tomoflow.sim import simulate_multiscale_pair


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    import torch

    from tomoflow.recover import build_unet
    from tomoflow.recover.unet import UNetConfig
    from tomoflow.train.files import save_unet

    d = tmp_path_factory.mktemp("fused-cli")
    pair = simulate_multiscale_pair(
        hr_shape=(20, 20, 20), lfov_shape=(10, 10, 10), max_translation_lfov_vox=1.0, seed=4
    )
    hr, lf = write_multiscale_pair(pair, d / "hr.zarr", d / "lfov.zarr")
    truth = json.loads((hr / "zarr.json").read_text())["attributes"]["extra"][SIMULATION_TRUTH]["hr_to_lfov_matrix"]
    reg = d / "reg.json"
    reg.write_text(json.dumps({"matrix": truth, "hr_voxel_um": 1.0, "lfov_voxel_um": 4.0}))
    torch.manual_seed(2)
    cfg = UNetConfig(channels=(4, 8))
    model = build_unet(config=cfg)
    weights = d / "unet.safetensors"
    save_unet(model, cfg, weights, card={"name": "test"})
    return hr, lf, reg, np.asarray(truth), model, weights


def rel_err(got, want):
    return float(np.abs(got - want).max() / np.abs(want).max())


def test_recover_the_whole_field_at_a_voxel_size(cli, stores, tmp_path):
    from tomoflow.io.volume_store import VolumeStore
    from tomoflow.pipeline.resample import field_grid
    from tomoflow.recover import predict_volume
    from tomoflow.register.resample import ResampledGrid

    hr, lf, reg, truth, model, weights = stores
    out = tmp_path / "rec.zarr"
    ran = cli("recover", lf, "--voxel", 1, "--model", weights, "--out", out, "--cluster", "none")
    assert ran.code == 0 and "resampled onto" in ran.stdout and "blocks computed" in ran.stdout, ran
    v = VolumeStore.open(out)
    shape, matrix = field_grid((10, 10, 10), 4.0, 1.0)
    assert v.shape == shape == (37, 37, 37) and v.attrs.voxel_size.value == 1.0
    want = predict_volume(model, ResampledGrid(VolumeStore.open(lf).level(0), matrix, shape, 1.0, 4.0)[...])
    assert rel_err(np.asarray(v.level(0)[...]), want) <= 1e-6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec.zarr"]  # no intermediate store
    again = cli("recover", lf, "--voxel", 1, "--model", weights, "--out", out, "--cluster", "none")
    assert again.code == 0 and "nothing written" in again.stdout, again  # a complete output: a rerun computes nothing


def test_recover_on_the_hr_grid_of_a_registration(cli, stores, tmp_path):
    from tomoflow.io.volume_store import VolumeStore
    from tomoflow.recover import predict_volume
    from tomoflow.register.resample import resample_to_grid

    hr, lf, reg, truth, model, weights = stores
    out = tmp_path / "rec.zarr"
    ran = cli("recover", lf, "-r", reg, "--hr", hr, "--model", weights, "--out", out, "--cluster", "none")
    assert ran.code == 0 and "HR grid of hr.zarr" in ran.stdout, ran
    v = VolumeStore.open(out)
    assert v.shape == (20, 20, 20) and v.attrs.voxel_size.value == 1.0
    assert v.extra["fused_resample"]["registration"]["lfov_voxel_um"] == 4.0
    want = predict_volume(model, resample_to_grid(VolumeStore.open(lf).level(0), truth, (20, 20, 20), 1.0, 4.0))
    assert rel_err(np.asarray(v.level(0)[...]), want) <= 1e-6


def test_grid_mistakes_are_one_line_before_anything_is_created(cli, one_line_error, unchanged, stores, tmp_path):
    hr, lf, reg, truth, model, weights = stores
    outside = tmp_path / "outside.json"
    m = truth.copy()
    m[:3, 3] += 30.0  # the HR grid shifted 30 um: past the LFOV's 40 um field
    outside.write_text(json.dumps({"matrix": m.tolist()}))
    out = tmp_path / "rec.zarr"
    base = ["recover", lf, "--model", weights, "--out", out, "--cluster", "none"]
    cases = [
        (["-r", tmp_path / "missing.json", "--hr", hr], ["missing.json"]),
        (["--voxel", 1, "-r", reg, "--hr", hr], ["either --registration", "--voxel"]),
        (["-r", reg], ["--registration needs --hr"]),
        (["--hr", hr], ["--hr goes with --registration"]),
        (["--voxel", 0], ["--voxel must be a positive"]),
        (["--voxel", -2], ["--voxel must be a positive"]),
        (["-r", outside, "--hr", hr], ["outside the source"]),
        (["--order", 1], ["--order"]),
        (["--voxel", 1, "--order", 7], ["order"]),
        (["--voxel", "1e-6"], ["recovered volume", "one command may plan"]),
        (["-r", reg, "--hr", hr, "--out", hr], ["is an input"]),
    ]
    for extra, words in cases:
        with unchanged(tmp_path):
            one_line_error(cli(*base, *extra), *words)
