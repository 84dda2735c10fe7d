"""The physics of a scan, checked in one place (``tomoflow._checks``): at ingest before a store exists,
while the data streams, and again when a stage opens a store; ingest identified by content; stores
built under a temporary name; damaged chunks reported as a store error. API level: tomoflow error
types, nothing left behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

from tomoflow._checks import (
    MAX_PLANNED_BYTES,
    SCAN_NEEDS,
    check_planned_memory,
    check_planned_output,
    check_seed,
    projection_directions,
    random_generator,
    validate_scan_geometry,
)
from tomoflow.errors import ConfigError, InputError, StoreError
from tomoflow.io.ingest import ingest
from tomoflow.io.scan_store import ScanStore, write_scan

HALF_TURN = np.linspace(0.0, 180.0, 16, endpoint=False)


def _dx(path: Path, proj: np.ndarray, theta, flats=None, darks=None) -> Path:
    """A minimal Data Exchange file."""
    with h5py.File(path, "w") as f:
        f["exchange/data"] = proj
        f["exchange/theta"] = np.asarray(theta, dtype=np.float64)
        if flats is not None:
            f["exchange/data_white"] = flats
        if darks is not None:
            f["exchange/data_dark"] = darks
    return path


def _counts(n: int = 16, rows: int = 4, cols: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (1000.0 * np.exp(-rng.random((n, rows, cols)))).astype(np.float32)


def _snapshot(folder: Path) -> dict[str, str]:
    from tomoflow.testing import tree_snapshot

    return tree_snapshot(folder)


# ----------------------------------------------------------------------------- the angle policy
@pytest.mark.parametrize(
    ("angles", "need", "words"),
    [
        ([0.0], "scan", ["at least 2 distinct projection directions", "a single projection"]),
        (np.zeros(16), "scan", ["at least 2", "every angle is the same modulo 180"]),
        ([0.0, 180.0, 360.0, 540.0], "scan", ["give 1", "every angle is the same"]),
        (np.linspace(0.0, 1e30, 16), "scan", ["span 1e+30 degrees", "at most 10 turns"]),
        (np.linspace(0.0, 3601.0, 16), "scan", ["span 3601 degrees"]),
        (1e7 + HALF_TURN, "scan", ["beyond +-1e+06 degrees"]),
        ([0.0, np.nan, 2.0], "scan", ["NaN or Inf"]),
        ([0.0, np.inf], "scan", ["NaN or Inf"]),
        ([0.0, 90.0], "fbp", ["FBP reconstruction needs at least 4", "give 2"]),
        ([0.0, 90.0], "center-vo", ["rotation-centre estimate (method vo) needs at least 4"]),
        (np.linspace(0.0, 45.0, 4), "align", ["jitter alignment needs at least 8"]),
        (np.linspace(0.0, np.pi, 181), "fbp", ["gap of 176.9", "radians"]),
        (np.linspace(0.0, 60.0, 61), "sirt", ["no gap over 90 degrees", "gap of 120"]),
        (np.linspace(0.0, 1e-5, 100), "mlem", ["give 1"]),
    ],
)
def test_angles_that_are_not_a_scan_are_refused(angles, need, words):
    with pytest.raises(InputError) as err:
        validate_scan_geometry(angles, need=need, path="scan.h5", dataset="/exchange/theta")
    msg = str(err.value)
    assert msg.startswith("scan.h5 [/exchange/theta]: "), msg
    for w in words:
        assert w in msg, (w, msg)


@pytest.mark.parametrize(
    ("angles", "need"),
    [
        ([0.0, 90.0], "scan"),
        (HALF_TURN, "fbp"),
        (np.linspace(0.0, 360.0, 721), "fbp"),  # a full turn: 360 directions
        (np.linspace(-90.0, 90.0, 181), "center-vo"),
        (np.linspace(0.0, 120.0, 121), "mlem"),  # limited angle: a 60-degree gap is accepted
        (3 * 360.0 + HALF_TURN, "align"),  # a stage that turned before the scan
        ([0.0, 180.0, 45.0, 90.0], "center-pair"),
    ],
)
def test_real_scans_pass(angles, need):
    out = validate_scan_geometry(angles, need=need)
    assert out.dtype == np.float64 and out.shape == (len(angles),)


def test_every_stage_names_its_minimum():
    assert SCAN_NEEDS["scan"].min_directions == 2
    for need in ("fbp", "sirt", "mlem", "center-vo"):
        assert SCAN_NEEDS[need].min_directions == 4 and SCAN_NEEDS[need].max_gap_deg == 90.0
    assert SCAN_NEEDS["align"].min_directions == 8
    with pytest.raises(ConfigError, match="unknown scan need"):
        validate_scan_geometry(HALF_TURN, need="magic")


def test_detector_columns():
    with pytest.raises(
        InputError, match="a tomography scan needs a detector of at least 2 columns; these projections have 1"
    ):
        validate_scan_geometry(HALF_TURN, need="scan", n_columns=1)
    with pytest.raises(InputError, match="FBP reconstruction needs a detector of at least 4 columns"):
        validate_scan_geometry(HALF_TURN, need="fbp", n_columns=3)
    validate_scan_geometry(HALF_TURN, need="fbp", n_columns=4)


def test_the_shipped_chip_scan_reconstructs_but_three_views_do_not(txrm_file):
    """Seven views over 90 degrees (the TXRM test chip): a limited-angle scan, accepted; three are not."""
    from tomoflow.io.txrm import open_txrm

    with open_txrm(txrm_file) as raw:
        angles = raw.angles_deg
    assert validate_scan_geometry(angles, need="fbp", n_columns=256).size == 7
    with pytest.raises(InputError, match="give 3"):
        validate_scan_geometry(angles[::3], need="fbp")


def test_directions_fold_half_turns_and_merge_near_angles():
    assert projection_directions([0, 90, 180, 270, 360]).tolist() == [0.0, 90.0]
    assert projection_directions([179.9995, 0.0, 45.0]).size == 2  # across 0/180 within 0.001 degree
    assert projection_directions(np.linspace(0, 180, 8, endpoint=False)).size == 8


# ----------------------------------------------------------------------------- ingest: before a store exists
@pytest.mark.parametrize(
    ("theta", "n", "words"),
    [
        ([0.0], 1, ["a single projection"]),
        (np.zeros(16), 16, ["every angle is the same"]),
        (np.linspace(0.0, 1e30, 16), 16, ["span 1e+30"]),
    ],
)
def test_ingest_refuses_angles_before_creating_anything(tmp_path, theta, n, words):
    src = _dx(tmp_path / "s.h5", _counts(n), theta)
    before = _snapshot(tmp_path)
    with pytest.raises(InputError) as err:
        ingest(src, tmp_path / "s.zarr")
    assert str(src) in str(err.value) and "/exchange/theta" in str(err.value)
    for w in words:
        assert w in str(err.value)
    assert _snapshot(tmp_path) == before


def test_ingest_refuses_all_negative_intensities(tmp_path):
    src = _dx(
        tmp_path / "neg.h5",
        -_counts(),
        HALF_TURN,
        flats=np.full((2, 4, 16), 1000.0, np.float32),
        darks=np.zeros((2, 4, 16), np.float32),
    )
    before = _snapshot(tmp_path)
    with pytest.raises(InputError, match=r"projection 0 has no pixel above the dark level.*no finite line") as e:
        ingest(src, tmp_path / "neg.zarr")
    assert "/exchange/data" in str(e.value)
    assert _snapshot(tmp_path) == before


def test_counts_at_the_dark_level_in_most_pixels_are_refused(tmp_path):
    proj = _counts()
    proj[:, :, 5:] = 3.0  # 11 of 16 columns at the dark level of 5 counts in every projection
    with pytest.raises(InputError, match=r"only 31\.2 % of the projection pixels give a finite line integral"):
        write_scan(tmp_path / "s.zarr", proj, HALF_TURN, darks=np.full((1, 4, 16), 5.0))
    assert list(tmp_path.iterdir()) == []


def test_line_integrals_must_be_finite(tmp_path):
    li = np.full((16, 4, 16), np.nan, np.float32)
    li[:, 0, 0] = 1.0
    with pytest.raises(InputError, match=r"1008 projection values are NaN/Inf \(98 %\); at most 0.1 %"):
        write_scan(tmp_path / "s.zarr", li, HALF_TURN, values="line-integral")
    li = np.ones((16, 4, 16), np.float32)
    li[3, 0, 0] = np.inf  # one value in 1024: 0.1 %, accepted (a dead pixel)
    assert write_scan(tmp_path / "s.zarr", li, HALF_TURN, values="line-integral").is_complete("ingest")
    li[4, 0, 0] = np.nan
    with pytest.raises(InputError, match="2 projection values are NaN/Inf"):
        write_scan(tmp_path / "t.zarr", li, HALF_TURN, values="line-integral")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]


def test_a_failure_while_streaming_leaves_nothing_and_keeps_the_old_store(tmp_path):
    good = write_scan(tmp_path / "s.zarr", _counts(), HALF_TURN)
    before = _snapshot(tmp_path)
    bad = _counts(seed=1)
    bad[12] = np.nan  # found while streaming, after the first blocks were written
    with pytest.raises(InputError, match="projection 12 contains no finite value"):
        write_scan(tmp_path / "s.zarr", bad, HALF_TURN, overwrite=True)
    assert _snapshot(tmp_path) == before  # the complete store is intact, no temporary left
    assert ScanStore.open(good.path).is_complete("ingest")


def test_tiff_shape_mismatch_and_corrupt_tiff_are_refused_before_a_store_exists(tmp_path):
    folder = tmp_path / "tifs"
    folder.mkdir()
    for i in range(16):
        tifffile.imwrite(folder / f"p_{i:02d}.tif", (1000 + i + np.zeros((4, 16))).astype(np.uint16))
    tifffile.imwrite(folder / "p_09.tif", np.ones((4, 15), np.uint16))
    before = _snapshot(tmp_path)
    with pytest.raises(InputError, match=r"p_09\.tif.*image shape \(4, 15\) differs"):
        ingest(folder, tmp_path / "s.zarr", angles=(0, 180, 11.25))
    assert _snapshot(tmp_path) == before
    tifffile.imwrite(folder / "p_09.tif", np.ones((4, 16), np.uint16))
    (folder / "p_11.tif").write_bytes(b"II*\x00" + b"\xff" * 40)  # a TIFF signature, then garbage
    before = _snapshot(tmp_path)
    with pytest.raises(InputError, match=r"p_11\.tif.*cannot read TIFF"):
        ingest(folder, tmp_path / "s.zarr", angles=(0, 180, 11.25))
    assert _snapshot(tmp_path) == before


def test_an_option_of_another_format_is_a_config_error(tmp_path):
    src = _dx(tmp_path / "s.h5", _counts(), HALF_TURN)
    with pytest.raises(ConfigError, match=r"entry= \(--entry\) does not apply to dxchange input; it applies to nexus"):
        ingest(src, tmp_path / "s.zarr", entry="/nope")
    with pytest.raises(ConfigError, match="unknown ingest option"):
        ingest(src, tmp_path / "s.zarr", colour="red")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]


def test_planned_size_is_bounded_before_anything_is_created(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(StoreError, match=r"s\.zarr: the scan store .* would take up to .* has 1000 B free"):
        write_scan(tmp_path / "s.zarr", _counts(), HALF_TURN)
    with pytest.raises(ConfigError, match="over the 1.0 PiB"):
        check_planned_output("a test", MAX_PLANNED_BYTES + 1)
    with pytest.raises(ConfigError, match="chunks"):
        check_planned_output("a test", 1, n_chunks=10**9)
    with pytest.raises(ConfigError, match="in memory"):
        check_planned_memory("a test", 2**49)
    with pytest.raises(ConfigError, match="chunks"):
        write_scan(tmp_path / "s.zarr", _counts(), HALF_TURN, chunks=(0, 1, 1))
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- ingest identity: content, not path
def test_the_same_file_through_any_path_is_the_same_ingest(tmp_path, monkeypatch):
    (tmp_path / "raw").mkdir()
    src = _dx(tmp_path / "raw" / "s.h5", _counts(), HALF_TURN)
    (tmp_path / "via").symlink_to(tmp_path / "raw")
    store = tmp_path / "in.zarr"
    ingest(src, store)
    before = _snapshot(tmp_path)
    mtimes = {p: p.stat().st_mtime_ns for p in store.rglob("*")}
    assert ingest(tmp_path / "via" / "s.h5", store).is_complete("ingest")  # through a symlinked folder
    monkeypatch.chdir(tmp_path / "raw")
    assert ingest("s.h5", "../in.zarr").is_complete("ingest")  # relative, from another folder
    assert _snapshot(tmp_path) == before
    assert {p: p.stat().st_mtime_ns for p in store.rglob("*")} == mtimes
    rec = json.loads((store / "stages" / "ingest" / "zarr.json").read_text())["attributes"]
    assert "path" not in rec["params"]["source"] and rec["params"]["source"]["sha256"]
    assert ScanStore.open(store).attrs.source.path == str(src)  # the path stays as provenance


def test_a_store_fingerprinted_with_its_path_by_an_older_tomoflow_is_recognised(tmp_path):
    from tomoflow.io.output import fingerprint

    src = _dx(tmp_path / "s.h5", _counts(), HALF_TURN)
    store = tmp_path / "old.zarr"
    ingest(src, store)
    rec_file = store / "stages" / "ingest" / "zarr.json"
    doc = json.loads(rec_file.read_text())
    rec = doc["attributes"]
    # What the older fingerprint was: the source's path among the parameters.
    from tomoflow.io import scan_store as ss

    s = ScanStore.open(store)
    meta = s.attrs.model_dump(mode="json")
    _, params, data = ss._ingest_fingerprint(
        s.attrs.source,
        None,
        np.asarray(s.flats[...]),
        np.asarray(s.darks[...]),
        s.angles_deg,
        {**meta, "stage_position": None, "instrument": rec["params"]["instrument"]},
        tuple(rec["params"]["chunks"]),
        {},
    )
    old_params = {**params, "source": {**params["source"], "path": "/somewhere/else/s.h5"}}
    rec["params"] = old_params
    rec["fingerprint"] = fingerprint("ingest", inputs={"source": data}, params=old_params)
    rec_file.write_text(json.dumps(doc))
    before = _snapshot(tmp_path)
    assert ingest(src, store).is_complete("ingest")
    assert _snapshot(tmp_path) == before  # complete: nothing written


# ----------------------------------------------------------------------------- incomplete ingest stores
def _make_incomplete(store: Path) -> None:
    """Mark a store's ingest incomplete, as an older tomoflow left it after a failure."""
    rec_file = store / "stages" / "ingest" / "zarr.json"
    doc = json.loads(rec_file.read_text())
    doc["attributes"]["complete"] = False
    doc["attributes"]["output_id"] = None
    rec_file.write_text(json.dumps(doc))


