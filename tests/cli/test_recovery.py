"""``tomoflow register`` and ``tomoflow recover``: a simulated HR ROI placed in its LFOV store from the stage
positions with a QC picture; a saved U-Net run over a volume store; mistakes are one line, nothing written."""

import json

import numpy as np
import pytest

from tomoflow.io.synthetic import SIMULATION_TRUTH, write_multiscale_pair
from tomoflow.sim import simulate_multiscale_pair


@pytest.fixture(scope="module")
def pair_stores(tmp_path_factory):
    d = tmp_path_factory.mktemp("pair")
    pair = simulate_multiscale_pair(hr_shape=(64, 64, 64), lfov_shape=(40, 40, 40), prior_error_lfov_vox=1.5, seed=3)
    hr, lf = write_multiscale_pair(pair, d / "hr.zarr", d / "lfov.zarr")
    return hr, lf, pair


def _error_hr_vox(m, truth, n=64):
    g = np.stack(np.meshgrid(*[np.arange(n, dtype=float)] * 3, indexing="ij"), -1).reshape(-1, 3)
    d = np.asarray(m) - np.asarray(truth)
    return np.linalg.norm(g @ d[:3, :3].T + d[:3, 3], axis=1)


def test_register_writes_the_matrix_and_a_qc_png(cli, pair_stores, tmp_path):
    hr, lf, pair = pair_stores
    out, png = tmp_path / "reg.json", tmp_path / "qc.png"
    ran = cli("register", hr, lf, "--out", out, "--png", png, "--device", "cpu")
    assert ran.code == 0, ran
    assert "prior: stage positions" in ran.stdout and "NCC" in ran.stdout, ran
    doc = json.loads(out.read_text())
    truth = json.loads((hr / "zarr.json").read_text())["attributes"]["extra"][SIMULATION_TRUTH]["hr_to_lfov_matrix"]
    np.testing.assert_allclose(truth, pair.true_matrix)
    e0, e = _error_hr_vox(doc["prior"], truth), _error_hr_vox(doc["matrix"], truth)
    assert e0.mean() > 2.0 and e.mean() < 0.3, (e0.mean(), e.mean())
    assert doc["ncc"] > doc["ncc_prior"] and doc["dof"] == 9
    assert png.stat().st_size > 20_000


def test_register_mistakes_are_one_line(cli, pair_stores, tmp_path):
    hr, lf, _ = pair_stores
    ran = cli("register", lf, hr, "--out", tmp_path / "r.json")  # swapped: HR voxels bigger
    assert ran.code == 2 and "smaller than LFOV voxels" in ran.stderr and "Traceback" not in ran.output, ran
    assert not (tmp_path / "r.json").exists()
    ran = cli("register", hr, tmp_path / "missing.zarr", "--out", tmp_path / "r.json")
    assert ran.code == 2 and "missing.zarr" in ran.stderr, ran
    ran = cli("register", hr, lf, "--out", tmp_path / "r.json", "--dof", "5")
    assert ran.code == 2 and "dof" in ran.stderr, ran


@pytest.mark.slow
def test_recover_runs_a_saved_unet_over_a_volume_store(cli, pair_stores, tmp_path):
    torch = pytest.importorskip("torch")
    from tomoflow.io import open_volume
    from tomoflow.recover import build_unet, predict_volume
    from tomoflow.recover.unet import UNetConfig
    from tomoflow.train.files import save_unet

    _, lf, pair = pair_stores
    torch.manual_seed(1)
    cfg = UNetConfig(channels=(4, 8))
    model = build_unet(config=cfg)
    weights = tmp_path / "unet.safetensors"
    save_unet(model, cfg, weights, card={"name": "test"})
    out = tmp_path / "rec.zarr"
    ran = cli("recover", lf, "--model", weights, "--out", out, "--cluster", "none")
    assert ran.code == 0 and "blocks computed" in ran.stdout, ran
    got = np.asarray(open_volume(out).values)
    want = predict_volume(model, pair.lfov)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    ran = cli("recover", lf, "--model", tmp_path / "missing.safetensors", "--out", tmp_path / "r2.zarr")
    assert ran.code == 2 and "missing.safetensors" in ran.stderr and not (tmp_path / "r2.zarr").exists(), ran


def test_pores_table_json_and_histogram(cli, pair_stores, tmp_path):
    hr, lf, pair = pair_stores
    js, png = tmp_path / "pores.json", tmp_path / "pores.png"
    ran = cli("pores", hr, "--reference", hr, "--json", js, "--png", png, "--min-voxels", "4")
    assert ran.code == 0 and "porosity" in ran.stdout, ran
    doc = json.loads(js.read_text())
    m = doc["volumes"]["hr.zarr"]
    assert m["count"] > 10 and abs(m["porosity_percent"] - 100 * pair.porosity) < 3.0, (m, pair.porosity)
    assert png.stat().st_size > 10_000
    ran = cli("pores", hr)
    assert ran.code == 2 and "--threshold" in ran.stderr, ran
    ran = cli("pores", hr, "--threshold", "0.5", "--region", "0:5,0:5")
    assert ran.code == 2 and "--region" in ran.stderr, ran


def test_pores_recall_by_size_against_the_reference(cli, pair_stores, tmp_path):
    """``--recall``: which of the HR's pores each volume on its grid finds, by pore size; the small pores
    are the first a blurred copy loses. Refused without --reference and for a volume on another grid."""
    from scipy.ndimage import gaussian_filter

    from tomoflow.recover import pore_recall, threshold_from_reference
    from tomoflow.testing import write_volume_store

    hr, lf, pair = pair_stores
    blurred = gaussian_filter(pair.hr, 1.5).astype(np.float32)
    bl = write_volume_store(tmp_path / "blurred.zarr", blurred, voxel_size_um=1.0).path  # the HR's grid
    js = tmp_path / "pores.json"
    ran = cli("pores", hr, bl, "--reference", hr, "--recall", "--json", js)
    assert ran.code == 0 and "blurred.zarr finds" in ran.stdout, ran
    full = json.loads(js.read_text())
    doc = full["recall_by_size"]
    want = pore_recall(pair.hr, {"blurred.zarr": blurred}, threshold=full["threshold"], spacing_um=1.0)
    assert doc["reference"] == want.reference.tolist()
    assert doc["found"]["blurred.zarr"] == want.found["blurred.zarr"].tolist()
    r = [x for x in doc["recall"]["blurred.zarr"] if x is not None]
    assert r[0] < r[-1] == 1.0, r  # the smallest pores are lost first, the largest all found
    ran = cli("pores", hr, bl, "--threshold", threshold_from_reference(pair.hr), "--recall")
    assert ran.code == 2 and "--reference" in ran.stderr, ran
    ran = cli("pores", hr, lf, "--reference", hr, "--recall")
    assert ran.code != 0 and "lfov.zarr" in ran.stderr and "grid" in ran.stderr, ran
