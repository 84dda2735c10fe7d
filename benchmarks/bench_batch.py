"""Batch runner (``tomoflow batch run``): throughput and scaling over an archive, and a 10,000-scan run.

Part 1, throughput. An archive of N small simulated DXchange scans (default 24; ``--quick`` 6): a
disk phantom, shifted per scan, projected at 90 angles onto 16 rows x 64 columns, as raw counts with 2
flats, 1 dark and the pixel size, the rotation axis a little off centre (different per scan); and a
second archive of 16 larger scans (360 angles x 32 rows x 256 columns; none with ``--quick``), in
which the compute of a scan outweighs its fixed costs. Each archive's manifest runs ``ingest`` and
``recon`` (FBP) on every scan, twice: with the centre ``auto`` (estimated per scan, as in a manifest
made by ``tomoflow batch scan-archive``; the estimate runs in the runner process, not on a worker)
and with the true centre given in the manifest. Each is run with
:func:`tomoflow.batch.run_batch` (the default number of scans in flight: twice the workers)
on a ``LocalCluster`` of 1, then 2 single-threaded worker processes, 3 times (``--quick`` once), each
time into a fresh output root; the run of median wall time is reported. The workers run either each
pinned to a CPU of its own (``--pin pinned``: a task's thread budget is then 1, so 1 worker = 1 core)
or unpinned (``default``: a lone worker's tasks get every CPU, because the stage engine gives a task
the host's CPUs divided by the worker threads on it); both by default. Before the timed runs the
workers import tomoflow and compile the kernels, and a 2-scan batch into another root warms up the
runner. A run during which other processes used more than 0.3 cores is redone (twice at most; then
kept and counted in ``busy_runs``). Measured:

- wall time of ``run_batch`` -> scans per hour, and the scaling (2 workers / 1 worker; target >= 1.8x);
- *scheduler overhead per scan* = ``(workers x wall - sum of the tasks' compute time) / scans``: the
  worker-seconds per scan in which no task was computing. Task compute times come from the scheduler's
  task stream (``distributed.get_task_stream``, the ``compute`` intervals of every task of the run). It
  counts everything that is not task compute: the scheduler's latency, the runner's work between the
  tasks of a scan (graph building, reading store records, the centre estimate, which runs in the
  runner, thumbnails and per-scan reports), transfers, and the tail of the batch when fewer scans than
  workers remain;
- peak resident memory (``VmHWM``, reset before the run) of each worker and of the runner process.
  With a ``local`` cluster the runner process also hosts the Dask scheduler, as ``tomoflow batch run``
  with ``cluster: local`` does, so the runner's figure includes the scheduler;
- CPU time of the workers and of the runner (+ scheduler) process, per scan.

Part 2, a 10,000-scan manifest (``--dry-scans``; ``--quick`` 1,000). One tiny scan (12 angles x 2
rows x 16 columns) hard-linked under 10,000 names (copied where links are not possible), a YAML
manifest of 10,000 entries (ingest + recon FBP at a given centre: the least work per scan with the
real stages, so that the runner and the scheduler, not the compute, set the pace), loaded and checked
as ``tomoflow batch run`` does (``load_manifest``, ``preflight``: timed, with the runner's resident
memory). Then the real runner runs the whole manifest on a LocalCluster of 2 single-threaded worker
processes (4 scans in flight) while a monitor thread samples every 0.5 s the runner's resident
memory, the scheduler's task count (``len(scheduler.tasks)``), task groups and prefixes, the runner's
threads and the scans done. The run has a time cap (``--dry-seconds``, default 1800 s, enough for
the 10,000 tiny scans on 2 cores; ``--quick`` 10 s): at the cap it is stopped the way Ctrl-C stops it
(``KeyboardInterrupt`` in the runner: the scans in flight finish their current stage, the report of
every scan is written, the rest stay pending), and the output says so. Reported: scans done and the
rate, the maximum task count in the scheduler, the runner's RSS at start and at the end, its growth
per scan (least-squares slope over the second half of the run) and what that slope projects for the
whole manifest, and the workers' peak RSS.

    python benchmarks/bench_batch.py            # part 1 (~8 min) and the 10,000-scan run (~15 min)
    python benchmarks/bench_batch.py --quick    # 6 scans; 1,000-scan run for 10 s (smoke test)

Results: printed tables and ``benchmarks/results/bench_batch[_quick].json`` (or ``--output``).
"""