def test_an_incomplete_ingest_is_finished_by_the_same_command(tmp_path):
    src = _dx(tmp_path / "s.h5", _counts(), HALF_TURN)
    store = tmp_path / "s.zarr"
    ingest(src, store)
    _make_incomplete(store)
    with pytest.raises(StoreError, match="did not complete"):
        ScanStore.open(store)
    assert ingest(src, store).is_complete("ingest")


def test_a_corrected_source_replaces_an_incomplete_ingest_but_never_a_complete_one(tmp_path):
    store = tmp_path / "s.zarr"
    ingest(_dx(tmp_path / "a.h5", _counts(seed=1), HALF_TURN), store)
    _make_incomplete(store)
    fixed = _dx(tmp_path / "b.h5", _counts(seed=2), HALF_TURN)  # another sha256
    done = ingest(fixed, store)
    assert done.is_complete("ingest") and done.attrs.source.path == str(fixed)
    before = _snapshot(tmp_path)
    with pytest.raises(StoreError, match="made from other inputs or parameters"):
        ingest(tmp_path / "a.h5", store)  # complete data of another source: kept
    assert _snapshot(tmp_path) == before


def test_stale_temporary_stores_of_a_killed_ingest_are_removed(tmp_path):
    src = _dx(tmp_path / "s.h5", _counts(), HALF_TURN)
    ingest(src, tmp_path / "left.zarr")
    os.rename(tmp_path / "left.zarr", tmp_path / ".s.zarr.ingest-deadbeef0000")  # what a kill -9 leaves
    ingest(src, tmp_path / "s.zarr")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5", "s.zarr"]


