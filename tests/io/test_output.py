"""Output safety: what a stage may do with its output path (tomoflow/io/output.py)."""

from __future__ import annotations

import pytest

from tomoflow.errors import StoreError
from tomoflow.io.output import create_store, fingerprint, identity_of, prepare_output
from tomoflow.io.stages import StageLog, store_identity, store_kind

FP = fingerprint("toy", inputs={}, params={"a": 1})


def _store(path, kind="tomoflow-volume", complete=False, fp=FP):
    create_store(prepare_output(path, kind=kind, stage="toy", fingerprint=fp), {"tomoflow_format": kind})
    log = StageLog.begin(path, "toy", fingerprint=fp, params={"a": 1}, steps={"main": 2})
    if complete:
        log.finish(output_id=fp, seconds=0.0)
    return path


def plan(path, **kw):
    kw.setdefault("fingerprint", FP)
    return prepare_output(path, kind="tomoflow-volume", stage="toy", **kw)


def test_new_paths_and_empty_folders_are_created(tmp_path):
    assert plan(tmp_path / "new.zarr").action == "create"
    (tmp_path / "empty").mkdir()
    assert plan(tmp_path / "empty").action == "create"


def test_same_fingerprint_resumes_or_is_complete(tmp_path):
    assert plan(_store(tmp_path / "a.zarr")).action == "resume"
    assert plan(_store(tmp_path / "b.zarr", complete=True)).action == "complete"
    assert plan(tmp_path / "b.zarr", overwrite=True).action == "replace"


def test_other_fingerprint_is_refused_with_the_difference(tmp_path):
    _store(tmp_path / "a.zarr")
    other = fingerprint("toy", inputs={}, params={"a": 2})
    with pytest.raises(StoreError, match=r"a: 1 -> 2.*--overwrite"):
        plan(tmp_path / "a.zarr", fingerprint=other, params={"a": 2})
    assert plan(tmp_path / "a.zarr", fingerprint=other, overwrite=True).action == "replace"


def test_files_foreign_folders_and_other_kinds_are_never_replaced(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("x")
    _store(tmp_path / "scan.zarr", kind="tomoflow-scan")
    for path, why in (
        (tmp_path / "f.txt", "not a folder"),
        (user, "not a tomoflow store"),
        (tmp_path / "scan.zarr", "is a tomoflow scan store, not a volume store"),
    ):
        for overwrite in (False, True):
            with pytest.raises(StoreError, match=why):
                plan(path, overwrite=overwrite)
    assert (user / "notes.txt").exists() and store_kind(tmp_path / "scan.zarr") == "tomoflow-scan"


def test_inputs_are_never_outputs(tmp_path):
    src = _store(tmp_path / "in.zarr", kind="tomoflow-scan", complete=True)
    link = tmp_path / "link.zarr"
    link.symlink_to(src)
    for out, why in (
        (src, "is an input"),
        (link, "is an input"),
        (src / "sub", "lies inside the input"),
        (tmp_path, "contains the input"),
    ):
        with pytest.raises(StoreError, match=why):
            plan(out, inputs=[src], overwrite=True)


def test_store_interrupted_while_being_created_is_replaced(tmp_path):
    create_store(plan(tmp_path / "v.zarr"), {"tomoflow_format": "tomoflow-volume"})  # no stage record yet
    assert plan(tmp_path / "v.zarr").action == "replace"


def test_read_only_location_is_a_store_error(readonly_dir):
    with pytest.raises(StoreError, match="cannot create"):
        create_store(plan(readonly_dir / "tomoflow-test-v.zarr"), {"tomoflow_format": "tomoflow-volume"})


def test_read_only_file_system_is_a_store_error():
    with pytest.raises(StoreError, match="cannot create"):
        create_store(plan("/proc/tomoflow-test.zarr"), {"tomoflow_format": "tomoflow-volume"})


def test_identity_ignores_the_path(tmp_path):
    a = _store(tmp_path / "a.zarr", complete=True)
    b = _store(tmp_path / "b.zarr", complete=True)
    assert store_identity(a) == store_identity(b) == identity_of(a)
    with pytest.raises(StoreError, match="did not complete"):
        store_identity(_store(tmp_path / "c.zarr"))
    (tmp_path / "raw.bin").write_bytes(b"abc")
    assert identity_of(tmp_path / "raw.bin").startswith("sha256:")
