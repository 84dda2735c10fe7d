"""Finding the raw scans of an archive folder: recognised formats, damaged files listed with their
reason (never aborting the walk), names, and the manifest made of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from tomoflow.batch import load_manifest, save_manifest, scan_archive
from tomoflow.errors import ConfigError, InputError
from tomoflow.io.dxchange import write_dxchange


def _dx(path: Path, n: int = 10, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_dxchange(
        path,
        rng.uniform(100, 200, (n, 4, 8)).astype(np.float32),
        np.linspace(0, 180, n),
        flats=np.full((2, 4, 8), 250, np.float32),
        darks=np.zeros((1, 4, 8), np.float32),
    )


def _tiffs(folder: Path, n: int = 6, prefix: str = "proj_", angles: str | None = "angles.txt") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        tifffile.imwrite(folder / f"{prefix}{i}.tif", rng.integers(0, 1000, (4, 8), dtype=np.uint16))
    if angles:
        (folder / angles).write_text("\n".join(f"{a:g}" for a in np.linspace(0, 180, n)) + "\n")
    return folder


@pytest.fixture
def archive(tmp_path: Path, make_nxtomo, truncate, tooth_h5: Path, txrm_file: Path) -> Path:
    a = tmp_path / "archive"
    _dx(a / "run1" / "scan.h5")
    _dx(a / "run2" / "scan.h5", seed=1)
    (a / "nexus").mkdir(parents=True)
    make_nxtomo("archive/nexus/one.nxs")
    make_nxtomo("archive/nexus/two.nxs", extra_entry="entry2")
    stack = _tiffs(a / "stackA")
    for i in range(2):
        tifffile.imwrite(stack / f"flat_{i}.tif", np.full((4, 8), 1000, np.uint16))
    tifffile.imwrite(stack / "dark_0.tif", np.zeros((4, 8), np.uint16))
    _tiffs(a / "sample2" / "proj", angles=None)
    (a / "sample2" / "theta.txt").write_text("\n".join(map(str, range(6))))
    _tiffs(a / "sample2" / "flats", n=2, prefix="f", angles=None)
    _tiffs(a / "no-angles", angles=None)
    (a / "real").mkdir()
    (a / "real" / "tooth.h5").symlink_to(tooth_h5)
    (a / "real" / "chip.txrm").symlink_to(txrm_file)
    (a / "bad").mkdir()
    (a / "bad" / "truncated.h5").write_bytes(truncate(tooth_h5, 0.5).read_bytes())
    (a / "bad" / "empty.h5").write_bytes(b"")
    (a / "bad" / "random.h5").write_bytes(np.random.default_rng(2).bytes(4096))
    (a / "bad" / "cut.txrm").write_bytes(txrm_file.read_bytes()[:300_000])
    (a / "bad" / "no-theta.h5").write_bytes((a / "run1" / "scan.h5").read_bytes())
    import h5py

    with h5py.File(a / "bad" / "no-theta.h5", "r+") as f:
        del f["/exchange/theta"]
    (a / "notes").mkdir()
    (a / "notes" / "readme.txt").write_text("not a scan")
    (a / "notes" / "plot.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (a / ".hidden.h5").write_bytes(b"")
    (a / "old.zarr").mkdir()
    (a / "old.zarr" / "zarr.json").write_text("{}")
    return a


def test_scan_archive_finds_scans_and_lists_the_unreadable(archive: Path, tmp_path: Path):
    res = scan_archive(archive)
    by_name = {f.name: f for f in res.scans}
    assert set(by_name) == {"scan", "scan-2", "one", "two-entry", "two-entry2", "stackA", "sample2", "tooth", "chip"}
    assert by_name["scan"].path == archive / "run1" / "scan.h5" and by_name["scan-2"].path.parent.name == "run2"
    assert by_name["tooth"].format == "dxchange" and by_name["tooth"].shape == (181, 2, 640)
    assert by_name["chip"].format == "txrm" and by_name["chip"].shape == (7, 256, 256)
    assert by_name["one"].format == "nexus" and by_name["one"].shape == (10, 4, 6) and by_name["one"].entry is None
    assert by_name["two-entry2"].entry == "/entry2"
    a = by_name["stackA"]
    assert a.format == "tiff" and a.shape == (6, 4, 8) and a.angles == archive / "stackA" / "angles.txt"
    assert a.flats == archive / "stackA" / "flat_*" and a.darks == archive / "stackA" / "dark_0.tif"
    s2 = by_name["sample2"]  # sibling layout: proj/ + flats/ + theta.txt in the parent
    assert s2.path == archive / "sample2" / "proj" and s2.flats == archive / "sample2" / "flats"
    assert s2.angles == archive / "sample2" / "theta.txt"

    reasons = {u.path.relative_to(archive).as_posix(): u.reason for u in res.unreadable}
    assert set(reasons) == {
        "bad/truncated.h5",
        "bad/empty.h5",
        "bad/random.h5",
        "bad/cut.txrm",
        "bad/no-theta.h5",
        "no-angles",
    }
    assert "truncated or corrupt" in reasons["bad/truncated.h5"]
    assert reasons["bad/empty.h5"] == "file is empty (0 bytes)"
    assert "not an HDF5 file" in reasons["bad/random.h5"]
    assert "[/exchange/theta] no rotation angles" in reasons["bad/no-theta.h5"]
    assert "without rotation angles" in reasons["no-angles"] and "angles.txt" in reasons["no-angles"]
    assert reasons["bad/cut.txrm"]
    skipped = {p.relative_to(archive).as_posix() for p in res.skipped}
    assert {"notes/readme.txt", "notes/plot.png", ".hidden.h5", "old.zarr"} <= skipped

    m = res.manifest
    assert m is not None and [s.name for s in m.scans] == [f.name for f in res.scans]
    assert m.output == tmp_path / "archive-processed"
    assert [s.stage for s in m.pipeline] == ["ingest", "align", "recon"]
    p = save_manifest(m, archive / "manifest.yaml")
    assert load_manifest(p) == m
    assert "path: run1/scan.h5" in p.read_text()


def test_the_full_readers_accept_every_scan_the_probe_accepts(archive: Path):
    quick = scan_archive(archive)
    full = scan_archive(archive, verify=True)
    assert [f.name for f in full.scans] == [f.name for f in quick.scans]
    assert [u.path for u in full.unreadable] == [u.path for u in quick.unreadable]


def test_scan_manifest_ingests(archive: Path, tmp_path: Path):
    """The entries the archive makes are what ingest needs (TIFF angles, flats and darks included)."""
    from tomoflow.io.ingest import ingest

    m = scan_archive(archive).manifest
    stores = {}
    for name in ("stackA", "sample2", "two-entry2"):
        scan = m.scan(name)
        stores[name] = ingest(str(scan.path), tmp_path / f"{name}.zarr", **scan.ingest_kwargs())
    assert stores["stackA"].shape == (6, 4, 8) and stores["stackA"].flats.shape[0] == 2
    assert stores["stackA"].darks.shape[0] == 1
    assert stores["sample2"].shape == (6, 4, 8) and stores["sample2"].flats.shape[0] == 2
    assert stores["two-entry2"].shape == (10, 4, 6)


def test_names_are_safe_and_unique(tmp_path: Path):
    a = tmp_path / "arch ive"
    _dx(a / "x" / "my scan [1].h5")
    _dx(a / "y" / "My Scan [1].h5")
    _dx(a / "..dots.h5")  # hidden: skipped
    _dx(a / "z" / "--.h5")
    res = scan_archive(a, output=tmp_path / "out", pipeline=["ingest"])
    assert [f.name for f in res.scans] == ["my-scan-1-", "My-Scan-1--2", "scan"]
    assert res.manifest.output == tmp_path / "out" and [s.stage for s in res.manifest.pipeline] == ["ingest"]


def test_a_tiff_folder_at_the_root_and_a_folder_of_generic_name(tmp_path: Path):
    root = _tiffs(tmp_path / "tomo_0042")
    res = scan_archive(root)
    assert [f.name for f in res.scans] == ["tomo_0042"]
    sample = tmp_path / "beads"
    _tiffs(sample / "proj")
    assert [f.name for f in scan_archive(sample).scans] == ["beads"]


def test_angle_count_mismatch_and_frames_of_another_shape(tmp_path: Path):
    a = tmp_path / "a"
    _tiffs(a / "s1")
    (a / "s1" / "angles.txt").write_text("0\n90\n")
    _tiffs(a / "s2")
    tifffile.imwrite(a / "s2" / "flat.tif", np.ones((5, 8), np.uint16))
    res = scan_archive(a)
    assert res.manifest is None and not res.scans
    reasons = {u.path.name: u.reason for u in res.unreadable}
    assert "angles.txt [angles]: angle count mismatch: 2 angles for 6 projections" in reasons["s1"]
    assert "flats of (5, 8) px" in reasons["s2"]


def test_output_inside_the_archive_is_not_walked(tmp_path: Path):
    a = tmp_path / "a"
    _dx(a / "s.h5")
    _dx(a / "processed" / "s" / "other.h5")
    res = scan_archive(a, output=a / "processed")
    assert [f.name for f in res.scans] == ["s"] and a / "processed" in res.skipped


def test_bad_arguments(tmp_path: Path):
    with pytest.raises(InputError, match="not a folder"):
        scan_archive(tmp_path / "nope")
    _dx(tmp_path / "a" / "s.h5")
    with pytest.raises(ConfigError, match="recover needs every scan's paired HR volume"):
        scan_archive(tmp_path / "a", pipeline=["ingest", "recon", "recover"])
    with pytest.raises(ConfigError, match="unknown stage"):
        scan_archive(tmp_path / "a", pipeline=["ingest", "denoise"])
    with pytest.raises(ConfigError, match=r"(?s)would be invalid.*cluster"):
        scan_archive(tmp_path / "a", cluster="k8s")
    with pytest.raises(ConfigError, match="output: is inside the input"):
        scan_archive(tmp_path / "a", output=tmp_path / "a" / "s.h5" / "x")
