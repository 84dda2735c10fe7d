"""The CuPy path: the same kernels with ``xp = cupy`` give the NumPy results (CuPy in, CuPy out).

Skipped without a CUDA device; run on a GPU machine with ``pytest -m gpu``.
"""

import numpy as np
import pytest

from tomoflow.backend import has_cuda
from tomoflow.testing import ellipse_slice, has_module

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not (has_module("cupy") and has_cuda()),
                                                  reason="needs a CUDA device and CuPy")]

N = 64
ANGLES = np.linspace(0, 180, 60, endpoint=False)


@pytest.fixture(scope="module")
def cp():
    import cupy

    return cupy


@pytest.fixture(scope="module")
def data():
    from tomoflow.recon import project

    vol = np.stack([ellipse_slice(N), 0.5 * ellipse_slice(N)])
    return vol, project(vol, ANGLES, center=33.2)


def test_projector_pair_on_gpu(cp, data):
    from tomoflow.recon import backproject, project

    vol, proj = data
    out = project(cp.asarray(vol), ANGLES, center=33.2)
    assert isinstance(out, cp.ndarray)
    np.testing.assert_allclose(out.get(), proj, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(backproject(cp.asarray(proj), ANGLES, center=33.2).get(),
                               backproject(proj, ANGLES, center=33.2), rtol=1e-4, atol=1e-3)


def test_fbp_mlem_sirt_on_gpu(cp, data):
    from tomoflow.recon import fbp, mlem, sirt

    _, proj = data
    g = cp.asarray(proj)
    for fn, kw in ((fbp, {"filter": "hann"}), (mlem, {"n_iter": 5}), (sirt, {"n_iter": 5})):
        out = fn(g, ANGLES, center=33.2, **kw)
        assert isinstance(out, cp.ndarray)
        np.testing.assert_allclose(out.get(), fn(proj, ANGLES, center=33.2, **kw), rtol=1e-3, atol=1e-3)


def test_center_and_normalisation_on_gpu(cp, data):
    from tomoflow.recon import find_center, normalize_log

    _, proj = data
    assert find_center(cp.asarray(proj), ANGLES) == pytest.approx(33.2, abs=0.25)
    raw = cp.asarray(1000 * np.exp(-proj) + 10)
    line = normalize_log(raw, cp.full((1, *proj.shape[1:]), 1010.0), cp.full((1, *proj.shape[1:]), 10.0))
    np.testing.assert_allclose(line.get(), proj, atol=1e-3)
