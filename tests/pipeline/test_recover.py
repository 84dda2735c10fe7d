"""The ``recover`` stage: tiled U-Net inference over a volume store on Dask (tomoflow.pipeline.recover)."""

import numpy as np
import pytest

pytest.importorskip("torch")

from tomoflow.errors import ConfigError, PipelineError, StoreError
from tomoflow.io.stages import StageLog
from tomoflow.io.volume_store import VolumeStore, pyramid_levels
from tomoflow.pipeline.recover import recover_volume
from tomoflow.recover import predict_volume
from tomoflow.recover.unet import inference_bytes
from tomoflow.testing import write_random_unet, write_volume_store
from tomoflow.train.files import save_unet

SHAPE = (20, 37, 29)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("recover")
    weights = d / "unet.safetensors"
    model = write_random_unet(weights)
    rng = np.random.default_rng(0)
    data = rng.random(SHAPE).astype(np.float32)
    src = write_volume_store(d / "lfov.zarr", data)
    return d, weights, model, data, src


def test_tiled_store_equals_whole_volume_inference(setup, tmp_path):
    d, weights, model, data, src = setup
    # the chunk: the largest block whose inference fits the budget, 16³ (boxes of 36³), balanced over the
    # longest axis: 3 blocks of 14 for 37 voxels
    budget = inference_bytes(model, (36, 36, 36)) + 1
    out = recover_volume(src.path, weights, tmp_path / "rec.zarr", memory_budget=budget)
    assert tuple(out.level(0).chunks) == (14, 14, 14)
    got = np.asarray(out.level(0)[...])
    want = predict_volume(model, data)
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    assert out.is_complete() and out.attrs.algorithm == "unet-recovery"
    assert out.n_levels == pyramid_levels(SHAPE) and out.attrs.voxel_size.value == 2.0
    assert len(out.extra["model_sha256"]) == 64 and out.stages()["recover"].info["blocks_computed"] > 1
    # a rerun with the same volume, model and parameters writes nothing
    before = (tmp_path / "rec.zarr" / "0").stat().st_mtime_ns
    again = recover_volume(src.path, weights, tmp_path / "rec.zarr", memory_budget=budget)
    assert again.stages()["recover"].complete and (tmp_path / "rec.zarr" / "0").stat().st_mtime_ns == before


def test_chunks_over_the_memory_budget_are_refused_before_writing(setup, tmp_path):
    d, weights, model, data, src = setup
    with pytest.raises(ConfigError, match="over the memory budget"):
        recover_volume(
            src.path,
            weights,
            tmp_path / "rec.zarr",
            chunks=(32, 32, 32),
            memory_budget=inference_bytes(model, (36, 36, 36)),
        )
    with pytest.raises(ConfigError, match="cannot hold the network's smallest block"):
        recover_volume(src.path, weights, tmp_path / "rec.zarr", memory_budget="100MB")
    assert not (tmp_path / "rec.zarr").exists()


