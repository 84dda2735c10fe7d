"""Training the recovery network from the stores, patch by patch: every read is a box of bounded size
(never the overlap), the pair source gives what the whole-volume resampling gives, the patches do not
depend on the data-loader workers, and --time-limit bounds the whole command."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tomoflow.recover.pairs import ArrayPair  # noqa: E402  (after pytest.importorskip)
from tomoflow.recover.unet import CARD_NAME, UNetConfig  # noqa: E402  (after pytest.importorskip)
from tomoflow.train.recovery import train_recovery  # noqa: E402  (after pytest.importorskip)

TINY = UNetConfig(channels=(4, 8))


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """80³ HR ROI (1 um) in a 60³ LFOV (2 um), written as volume stores; the true matrix."""
    from tomoflow.io.synthetic import write_multiscale_pair
    from tomoflow.sim import simulate_multiscale_pair

    p = simulate_multiscale_pair(hr_shape=(80,) * 3, lfov_shape=(60,) * 3, lfov_spacing_um=2.0, seed=0)
    d = tmp_path_factory.mktemp("stores")
    hr, lf = write_multiscale_pair(p, d / "hr.zarr", d / "lfov.zarr")
    return hr, lf, p


def _store_pair(stores, cls=None):
    from tomoflow.io.pair_source import StorePair

    hr, lf, p = stores
    return (cls or StorePair)(hr, lf, p.true_matrix, p.hr_spacing_um, p.lfov_spacing_um)


def test_the_store_pair_reads_what_the_whole_resampling_gives(stores):
    from tomoflow.register.resample import resample_to_grid

    _, _, p = stores
    pair = _store_pair(stores)
    whole = resample_to_grid(p.lfov, p.true_matrix, p.hr.shape, p.hr_spacing_um, p.lfov_spacing_um)
    box = ((10, 42), (33, 65), (0, 16))
    x, y = pair.read(box)
    sl = tuple(slice(a, b) for a, b in box)
    np.testing.assert_allclose(x, whole[sl], atol=1e-5)
    np.testing.assert_array_equal(y, np.asarray(p.hr, dtype=np.float32)[sl])
    # pickled for a worker: paths and matrix only, the stores opened again there
    import pickle

    clone = pickle.loads(pickle.dumps(pair))
    assert clone._hr is None and clone.shape == pair.shape
    np.testing.assert_array_equal(clone.read_target(box), y)


def test_a_registration_that_leaves_the_lfov_is_refused_before_any_work(stores):
    from tomoflow.errors import InputError
    from tomoflow.io.pair_source import StorePair

    hr, lf, p = stores
    far = np.array(p.true_matrix, dtype=float)
    far[0, 3] += 500.0
    with pytest.raises(InputError, match="outside the LFOV"):
        StorePair(hr, lf, far, p.hr_spacing_um, p.lfov_spacing_um)


def test_training_from_the_stores_reads_only_bounded_boxes(stores, tmp_path, monkeypatch):
    """With the sample, evaluation and calibration bounded below the volume, every box read from the
    stores is patch-sized (or an evaluation tile with its halo), never the overlap."""
    import tomoflow.recover.metrics as metrics
    import tomoflow.train.recovery as training
    from tomoflow.io.pair_source import StorePair

    reads = []

    class Counting(StorePair):
        def read_input(self, box):
            reads.append(("input", int(np.prod([b - a for a, b in box]))))
            return super().read_input(box)

        def read_target(self, box):
            reads.append(("target", int(np.prod([b - a for a, b in box]))))
            return super().read_target(box)

    monkeypatch.setattr(training, "SAMPLE_VOXELS", 8 * 32**3)
    monkeypatch.setattr(training, "SAMPLE_EDGE", 32)
    monkeypatch.setattr(training, "CALIBRATION_VOXELS", 4 * 20**3)
    monkeypatch.setattr(metrics, "EVAL_EDGE", 20)
    pair = _store_pair(stores, Counting)
    res = train_recovery(
        pair,
        None,
        out_dir=tmp_path / "m",
        config=TINY,
        patch=16,
        batch=2,
        epochs=2,
        steps_per_epoch=3,
        eval_voxels=2 * 20**3,
        num_workers=0,  # the reads are counted in this process
        device="cpu",
        time_limit_s=None,
    )
    volume = 80**3
    assert reads and max(n for _, n in reads) <= 48**3 < volume // 4, max(reads)
    assert {n for side, n in reads if side == "target"} >= {16**3}  # the training patches
    card = res.card
    assert card["metrics"]["held_out"]["n_voxels"] == 2 * 20**3
    assert "Halton" in card["metrics"]["held_out"]["evaluated"]
    assert card["calibration"] is None or card["calibration"]["fitted_on"].startswith("a sample")
    assert "boxes of 32³" in card["normalisation"]["computed_from"]
    assert card["training_data"]["shape"] == [80, 80, 80] and card["training"]["epochs_run"] == 2


def test_the_patches_do_not_depend_on_the_workers(stores, tmp_path):
    """Batch k of epoch e comes from (seed, e, k): the same with 0 or 2 worker processes, so the trainings
    are the same; and from a StorePair as from the arrays it reads."""
    from tomoflow.recover.splits import plan_split
    from tomoflow.train.patches import PatchStream, make_batch, patch_loader

    pair = _store_pair(stores)
    sp = plan_split(pair.shape, 16, seed=0)
    norm = {"offset": 0.5, "scale": 2.0}
    kw = dict(patch=16, context=0, batch=2, seed=3, augment=None)
    stream = PatchStream(pair, sp, norm, first_epoch=2, n_steps=3, **kw)
    loader = iter(patch_loader(stream, 2))
    got = [next(loader) for _ in range(5)]
    del loader
    assert [(int(b["epoch"]), int(b["step"])) for b in got] == [(2, 0), (2, 1), (2, 2), (3, 0), (3, 1)]
    for b in got:
        want = make_batch(pair, sp, norm, epoch=int(b["epoch"]), step=int(b["step"]), **kw)
        np.testing.assert_array_equal(b["x"].numpy(), want["x"])
        np.testing.assert_array_equal(b["y"].numpy(), want["y"])
    run = dict(config=TINY, patch=16, batch=2, epochs=2, steps_per_epoch=2, seed=1, device="cpu", time_limit_s=None)
    x = np.stack([pair.read_input(((z, z + 1), (0, 80), (0, 80)))[0] for z in range(80)])
    y = np.asarray(stores[2].hr, dtype=np.float32)
    a = train_recovery(x, y, out_dir=tmp_path / "a", num_workers=0, **run)
    b = train_recovery(pair, None, out_dir=tmp_path / "b", num_workers=2, **run)
    assert [h["val_l1"] for h in a.history] == pytest.approx([h["val_l1"] for h in b.history], rel=1e-5)
    assert a.card["normalisation"]["offset"] == pytest.approx(b.card["normalisation"]["offset"], rel=1e-6)


def test_array_pair_refuses_bad_arrays():
    from tomoflow.errors import InputError

    with pytest.raises(InputError, match="shapes differ"):
        ArrayPair(np.zeros((4, 4, 4)), np.zeros((4, 4, 5)))
    with pytest.raises(InputError, match="NaN"):
        ArrayPair(np.full((4, 4, 4), np.nan), np.zeros((4, 4, 4)))
    with pytest.raises(InputError, match="3-D"):
        ArrayPair(np.zeros((4, 4)), np.zeros((4, 4)))


def test_the_time_limit_bounds_the_whole_command(stores, tmp_path):
    """--time-limit L: the command (registration from a file, reading, validation, training, evaluation,
    calibration, writing) ends within 1.2 L + 30 s even with many epochs; each phase's time is printed and in
    the card."""
    from typer.testing import CliRunner

    from tomoflow.cli import app

    hr, lf, p = stores
    reg = tmp_path / "reg.json"
    reg.write_text(json.dumps({"matrix": np.asarray(p.true_matrix).tolist()}))
    limit = 8.0
    t = time.perf_counter()
    r = CliRunner().invoke(
        app,
        [str(a) for a in ("train-recovery", hr, lf, "--out", tmp_path / "m", "--registration", reg)]
        + ["--epochs", "1000", "--patch", "16", "--channels", "4,8", "--threads", "1", "--device", "cpu"]
        + ["--time-limit", str(limit), "--workers", "1"],
        catch_exceptions=False,
    )
    wall = time.perf_counter() - t
    assert r.exit_code == 0, r.output
    assert wall <= 1.2 * limit + 30, wall
    card = json.loads((tmp_path / "m" / CARD_NAME).read_text())
    timing = card["timing"]
    assert timing["time_limit_s"] <= limit and card["training"]["stopped_by"] == "time limit"
    assert {"opening", "reading", "validation", "training", "evaluation", "calibration"} <= set(timing["phases"])
    assert sum(timing["phases"].values()) <= timing["total_s"] + 0.5 <= 1.2 * limit + 30
    assert "time per phase: " in r.stdout and "training" in r.stdout
    assert "--time-limit 8.0" in card["command"]


def test_the_chunk_cache_reads_what_the_array_holds_within_its_budget():
    from tomoflow.io.pair_source import ChunkCache

    a = np.random.default_rng(0).random((30, 25, 20)).astype(np.float32)
    chunk_bytes = 8 * 8 * 8 * 4
    c = ChunkCache(a, 3 * chunk_bytes, chunks=(8, 8, 8))
    rng = np.random.default_rng(1)
    for _ in range(40):
        lo = rng.integers(0, [29, 24, 19])
        hi = lo + 1 + rng.integers(0, [30, 25, 20] - lo)
        sl = tuple(slice(int(x), int(y)) for x, y in zip(lo, hi))
        np.testing.assert_array_equal(c[sl], a[sl])
        assert 0 < c._bytes <= 3 * chunk_bytes
    with pytest.raises(TypeError, match="step 1"):
        c[::2, :, :]
