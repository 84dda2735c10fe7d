"""The batch runner (tomoflow/batch/runner.py) on a real cluster of two worker processes, over a small
archive of DXchange files: four good scans and three bad ones (truncated, half NaN, no /exchange/data).

Good scans complete, bad ones fail alone with their clear error in the report; a rerun skips every
complete scan and stage without writing to its stores; a worker killed mid-batch changes nothing in the
outputs (array checksums); a scan whose task keeps killing workers fails alone and resumes on the rerun."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from tomoflow.batch import COMPLETE, FAILED, SKIPPED, BatchEvent, load_manifest, preflight, run_batch
from tomoflow.batch.names import PERFORMANCE_REPORT, REPORT_HTML, REPORT_JSON
from tomoflow.errors import ConfigError, InputError
from tomoflow.io import ScanStore, VolumeStore
from tomoflow.pipeline.engine import KILL_AFTER_WRITE_ENV
from tomoflow.testing import small_scan_counts, write_manifest_yaml, write_small_dxchange

ANGLES = np.linspace(0, 180, 32, endpoint=False)
ROWS, COLS = 16, 32
GOOD = ("tooth", "chip", "foam-1", "foam.2")  # tooth is also aligned (phase)
BAD = ("truncated", "nan-rows", "no-data")


def _raw(seed: int) -> np.ndarray:
    return small_scan_counts(seed, ANGLES, ROWS, COLS)


def _write(path: Path, raw: np.ndarray) -> None:
    write_small_dxchange(path, angles_deg=ANGLES, counts=raw)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("batch")
    raw = root / "raw"
    raw.mkdir()
    for i, name in enumerate(GOOD):
        _write(raw / f"{name}.h5", _raw(i))
    _write(raw / "truncated.h5", _raw(5))
    data = (raw / "truncated.h5").read_bytes()
    (raw / "truncated.h5").write_bytes(data[: len(data) // 3])
    half_nan = _raw(6)
    half_nan[:, : ROWS // 2] = np.nan  # more NaN/Inf than reconstruction accepts: ingest refuses it
    _write(raw / "nan-rows.h5", half_nan)
    with h5py.File(raw / "no-data.h5", "w") as f:  # a DXchange layout without its projections
        f.create_dataset("/exchange/theta", data=ANGLES)
    return root


def manifest_file(archive: Path, output: str, *, names=GOOD + BAD, retries: int = 1) -> Path:
    scans = [
        f"name: {name}, path: raw/{name}.h5, pixel_size_um: 0.5"
        + ("" if name == "tooth" else ", stages: [ingest, recon]")
        for name in names
    ]
    return write_manifest_yaml(archive / f"{output}.yaml", output, scans, retries=retries)


def _store_checksums(store: Path) -> dict[str, str]:
    from tomoflow.testing import store_checksums

    return store_checksums(store)


def checksums(root: Path, names=GOOD) -> dict[str, dict[str, str]]:
    return {f"{n}/{s.name}": _store_checksums(s) for n in names for s in sorted((root / n).glob("*.zarr"))}


def mtimes(root: Path, names=GOOD) -> dict[str, int]:
    return {
        str(p.relative_to(root)): p.stat().st_mtime_ns
        for n in names
        for s in (root / n).glob("*.zarr")
        for p in s.rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two single-threaded worker processes; a block task kills its worker once ``trigger`` exists."""
    from tomoflow.cluster import connect

    trigger = tmp_path_factory.mktemp("kill") / "kill-once"
    old = os.environ.get(KILL_AFTER_WRITE_ENV)
    os.environ[KILL_AFTER_WRITE_ENV] = str(trigger)  # inherited by the worker processes
    try:
        with connect("local", processes=True, n_workers=2, threads_per_worker=1, dashboard_address=":0") as client:
            yield client, trigger
    finally:
        if old is None:
            os.environ.pop(KILL_AFTER_WRITE_ENV, None)
        else:
            os.environ[KILL_AFTER_WRITE_ENV] = old


@pytest.fixture(scope="module")
def first_run(archive, cluster):
    """The undisturbed run of the whole archive: (manifest, result, events, checksums of the good outputs)."""
    client, _ = cluster
    m = load_manifest(manifest_file(archive, "out"))
    events: list[BatchEvent] = []
    result = run_batch(m, client=client, progress=events.append)
    return m, result, events, checksums(Path(m.output))