from __future__ import annotations

import _thread
import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    _cpu_jiffies,
    _reset_hwm,
    _rss_bytes,
    _status_kib,
    fmt_bytes,
    print_table,
    wait_for_idle,
    write_results,
)

from tomoflow.batch import load_manifest, preflight, run_batch
from tomoflow.io.dxchange import write_dxchange
from tomoflow.recon import project
from tomoflow.testing import disk_phantom

SCAN = {"angles": 90, "rows": 16, "cols": 64}  # part 1, "small": the small scans
LARGER = {"angles": 360, "rows": 32, "cols": 256}  # part 1, "larger": compute outweighs the per-scan costs
TINY = {"angles": 12, "rows": 2, "cols": 16}  # part 2
FULL = {"scans": 24, "larger_scans": 16, "repeats": 3, "dry_scans": 10_000, "dry_seconds": 1800.0}
QUICK = {"scans": 6, "larger_scans": 0, "repeats": 1, "dry_scans": 1_000, "dry_seconds": 10.0}
PIPELINE = "[ingest, {stage: recon, algorithm: fbp}]"
SAMPLE_S = 0.5
MAX_SAMPLES = 400  # samples kept in the JSON (thinned evenly)
BUSY_CORES = 0.3  # a timed run during which other processes used more cores than this is redone ...
BUSY_RETRIES = 2  # ... at most this many times (then kept, with its load recorded)


# ----------------------------------------------------------------------------- archive and manifests
def true_center(seed: int, cols: int) -> float:
    """The rotation axis of simulated scan ``seed``: ``0.25 * (seed % 5)`` px right of the middle."""
    return (cols - 1) / 2 + 0.25 * (seed % 5)


