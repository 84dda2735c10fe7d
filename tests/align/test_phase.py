"""Batched upsampled phase correlation: sub-pixel accuracy, wrap-around, batching, options, errors."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from tomoflow.align.phase import PhaseResult, phase_correlate
from tomoflow.errors import ConfigError, InputError
from tomoflow.recon import shift_images


@pytest.fixture(scope="module")
def pc_texture():
    """A smooth random texture larger than the crops taken from it."""
    rng = np.random.default_rng(7)
    return gaussian_filter(rng.standard_normal((200, 220)), 2.0).astype(np.float32)


def _crops(texture, shifts, shape=(72, 88), origin=(60, 60)):
    """Non-periodic pairs: crops of the texture, and crops of the texture moved by ``shifts``."""
    n = len(shifts)
    big = np.broadcast_to(texture, (n, *texture.shape)).copy()
    moved = shift_images(big, shifts, pad=0)
    sl = (slice(None), slice(origin[0], origin[0] + shape[0]), slice(origin[1], origin[1] + shape[1]))
    return moved[sl], big[sl]


@pytest.mark.parametrize(
    ("window", "normalization", "tol"), [("hann", "partial", 0.05), ("tukey", "partial", 0.05), ("hann", None, 0.05)]
)
def test_subpixel_shifts_on_textured_images(pc_texture, window, normalization, tol):
    """Crops of a texture (content fills the field, not periodic): a taper is needed, and the second,
    re-tapered pass keeps the taper's pull towards zero shift below 0.05 px at upsample 20."""
    rng = np.random.default_rng(0)
    truth = rng.uniform(-3.0, 3.0, size=(24, 2))
    moving, reference = _crops(pc_texture, truth)
    res = phase_correlate(moving, reference, upsample=20, window=window, normalization=normalization)
    assert isinstance(res, PhaseResult)
    assert res.shifts.shape == (24, 2) and res.shifts.dtype == np.float64
    assert np.abs(res.shifts - truth).max() < tol
    assert res.quality.shape == (24,) and np.all((res.quality >= 0) & (res.quality <= 1))


@pytest.mark.parametrize("normalization", [None, "partial", "phase"])
def test_periodic_shifts_every_normalization(pc_texture, normalization):
    """Periodic images need no taper: every weighting finds the shift to a few hundredths of a pixel."""
    img = pc_texture[:64, :80]
    truth = np.array([[0.3, -0.45], [-2.55, 7.1], [11.2, -0.05], [0.0, 0.0]])
    moving = shift_images(np.broadcast_to(img, (4, 64, 80)).copy(), truth, pad=0)
    res = phase_correlate(moving, img, normalization=normalization)
    assert np.abs(res.shifts - truth).max() < 0.02


