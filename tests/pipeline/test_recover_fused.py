"""Fused resample-and-recover (tomoflow.pipeline.recover with a target grid): each block's input box is
resampled from the LFOV store on the fly; the result equals ``resample_volume`` then ``recover_volume``,
and whole-volume inference on the resampled volume, to float32 rounding."""

import numpy as np
import pytest

pytest.importorskip("torch")

from tomoflow.errors import ConfigError, InputError, PipelineError, StoreError
from tomoflow.io.stages import StageLog
from tomoflow.pipeline.recover import recover_volume
from tomoflow.pipeline.resample import field_grid, resample_volume
from tomoflow.recover import predict_volume
from tomoflow.register.resample import ResampledGrid
from tomoflow.register.transform import Affine9
from tomoflow.testing import write_random_unet, write_volume_store
from tomoflow.train.files import save_unet

LF_SHAPE = (11, 14, 12)  # voxels of 2 um: the field at 1 um is 21 x 27 x 23
LF_UM = 2.0
CHUNKS = (8, 8, 8)  # blocks that cut every axis: tile faces inside the grid, and boxes past its border


def rel_err(got, want):
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("fused")
    weights = d / "unet.safetensors"
    model = write_random_unet(weights)
    rng = np.random.default_rng(1)
    data = rng.random(LF_SHAPE).astype(np.float32)
    lfov = write_volume_store(d / "lfov.zarr", data, voxel_size_um=LF_UM)
    return d, weights, model, lfov


def hr_grid_matrix():
    """A rotated, scaled HR -> LFOV matrix whose 18 x 20 x 16 grid of 1 um lies inside the LFOV."""
    shape = (18, 20, 16)
    centre_hr = (np.asarray(shape) - 1) / 2.0  # 1 um voxels
    centre_lf = (np.asarray(LF_SHAPE) - 1) / 2.0 * LF_UM
    aff = Affine9(
        rotation=(0.06, -0.04, 0.09),
        scale=(1.03, 0.98, 1.01),
        translation=tuple(centre_lf - centre_hr),
        center=centre_hr,
    )
    return shape, aff.matrix


@pytest.mark.parametrize("grid", ["field", "hr"])
def test_fused_equals_resample_then_recover_and_whole_volume_inference(setup, tmp_path, grid):
    d, weights, model, lfov = setup
    if grid == "field":
        shape, matrix = field_grid(LF_SHAPE, LF_UM, 1.0)
    else:
        shape, matrix = hr_grid_matrix()
    kw = {"matrix": matrix, "shape": shape, "spacing_um": 1.0}
    resampled = resample_volume(lfov.path, tmp_path / "res.zarr", chunks=(16, 16, 16), **kw)
    two_step = recover_volume(resampled.path, weights, tmp_path / "two.zarr", chunks=CHUNKS)
    fused = recover_volume(lfov.path, weights, tmp_path / "fused.zarr", chunks=CHUNKS, **kw)
    got, want = np.asarray(fused.level(0)[...]), np.asarray(two_step.level(0)[...])
    assert got.shape == tuple(shape) and fused.stages()["recover"].info["blocks"] > 8
    assert rel_err(got, want) <= 1e-6
    whole = predict_volume(model, np.asarray(resampled.level(0)[...]))
    assert rel_err(got, whole) <= 1e-6
    # the grid's voxel size, the fused source in the provenance, the same pyramid as the two-step output
    assert fused.attrs.voxel_size.value == 1.0 and fused.n_levels == two_step.n_levels
    src = fused.extra["fused_resample"]
    assert src["source"] == str(lfov.path) and src["shape"] == list(shape) and src["spacing_um"] == 1.0
    np.testing.assert_allclose(src["matrix"], matrix)
    assert fused.stages()["recover"].params["grid"]["order"] == 3
    assert not (tmp_path / "fused.zarr").with_name("res.zarr").samefile(fused.path)


def test_the_grid_is_part_of_the_identity_and_a_rerun_writes_nothing(setup, tmp_path):
    d, weights, model, lfov = setup
    shape, matrix = field_grid(LF_SHAPE, LF_UM, 1.0)
    out = tmp_path / "rec.zarr"
    recover_volume(lfov.path, weights, out, chunks=CHUNKS, matrix=matrix, shape=shape, spacing_um=1.0)
    before = (out / "0").stat().st_mtime_ns
    again = recover_volume(lfov.path, weights, out, chunks=CHUNKS, matrix=matrix, shape=shape, spacing_um=1.0)
    assert again.stages()["recover"].complete and (out / "0").stat().st_mtime_ns == before
    with pytest.raises(StoreError, match="other inputs or parameters|different"):
        recover_volume(lfov.path, weights, out, chunks=CHUNKS, matrix=matrix, shape=shape, spacing_um=1.0, order=1)
    with pytest.raises(StoreError):  # the LFOV's own grid: another output
        recover_volume(lfov.path, weights, out, chunks=CHUNKS)


