"""Jitter correction of whole scan stores on the stage engine (tomoflow/pipeline/align.py)."""

from __future__ import annotations

import numpy as np
import pytest

import tomoflow
from tomoflow.align.gauge import fix_gauge
from tomoflow.errors import ConfigError, InputError, StoreError
from tomoflow.io import ScanStore, VolumeStore
from tomoflow.io.synthetic import write_synthetic_scan
from tomoflow.pipeline.align import align_scan, bin_factor, correct_scan
from tomoflow.sim import cathode_particle, simulate_scan

ANGLES = np.linspace(0, 180, 91)
ROWS, COLS = 16, 72
CENTER = (COLS - 1) / 2 + 5.0  # the rotation axis 5 px off the detector centre


@pytest.fixture(scope="module")
def jittered(tmp_path_factory):
    """A raw simulated scan store (non-square detector, axis off centre, ±3 px jitter) and its truth."""
    path = tmp_path_factory.mktemp("align") / "scan.zarr"
    scan = simulate_scan(
        cathode_particle((ROWS, 64, COLS), seed=1), ANGLES, jitter_px=3.0, photons=None, seed=3, center=CENTER
    )
    with tomoflow.config.set(scan_chunk_rows=8):
        write_synthetic_scan(path, scan, format="zarr")
    return path, scan


def _residual(store: ScanStore, scan) -> np.ndarray:
    est = fix_gauge(np.asarray(store.group["shifts"][:]), angles_deg=ANGLES).shifts
    truth = fix_gauge(scan.shifts, angles_deg=ANGLES).shifts
    return np.sqrt(np.mean((np.asarray(est) - np.asarray(truth)) ** 2, axis=0))


@pytest.mark.parametrize("max_size", [256, 40])  # full resolution, and binned 2x for the estimation
def test_consistency_alignment_recovers_the_jitter(jittered, tmp_path, max_size):
    path, scan = jittered
    out = align_scan(path, tmp_path / "aligned.zarr", method="consistency", max_size=max_size)
    rmse_dy, rmse_dx = _residual(out, scan)
    assert rmse_dx < 0.15 and rmse_dy < 0.6, (rmse_dy, rmse_dx)
    assert out.attrs.values == "line-integral" and out.shape == scan.projections.shape
    assert out.stage("align").info["bin_factor"] == bin_factor((ROWS, COLS), max_size)
    # the stored projections are the measured line integrals moved back by the estimated shifts
    corrected = np.asarray(out.projections[:, 4:12, 10:-10])
    assert np.isfinite(corrected).all()
    assert abs(out.attrs.rotation_center - CENTER) < 3.5  # the centre absorbs the common dx of the jitter


def test_rerun_writes_nothing_and_the_store_reconstructs(jittered, tmp_path):
    path, scan = jittered
    out = tmp_path / "aligned.zarr"
    align_scan(path, out, method="phase")
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    align_scan(path, out, method="phase")
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    with pytest.raises(StoreError, match="other inputs or parameters"):
        align_scan(path, out, method="consistency")


