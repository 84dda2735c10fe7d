"""``tomoflow center``: the estimate, the ``--try`` sweep (validated before any work) and ``--save``."""

import re

import pytest

import tomoflow.pipeline.reconstruct


@pytest.mark.slow
def test_center_and_try_sweep(cli, tooth_store, tmp_path):
    ran = cli("center", tooth_store, "--try", tmp_path / "sweep", "--try-range", "2", "--try-step", "1")
    assert ran.code == 0, ran
    c = float(re.search(r"rotation centre: ([\d.]+)", ran.stdout).group(1))
    assert 290 < c < 300
    assert len(list((tmp_path / "sweep").glob("center_*.png"))) == 5
    assert (tmp_path / "sweep" / "sweep_metric.png").exists()


@pytest.fixture
def no_estimate(monkeypatch):
    """A bad sweep must be refused before the (slow) centre estimate runs."""

    def fail(*args, **kwargs):
        raise AssertionError("estimate_center ran although the sweep options are invalid")

    monkeypatch.setattr(tomoflow.pipeline.reconstruct, "estimate_center", fail)


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--try-step", "0", ["--try-step", "positive"]),
        ("--try-step", "-1", ["--try-step", "positive"]),
        ("--try-step", "nan", ["--try-step"]),
        ("--try-range", "-1", ["--try-range"]),
        ("--try-range", "1e6", ["trial centres", "at most 401"]),
    ],
)
def test_bad_sweep_is_refused_up_front(
    cli, one_line_error, unchanged, tooth_store, tmp_path, no_estimate, option, value, words
):
    with unchanged(tmp_path):
        one_line_error(cli("center", tooth_store, "--try", tmp_path / "sweep", option, value), *words)


def test_sweep_must_stay_on_the_detector(cli, one_line_error, unchanged, tooth_store, tmp_path):
    """301 centres are allowed, but +-300 px around ~296 px leaves a 640-column detector."""
    with unchanged(tmp_path):
        one_line_error(
            cli("center", tooth_store, "--try", tmp_path / "sweep", "--try-range", "300", "--try-step", "2"),
            "leave the detector",
            "0 to 639",
        )


def test_sweep_into_read_only_folder(cli, one_line_error, tooth_store, readonly_dir):
    sweep = readonly_dir / "tomoflow-test-sweep"
    one_line_error(cli("center", tooth_store, "--try", sweep, "--try-range", "0"), str(sweep))
    assert not sweep.exists()


def test_save_records_the_centre(cli, fresh_tooth_store):
    ran = cli("center", fresh_tooth_store, "--save")
    assert ran.code == 0, ran
    c = float(re.search(r"rotation centre: ([\d.]+)", ran.stdout).group(1))
    assert f"saved in {fresh_tooth_store}" in ran.stdout
    ran = cli("info", fresh_tooth_store)
    assert f"{c:.2f} px (saved" in ran.stdout, ran
