"""The error boundary of every command: tomoflow and OS errors become one plain line (exit code 2);
user text is never read as Rich markup, on stderr or stdout."""

import importlib

import pytest

from tomoflow.errors import ConfigError, InputError, StoreError

# The module (``tomoflow.io.ingest`` as an attribute is the function of that name).
ingest_module = importlib.import_module("tomoflow.io.ingest")


@pytest.mark.parametrize(
    "exc",
    [
        ConfigError("cluster needs dask-cuda: pip install 'tomoflow[gpu]' [/] [bold]x[/bold] [link=y]"),
        InputError("angle count mismatch: 3 angles for 181 projections", "/data/scan [b].h5", "/exchange/theta"),
        StoreError("first line\nsecond [line]\n"),
    ],
)
def test_tomoflow_errors_are_printed_verbatim(cli, one_line_error, monkeypatch, tmp_path, exc):
    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(ingest_module, "detect_format", fail)
    line = one_line_error(cli("ingest", tmp_path / "raw.h5", tmp_path / "s.zarr"))
    assert line == "error: " + "; ".join(s.strip() for s in str(exc).splitlines() if s.strip())


@pytest.mark.parametrize(
    "exc",
    [
        PermissionError(13, "Permission denied", "/beamline/out [2024].zarr"),
        OSError(30, "Read-only file system", "/mnt/ro/scan.zarr"),
        FileNotFoundError(2, "No such file or directory", "/a/b.h5"),
    ],
)
def test_os_errors_are_one_line_naming_the_path(cli, one_line_error, monkeypatch, tmp_path, exc):
    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(ingest_module, "detect_format", fail)
    one_line_error(cli("ingest", tmp_path / "raw.h5", tmp_path / "s.zarr"), exc.filename, exc.strerror)


def test_a_real_process_prints_one_plain_line(cli_process, one_line_error, tooth_h5, tmp_path):
    """Through the console entry point: real stderr, logging and Rich consoles."""
    ran = cli_process("ingest", tooth_h5, "t [b].zarr", "--angles", "0,180,0.5", cwd=tmp_path)
    one_line_error(ran, "tooth.h5 [angles]")
    assert not (tmp_path / "t [b].zarr").exists()


def test_global_option_errors_are_one_line(cli, one_line_error):
    one_line_error(cli("--memory", "lots [x]", "info", "x.zarr"), "lots [x]")
