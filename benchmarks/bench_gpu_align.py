#!/usr/bin/env python
"""GPU benchmark of jitter alignment and of the batch chain on GPU workers, each beside the CPU figure.

What is measured (each part selected with ``--parts align,chain``, default both):

* align   (a) ``JitterAligner.predict`` (the shipped weights, ``tomoflow.align.resnet.load_aligner``)
          on ``--pairs`` (181) (projection, reference) pairs of the network's 160 x 160 input, on
          device cuda and on device cpu, with and without test-time flips (the resnet method's
          first and second pass): median of ``--repeats`` timed calls after a warm-up call, the
          largest difference between the two devices' predictions, peak GPU memory (torch).
          Target: under 1 s on the GPU (the paper: under 1 s on a P6000).
          (b) ``tomoflow correct --method resnet`` and ``--method hybrid`` on a simulated
          181 x 1024 x 1024 scan store, run as a user runs it: the real CLI in a child process with
          ``--cluster local-cuda``. Recorded: the command's wall time, the time to the scheduler's
          start (cluster start-up), every Dask task (group, compute interval, resource restrictions,
          worker) from a scheduler preload that only listens (``benchmarks/_dask_task_recorder.py``),
          per task group the summed compute seconds and the span from first start to last stop,
          whether every ``align-resnet`` task asked for ``{"GPU": 1}``, the stores' own stage timings
          (the aligned store's ``align`` stage: ``binned``, ``estimate_*``, ``shift``; the volume's
          ``recon``), the residual of the estimated shifts against the true jitter (gauge-fixed, px)
          and the GPU busy fraction (over the command's whole wall time, start-up included). Target:
          resnet correction under 10 s on the GPU, checked on the command's wall time
          (``target_met``) and on the aligned store's ``align`` stage alone (``target_met_align_stage``:
          flat-field + estimation + shift, without the cluster start-up and the reconstruction).
          The ``align-mlem``, ``align-reproject`` and ``align-resnet`` groups work on the stack
          resampled to 160 x 160 whatever the detector, so their figures compare directly between
          the full-size GPU run and a CPU run on fewer rows.
          CPU comparison in the same run: the same command with ``--cluster local``, first on the
          central ``--cpu-rows`` detector rows of the same scan (labelled with its size), then on
          the whole scan when the reduced run, scaled by the rows (an upper bound: the estimation
          works on a stack resampled to 160 x 160 whatever the rows), says it ends before the
          part's ``--time-cap``; otherwise the full-size CPU run is skipped with that reason.
* chain   a batch manifest (``tomoflow batch run``) of ``--chain-scans`` (3) raw DXchange scans of
          181 angles x ``--chain-rows`` (128) rows x 1024 columns through ``ingest -> align (resnet)
          -> recon``, plus one ``recover`` scan: a simulated HR/LFOV pair
          (``tomoflow.sim.simulate_multiscale_pair``) recovered with a U-Net of random weights
          (``tomoflow.testing.write_random_unet``: the network's quality does not matter for the
          time), registration dof 3. Run with ``--cluster local-cuda``, then the same manifest (fresh
          output root) with ``--cluster local``. Recorded per run: wall time, the batch report's
          seconds per stage (mean and sum over scans), per task group the tasks, compute seconds,
          span and resource restrictions (which carried ``GPU``), the GPU busy fraction
          (``nvidia-smi --query-gpu=utilization.gpu`` every 0.2 s; None without nvidia-smi) and the
          dashboard while the batch ran (``/sitemap.json``: the pages it serves; GET of ``/status``
          and the ``individual-gpu-*`` pages, each status code and whether it is a real Bokeh page).

Data
----
* The 1024 x 1024 scan is simulated at a quarter of the size (``tomoflow.sim.simulate_scan`` of a
  256^3 ``shepp_logan_3d``, 181 angles over [0, 180], jitter uniform in +-20 px on both axes,
  rotation axis 6 px (at 256) off the detector centre, no photon noise, the simulator's 10 flats and
  darks with a 10 % beam profile), and every raw frame repeated 4 x 4 (nearest) to 1024 x 1024,
  stored as uint16 counts (as ``tomoflow ingest`` stores 16-bit counts); the true jitter is 4 x the
  simulated one. Simulating 1024^3 directly means rasterising and projecting a 1024^3 phantom
  (4 GiB, minutes on the CPU); the repetition is exact for what the alignment measures: the
  pipeline bins a 1024-pixel detector 4 x 4 for the estimation (``max_size`` 256), which gives back
  the simulated 256^2 scan, while the full-resolution stages (flat-field, ``align-shift``, FBP)
  work on real 1024^2 arrays. The chain's scans are made the same way (``--chain-rows / 4`` rows x
  256 columns, repeated 4 x 4; 1000 counts open beam, no dark, written with
  ``tomoflow.testing.write_small_dxchange``); 128 rows is the least the network accepts there (32
  binned rows).
* The same stores and files serve the GPU and the CPU runs; every run writes to a fresh output.

Fairness
--------
* Both devices run the same code: the real CLI of this checkout, the same data, the same options;
  only ``--cluster`` differs (``local-cuda``: one worker per GPU, 4 threads, ``resources={"GPU": 1}``;
  ``local``: the default local cluster, one single-threaded worker process per core, with
  ``--device cpu``, else the default ``auto`` device would put the CPU workers' work on the GPU). Wall times
  include the cluster start-up, as a user sees them; the start-up is recorded apart
  (``cluster_start_s``) and the task spans exclude it.
* GPU timings of (a) are bracketed by ``torch.cuda.synchronize()``; a warm-up call (cuDNN autotune,
  CUDA context) precedes the timed calls on both devices; the median is the headline.
* Each part catches its own failures and records ``{"error": ...}`` (per run as well), and the JSON
  is rewritten after every part, so one broken part (or a killed run) loses nothing else.
* Without a GPU (``--quick`` on a CPU-only machine) the GPU side runs on the CPU and says so
  (``"device": "cpu"``, ``local-cuda`` replaced by the CPU cluster, ``"cluster_replaced"``).

Run on the GPU machine, from the repository root, with tomoflow importable (installed, or
``PYTHONPATH=$PWD``), torch with CUDA, CuPy and dask-cuda::

    python benchmarks/bench_gpu_align.py                  # both parts (< 3 min on one H100)
    python benchmarks/bench_gpu_align.py --parts align --time-cap 120
    python benchmarks/bench_gpu_align.py --quick          # tiny sizes (< 90 s on 2 CPU cores)

``--quick`` (64 x 64 detector, 31 angles, an in-process one-worker cluster of threads) writes
``bench_gpu_align_quick.json``; the full run ``bench_gpu_align.json`` (or ``--output``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RECORDER = BENCH_DIR / "_dask_task_recorder.py"
sys.path.insert(0, str(BENCH_DIR))
from _common import fmt_time, print_table, report_summary, time_call, write_results  # noqa: E402  (after the sys.path set-up)
from bench_gpu import GpuUtilSampler, _err, gpu_environment, log  # noqa: E402  (after the sys.path set-up)

PARTS = ("align", "chain")
FULL: dict[str, dict[str, Any]] = {
    "align": {
        "n_angles": 181,
        "size": 1024,
        "factor": 4,
        "jitter_sim_px": 20.0,
        "axis_offset_sim_px": 6.0,
        "pairs": 181,
        "repeats": 3,
        "methods": ["resnet", "hybrid"],
        "cpu_rows": 128,
    },
    "chain": {"scans": 3, "n_angles": 181, "rows": 128, "cols": 1024, "factor": 4, "jitter_sim_px": 4.0, "hr": 48},
}
QUICK: dict[str, dict[str, Any]] = {
    "align": {
        "n_angles": 16,
        "size": 64,
        "factor": 2,
        "jitter_sim_px": 2.0,
        "axis_offset_sim_px": 1.0,
        "pairs": 8,
        "repeats": 2,
        "methods": ["resnet", "hybrid"],
        "cpu_rows": 32,
    },
    "chain": {"scans": 2, "n_angles": 16, "rows": 32, "cols": 64, "factor": 2, "jitter_sim_px": 1.0, "hr": 24},
}
TARGETS = {"resnet_inference_gpu_s": 1.0, "resnet_correction_gpu_s": 10.0}
TIME_CAP_S = {"full": 30.0, "quick": 40.0}
CHILD_TIMEOUT_S = 600.0
LFOV_PER_HR = 2 / 3  # LFOV edge (voxels) per HR edge of the recover pair (4 um LFOV voxels, 1 um HR)
DASHBOARD_PAGES = ("/status", "/gpu", "/individual-gpu-utilization", "/individual-gpu-memory")
PEER_PACKAGES = ["dask", "distributed", "dask-cuda", "cupy", "cupy-cuda12x", "cupy-cuda13x", "zarr", "torch"]


# ----------------------------------------------------------------------------- environment
def gpu_state() -> dict[str, Any]:
    """What the GPU side can use: torch on CUDA (part a), dask-cuda (the ``local-cuda`` cluster)."""
    out: dict[str, Any] = {"torch_cuda": False, "dask_cuda": importlib.util.find_spec("dask_cuda") is not None}
    try:
        import torch

        out["torch_cuda"] = bool(torch.cuda.is_available())
        if out["torch_cuda"]:
            out["gpu_name"] = torch.cuda.get_device_name(0)
    except Exception as exc:  # noqa: BLE001  (no torch, or a broken CUDA: the GPU side runs on the CPU)
        out["torch_error"] = f"{type(exc).__name__}: {exc}"
    out["gpu_cluster"] = out["torch_cuda"] and out["dask_cuda"]
    return out


def cluster_specs(args: argparse.Namespace, gpu: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """The ``--cluster`` of the GPU side and of the CPU side. ``--quick``: the CPU side is an in-process
    cluster of one worker of 2 threads (a settings file, ``processes: false``), which starts in well under
    a second; without a GPU the GPU side is that cluster too (recorded)."""
    cpu_spec = "local"
    if args.quick:
        cpu_spec = str(workdir / "local-threads.yaml")
        Path(cpu_spec).write_text(
            "kind: local\nprocesses: false\nn_workers: 1\nthreads_per_worker: 2\ndashboard_address: '127.0.0.1:0'\n"
        )
    if gpu["gpu_cluster"]:
        return {"gpu": "local-cuda", "cpu": cpu_spec, "gpu_device": "cuda", "cluster_replaced": None}
    why = "torch sees no CUDA device" if not gpu["torch_cuda"] else "dask-cuda is not installed"
    return {
        "gpu": cpu_spec,
        "cpu": cpu_spec,
        "gpu_device": "cpu",
        "cluster_replaced": f"local-cuda -> {cpu_spec} ({why})",
    }


# ----------------------------------------------------------------------------- data
class Repeated:
    """Raw counts ``(angle, row, col)`` of a small scan, each frame repeated ``factor x factor``
    (nearest), rows ``r0:r1`` of the result, as rounded uint16: an array-like sliced along angles, what
    :func:`tomoflow.io.write_scan` streams from (one block in memory)."""

    def __init__(self, frames: np.ndarray, factor: int, rows: tuple[int, int] | None = None) -> None:
        self.frames, self.factor = frames, int(factor)
        full = frames.shape[1] * self.factor
        self.r0, self.r1 = rows if rows is not None else (0, full)
        self.shape = (frames.shape[0], self.r1 - self.r0, frames.shape[2] * self.factor)
        self.dtype = np.dtype(np.uint16)
        self.ndim = 3

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        a = self[:]
        return a if dtype is None else a.astype(dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        first = key[0] if isinstance(key, tuple) else key
        rest = key[1:] if isinstance(key, tuple) else ()
        if isinstance(first, (int, np.integer)):
            return self[int(first) : int(first) + 1][(0, *rest)]
        f = self.factor
        b = np.asarray(self.frames[first], dtype=np.float32)
        b = np.repeat(np.repeat(b, f, axis=1)[:, self.r0 : self.r1], f, axis=2)
        return np.clip(np.rint(b), 0, 65535).astype(np.uint16)[(slice(None), *rest)]


def simulate_small(cfg: dict[str, Any], rows: int, cols: int, seed: int, **sim: Any) -> Any:
    """``simulate_scan`` of a ``(rows, cols, cols)`` Shepp-Logan phantom at the simulation scale."""
    from tomoflow.sim import shepp_logan_3d, simulate_scan

    angles = np.linspace(0.0, 180.0, cfg["n_angles"])
    return simulate_scan(
        shepp_logan_3d((rows, cols, cols)), angles, jitter_px=cfg["jitter_sim_px"], photons=None, seed=seed, **sim
    )


def make_align_data(cfg: dict[str, Any], workdir: Path, cpu_rows: int) -> dict[str, Any]:
    """The simulated scan (module docstring, "Data"), its full-size store and the store of its central
    ``cpu_rows`` rows."""
    from tomoflow.io import write_scan

    f, n = cfg["factor"], cfg["size"]
    small = n // f
    t0 = time.perf_counter()
    center = (small - 1) / 2.0 + cfg["axis_offset_sim_px"]
    scan = simulate_small(cfg, small, small, seed=11, center=center)
    sim_s = time.perf_counter() - t0
    stores: dict[str, Path] = {}
    write_s: dict[str, float] = {}
    for label, rows in (("full", n), ("cpu_rows", cpu_rows)):
        if label == "cpu_rows" and rows >= n:
            continue
        r0 = (n - rows) // 2
        path = workdir / f"scan-{rows}rows.zarr"
        t = time.perf_counter()
        write_scan(
            path,
            Repeated(scan.projections, f, (r0, r0 + rows)),
            scan.angles_deg,
            flats=Repeated(scan.flats, f, (r0, r0 + rows))[:],
            darks=Repeated(scan.darks, f, (r0, r0 + rows))[:],
            pixel_size_um=1.0,
        )
        write_s[label] = round(time.perf_counter() - t, 3)
        stores[label] = path
    return {
        "scan": scan,
        "stores": stores,
        "truth": np.asarray(scan.shifts, dtype=np.float64) * f,
        "record": {
            "how": f"simulate_scan of shepp_logan_3d({small}^3) at {small} x {small}, frames repeated {f} x {f} "
            f"(nearest) to {n} x {n}, uint16 counts; truth = {f} x the simulated jitter",
            "shape": [cfg["n_angles"], n, n],
            "simulated_shape": [cfg["n_angles"], small, small],
            "jitter_px": f"uniform in +-{cfg['jitter_sim_px'] * f:g} px (full size) on both axes",
            "true_center_px": (center + 0.5) * f - 0.5,
            "simulate_s": round(sim_s, 3),
            "write_s": write_s,
        },
    }


# ----------------------------------------------------------------------------- child runs of the CLI
def _terminate(proc: subprocess.Popen[bytes], grace: float) -> str:
    """Stop a child (and its process group) the way Ctrl-C does; kill it after ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=grace)
        return "interrupted (SIGINT)"
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return "killed (SIGKILL after SIGINT)"