def test_an_interrupted_fused_recovery_resumes_and_skips_done_blocks(setup, tmp_path, monkeypatch):
    import tomoflow.pipeline.recover as stage

    d, weights, model, lfov = setup
    shape, matrix = field_grid(LF_SHAPE, LF_UM, 1.0)
    kw = {"chunks": CHUNKS, "matrix": matrix, "shape": shape, "spacing_um": 1.0}
    out = tmp_path / "rec.zarr"
    real, calls = stage._recover_block, []

    def dying(*args):
        calls.append(1)
        if len(calls) > 5:
            raise RuntimeError("worker lost")
        return real(*args)

    monkeypatch.setattr(stage, "_recover_block", dying)
    with pytest.raises(PipelineError, match="worker lost"):
        recover_volume(lfov.path, weights, out, **kw)
    monkeypatch.setattr(stage, "_recover_block", real)
    done_before = StageLog(out, "recover").done("level-0").copy()
    assert 1 <= done_before.sum() <= 5 < done_before.size
    v = recover_volume(lfov.path, weights, out, **kw)
    assert v.stages()["recover"].info["blocks_computed"] == done_before.size - done_before.sum()
    whole = predict_volume(model, ResampledGrid(lfov.level(0), matrix, shape, 1.0, LF_UM)[...])
    assert rel_err(np.asarray(v.level(0)[...]), whole) <= 1e-6


def test_bad_grids_are_refused_before_anything_is_written(setup, tmp_path):
    d, weights, model, lfov = setup
    shape, matrix = field_grid(LF_SHAPE, LF_UM, 1.0)
    out = tmp_path / "rec.zarr"
    with pytest.raises(ConfigError, match="spacing_um missing"):
        recover_volume(lfov.path, weights, out, matrix=matrix, shape=shape)
    with pytest.raises(ConfigError, match="registration is the provenance"):
        recover_volume(lfov.path, weights, out, registration={"matrix": matrix.tolist()})
    with pytest.raises(ConfigError, match="spacing_um"):
        recover_volume(lfov.path, weights, out, matrix=matrix, shape=shape, spacing_um=-1.0)
    outside = matrix.copy()
    outside[:3, 3] = (10.0, 0.0, 0.0)  # the grid shifted 10 um: past the LFOV's last voxel
    with pytest.raises(InputError, match="outside the source"):
        recover_volume(lfov.path, weights, out, matrix=outside, shape=shape, spacing_um=1.0)
    with pytest.raises(ConfigError, match="matrix"):
        recover_volume(lfov.path, weights, out, matrix=np.zeros((4, 4)), shape=shape, spacing_um=1.0)
    assert not out.exists()


def test_a_network_trained_on_other_voxels_is_refused_for_the_grid(setup, tmp_path):
    d, weights, model, lfov = setup
    w = tmp_path / "trained.safetensors"
    save_unet(model, model.config, w, card={"name": "t", "training_data": {"hr_voxel_um": 1.0}})
    shape, matrix = field_grid(LF_SHAPE, LF_UM, 0.5)
    with pytest.raises(ConfigError, match="trained on 1 um"):
        recover_volume(lfov.path, w, tmp_path / "rec.zarr", matrix=matrix, shape=shape, spacing_um=0.5)
    assert not (tmp_path / "rec.zarr").exists()


def test_the_resampler_memory_shrinks_the_block_to_fit_the_budget(setup, tmp_path):
    """With a target grid the block is chosen so the network's and the resampler's peaks fit the budget
    together; the task's recorded bytes include both."""
    from tomoflow.recover.unet import inference_bytes

    d, weights, model, lfov = setup
    n = 48
    src = write_volume_store(tmp_path / "big.zarr", np.ones((n, n, n), np.float32), voxel_size_um=1.0)
    shape, matrix = field_grid((n, n, n), 1.0, 1.0)  # the same grid: a source region as large as the box
    budget = inference_bytes(model, (66, 66, 66)) + 5 * 2**20  # the network alone: blocks of 48 (boxes of 66)
    kw = {"matrix": matrix, "shape": shape, "spacing_um": 1.0, "memory_budget": budget}
    v = recover_volume(src.path, weights, tmp_path / "rec.zarr", **kw)
    plain = recover_volume(src.path, weights, tmp_path / "plain.zarr", memory_budget=budget)
    assert v.level(0).chunks[0] < plain.level(0).chunks[0] == 48
    np.testing.assert_allclose(np.asarray(v.level(0)[...]), np.asarray(plain.level(0)[...]), rtol=0, atol=1e-5)


def test_resampled_grid_reads_boxes_of_the_resampled_volume(setup):
    d, weights, model, lfov = setup
    shape, matrix = hr_grid_matrix()
    g = ResampledGrid(lfov.level(0), matrix, shape, 1.0, LF_UM)
    whole = g[:, :, :]
    assert whole.shape == shape and whole.dtype == np.float32
    np.testing.assert_allclose(g[3:9, 2:7, 5:16], whole[3:9, 2:7, 5:16], rtol=0, atol=1e-6)
    assert g[4:4].shape == (0, 20, 16)
    with pytest.raises(TypeError):
        g[0, 1, 2]
    with pytest.raises(TypeError):
        g[::2]
