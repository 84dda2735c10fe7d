"""``tomoflow simulate`` and ``tomoflow schema``."""

import pytest


def test_simulate_ingest_and_schema_check(cli, tmp_path):
    h5 = tmp_path / "sim [b].h5"
    ran = cli("simulate", h5, "--size", 32, "--rows", 4, "--angles", 24, "--phantom", "gold")
    assert ran.code == 0, ran
    assert f"wrote {h5}" in ran.stdout
    ran = cli("ingest", h5, tmp_path / "sim.zarr")
    assert ran.code == 0, ran
    ran = cli("schema", "--check", "--out", "schemas")
    assert ran.code == 0, ran


def test_simulate_without_noise(cli, tmp_path):
    ran = cli("simulate", tmp_path / "s.zarr", "--size", 16, "--rows", 2, "--angles", 8, "--photons", "none")
    assert ran.code == 0, ran


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--phantom", "cube"], ["cube", "cathode"]),
        (["--photons", "0"], ["--photons"]),
        (["--photons", "many"], ["--photons"]),
        (["--center-offset", "20"], ["--center-offset"]),
    ],
)
def test_simulate_mistakes_are_one_line(cli, one_line_error, unchanged, tmp_path, args, words):
    with unchanged(tmp_path):
        one_line_error(cli("simulate", tmp_path / "s.h5", "--size", 32, "--rows", 2, "--angles", 8, *args), *words)


def test_simulate_into_read_only_folder(cli, one_line_error, readonly_dir):
    out = readonly_dir / "tomoflow-test.h5"
    one_line_error(cli("simulate", out, "--size", 16, "--rows", 2, "--angles", 8), str(out))
    assert not out.exists()


@pytest.fixture
def no_simulation(monkeypatch):
    import tomoflow.cli._app
    import tomoflow.cli.scan

    def fail(*args, **kwargs):
        raise AssertionError("simulated although the output cannot be written")

    monkeypatch.setattr(tomoflow.cli.scan, "_simulate", fail)


def test_unwritable_output_is_refused_before_simulating(cli, one_line_error, monkeypatch, tmp_path, no_simulation):
    import tomoflow.cli._app
    import tomoflow.cli.scan

    monkeypatch.setattr(tomoflow.cli._app.os, "access", lambda *a, **k: False)  # as a non-root user would see it
    one_line_error(cli("simulate", tmp_path / "new" / "s.h5"), str(tmp_path / "new" / "s.h5"), "not writable")
    assert not (tmp_path / "new").exists()


def test_output_under_a_file_is_refused_before_simulating(cli, one_line_error, unchanged, tmp_path, no_simulation):
    (tmp_path / "notes.txt").write_text("mine")
    with unchanged(tmp_path):
        one_line_error(cli("simulate", tmp_path / "notes.txt" / "s.h5"), "notes.txt", "not a folder")
