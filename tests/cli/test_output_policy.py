"""One output policy for every file tomoflow writes (issue 20): JSON, PNG, model files, manifests and
schemas never land in a store, never replace an input or a file tomoflow did not write, replace a file
tomoflow wrote only with --overwrite (or leave it as it is when the rerun would write the same thing),
and --overwrite replaces a store only when the same stage made it. Every refusal comes before any work:
exit code 2, one line, the user's files and the inputs byte-identical afterwards, nothing left behind."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tomoflow.io.synthetic import write_multiscale_pair
from tomoflow.sim import simulate_multiscale_pair


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under ``root`` (or ``root`` itself) by relative path -> sha256 of its bytes."""
    root = Path(root)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def pair(tmp_path_factory, cli):
    """A small HR/LFOV pair, its registration JSON and a tiny trained U-Net, made once (read only)."""
    torch = pytest.importorskip("torch")
    from tomoflow.recover import build_unet
    from tomoflow.recover.unet import UNetConfig
    from tomoflow.train.files import save_unet

    d = tmp_path_factory.mktemp("policy")
    p = simulate_multiscale_pair(hr_shape=(48, 48, 48), lfov_shape=(26, 26, 26), seed=2)
    hr, lf = write_multiscale_pair(p, d / "hr.zarr", d / "lfov.zarr")
    ran = cli("register", hr, lf, "-o", d / "reg.json")
    assert ran.code == 0, ran
    torch.manual_seed(0)
    cfg = UNetConfig(channels=(4, 8))
    (d / "model").mkdir()
    save_unet(build_unet(config=cfg), cfg, d / "model" / "recover_unet.safetensors", card={"name": "test"})
    return d


@pytest.fixture
def work(pair, tmp_path):
    """A private copy of the pair folder (tests may try to damage it)."""
    dst = tmp_path / "w"
    shutil.copytree(pair, dst)
    return dst