@pytest.mark.slow
def test_good_scans_complete_and_bad_ones_fail_alone_with_clear_errors(first_run):
    m, result, events, _ = first_run
    root = Path(m.output)
    by = {s.name: s for s in result.scans}
    assert [s.name for s in result.scans] == list(GOOD + BAD)  # manifest order
    assert result.counts() == {COMPLETE: 4, SKIPPED: 0, FAILED: 3, "pending": 0}, result
    for name in GOOD:
        s = by[name]
        assert s.status == COMPLETE and s.error is None and s.attempts == 1, s
        assert all(st.status == COMPLETE for st in s.stages), s
        assert ScanStore.open(root / name / "scan.zarr").is_complete("ingest")
        v = VolumeStore.open(root / name / "volume.zarr")
        assert v.is_complete() and s.center == pytest.approx(v.attrs.rotation_center)
        assert (root / s.thumbnail).is_file() and (root / s.thumbnail).read_bytes()[:4] == b"\x89PNG"
    assert [st.stage for st in by["tooth"].stages] == ["ingest", "align", "recon"]
    al = by["tooth"].alignment
    assert al["method"] == "phase" and al["residual_rms_px"] is not None and al["converged"], al
    assert by["chip"].alignment is None

    # bad input is deterministic: failed at once (no retry), in the stage that met it, with the file named
    trunc, nan, nodata = by["truncated"], by["nan-rows"], by["no-data"]
    assert trunc.failed_stage == "ingest" and "truncated.h5" in trunc.error and "truncated or corrupt" in trunc.error
    assert nan.failed_stage == "ingest" and "NaN/Inf" in nan.error and [st.status for st in nan.stages] == [FAILED]
    assert nodata.failed_stage == "ingest" and "no-data.h5" in nodata.error and "/exchange/data" in nodata.error
    for s in (trunc, nan, nodata):
        assert s.status == FAILED and s.attempts == 1 and s.error_type == "InputError" and s.thumbnail is None, s
    assert (
        not (root / "nan-rows" / "volume.zarr").exists()
        or not VolumeStore.open(root / "nan-rows" / "volume.zarr", require_complete=False).is_complete()
    )

    # reports: JSON, HTML (thumbnails embedded, text escaped), per scan, and Dask's performance report
    doc = json.loads((root / REPORT_JSON).read_text())
    assert doc["final"] and doc["counts"]["failed"] == 3 and doc["counts"]["complete"] == 4
    rows = {s["name"]: s for s in doc["scans"]}
    assert rows["nan-rows"]["status"] == "failed" and "NaN/Inf" in rows["nan-rows"]["error"]
    assert rows["tooth"]["stages"][2]["stage"] == "recon" and rows["tooth"]["stages"][2]["seconds"] > 0
    page = (root / REPORT_HTML).read_text()
    assert page.count("data:image/png;base64,") == 4 and "foam.2" in page and "truncated or corrupt" in page
    assert "sblock-&gt;base_addr" in page  # the HDF5 message, escaped
    assert (root / PERFORMANCE_REPORT).stat().st_size > 10_000
    assert json.loads((root / "chip" / "scan-report.json").read_text())["status"] == COMPLETE
    assert json.loads((root / "truncated" / "scan-report.json").read_text())["failed_stage"] == "ingest"

    kinds = [e.kind for e in events]
    assert kinds[0] == "batch-start" and kinds[-1] == "batch-done" and kinds.count("scan-done") == 7
    assert any(e.kind == "stage" and e.stage == "recon" and e.step == "recon" for e in events)


def test_rerun_skips_complete_scans_writing_nothing(first_run, cluster):
    m, _, _, sums = first_run
    client, _ = cluster
    root = Path(m.output)
    before = mtimes(root)
    again = run_batch(m, client=client, max_in_flight=3)
    by = {s.name: s for s in again.scans}
    for name in GOOD:
        assert by[name].status == SKIPPED and all(st.status == SKIPPED for st in by[name].stages), by[name]
        assert by[name].stages[-1].recorded_seconds > 0
    for name in BAD:  # still failed, with the same reason
        assert by[name].status == FAILED and by[name].failed_stage in ("ingest", "recon"), by[name]
    assert by["nan-rows"].stages[0].status == FAILED  # refused again at ingest, nothing written
    assert mtimes(root) == before
    assert checksums(root) == sums


