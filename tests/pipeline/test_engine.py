"""The stage engine: output identity and safety, block markers, resume, thread budgets, failures.

The reconstruction pipeline is the engine's first user, so most end-to-end cases run it on a small
raw scan; the generic pieces (planning, thread budget, markers) are tested on their own too.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

import tomoflow
from tomoflow.errors import InputError, PipelineError, StoreError
from tomoflow.io import open_volume, write_scan
from tomoflow.io.stages import StageLog, stage_records
from tomoflow.pipeline.engine import (
    KILL_AFTER_WRITE_ENV,
    Block,
    create_store,
    fingerprint,
    plan_blocks,
    prepare_output,
    run_blocks,
)
from tomoflow.pipeline.reconstruct import reconstruct_scan, slab_bytes
from tomoflow.recon import project
from tomoflow.testing import disk_phantom

N_ROWS, N = 40, 48
ANGLES = np.linspace(0, 180, 60, endpoint=False)
CENTER = 24.8


def _raw_scan(path: Path, scale: float = 0.05, nan_rows: slice | None = None) -> Path:
    line = project(disk_phantom((N_ROWS, N, N)) * scale, ANGLES, center=CENTER)
    flat = np.full((2, N_ROWS, N), 1000.0, np.float32)
    dark = np.full((2, N_ROWS, N), 10.0, np.float32)
    raw = (flat[0] - dark[0]) * np.exp(-line) + dark[0]
    with tomoflow.config.set(scan_chunk_rows=8):
        write_scan(path, raw, ANGLES, flats=flat, darks=dark, pixel_size_um=0.05)
    if nan_rows is not None:  # damaged after ingest (ingest itself refuses more than 0.1 % NaN/Inf)
        import zarr

        zarr.open_array(str(path / "projections"), mode="r+")[:, nan_rows, 1:] = np.nan
    return path


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> Path:
    return _raw_scan(tmp_path_factory.mktemp("engine") / "scan.zarr")


@pytest.fixture
def small_slabs():
    budget = slab_bytes(len(ANGLES), N, (N, N), 8, "fbp") + 1  # one 8-row chunk per slab: 5 slabs
    with tomoflow.config.set(scan_chunk_rows=8, worker_memory_budget=budget, pyramid_levels=2):
        yield


def _checksums(store: Path) -> dict[str, str]:
    v = tomoflow.io.VolumeStore.open(store)
    return {
        str(k): hashlib.sha256(np.ascontiguousarray(v.level(k)[:]).tobytes()).hexdigest() for k in range(v.n_levels)
    }


def _mtimes(store: Path) -> dict[str, int]:
    return {str(p.relative_to(store)): p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}


# ----------------------------------------------------------------------------- planning
def test_plan_blocks_fit_the_budget_and_balance_over_threads():
    # 16 units, 6 fit the budget -> 3 blocks needed -> 4 for 2 threads, 4 units each (the 512^3 case)
    assert plan_blocks(16, 100, 600, parallel=2) == [(0, 4), (4, 8), (8, 12), (12, 16)]
    assert plan_blocks(16, 100, 10_000, parallel=1) == [(0, 16)]
    assert plan_blocks(5, 100, 10_000, parallel=8) == [(i, i + 1) for i in range(5)]  # never empty blocks
    blocks = plan_blocks(37, 10, 55, parallel=3)
    sizes = [b - a for a, b in blocks]
    assert len(blocks) % 3 == 0 and max(sizes) * 10 <= 55 and max(sizes) - min(sizes) <= 1
    assert blocks[0][0] == 0 and blocks[-1][1] == 37 and all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))


def test_fingerprint_depends_on_identity_and_parameters_not_on_order():
    a = fingerprint("recon", inputs={"scan": "x"}, params={"center": 1.0, "filter": "ramp"})
    assert a == fingerprint("recon", inputs={"scan": "x"}, params={"filter": "ramp", "center": 1.0})
    assert a != fingerprint("recon", inputs={"scan": "y"}, params={"center": 1.0, "filter": "ramp"})
    assert a != fingerprint("recon", inputs={"scan": "x"}, params={"center": 1.5, "filter": "ramp"})
    with pytest.raises(TypeError, match="paths are not parameters"):
        fingerprint("recon", inputs={}, params={"scan": Path("a.zarr")})


# ----------------------------------------------------------------------------- generic engine
def _toy_store(tmp_path: Path, n_units: int = 4) -> Path:
    out = tmp_path / "toy.zarr"
    fp = fingerprint("toy", inputs={}, params={"n": n_units})
    plan = prepare_output(out, kind="tomoflow-volume", stage="toy", fingerprint=fp)
    root = create_store(plan, {"tomoflow_format": "tomoflow-volume"})
    root.create_array("data", shape=(n_units * 2, 3), chunks=(2, 3), dtype="float32", fill_value=0.0)
    StageLog.begin(out, "toy", fingerprint=fp, params={"n": n_units}, steps={"main": n_units})
    return out


def _budget_probe(n: int) -> np.ndarray:
    import numba

    from tomoflow.backend import fft_workers

    return np.full((n, 3), 100 * numba.get_num_threads() + fft_workers(), np.float32)


def _blocks(n_units: int, fn_args=lambda u: (2,)) -> list[Block]:
    return [
        Block(units=(u,), region=(slice(2 * u, 2 * u + 2), slice(None)), args=fn_args(u), label=f"unit {u}")
        for u in range(n_units)
    ]


@pytest.mark.parametrize("threads", [1, 2])
def test_numba_and_fft_threads_equal_the_task_budget(tmp_path, threads):
    out = _toy_store(tmp_path)
    rep = run_blocks(
        out, _blocks(4), _budget_probe, stage="toy", step="main", array="data", name="budget-probe", threads=threads
    )
    import zarr

    assert rep.threads == threads and rep.computed == 4
    assert np.all(np.asarray(zarr.open_array(str(out), path="data")[:]) == 101 * threads)


def test_default_budget_splits_a_node_between_its_worker_threads(tmp_path, dask_client):
    """The in-process cluster of the suite has 2 worker threads on this machine: each task gets
    max(1, cpus // 2) numba threads and FFT workers, never all the CPUs."""
    from tomoflow.backend import cpu_count

    out = _toy_store(tmp_path)
    rep = run_blocks(
        out, _blocks(4), _budget_probe, stage="toy", step="main", array="data", name="budget-probe", client=dask_client
    )
    import zarr

    expected = max(1, cpu_count() // 2)
    assert rep.threads == expected
    assert np.all(np.asarray(zarr.open_array(str(out), path="data")[:]) == 101 * expected)


def test_filter_fft_uses_the_budget(monkeypatch):
    import scipy.fft

    from tomoflow.backend import limit_threads
    from tomoflow.recon.filters import filter_projections

    seen = []
    real = scipy.fft.rfft

    def spy(*args, **kwargs):
        seen.append(kwargs.get("workers"))
        return real(*args, **kwargs)

    monkeypatch.setattr(scipy.fft, "rfft", spy)
    with limit_threads(1):
        filter_projections(np.ones((3, 2, 16), np.float32), filter="ramp")
    assert seen == [1]


def _nan_block(n: int) -> np.ndarray:
    out = np.ones((n, 3), np.float32)
    out[0, 0] = np.nan
    return out


def test_nan_result_is_an_error_and_never_marked(tmp_path):
    out = _toy_store(tmp_path, n_units=2)
    with pytest.raises(PipelineError, match="NaN/Inf") as err:
        run_blocks(out, _blocks(2), _nan_block, stage="toy", step="main", array="data", name="nan-probe")
    assert str(out) in str(err.value)
    assert not StageLog(out, "toy").done("main").any()


def test_stage_records_live_in_their_own_files(tmp_path):
    """Two stages of one store never read-modify-write a shared JSON: finishing one leaves the other's
    record file untouched."""
    out = _toy_store(tmp_path)
    StageLog.begin(out, "other", fingerprint="f", params={}, steps={"main": 2})
    first = (out / "stages" / "toy" / "zarr.json").read_bytes()
    StageLog(out, "other").finish(output_id="x", seconds=1.0)
    assert (out / "stages" / "toy" / "zarr.json").read_bytes() == first
    recs = stage_records(out)
    assert recs["other"].complete and not recs["toy"].complete
    assert (out / "zarr.json").stat().st_size > 0


# ----------------------------------------------------------------------------- output safety
def test_overwrite_never_touches_a_user_folder_or_an_input(scan, tmp_path, small_slabs):
    user = tmp_path / "mydata"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    for out in (user, scan, scan / "inside.zarr"):
        with pytest.raises(StoreError):
            reconstruct_scan(scan, out, center=CENTER, overwrite=True)
    assert (user / "notes.txt").read_text() == "keep me"
    assert tomoflow.io.ScanStore.open(scan).is_complete("ingest")
    with pytest.raises(StoreError, match="contains the input"):
        reconstruct_scan(scan, scan.parent, center=CENTER, overwrite=True)
    # ingest (the scan store's stage) obeys the same rules
    with pytest.raises(StoreError, match="not a tomoflow store"):
        write_scan(user, np.ones((2, 2, 2)), [0, 90], overwrite=True)
    assert (user / "notes.txt").read_text() == "keep me"


def test_refused_parameters_leave_nothing_behind(scan, tmp_path):
    from tomoflow.errors import ConfigError

    for kwargs in (
        {"center": 1e9},
        {"center": float("nan")},
        {"center": -5},
        {"algorithm": "art"},
        {"filter": "box"},
        {"algorithm": "mlem", "n_iter": 0},
    ):
        with pytest.raises(ConfigError):
            reconstruct_scan(scan, tmp_path / "v.zarr", **kwargs)
        assert not (tmp_path / "v.zarr").exists()
    with pytest.raises(ConfigError, match="pixel size"):
        write_scan(tmp_path / "s.zarr", np.ones((2, 2, 2)), [0, 90], pixel_size_um=0)
    assert not (tmp_path / "s.zarr").exists()


def test_all_zero_flats_are_refused(tmp_path):
    path = tmp_path / "zeroflat.zarr"
    with pytest.raises(InputError, match="flat fields are all zero"):  # at ingest, before a store exists
        write_scan(path, np.full((4, 8, 8), 100.0), [0, 45, 90, 135], flats=np.zeros((2, 8, 8)))
    assert not path.exists()
    # a store whose flats were damaged after ingest: refused by the reconstruction, nothing written
    write_scan(path, np.full((4, 8, 8), 100.0), [0, 45, 90, 135], flats=np.full((2, 8, 8), 1000.0))
    import zarr

    zarr.open_group(str(path), mode="r+")["flats"][...] = 0
    with pytest.raises(InputError, match="flat fields are all zero"):
        reconstruct_scan(path, tmp_path / "v.zarr", center=3.5)
    assert not (tmp_path / "v.zarr").exists()


def test_nan_slab_is_a_clear_error(tmp_path, small_slabs):
    path = _raw_scan(tmp_path / "nan.zarr", nan_rows=slice(8, 16))
    with pytest.raises(InputError, match=r"rows 8-16 hold .* NaN/Inf") as err:
        reconstruct_scan(path, tmp_path / "v.zarr", center=CENTER)
    assert "nan.zarr" in str(err.value)
    with pytest.raises(StoreError, match="did not complete"):
        open_volume(tmp_path / "v.zarr")


# ----------------------------------------------------------------------------- resume by identity
def test_complete_stage_rerun_writes_nothing_and_resumes_by_identity(scan, tmp_path, small_slabs, monkeypatch):
    out = tmp_path / "vol.zarr"
    first = reconstruct_scan(scan, out, center="auto")
    before = _mtimes(out)
    # the same store through another spelling of its path, from another working directory
    monkeypatch.chdir(scan.parent)
    again = reconstruct_scan(Path(os.path.relpath(scan, scan.parent)), out, center="auto")
    assert _mtimes(out) == before  # no file rewritten, not even the stage record
    assert again.attrs.rotation_center == first.attrs.rotation_center
    assert again.stages()["recon"].info["slabs_computed"] == 5


def test_a_different_scan_at_the_same_path_is_refused_not_mixed(tmp_path, small_slabs):
    scan = _raw_scan(tmp_path / "scan.zarr")
    out = tmp_path / "vol.zarr"
    reconstruct_scan(scan, out, center=CENTER)
    import shutil

    shutil.rmtree(scan)
    _raw_scan(scan, scale=0.08)  # another sample re-ingested at the same path
    with pytest.raises(StoreError, match="other inputs or parameters"):
        reconstruct_scan(scan, out, center=CENTER)
    fresh = reconstruct_scan(scan, out, center=CENTER, overwrite=True)
    assert fresh.is_complete()


def test_same_source_reingested_is_the_same_input(tmp_path, small_slabs):
    scan = _raw_scan(tmp_path / "a.zarr")
    copy = _raw_scan(tmp_path / "b.zarr")
    assert tomoflow.io.ScanStore.open(scan).identity == tomoflow.io.ScanStore.open(copy).identity
    out = tmp_path / "vol.zarr"
    reconstruct_scan(scan, out, center=CENTER)
    before = _mtimes(out)
    reconstruct_scan(copy, out, center=CENTER)  # identical content: complete, nothing written
    assert _mtimes(out) == before


# ----------------------------------------------------------------------------- killed workers
@pytest.mark.slow
def test_worker_killed_between_data_and_marker(scan, tmp_path, small_slabs, monkeypatch):
    """A worker process SIGKILLed inside a block task, after writing the block's data but before its
    marker: with no retries allowed the run fails with a clear error and nothing is marked complete;
    a rerun (through a relative path) completes, and every level equals an undisturbed run's. With
    Dask's default retries the killed block is recomputed elsewhere within the same run."""
    import dask
    from distributed import LocalCluster

    reference = tmp_path / "reference.zarr"
    reconstruct_scan(scan, reference, center=CENTER)
    expected = _checksums(reference)

    trigger = tmp_path / "kill-once"
    monkeypatch.setenv(KILL_AFTER_WRITE_ENV, str(trigger))
    out = tmp_path / "killed.zarr"
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        cluster.get_client() as client,
    ):
        trigger.touch()
        with pytest.raises(PipelineError, match="run again to resume"):
            reconstruct_scan(scan, out, center=CENTER, client=client)
    assert not trigger.exists()  # a task really died after writing its data
    with pytest.raises(StoreError, match="did not complete"):
        open_volume(out)
    done = StageLog(out, "recon").done("level-0")
    assert not done.all()
    monkeypatch.chdir(tmp_path)
    reconstruct_scan(Path(os.path.relpath(scan, tmp_path)), Path("killed.zarr"), center=CENTER)
    assert _checksums(out) == expected

    out2 = tmp_path / "retried.zarr"
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        cluster.get_client() as client,
    ):
        trigger.touch()
        reconstruct_scan(scan, out2, center=CENTER, client=client)
    assert not trigger.exists()
    assert _checksums(out2) == expected


def test_local_execution_hides_the_client(dask_client):
    from tomoflow.pipeline.engine import current_client, local_execution

    assert current_client() is dask_client
    with local_execution():
        assert current_client() is None
    assert current_client() is dask_client
