"""`tomoflow align`, `tomoflow correct` and `tomoflow train-aligner` as a user runs them."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def jittered_store(tmp_path_factory):
    import tomoflow
    from tomoflow.io.synthetic import write_synthetic_scan
    from tomoflow.sim import gold_particle, simulate_scan

    path = tmp_path_factory.mktemp("cli-align") / "scan.zarr"
    scan = simulate_scan(
        gold_particle((16, 48, 56), seed=2),
        np.linspace(0, 180, 61),
        jitter_px=3.0,
        photons=None,
        seed=1,
        center=(56 - 1) / 2 + 3,
    )
    with tomoflow.config.set(scan_chunk_rows=8):
        write_synthetic_scan(path, scan, format="zarr")
    return path


@pytest.mark.slow
def test_align_the_tooth_horizontally_with_a_report(cli, tooth_store, tmp_path):
    ran = cli(
        "align",
        tooth_store,
        "-o",
        tmp_path / "a.zarr",
        "--method",
        "phase",
        "--horizontal-only",
        "--cluster",
        "none",
        "--png",
        tmp_path / "report.png",
    )
    assert ran.code == 0, ran
    assert "rotation centre" in ran.stdout and (tmp_path / "report.png").stat().st_size > 10_000
    assert cli("info", tmp_path / "a.zarr").code == 0


def test_correct_runs_the_whole_chain(cli, jittered_store, tmp_path):
    ran = cli("correct", jittered_store, "-o", tmp_path / "v.zarr", "--method", "consistency", "--cluster", "none")
    assert ran.code == 0, ran
    assert (tmp_path / "v-aligned.zarr").is_dir() and "voxels" in ran.stdout
    again = cli("correct", jittered_store, "-o", tmp_path / "v.zarr", "--method", "consistency", "--cluster", "none")
    assert again.code == 0, again  # complete: nothing recomputed


@pytest.mark.parametrize(
    "args, words",
    [
        (["--method", "magic"], ["alignment method"]),
        (["--center", "1e9"], ["centre"]),
        (["--max-size", "3"], ["max_size"]),
    ],
)
def test_align_mistakes_are_one_line(cli, one_line_error, unchanged, jittered_store, tmp_path, args, words):
    with unchanged(tmp_path):
        one_line_error(cli("align", jittered_store, "-o", tmp_path / "a.zarr", "--cluster", "none", *args), *words)


def test_network_method_without_weights_says_how_to_get_them(cli, one_line_error, unchanged, tmp_path, monkeypatch):
    """The weights are shipped, so their absence (a checkout without them, a packaging mistake) is simulated,
    on a scan large enough for the network (32 x 32 px)."""
    import tomoflow.align.resnet
    from tomoflow.io.synthetic import write_synthetic_scan
    from tomoflow.sim import gold_particle, simulate_scan

    store = tmp_path / "scan.zarr"
    write_synthetic_scan(
        store,
        simulate_scan(gold_particle((32, 32, 32), seed=2), np.linspace(0, 180, 16), photons=None, seed=1),
        format="zarr",
    )
    missing = tmp_path / "no-weights" / "jitter_resnet.safetensors"
    monkeypatch.setattr(tomoflow.align.resnet, "default_weights_path", lambda: missing)
    with unchanged(tmp_path):
        one_line_error(
            cli("align", store, "-o", tmp_path / "a.zarr", "--method", "resnet", "--cluster", "none"),
            "train-aligner",
            str(missing),
            "--method consistency",
        )


@pytest.mark.slow
def test_train_aligner_tiny_run_and_resume(cli, tmp_path):
    """The training command end to end at toy size (3 scans of 48 px), then a rerun that resumes."""
    args = (
        "train-aligner",
        "-o",
        tmp_path / "t",
        "--n-scans",
        "3",
        "--size",
        "48",
        "--n-angles",
        "31",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--threads",
        "1",
    )
    ran = cli(*args)
    assert ran.code == 0, ran
    # not a terminal (a background job's log): plain milestone lines instead of a live bar
    assert "simulated 3/3 scans" in ran.stdout and "epoch 1: train MSE" in ran.stdout, ran.stdout
    assert (tmp_path / "t" / "jitter_resnet.safetensors").is_file() and (
        tmp_path / "t" / "jitter_resnet.json"
    ).is_file()
    again = cli(*args)
    assert again.code == 0, again