def _read_records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def probe_dashboard(port: int, pages: Any = None) -> dict[str, Any]:
    """A GET of ``/sitemap.json`` and of :data:`DASHBOARD_PAGES`; ``pages``: the Bokeh pages the
    scheduler serves (from the preload), recorded as they are."""
    from tomoflow.testing import http_get

    base = f"http://127.0.0.1:{port}"
    out: dict[str, Any] = {"url": base, "bokeh_pages": pages, "pages": {}}
    try:
        status, body = http_get(base + "/sitemap.json", timeout=10)
        paths = json.loads(body).get("paths", []) if status == 200 else []
        out["sitemap_status"] = status  # distributed 2026.7's /sitemap.json fails (500) on its Bokeh routes
        out["sitemap"] = sorted(p for p in paths if not p.startswith("/static"))
    except Exception as exc:  # noqa: BLE001  (a dashboard that does not answer is a result)
        out["sitemap_error"] = f"{type(exc).__name__}: {exc}"
    for page in DASHBOARD_PAGES:
        try:
            status, body = http_get(base + page, timeout=10)
            out["pages"][page] = {"status": status, "bokeh_page": "Bokeh.embed" in body and "Dask needs" not in body}
        except Exception as exc:  # noqa: BLE001
            out["pages"][page] = {"error": f"{type(exc).__name__}: {exc}"}
    out["answered"] = any(p.get("status") == 200 for p in out["pages"].values())
    return out


