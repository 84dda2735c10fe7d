"""``tomoflow batch scan-archive`` and ``tomoflow batch check``: a manifest made from an archive folder
(damaged files listed with their reason), and manifests validated before any work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from tomoflow.batch import load_manifest
from tomoflow.io.dxchange import write_dxchange


@pytest.fixture
def archive(tmp_path: Path, tooth_h5: Path, txrm_file: Path) -> Path:
    """Three small DXchange files, a folder of TIFFs with its angles, the real tooth and chip files
    (linked), a truncated and an empty HDF5 file, random bytes named .h5, and a note."""
    a = tmp_path / "arch [b]"
    rng = np.random.default_rng(0)
    for name in ("day1/s1.h5", "day1/s2.h5", "day2/s1.h5"):
        (a / name).parent.mkdir(parents=True, exist_ok=True)
        write_dxchange(
            a / name,
            rng.uniform(100, 200, (12, 4, 8)).astype(np.float32),
            np.linspace(0, 180, 12),
            flats=np.full((2, 4, 8), 250, np.float32),
            darks=np.zeros((1, 4, 8), np.float32),
        )
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
    for word in (
        "s1",
        "s1-2",
        "s2",
        "tiff-scan",
        "tooth",
        "chip",
        "181 x 2 x 640",
        "7 x 256 x 256",
        "12 x 4 x 8",
        "5 x 4 x 8",
        "dxchange",
        "txrm",
        "tiff",
        "not usable (3)",
        "file is empty (0 bytes)",
        "not an HDF5 file",
        "truncated or corrupt",
        "1 other file(s)",
        f"scans found in {archive}",
    ):
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
    ran = cli(
        "batch",
        "scan-archive",
        archive / "real",
        "-o",
        out,
        "--output-root",
        tmp_path / "results",
        "--pipeline",
        "ingest, recon",
        "--cluster",
        "none",
        "--verify",
    )
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
        one_line_error(
            cli("batch", "scan-archive", archive, "-o", existing), "have.yaml", "exists", "not written by tomoflow"
        )
        one_line_error(cli("batch", "scan-archive", archive, "-o", tmp_path / "m.toml"), ".yaml, .yml or .json")
        one_line_error(
            cli("batch", "scan-archive", archive, "-o", tmp_path / "m.yaml", "--pipeline", "ingest,recon,recover"),
            "recover needs every scan's paired HR volume",
        )
        one_line_error(
            cli("batch", "scan-archive", archive, "-o", tmp_path / "m.yaml", "--pipeline", "ingest,fft"),
            "unknown stage(s) 'fft'",
        )
        one_line_error(cli("batch", "scan-archive", tmp_path / "nope", "-o", tmp_path / "m.yaml"), "not a folder")
        one_line_error(
            cli("batch", "scan-archive", archive, "-o", tmp_path / "m.yaml", "--cluster", "cloud"),
            "invalid cluster spec 'cloud'",
        )
    assert existing.read_text() == "keep me"


def test_no_usable_scan_writes_nothing(cli, one_line_error, archive, tmp_path):
    out = tmp_path / "m.yaml"
    ran = cli("batch", "scan-archive", archive / "broken", "-o", out)
    one_line_error(ran, "no usable scan found; nothing written")
    assert "file is empty (0 bytes)" in ran.stdout and not out.exists()


def test_check_rejects_a_bad_manifest_in_one_line(cli, one_line_error, archive, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\noutput: out\npipeline: [ingest, {stage: align, method: magic}]\n"
        "scans:\n  - {name: ../up, path: x.h5, colour: red}\n"
    )
    line = one_line_error(
        cli("batch", "check", bad),
        str(bad),
        "invalid batch manifest",
        "pipeline[1].method",
        "scans[0].name",
        "scans[0].colour: unknown key",
    )
    assert "magic" in line
    missing = tmp_path / "missing.yaml"
    missing.write_text(
        "version: 1\noutput: out\npipeline: [ingest]\nscans:\n  - {name: a, path: a.h5}\n  - {name: b, path: b.h5}\n"
    )
    one_line_error(
        cli("batch", "check", missing), "2 input(s) of the manifest missing", "scans[0] (a).path", "scans[1] (b).path"
    )
    ran = cli("batch", "check", missing, "--no-files")
    assert ran.code == 0 and "input files not checked" in ran.stdout, ran


def test_check_shows_per_scan_settings(cli, tmp_path, tooth_h5):
    m = tmp_path / "m.yaml"
    m.write_text(
        f"version: 1\noutput: out\npipeline: [ingest, recon]\nscans:\n"
        f"  - {{name: tooth, path: {tooth_h5}, center: 296.0, overrides: {{recon: {{algorithm: sirt}}}}}}\n"
    )
    ran = cli("batch", "check", m)
    assert ran.code == 0, ran
    text = " ".join(ran.stdout.split())
    assert "center=296.0" in text and "algorithm=sirt" in text, ran


def test_batch_without_a_command_shows_help(cli):
    ran = cli("batch")
    assert "scan-archive" in ran.output and "check" in ran.output


# ----------------------------------------------------------------------------- batch run
_ANGLES = np.linspace(0, 180, 32, endpoint=False)


def _small_archive(folder: Path, good: tuple[str, ...], bad: tuple[str, ...] = ()) -> None:
    """Small DXchange scans (32 angles of 16 x 32 px) under folder/raw; the bad ones truncated."""
    from tomoflow.testing import write_small_dxchange

    (folder / "raw").mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(good + bad):
        path = write_small_dxchange(folder / "raw" / f"{name}.h5", i, angles_deg=_ANGLES)
        if name in bad:
            path.write_bytes(path.read_bytes()[:4000])


def _manifest(folder: Path, output: str, names: tuple[str, ...], *, slow: tuple[str, ...] = ()) -> Path:
    """A manifest ingest -> recon of folder/raw/<name>.h5; ``slow`` scans use SIRT (about a second each)."""
    lines = [
        f"  - {{name: {n}, path: raw/{n}.h5, pixel_size_um: 0.5"
        + (", overrides: {recon: {algorithm: sirt, iterations: 40}}" if n in slow else "")
        + "}"
        for n in names
    ]
    path = folder / f"{output}.yaml"
    path.write_text(
        f"version: 1\noutput: {output}\ncluster: none\npipeline: [ingest, recon]\nscans:\n" + "\n".join(lines) + "\n"
    )
    return path


def test_run_rejects_bad_manifests_before_any_work(cli, one_line_error, tmp_path, unchanged):
    _small_archive(tmp_path, ("a",))
    head = "version: 1\noutput: out\npipeline: [ingest, recon]\nscans:\n"
    cases = {
        "unknown.yaml": (head + "  - {name: a, path: raw/a.h5, colour: red}\n", ("scans[0].colour: unknown key",)),
        "missing.yaml": (
            head + "  - {name: a, path: raw/a.h5}\n  - {name: b, path: raw/b.h5}\n",
            ("1 input(s) of the manifest missing", "scans[1] (b).path", "b.h5"),
        ),
        "escape.yaml": (head + "  - {name: ../up, path: raw/a.h5}\n", ("scans[0].name", "not a safe scan name")),
        "absolute.yaml": (head + "  - {name: /etc, path: raw/a.h5}\n", ("scans[0].name",)),
        "reserved.yaml": (head + "  - {name: thumbnails, path: raw/a.h5}\n", ("taken by the batch report",)),
        "top.yaml": (
            head.replace("version: 1", "version: 1\nworkers: 9") + "  - {name: a, path: raw/a.h5}\n",
            ("workers: unknown key",),
        ),
    }
    for name, (text, _) in cases.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "ok.yaml").write_text(head + "  - {name: a, path: raw/a.h5}\n")
    with unchanged(tmp_path):
        for name, (_, words) in cases.items():
            one_line_error(cli("batch", "run", tmp_path / name), *words)
        one_line_error(cli("batch", "run", tmp_path / "unknown.yaml", "--cluster", "cloud"), "unknown key")
        one_line_error(cli("batch", "run", tmp_path / "ok.yaml", "--cluster", "cloud"), "invalid cluster spec 'cloud'")
        one_line_error(cli("batch", "run", tmp_path / "ok.yaml", "--max-in-flight", "0"), "--max-in-flight")
        one_line_error(cli("batch", "run", tmp_path / "nope.yaml"), "no such manifest file")
    assert not (tmp_path / "out").exists()


def test_run_without_a_cluster_reports_failed_scans_and_exits_1(cli, tmp_path):
    _small_archive(tmp_path, ("a", "b"), bad=("broken",))
    m = _manifest(tmp_path, "out", ("a", "broken", "b"))
    ran = cli("batch", "run", m)
    assert ran.code == 1, ran
    lines = ran.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: 1 of 3 scan(s) failed (broken)"), ran
    text = " ".join(ran.stdout.split())
    assert "failed broken [ingest]:" in text and "truncated or corrupt" in text, ran
    assert "2 complete, 0 already complete (skipped), 1 failed" in text and "batch-report.html" in text, ran
    assert "Dask dashboard" not in text  # cluster: none
    doc = json.loads((tmp_path / "out" / "batch-report.json").read_text())
    assert [s["status"] for s in doc["scans"]] == ["complete", "failed", "complete"]
    ran = cli("batch", "run", m)  # again: nothing to do but the broken scan
    assert ran.code == 1 and "0 complete, 2 already complete (skipped), 1 failed" in " ".join(ran.stdout.split())
    _manifest(tmp_path, "out", ("a", "b"))
    ran = cli("batch", "run", m)
    assert ran.code == 0 and ran.stderr == "", ran


def _store_sums(root: Path) -> dict[str, str]:
    import hashlib

    import zarr

    out = {}
    for store in sorted(root.glob("*/*.zarr")):

        def walk(group, prefix):
            for name, arr in group.arrays():
                out[prefix + name] = hashlib.sha256(np.ascontiguousarray(arr[...]).tobytes()).hexdigest()
            for name, sub in group.groups():
                walk(sub, f"{prefix}{name}/")

        walk(zarr.open_group(str(store), mode="r"), f"{store.relative_to(root)}/")
    return out


@pytest.mark.slow
def test_killed_runner_restarts_where_it_stopped(tmp_path):
    """``tomoflow batch run`` against a running scheduler, SIGKILLed once the first scan is complete, then
    started again: the complete scans are skipped (their stores untouched), the rest complete, and every
    output equals an undisturbed run's."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tomoflow.batch import run_batch
    from tomoflow.cluster import connect
    from tomoflow.io.stages import StageLog

    names = ("s1", "s2", "s3", "s4")
    _small_archive(tmp_path, names)
    slow = names[1:]
    with connect("local", processes=True, n_workers=2, threads_per_worker=1, dashboard_address=":0") as client:
        ref = load_manifest(_manifest(tmp_path, "reference", names, slow=slow))
        assert run_batch(ref, client=client).ok
        expected = _store_sums(tmp_path / "reference")

        m = _manifest(tmp_path, "out", names, slow=slow)
        out = tmp_path / "out"
        cmd = [
            sys.executable,
            "-m",
            "tomoflow.cli",
            "batch",
            "run",
            str(m),
            "--cluster",
            client.scheduler.address,
            "--max-in-flight",
            "1",
        ]
        env = {**os.environ, "COLUMNS": "100"}
        runner = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 120
            while not (
                StageLog(out / "s1" / "volume.zarr", "recon").exists
                and StageLog(out / "s1" / "volume.zarr", "recon").record.complete
            ):
                assert runner.poll() is None, runner.communicate()[0]
                assert time.monotonic() < deadline, "the first scan never completed"
                time.sleep(0.02)
        finally:
            runner.send_signal(signal.SIGKILL)
            runner.communicate()
        done = [
            n
            for n in names
            if StageLog(out / n / "volume.zarr", "recon").exists
            and StageLog(out / n / "volume.zarr", "recon").record.complete
        ]
        assert "s1" in done and len(done) < len(names), done
        before = {str(p): p.stat().st_mtime_ns for n in done for p in (out / n).glob("*.zarr/**/*") if p.is_file()}

        again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "Dask dashboard" in again.stdout
    doc = json.loads((out / "batch-report.json").read_text())
    status = {s["name"]: s["status"] for s in doc["scans"]}
    assert all(status[n] == "skipped-complete" for n in done) and set(status.values()) <= {
        "complete",
        "skipped-complete",
    }, status
    assert {str(p): p.stat().st_mtime_ns for n in done for p in (out / n).glob("*.zarr/**/*") if p.is_file()} == before
    assert _store_sums(out) == expected