# ----------------------------------------------------------------------------- stages opening a store
def test_a_stage_checks_its_own_need(tmp_path):
    store = write_scan(tmp_path / "two.zarr", _counts(2), [0.0, 90.0])
    assert store.check_for("scan").size == 2
    with pytest.raises(InputError, match=r"two\.zarr \[angle\]: FBP reconstruction needs at least 4"):
        store.check_for("fbp")
    with pytest.raises(InputError, match="method vo"):
        store.check_for("center-vo")
    assert store.stage("ingest").info["measured_fraction"] == 1.0


def test_a_store_edited_into_one_direction_is_refused_on_open(tmp_path):
    import zarr

    store = write_scan(tmp_path / "s.zarr", _counts(), HALF_TURN)
    zarr.open_array(str(store.path / "angle"), mode="r+")[:] = 0.0
    with pytest.raises(InputError, match="every angle is the same"):
        ScanStore.open(store.path)
    assert ScanStore.open(store.path, require_complete=False).shape == (16, 4, 16)  # info still reads it


def test_a_store_without_a_measured_fraction_is_sampled(tmp_path):
    import zarr

    store = write_scan(tmp_path / "s.zarr", _counts(), HALF_TURN)
    rec_file = store.path / "stages" / "ingest" / "zarr.json"
    doc = json.loads(rec_file.read_text())
    doc["attributes"]["info"] = {}  # as an older tomoflow wrote it
    rec_file.write_text(json.dumps(doc))
    assert ScanStore.open(store.path).check_for("fbp").size == 16
    zarr.open_array(str(store.path / "projections"), mode="r+")[:] = -1.0
    with pytest.raises(InputError, match="projection 0 has no pixel above 0"):
        ScanStore.open(store.path).check_for("fbp")


