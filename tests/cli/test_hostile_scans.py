"""Hostile scans and parameters from the command line: every reproduction of issue 20 (parts 3-4 and
the tracebacks) ends in exit code 2 and one ``error:`` line, with the user's files and the inputs
byte-identical afterwards and nothing left behind; ingest resumes by content, whatever path reaches
the source."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

HALF_TURN = np.linspace(0.0, 180.0, 16, endpoint=False)


# ----------------------------------------------------------------------------- fixtures of this file
def _counts(n: int = 16, rows: int = 4, cols: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (1000.0 * np.exp(-rng.random((n, rows, cols)))).astype(np.float32)


def _dx(path: Path, proj: np.ndarray, theta) -> Path:
    with h5py.File(path, "w") as f:
        f["exchange/data"] = proj
        f["exchange/theta"] = np.asarray(theta, dtype=np.float64)
        f["exchange/data_white"] = np.full((2, *proj.shape[1:]), 1000.0, np.float32)
        f["exchange/data_dark"] = np.zeros((2, *proj.shape[1:]), np.float32)
    return path


def _snapshot(folder: Path) -> dict[str, str]:
    from tomoflow.testing import tree_snapshot

    return tree_snapshot(folder)


@pytest.fixture
def untouched():
    """``with untouched(folder): ...``: every file under ``folder`` byte-identical afterwards, nothing
    created or removed (stricter than ``unchanged``, which compares names)."""
    import contextlib

    @contextlib.contextmanager
    def watch(folder: Path):
        before = _snapshot(folder)
        yield
        after = _snapshot(folder)
        assert after == before, (
            f"created: {sorted(set(after) - set(before))}; removed: "
            f"{sorted(set(before) - set(after))}; changed: "
            f"{sorted(k for k in before if k in after and before[k] != after[k])}"
        )

    return watch


@pytest.fixture
def good_store(tmp_path, cli) -> Path:
    """A small scan store of 16 projections over the half turn (pixel size given: no warning)."""
    src = _dx(tmp_path / "good.h5", _counts(), HALF_TURN)
    store = tmp_path / "good.zarr"
    ran = cli("ingest", src, store, "--pixel-size", "1")
    assert ran.code == 0, ran
    return store


def _resize(store: Path, n: int) -> None:
    """Keep the first ``n`` projections of a store (what an older tomoflow let through)."""
    import zarr

    zarr.open_array(str(store / "projections"), mode="r+").resize((n, 4, 16))
    zarr.open_array(str(store / "angle"), mode="r+").resize((n,))


def _forget_measured_fraction(store: Path) -> None:
    rec = store / "stages" / "ingest" / "zarr.json"
    doc = json.loads(rec.read_text())
    doc["attributes"]["info"] = {}
    rec.write_text(json.dumps(doc))


# ----------------------------------------------------------------------------- wrong results marked complete
@pytest.mark.parametrize(
    ("name", "proj", "theta", "words"),
    [
        ("one", _counts(1), [0.0], ["/exchange/theta", "at least 2 distinct projection directions", "single"]),
        ("zeros", _counts(), np.zeros(16), ["/exchange/theta", "every angle is the same"]),
        ("huge", _counts(), np.linspace(0, 1e30, 16), ["/exchange/theta", "span 1e+30 degrees"]),
        ("negative", -_counts(), HALF_TURN, ["/exchange/data", "projection 0", "no finite line integral"]),
        (
            "nan",
            np.where(np.arange(16)[:, None, None] == 11, np.nan, _counts()).astype(np.float32),
            HALF_TURN,
            ["/exchange/data", "projection 11 contains no finite value"],
        ),
    ],
)
def test_ingest_refuses_what_is_no_scan_and_leaves_nothing(
    cli, one_line_error, untouched, tmp_path, name, proj, theta, words
):
    src = _dx(tmp_path / f"{name}.h5", proj, theta)
    with untouched(tmp_path):
        one_line_error(cli("ingest", src, tmp_path / f"{name}.zarr"), f"{name}.h5", *words)


def test_ingest_of_a_tiff_stack_with_a_bad_file_leaves_nothing(cli, one_line_error, untouched, tmp_path):
    folder = tmp_path / "tifs"
    folder.mkdir()
    for i in range(16):
        tifffile.imwrite(folder / f"p_{i:02d}.tif", np.full((4, 16), 1000 + i, np.uint16))
    tifffile.imwrite(folder / "p_03.tif", np.ones((5, 16), np.uint16))
    with untouched(tmp_path):
        one_line_error(
            cli("ingest", folder, tmp_path / "s.zarr", "--angles", "0,180,11.25"),
            "p_03.tif",
            "image shape (5, 16) differs",
        )
    tifffile.imwrite(folder / "p_03.tif", np.ones((4, 16), np.uint16))
    (folder / "p_14.tif").write_bytes(b"II*\x00" + b"\x00" * 50)
    with untouched(tmp_path):
        one_line_error(
            cli("ingest", folder, tmp_path / "s.zarr", "--angles", "0,180,11.25"), "p_14.tif", "cannot read TIFF"
        )
    tifffile.imwrite(folder / "p_14.tif", np.full((4, 16), 1000, np.uint16))
    assert cli("ingest", folder, tmp_path / "s.zarr", "--angles", "0,180,11.25").code == 0  # fixed: it works


def test_ingest_option_of_another_format(cli, one_line_error, untouched, tmp_path):
    src = _dx(tmp_path / "s.h5", _counts(), HALF_TURN)
    with untouched(tmp_path):
        one_line_error(
            cli("ingest", src, tmp_path / "o.zarr", "--entry", "/nope"),
            "s.h5",
            "--entry",
            "does not apply to dxchange",
            "nexus",
        )
        one_line_error(cli("ingest", src, tmp_path / "o.zarr", "--flats", "f.tif"), "--flats", "tiff or numpy")


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize(
    "command",
    [
        ("recon", "--cluster", "none"),
        ("recon", "--cluster", "none", "--center", "7.5"),
        ("center",),
        ("center", "--method", "pair"),
    ],
)
def test_recon_and_center_refuse_one_or_two_projections(
    cli, one_line_error, untouched, tmp_path, good_store, n, command
):
    _resize(good_store, n)  # a store an older tomoflow let through (n = 2 is ingested today too)
    args = [command[0], good_store, *(["-o", tmp_path / "v.zarr"] if command[0] == "recon" else []), *command[1:]]
    pair = "pair" in command
    words = (
        ["a single projection"]
        if n == 1
        else (["needs two angles 180 degrees apart"] if pair else ["needs at least 4", "give 2"])
    )
    with untouched(tmp_path):
        one_line_error(cli(*args), "good.zarr", *words)


def test_recon_refuses_angles_edited_to_zero_or_stores_without_measurements(
    cli, one_line_error, untouched, tmp_path, good_store
):
    import zarr

    _forget_measured_fraction(good_store)  # as an older tomoflow wrote it: the data is sampled
    zarr.open_array(str(good_store / "projections"), mode="r+")[:] = -5.0
    for extra in ((), ("--center", "7.5")):
        with untouched(tmp_path):
            one_line_error(
                cli("recon", good_store, "-o", tmp_path / "v.zarr", "--cluster", "none", *extra),
                "good.zarr",
                "no finite line integral",
            )
    zarr.open_array(str(good_store / "angle"), mode="r+")[:] = 0.0
    with untouched(tmp_path):
        one_line_error(cli("center", good_store), "every angle is the same")


def test_a_truncated_chunk_is_one_line_naming_the_chunk(cli, one_line_error, untouched, tmp_path, good_store):
    chunk = good_store / "projections" / "c" / "1" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:16])
    with untouched(tmp_path):
        one_line_error(
            cli("recon", good_store, "-o", tmp_path / "v.zarr", "--cluster", "none"),
            "good.zarr",
            "'projections'",
            "chunk c/1/0/0",
            "truncated or corrupt",
        )
        one_line_error(cli("center", good_store), "chunk c/1/0/0")


# ----------------------------------------------------------------------------- tracebacks of parameters
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--jitter", "1e6"), ["--jitter", "below half the detector width"]),
        (("--photons", "1e300"), ["--photons"]),
        (("--photons", "nan"), ["--photons"]),
        (("--seed", "-1"), ["--seed", "from 0 to 2**63 - 1"]),
        (("--size", "100000"), ["--size 100000", "memory"]),
        (("--rows", "100000000"), ["--rows 100000000", "memory"]),
        (("--angles", str(10**12)), ["--angles 1000000000000", "chunks"]),
        (("--angles", str(10**15)), ["--angles 1000000000000000", "PiB"]),
    ],
)
def test_simulate_refuses_bad_parameters(cli, one_line_error, untouched, tmp_path, args, words):
    small = ("--size", "16", "--rows", "2", "--angles", "8")
    given = {a for a in args if a.startswith("--")}
    base = [v for i in range(0, len(small), 2) if small[i] not in given for v in small[i : i + 2]]
    with untouched(tmp_path):
        one_line_error(cli("simulate", tmp_path / "s.zarr", *base, *args), *words)


def test_training_and_pair_commands_refuse_bad_parameters(cli, one_line_error, untouched, tmp_path):
    with untouched(tmp_path):
        one_line_error(cli("simulate-pair", tmp_path / "h.zarr", tmp_path / "l.zarr", "--seed", "-1"), "--seed")
        one_line_error(cli("train-aligner", "--out", tmp_path / "t", "--seed", "-1"), "--seed")
        one_line_error(cli("train-aligner", "--out", tmp_path / "t", "--size", "100000"), "--size 100000")
    ran = cli("simulate-pair", tmp_path / "h.zarr", tmp_path / "l.zarr", "--hr-size", "32", "--lfov-size", "20")
    assert ran.code == 0, ran
    with untouched(tmp_path):
        one_line_error(
            cli(
                "train-recovery",
                tmp_path / "h.zarr",
                tmp_path / "l.zarr",
                "-o",
                tmp_path / "t",
                "--channels",
                "100000,100000",
            ),
            "--channels 100000,100000",
            "memory",
        )


# ----------------------------------------------------------------------------- resume by content
def test_ingest_resumes_by_content_through_any_path(cli, untouched, tmp_path, monkeypatch):
    (tmp_path / "raw").mkdir()
    src = _dx(tmp_path / "raw" / "s.h5", _counts(), HALF_TURN)
    (tmp_path / "linked").symlink_to(tmp_path / "raw")
    assert cli("ingest", src, tmp_path / "in.zarr").code == 0
    monkeypatch.chdir(tmp_path)
    with untouched(tmp_path):
        for args in (
            (tmp_path / "linked" / "s.h5", tmp_path / "in.zarr"),
            ("raw/s.h5", "in.zarr"),
            ("linked/s.h5", "in.zarr"),
        ):
            ran = cli("ingest", *args)
            assert ran.code == 0 and "nothing written" in ran.stdout, ran
        monkeypatch.chdir(tmp_path / "raw")
        ran = cli("ingest", "s.h5", "../in.zarr")
        assert ran.code == 0 and "nothing written" in ran.stdout, ran


def test_a_batch_of_ingests_reruns_through_a_symlinked_folder(cli, untouched, tmp_path):
    (tmp_path / "raw").mkdir()
    for i in range(3):
        _dx(tmp_path / "raw" / f"s{i}.h5", _counts(seed=i), HALF_TURN)
        assert cli("ingest", tmp_path / "raw" / f"s{i}.h5", tmp_path / f"s{i}.zarr").code == 0
    (tmp_path / "mirror").symlink_to(tmp_path / "raw")
    with untouched(tmp_path):
        for i in range(3):
            ran = cli("ingest", tmp_path / "mirror" / f"s{i}.h5", tmp_path / f"s{i}.zarr")
            assert ran.code == 0 and "nothing written" in ran.stdout, ran


# ----------------------------------------------------------------------------- leftovers
def _mark_incomplete(store: Path) -> None:
    rec = store / "stages" / "ingest" / "zarr.json"
    doc = json.loads(rec.read_text())
    doc["attributes"].update(complete=False, output_id=None)
    rec.write_text(json.dumps(doc))


def test_a_not_complete_ingest_store_is_finished_or_replaced_by_a_rerun(cli, one_line_error, untouched, tmp_path):
    a = _dx(tmp_path / "a.h5", _counts(seed=1), HALF_TURN)
    store = tmp_path / "s.zarr"
    assert cli("ingest", a, store).code == 0
    _mark_incomplete(store)  # what an older tomoflow left after a failure part way
    ran = cli("ingest", a, store)  # the same command finishes it
    assert ran.code == 0 and "wrote" in ran.stdout, ran
    _mark_incomplete(store)
    b = _dx(tmp_path / "b.h5", _counts(seed=2), HALF_TURN)  # a corrected source: nothing complete is lost
    assert cli("ingest", b, store).code == 0
    from tomoflow.io.scan_store import ScanStore

    assert ScanStore.open(store).attrs.source.path == str(b)
    with untouched(tmp_path):  # a complete store of other data is still refused
        one_line_error(cli("ingest", a, store), "s.zarr", "made from other inputs or parameters", "--overwrite")


def test_a_failed_ingest_leaves_nothing_and_the_fixed_rerun_needs_no_overwrite(
    cli, one_line_error, untouched, tmp_path
):
    bad = _counts()
    bad[9] = np.nan
    src = _dx(tmp_path / "s.h5", bad, HALF_TURN)
    with untouched(tmp_path):
        one_line_error(cli("ingest", src, tmp_path / "out" / "s.zarr"), "projection 9")  # no 'out' folder left
    _dx(src, _counts(), HALF_TURN)
    ran = cli("ingest", src, tmp_path / "out" / "s.zarr")
    assert ran.code == 0, ran