def test_correct_scan_ends_in_a_sharper_volume(jittered, tmp_path):
    from tomoflow.pipeline import reconstruct_scan

    path, scan = jittered
    vol = correct_scan(path, tmp_path / "vol.zarr", method="consistency")
    assert vol.is_complete() and (tmp_path / "vol-aligned.zarr").is_dir()
    blurred = reconstruct_scan(path, tmp_path / "blurred.zarr", center=CENTER)
    truth = cathode_particle((ROWS, 64, COLS), seed=1)

    # the reconstruction grid is (cols x cols); compare the central rows against the phantom's support
    def err(v: VolumeStore) -> float:
        rec = np.asarray(v.level(0)[ROWS // 2])
        ref = np.zeros_like(rec)
        ref[(COLS - 64) // 2 : (COLS - 64) // 2 + 64] = truth[ROWS // 2]
        return float(np.corrcoef(rec.ravel(), ref.ravel())[0, 1])

    assert err(vol) > err(blurred) + 0.05


def test_bad_requests_are_refused_before_anything_is_written(jittered, tmp_path):
    path, _ = jittered
    with pytest.raises(ConfigError, match="alignment method"):
        align_scan(path, tmp_path / "a.zarr", method="magic")
    with pytest.raises(ConfigError, match="max_size"):
        align_scan(path, tmp_path / "a.zarr", method="phase", max_size=4)
    with pytest.raises(ConfigError):
        correct_scan(path, tmp_path / "v.zarr", method="phase", algorithm="art")
    assert not list(tmp_path.iterdir())


def test_too_few_angles_is_an_input_error(tmp_path):
    from tomoflow.io import write_scan

    write_scan(tmp_path / "few.zarr", np.ones((4, 8, 8)), [0, 45, 90, 135])
    with pytest.raises(InputError, match="too few"):
        align_scan(tmp_path / "few.zarr", tmp_path / "a.zarr", method="phase")
    assert not (tmp_path / "a.zarr").exists()


def test_alignment_report_png(jittered, tmp_path):
    from tomoflow.report import alignment_png

    path, _ = jittered
    out = align_scan(path, tmp_path / "aligned.zarr", method="consistency", n_iter=4)
    png = alignment_png(tmp_path / "report.png", path, out.path)
    assert png.stat().st_size > 20_000


def _run_on_cluster(fn):
    """Run ``fn(client)`` on an in-process LocalCluster; return the task groups and keys it ran (and
    ``fn``'s result as ``.result``)."""
    from dask.utils import key_split
    from distributed import LocalCluster
    from distributed.diagnostics.plugin import SchedulerPlugin

    class Seen(SchedulerPlugin):
        def __init__(self):
            self.groups, self.keys, self.result = set(), set(), None

        def transition(self, key, start, finish, *args, **kwargs):
            if finish == "processing":
                self.groups.add(key_split(key))
                self.keys.add(str(key))

    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as cluster,
        cluster.get_client() as client,
    ):
        seen = Seen()
        cluster.scheduler.add_plugin(seen)
        seen.result = fn(client)
    return seen


def test_named_task_groups_on_a_cluster(jittered, tmp_path):
    """On a Dask cluster the correction is readable on the dashboard: one task group per stage."""
    path, _ = jittered
    seen = _run_on_cluster(lambda client: align_scan(path, tmp_path / "aligned.zarr", method="phase", client=client))
    assert {"flat-field-correct", "align-mlem", "align-reproject", "align-register", "align-shift"} <= seen.groups


requires_weights = pytest.mark.skipif(
    not __import__("tomoflow.align.resnet", fromlist=["default_weights_path"]).default_weights_path().is_file(),
    reason="shipped jitter ResNet weights absent",
)


@pytest.fixture(scope="module")
def jittered_tall(tmp_path_factory):
    """A raw scan tall enough for the network (40 x 72 detector, axis 5 px off centre, ±4 px jitter)."""
    path = tmp_path_factory.mktemp("align-net") / "scan.zarr"
    scan = simulate_scan(
        cathode_particle((40, 64, COLS), seed=2), ANGLES, jitter_px=4.0, photons=None, seed=5, center=CENTER
    )
    with tomoflow.config.set(scan_chunk_rows=8):
        write_synthetic_scan(path, scan, format="zarr")
    return path, scan


@pytest.mark.slow
@requires_weights
def test_network_passes_are_named_tasks_and_match_the_kernel(jittered_tall, tmp_path):
    """resnet on a cluster: each network pass is align-mlem -> align-reproject -> align-resnet, and the
    graph gives the shifts of the in-memory method (one implementation) on the same line integrals
    (up to the store's rounding of the raw counts: 0.02 px measured)."""
    from tomoflow.align import estimate_shifts
    from tomoflow.recon import normalize_log

    path, scan = jittered_tall
    seen = _run_on_cluster(lambda client: align_scan(path, tmp_path / "aligned.zarr", method="resnet", client=client))
    out = seen.result
    assert {"align-mlem", "align-reproject", "align-resnet", "align-shift"} <= seen.groups
    assert sum(k.startswith("align-resnet-") for k in seen.keys) == 2  # two passes
    p = normalize_log(scan.projections, scan.flats, scan.darks)
    direct = estimate_shifts(p, ANGLES, method="resnet")
    np.testing.assert_allclose(np.asarray(out.group["shifts"][:]), direct, atol=0.1)
    assert np.all(_residual(out, scan) < 1.0)
