"""The command line, driven as a user would (typer's CliRunner)."""

import re

import pytest
from typer.testing import CliRunner

from tomoflow.cli import app

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def tooth_store(tmp_path_factory, tooth_h5):
    store = tmp_path_factory.mktemp("cli") / "tooth.zarr"
    code, out = run("ingest", tooth_h5, store)
    assert code == 0, out
    return store


def test_help_is_there_for_newcomers():
    code, out = run("--help")
    assert code == 0
    for cmd in ("ingest", "info", "simulate", "center", "recon", "schema", "demo"):
        assert cmd in out


def test_info_on_ingested_tooth(tooth_store):
    code, out = run("info", tooth_store)
    assert code == 0, out
    assert "181 angles x 2 rows x 640 cols" in out
    assert re.search(r"181 from 0\.00 to 179\.0\d deg", out)
    assert "stage ingest" in out and "complete" in out


def test_bad_input_is_one_clear_line(tmp_path):
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    code, out = run("ingest", empty, tmp_path / "x.zarr")
    assert code == 2
    assert "error:" in out and "empty.h5" in out
    assert "Traceback" not in out
    code, out = run("info", tmp_path / "missing.zarr")
    assert code == 2 and "missing.zarr" in out


def test_center_and_try_sweep(tooth_store, tmp_path):
    code, out = run("center", tooth_store, "--try", tmp_path / "sweep", "--try-range", "2", "--try-step", "1")
    assert code == 0, out
    c = float(re.search(r"rotation centre: ([\d.]+)", out).group(1))
    assert 290 < c < 300
    assert len(list((tmp_path / "sweep").glob("center_*.png"))) == 5
    assert (tmp_path / "sweep" / "sweep_metric.png").exists()


def test_recon_then_info(tooth_store, tmp_path):
    vol = tmp_path / "tooth_vol.zarr"
    code, out = run("recon", tooth_store, "--out", vol, "--cluster", "none", "--png", tmp_path / "o.png")
    assert code == 0, out
    code, out = run("info", vol)
    assert code == 0 and "2 x 640 x 640" in out and "fbp" in out
    assert (tmp_path / "o.png").stat().st_size > 10_000


def test_simulate_ingest_and_schema_check(tmp_path):
    h5 = tmp_path / "sim.h5"
    code, out = run("simulate", h5, "--size", 32, "--rows", 4, "--angles", 24, "--phantom", "gold")
    assert code == 0, out
    code, out = run("ingest", h5, tmp_path / "sim.zarr")
    assert code == 0, out
    code, out = run("schema", "--check", "--out", "schemas")
    assert code == 0, out


def test_demo_end_to_end(tmp_path):
    code, out = run("demo", "--out", tmp_path / "demo", "--size", 48, "--rows", 8, "--angles", 48, "--workers", 1)
    assert code == 0, out
    assert "Dask dashboard: http://127.0.0.1:" in out
    assert (tmp_path / "demo" / "overview.png").exists()
    assert (tmp_path / "demo" / "volume.zarr").exists()