def test_reconstruct_refuses_too_few_directions_before_writing(tmp_path):
    from tomoflow.pipeline.reconstruct import reconstruct_scan

    write_scan(tmp_path / "two.zarr", _counts(2), [0.0, 90.0])
    before = _snapshot(tmp_path)
    with pytest.raises(InputError, match="FBP reconstruction needs at least 4"):
        reconstruct_scan(tmp_path / "two.zarr", tmp_path / "v.zarr", center=7.5)
    with pytest.raises(InputError, match="MLEM reconstruction needs at least 4"):
        reconstruct_scan(tmp_path / "two.zarr", tmp_path / "v.zarr", center=7.5, algorithm="mlem")
    assert _snapshot(tmp_path) == before


def test_centre_kernels_refuse_what_they_cannot_use():
    from tomoflow.recon import find_center, find_center_pair

    sino = np.ones((2, 4, 32), np.float32)
    with pytest.raises(InputError, match="at least 4"):
        find_center(sino, [0.0, 90.0])  # was a ZeroDivisionError
    with pytest.raises(InputError, match="a single projection"):
        find_center_pair(sino[:1], [0.0])


# ----------------------------------------------------------------------------- damaged chunks
def test_a_truncated_chunk_is_a_store_error_naming_the_chunk(tmp_path):
    store = write_scan(tmp_path / "s.zarr", _counts(), HALF_TURN)
    chunk = store.path / "projections" / "c" / "1" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:20])
    s = ScanStore.open(store.path)
    assert np.asarray(s.projections[0:8]).shape == (8, 4, 16)  # the other chunks read
    for read in (
        lambda: s.projections[:, 0:2, :],
        lambda: np.asarray(s.projections),
        lambda: s.projections.get_orthogonal_selection((slice(None), [1, 2], slice(None))),
        lambda: s.projections[9],
    ):
        with pytest.raises(StoreError) as err:
            read()
        msg = str(err.value)
        assert "s.zarr" in msg and "'projections'" in msg and "chunk c/1/0/0 (angle 8-15, row 0-3, col 0-15)" in msg


