"""Multiscale registration (tomoflow.register.register) on small synthetic pairs with a known transform.

The pair: a fine "sample" volume at 1 um; the LFOV is its 4 x 4 x 4 block mean (4 um voxels, so LFOV
voxel ``k`` is centred at fine coordinate ``4 k + 1.5``); the HR ROI is the sample resampled (cubic)
through a known 9-DOF transform on a 48^3 grid of 1 um voxels; both get a little noise.
"""

import numpy as np
import pytest
from scipy.ndimage import affine_transform, gaussian_filter

from tomoflow.errors import ConfigError, InputError
from tomoflow.register import Registration, RegistrationError, register
from tomoflow.register.transform import Affine9

N, F, HR_N = 128, 4, 48


def _pair(seed=0, rotation=(0.02, -0.015, 0.03), scale=(1.012, 0.99, 1.015), offset=(4.0, -5.0, 3.0)):
    rng = np.random.default_rng(seed)
    v = gaussian_filter(rng.random((N, N, N)), 2.5)
    v = gaussian_filter((v > np.percentile(v, 55)).astype(np.float64), 0.7)
    lfov = v.reshape(N // F, F, N // F, F, N // F, F).mean(axis=(1, 3, 5)) + rng.normal(0, 0.01, (N // F,) * 3)
    c = (HR_N - 1) / 2.0
    m = Affine9(rotation, scale, (0.0, 0.0, 0.0), (c, c, c)).matrix
    m[:3, 3] += np.array([62.0, 58.0, 66.0]) - c  # ROI centre in LFOV micrometres
    hr = affine_transform(v, m[:3, :3], offset=m[:3, 3] + 1.5, output_shape=(HR_N,) * 3, order=3)
    hr = hr + rng.normal(0, 0.01, hr.shape)
    prior = np.eye(4)
    prior[:3, 3] = (m @ np.r_[c, c, c, 1.0])[:3] - c + np.asarray(offset)  # the stage's translation guess
    return hr.astype(np.float32), lfov.astype(np.float32), m, prior


@pytest.fixture(scope="module")
def pair():
    return _pair()


def _error_hr_vox(m_est, m_true):
    g = np.stack(np.meshgrid(*[np.arange(HR_N, dtype=float)] * 3, indexing="ij"), -1).reshape(-1, 3)
    return np.linalg.norm(g @ (m_est[:3, :3] - m_true[:3, :3]).T + (m_est[:3, 3] - m_true[:3, 3]), axis=1)


def test_recovers_a_known_9dof_transform(pair):
    hr, lfov, m_true, prior = pair
    assert _error_hr_vox(prior, m_true).mean() > 5.0
    res = register(hr, lfov, hr_spacing_um=1.0, lfov_spacing_um=4.0, prior=prior)
    assert isinstance(res, Registration) and res.dof == 9
    err = _error_hr_vox(res.matrix, m_true)
    assert err.mean() < 0.1 and err.max() < 0.25, (err.mean(), err.max())
    assert res.ncc > res.ncc_prior
    assert [s["name"] for s in res.stages] == ["prior", "coarse-translation", "translation", "smoothing", "dof-9"]
    np.testing.assert_allclose(res.transform.scale, [1.012, 0.99, 1.015], atol=3e-3)
    d = res.as_dict()
    assert d["matrix"] == res.matrix.tolist() and d["transform"]["rotation_deg"] == pytest.approx(
        res.transform.rotation_deg
    )


def test_translation_only_and_lfov_read_by_region(pair):
    """dof=3 stops after the translation; only the region around the ROI is read from the LFOV."""
    hr, lfov, m_true, prior = pair

    class Sliced:  # an array that records what is read, like a zarr array
        shape, dtype, reads = lfov.shape, lfov.dtype, []

        def __getitem__(self, key):
            self.reads.append(key)
            return lfov[key]

    src = Sliced()
    res = register(hr, src, hr_spacing_um=1.0, lfov_spacing_um=4.0, prior=prior, dof=3)
    assert res.stages[-1]["name"] == "translation"
    assert len(src.reads) == 1
    read = [s.stop - s.start for s in src.reads[0]]
    assert all(r < n for r, n in zip(read, lfov.shape))
    # the rotation and scale are left: a translation alone is within a voxel or two
    assert _error_hr_vox(res.matrix, m_true).mean() < 2.0


def test_bad_inputs_give_clear_errors(pair):
    hr, lfov, _, prior = pair
    with pytest.raises(ConfigError, match="smaller than LFOV voxels"):
        register(hr, lfov, hr_spacing_um=4.0, lfov_spacing_um=1.0, prior=prior)
    with pytest.raises(ConfigError, match="dof"):
        register(hr, lfov, hr_spacing_um=1.0, lfov_spacing_um=4.0, prior=prior, dof=7)
    with pytest.raises(InputError, match="do not overlap"):
        far = prior.copy()
        far[:3, 3] += 1000.0
        register(hr, lfov, hr_spacing_um=1.0, lfov_spacing_um=4.0, prior=far)
    with pytest.raises(InputError, match="HR.*NaN"):
        bad = hr.copy()
        bad[3, 3, 3] = np.nan
        register(bad, lfov, hr_spacing_um=1.0, lfov_spacing_um=4.0, prior=prior)
    with pytest.raises(InputError, match="shape"):
        register(hr[0], lfov, hr_spacing_um=1.0, lfov_spacing_um=4.0, prior=prior)
    with pytest.raises(ConfigError, match="prior"):
        register(hr, lfov, hr_spacing_um=1.0, lfov_spacing_um=4.0, prior=np.ones((3, 3)))


@pytest.mark.slow
def test_wrong_voxel_size_is_implausible(pair):
    """An HR voxel size 15 % off asks for a 0.87 scale: refused, not returned."""
    hr, lfov, _, prior = pair
    with pytest.raises(RegistrationError, match="scale"):
        register(
            hr, lfov, hr_spacing_um=1.0, lfov_spacing_um=4.0 * 0.87, prior=prior * np.r_[1, 1, 1, 1][:, None] * 1.0
        )


@pytest.mark.parametrize("setting", ["moving-step", "fixed-subset"])
def test_bounded_memory_settings_keep_the_accuracy(pair, monkeypatch, setting):
    """What large volumes use, forced on a small one: the moving image sampled every 2 HR voxels (a
    voxel budget; smoothing trials below 0.7 steps skipped) and the coarse search on a 2x-binned LFOV;
    or NCC at a fixed random subset of the LFOV voxels. (This ROI spans only 12 LFOV voxels: fewer
    points or a coarser grid cost more here than on a real ROI of 100 or more.)"""
    import tomoflow.register.registration as reg
    from tomoflow.register.moving import ArrayMoving

    hr, lfov, m_true, prior = pair
    if setting == "moving-step":
        monkeypatch.setattr(reg, "MAX_MOVING_VOXELS", 24**3)
        monkeypatch.setattr(reg, "COARSE_MAX_EXTENT", 8)
    else:
        monkeypatch.setattr(reg, "MAX_FIXED_POINTS", 4000)
    steps, points = [], []

    class Moving(ArrayMoving):
        def sample(self, sigma, step):
            steps.append((sigma, step))
            return super().sample(sigma, step)

    optimise = reg._optimise

    def counting(problem, *args):
        points.append(problem.f.numel())
        return optimise(problem, *args)

    monkeypatch.setattr(reg, "_optimise", counting)
    res = register(Moving(hr), lfov, hr_spacing_um=1.0, lfov_spacing_um=4.0, prior=prior)
    err = _error_hr_vox(res.matrix, m_true)
    assert err.mean() < 0.15 and err.max() < 0.3, (err.mean(), err.max())
    if setting == "moving-step":
        assert min(s for _, s in steps) == 2 and all(sigma >= 0.7 * 2 for sigma, _ in steps), steps
    else:
        assert max(points) == 4000 < lfov.size, points
