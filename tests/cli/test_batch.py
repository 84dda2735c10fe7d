"""``tomoflow batch scan-archive`` and ``tomoflow batch check``: a manifest made from an archive folder
(damaged files listed with their reason), and manifests validated before any work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tomoflow.io.dxchange import write_dxchange
from tomoflow.io.manifest import load_manifest


@pytest.fixture
def archive(tmp_path: Path, tooth_h5: Path, txrm_file: Path) -> Path:
    """Three small DXchange files, a folder of TIFFs with its angles, the real tooth and chip files
    (linked), a truncated and an empty HDF5 file, random bytes named .h5, and a note."""
    a = tmp_path / "arch [b]"
    rng = np.random.default_rng(0)
    for name in ("day1/s1.h5", "day1/s2.h5", "day2/s1.h5"):
        (a / name).parent.mkdir(parents=True, exist_ok=True)
        write_dxchange(a / name, rng.uniform(100, 200, (12, 4, 8)).astype(np.float32), np.linspace(0, 180, 12),
                       flats=np.full((2, 4, 8), 250, np.float32), darks=np.zeros((1, 4, 8), np.float32))
    tif = a / "tiff-scan"
    tif.mkdir()
    for i in range(5):
        tifffile.imwrite(tif / f"proj_{i:03d}.tif", rng.integers(0, 1000, (4, 8), dtype=np.uint16))
    (tif / "angles.txt").write_text("0\n45\n90\n135\n180\n")
    (a / "real").mkdir()
    (a / "real" / "tooth.h5").symlink_to(tooth_h5)
    (a / "real" / "chip.txrm").symlink_to(txrm_file)
    data = tooth_h5.read_bytes()
    (a / "broken").mkdir()
    (a / "broken" / "truncated.h5").write_bytes(data[: len(data) // 3])
    (a / "broken" / "empty.h5").write_bytes(b"")
    (a / "broken" / "noise.h5").write_bytes(rng.bytes(2048))
    (a / "README.txt").write_text("scans of the week")
    return a


def test_scan_archive_writes_a_manifest_and_lists_the_unreadable(cli, archive, tmp_path):
    out = tmp_path / "batch.yaml"
    ran = cli("batch", "scan-archive", archive, "-o", out)
    assert ran.code == 0, ran
    text = " ".join(ran.stdout.split())
    for word in ("s1", "s1-2", "s2", "tiff-scan", "tooth", "chip", "181 x 2 x 640", "7 x 256 x 256", "12 x 4 x 8",
                 "5 x 4 x 8", "dxchange", "txrm", "tiff", "not usable (3)", "file is empty (0 bytes)",
                 "not an HDF5 file", "truncated or corrupt", "1 other file(s)", f"scans found in {archive}"):
        assert word in text, (word, ran)
    assert "wrote" in ran.stdout and "6 scan(s), 3 not usable" in text
    m = load_manifest(out)
    assert sorted(s.name for s in m.scans) == ["chip", "s1", "s1-2", "s2", "tiff-scan", "tooth"]
    assert m.scan("tiff-scan").angles == archive / "tiff-scan" / "angles.txt"
    assert m.output == archive.with_name(archive.name + "-processed")

    ran = cli("batch", "check", out)
    assert ran.code == 0, ran
    text = " ".join(ran.stdout.split())
    assert "valid (6 scan(s)" in text and "method=hybrid" in text and "tiff-scan" in text, ran


def test_scan_archive_options(cli, archive, tmp_path):
    out = tmp_path / "m.json"
    ran = cli("batch", "scan-archive", archive / "real", "-o", out, "--output-root", tmp_path / "results",
              "--pipeline", "ingest, recon", "--cluster", "none", "--verify")
    assert ran.code == 0, ran
    doc = json.loads(out.read_text())
    assert doc["output"] == "results" and doc["cluster"] == "none"
    assert [s["stage"] for s in doc["pipeline"]] == ["ingest", "recon"]
    assert [s["name"] for s in doc["scans"]] == ["chip", "tooth"]
    ran = cli("batch", "scan-archive", archive / "real", "-o", out, "--overwrite")
    assert ran.code == 0, ran


def test_scan_archive_refuses_before_walking(cli, one_line_error, archive, tmp_path, unchanged):
    existing = tmp_path / "have.yaml"
    existing.write_text("keep me")
    with unchanged(tmp_path):
        one_line_error(cli("batch", "scan-archive", archive, "-o", existing), "have.yaml", "exists", "--overwrite")
        one_line_error(cli("batch", "scan-archive", archive, "-o", tmp_path / "m.toml"), ".yaml, .yml or .json")
        one_line_error(cli("batch", "scan-archive", archive, "-o", tmp_path / "m.yaml", "--pipeline",
                           "ingest,recon,recover"), "recover needs every scan's paired HR volume")
        one_line_error(cli("batch", "scan-archive", archive, "-o", tmp_path / "m.yaml", "--pipeline", "ingest,fft"),
                       "unknown stage(s) 'fft'")
        one_line_error(cli("batch", "scan-archive", tmp_path / "nope", "-o", tmp_path / "m.yaml"), "not a folder")
        one_line_error(cli("batch", "scan-archive", archive, "-o", tmp_path / "m.yaml", "--cluster", "cloud"),
                       "invalid cluster spec 'cloud'")
    assert existing.read_text() == "keep me"


def test_no_usable_scan_writes_nothing(cli, one_line_error, archive, tmp_path):
    out = tmp_path / "m.yaml"
    ran = cli("batch", "scan-archive", archive / "broken", "-o", out)
    one_line_error(ran, "no usable scan found; nothing written")
    assert "file is empty (0 bytes)" in ran.stdout and not out.exists()


def test_check_rejects_a_bad_manifest_in_one_line(cli, one_line_error, archive, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\noutput: out\npipeline: [ingest, {stage: align, method: magic}]\n"
                   "scans:\n  - {name: ../up, path: x.h5, colour: red}\n")
    line = one_line_error(cli("batch", "check", bad), str(bad), "invalid batch manifest", "pipeline[1].method",
                          "scans[0].name", "scans[0].colour: unknown key")
    assert "magic" in line
    missing = tmp_path / "missing.yaml"
    missing.write_text("version: 1\noutput: out\npipeline: [ingest]\nscans:\n  - {name: a, path: a.h5}\n"
                       "  - {name: b, path: b.h5}\n")
    one_line_error(cli("batch", "check", missing), "2 input(s) of the manifest missing", "scans[0] (a).path",
                   "scans[1] (b).path")
    ran = cli("batch", "check", missing, "--no-files")
    assert ran.code == 0 and "input files not checked" in ran.stdout, ran


def test_check_shows_per_scan_settings(cli, tmp_path, tooth_h5):
    m = tmp_path / "m.yaml"
    m.write_text(f"version: 1\noutput: out\npipeline: [ingest, recon]\nscans:\n"
                 f"  - {{name: tooth, path: {tooth_h5}, center: 296.0, overrides: {{recon: {{algorithm: sirt}}}}}}\n")
    ran = cli("batch", "check", m)
    assert ran.code == 0, ran
    text = " ".join(ran.stdout.split())
    assert "center=296.0" in text and "algorithm=sirt" in text, ran


def test_batch_without_a_command_shows_help(cli):
    ran = cli("batch")
    assert "scan-archive" in ran.output and "check" in ran.output
