"""Tiled U-Net inference: exact stitching (any block, batch, border rule), aligned plans, clear errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tomoflow.errors import ConfigError, InputError  # noqa: E402  (after pytest.importorskip)
from tomoflow.recover.tiling import (  # noqa: E402  (after pytest.importorskip)
    plan_tiles,
    predict_tiled,
    predict_volume,
    read_box,
    valid_evaluation,
    valid_halo,
)
from tomoflow.recover.unet import alignment, build_unet, receptive_field  # noqa: E402  (after pytest.importorskip)

SHAPE = (37, 41, 29)
TOL = 1e-5


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_unet(channels=(4, 8)).eval()  # radius 9, alignment 2


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    rng = np.random.default_rng(0)
    v = rng.random(SHAPE, dtype=np.float32)
    v[:, :, :5] = 0.0  # some empty space at a border
    return v


@pytest.fixture(scope="module")
def whole(model, volume):
    with torch.inference_mode():
        return {m: predict_volume(model, volume, pad_mode=m) for m in ("reflect", "zeros")}


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


# ----------------------------------------------------------------------------- plans
@pytest.mark.parametrize("block", [(16, 16, 16), (20, 13, 17), (64, 64, 64), 8])
@pytest.mark.parametrize("halo,align", [(9, 2), (23, 4), (0, 1), (3, 8)])
def test_plan_partitions_and_aligns(block, halo, align) -> None:
    tiles = plan_tiles(SHAPE, block, halo, align)
    cover = np.zeros(SHAPE, dtype=np.int32)
    for t in tiles:
        cover[t.out_slices] += 1
        for s, e, i0, i1, n in zip(t.out_start, t.out_stop, t.in_start, t.in_stop, SHAPE):
            assert 0 <= s < e <= n
            assert i0 <= s - halo and i1 >= e + halo
            assert i0 % align == 0 and (i1 - i0) % align == 0
        assert tuple(c.stop - c.start for c in t.crop) == t.out_shape
    assert (cover == 1).all()
    assert len({t.in_shape for t in tiles}) == 1  # one input shape: batches of any tiles


def test_plan_bad_parameters() -> None:
    with pytest.raises(ConfigError, match="at least the network's alignment 4"):
        plan_tiles(SHAPE, (16, 3, 16), 9, 4)
    with pytest.raises(ConfigError, match="halo"):
        plan_tiles(SHAPE, 16, -1, 2)
    with pytest.raises(ConfigError, match="3 entries"):
        plan_tiles(SHAPE, (16, 16), 9, 2)
    with pytest.raises(ConfigError, match="positive"):
        plan_tiles((0, 4, 4), 16, 9, 2)


# ----------------------------------------------------------------------------- the border rule
@pytest.mark.parametrize("mode,np_mode", [("reflect", "reflect"), ("zeros", "constant")])
def test_read_box_matches_numpy_pad(mode, np_mode) -> None:
    v = np.random.default_rng(1).random((5, 7, 3)).astype(np.float32)
    p = 6
    padded = np.pad(v, p, mode=np_mode)
    for start, stop in [((-6, -6, -6), (11, 13, 9)), ((-3, 2, -1), (4, 13, 2)), ((1, 1, 0), (4, 6, 3))]:
        ref = padded[tuple(slice(a + p, b + p) for a, b in zip(start, stop))]
        np.testing.assert_array_equal(read_box(v, start, stop, mode), ref)
    # reflect is periodic for any distance; an axis of one voxel is constant
    far = read_box(v, (-20, 0, 0), (20, 7, 3), "reflect")
    idx = np.arange(-20, 20) % 8
    np.testing.assert_array_equal(far, v[np.where(idx > 4, 8 - idx, idx)])
    np.testing.assert_array_equal(read_box(v[:1], (-2, 0, 0), (3, 7, 3), "reflect"), np.repeat(v[:1], 5, 0))


@pytest.mark.parametrize("mode,np_mode", [("reflect", "reflect"), ("zeros", "constant")])
def test_whole_volume_is_network_on_padded_volume(model, volume, whole, mode, np_mode) -> None:
    """Independent reference: np.pad by a margin >= radius (a multiple of the alignment), run, crop."""
    m = 10  # >= radius 9, multiple of alignment 2
    x = torch.from_numpy(np.pad(volume, m, mode=np_mode)[None, None])
    with torch.inference_mode():
        ref = model(x)[0, 0, m:-m, m:-m, m:-m].numpy()
    assert _rel(whole[mode], ref) <= TOL


# ----------------------------------------------------------------------------- exact stitching
@pytest.mark.parametrize("mode", ["reflect", "zeros"])
@pytest.mark.parametrize("block", [(16, 16, 16), (20, 13, 17), (64, 64, 64)])
def test_tiled_equals_whole(model, volume, whole, block, mode) -> None:
    got = predict_tiled(model, volume, block=block, pad_mode=mode)
    assert got.dtype == np.float32 and got.shape == SHAPE
    assert _rel(got, whole[mode]) <= TOL, _rel(got, whole[mode])


@pytest.mark.parametrize("block", [(16, 16, 16), (20, 13, 17)])
def test_valid_and_padded_evaluation_agree(model, volume, whole, block) -> None:
    """Tiles run without padding (the default for a torch U-Net) and tiles run padded and cropped both
    stitch to the whole-volume reference (which is always padded)."""
    tiles = plan_tiles(SHAPE, block, receptive_field(model), alignment(model))
    assert valid_evaluation(model, tiles[0].in_shape, [t.crop for t in tiles])
    valid = predict_tiled(model, volume, block=block, valid=True)
    padded = predict_tiled(model, volume, block=block, valid=False)
    assert _rel(valid, whole["reflect"]) <= TOL and _rel(padded, whole["reflect"]) <= TOL
    assert _rel(valid, padded) <= TOL


def test_tiles_run_unpadded_by_default_and_padded_on_request(volume) -> None:
    torch.manual_seed(6)
    net = build_unet(channels=(4, 8)).eval()
    seen: list[bool] = []
    plain = net.forward
    net.forward = lambda x, valid=False: (seen.append(valid), plain(x, valid=valid))[1]
    predict_tiled(net, volume, block=16)
    assert seen and all(seen)
    seen.clear()
    predict_tiled(net, volume, block=16, valid=False)
    assert seen and not any(seen)


def test_valid_evaluation_needs_a_unet(volume) -> None:
    class Twice(torch.nn.Module):
        def forward(self, x):
            return 2 * x

    assert not valid_evaluation(Twice(), (40, 40, 40), [(slice(10, 20),) * 3])
    with pytest.raises(ConfigError, match="valid evaluation needs a torch U-Net"):
        predict_tiled(Twice(), volume, block=16, halo=2, alignment=1, valid=True)
    np.testing.assert_array_equal(predict_tiled(Twice(), volume, block=16, halo=2, alignment=1), 2 * volume)


def test_three_levels_alignment_four() -> None:
    torch.manual_seed(1)
    net = build_unet(channels=(2, 3, 3)).eval()
    assert (receptive_field(net), alignment(net)) == (23, 4)
    v = np.random.default_rng(2).random((19, 22, 13), dtype=np.float32)
    ref = predict_volume(net, v)
    got = predict_tiled(net, v, block=(9, 11, 6), batch=4)
    assert _rel(got, ref) <= TOL


@pytest.mark.slow
def test_valid_halo_below_the_radius_is_exact() -> None:
    """Valid evaluation runs boxes grown by 22 voxels, not the radius 23, and the result is still the
    whole-volume one, for blocks on the pooling grid and off it."""
    torch.manual_seed(5)
    net = build_unet(channels=(2, 3, 3)).eval()
    v = np.random.default_rng(3).random((40, 36, 33), dtype=np.float32)
    assert valid_halo(net, v.shape, 16) == 22 < receptive_field(net)
    ref = predict_volume(net, v)
    assert _rel(predict_tiled(net, v, block=16), ref) <= TOL
    assert _rel(predict_tiled(net, v, block=(9, 11, 6)), ref) <= TOL
    with pytest.warns(UserWarning, match="smaller than the network's receptive-field radius"):
        got = predict_tiled(net, v, block=16, halo=22, valid=True, strict=False)  # an explicit halo is checked
    assert _rel(got, ref) <= TOL


def test_misaligned_tiles_do_not_stitch(model, volume, whole) -> None:
    """Why the alignment: a box starting one voxel off the pooling grid gives other outputs."""
    r = receptive_field(model)
    start, stop = (8 - r - 2,) * 3, (8 + 16 + r + 1,) * 3  # start -3: off the pooling grid (alignment 2)
    assert start[0] % 2 == 1
    with torch.inference_mode():
        y = model(torch.from_numpy(read_box(volume, start, stop)[None, None]))[0, 0].numpy()
    crop = tuple(slice(8 - a, 24 - a) for a in start)
    assert _rel(y[crop], whole["reflect"][8:24, 8:24, 8:24]) > 10 * TOL


def test_batch_equals_single(model, volume) -> None:
    one = predict_tiled(model, volume, block=16, batch=1)
    many = predict_tiled(model, volume, block=16, batch=5)
    np.testing.assert_allclose(many, one, rtol=0, atol=TOL * float(np.abs(one).max()))


def test_preallocated_out_skip_and_progress(model, volume, whole) -> None:
    out = np.full(SHAPE, np.nan, dtype=np.float64)
    calls = []
    skipped = lambda t: t.index == (0, 1, 0)  # noqa: E731  (a one-line predicate)
    res = predict_tiled(
        model, volume, block=(20, 20, 20), out=out, skip=skipped, progress=lambda d, n: calls.append((d, n))
    )
    assert res is out and np.isfinite(out).all()
    tiles = plan_tiles(SHAPE, 20, receptive_field(model), alignment(model))
    assert calls == [(k + 1, len(tiles)) for k in range(len(tiles))]
    for t in tiles:
        want = volume[t.out_slices] if skipped(t) else whole["reflect"][t.out_slices]
        assert _rel(out[t.out_slices], want) <= TOL
    assert model.training is False


def test_zarr_in_and_out(model, volume, whole) -> None:
    zarr = pytest.importorskip("zarr")
    src = zarr.create_array(store={}, shape=SHAPE, chunks=(16, 16, 16), dtype="float32")
    src[...] = volume
    dst = zarr.create_array(store={}, shape=SHAPE, chunks=(8, 8, 8), dtype="float32")
    predict_tiled(model, src, block=(16, 24, 16), out=dst, batch=2)
    assert _rel(dst[...], whole["reflect"]) <= TOL


def test_restores_training_mode(model, volume) -> None:
    model.train()
    try:
        predict_tiled(model, volume[:8, :8, :8], block=8)
        assert model.training
    finally:
        model.eval()


# ----------------------------------------------------------------------------- refusals
def test_small_halo_refused_and_really_wrong(model, volume, whole) -> None:
    with pytest.raises(ConfigError, match="receptive-field radius 9"):
        predict_tiled(model, volume, block=16, halo=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seamed = predict_tiled(model, volume, block=16, halo=2, strict=False)
    assert any("receptive-field radius" in str(w.message) for w in caught)
    assert _rel(seamed, whole["reflect"]) > 10 * TOL  # the seams are real (exact tiles: ~1e-7)


def test_bad_inputs(model, volume) -> None:
    with pytest.raises(InputError, match="3-D"):
        predict_tiled(model, volume[0])
    with pytest.raises(InputError, match="3-D"):
        predict_volume(model, volume[0])
    bad = volume.copy()
    bad[30, 3, 4] = np.nan
    with pytest.raises(InputError, match="NaN"):
        predict_tiled(model, bad, block=64)
    with pytest.raises(InputError, match="NaN"):
        predict_volume(model, bad)
    with pytest.raises(ConfigError, match="alignment 2"):
        predict_tiled(model, volume, block=(16, 1, 16))
    with pytest.raises(ConfigError, match="out has shape"):
        predict_tiled(model, volume, out=np.zeros((3, 3, 3), np.float32))
    with pytest.raises(ConfigError, match="batch"):
        predict_tiled(model, volume, batch=0)
    with pytest.raises(ConfigError, match="pad_mode"):
        predict_tiled(model, volume, pad_mode="edge")
    with pytest.raises(ConfigError, match="device"):
        predict_tiled(model, volume, device="tpu")
    with pytest.raises(ConfigError, match="multiple of the network's 2"):
        predict_tiled(model, volume, alignment=3)
    with pytest.raises(ConfigError, match="halo"):
        predict_tiled(torch.nn.Conv3d(1, 1, 3), volume)
    with pytest.raises(ConfigError, match="channels"):
        predict_tiled(build_unet(channels=(2,), in_channels=2, out_channels=2), volume)


def test_foreign_network_with_explicit_geometry(volume) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv3d(1, 2, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(2, 1, 3, padding=1)
    ).eval()
    ref = predict_volume(net, volume, halo=2, alignment=1)
    got = predict_tiled(net, volume, block=(10, 17, 9), halo=2, alignment=1)
    assert _rel(got, ref) <= TOL


@pytest.mark.gpu("torch")
def test_cuda_matches_cpu(volume) -> None:
    torch.manual_seed(0)
    net = build_unet(channels=(4, 8)).eval()
    ref = predict_volume(net, volume)
    got = predict_tiled(net, volume, block=16, batch=4, device="cuda")
    assert next(net.parameters()).is_cuda
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-3 * float(np.abs(ref).max()))  # TF32 convolutions


# ----------------------------------------------------------------------------- block size from a memory budget
def test_block_for_budget_is_the_largest_block_that_fits():
    from tomoflow.recover.tiling import block_for_budget
    from tomoflow.recover.unet import UNetConfig, inference_bytes

    cfg = UNetConfig()
    r, a = receptive_field(cfg), alignment(cfg)

    def need(b):
        return inference_bytes(cfg, tuple(t.in_shape for t in plan_tiles((b,) * 3, b, r, a))[0])

    budgets = [int(g * 1024**3) for g in (0.6, 1, 2, 4, 8)]
    blocks = [block_for_budget(cfg, g) for g in budgets]
    assert blocks == sorted(blocks) and blocks[2] == 128  # 2 GiB: the documented default
    for g, b in zip(budgets, blocks):
        assert b % 16 == 0 and need(b) <= g < need(b + 16)  # it fits, the next step does not
    assert block_for_budget(cfg, 8 * 1024**3, shape=(20, 40, 33)) == 40  # never larger than the volume needs
    # balanced: as many blocks as the budget's block needs, as equal as the alignment allows
    assert block_for_budget(cfg, 2 * 1024**3, shape=(157, 100, 60)) == 80
    assert block_for_budget(cfg, 2 * 1024**3, shape=(512, 512, 512)) == 128
    assert block_for_budget(cfg, 2 * 1024**3, shape=(600, 100, 100)) == 120
    with pytest.raises(ConfigError, match="cannot hold the network's smallest block"):
        block_for_budget(cfg, 100 * 1024**2)


# ----------------------------------------------------------------------------- a region; the GPU's free memory
@pytest.mark.parametrize(
    "region", [(slice(8, 20), slice(0, 41), slice(16, 29)), (slice(0, 37), slice(30, 41), slice(2, 3))]
)
def test_region_is_the_same_box_of_the_whole_prediction(model, volume, whole, region) -> None:
    got = predict_tiled(model, volume, block=8, region=region, batch=3)
    assert got.shape == whole["reflect"][region].shape
    assert _rel(got, whole["reflect"][region]) <= TOL  # halos come from the volume, not from the border rule
    tiles = []
    predict_tiled(model, volume, block=8, region=region, skip=lambda t: tiles.append(t) or True)
    assert all(t.out_stop[k] <= got.shape[k] for t in tiles for k in range(3))  # the region's own tiles


@pytest.mark.parametrize(
    "region,match",
    [
        ((slice(1, 9), slice(0, 8), slice(0, 8)), "starts at 1, not a multiple of the network's alignment 2"),
        ((slice(0, 99), slice(0, 8), slice(0, 8)), "0 <= start < stop <= 37"),
        ((slice(None, 8), slice(0, 8), slice(0, 8)), "explicit start and stop"),
        ((slice(0, 8), slice(0, 8)), "three slices"),
        ((slice(0, 8, 2), slice(0, 8), slice(0, 8)), "step 1"),
        (5, "three slices"),
    ],
)
def test_bad_region_refused(model, volume, region, match) -> None:
    with pytest.raises(ConfigError, match=match):
        predict_tiled(model, volume, block=8, region=region)


def test_gpu_memory_bounds_the_batch_and_refuses_a_box_that_cannot_fit(model, volume, whole, monkeypatch) -> None:
    """The device bound as a GPU sees it (the budget function is the only thing replaced: on a CPU
    there is none); batches shrink to what fits, a box that cannot fit is refused before any call."""
    import tomoflow.nn.device as nd
    import tomoflow.recover.tiling as tiling
    from tomoflow.recover.unet import inference_bytes

    one = inference_bytes(model.config, plan_tiles(SHAPE, 16, receptive_field(model), alignment(model))[0].in_shape)
    calls: list[int] = []
    real = tiling.predict_boxes
    monkeypatch.setattr(
        tiling, "predict_boxes", lambda m, arrays, *a, **k: calls.append(len(arrays)) or real(m, arrays, *a, **k)
    )
    monkeypatch.setattr(nd, "device_memory_budget", lambda dev, **k: 2 * one + 1)
    got = predict_tiled(model, volume, block=16, batch=5, valid=False)
    assert max(calls) == 2 and _rel(got, whole["reflect"]) <= TOL
    monkeypatch.setattr(nd, "device_memory_budget", lambda dev, **k: one - 1)
    calls.clear()
    model.train()
    try:
        with pytest.raises(ConfigError, match="GB of GPU memory.*use a smaller block"):
            predict_tiled(model, volume, block=16, valid=False)
        with pytest.raises(ConfigError, match="predict it block by block with predict_tiled"):
            predict_volume(model, volume)
        assert calls == [] and model.training  # nothing ran; the mode is restored
    finally:
        model.eval()


def test_device_memory_budget_on_the_cpu_and_bad_arguments() -> None:
    from tomoflow.nn import device_memory_budget

    assert device_memory_budget(torch.device("cpu")) is None and device_memory_budget(None) is None
    with pytest.raises(ConfigError, match="fraction"):
        device_memory_budget(torch.device("cpu"), fraction=0)
    with pytest.raises(ConfigError, match="share"):
        device_memory_budget(torch.device("cpu"), share=0)


@pytest.mark.gpu("torch")
def test_device_memory_budget_reads_the_free_memory_of_the_gpu() -> None:
    from tomoflow.nn import device_memory_budget

    dev = torch.device("cuda")
    free, total = torch.cuda.mem_get_info(dev)
    whole = device_memory_budget(dev, fraction=1.0)
    assert 0 < whole <= total and whole >= free
    assert device_memory_budget(dev, share=4) <= whole // 4 + 1


def test_block_for_device_splits_only_a_box_the_gpu_cannot_hold(model, monkeypatch) -> None:
    import tomoflow.nn.device as nd
    from tomoflow.recover.tiling import block_for_device
    from tomoflow.recover.unet import inference_bytes

    box = (256, 256, 256)  # above the network's fixed 0.4 GB, so that half of it holds smaller boxes
    assert block_for_device(model, box, torch.device("cpu"), largest=240) is None  # a CPU: no device bound
    monkeypatch.setattr(nd, "device_memory_budget", lambda dev, share=1, **k: inference_bytes(model, box) // share)
    assert block_for_device(model, box, torch.device("cpu"), largest=240) is None  # it fits
    sub = block_for_device(model, box, torch.device("cpu"), largest=240, share=2)  # half of it per pass
    assert sub is not None and sub % alignment(model) == 0 and sub < 240
    sub_box = plan_tiles((512,) * 3, sub, receptive_field(model), alignment(model))[0].in_shape
    assert inference_bytes(model, sub_box) <= inference_bytes(model, box) // 2
    monkeypatch.setattr(nd, "device_memory_budget", lambda dev, **k: 1)
    with pytest.raises(ConfigError, match="less than the network's smallest block needs"):
        block_for_device(model, box, torch.device("cpu"), largest=240)
