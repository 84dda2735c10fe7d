import numpy as np
import pytest

from tomoflow.errors import ConfigError, InputError
from tomoflow.recon import project
from tomoflow.recon.fbp import circle_mask, fbp
from tomoflow.recon.iterative import mlem, sirt
from tomoflow.testing import ellipse_slice

N = 64
PHANTOM = ellipse_slice(N)
ANGLES = np.linspace(0, 180, 60, endpoint=False)
SINO = project(PHANTOM, ANGLES)
MASK = circle_mask((N, N), radius=0.45 * N)


def _rmse(a):
    return float(np.sqrt(np.mean((a - PHANTOM)[MASK] ** 2)))


@pytest.mark.parametrize("method,n_iter,target", [(mlem, 60, 0.05), (sirt, 100, 0.06)])
def test_objective_decreases_and_error_is_reached(method, n_iter, target):
    rec, info = method(SINO, ANGLES, n_iter=n_iter, mask=True, return_info=True)
    obj = np.array(info.objective)
    assert info.n_iter == n_iter
    assert np.all(np.diff(obj) <= 1e-6 * obj[0]), "objective must not increase"
    assert obj[-1] < 0.01 * obj[0]
    assert _rmse(rec) < target
    assert rec.min() >= 0
    assert np.all(rec[~circle_mask((N, N))] == 0)


def test_warm_start_and_tolerance():
    x0 = np.clip(fbp(SINO, ANGLES), 0, None)[None]
    cold, ci = mlem(SINO[:, None], ANGLES, n_iter=5, return_info=True)
    warm, wi = mlem(SINO[:, None], ANGLES, n_iter=5, x0=x0, return_info=True)
    assert wi.objective[0] < ci.objective[0]
    assert _rmse(warm[0]) < _rmse(cold[0])
    _, info = sirt(SINO, ANGLES, n_iter=500, tol=1e-2, return_info=True)
    assert info.converged and info.n_iter < 500


def test_iterative_bad_input():
    with pytest.raises(InputError, match="NaN"):
        mlem(np.full_like(SINO, np.nan), ANGLES, n_iter=1)
    with pytest.raises(InputError, match="warm start"):
        mlem(SINO, ANGLES, n_iter=1, x0=np.ones((3, 3, 3)))
    with pytest.raises(InputError, match="angles"):
        sirt(SINO, ANGLES[1:], n_iter=1)
    with pytest.raises(ConfigError, match="n_iter"):
        sirt(SINO, ANGLES, n_iter=0)
    with pytest.raises(ConfigError, match="tol"):
        mlem(SINO, ANGLES, tol=-1.0)
    with pytest.raises(ConfigError, match="relaxation"):
        sirt(SINO, ANGLES, relaxation=2.5)
    with pytest.raises(TypeError):
        mlem(SINO, ANGLES, None, 5)  # options are keyword-only


def test_osem_one_subset_is_mlem_and_more_subsets_converge_faster():
    """subsets=1 is MLEM exactly; 6 ordered subsets reach in 5 iterations what MLEM does not in 20."""
    ref, ref_info = mlem(SINO, ANGLES, n_iter=5, mask=True, return_info=True)
    one, one_info = mlem(SINO, ANGLES, n_iter=5, mask=True, return_info=True, subsets=1)
    np.testing.assert_array_equal(one, ref)
    assert one_info.objective == ref_info.objective
    os6, info = mlem(SINO, ANGLES, n_iter=5, mask=True, return_info=True, subsets=6)
    slow = mlem(SINO, ANGLES, n_iter=20, mask=True)
    assert _rmse(os6) < _rmse(slow) and os6.min() >= 0
    assert np.all(os6[~circle_mask((N, N))] == 0)
    assert info.n_iter == 5 and np.all(np.diff(info.objective) < 0)


def test_osem_subsets_follow_angle_order_not_input_order():
    """The subsets are interleaved in angle order, so a shuffled scan reconstructs the same."""
    perm = np.random.default_rng(0).permutation(ANGLES.size)
    a = mlem(SINO, ANGLES, n_iter=3, subsets=4)
    b = mlem(SINO[perm], ANGLES[perm], n_iter=3, subsets=4)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * float(a.max()))


def test_osem_bad_subsets():
    with pytest.raises(ConfigError, match="subsets"):
        mlem(SINO, ANGLES, n_iter=1, subsets=0)
    with pytest.raises(ConfigError, match="at most the number of angles"):
        mlem(SINO, ANGLES, n_iter=1, subsets=ANGLES.size + 1)


@pytest.mark.parametrize("subsets", [1, 4])
def test_mlem_weights_leave_missing_data_out(subsets):
    """Weight 0 marks a missing datum: a corrupted band with weight 0 changes nothing it should not,
    unit weights are plain MLEM, and bad weights are refused."""
    y = np.repeat(SINO[:, None], 2, axis=1)  # (angle, 2 rows, col)
    plain = mlem(y, ANGLES, n_iter=20, subsets=subsets)
    np.testing.assert_allclose(
        mlem(y, ANGLES, n_iter=20, subsets=subsets, weights=np.ones_like(y)), plain, rtol=1e-4, atol=1e-6
    )
    bad = y.copy()
    bad[::3, :, :12] = 5 * y.max()  # edge bands of every third view replaced by junk
    w = np.ones_like(y)
    w[::3, :, :12] = 0
    weighted = mlem(bad, ANGLES, n_iter=20, subsets=subsets, weights=w)
    unweighted = mlem(bad, ANGLES, n_iter=20, subsets=subsets)
    assert _rmse(weighted[0]) < 1.3 * _rmse(plain[0]) and _rmse(unweighted[0]) > 3 * _rmse(weighted[0])
    # a row with every datum missing carries no evidence: it comes out 0, and nothing is NaN
    w[:, 1] = 0
    out = mlem(bad, ANGLES, n_iter=3, subsets=subsets, weights=w)
    assert np.all(np.isfinite(out)) and not np.any(out[1]) and np.any(out[0])


def test_mlem_bad_weights():
    with pytest.raises(InputError, match="weights have shape"):
        mlem(SINO, ANGLES, n_iter=1, weights=np.ones((3, 3)))
    with pytest.raises(InputError, match=">= 0"):
        mlem(SINO, ANGLES, n_iter=1, weights=-np.ones_like(SINO))
    nan = np.ones_like(SINO)
    nan[0, 0] = np.nan
    with pytest.raises(InputError, match="weights"):
        mlem(SINO, ANGLES, n_iter=1, weights=nan)