@pytest.mark.parametrize("shape", [(64, 64), (63, 65)])
def test_large_shifts_wrap_to_the_right_sign(pc_texture, shape):
    """Shifts near +-(N/2 - 1) come back with their sign (peaks beyond half the field are negative)."""
    ny, nx = shape
    img = pc_texture[:ny, :nx]
    big = [ny / 2 - 1.3, -(nx / 2 - 1.2)]
    truth = np.array([big, [-big[0], -big[1]], [ny // 2 - 1, nx // 2 - 1], [-(ny // 2 - 1), -(nx // 2 - 1)]])
    moving = shift_images(np.broadcast_to(img, (4, ny, nx)).copy(), truth, pad=0)
    res = phase_correlate(moving, np.broadcast_to(img, (4, ny, nx)))
    np.testing.assert_allclose(res.shifts, truth, atol=0.02)


def test_sign_convention_and_correction_round_trip(pc_texture):
    """The estimate follows shift_images' convention: correcting with -shifts gives the reference back."""
    ref = pc_texture[:64, :64]
    moving = shift_images(ref, [2.25, -4.6], pad=0)
    res = phase_correlate(moving, ref)
    np.testing.assert_allclose(res.shifts[0], [2.25, -4.6], atol=0.01)
    back = shift_images(moving, -res.shifts[0], pad=0)
    assert np.abs(back - ref).max() < 0.02 * np.abs(ref).max()


def test_batched_equals_one_by_one(pc_texture):
    rng = np.random.default_rng(1)
    truth = rng.uniform(-4, 4, size=(7, 2))
    moving, reference = _crops(pc_texture, truth)
    batch = phase_correlate(moving, reference, window="hann")
    for i in range(7):
        one = phase_correlate(moving[i], reference[i], window="hann")
        assert one.shifts.shape == (1, 2)
        np.testing.assert_allclose(one.shifts[0], batch.shifts[i], atol=1e-9)
        np.testing.assert_allclose(one.quality[0], batch.quality[i], atol=1e-9)


def test_one_reference_for_the_whole_stack(pc_texture):
    ref = pc_texture[:48, :56]
    truth = np.array([[1.5, -2.25], [-3.0, 0.75], [0.1, 0.2]])
    moving = shift_images(np.broadcast_to(ref, (3, 48, 56)).copy(), truth, pad=0)
    np.testing.assert_allclose(phase_correlate(moving, ref).shifts, truth, atol=0.02)


def test_max_shift_restricts_the_search(pc_texture):
    """A pattern repeated 20 px apart: the strongest peak is the far copy; max_shift keeps the near one."""
    base = pc_texture[:64, :64].copy()
    ref = base + 2.0 * np.roll(base, 20, axis=1)
    moving = np.roll(ref, 20, axis=1)  # strongest overlap at dx = 20, a weaker one at dx = 0 and -20
    free = phase_correlate(moving, ref)
    assert abs(free.shifts[0, 1] - 20.0) < 0.05
    near = phase_correlate(moving, ref, max_shift=(2, 5))
    assert np.all(np.abs(near.shifts[0]) <= np.array([2, 5]) + 0.75)
    assert abs(near.shifts[0, 1]) < 1.0


def test_constant_background_does_not_pull_to_zero(pc_texture):
    """A background offset after -log (different in the two images) leaves the shift and quality alone."""
    ref = pc_texture[:64, :64]
    moving = shift_images(ref, [1.4, -2.8], pad=0)
    clean = phase_correlate(moving, ref)
    for window in (None, "hann"):
        res = phase_correlate(moving + 5.0, ref - 3.0, window=window)
        np.testing.assert_allclose(res.shifts[0], [1.4, -2.8], atol=0.03)
    assert phase_correlate(moving + 5.0, ref - 3.0).quality[0] == pytest.approx(clean.quality[0], abs=1e-4)


def test_quality_separates_matches_from_noise(pc_texture):
    ref = pc_texture[:64, :64]
    same = phase_correlate(ref, ref)
    rng = np.random.default_rng(3)
    other = phase_correlate(rng.standard_normal((64, 64)), ref)
    assert same.quality[0] > 0.99
    assert other.quality[0] < 0.5
    np.testing.assert_allclose(same.shifts[0], [0.0, 0.0], atol=1e-6)


@pytest.fixture(scope="module")
def pc_projection_pairs():
    """Smooth simulated projections of a gold particle (61 angles, +-4 px jitter), their exactly shifted
    ideal projections, and the reprojection of an MLEM reconstruction of the jittered data."""
    from tomoflow import sim
    from tomoflow.align.reproject import reproject

    ang = np.linspace(0.0, 180.0, 61)
    scan = sim.simulate_scan(sim.gold_particle((40, 48, 48), seed=2), ang, jitter_px=4, seed=4, photons=300)
    from tomoflow.recon import normalize_log

    p = normalize_log(scan.projections, scan.flats, scan.darks)
    return p, scan.ideal_line_integrals, reproject(p, ang), scan.shifts


def _rmse(est, truth):
    res = est - truth
    res = res - res.mean(axis=0)
    return float(np.sqrt(np.mean(np.sum(res**2, axis=1))))


def test_default_works_on_smooth_projections_where_phase_normalisation_fails(pc_projection_pairs):
    """The ANCHORS pitfall and the reason for the defaults (module docstring): against a reprojection of
    the data's own reconstruction, whitening locks onto the zero-shift self-copy; plain correlation
    without a taper does not."""
    p, ideal, rep, truth = pc_projection_pairs
    spread = _rmse(np.zeros_like(truth), truth)
    assert _rmse(phase_correlate(p, ideal).shifts, truth) < 0.1
    assert _rmse(phase_correlate(p, rep).shifts, truth) < 1.0  # one pass; the consistency loop goes further
    assert _rmse(phase_correlate(p, rep, normalization="phase").shifts, truth) > 0.8 * spread
    # A taper fixed to the detector biases the registration of a moving compact object.
    assert _rmse(phase_correlate(p, ideal, window="hann").shifts, truth) > 3 * _rmse(
        phase_correlate(p, ideal).shifts, truth
    )


def test_featureless_images_give_zero_shift_and_quality():
    res = phase_correlate(np.full((2, 16, 16), 3.0), np.ones((16, 16)))
    np.testing.assert_array_equal(res.shifts, 0.0)
    np.testing.assert_array_equal(res.quality, 0.0)


def test_upsample_one_still_interpolates(pc_texture):
    ref = pc_texture[:64, :64]
    moving = shift_images(ref, [0.5, -1.25], pad=0)
    res = phase_correlate(moving, ref, upsample=1)
    np.testing.assert_allclose(res.shifts[0], [0.5, -1.25], atol=0.15)


def test_bad_data_raise_input_error(pc_texture):
    img = pc_texture[:32, :32].copy()
    bad = img.copy()
    bad[3, 4] = np.nan
    with pytest.raises(InputError, match="NaN"):
        phase_correlate(bad, img)
    with pytest.raises(InputError, match="NaN"):
        phase_correlate(img, np.where(np.isnan(bad), np.inf, bad))
    with pytest.raises(InputError, match="differ in shape"):
        phase_correlate(img, img[:, :30])
    with pytest.raises(InputError, match="differ in shape"):
        phase_correlate(np.stack([img] * 3), np.stack([img] * 2))
    with pytest.raises(InputError, match="too small"):
        phase_correlate(img[:3, :3], img[:3, :3])
    with pytest.raises(InputError, match="moving"):
        phase_correlate(img[0], img[0])
    with pytest.raises(InputError, match="no images"):
        phase_correlate(np.zeros((0, 8, 8)), np.zeros((0, 8, 8)))
    with pytest.raises(InputError, match="real"):
        phase_correlate(img.astype(np.complex64), img)


def test_bad_parameters_raise_config_error(pc_texture):
    img = pc_texture[:32, :32]
    with pytest.raises(ConfigError, match="upsample"):
        phase_correlate(img, img, upsample=0)
    with pytest.raises(ConfigError, match="window"):
        phase_correlate(img, img, window="blackman")
    with pytest.raises(ConfigError, match="normalization"):
        phase_correlate(img, img, normalization="full")
    with pytest.raises(ConfigError, match="max_shift"):
        phase_correlate(img, img, max_shift=-1)
    with pytest.raises(ConfigError, match="max_shift"):
        phase_correlate(img, img, max_shift=(1, 2, 3))


@pytest.mark.gpu
def test_cupy_path_matches_numpy(pc_texture):
    import cupy

    rng = np.random.default_rng(2)
    truth = rng.uniform(-3, 3, size=(5, 2))
    moving, reference = _crops(pc_texture, truth)
    for window in (None, "hann"):
        cpu = phase_correlate(moving, reference, window=window)
        gpu = phase_correlate(cupy.asarray(moving), cupy.asarray(reference), window=window)
        assert isinstance(gpu.shifts, cupy.ndarray) and isinstance(gpu.quality, cupy.ndarray)
        np.testing.assert_allclose(gpu.shifts.get(), cpu.shifts, atol=1e-3)
        np.testing.assert_allclose(gpu.quality.get(), cpu.quality, atol=1e-4)
