"""``tomoflow ingest`` and ``tomoflow info``, and the top-level help."""

import re

import pytest


def test_help_is_there_for_newcomers(cli):
    ran = cli("--help")
    assert ran.code == 0
    for cmd in ("ingest", "info", "simulate", "center", "recon", "schema", "demo"):
        assert cmd in ran.stdout


def test_info_on_ingested_tooth(cli, tooth_store):
    ran = cli("info", tooth_store)
    assert ran.code == 0, ran
    assert "181 angles x 2 rows x 640 cols" in ran.stdout
    assert re.search(r"181 from 0\.00 to 179\.0\d deg", ran.stdout)
    assert "stage ingest" in ran.stdout and "complete" in ran.stdout


def test_paths_with_markup_are_printed_as_typed(cli, fresh_tooth_store):
    """``scan [b].zarr`` is printed as ``scan [b].zarr``, not ``scan .zarr`` (Rich markup escaped)."""
    ran = cli("info", fresh_tooth_store)
    assert ran.code == 0, ran
    assert "scan store " + str(fresh_tooth_store) in ran.stdout
    ran = cli("ingest", fresh_tooth_store.parent.parent / "missing [gpu].h5", fresh_tooth_store.parent / "x [b].zarr")
    assert ran.code == 2 and "missing [gpu].h5" in ran.stderr, ran


def test_ingest_says_what_it_wrote_verbatim(cli, tooth_h5, tmp_path):
    store = tmp_path / "scan [b] [/] [bold].zarr"
    ran = cli("ingest", tooth_h5, store)
    assert ran.code == 0, ran
    assert f"wrote {store} (181 projections of 2 x 640)" in ran.stdout


def test_bad_input_is_one_clear_line(cli, one_line_error, unchanged, tmp_path):
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    with unchanged(tmp_path):
        one_line_error(cli("ingest", empty, tmp_path / "x.zarr"), "empty.h5")
        one_line_error(cli("info", tmp_path / "missing.zarr"), "missing.zarr")


def test_angle_count_error_with_brackets_is_one_line(cli, one_line_error, unchanged, tooth_h5, tmp_path):
    """A DXchange angle-count error names ``tooth.h5 [angles]``: printed verbatim, not parsed as markup."""
    with unchanged(tmp_path):
        line = one_line_error(
            cli("ingest", tooth_h5, tmp_path / "t.zarr", "--angles", "0,180,0.5"),
            "tooth.h5 [angles]",
            "181 projections",
        )
    assert "MarkupError" not in line


@pytest.mark.parametrize("angles", ["0,abc", "0,180", "0,180,0", "0,nan,1", ",,"])
def test_bad_angle_range_is_one_line(cli, one_line_error, unchanged, tooth_h5, tmp_path, angles):
    with unchanged(tmp_path):
        one_line_error(cli("ingest", tooth_h5, tmp_path / "t.zarr", "--angles", angles), "--angles", angles)


@pytest.mark.parametrize("size", ["0", "-1", "nan", "inf"])
def test_pixel_size_must_be_positive(cli, one_line_error, unchanged, tooth_h5, tmp_path, size):
    with unchanged(tmp_path):
        one_line_error(cli("ingest", tooth_h5, tmp_path / "t.zarr", "--pixel-size", size), "--pixel-size")


def test_ingest_into_read_only_folder(cli, one_line_error, tooth_h5, readonly_dir):
    store = readonly_dir / "tomoflow-test.zarr"
    one_line_error(cli("ingest", tooth_h5, store), str(store))
    assert not store.exists()
