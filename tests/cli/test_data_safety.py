"""What the command line may delete or overwrite: only stores tomoflow made, never a user's folder or an
input; and a wrong result is never marked complete (issue: one stage engine, data safety)."""

from __future__ import annotations

import os

import numpy as np
import pytest


@pytest.fixture
def user_folder(tmp_path):
    folder = tmp_path / "mydata"
    folder.mkdir()
    (folder / "notes.txt").write_text("years of work")
    return folder


def test_ingest_overwrite_never_deletes_a_user_folder(cli, one_line_error, tooth_h5, user_folder):
    one_line_error(cli("ingest", tooth_h5, user_folder, "--overwrite"), "not a tomoflow store", str(user_folder))
    assert (user_folder / "notes.txt").read_text() == "years of work"


def test_ingest_twice_is_a_no_op_and_another_scan_is_refused(cli, one_line_error, tooth_h5, txrm_file, tmp_path):
    store = tmp_path / "s.zarr"
    assert cli("ingest", tooth_h5, store).code == 0
    before = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}
    assert cli("ingest", tooth_h5, store).code == 0  # the same ingest: nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()} == before
    one_line_error(cli("ingest", txrm_file, store), "other inputs or parameters", "--overwrite")
    assert cli("ingest", txrm_file, store, "--overwrite").code == 0


@pytest.mark.parametrize("out", ["same", "dot", "parent"])
def test_recon_never_writes_over_its_input(cli, one_line_error, unchanged, tooth_store, out, monkeypatch):
    monkeypatch.chdir(tooth_store.parent)
    target = {"same": tooth_store, "dot": ".", "parent": tooth_store.parent}[out]
    with unchanged(tooth_store.parent):
        one_line_error(
            cli("recon", tooth_store.name, "-o", target, "--overwrite", "--cluster", "none", "--center", "296"), "input"
        )
    assert cli("info", tooth_store).code == 0


def test_recon_overwrite_never_deletes_a_user_folder(cli, one_line_error, tooth_store, user_folder):
    one_line_error(
        cli("recon", tooth_store, "-o", user_folder, "--overwrite", "--cluster", "none", "--center", "296"),
        "not a tomoflow store",
    )
    assert (user_folder / "notes.txt").read_text() == "years of work"


def test_recon_over_a_scan_store_is_refused(cli, one_line_error, tooth_h5, tooth_store, tmp_path):
    other = tmp_path / "other-scan.zarr"
    assert cli("ingest", tooth_h5, other).code == 0
    one_line_error(
        cli("recon", tooth_store, "-o", other, "--overwrite", "--cluster", "none", "--center", "296"),
        "scan store, not a volume store",
    )
    assert cli("info", other).code == 0


def test_all_zero_flats_are_refused_and_nothing_is_left(cli, one_line_error, unchanged, tmp_path):
    from tomoflow.errors import InputError
    from tomoflow.io import write_scan

    store = tmp_path / "zeroflat.zarr"
    with unchanged(tmp_path), pytest.raises(InputError, match="flat fields are all zero"):  # refused at ingest
        write_scan(
            store, np.full((8, 4, 16), 100.0), np.linspace(0, 180, 8, endpoint=False), flats=np.zeros((2, 4, 16))
        )
    with unchanged(tmp_path), pytest.raises(InputError, match="not brighter than the darks"):
        write_scan(
            store,
            np.full((8, 4, 16), 100.0),
            np.linspace(0, 180, 8, endpoint=False),
            flats=np.full((2, 4, 16), 50.0),
            darks=np.full((1, 4, 16), 50.0),
        )
    # recon keeps the same check for stores written before it moved to ingest (one implementation)
    from tomoflow._checks import check_flats_brighter

    with pytest.raises(InputError, match="all zero"):
        check_flats_brighter(np.zeros((4, 16)), None, store)
    check_flats_brighter(np.full((4, 16), 1000.0), np.full((4, 16), 100.0), store)  # good flats pass


def test_unknown_pixel_size_is_said_and_recorded_as_unknown(cli, tmp_path):
    from tomoflow.io import VolumeStore, write_scan

    store = tmp_path / "nopix.zarr"
    write_scan(store, np.exp(-np.ones((8, 4, 16))), np.linspace(0, 180, 8, endpoint=False), values="intensity")
    ran = cli("recon", store, "-o", tmp_path / "v.zarr", "--cluster", "none", "--center", "7.5")
    assert ran.code == 0, ran
    assert "voxel size unknown" in ran.stdout
    assert VolumeStore.open(tmp_path / "v.zarr").attrs.voxel_size is None
    assert "unknown" in cli("info", tmp_path / "v.zarr").stdout


def test_rerun_of_a_finished_recon_writes_nothing(cli, tooth_store, tmp_path):
    vol = tmp_path / "v.zarr"
    assert cli("recon", tooth_store, "-o", vol, "--cluster", "none", "--center", "296").code == 0
    before = {p: p.stat().st_mtime_ns for p in vol.rglob("*") if p.is_file()}
    rel = os.path.relpath(tooth_store)
    ran = cli("recon", rel, "-o", vol, "--cluster", "none", "--center", "296")
    assert ran.code == 0, ran
    assert {p: p.stat().st_mtime_ns for p in vol.rglob("*") if p.is_file()} == before