@pytest.mark.slow
def test_a_worker_killed_mid_batch_changes_no_output(archive, first_run, cluster):
    _, _, _, sums = first_run
    client, trigger = cluster
    m = load_manifest(manifest_file(archive, "killed-worker", names=GOOD))
    trigger.touch()  # the next block task to write its data kills its worker before marking the block
    result = run_batch(m, client=client)
    assert not trigger.exists(), "no task was killed"
    assert result.ok and all(s.status == COMPLETE for s in result.scans), result
    assert checksums(Path(m.output)) == sums


@pytest.mark.slow
def test_a_scan_that_keeps_killing_workers_fails_alone_then_resumes(archive, first_run, cluster):
    _, _, _, sums = first_run
    client, trigger = cluster

    def allowed_failures(n):
        def setter(dask_scheduler, n=n):
            old = dask_scheduler.allowed_failures
            dask_scheduler.allowed_failures = n
            return old

        return client.run_on_scheduler(setter)

    m = load_manifest(manifest_file(archive, "killer", names=GOOD, retries=2))
    old = allowed_failures(0)  # one death is one too many: the task ends as KilledWorker
    try:
        trigger.touch()
        result = run_batch(m, client=client, max_in_flight=1)  # tooth first: its first block task kills
    finally:
        allowed_failures(old)
    assert not trigger.exists()
    by = {s.name: s for s in result.scans}
    tooth = by["tooth"]
    assert tooth.status == FAILED and tooth.error_type == "KilledWorker" and tooth.attempts == 1, tooth
    assert tooth.failed_stage == "align" and "killed the workers" in tooth.error, tooth
    assert all(by[n].status == COMPLETE for n in GOOD[1:]), result
    again = run_batch(m, client=client)
    assert {s.name: s.status for s in again.scans} == {"tooth": COMPLETE, **dict.fromkeys(GOOD[1:], SKIPPED)}
    assert checksums(Path(m.output)) == sums


