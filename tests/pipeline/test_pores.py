"""Pore metrics of volume stores by z-slabs (tomoflow.pipeline.pores) equal the in-memory kernel's."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from tomoflow.errors import ConfigError
from tomoflow.pipeline.pores import reference_threshold, volume_pores
from tomoflow.recover import pore_metrics, threshold_from_reference
from tomoflow.testing import write_volume_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    v = gaussian_filter(np.random.default_rng(0).random((50, 40, 45)), 1.5).astype(np.float32)
    return write_volume_store(tmp_path_factory.mktemp("pores") / "v.zarr", v, chunks=(7, 16, 16)), v


@pytest.mark.parametrize("slab", [None, 3, 50])
def test_slabs_equal_the_whole_region(store, slab):
    s, v = store
    t = float(np.percentile(v, 20))
    m = volume_pores(s.path, threshold=t, slab=slab)
    w = pore_metrics(v, threshold=t, spacing_um=2.0)
    assert m.count == w.count > 3 and m.porosity == w.porosity
    np.testing.assert_allclose(m.volumes_um3, w.volumes_um3)
    r = ((5, 40), (3, 30), (0, 45))
    m2 = volume_pores(s.path, threshold=t, region=r, slab=slab, connectivity=6)
    w2 = pore_metrics(v[5:40, 3:30, :], threshold=t, spacing_um=2.0, connectivity=6)
    assert m2.count == w2.count and m2.porosity == w2.porosity


def test_reference_threshold_and_bad_region(store):
    s, v = store
    assert reference_threshold(s.path) == pytest.approx(threshold_from_reference(v), rel=1e-6)
    with pytest.raises(ConfigError, match="region"):
        volume_pores(s.path, threshold=0.5, region=((0, 60), (0, 5), (0, 5)))


def test_recall_of_stores_equals_the_kernel_and_is_bounded(store, tmp_path):
    from tomoflow.errors import InputError
    from tomoflow.pipeline.pores import volume_pore_recall
    from tomoflow.recover import pore_recall

    s, v = store
    t = float(np.percentile(v, 20))
    other = gaussian_filter(v, 1.0).astype(np.float32)
    o = write_volume_store(tmp_path / "o.zarr", other, chunks=(7, 16, 16))
    r = ((5, 40), (3, 30), (0, 45))
    got = volume_pore_recall(s.path, [o.path], threshold=t, region=r)
    sl = tuple(slice(a, b) for a, b in r)
    want = pore_recall(v[sl], {"o.zarr": other[sl]}, threshold=t, spacing_um=2.0)
    assert got.reference.tolist() == want.reference.tolist() and got.reference.sum() > 3
    assert got.found["o.zarr"].tolist() == want.found["o.zarr"].tolist()
    with pytest.raises(ConfigError, match="smaller region"):
        volume_pore_recall(s.path, [o.path], threshold=t, max_bytes=1000)
    small = write_volume_store(tmp_path / "small.zarr", v[:10])
    with pytest.raises(InputError, match="one grid"):
        volume_pore_recall(s.path, [small.path], threshold=t)
