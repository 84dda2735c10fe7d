"""Registration of two volume stores from their stage positions (tomoflow.pipeline.registration)."""

import numpy as np
import pytest

from tomoflow.errors import ConfigError
from tomoflow.io.synthetic import write_multiscale_pair
from tomoflow.pipeline.registration import register_volumes
from tomoflow.sim import simulate_multiscale_pair
from tomoflow.testing import write_volume_store

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    d = tmp_path_factory.mktemp("reg")
    pair = simulate_multiscale_pair(hr_shape=(48, 48, 48), lfov_shape=(26, 26, 26), prior_error_lfov_vox=1.5, seed=4)
    hr, lf = write_multiscale_pair(pair, d / "hr.zarr", d / "lfov.zarr")
    return hr, lf, pair


def test_the_document_places_the_roi_from_the_stage_prior(stores):
    hr, lf, pair = stores
    doc = register_volumes(hr, lf, device="cpu")
    assert doc["prior_source"] == "stage positions" and doc["hr_voxel_um"] == 1.0 and doc["lfov_voxel_um"] == 4.0
    assert doc["ncc"] > doc["ncc_prior"] and doc["seconds"] > 0
    g = np.stack(np.meshgrid(*[np.arange(0, 48, 8.0)] * 3, indexing="ij"), -1).reshape(-1, 3)
    d = np.asarray(doc["matrix"]) - pair.true_matrix
    assert np.linalg.norm(g @ d[:3, :3].T + d[:3, 3], axis=1).mean() < 0.3  # HR voxels (1 um)


def test_swapped_volumes_and_unknown_voxel_sizes_are_refused(stores, tmp_path):
    hr, lf, _ = stores
    with pytest.raises(ConfigError, match="smaller than LFOV voxels"):
        register_volumes(lf, hr)
    bare = write_volume_store(tmp_path / "bare.zarr", np.zeros((8, 8, 8), np.float32), voxel_size_um=None)
    with pytest.raises(ConfigError, match="voxel size is unknown"):
        register_volumes(bare.path, lf)
