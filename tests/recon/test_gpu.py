"""The CuPy path: the same kernels with ``xp = cupy`` give the NumPy results (CuPy in, CuPy out).

Skipped without a CUDA device; run on a GPU machine with ``pytest -m gpu``.
"""

import numpy as np
import pytest

from tomoflow.testing import ellipse_slice

pytestmark = pytest.mark.gpu

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
    np.testing.assert_allclose(
        backproject(cp.asarray(proj), ANGLES, center=33.2).get(),
        backproject(proj, ANGLES, center=33.2),
        rtol=1e-4,
        atol=1e-3,
    )


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
    # Attenuation scaled so that every transmission stays above normalize_log's 1e-6 floor.
    raw = cp.asarray(1000 * np.exp(-0.2 * proj) + 10)
    line = normalize_log(raw, cp.full((1, *proj.shape[1:]), 1010.0), cp.full((1, *proj.shape[1:]), 10.0))
    np.testing.assert_allclose(line.get(), 0.2 * proj, atol=1e-3)


# ----------------------------------------------------------------------------- fused CUDA kernels
@pytest.fixture(scope="module")
def odd_case():
    """A slab with an odd row count (padding to 4 slices), a rectangular slice, an off-centre axis and
    angles on the 45-degree diagonals (where the forward kernel switches its ray direction)."""
    rng = np.random.default_rng(3)
    vol = rng.random((5, 48, 70)).astype(np.float32)
    angles = np.concatenate([np.linspace(0, 180, 41, endpoint=False), [45.0, 135.0, 90.0, -45.0, 200.0]])
    return vol, angles, 37.6, 81


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_fused_kernels_match_numba(cp, odd_case):
    from tomoflow.recon import backproject, project

    vol, angles, center, ncol = odd_case
    ref = project(vol, angles, center=center, n_cols=ncol)
    out = project(cp.asarray(vol), angles, center=center, n_cols=ncol)
    assert isinstance(out, cp.ndarray) and out.shape == ref.shape
    assert _rel(out.get(), ref) < 1e-4
    for model in ("adjoint", "interpolate"):
        bref = backproject(ref, angles, center=center, shape=vol.shape[1:], model=model)
        bout = backproject(cp.asarray(ref), angles, center=center, shape=vol.shape[1:], model=model)
        assert _rel(bout.get(), bref) < 1e-4, model
        bxp = backproject(cp.asarray(ref), angles, center=center, shape=vol.shape[1:], model=model, backend="xp")
        assert _rel(bout.get(), bxp.get()) < 1e-4, model


def test_fused_pair_is_adjoint_on_gpu(cp, odd_case):
    from tomoflow.recon import backproject, project

    vol, angles, center, ncol = odd_case
    rng = np.random.default_rng(4)
    x = cp.asarray(vol)
    y = cp.asarray(rng.random((angles.size, vol.shape[0], ncol)).astype(np.float32))
    lhs = float(cp.vdot(project(x, angles, center=center, n_cols=ncol).astype(cp.float64), y))
    rhs = float(cp.vdot(x.astype(cp.float64), backproject(y, angles, center=center, shape=vol.shape[1:])))
    assert lhs == pytest.approx(rhs, rel=1e-5)


def test_fourier_fbp_on_gpu_matches_cpu(cp, data):
    from tomoflow.recon import fbp

    _, proj = data
    for f in ("ramp", "shepp-logan"):
        out = fbp(cp.asarray(proj), ANGLES, center=33.2, filter=f, method="fourier")
        assert isinstance(out, cp.ndarray)
        np.testing.assert_allclose(
            out.get(), fbp(proj, ANGLES, center=33.2, filter=f, method="fourier"), rtol=1e-3, atol=1e-4
        )