# ----------------------------------------------------------------------------- simulation parameters
def test_simulation_parameters_are_config_errors():
    from tomoflow.sim import cathode_particle, simulate_multiscale_pair
    from tomoflow.sim.noise import poisson_noise
    from tomoflow.sim.scan import ScanSimulator

    vol = np.zeros((2, 16, 16), np.float32)
    with pytest.raises(ConfigError, match="jitter_px"):
        ScanSimulator(vol, HALF_TURN, jitter_px=1e6)
    with pytest.raises(ConfigError, match="photons"):
        ScanSimulator(vol, HALF_TURN, photons=1e300)
    with pytest.raises(ConfigError, match="photons"):
        poisson_noise(np.ones(3), 1e300)
    with pytest.raises(ConfigError, match="seed must be an integer from 0"):
        ScanSimulator(vol, HALF_TURN, seed=-1)
    with pytest.raises(ConfigError, match="seed"):
        cathode_particle((8, 16, 16), seed=-1)
    with pytest.raises(ConfigError, match="seed"):
        simulate_multiscale_pair(seed=-1)
    assert check_seed("--seed", 2**63 - 1) == 2**63 - 1
    for bad in (-1, 2**63, 1.5, "x", True):
        with pytest.raises(ConfigError, match="--seed"):
            check_seed("--seed", bad)
    assert isinstance(random_generator(np.random.SeedSequence(3)), np.random.Generator)


def test_an_unwritable_folder_names_the_store_not_the_temporary_name(tmp_path, monkeypatch):
    from tomoflow.io import scan_store

    real = os.mkdir

    def refuse(p, *a, **k):
        if ".ingest-" in str(p):
            raise PermissionError(13, "Permission denied", str(p))
        return real(p, *a, **k)

    monkeypatch.setattr(scan_store.os, "mkdir", refuse)
    with pytest.raises(StoreError) as err:
        write_scan(tmp_path / "s.zarr", _counts(), HALF_TURN)
    assert str(err.value) == f"{tmp_path / 's.zarr'}: cannot create the store (permission denied: {tmp_path})"
    assert list(tmp_path.iterdir()) == []
