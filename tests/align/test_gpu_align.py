"""The network alignment methods on the GPU: ``estimate_shifts(method="resnet" | "hybrid", device=...)``
agrees with the CPU, and ``correct_scan`` on a ``local-cuda`` cluster sends each network pass to a GPU
worker (``align-resnet`` tasks carry ``{"GPU": 1}``).

Each test runs on the CPU too (the ``cpu`` / ``local`` variants: the same body, no GPU), so the body is
proven on every machine; the ``cuda`` / ``local-cuda`` variants are skipped without a CUDA device
(``pytest -m gpu`` on a GPU machine runs only them)."""

from __future__ import annotations

import numpy as np
import pytest

import tomoflow
from tomoflow.align import estimate_shifts
from tomoflow.align.gauge import fix_gauge
from tomoflow.align.resnet import default_weights_path
from tomoflow.recon import normalize_log
from tomoflow.sim import cathode_particle, simulate_scan

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not default_weights_path().is_file(), reason="shipped jitter ResNet weights absent"),
]

ANGLES = np.linspace(0, 180, 61)
ROWS, COLS = 40, 72
CENTER = (COLS - 1) / 2 + 4.0  # the rotation axis 4 px off the detector centre
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu("torch"))]
CLUSTERS = ["local", pytest.param("local-cuda", marks=pytest.mark.gpu("dask_cuda"))]


@pytest.fixture(scope="module")
def scan():
    """A jittered scan tall enough for the network (40 x 72 detector, ±4 px jitter), no noise."""
    return simulate_scan(
        cathode_particle((ROWS, 64, COLS), seed=2), ANGLES, jitter_px=4.0, photons=None, seed=5, center=CENTER
    )


@pytest.fixture(scope="module")
def cpu_results(scan):
    """The CPU estimate of each network method (NumPy input, aligner on the CPU), made once."""
    p = normalize_log(scan.projections, scan.flats, scan.darks)
    cache: dict[str, object] = {}

    def get(method: str):
        if method not in cache:
            cache[method] = estimate_shifts(p, ANGLES, method=method, device="cpu", return_result=True)
        return cache[method]

    return get


def _residual_px(shifts, truth) -> float:
    r = np.asarray(fix_gauge(shifts, angles_deg=ANGLES).shifts) - np.asarray(fix_gauge(truth, angles_deg=ANGLES).shifts)
    return float(np.sqrt(np.mean(np.sum(r**2, axis=1))))


@pytest.mark.parametrize("method", ["resnet", "hybrid"])
@pytest.mark.parametrize("device", DEVICES)
def test_network_methods_on_the_device_agree_with_the_cpu(scan, cpu_results, method, device):
    """On ``cuda`` the projections go in as CuPy (the hybrid's consistency refinement then runs on the GPU
    too) and the aligner runs on the GPU; the shifts come back as NumPy and match the CPU's."""
    p = normalize_log(scan.projections, scan.flats, scan.darks)
    if device == "cuda":
        import cupy

        p = cupy.asarray(p)
    res = estimate_shifts(p, ANGLES, method=method, device=device, return_result=True)
    ref = cpu_results(method)
    assert isinstance(res.shifts, np.ndarray) and res.shifts.shape == (len(ANGLES), 2)
    assert np.isfinite(res.shifts).all() and np.isfinite(res.center)
    np.testing.assert_allclose(res.shifts, ref.shifts, atol=0.1)
    assert abs(float(res.center) - float(ref.center)) < 0.1
    assert _residual_px(res.shifts, scan.shifts) < (1.0 if method == "resnet" else 0.5)


@pytest.fixture(scope="module")
def scan_store(tmp_path_factory, scan):
    from tomoflow.io.synthetic import write_synthetic_scan

    path = tmp_path_factory.mktemp("gpu-align") / "scan.zarr"
    with tomoflow.config.set(scan_chunk_rows=8):
        write_synthetic_scan(path, scan, format="zarr")
    return path


@pytest.mark.parametrize("spec", CLUSTERS)
def test_correct_on_a_cluster_runs_each_network_pass_on_a_gpu_worker(scan, scan_store, tmp_path, spec):
    """``correct_scan(method="resnet")``: two network passes (``align-mlem``, ``align-reproject``,
    ``align-resnet``), each task asking for ``{"GPU": 1}`` on a ``local-cuda`` cluster (nothing on a
    CPU cluster, where no worker has that resource); the jitter is found and the volume is complete."""
    from dask.utils import key_split
    from distributed.diagnostics.plugin import SchedulerPlugin

    from tomoflow.cluster import connect
    from tomoflow.io import ScanStore
    from tomoflow.pipeline.align import correct_scan

    asked: dict[str, dict] = {}
    options = {"processes": False, "threads_per_worker": 2} if spec == "local" else {}
    with connect(spec, n_workers=1, dashboard_address="127.0.0.1:0", **options) as client:
        scheduler = client.cluster.scheduler

        class Asked(SchedulerPlugin):
            def transition(self, key, start, finish, *args, **kwargs):
                if finish == "processing" and key_split(key) in ("align-mlem", "align-reproject", "align-resnet"):
                    asked[str(key)] = dict(scheduler.tasks[key].resource_restrictions or {})

        scheduler.add_plugin(Asked())
        vol = correct_scan(scan_store, tmp_path / "vol.zarr", method="resnet", client=client)
    groups = sorted(key_split(k) for k in asked)
    assert groups == ["align-mlem"] * 2 + ["align-reproject"] * 2 + ["align-resnet"] * 2, asked  # two passes
    want = {"GPU": 1} if spec == "local-cuda" else {}  # the whole estimate on the GPU worker
    assert all(r == want for r in asked.values()), asked
    assert vol.is_complete()
    aligned = ScanStore.open(tmp_path / "vol-aligned.zarr")
    assert _residual_px(np.asarray(aligned.group["shifts"][:]), scan.shifts) < 1.0
