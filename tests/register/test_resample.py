"""The LFOV on the HR grid through a matrix (tomoflow.register.resample)."""

import numpy as np
import pytest

from tomoflow.errors import ConfigError, InputError
from tomoflow.register.resample import footprint, resample_to_grid
from tomoflow.register.transform import Affine9

SRC_N, SRC_SP = 40, 4.0


def _f(z, y, x):  # a smooth field in source micrometres
    return np.sin(z / 23.0) * np.cos(y / 31.0) + 0.5 * np.sin((x + 0.3 * z) / 19.0)


@pytest.fixture(scope="module")
def source():
    g = np.arange(SRC_N) * SRC_SP
    return _f(*np.meshgrid(g, g, g, indexing="ij")).astype(np.float32)


def _matrix():
    c = np.full(3, 23.5)
    m = Affine9((0.03, -0.02, 0.05), (1.01, 0.99, 1.02), (0.0, 0.0, 0.0), tuple(c)).matrix
    m[:3, 3] += np.array([70.0, 80.0, 75.0]) - c
    return m


def test_cubic_resampling_of_a_smooth_field(source):
    m = _matrix()
    out = resample_to_grid(source, m, (48, 48, 48), 1.0, SRC_SP)
    g = np.arange(48, dtype=float)
    p = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1) @ m[:3, :3].T + m[:3, 3]
    truth = _f(p[..., 0], p[..., 1], p[..., 2])
    assert out.shape == (48, 48, 48) and out.dtype == np.float32
    assert np.abs(out - truth).max() < 2e-3
    lin = resample_to_grid(source, m, (48, 48, 48), 1.0, SRC_SP, order=1)
    assert np.abs(lin - truth).max() > np.abs(out - truth).max()  # cubic beats trilinear


def test_boxes_tile_the_grid_exactly(source):
    m = _matrix()
    whole = resample_to_grid(source, m, (48, 48, 48), 1.0, SRC_SP, slab=7)
    part = resample_to_grid(source, m, (48, 48, 48), 1.0, SRC_SP, box=((10, 30), (0, 17), (40, 48)))
    np.testing.assert_allclose(part, whole[10:30, 0:17, 40:48], rtol=0, atol=1e-6)


def test_identity_on_the_source_grid_is_exact(source):
    out = resample_to_grid(source, np.eye(4), source.shape, SRC_SP, SRC_SP)
    np.testing.assert_allclose(out, source, atol=1e-5)


def test_reads_only_the_needed_region_and_refuses_outside():
    g = np.arange(80) * SRC_SP
    source = _f(*np.meshgrid(g, g, g, indexing="ij")).astype(np.float32)

    class Sliced:
        shape, reads = source.shape, []

        def __getitem__(self, key):
            self.reads.append(key)
            return source[key]

    src = Sliced()
    m = _matrix()
    resample_to_grid(src, m, (48, 48, 48), 1.0, SRC_SP)
    lo, hi = footprint(m, (48, 48, 48), 1.0, SRC_SP)
    (key,) = src.reads
    assert all(s.start <= np.floor(a) and s.stop >= np.ceil(b) for s, a, b in zip(key, lo, hi))
    assert np.prod([s.stop - s.start for s in key]) < 0.25 * source.size
    far = m.copy()
    far[:3, 3] += 1000.0
    with pytest.raises(InputError, match="outside the source"):
        resample_to_grid(source, far, (48, 48, 48), 1.0, SRC_SP)
    with pytest.raises(ConfigError, match="box"):
        resample_to_grid(source, m, (48, 48, 48), 1.0, SRC_SP, box=((0, 60), (0, 5), (0, 5)))
    with pytest.raises(ConfigError, match="order"):
        resample_to_grid(source, m, (48, 48, 48), 1.0, SRC_SP, order=7)


@pytest.mark.parametrize("order", [1, 3])
def test_axes_aligned_grids_are_evaluated_one_axis_at_a_time_with_the_same_values(monkeypatch, order):
    """A whole field at another voxel size (a diagonal map) takes the separable path; it equals the
    general path (map_coordinates on every voxel) to float rounding, at the volume's faces too."""
    import tomoflow.register.resample as rs

    rng = np.random.default_rng(3)
    src = rng.random((9, 12, 10))
    m = np.diag([1.0, 1.0, 1.0, 1.0])
    m[:3, 3] = [0.5, 0.0, 1.25]  # micrometres: off the source's voxel centres
    shape, sp, ssp = (30, 44, 32), 0.25, 1.0
    calls = []
    real = rs._separable
    monkeypatch.setattr(rs, "_separable", lambda *a: calls.append(1) or real(*a))
    for box in (None, ((0, 7), (40, 44), (3, 32))):
        fast = resample_to_grid(src, m, shape, sp, ssp, box=box, order=order)
        monkeypatch.setattr(rs, "_SEPARABLE_ORDERS", ())
        slow = resample_to_grid(src, m, shape, sp, ssp, box=box, order=order)
        monkeypatch.setattr(rs, "_SEPARABLE_ORDERS", (1, 3))
        np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-6)
    assert len(calls) == 2