def test_interrupted_inference_resumes_to_the_same_output(setup, tmp_path, monkeypatch):
    """A run that dies after a few blocks (here: the block function fails from the 6th call on) leaves
    those blocks written and marked; the rerun computes only the others and gives the same volume."""
    import tomoflow.pipeline.recover as stage

    d, weights, model, data, src = setup
    out = tmp_path / "rec.zarr"
    real, calls = stage._recover_block, []

    def dying(*args):
        calls.append(1)
        if len(calls) > 5:
            raise RuntimeError("worker lost")
        return real(*args)

    monkeypatch.setattr(stage, "_recover_block", dying)
    with pytest.raises(PipelineError, match="worker lost"):
        recover_volume(src.path, weights, out, chunks=(8, 8, 8))
    monkeypatch.setattr(stage, "_recover_block", real)
    with pytest.raises(StoreError, match="did not complete"):
        VolumeStore.open(out)
    done_before = StageLog(out, "recover").done("level-0").copy()
    assert 1 <= done_before.sum() <= 5 < done_before.size
    v = recover_volume(src.path, weights, out, chunks=(8, 8, 8))
    assert v.stages()["recover"].info["blocks_computed"] == done_before.size - done_before.sum()
    want = predict_volume(model, data)
    np.testing.assert_allclose(np.asarray(v.level(0)[...]), want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_inputs_are_never_outputs(setup, tmp_path):
    d, weights, model, data, src = setup
    with pytest.raises(StoreError):
        recover_volume(src.path, weights, src.path, overwrite=True)
    np.testing.assert_array_equal(np.asarray(VolumeStore.open(src.path).level(0)[...]), data)


@pytest.mark.slow
def test_the_onnx_export_runs_as_the_stage_model(setup, tmp_path):
    """``recover_volume`` with the ``.onnx`` export (normalisation inside) gives the torch stage's volume; a
    graph that takes normalised values is refused before anything is written."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from tomoflow.recover.normalization import with_normalization
    from tomoflow.recover.unet import load_unet
    from tomoflow.train.onnx_export import export_onnx

    d, weights, model, data, src = setup
    net = load_unet(weights, device="cpu")
    onnx_raw = export_onnx(with_normalization(net), tmp_path / "unet.onnx", patch_shape=(8, 8, 8))
    want = np.asarray(recover_volume(src.path, weights, tmp_path / "torch.zarr", chunks=(8, 16, 16)).level(0)[...])
    v = recover_volume(src.path, onnx_raw, tmp_path / "onnx.zarr", chunks=(8, 16, 16))
    np.testing.assert_allclose(np.asarray(v.level(0)[...]), want, rtol=0, atol=1e-5 * np.abs(want).max())
    assert v.stages()["recover"].params["runtime"] == "onnxruntime"
    normalised = export_onnx(net, tmp_path / "norm.onnx", patch_shape=(8, 8, 8))
    with pytest.raises(ConfigError, match="takes normalised values"):
        recover_volume(src.path, normalised, tmp_path / "never.zarr")
    assert not (tmp_path / "never.zarr").exists()


def test_the_cards_calibration_is_applied_and_part_of_the_identity(setup, tmp_path):
    """A card with an output calibration: the stage writes what ``with_normalization`` of the loaded
    network gives (calibrated) and records the calibration in its parameters, which make the output's
    identity; a card without one records none (the identity of stores made before calibrations stays)."""
    from tomoflow.recover.normalization import with_normalization
    from tomoflow.recover.unet import load_unet

    d, weights, model, data, src = setup
    cal = {"pore_level": 0.0, "from": 0.3, "threshold": 0.5, "solid_level": 1.0}
    cw = tmp_path / "calibrated.safetensors"
    save_unet(model, model.config, cw, card={"name": "test-unet", "calibration": cal})
    out = recover_volume(src.path, cw, tmp_path / "cal.zarr", chunks=(8, 16, 16))
    want = predict_volume(with_normalization(load_unet(cw, device="cpu")), data)
    got = np.asarray(out.level(0)[...])
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()
    assert out.stages()["recover"].params["calibration"]["from"] == 0.3
    plain = np.asarray(recover_volume(src.path, weights, tmp_path / "plain.zarr", chunks=(8, 16, 16)).level(0)[...])
    assert np.abs(got - plain).max() > 1e-3  # the calibration changed the output
    assert "calibration" not in VolumeStore.open(tmp_path / "plain.zarr").stages()["recover"].params


def test_a_block_over_the_gpus_free_memory_is_predicted_in_sub_blocks(setup, tmp_path, monkeypatch):
    """The stage's blocks are sized by host memory; where the GPU's free memory (read in the task) cannot
    hold a block's pass, the task predicts it in the largest sub-blocks that fit: the same values. The
    budget function is the only thing replaced (a CPU has no device bound)."""
    import tomoflow.nn.device as nd
    import tomoflow.recover.tiling as tiling

    d, weights, model, data, src = setup
    want = predict_volume(model, data)
    budget = inference_bytes(model, (36, 36, 36)) + 1  # 14³ blocks, boxes of 36³ (as above)
    sub = inference_bytes(model, (28, 28, 28)) + 1  # the device holds only a 28³ box: sub-blocks of 8³ or less
    monkeypatch.setattr(nd, "device_memory_budget", lambda dev, **k: sub)
    seen: list[tuple[int, ...]] = []
    real = tiling.predict_boxes
    monkeypatch.setattr(
        tiling, "predict_boxes", lambda m, arrays, *a, **k: seen.append(arrays[0].shape) or real(m, arrays, *a, **k)
    )
    out = recover_volume(src.path, weights, tmp_path / "rec.zarr", memory_budget=budget, client=None)
    assert seen and all(inference_bytes(model, s) <= sub for s in seen)
    got = np.asarray(out.level(0)[...])
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max() and out.is_complete()


def test_a_workers_threads_load_the_network_once(setup, monkeypatch):
    """Blocks start on several threads of a worker at once: one loads the network, the others wait for it
    (without the lock each loaded its own, and one could clear another's fresh cache entry)."""
    import threading
    import time

    import tomoflow.pipeline.recover as stage
    import tomoflow.recover.unet as unet

    d, weights, model, data, src = setup
    real, loads = unet.load_unet, []

    def slow_load(*args, **kwargs):
        loads.append(1)
        time.sleep(0.2)
        return real(*args, **kwargs)

    monkeypatch.setattr(unet, "load_unet", slow_load)
    monkeypatch.setattr(stage, "_MODELS", {})
    got = []
    threads = [threading.Thread(target=lambda: got.append(stage._model(str(weights), "x", "cpu"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1 and len(got) == 4 and all(g is got[0] for g in got)
