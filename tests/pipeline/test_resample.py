"""The ``resample`` stage: a volume store onto another grid, chunk by chunk (tomoflow.pipeline.resample)."""

import numpy as np
import pytest

from tomoflow.errors import InputError
from tomoflow.pipeline.resample import field_grid, resample_volume
from tomoflow.register.resample import resample_to_grid
from tomoflow.register.transform import Affine9
from tomoflow.testing import write_volume_store


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    g = np.arange(30) * 4.0
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    data = (np.sin(z / 17.0) * np.cos(y / 23.0) + np.sin((x + 0.2 * y) / 13.0)).astype(np.float32)
    return write_volume_store(tmp_path_factory.mktemp("rs") / "src.zarr", data, voxel_size_um=4.0), data


def test_store_equals_in_memory_resampling(source, tmp_path):
    src, data = source
    c = np.full(3, 20.0)
    m = Affine9((0.02, 0.01, -0.03), (1.01, 1.0, 0.99), (0.0, 0.0, 0.0), tuple(c)).matrix
    m[:3, 3] += np.array([60.0, 55.0, 58.0]) - c
    out = resample_volume(
        src.path, tmp_path / "roi.zarr", matrix=m, shape=(41, 40, 37), spacing_um=1.0, chunks=(16, 16, 16)
    )
    want = resample_to_grid(data, m, (41, 40, 37), 1.0, 4.0)
    np.testing.assert_allclose(np.asarray(out.level(0)[...]), want, rtol=0, atol=1e-6)
    assert out.is_complete() and out.attrs.voxel_size.value == 1.0 and out.extra["matrix"] == m.tolist()


def test_whole_field_at_a_finer_voxel_size(source, tmp_path):
    src, data = source
    shape, m = field_grid(data.shape, 4.0, 2.0)
    assert shape == (59, 59, 59)
    out = resample_volume(src.path, tmp_path / "fine.zarr", matrix=m, shape=shape, spacing_um=2.0)
    fine = np.asarray(out.level(0)[...])
    np.testing.assert_allclose(fine[::2, ::2, ::2], data, atol=1e-5)  # source voxel centres reproduced


def test_grid_outside_the_source_is_refused_before_writing(source, tmp_path):
    src, _ = source
    m = np.eye(4)
    m[:3, 3] = 100.0
    with pytest.raises(InputError, match="outside the source"):
        resample_volume(src.path, tmp_path / "bad.zarr", matrix=m, shape=(20, 20, 20), spacing_um=1.0)
    assert not (tmp_path / "bad.zarr").exists()