def test_a_small_scan_is_reconstructed_in_one_task_a_large_one_in_blocks(archive, cluster):
    """When the stage's own plan is one slab task, the recon stage is one ``recon-<token>-<scan>`` task (its
    store set up and its blocks run on the worker); otherwise (over the memory budget, or rows in two
    chunks for the cluster's two worker threads) the stage's blocks are tasks of their own."""
    from dask.utils import key_split
    from distributed import get_task_stream

    import tomoflow

    client, _ = cluster
    results, groups = {}, {}
    cases = {
        "one-task": {},
        "blocks": {"worker_memory_budget": 200_000},  # 200 kB: less than one slab needs
        "two-chunks": {"scan_chunk_rows": ROWS // 2},
    }
    for name, settings in cases.items():
        m = load_manifest(manifest_file(archive, name, names=("chip",)))
        with tomoflow.config.set(**settings), get_task_stream(client) as ts:
            results[name] = run_batch(m, client=client, performance_report=False)
        groups[name] = {key_split(t["key"]) for t in ts.data}
        assert results[name].ok, results[name]
    assert groups["one-task"] == {"ingest", "recon"}, groups
    for name in ("blocks", "two-chunks"):
        assert {"ingest", "recon-fbp", "pyramid-level"} <= groups[name] and "recon" not in groups[name], groups
    vols = [VolumeStore.open(Path(archive / n / "chip" / "volume.zarr")) for n in cases]
    assert vols[0].stages()["recon"].info["slabs"] == 1 and vols[2].stages()["recon"].info["slabs"] == 2
    for v in vols[1:]:
        np.testing.assert_allclose(np.asarray(vols[0].level(0)[:]), np.asarray(v.level(0)[:]), atol=1e-5)


def test_without_a_cluster_and_retries_of_transient_failures(archive, monkeypatch):
    """No client: everything runs in this process. An exception that is not bad input is retried."""
    import tomoflow.batch.scans as rec  # where the runner calls reconstruct_scan

    m = load_manifest(manifest_file(archive, "local", names=("chip", "foam-1"), retries=2))
    real = rec.reconstruct_scan
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionResetError("lost the scheduler")
        return real(*args, **kwargs)

    monkeypatch.setattr(rec, "reconstruct_scan", flaky)
    result = run_batch(m, client=None)
    by = {s.name: s for s in result.scans}
    assert result.ok and result.performance_report is None
    assert by["chip"].attempts == 2 and by["chip"].retried_after == ["ConnectionResetError: lost the scheduler"]
    assert by["foam-1"].attempts == 1
    assert [st.status for st in by["chip"].stages] == [SKIPPED, COMPLETE]  # the retry skipped the ingest


def test_outputs_that_would_collide_or_escape_are_refused_before_any_work(archive, tmp_path):
    m = load_manifest(manifest_file(archive, "refused", names=("chip",)))
    out = Path(m.output)
    assert not out.exists()
    bad = m.model_copy(update={"scans": [m.scans[0].model_copy(update={"name": "Thumbnails"})]})
    with pytest.raises(ConfigError, match="taken by the batch report"):
        run_batch(bad, client=None)
    out.mkdir()
    (out / "chip").symlink_to(tmp_path)  # a link leading out of the output root
    with pytest.raises(ConfigError, match="not inside the output root"):
        run_batch(m, client=None)
    (out / "chip").unlink()
    (out / "chip").write_text("a file")
    with pytest.raises(Exception, match="exists and is not a folder"):
        preflight(m)
    (out / "chip").unlink()
    (out / "other").mkdir()
    (out / "chip").symlink_to(out / "other")  # two scans, one folder
    two = m.model_copy(update={"scans": [m.scans[0], m.scans[0].model_copy(update={"name": "other"})]})
    with pytest.raises(ConfigError, match="same folder"):
        run_batch(two, client=None)
    gone = m.model_copy(
        update={"scans": [m.scans[0].model_copy(update={"name": "new", "path": archive / "raw" / "gone.h5"})]}
    )
    with pytest.raises(InputError, match="gone.h5"):
        run_batch(gone, client=None)
    assert sorted(p.name for p in out.rglob("*")) == ["chip", "other"]  # nothing written


@pytest.mark.slow
def test_recover_registers_trains_and_recovers_the_resampled_field_then_skips(tmp_path, cluster):
    """``recover`` with ``model: train``: registration and training as single worker tasks, then the
    whole LFOV field recovered at the HR voxel size, resampled block by block on the fly (no resampled
    store); a rerun skips all three."""
    from tomoflow.io.synthetic import write_multiscale_pair
    from tomoflow.sim import simulate_multiscale_pair

    client, _ = cluster
    pair = simulate_multiscale_pair(hr_shape=(32, 32, 32), lfov_shape=(20, 20, 20), prior_error_lfov_vox=1.0, seed=3)
    write_multiscale_pair(pair, tmp_path / "hr.zarr", tmp_path / "lfov.zarr")
    (tmp_path / "m.yaml").write_text(
        "version: 1\noutput: out\npipeline: [{stage: recover, dof: 3, train: {epochs: 1, steps: 2, patch: 16, "
        "batch: 2, channels: [4, 8]}}]\nscans:\n  - {name: pair, volume: lfov.zarr, hr: hr.zarr}\n"
    )
    m = load_manifest(tmp_path / "m.yaml")
    result = run_batch(m, client=client)
    (s,) = result.scans
    assert s.status == COMPLETE, s
    assert [st.stage for st in s.stages] == ["register", "train", "recover"]
    out = tmp_path / "out" / "pair"
    reg = json.loads((out / "registration.json").read_text())
    assert reg["dof"] == 3 and reg["ncc"] > reg["ncc_prior"] and "fingerprint" in reg
    assert (out / "training" / "recover_unet.safetensors").is_file()
    assert (out / "training" / "batch-training.json").is_file()
    rec = VolumeStore.open(out / "recovered.zarr")
    assert rec.shape == ((20 - 1) * 4 + 1,) * 3 and rec.attrs.voxel_size.value == pytest.approx(1.0)
    assert Path(rec.extra["fused_resample"]["source"]).name == "lfov.zarr"
    assert [p.name for p in out.glob("*.zarr")] == ["recovered.zarr"]  # no resampled store
    assert set(s.outputs) == {"registration", "training", "recovered"}
    assert s.thumbnail and (tmp_path / "out" / s.thumbnail).is_file()
    files = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "scan-report.json"}
    again = run_batch(m, client=client)
    assert again.scans[0].status == SKIPPED and all(st.status == SKIPPED for st in again.scans[0].stages), again
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "scan-report.json"} == files
