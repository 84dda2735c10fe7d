"""``tomoflow resample``: the LFOV onto the HR ROI grid through a registration (the registration kept in the
output's metadata), or its whole field (or a region of it) at the HR voxel size; mistakes are one line."""

import json

import numpy as np
import pytest

from tomoflow.io.synthetic import SIMULATION_TRUTH, write_multiscale_pair
from tomoflow.io.volume_store import VolumeStore
from tomoflow.register.resample import resample_to_grid
from tomoflow.sim import simulate_multiscale_pair


@pytest.fixture(scope="module")
def pair_stores(tmp_path_factory):
    d = tmp_path_factory.mktemp("pair")
    pair = simulate_multiscale_pair(
        hr_shape=(24, 24, 24), lfov_shape=(16, 16, 16), max_translation_lfov_vox=1.0, seed=5
    )
    hr, lf = write_multiscale_pair(pair, d / "hr.zarr", d / "lfov.zarr")
    truth = json.loads((hr / "zarr.json").read_text())["attributes"]["extra"][SIMULATION_TRUTH]["hr_to_lfov_matrix"]
    reg = d / "reg.json"  # what `tomoflow register` writes, with the true matrix
    reg.write_text(json.dumps({"matrix": truth, "hr_voxel_um": 1.0, "lfov_voxel_um": 4.0, "ncc": 0.9}))
    return hr, lf, reg, pair


def test_registration_resamples_onto_the_hr_grid_and_is_kept(cli, pair_stores, tmp_path):
    hr, lf, reg, pair = pair_stores
    out = tmp_path / "lfov_on_hr.zarr"
    ran = cli("resample", lf, "--out", out, "--registration", reg, "--hr", hr, "--chunk", 16, "--cluster", "none")
    assert ran.code == 0, ran
    v = VolumeStore.open(out)
    assert v.shape == pair.hr.shape and v.attrs.voxel_size.value == 1.0 and v.n_levels >= 2
    want = resample_to_grid(pair.lfov, pair.true_matrix, pair.hr.shape, 1.0, 4.0)
    np.testing.assert_allclose(np.asarray(v.level(0)[...]), want, atol=1e-5)
    doc = v.extra["registration"]
    np.testing.assert_allclose(doc["matrix"], pair.true_matrix)
    assert doc["ncc"] == 0.9 and v.extra["resampled_from"] == str(lf)


def test_whole_field_and_a_region_at_the_hr_voxel_size(cli, pair_stores, tmp_path):
    _, lf, _, pair = pair_stores
    field, part = tmp_path / "field.zarr", tmp_path / "part.zarr"
    assert cli("resample", lf, "--out", field, "--voxel", 1.0, "--cluster", "none").code == 0
    f = np.asarray(VolumeStore.open(field).level(0)[...])
    assert f.shape == (61, 61, 61)  # (16 - 1) * 4 + 1: first to last LFOV voxel centre
    np.testing.assert_allclose(f[::4, ::4, ::4], pair.lfov, atol=1e-4)  # interpolation through the samples
    ran = cli("resample", lf, "--out", part, "--voxel", 1.0, "--region", "10:30,0:61,5:20", "--cluster", "none")
    assert ran.code == 0, ran
    np.testing.assert_allclose(np.asarray(VolumeStore.open(part).level(0)[...]), f[10:30, :, 5:20], atol=1e-5)


@pytest.mark.parametrize(
    "args, words",
    [
        ([], ["--registration", "--voxel"]),
        (["--voxel", 1.0, "--registration", "REG"], ["either"]),
        (["--registration", "REG"], ["--hr"]),
        (["--voxel", -1.0], ["--voxel", "positive"]),
        (["--voxel", 1.0, "--region", "0:100,0:5,0:5"], ["region", "0:61"]),
        (["--voxel", 1.0, "--region", "0:5"], ["--region"]),
    ],
)
def test_mistakes_are_one_line_and_write_nothing(cli, one_line_error, pair_stores, tmp_path, args, words):
    _, lf, reg, _ = pair_stores
    args = [reg if a == "REG" else a for a in args]
    ran = cli("resample", lf, "--out", tmp_path / "o.zarr", "--cluster", "none", *args)
    one_line_error(ran, *words)
    assert not (tmp_path / "o.zarr").exists()


def test_a_registration_of_other_volumes_is_refused(cli, one_line_error, pair_stores, tmp_path):
    hr, lf, _, _ = pair_stores
    reg = tmp_path / "other.json"
    reg.write_text(json.dumps({"matrix": np.eye(4).tolist(), "hr_voxel_um": 0.5, "lfov_voxel_um": 4.0}))
    ran = cli("resample", lf, "--out", tmp_path / "o.zarr", "--registration", reg, "--hr", hr, "--cluster", "none")
    one_line_error(ran, "hr_voxel_um", "other volumes")
    assert not (tmp_path / "o.zarr").exists()