def raw_scan(seed: int, angles: int, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Raw counts of a disk phantom shifted sideways by a few columns (by seed), its axis at :func:`true_center`."""
    theta = np.linspace(0, 180, angles, endpoint=False)
    vol = np.roll(disk_phantom((rows, cols, cols)), (seed % 7) - 3, axis=2) * (2.0 / cols)
    line = project(vol, theta, center=true_center(seed, cols))
    return (1000.0 * np.exp(-line)).astype(np.float32), theta


def write_scan(path: Path, seed: int, shape: dict[str, int]) -> None:
    """A DXchange file with 2 flats, 1 dark and the detector pixel size (1 um), as a beamline writes it."""
    import h5py

    raw, theta = raw_scan(seed, shape["angles"], shape["rows"], shape["cols"])
    rows, cols = shape["rows"], shape["cols"]
    write_dxchange(
        path, raw, theta, flats=np.full((2, rows, cols), 1000, np.float32), darks=np.zeros((1, rows, cols), np.float32)
    )
    with h5py.File(path, "a") as f:
        f.create_dataset("/measurement/instrument/detector/pixel_size_x", data=1.0)


def write_manifest(path: Path, output: Path, files: list[Path], *, centers: list[float] | float | None = None) -> Path:
    """A YAML manifest (written as a person would, one line per scan), paths relative to its folder;
    ``centers``: one rotation centre per scan, one for all, or None (``auto``)."""
    if not isinstance(centers, list):
        centers = [centers] * len(files)
    lines = [
        f"  - {{name: {f.stem}, path: {os.path.relpath(f, path.parent)}" + ("" if c is None else f", center: {c}") + "}"
        for f, c in zip(files, centers)
    ]
    path.write_text(
        f"version: 1\noutput: {os.path.relpath(output, path.parent)}\ncluster: none\nretries: 1\n"
        f"pipeline: {PIPELINE}\nscans:\n" + "\n".join(lines) + "\n"
    )
    return path


# ----------------------------------------------------------------------------- worker helpers
def _warm_worker() -> int:
    """Import the stages and compile the kernels in a worker (outside the measurement); its pid."""
    from tomoflow.io.ingest import ingest  # noqa: F401  (imported to load it before timing)
    from tomoflow.pipeline.reconstruct import reconstruct_scan  # noqa: F401  (imported to load it before timing)
    from tomoflow.recon import fbp

    fbp(np.ones((8, 2, 16), np.float32), np.linspace(0, 180, 8, endpoint=False), center=7.5)
    return os.getpid()


def _pin(cpu: int) -> int:
    """Restrict every thread of this (worker) process to CPU ``cpu``; the CPUs it may run on after."""
    from tomoflow.backend import cpu_count

    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), {cpu})
        except OSError:  # a thread that ended meanwhile
            pass
    return cpu_count()


def _start_peak() -> int:
    """Reset this process's peak-RSS counter (VmHWM); its resident memory now (bytes)."""
    _reset_hwm()
    return _rss_bytes()


def _peak() -> int:
    return (_status_kib("VmHWM") or 0) * 1024


def _cpu_seconds() -> float:
    return time.process_time()


def _scheduler_state(dask_scheduler: Any) -> dict[str, int]:
    """Sizes of the scheduler's per-task state, and of what its spans extension keeps (it never drops a span,
    and a span keeps its task groups after their tasks are forgotten)."""
    spans = getattr(dask_scheduler, "extensions", {}).get("spans")
    kept = list(getattr(spans, "spans", {}).values()) if spans is not None else []
    return {
        "tasks": len(dask_scheduler.tasks),
        "task_groups": len(dask_scheduler.task_groups),
        "task_prefixes": len(dask_scheduler.task_prefixes),
        "clients": len(dask_scheduler.clients),
        "spans": len(kept),
        "span_task_groups": sum(len(getattr(sp, "groups", ())) for sp in kept),
    }


# ----------------------------------------------------------------------------- part 1
def _compute_seconds(records: list[dict[str, Any]]) -> tuple[float, dict[str, dict[str, float]]]:
    """Sum of the ``compute`` intervals of task-stream records, and per task prefix (count, seconds)."""
    from dask.utils import key_split

    total, by = 0.0, {}
    for r in records:
        sec = sum(s["stop"] - s["start"] for s in r.get("startstops", ()) if s.get("action") == "compute")
        total += sec
        p = by.setdefault(key_split(r["key"]), {"tasks": 0, "compute_s": 0.0})
        p["tasks"] += 1
        p["compute_s"] += sec
    return total, by


def measure(client: Any, m: Any, workers: int, *, perf_report: bool, idle_wait: float) -> dict[str, Any]:
    """One timed ``run_batch`` of manifest ``m`` (into a fresh output root) on ``client``."""
    from distributed import get_task_stream

    load = wait_for_idle(idle_wait)
    base = client.run(_start_peak)
    cpu0 = client.run(_cpu_seconds)
    runner_base = _start_peak()
    c0, j0 = time.process_time(), _cpu_jiffies()
    with get_task_stream(client=client) as ts:
        t = time.perf_counter()
        res = run_batch(m, client=client, performance_report=perf_report)
        wall = time.perf_counter() - t
    c1, j1 = time.process_time(), _cpu_jiffies()
    runner_peak = _peak()
    peaks = client.run(_peak)
    cpu1 = client.run(_cpu_seconds)
    n = len(m.scans)
    if not res.ok:
        raise RuntimeError(f"{workers} worker(s): scans failed: {[(s.name, s.error) for s in res.failed]}")
    records = list(ts.data)
    compute, by_prefix = _compute_seconds(records)
    worker_cpu = sum(cpu1[k] - cpu0[k] for k in cpu0)
    runner_cpu = c1 - c0
    other = None
    if j0 is not None and j1 is not None:
        busy = (j1[0] - j0[0]) / os.sysconf("SC_CLK_TCK")
        other = max(0.0, (busy - worker_cpu - runner_cpu) / wall)
    stage_s: dict[str, list[float]] = {}
    for s in res.scans:
        for st in s.stages:
            stage_s.setdefault(st.stage, []).append(st.seconds)
    return {
        "workers": workers,
        "threads_per_worker": 1,
        "scans": n,
        "wall_s": wall,
        "scans_per_hour": 3600 * n / wall,
        "seconds_per_scan": wall / n,
        "tasks": len(records),
        "tasks_per_scan": len(records) / n,
        "task_compute_s": compute,
        "task_compute_per_scan_s": compute / n,
        "overhead_per_scan_s": (workers * wall - compute) / n,
        "overhead_fraction": 1 - compute / (workers * wall),
        "by_prefix": by_prefix,
        "stage_seconds_mean": {k: float(np.mean(v)) for k, v in stage_s.items()},
        "scan_seconds_mean": float(np.mean([s.seconds for s in res.scans])),
        "worker_cpu_s": worker_cpu,
        "runner_cpu_s": runner_cpu,
        "worker_cpu_per_scan_s": worker_cpu / n,
        "runner_cpu_per_scan_s": runner_cpu / n,
        "other_load_before": load,
        "other_load_during": other,
        "worker_peak_rss_bytes": sorted(peaks.values()),
        "worker_baseline_rss_bytes": sorted(base.values()),
        "runner_peak_rss_bytes": runner_peak,
        "runner_baseline_rss_bytes": runner_base,
        "performance_report": perf_report,
    }


def run_throughput(
    tmp: Path,
    archives: dict[str, dict[str, Any]],
    workers: int,
    centres: list[str],
    repeats: int,
    *,
    pinned: bool,
    perf_report: bool,
    idle_wait: float,
) -> list[dict[str, Any]]:
    """On one LocalCluster of ``workers`` single-threaded processes (``pinned``: each restricted to a CPU
    of its own): every archive x centre mode, ``repeats`` timed runs each (fresh output roots); one
    result per (archive, centre mode), its figures those of the run of median wall time, with every
    run's wall time in ``walls_s``."""
    from tomoflow.cluster import cluster_resources, connect

    out = []
    with connect(
        "local", n_workers=workers, threads_per_worker=1, processes=True, memory_limit="4GB", dashboard_address=":0"
    ) as client:
        pids = client.run(_warm_worker)
        if pinned:
            cpus = sorted(os.sched_getaffinity(0))
            for i, addr in enumerate(sorted(pids)):
                client.run(_pin, cpus[i % len(cpus)], workers=[addr])
        task_threads = cluster_resources(client).task_threads
        for label, arc in archives.items():
            files, true = arc["files"], arc["centers"]
            wtag = f"warm-{label}-{workers}"
            warm = load_manifest(write_manifest(tmp / f"{wtag}.yaml", tmp / wtag, files[:2], centers=true[:2]))
            run_batch(warm, client=client, performance_report=False)  # the runner's first scans
            for mode in centres:
                runs = []
                for k in range(repeats):
                    for attempt in range(1 + BUSY_RETRIES):  # a run that shared the CPU is redone
                        tag = f"{label}-{mode}-{workers}-{k}-{attempt}"
                        m = load_manifest(
                            write_manifest(
                                tmp / f"batch-{tag}.yaml",
                                tmp / f"out-{tag}",
                                files,
                                centers=None if mode == "auto" else true,
                            )
                        )
                        r = measure(client, m, workers, perf_report=perf_report, idle_wait=idle_wait)
                        shutil.rmtree(tmp / f"out-{tag}", ignore_errors=True)
                        if (r["other_load_during"] or 0.0) < BUSY_CORES:
                            break
                        again = "measuring again" if attempt < BUSY_RETRIES else "kept, marked busy"
                        print(
                            f"  (busy: other processes used {r['other_load_during']:.2f} cores during the run; "
                            f"{again})",
                            flush=True,
                        )
                    runs.append(r)
                walls = [r["wall_s"] for r in runs]
                busy = [r["other_load_during"] for r in runs if (r["other_load_during"] or 0.0) >= BUSY_CORES]
                med = sorted(runs, key=lambda r: r["wall_s"])[len(runs) // 2]
                r = {
                    "archive": label,
                    "scan_shape": arc["shape"],
                    "centre": mode,
                    "pinned": pinned,
                    "task_threads": task_threads,
                    **med,
                    "walls_s": walls,
                    "busy_runs": len(busy),
                    "worker_pids": sorted(pids.values()),
                    "worker_peak_rss_bytes": [max(x) for x in zip(*(q["worker_peak_rss_bytes"] for q in runs))],
                    "runner_peak_rss_bytes": max(q["runner_peak_rss_bytes"] for q in runs),
                }
                shown = ", ".join(f"{w:.1f}" for w in walls)
                print(
                    f"  {label} scans, centre {mode}, {workers} worker(s){' pinned' if pinned else ''}, "
                    f"{task_threads} thread(s) per task: wall {shown} s -> "
                    f"{r['scans_per_hour']:.0f} scans/h (median)",
                    flush=True,
                )
                out.append(r)
    return out


# ----------------------------------------------------------------------------- part 2
def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _slope(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 3 or max(xs) - min(xs) <= 0:
        return None
    return float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0])


def run_dry(tmp: Path, n_scans: int, seconds: float, workers: int = 2) -> dict[str, Any]:
    from tomoflow.cluster import connect

    raw = tmp / "dry-raw"
    raw.mkdir()
    t = time.perf_counter()
    write_scan(raw / "s00000.h5", 0, TINY)
    files = [raw / f"s{i:05d}.h5" for i in range(n_scans)]
    for f in files[1:]:
        _link_or_copy(files[0], f)
    mpath = write_manifest(tmp / "dry.yaml", tmp / "dry-out", files, centers=(TINY["cols"] - 1) / 2)
    made_s = time.perf_counter() - t
    rss0 = _rss_bytes()
    t = time.perf_counter()
    m = load_manifest(mpath)
    load_s = time.perf_counter() - t
    rss_manifest = _rss_bytes()
    t = time.perf_counter()
    preflight(m)
    preflight_s = time.perf_counter() - t
    print(
        f"part 2: {n_scans} scans: files and manifest made in {made_s:.1f} s ({mpath.stat().st_size / 1024:.0f} KiB "
        f"YAML), load_manifest {load_s:.2f} s (+{fmt_bytes(rss_manifest - rss0)} RSS), preflight {preflight_s:.2f} s",
        flush=True,
    )

    samples: list[dict[str, Any]] = []
    done = [0]
    done_lock = threading.Lock()

    last_done = [0.0]

    def progress(ev: Any) -> None:
        if ev.kind == "scan-done":
            with done_lock:
                done[0] += 1
                last_done[0] = time.perf_counter()

    with connect(
        "local", n_workers=workers, threads_per_worker=1, processes=True, memory_limit="4GB", dashboard_address=":0"
    ) as client:
        client.run(_warm_worker)
        base = client.run(_start_peak)
        stop = threading.Event()
        t0 = time.perf_counter()

        def monitor() -> None:
            shown = 0.0
            while not stop.is_set():
                try:
                    st = client.run_on_scheduler(_scheduler_state)
                except Exception:  # noqa: BLE001 - the cluster is closing
                    break
                samples.append(
                    {
                        "t": time.perf_counter() - t0,
                        "rss": _rss_bytes(),
                        "done": done[0],
                        "threads": threading.active_count(),
                        **st,
                    }
                )
                if samples[-1]["t"] - shown >= 60:
                    shown = samples[-1]["t"]
                    print(
                        f"  {shown:.0f} s: {done[0]} scans done, runner RSS {fmt_bytes(samples[-1]['rss'])}, "
                        f"{st['tasks']} tasks in the scheduler",
                        flush=True,
                    )
                stop.wait(SAMPLE_S)

        running = [True]
        lock = threading.Lock()

        def interrupt() -> None:
            with lock:
                if running[0]:
                    _thread.interrupt_main()  # as Ctrl-C does

        rss_start = _rss_bytes()
        mon = threading.Thread(target=monitor, daemon=True)
        mon.start()
        timer = threading.Timer(seconds, interrupt)
        timer.start()
        interrupted, t_int = False, None
        try:
            try:
                res = run_batch(m, client=client, progress=progress, performance_report=False)
            finally:
                with lock:
                    running[0] = False
                timer.cancel()
        except KeyboardInterrupt:
            interrupted, res = True, None
            t_int = time.perf_counter() - t0 - seconds  # from the interrupt to run_batch's return
        t_end = time.perf_counter()
        wall = t_end - t0
        rss_end = _rss_bytes()
        # the scans in flight finish their current stage (they were told to stop): let them end
        for th in [th for th in threading.enumerate() if th.name.startswith("tomoflow-scan")]:
            th.join(timeout=60)
        stop.set()
        mon.join()
        peaks = client.run(_peak)
    n_done = done[0]
    half = [s for s in samples if s["t"] >= wall / 2]
    slope = _slope([s["done"] for s in half], [s["rss"] for s in half])
    doc = None
    report = Path(m.output) / "batch-report.json"
    if report.is_file():
        import json

        doc = json.loads(report.read_text())
    return {
        "scans": n_scans,
        "scan_shape": [TINY["angles"], TINY["rows"], TINY["cols"]],
        "workers": workers,
        "max_in_flight": 2 * workers,
        "time_cap_s": seconds,
        "interrupted": interrupted,
        "files_and_manifest_s": made_s,
        "manifest_bytes": mpath.stat().st_size,
        "load_manifest_s": load_s,
        "manifest_rss_bytes": rss_manifest - rss0,
        "preflight_s": preflight_s,
        "wall_s": wall,
        "scans_done": n_done,
        "scans_per_hour": 3600 * n_done / wall if wall > 0 else None,
        "projected_hours_for_all": (n_scans / n_done * wall / 3600) if n_done else None,
        "interrupt_to_return_s": t_int,
        "last_scan_to_return_s": None if interrupted or not n_done else t_end - last_done[0],
        "max_scheduler_tasks": max((s["tasks"] for s in samples), default=None),
        "mean_scheduler_tasks": float(np.mean([s["tasks"] for s in samples])) if samples else None,
        "max_task_groups": max((s["task_groups"] for s in samples), default=None),
        "max_task_prefixes": max((s["task_prefixes"] for s in samples), default=None),
        "spans_end": samples[-1]["spans"] if samples else None,
        "span_task_groups_end": samples[-1]["span_task_groups"] if samples else None,
        "max_threads": max((s["threads"] for s in samples), default=None),
        "runner_rss_start_bytes": rss_start,
        "runner_rss_end_bytes": rss_end,
        "runner_rss_max_bytes": max((s["rss"] for s in samples), default=None),
        "rss_slope_bytes_per_scan": slope,
        "rss_projected_growth_all_bytes": slope * n_scans if slope is not None else None,
        "worker_peak_rss_bytes": sorted(peaks.values()),
        "worker_baseline_rss_bytes": sorted(base.values()),
        "result_counts": res.counts() if res is not None else None,
        "report_counts": (doc or {}).get("counts"),
        "report_scans": (doc or {}).get("scans_total"),
        "report_bytes": report.stat().st_size if report.is_file() else None,
        "sample_interval_s": SAMPLE_S * max(1, len(samples) // MAX_SAMPLES),
        "samples": [
            {k: (round(v, 3) if isinstance(v, float) else v) for k, v in s.items()}
            for s in samples[:: max(1, len(samples) // MAX_SAMPLES)]
        ],
    }


# ----------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="6 scans; a 1,000-scan manifest run for 10 s")
    ap.add_argument("--scans", type=int, default=None, help="scans of part 1 (default 24; --quick 6)")
    ap.add_argument(
        "--larger-scans",
        type=int,
        default=None,
        help="scans of the larger archive of part 1 (360 x 32 x 256; default 16; --quick 0: none)",
    )
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per case in part 1 (default 3; --quick 1)")
    ap.add_argument("--workers", default="1,2", help="worker processes of part 1, comma-separated (default 1,2)")
    ap.add_argument("--dry-scans", type=int, default=None, help="scans of the part-2 manifest (default 10000)")
    ap.add_argument("--dry-seconds", type=float, default=None, help="time cap of part 2 (default 1800 s; --quick 10 s)")
    ap.add_argument(
        "--centre",
        default="auto,given",
        help="part 1's manifests: centre auto (estimated per scan, in the runner), given (the true "
        "centre in the manifest), or both (default auto,given)",
    )
    ap.add_argument(
        "--pin",
        default="pinned,default",
        help="part 1's workers: pinned (each worker process restricted to a CPU of its own, so a task "
        "gets 1 thread and 1 worker = 1 core), default (unpinned: a lone worker's tasks use every "
        "CPU), or both (default pinned,default)",
    )
    ap.add_argument("--skip-dry", action="store_true", help="part 1 only")
    ap.add_argument(
        "--performance-report",
        action="store_true",
        help="part 1 with Dask's performance report on (tomoflow batch run's default; off here: its "
        "collection at the end is a fixed cost of a few seconds)",
    )
    ap.add_argument(
        "--idle-wait",
        type=float,
        default=None,
        help="before each timed run, wait up to this long for an idle machine (default 60 s; --quick 0)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--output", default=None, help="JSON path (default benchmarks/results/bench_batch[_quick].json)")
    args = ap.parse_args()
    cfg = dict(QUICK if args.quick else FULL)
    cfg["scans"] = args.scans or cfg["scans"]
    cfg["larger_scans"] = args.larger_scans if args.larger_scans is not None else cfg["larger_scans"]
    cfg["repeats"] = args.repeats or cfg["repeats"]
    cfg["dry_scans"] = args.dry_scans or cfg["dry_scans"]
    cfg["dry_seconds"] = args.dry_seconds or cfg["dry_seconds"]
    idle_wait = args.idle_wait if args.idle_wait is not None else (0.0 if args.quick else 60.0)
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    centres = [c.strip() for c in args.centre.split(",") if c.strip()]
    pins = [{"pinned": True, "default": False}[p.strip()] for p in args.pin.split(",") if p.strip()]
    tmp = Path(tempfile.mkdtemp(prefix="tomoflow-bench-batch-"))
    payload: dict[str, Any] = {
        "config": {
            **cfg,
            "scan_shape": [SCAN["angles"], SCAN["rows"], SCAN["cols"]],
            "larger_scan_shape": [LARGER["angles"], LARGER["rows"], LARGER["cols"]],
            "pipeline": PIPELINE,
            "workers": workers,
            "centre": centres,
            "pin": pins,
            "performance_report": args.performance_report,
        }
    }
    try:
        archives: dict[str, dict[str, Any]] = {}
        for label, shape, n in (("small", SCAN, cfg["scans"]), ("larger", LARGER, cfg["larger_scans"])):
            if n <= 0:
                continue
            raw = tmp / f"raw-{label}"
            raw.mkdir()
            t = time.perf_counter()
            files = [raw / f"scan-{i:03d}.h5" for i in range(n)]
            for i, f in enumerate(files):
                write_scan(f, i, shape)
            archives[label] = {
                "files": files,
                "shape": [shape["angles"], shape["rows"], shape["cols"]],
                "centers": [true_center(i, shape["cols"]) for i in range(n)],
            }
            print(
                f"part 1: wrote {n} {label} DXchange scans of {shape['angles']} x {shape['rows']} x {shape['cols']} "
                f"in {time.perf_counter() - t:.1f} s; pipeline {PIPELINE}",
                flush=True,
            )
        runs = []
        for pinned in pins:
            for w in workers:
                runs += run_throughput(
                    tmp,
                    archives,
                    w,
                    centres,
                    cfg["repeats"],
                    pinned=pinned,
                    perf_report=args.performance_report,
                    idle_wait=idle_wait,
                )
        runs.sort(
            key=lambda r: (
                list(archives).index(r["archive"]),
                pins.index(r["pinned"]),
                centres.index(r["centre"]),
                r["workers"],
            )
        )
        payload["throughput"] = runs
        payload["target_scaling"] = 1.8
        payload["scaling_2_vs_1"] = {}
        for label in archives:
            for pinned in pins:
                for mode in centres:
                    by_w = {
                        r["workers"]: r
                        for r in runs
                        if r["centre"] == mode and r["archive"] == label and r["pinned"] == pinned
                    }
                    if 1 in by_w and 2 in by_w:
                        key = f"{label}, {'pinned' if pinned else 'default'}, centre {mode}"
                        payload["scaling_2_vs_1"][key] = by_w[2]["scans_per_hour"] / by_w[1]["scans_per_hour"]
        print_table(
            [
                [
                    r["archive"],
                    "pinned" if r["pinned"] else "default",
                    r["centre"],
                    r["workers"],
                    r["task_threads"],
                    f"{r['wall_s']:.1f}",
                    f"{r['scans_per_hour']:.0f}",
                    f"{1e3 * r['seconds_per_scan']:.0f}",
                    f"{r['tasks_per_scan']:.1f}",
                    f"{1e3 * r['task_compute_per_scan_s']:.0f}",
                    f"{1e3 * r['overhead_per_scan_s']:.0f}",
                    f"{100 * r['overhead_fraction']:.0f}",
                    f"{1e3 * r['runner_cpu_per_scan_s']:.0f}",
                    fmt_bytes(max(r["worker_peak_rss_bytes"])),
                    fmt_bytes(r["runner_peak_rss_bytes"]),
                    "-" if r["other_load_during"] is None else f"{r['other_load_during']:.2f}",
                ]
                for r in runs
            ],
            [
                "scans",
                "workers on",
                "centre",
                "workers",
                "threads/task",
                "wall s",
                "scans/h",
                "ms/scan",
                "tasks/scan",
                "compute ms/scan",
                "overhead ms/scan",
                "overhead %",
                "runner CPU ms/scan",
                "worker peak RSS",
                "runner peak RSS",
                "other load",
            ],
            title="Batch throughput, ingest + recon (FBP), workers x 1 thread, median of "
            f"{cfg['repeats']} run(s): "
            + ", ".join(
                f"{k}: {len(a['files'])} scans of {' x '.join(map(str, a['shape']))}" for k, a in archives.items()
            ),
        )
        print(
            "scaling 2 vs 1 worker (target >= 1.8x): "
            + (", ".join(f"{k} {v:.2f}x" for k, v in payload["scaling_2_vs_1"].items()) or "-"),
            flush=True,
        )
        print_table(
            [
                [
                    r["archive"],
                    "pinned" if r["pinned"] else "default",
                    r["centre"],
                    r["workers"],
                    p,
                    v["tasks"],
                    f"{1e3 * v['compute_s'] / r['scans']:.1f}",
                ]
                for r in runs
                for p, v in sorted(r["by_prefix"].items())
            ],
            ["scans", "workers on", "centre", "workers", "task prefix", "tasks", "compute ms/scan"],
            title="Tasks of the batch by prefix",
        )
        if not args.skip_dry:
            d = run_dry(tmp, cfg["dry_scans"], cfg["dry_seconds"])
            payload["dry_run"] = d
            full = d["projected_hours_for_all"] or 0.0
            full_text = f"{full:.1f} h" if full >= 1.5 else f"{60 * full:.0f} min"
            cap = (
                f"stopped after {d['time_cap_s']:.0f} s like Ctrl-C (a full run would take about {full_text} here)"
                if d["interrupted"] and d["projected_hours_for_all"]
                else "ran to the end"
            )
            slope = d["rss_slope_bytes_per_scan"]
            print_table(
                [
                    [
                        d["scans"],
                        d["scans_done"],
                        f"{d['wall_s']:.0f}",
                        f"{d['scans_per_hour']:.0f}",
                        d["max_scheduler_tasks"],
                        d["max_task_groups"],
                        d["max_task_prefixes"],
                        d["max_threads"],
                        fmt_bytes(d["runner_rss_start_bytes"]),
                        fmt_bytes(d["runner_rss_end_bytes"]),
                        "-" if slope is None else f"{slope / 1024:.1f}",
                        "-" if slope is None else fmt_bytes(d["rss_projected_growth_all_bytes"]),
                    ]
                ],
                [
                    "manifest scans",
                    "done",
                    "wall s",
                    "scans/h",
                    "max scheduler tasks",
                    "max task groups",
                    "max task prefixes",
                    "max threads",
                    "runner RSS start",
                    "runner RSS end",
                    "KiB/scan",
                    f"projected +RSS at {d['scans']}",
                ],
                title=f"{d['scans']}-scan manifest ({d['scan_shape'][0]} x {d['scan_shape'][1]} x "
                f"{d['scan_shape'][2]} scans, ingest + recon, 2 workers x 1 thread, "
                f"{d['max_in_flight']} in flight): {cap}",
            )
            end = (
                f"interrupt -> run_batch returned in {d['interrupt_to_return_s']:.2f} s"
                if d["interrupted"]
                else f"last scan done -> run_batch returned in {d['last_scan_to_return_s'] or 0:.2f} s"
            )
            print(
                f"  load_manifest {d['load_manifest_s']:.2f} s (+{fmt_bytes(d['manifest_rss_bytes'])}), preflight "
                f"{d['preflight_s']:.2f} s; {end} (final report of {d['report_scans']} scans, "
                f"{fmt_bytes(d['report_bytes'])}); report counts {d['report_counts']}; worker peak RSS "
                f"{fmt_bytes(max(d['worker_peak_rss_bytes']))}; at the end the scheduler's spans extension kept "
                f"{d['spans_end']} spans holding {d['span_task_groups_end']} task groups",
                flush=True,
            )
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    path = write_results("bench_batch" + ("_quick" if args.quick else ""), payload, path=args.output)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