def task_groups(tasks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per task group: tasks, summed compute seconds, span (first start to last stop), the distinct
    resource restrictions the tasks carried, tasks that asked for a GPU, workers, failures."""
    groups: dict[str, dict[str, Any]] = {}
    for t in tasks:
        g = groups.setdefault(
            t["group"],
            {"tasks": 0, "compute_s": 0.0, "_t0": [], "_t1": [], "resources": [], "gpu_tasks": 0, "workers": set()},
        )
        g["tasks"] += 1
        g["compute_s"] += float(t.get("compute_s", 0.0))
        if "compute" in t:
            g["_t0"].append(t["compute"][0])
            g["_t1"].append(t["compute"][1])
        if t["resources"] not in g["resources"]:
            g["resources"].append(t["resources"])
        g["gpu_tasks"] += int("GPU" in t["resources"])
        g["workers"].add(str(t.get("worker")))
        g["erred"] = g.get("erred", 0) + int(t["state"] == "erred")
    for g in groups.values():
        t0, t1 = g.pop("_t0"), g.pop("_t1")
        g["span_s"] = round(max(t1) - min(t0), 4) if t0 else None
        g["first_start"] = min(t0) if t0 else None
        g["compute_s"] = round(g["compute_s"], 4)
        g["workers"] = len(g["workers"])
    return groups


def run_cli(
    cli_args: list[str], tag: str, workdir: Path, *, deadline: float | None = None, timeout: float = CHILD_TIMEOUT_S
) -> dict[str, Any]:
    """Run ``python -m tomoflow.cli <cli_args>`` in a child process (its own process group), with the
    task-recording scheduler preload, sampling the GPU and probing the dashboard once the scheduler is
    up. Past ``deadline`` (``time.perf_counter()`` value) the child is stopped as Ctrl-C stops it."""
    record = workdir / f"{tag}-tasks.jsonl"
    record.unlink(missing_ok=True)
    logfile = workdir / f"{tag}.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env["DASK_DISTRIBUTED__SCHEDULER__PRELOAD"] = json.dumps([str(RECORDER)])
    env["BENCH_TASK_RECORD"] = str(record)
    cmd = [sys.executable, "-m", "tomoflow.cli", *cli_args]
    out: dict[str, Any] = {"command": "tomoflow " + " ".join(cli_args)}
    dash: dict[str, Any] = {}

    def watch_dashboard(stop: threading.Event) -> None:
        while not stop.is_set():
            sched = [r for r in _read_records(record) if r.get("event") == "scheduler"]
            if sched:
                port = sched[0].get("dashboard_port")
                pages = sched[0].get("dashboard_pages")
                dash.update(probe_dashboard(port, pages) if port else {"answered": False, "note": "no dashboard port"})
                return
            stop.wait(0.2)

    stop = threading.Event()
    watcher = threading.Thread(target=watch_dashboard, args=(stop,), daemon=True)
    start_epoch = time.time()
    t0 = time.perf_counter()
    stopped = None
    with open(logfile, "wb") as fh, GpuUtilSampler(0.2) as util:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        watcher.start()
        limit = t0 + timeout if deadline is None else min(deadline, t0 + timeout)
        while proc.poll() is None:
            if time.perf_counter() >= limit:
                stopped = _terminate(proc, grace=30.0)
                break
            time.sleep(0.1)
        wall = time.perf_counter() - t0
    stop.set()
    watcher.join(timeout=30)
    records = _read_records(record)
    tasks = [r for r in records if r.get("event") == "task"]
    sched = [r for r in records if r.get("event") == "scheduler"]
    first = min((t["compute"][0] for t in tasks if "compute" in t), default=None)
    last = max((t["compute"][1] for t in tasks if "compute" in t), default=None)
    out.update(
        {
            "returncode": proc.returncode,
            "wall_s": round(wall, 3),
            "stopped_at_time_cap": stopped,
            "cluster_start_s": round(sched[0]["time"] - start_epoch, 3) if sched else None,
            "tasks": len(tasks),
            "tasks_span_s": round(last - first, 3) if first is not None and last is not None else None,
            "task_groups": task_groups(tasks),
            "gpu_tasks": sorted({t["group"] for t in tasks if "GPU" in t["resources"]}),
            "gpu_utilization": util.as_dict(),
            "dashboard": dash or {"answered": None, "note": "the scheduler never started"},
        }
    )
    if proc.returncode != 0:
        out["log_tail"] = logfile.read_text(errors="replace")[-3000:]
    return out


# ----------------------------------------------------------------------------- part align
def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def inference(cfg: dict[str, Any], scan: Any, device: str) -> dict[str, Any]:
    """(a): ``predict`` of ``cfg["pairs"]`` network-input pairs on ``device``, flips off and on."""
    import torch

    from tomoflow.align.resnet import load_aligner, to_input_size
    from tomoflow.recon import normalize_log

    n = cfg["pairs"]
    idx = np.arange(n) % scan.projections.shape[0]
    measured = to_input_size(normalize_log(scan.projections[idx], scan.flats, scan.darks))
    reference = to_input_size(scan.ideal_line_integrals[idx])
    t = time.perf_counter()
    aligner = load_aligner(device=device)
    out: dict[str, Any] = {
        "device": str(aligner.device),
        "load_s": round(time.perf_counter() - t, 3),
        "pairs": n,
        "input": list(measured.shape),
        "torch_threads": torch.get_num_threads(),
    }
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    preds = {}
    for flips in (False, True):

        def call(flips: bool = flips) -> np.ndarray:
            _sync(device)
            y = aligner.predict(measured, reference, flips=flips)
            _sync(device)
            return y

        timing, preds[flips] = time_call(call, repeat=cfg["repeats"], warmup=1)
        out[f"flips_{str(flips).lower()}"] = {**timing.as_dict(per=n), "median_ms_per_pair": timing.median / n * 1e3}
    if device == "cuda":
        out["gpu_peak_bytes"] = int(torch.cuda.max_memory_allocated())
        del aligner
        torch.cuda.empty_cache()
    out["_pred"] = preds
    return out


def _residual(store: Path, truth: np.ndarray, angles: np.ndarray) -> dict[str, Any]:
    """The aligned store's own record (align stage timings, method, centre) and its shifts' residual
    against the true jitter, both gauge-fixed (px)."""
    from tomoflow.align.gauge import fix_gauge
    from tomoflow.io import ScanStore

    s = ScanStore.open(store)
    rec = s.stage("align")
    est = np.asarray(fix_gauge(np.asarray(s.group["shifts"][:]), angles_deg=angles).shifts)
    rows = s.shape[1]
    ref = np.asarray(fix_gauge(truth, angles_deg=angles).shifts)
    r = est - ref
    return {
        "align_stage_s": rec.seconds,
        "align_timings": rec.timings,
        "method": rec.info.get("method"),
        "bin_factor": rec.info.get("bin_factor"),
        "center": s.attrs.rotation_center,
        "rows": rows,
        "rmse_dy_px": float(np.sqrt(np.mean(r[:, 0] ** 2))),
        "rmse_dx_px": float(np.sqrt(np.mean(r[:, 1] ** 2))),
    }


def cpu_only(spec: str) -> list[str]:
    """``--device cpu`` for a run on a CPU cluster: on a GPU machine the default device (``auto``) would
    put every CPU worker's arrays and networks on the GPU, and the CPU comparison would not be one."""
    return [] if spec == "local-cuda" else ["--device", "cpu"]


def correct_run(
    store: Path, method: str, spec: str, tag: str, workdir: Path, data: dict[str, Any], deadline: float | None = None
) -> dict[str, Any]:
    """``tomoflow correct STORE -o VOL --method METHOD --cluster SPEC`` as a child; its records."""
    from tomoflow.io import VolumeStore

    vol = workdir / f"vol-{tag}.zarr"
    r = run_cli(
        [*cpu_only(spec), "correct", str(store), "-o", str(vol), "--method", method, "--cluster", spec],
        tag,
        workdir,
        deadline=deadline,
    )
    r["cluster"] = spec
    try:
        if r["returncode"] == 0:
            r["pipeline_report"] = _residual(
                vol.with_name(vol.stem + "-aligned.zarr"), data["truth"], data["scan"].angles_deg
            )
            r["pipeline_report"]["recon_stage_s"] = VolumeStore.open(vol).stages()["recon"].seconds
        resnet = r["task_groups"].get("align-resnet")
        r["align_resnet_gpu_resource"] = None if resnet is None else resnet["resources"] == [{"GPU": 1}]
    except Exception as exc:  # noqa: BLE001  (the run's figures stay; the report's reading failed)
        r["pipeline_report"] = _err(exc)
    for out in (vol, vol.with_name(vol.stem + "-aligned.zarr")):  # a 1024^3 volume is 4 GiB: free the disk
        shutil.rmtree(out, ignore_errors=True)
    return r


def part_align(cfg: dict[str, Any], args: argparse.Namespace, env: dict[str, Any], workdir: Path) -> dict[str, Any]:
    res: dict[str, Any] = {"time_cap_s": args.time_cap}
    data = make_align_data(cfg, workdir, cfg["cpu_rows"])
    res["data"] = data["record"]
    rec = data["record"]
    log(f"scan {rec['shape']} simulated in {rec['simulate_s']:.1f} s, written in {rec['write_s']} s")

    # (a) inference
    inf: dict[str, Any] = {"target_gpu_s": TARGETS["resnet_inference_gpu_s"]}
    for side, device in (("gpu", env["specs"]["gpu_device"]), ("cpu", "cpu")):
        try:
            inf[side] = inference(cfg, data["scan"], device)
            m = inf[side]["flips_false"]["median_s"]
            log(f"(a) predict {cfg['pairs']} pairs on {device} ({side} side): median {fmt_time(m)} (flips off)")
        except Exception as exc:  # noqa: BLE001
            inf[side] = _err(exc)
    preds = [inf[s].pop("_pred", None) for s in ("gpu", "cpu")]
    if all(p is not None for p in preds):
        inf["max_abs_diff_px"] = {
            f"flips_{str(k).lower()}": float(np.max(np.abs(preds[0][k] - preds[1][k]))) for k in (False, True)
        }
    g = inf.get("gpu", {}).get("flips_false", {}).get("median_s")
    inf["target_met"] = (
        (g < TARGETS["resnet_inference_gpu_s"]) if g is not None and inf["gpu"]["device"] != "cpu" else None
    )
    res["inference"] = inf

    # (b) correct on the GPU cluster, then on the CPU within --time-cap
    res["correct"] = correct_both(cfg, args, env["specs"], workdir, data)
    return res


def full_size_estimate(reduced: dict[str, Any], ratio: float) -> float | None:
    """Seconds a full-size CPU run would take, from its run on fewer rows (None when that failed): the
    estimation's network-space work (``estimate_mlem_s``, ``estimate_reproject_s``, ``estimate_network_s``
    of the store's align stage: the stack is resampled to 160 x 160 whatever the rows) as it was, the rest
    of the wall time (start-up, full-resolution stages, registration on the binned rows) times ``ratio``:
    an upper bound, as the start-up does not grow with the rows."""
    if reduced.get("returncode") != 0:
        return None
    timings = (reduced.get("pipeline_report") or {}).get("align_timings") or {}
    fixed = sum(float(timings.get(k, 0.0)) for k in ("estimate_mlem_s", "estimate_reproject_s", "estimate_network_s"))
    fixed = min(fixed, reduced["wall_s"])
    return fixed + (reduced["wall_s"] - fixed) * ratio


def correct_both(
    cfg: dict[str, Any], args: argparse.Namespace, specs: dict[str, Any], workdir: Path, data: dict[str, Any]
) -> dict[str, Any]:
    """(b): every method on the GPU cluster at full size; then on the CPU, on the reduced rows and, when
    its estimate fits in what is left of ``--time-cap`` (counted from the first CPU run), at full size.
    Without a GPU the GPU side already ran the full size on the CPU cluster: that run is not repeated."""
    corr: dict[str, Any] = {
        "gpu": {},
        "cpu_reduced": {},
        "cpu_full": {},
        "target_gpu_s": TARGETS["resnet_correction_gpu_s"],
    }
    n, na, rows = cfg["size"], cfg["n_angles"], cfg["cpu_rows"]
    for m in cfg["methods"]:
        try:
            corr["gpu"][m] = correct_run(data["stores"]["full"], m, specs["gpu"], f"correct-{m}-gpu", workdir, data)
            corr["gpu"][m]["device"] = specs["gpu_device"]
            log(f"(b) correct --method {m} --cluster {Path(specs['gpu']).name}: {corr['gpu'][m]['wall_s']:.1f} s")
        except Exception as exc:  # noqa: BLE001
            corr["gpu"][m] = _err(exc)
    deadline = time.perf_counter() + args.time_cap
    full_label = f"CPU, full size {na} x {n} x {n}"
    for m in cfg["methods"]:
        est = None
        if "cpu_rows" in data["stores"]:
            try:
                r = correct_run(
                    data["stores"]["cpu_rows"], m, specs["cpu"], f"correct-{m}-cpu{rows}", workdir, data, deadline
                )
                r["label"] = f"CPU, central {rows} of {n} rows ({na} x {rows} x {n})"
                est = full_size_estimate(r, n / rows)
                log(f"(b) CPU {m} on {rows} rows: {r['wall_s']:.1f} s (returncode {r['returncode']})")
            except Exception as exc:  # noqa: BLE001
                r = _err(exc)
            corr["cpu_reduced"][m] = r
        left = deadline - time.perf_counter()
        why = None
        if specs["gpu"] == specs["cpu"]:
            why = "no GPU: the GPU side ran this size on the same CPU cluster (see gpu)"
        elif "cpu_rows" in data["stores"] and est is None:
            why = "the reduced run failed or was stopped at the time cap"
        elif est is not None and est > left:
            why = f"estimated {est:.0f} s (from the {rows}-row run) > {max(left, 0):.0f} s left of --time-cap"
        if why is not None:
            corr["cpu_full"][m] = {"skipped": why, "estimated_s": est, "label": full_label}
            log(f"(b) CPU {m} at full size skipped: {why}")
            continue
        try:
            r = correct_run(data["stores"]["full"], m, specs["cpu"], f"correct-{m}-cpu", workdir, data, deadline)
            corr["cpu_full"][m] = {**r, "label": full_label, "estimated_s": est}
            log(f"(b) CPU {m} at full size: {r['wall_s']:.1f} s (returncode {r['returncode']})")
        except Exception as exc:  # noqa: BLE001
            corr["cpu_full"][m] = _err(exc)
    rn = corr["gpu"].get("resnet", {})
    ok = rn.get("returncode") == 0 and specs["gpu_device"] == "cuda"
    align_s = (rn.get("pipeline_report") or {}).get("align_stage_s")
    corr["target_met"] = rn["wall_s"] < TARGETS["resnet_correction_gpu_s"] if ok else None  # the whole command
    corr["target_met_align_stage"] = (  # the jitter correction alone (align stage), without start-up and recon
        align_s < TARGETS["resnet_correction_gpu_s"] if ok and align_s is not None else None
    )
    return corr


# ----------------------------------------------------------------------------- part chain
def make_chain_data(cfg: dict[str, Any], workdir: Path, with_recover: bool) -> dict[str, Any]:
    """Raw DXchange scans (module docstring, "Data"), the recover pair and its random U-Net."""
    from tomoflow.testing import write_small_dxchange

    f = cfg["factor"]
    raw = workdir / "raw"
    raw.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    names = []
    for k in range(cfg["scans"]):
        scan = simulate_small(
            cfg, cfg["rows"] // f, cfg["cols"] // f, seed=20 + k, flat_level=1000.0, dark_level=0.0, flat_variation=0.0
        )
        counts = Repeated(scan.projections, f)[:].astype(np.float32)
        write_small_dxchange(raw / f"scan{k}.h5", angles_deg=scan.angles_deg, counts=counts)
        names.append(f"scan{k}")
    rec: dict[str, Any] = {
        "scans": names,
        "shape": [cfg["n_angles"], cfg["rows"], cfg["cols"]],
        "how": f"simulate_scan of shepp_logan_3d at 1/{f} size, frames repeated {f} x {f}; 1000 counts open beam",
        "scans_s": round(time.perf_counter() - t0, 3),
    }
    if with_recover:
        from tomoflow.io.synthetic import write_multiscale_pair
        from tomoflow.sim import simulate_multiscale_pair
        from tomoflow.testing import write_random_unet

        t = time.perf_counter()
        hr = cfg["hr"]
        lfov = max(16, int(round(hr * LFOV_PER_HR)))
        pair = simulate_multiscale_pair(hr_shape=(hr,) * 3, lfov_shape=(lfov,) * 3, prior_error_lfov_vox=1.0, seed=3)
        write_multiscale_pair(pair, raw / "hr.zarr", raw / "lfov.zarr")
        write_random_unet(raw / "unet.safetensors")
        rec["recover_pair"] = {
            "hr_shape": [hr] * 3,
            "lfov_shape": [lfov] * 3,
            "unet": "random weights, channels (4, 8)",
        }
        rec["recover_s"] = round(time.perf_counter() - t, 3)
    return {"record": rec, "names": names, "recover": with_recover}


def write_chain_manifest(workdir: Path, tag: str, data: dict[str, Any], method: str) -> Path:
    from tomoflow.testing import write_manifest_yaml

    scans = [f"name: {n}, path: raw/{n}.h5, pixel_size_um: 1.0, stages: [ingest, align, recon]" for n in data["names"]]
    pipeline = f"[ingest, {{stage: align, method: {method}}}, recon"
    if data["recover"]:
        scans.append("name: pair, volume: raw/lfov.zarr, hr: raw/hr.zarr, stages: [recover]")
        pipeline += ", {stage: recover, model: raw/unet.safetensors, dof: 3}"
    return write_manifest_yaml(
        workdir / f"batch-{tag}.yaml", f"out-{tag}", scans, pipeline=pipeline + "]", cluster="local"
    )


def batch_run(
    workdir: Path, tag: str, data: dict[str, Any], method: str, spec: str, deadline: float | None
) -> dict[str, Any]:
    manifest = write_chain_manifest(workdir, tag, data, method)
    r = run_cli(
        [*cpu_only(spec), "batch", "run", str(manifest), "--cluster", spec], f"batch-{tag}", workdir, deadline=deadline
    )
    r["cluster"] = spec
    report = workdir / f"out-{tag}" / "batch-report.json"
    if report.is_file():
        doc = json.loads(report.read_text())
        per: dict[str, list[float]] = {}
        status: dict[str, str] = {}
        for s in doc.get("scans", []):
            status[s["name"]] = s["status"]
            for st in s.get("stages", []):
                per.setdefault(st["stage"], []).append(float(st["seconds"]))
        r["scan_status"] = status
        r["stage_seconds"] = {
            k: {"scans": len(v), "mean_s": round(statistics.fmean(v), 3), "sum_s": round(sum(v), 3)}
            for k, v in per.items()
        }
        r["batch_seconds"] = doc.get("seconds")
    else:
        r["scan_status"] = None
        r["note"] = f"no batch report at {report}"
    return r


def part_chain(cfg: dict[str, Any], args: argparse.Namespace, env: dict[str, Any], workdir: Path) -> dict[str, Any]:
    with_recover = importlib.util.find_spec("torch") is not None
    data = make_chain_data(cfg, workdir, with_recover)
    res: dict[str, Any] = {"time_cap_s": args.time_cap, "data": data["record"], "align_method": args.chain_method}
    if not with_recover:
        res["recover_skipped"] = "torch is not installed (the U-Net needs it)"
    log(f"chain data made in {data['record']['scans_s']} s (+ recover pair {data['record'].get('recover_s')} s)")
    specs = env["specs"]
    for side, spec in (("gpu", specs["gpu"]), ("cpu", specs["cpu"])):
        if side == "cpu" and specs["gpu"] == specs["cpu"]:
            res["cpu"] = {"same_run_as": "gpu", "reason": "no GPU: the GPU side ran on the same CPU cluster"}
            continue
        try:  # the CPU run may take --time-cap seconds; it is stopped as Ctrl-C stops it after that
            deadline = None if side == "gpu" else time.perf_counter() + args.time_cap
            r = batch_run(workdir, side, data, args.chain_method, spec, deadline)
            r["device"] = specs["gpu_device"] if side == "gpu" else "cpu"
            if r["stopped_at_time_cap"]:
                r["label"] = f"stopped at --time-cap {args.time_cap:g} s: only the scans complete by then are timed"
            res[side] = r
            log(f"chain on {Path(spec).name}: {r['wall_s']:.1f} s, scans {r['scan_status']}")
        except Exception as exc:  # noqa: BLE001
            res[side] = _err(exc)
    return res


# ----------------------------------------------------------------------------- report
def summarise(results: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = {}
    a = results.get("align", {})
    inf = a.get("inference", {})
    for side in ("gpu", "cpu"):
        r = inf.get(side, {})
        if "flips_false" in r:
            s[f"inference_{side}_{r['device']}_median_s"] = r["flips_false"]["median_s"]
            s[f"inference_{side}_{r['device']}_flips_median_s"] = r["flips_true"]["median_s"]
    s["inference_target_met"] = inf.get("target_met")
    corr = a.get("correct", {})
    for side in ("gpu", "cpu_reduced", "cpu_full"):
        for m, r in corr.get(side, {}).items():
            s[f"correct_{m}_{side}_s"] = r.get("wall_s", r.get("skipped") or r.get("error"))
    s["correct_target_met"] = corr.get("target_met")
    s["align_resnet_gpu_resource"] = corr.get("gpu", {}).get("resnet", {}).get("align_resnet_gpu_resource")
    ch = results.get("chain", {})
    for side in ("gpu", "cpu"):
        r = ch.get(side, {})
        if "wall_s" in r:
            s[f"chain_{side}_wall_s"] = r["wall_s"]
            s[f"chain_{side}_gpu_tasks"] = r["gpu_tasks"]
            s[f"chain_{side}_gpu_busy"] = r["gpu_utilization"].get("gpu_busy_fraction")
            s[f"chain_{side}_dashboard_answered"] = r["dashboard"].get("answered")
    for part, r in results.items():
        s[f"{part}_status"] = "error" if isinstance(r, dict) and "error" in r else "ok"
    return s


def print_summary(results: dict[str, Any]) -> None:
    rows = []
    corr = results.get("align", {}).get("correct", {})
    for side in ("gpu", "cpu_reduced", "cpu_full"):
        for m, r in corr.get(side, {}).items():
            groups = r.get("task_groups", {})
            rows.append(
                [
                    f"correct {m}",
                    side,
                    r.get("label", r.get("device", "")),
                    fmt_time(r.get("wall_s")) if "wall_s" in r else r.get("skipped", r.get("error", "-"))[:60],
                    fmt_time((groups.get("align-resnet") or {}).get("compute_s")),
                    fmt_time((groups.get("align-mlem") or {}).get("compute_s")),
                    ",".join(r.get("gpu_tasks", [])) or "-",
                ]
            )
    ch = results.get("chain", {})
    for side in ("gpu", "cpu"):
        r = ch.get(side, {})
        if "wall_s" in r:
            rows.append(
                [
                    "batch chain",
                    side,
                    r.get("device", ""),
                    fmt_time(r["wall_s"]),
                    "-",
                    "-",
                    ",".join(r["gpu_tasks"]) or "-",
                ]
            )
    if rows:
        print_table(rows, ["run", "side", "device / size", "wall", "align-resnet", "align-mlem", "GPU task groups"])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)} (default all)"
    )
    ap.add_argument("--quick", action="store_true", help="tiny sizes, in-process cluster (seconds; CPU without a GPU)")
    ap.add_argument(
        "--output", type=Path, default=None, help="JSON path (default benchmarks/results/bench_gpu_align[_quick].json)"
    )
    ap.add_argument(
        "--time-cap",
        type=float,
        default=None,
        help=f"seconds per part by which its CPU comparisons must end (default {TIME_CAP_S['full']:g}, "
        f"{TIME_CAP_S['quick']:g} with --quick): a full-size CPU run estimated to end later is skipped, one "
        "still running then is interrupted; the reason is recorded",
    )
    ap.add_argument("--size", type=int, default=None, help="align: detector rows = columns (default 1024)")
    ap.add_argument(
        "--angles", type=int, default=None, help="align and chain: projections over 180 degrees (default 181)"
    )
    ap.add_argument(
        "--cpu-rows", type=int, default=None, help="align: rows of the reduced CPU comparison (default 128)"
    )
    ap.add_argument("--methods", default=None, help="align: correct methods, comma-separated (default resnet,hybrid)")
    ap.add_argument("--pairs", type=int, default=None, help="align (a): pairs per predict call (default 181)")
    ap.add_argument("--repeats", type=int, default=None, help="align (a): timed calls after the warm-up (default 3)")
    ap.add_argument("--chain-scans", type=int, default=None, help="chain: raw scans (default 3)")
    ap.add_argument("--chain-rows", type=int, default=None, help="chain: detector rows (default 128; 1024 columns)")
    ap.add_argument("--chain-method", default="resnet", help="chain: the align stage's method (default resnet)")
    ap.add_argument("--workdir", default=None, help="folder for the temporary stores (default: system temp)")
    args = ap.parse_args(argv)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = [p for p in args.parts if p not in PARTS]
    if bad:
        ap.error(f"unknown part(s) {bad}; choose from {PARTS}")
    if args.time_cap is None:
        args.time_cap = TIME_CAP_S["quick" if args.quick else "full"]
    return args


