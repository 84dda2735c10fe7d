"""aggregate_particles: random clusters of elongated, overlapping, off-centre particles."""

from __future__ import annotations

import numpy as np
import pytest

from tomoflow.errors import ConfigError
from tomoflow.sim import aggregate_particles


def test_deterministic_shape_dtype_and_range():
    a = aggregate_particles((20, 40, 44), seed=5)
    b = aggregate_particles((20, 40, 44), seed=5)
    c = aggregate_particles((20, 40, 44), seed=6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.shape == (20, 40, 44) and a.dtype == np.float32
    L = 40 / 2
    assert a.min() >= 0.0 and 0.0 < a.max() <= 3.0 / L + 1e-6  # overlaps take the denser value, never a sum
    assert np.all(np.isfinite(a))


def test_off_centre_and_elongated():
    n = 48
    vol = aggregate_particles(
        n, seed=1, n_particles=12, n_clusters=1, offset=0.6, cluster_length=0.9, radius=(0.08, 0.12)
    )
    # a single elongated cluster: the mass distribution is strongly anisotropic in 3-D
    g = np.stack(np.meshgrid(*[np.arange(s) - (s - 1) / 2.0 for s in vol.shape], indexing="ij"))
    m = vol / vol.sum()
    mean = (g * m).sum(axis=(1, 2, 3))
    d = g - mean[:, None, None, None]
    cov = np.einsum("iabc,jabc,abc->ij", d, d, m)
    ev = np.linalg.eigvalsh(cov)
    assert ev[-1] / ev[0] > 3.0
    # many seeds: the aggregates sit off the rotation axis on average
    offs = []
    for s in range(6):
        v = aggregate_particles(32, seed=s, offset=0.6, n_clusters=1)
        w = v.sum(axis=0)
        yy, xx = np.mgrid[:32, :32] - 15.5
        offs.append(np.hypot((w * yy).sum() / w.sum(), (w * xx).sum() / w.sum()))
    assert np.median(offs) > 2.0


def test_single_elongated_particle():
    vol = aggregate_particles(
        40, seed=2, n_particles=1, n_clusters=1, offset=0.0, radius=(0.4, 0.4), elongation=(4.0, 4.0)
    )
    inside = vol > 0.5 * vol.max()
    g = np.argwhere(inside).astype(float)
    ev = np.linalg.eigvalsh(np.cov(g.T))
    assert np.sqrt(ev[-1] / ev[0]) > 2.5  # axis ratio about 4


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_particles": 0},
        {"n_particles": 2, "n_clusters": 3},
        {"radius": (0.2, 0.1)},
        {"radius": (0.1, 0.6)},
        {"elongation": (0.5, 2.0)},
        {"offset": 1.5},
        {"contrast": 1.0},
        {"cluster_length": -1.0},
    ],
)
def test_bad_parameters(kwargs):
    with pytest.raises(ConfigError):
        aggregate_particles(16, **kwargs)