def _snapshot(*paths: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in paths:
        out.update(tree_digest(p))
    return out


# ----------------------------------------------------------------------------- data loss
@pytest.mark.parametrize("target", ["lfov.zarr/zarr.json", "hr.zarr/0/zarr.json", "lfov.zarr/notes.json"])
def test_register_never_writes_into_a_store(cli, one_line_error, work, target):
    before = _snapshot(work)
    one_line_error(cli("register", work / "hr.zarr", work / "lfov.zarr", "-o", work / target), "tomoflow store")
    assert _snapshot(work) == before


def test_register_never_replaces_a_user_file(cli, one_line_error, work):
    (work / "notes.txt").write_text("years of work")
    (work / "notes.json").write_text('{"mine": 1}')
    before = _snapshot(work)
    one_line_error(cli("register", work / "hr.zarr", work / "lfov.zarr", "-o", work / "notes.txt"), ".json")
    for flag in ([], ["--overwrite"]):
        one_line_error(
            cli("register", work / "hr.zarr", work / "lfov.zarr", "-o", work / "notes.json", *flag),
            "notes.json",
            "not written by tomoflow",
        )
    one_line_error(
        cli("register", work / "hr.zarr", work / "lfov.zarr", "-o", work / "model" / "recover_unet.safetensors"),
        ".json",
    )
    assert _snapshot(work) == before


def test_a_file_tomoflow_wrote_is_kept_when_the_same_and_replaced_only_with_overwrite(cli, one_line_error, work):
    reg = work / "reg.json"
    stamp = reg.stat().st_mtime_ns
    ran = cli("register", work / "hr.zarr", work / "lfov.zarr", "-o", reg)  # the same command again
    assert ran.code == 0 and "kept" in ran.stdout, ran
    assert reg.stat().st_mtime_ns == stamp
    before = reg.read_bytes()
    one_line_error(
        cli("register", work / "hr.zarr", work / "lfov.zarr", "-o", reg, "--dof", "6"),
        "other inputs or parameters",
        "--overwrite",
    )
    assert reg.read_bytes() == before
    ran = cli("register", work / "hr.zarr", work / "lfov.zarr", "-o", reg, "--dof", "6", "--overwrite")
    assert ran.code == 0 and reg.read_bytes() != before, ran
    assert not [p for p in work.iterdir() if "tomoflow-" in p.name]  # no temporary file left


def test_pores_json_never_destroys_a_store_or_a_user_file(cli, one_line_error, work):
    (work / "mine.json").write_text("{}")
    before = _snapshot(work)
    one_line_error(
        cli("pores", work / "hr.zarr", "--threshold", "0.5", "--json", work / "hr.zarr" / "zarr.json"), "tomoflow store"
    )
    one_line_error(
        cli("pores", work / "hr.zarr", "--threshold", "0.5", "--json", work / "mine.json"), "not written by tomoflow"
    )
    assert _snapshot(work) == before


def test_resample_never_replaces_the_hr_grid_it_reads(cli, one_line_error, work):
    before = _snapshot(work)
    one_line_error(
        cli(
            "resample",
            work / "lfov.zarr",
            "-o",
            work / "hr.zarr",
            "-r",
            work / "reg.json",
            "--hr",
            work / "hr.zarr",
            "--overwrite",
        ),
        "input",
    )
    assert _snapshot(work) == before


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_recover_never_replaces_a_volume_another_stage_made(cli, one_line_error, work, overwrite):
    before = _snapshot(work)
    one_line_error(
        cli(
            "recover",
            work / "lfov.zarr",
            "-m",
            work / "model" / "recover_unet.safetensors",
            "-o",
            work / "hr.zarr",
            "--cluster",
            "none",
            *overwrite,
        ),
        "made by tomoflow recon",
        "not by recover",
    )
    assert _snapshot(work) == before


def test_train_recovery_never_replaces_a_user_file_or_writes_into_a_store(cli, one_line_error, work):
    ud = work / "ud"
    ud.mkdir()
    (ud / "recover_unet.json").write_text("x")
    before = _snapshot(work)
    for flag in ([], ["--overwrite"]):
        one_line_error(
            cli(
                "train-recovery",
                work / "hr.zarr",
                work / "lfov.zarr",
                "-r",
                work / "reg.json",
                "-o",
                ud,
                "--time-limit",
                "3",
                *flag,
            ),
            "recover_unet.json",
            "not written by tomoflow",
        )
    one_line_error(
        cli(
            "train-recovery",
            work / "hr.zarr",
            work / "lfov.zarr",
            "-r",
            work / "reg.json",
            "-o",
            work / "hr.zarr",
            "--time-limit",
            "3",
        ),
        "tomoflow store",
    )
    assert _snapshot(work) == before


def test_train_aligner_never_replaces_a_user_file(cli, one_line_error, work):
    ud = work / "ud"
    ud.mkdir()
    (ud / "jitter_resnet.json").write_text("x")
    before = _snapshot(work)
    one_line_error(
        cli("train-aligner", "-o", ud, "--n-scans", "2", "--size", "32", "--n-angles", "8", "--epochs", "1"),
        "jitter_resnet.json",
        "not written by tomoflow",
    )
    one_line_error(cli("train-aligner", "-o", work / "hr.zarr", "--n-scans", "2", "--size", "32"), "tomoflow store")
    assert _snapshot(work) == before


# ----------------------------------------------------------------------------- --png and scan stores
@pytest.fixture
def scans(tmp_path, cli):
    """A simulated scan store and a copy of it (a raw scan store: ingest made it)."""
    sc = tmp_path / "sc.zarr"
    ran = cli("simulate", sc, "--size", "32", "--rows", "4", "--angles", "24", "--jitter", "0")
    assert ran.code == 0, ran
    raw = tmp_path / "raw.zarr"
    shutil.copytree(sc, raw)
    return sc, raw


def test_png_never_replaces_a_user_file_and_a_wrong_suffix_fails_before_work(cli, one_line_error, scans, work):
    sc, raw = scans
    notes = sc.parent / "notes.png"
    notes.write_bytes(b"my picture")
    vol = sc.parent / "v.zarr"
    cases = [
        ("recon", sc, "-o", vol, "--cluster", "none", "--center", "15.5"),
        ("correct", sc, "-o", vol, "--cluster", "none", "--method", "phase", "--horizontal-only"),
        ("register", work / "hr.zarr", work / "lfov.zarr", "-o", sc.parent / "r.json"),
        ("pores", work / "hr.zarr", "--threshold", "0.5"),
    ]
    before = _snapshot(sc.parent)
    for args in cases:
        one_line_error(cli(*args, "--png", notes), "notes.png", "not written by tomoflow")
        one_line_error(cli(*args, "--png", sc.parent / "x.json"), "--png", ".png")
    assert _snapshot(sc.parent) == before  # nothing written: refused before any work


def test_png_of_a_rerun_is_kept_and_replaced_only_with_overwrite(cli, one_line_error, scans):
    from tomoflow.io.output import read_stamp

    sc, _ = scans
    vol, png = sc.parent / "v.zarr", sc.parent / "v.png"
    ran = cli("recon", sc, "-o", vol, "--cluster", "none", "--center", "15.5", "--png", png)
    assert ran.code == 0 and read_stamp(png)["kind"] == "picture", ran
    first = png.read_bytes()
    assert cli("recon", sc, "-o", vol, "--cluster", "none", "--center", "15.5", "--png", png).code == 0
    assert png.read_bytes() == first
    one_line_error(
        cli("recon", sc, "-o", sc.parent / "v2.zarr", "--cluster", "none", "--center", "15", "--png", png),
        "v.png",
        "--overwrite",
    )
    assert not (sc.parent / "v2.zarr").exists()


def test_align_overwrite_never_turns_a_raw_scan_into_an_aligned_one(cli, one_line_error, scans):
    sc, raw = scans
    before = _snapshot(raw)
    one_line_error(
        cli("align", sc, "-o", raw, "--overwrite", "--cluster", "none", "--method", "phase"),
        "made by tomoflow ingest",
        "not by align",
    )
    assert _snapshot(raw) == before


def test_scan_archive_overwrite_never_replaces_a_user_file(cli, one_line_error, tmp_path, tooth_h5):
    arch = tmp_path / "arch"
    arch.mkdir()
    shutil.copy(tooth_h5, arch / "tooth.h5")
    mine = tmp_path / "mine.yaml"
    mine.write_text("my: notes\n")
    one_line_error(cli("batch", "scan-archive", arch, "-o", mine, "--overwrite"), "not written by tomoflow")
    assert mine.read_text() == "my: notes\n"
    out = tmp_path / "batch.yaml"
    assert cli("batch", "scan-archive", arch, "-o", out).code == 0
    one_line_error(cli("batch", "scan-archive", arch, "-o", out), "--overwrite")
    assert cli("batch", "scan-archive", arch, "-o", out, "--overwrite").code == 0
    from tomoflow.batch import load_manifest

    assert len(load_manifest(out).scans) == 1  # the stamp is no manifest field


def test_schemas_never_replace_a_user_file(cli, one_line_error, tmp_path):
    d = tmp_path / "s"
    assert cli("schema", "--out", d).code == 0
    assert cli("schema", "--out", d).code == 0  # tomoflow's own schemas: rewritten
    name = sorted(d.iterdir())[0]
    name.write_text("{}")
    one_line_error(cli("schema", "--out", d), name.name, "not written by tomoflow")
    assert name.read_text() == "{}"


# ----------------------------------------------------------------------------- the API
def test_plan_and_write_file_api(tmp_path):
    from tomoflow.errors import ConfigError, StoreError
    from tomoflow.io.output import plan_file, read_stamp, write_file, write_json

    p = tmp_path / "doc.json"
    plan = plan_file(p, kind="document", fingerprint="a")
    assert plan.action == "create" and not p.exists()  # planning writes nothing
    write_json(plan, {"x": np.float64(1.5).item()})
    stamp = read_stamp(p)
    assert (stamp["kind"], stamp["fingerprint"]) == ("document", "a") and len(stamp["body"]) == 64
    doc = json.loads(p.read_text())
    doc["x"] = 2.5  # edited by hand: no longer the document tomoflow wrote, so no longer tomoflow's
    p.write_text(json.dumps(doc))
    assert read_stamp(p) is None
    p.write_text(json.dumps({**doc, "x": 1.5}))
    assert plan_file(p, kind="document", fingerprint="a").action == "same"
    with pytest.raises(StoreError, match="--overwrite"):
        plan_file(p, kind="document", fingerprint="b")
    with pytest.raises(StoreError, match="document file, not a registration"):
        plan_file(p, kind="registration", overwrite=True)
    with pytest.raises(ConfigError, match="must end in .png"):
        plan_file(tmp_path / "a.json", kind="picture")
    link = tmp_path / "link.json"
    link.symlink_to(p)
    with pytest.raises(StoreError, match="symbolic link"):
        plan_file(link, kind="document", overwrite=True)
    with pytest.raises(StoreError, match="input"):
        plan_file(p, kind="document", overwrite=True, inputs=[link])  # the same file by another path

    def broken(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(StoreError, match="no space left on"):
        write_file(plan_file(tmp_path / "new.json", kind="document"), broken)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["doc.json", "link.json"]  # nothing left behind


def test_a_file_that_changed_since_it_was_planned_is_not_replaced(tmp_path):
    from tomoflow.errors import StoreError
    from tomoflow.io.output import plan_file, write_json

    p = tmp_path / "r.json"
    plan = plan_file(p, kind="registration")
    p.write_text("a user's file, written meanwhile")
    with pytest.raises(StoreError, match="not written by tomoflow"):
        write_json(plan, {"matrix": []})
    assert p.read_text() == "a user's file, written meanwhile"


def test_stamps_of_every_format(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    torch = pytest.importorskip("torch")

    from tomoflow.align.resnet import build_network
    from tomoflow.io.output import plan_file, read_stamp, save_figure, write_file
    from tomoflow.train.files import save_weights

    fig = plt.figure()
    save_figure(fig, tmp_path / "a.png")
    assert read_stamp(tmp_path / "a.png")["kind"] == "picture"
    plan = plan_file(tmp_path / "m.yaml", kind="manifest")
    write_file(plan, plan.text_document("version: 1\n"))
    assert read_stamp(tmp_path / "m.yaml")["kind"] == "manifest"
    torch.manual_seed(0)
    save_weights(build_network(), tmp_path / "w.safetensors")
    assert read_stamp(tmp_path / "w.safetensors")["kind"] == "model-weights"
    (tmp_path / "plain.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    assert read_stamp(tmp_path / "plain.png") is None


def test_demo_refuses_a_bad_worker_count_before_any_step(cli, one_line_error, tmp_path):
    out = tmp_path / "demo"
    one_line_error(cli("demo", "--out", out, "--workers", "-1"), "--workers")
    assert not out.exists()


def test_demo_never_replaces_a_user_file_in_its_folder(cli, one_line_error, tmp_path):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "overview.png").write_bytes(b"mine")
    one_line_error(cli("demo", "--out", out, "--cluster", "none"), "overview.png", "not written by tomoflow")
    assert sorted(p.name for p in out.iterdir()) == ["overview.png"]


def test_no_store_is_made_inside_another_store(cli, one_line_error, scans, tooth_h5):
    sc, _ = scans
    before = _snapshot(sc)
    one_line_error(
        cli("simulate", sc / "inner.zarr", "--size", "32", "--rows", "4", "--angles", "24"),
        "lies inside the tomoflow store",
    )
    one_line_error(cli("ingest", tooth_h5, sc / "projections" / "t.zarr"), "lies inside the tomoflow store")
    one_line_error(cli("recon", sc, "-o", sc / "v.zarr", "--cluster", "none", "--center", "15.5"), "input")
    assert _snapshot(sc) == before


def test_the_same_simulation_again_is_the_same_scan(cli, tmp_path):
    s = tmp_path / "s.zarr"
    args = ("simulate", s, "--size", "32", "--rows", "4", "--angles", "24", "--seed", "5")
    assert cli(*args).code == 0
    stamp = {p: p.stat().st_mtime_ns for p in s.rglob("*") if p.is_file()}
    ran = cli(*args)
    assert ran.code == 0, ran
    assert {p: p.stat().st_mtime_ns for p in s.rglob("*") if p.is_file()} == stamp  # nothing rewritten
    assert cli("simulate", s, "--size", "32", "--rows", "4", "--angles", "24", "--seed", "6").code == 2


def test_overwrite_never_deletes_a_users_files_put_inside_a_store(cli, one_line_error, scans):
    sc, _ = scans
    vol = sc.parent / "v.zarr"
    assert cli("recon", sc, "-o", vol, "--cluster", "none", "--center", "15.5").code == 0
    (vol / "NOTES.txt").write_text("precious")
    (vol / "mine").mkdir()
    (vol / "mine" / "a.txt").write_text("x")
    one_line_error(
        cli("recon", sc, "-o", vol, "--cluster", "none", "--center", "15", "--overwrite"),
        "files tomoflow did not write",
        "NOTES.txt",
        "mine/a.txt",
    )
    assert (vol / "NOTES.txt").read_text() == "precious" and (vol / "mine" / "a.txt").exists()
    (vol / "NOTES.txt").unlink()
    shutil.rmtree(vol / "mine")
    assert cli("recon", sc, "-o", vol, "--cluster", "none", "--center", "15", "--overwrite").code == 0


def test_a_linked_store_output_is_refused(cli, one_line_error, scans):
    sc, raw = scans
    link = sc.parent / "link.zarr"
    link.symlink_to(raw)
    before = _snapshot(raw)
    one_line_error(
        cli("simulate", link, "--size", "32", "--rows", "4", "--angles", "24", "--seed", "9", "--overwrite"),
        "symbolic link",
    )
    assert _snapshot(raw) == before


def test_correct_checks_both_outputs_before_aligning(cli, one_line_error, scans):
    sc, raw = scans
    with_files = _snapshot(sc.parent)
    one_line_error(
        cli(
            "correct",
            sc,
            "-o",
            sc.parent / "cv.zarr",
            "--aligned",
            sc.parent / "cv.zarr",
            "--method",
            "phase",
            "--cluster",
            "none",
        ),
        "two paths",
    )
    one_line_error(
        cli("correct", sc, "-o", raw, "--method", "phase", "--cluster", "none"), "scan store, not a volume store"
    )
    assert _snapshot(sc.parent) == with_files  # the alignment never ran


def test_train_aligner_never_writes_over_its_init_weights(cli, one_line_error, tmp_path):
    from tomoflow.align.resnet import default_weights_path

    d = tmp_path / "ta"
    d.mkdir()
    for name in ("jitter_resnet.safetensors", "jitter_resnet.json"):
        shutil.copy(default_weights_path().with_name(name), d / name)
    before = _snapshot(d)
    one_line_error(
        cli(
            "train-aligner",
            "-o",
            d,
            "--init-weights",
            d / "jitter_resnet.safetensors",
            "--n-scans",
            "2",
            "--size",
            "32",
            "--n-angles",
            "8",
            "--epochs",
            "1",
            "--overwrite",
        ),
        "input",
    )
    assert _snapshot(d) == before


@pytest.mark.slow
def test_command_line_mistakes_are_one_line(cli_process, one_line_error):
    one_line_error(cli_process("recon"), "Missing argument", "tomoflow recon --help")
    one_line_error(cli_process("recon", "x.zarr", "-o", "y.zarr", "--no-such-option"), "No such option")
    one_line_error(cli_process("simulate", "s.zarr", "--size", "abc"), "--size")
    one_line_error(cli_process("no-such-command"), "No such command")


def test_a_copied_stamp_does_not_make_a_users_file_tomoflows(cli, one_line_error, work):
    forged = work / "forged.json"
    forged.write_text('{"mine": 1, "tomoflow_file": {"kind": "registration", "fingerprint": null}}')
    before = forged.read_bytes()
    one_line_error(
        cli("register", work / "hr.zarr", work / "lfov.zarr", "-o", forged, "--overwrite"), "not written by tomoflow"
    )
    assert forged.read_bytes() == before


@pytest.mark.slow
def test_a_second_writer_of_the_same_file_is_refused_naming_the_first(cli_process, one_line_error, work):
    import os
    import socket
    import subprocess
    import sys
    import time

    out = work / "r.json"
    first = subprocess.Popen(
        [sys.executable, "-m", "tomoflow.cli", "register", work / "hr.zarr", work / "lfov.zarr", "-o", out],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lock = work / "r.json.lock"
        deadline = time.monotonic() + 60
        while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lock.exists(), "the first run never took its lock"
        ran = cli_process("register", work / "hr.zarr", work / "lfov.zarr", "-o", out, "--dof", "6", "--overwrite")
        one_line_error(ran, "r.json", f"PID {first.pid}", socket.gethostname(), "since")
    finally:
        first.communicate(timeout=120)
    assert first.returncode == 0 and not lock.exists() and os.path.isfile(out)