def configs(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    cfg = {k: dict(v) for k, v in (QUICK if args.quick else FULL).items()}
    a, c = cfg["align"], cfg["chain"]
    if args.size:
        a["size"] = args.size
    if args.angles:
        a["n_angles"] = c["n_angles"] = args.angles
    for key, val in (("cpu_rows", args.cpu_rows), ("pairs", args.pairs), ("repeats", args.repeats)):
        if val:
            a[key] = val
    if args.methods:
        a["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.chain_scans:
        c["scans"] = args.chain_scans
    if args.chain_rows:
        c["rows"] = args.chain_rows
    for sec in (a, c):
        if (sec.get("size", 0) or sec.get("cols", 0)) % sec["factor"]:
            raise SystemExit(f"sizes must be multiples of {sec['factor']}")
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = configs(args)
    name = "bench_gpu_align_quick" if args.quick else "bench_gpu_align"
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_gpu_align_", dir=args.workdir) as tmp:
        workdir = Path(tmp)
        gpu = gpu_state()
        specs = cluster_specs(args, gpu, workdir)
        env = {"gpu": gpu, "specs": specs}
        log(f"GPU side: {specs['gpu']} (device {specs['gpu_device']}); CPU side: {specs['cpu']}")
        if specs["cluster_replaced"]:
            log(f"no GPU: {specs['cluster_replaced']}")
        results: dict[str, Any] = {}
        payload: dict[str, Any] = {
            "quick": bool(args.quick),
            "parts_requested": args.parts,
            "config": cfg,
            "time_cap_s": args.time_cap,
            "device": specs["gpu_device"],
            "clusters": specs,
            "gpu": {**gpu, **gpu_environment()},
            "targets": TARGETS,
            "results": results,
        }
        fns: dict[str, Callable[..., dict[str, Any]]] = {"align": part_align, "chain": part_chain}
        path = None
        for part in args.parts:
            log(f"===== part {part} =====")
            t0 = time.perf_counter()
            part_dir = workdir / part
            part_dir.mkdir()
            try:
                r = fns[part](cfg[part], args, env, part_dir)
            except Exception as exc:  # noqa: BLE001 - one broken part must not lose the others
                r = _err(exc)
                log(f"part {part} FAILED: {r['error']}")
                print(r["traceback"], file=sys.stderr, flush=True)
            r["part_seconds"] = round(time.perf_counter() - t0, 2)
            results[part] = r
            payload.update(
                {
                    "summary": summarise(results),
                    "complete": False,
                    "total_runtime_s": round(time.perf_counter() - t_start, 1),
                }
            )
            path = write_results(name, payload, path=args.output, extra_packages=PEER_PACKAGES)  # after every part
        payload.update(
            {
                "summary": summarise(results),
                "complete": True,
                "total_runtime_s": round(time.perf_counter() - t_start, 1),
            }
        )
        path = write_results(name, payload, path=args.output, extra_packages=PEER_PACKAGES)
    print_summary(results)
    report_summary(payload["summary"], path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
