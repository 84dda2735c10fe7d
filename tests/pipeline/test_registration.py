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


class _Counting:
    """A zarr array that records the number of voxels of every read (what a store read costs)."""

    def __init__(self, array):
        self.array, self.shape, self.chunks, self.dtype = array, array.shape, array.chunks, array.dtype
        self.reads = []

    def __getitem__(self, key):
        out = np.asarray(self.array[key])
        self.reads.append(out.size)
        return out


@pytest.mark.parametrize(
    ("sigma", "step", "chunks"),
    [
        (1.5, 2, (16, 24, 20)),
        (4.4, 3, (16, 24, 20)),
        (0.0, 1, (16, 24, 20)),
        (2.0, 1, (50, 61, 47)),
        (4.4, 2, (6, 7, 5)),
    ],
)
def test_the_store_moving_image_equals_the_smoothed_volume(tmp_path, sigma, step, chunks):
    """Chunk by chunk (halos of up to 18 voxels, chunks smaller than them, the reflected faces) it is
    the volume smoothed by scipy and sampled every ``step`` voxels; each chunk is read once."""
    from scipy.ndimage import gaussian_filter

    from tomoflow.pipeline.registration import StoreMoving
    from tomoflow.register.moving import ArrayMoving

    data = np.random.default_rng(0).random((50, 61, 47), dtype=np.float32)
    v = write_volume_store(tmp_path / "v.zarr", data, voxel_size_um=1.0, chunks=chunks)
    src = _Counting(v.level(0))
    got = StoreMoving(src).sample(sigma, step)
    ref = gaussian_filter(data, sigma)[::step, ::step, ::step] if sigma else data[::step, ::step, ::step]
    np.testing.assert_allclose(got, ref, atol=2e-6)
    np.testing.assert_allclose(ArrayMoving(data).sample(sigma, step), ref, atol=2e-6)
    assert sum(src.reads) == data.size and max(src.reads) <= int(np.prod(chunks))


def test_registration_never_reads_the_hr_level_0_whole(stores, tmp_path):
    """register_volumes reads the HR level 0 chunk by chunk (once per moving image), never whole, and
    finds the same placement as from the volume in memory."""
    from tomoflow.io.volume_store import VolumeStore
    from tomoflow.pipeline import registration as reg

    hr, lf, pair = stores
    rechunked = write_volume_store(
        tmp_path / "hr.zarr", VolumeStore.open(hr).level(0)[...], voxel_size_um=1.0, chunks=(16, 16, 16)
    )
    src = _Counting(rechunked.level(0))
    calls = []

    class Moving(reg.StoreMoving):
        def sample(self, sigma, step):
            calls.append((sigma, step))
            return super().sample(sigma, step)

    from tomoflow.register import register

    res = register(
        Moving(src),
        VolumeStore.open(lf).level(0),
        hr_spacing_um=1.0,
        lfov_spacing_um=4.0,
        prior=pair.prior_matrix,
        device="cpu",
    )
    level0 = int(np.prod(pair.hr.shape))
    assert max(src.reads) <= 16**3 < level0 // 20
    assert sum(src.reads) == len(calls) * level0  # each chunk once per smoothing
    assert [s for s, _ in calls] == [2.0, 1.4, 2.6, 3.2, 4.0]  # translation (and trial 0.5), the other trials
    doc = register_volumes(hr, lf, device="cpu")
    same = register_volumes(hr, lf, device="cpu", hr_volume=pair.hr)  # the old parameter still works
    g = np.stack(np.meshgrid(*[np.arange(0, 48, 8.0)] * 3, indexing="ij"), -1).reshape(-1, 3)
    for m in (res.matrix, same["matrix"]):  # the same up to float32 rounding (other chunks: other sums)
        d = np.asarray(m) - np.asarray(doc["matrix"])
        assert np.linalg.norm(g @ d[:3, :3].T + d[:3, 3], axis=1).max() < 0.01  # HR voxels


def test_a_nan_in_the_hr_store_is_named(stores, tmp_path):
    """The HR level 0 is never checked whole: a NaN reaches the smoothed samples, and is refused there."""
    from tomoflow.errors import InputError
    from tomoflow.io.volume_store import VolumeStore
    from tomoflow.pipeline.registration import StoreMoving
    from tomoflow.register import register

    _, lf, pair = stores
    bad = pair.hr.copy()
    bad[17, 21, 31] = np.nan
    v = write_volume_store(tmp_path / "bad.zarr", bad, voxel_size_um=1.0, chunks=(16, 16, 16))
    with pytest.raises(InputError, match="HR.*NaN"):
        register(
            StoreMoving(v.level(0)),
            VolumeStore.open(lf).level(0),
            hr_spacing_um=1.0,
            lfov_spacing_um=4.0,
            prior=pair.prior_matrix,
            device="cpu",
        )
