"""Peak memory and throughput of the Dask volume pipeline (scan store -> OME-Zarr volume store).

A 512 x 512 x 512 volume (360 angles x 512 rows x 512 columns of raw intensities with flats and
darks) is reconstructed with FBP on a LocalCluster of 2 single-threaded worker processes, under
per-worker memory budgets of 2 GB and 512 MB. Reported: slab height the planner chose, wall time,
time per slice, and the peak resident memory of each worker process during the run (``VmHWM``,
reset before it), which must stay near the budget whatever the volume size.

    python benchmarks/bench_pipeline.py            # 512^3
    python benchmarks/bench_pipeline.py --quick    # 64^3 smoke run
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import _reset_hwm, _rss_bytes, _status_kib, fmt_bytes, print_table, write_results

import tomoflow
from tomoflow.cluster import connect
from tomoflow.io import write_scan
from tomoflow.pipeline.reconstruct import reconstruct_scan, slab_bytes
from tomoflow.recon import project
from tomoflow.testing import disk_phantom


def _start_peak() -> int:
    """Reset this worker's peak-RSS counter (VmHWM); return its resident memory now (bytes).

    ``ru_maxrss`` is not used: it survives fork + exec, so a spawned worker inherits the peak of the
    process that started it.
    """
    _reset_hwm()
    return _rss_bytes()


def _peak() -> int:
    return (_status_kib("VmHWM") or 0) * 1024


def make_scan(path: Path, n: int, n_angles: int) -> None:
    vol = disk_phantom((n, n, n)) * (4.0 / n)
    angles = np.linspace(0, 180, n_angles, endpoint=False)
    line = np.empty((n_angles, n, n), np.float32)
    for z0 in range(0, n, 64):
        line[:, z0 : z0 + 64] = project(vol[z0 : z0 + 64], angles)
    raw = 1000.0 * np.exp(-line) + 10.0
    write_scan(
        path,
        raw,
        angles,
        flats=np.full((4, n, n), 1010.0, np.float32),
        darks=np.full((4, n, n), 10.0, np.float32),
        pixel_size_um=0.05,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64^3 smoke run")
    ap.add_argument("--output", default=None, help="JSON path (default benchmarks/results/bench_pipeline[_quick].json)")
    args = ap.parse_args()
    n, n_angles = (64, 48) if args.quick else (512, 360)
    budgets = ("256MB", "64MB") if args.quick else ("2GB", "512MB")
    tmp = Path(tempfile.mkdtemp(prefix="tomoflow-bench-"))
    rows = []
    try:
        t = time.perf_counter()
        make_scan(tmp / "scan.zarr", n, n_angles)
        print(f"made a {n_angles} x {n} x {n} scan store in {time.perf_counter() - t:.1f} s", flush=True)
        for budget in budgets:
            with connect(
                "local", n_workers=2, threads_per_worker=1, processes=True, memory_limit="8GB", dashboard_address=":0"
            ) as client:
                client.run(
                    lambda: __import__("tomoflow.recon", fromlist=["project"]).project(
                        np.ones((1, 8, 8), np.float32), [0.0]
                    )
                )  # compile
                base = client.run(_start_peak)
                with tomoflow.config.set(worker_memory_budget=budget, pyramid_levels=2):
                    t = time.perf_counter()
                    v = reconstruct_scan(
                        tmp / "scan.zarr", tmp / f"vol-{budget}.zarr", center=(n - 1) / 2, client=client, overwrite=True
                    )
                    wall = time.perf_counter() - t
                peaks = client.run(_peak)
            info = v.stages()["recon"].info
            est = slab_bytes(n_angles, n, (n, n), info["slab_rows"], "fbp")
            rows.append(
                {
                    "budget": budget,
                    "slab_rows": info["slab_rows"],
                    "slabs": info["slabs"],
                    "estimate_bytes": est,
                    "threads_per_task": info["threads_per_task"],
                    "wall_s": wall,
                    "s_per_slice": wall / n,
                    "worker_peak_rss_bytes": max(peaks.values()),
                    "worker_baseline_rss_bytes": max(base.values()),
                }
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(
        [
            [
                r["budget"],
                r["slab_rows"],
                r["slabs"],
                fmt_bytes(r["estimate_bytes"]),
                f"{r['wall_s']:.1f}",
                f"{1e3 * r['s_per_slice']:.0f}",
                fmt_bytes(r["worker_baseline_rss_bytes"]),
                fmt_bytes(r["worker_peak_rss_bytes"]),
            ]
            for r in rows
        ],
        ["budget", "slab rows", "slabs", "slab estimate", "wall s", "ms/slice", "worker RSS idle", "worker peak RSS"],
        title=f"Dask volume pipeline, FBP {n_angles} x {n} x {n} -> {n}^3, 2 workers x 1 thread (incl. pyramid)",
    )
    write_results(
        "bench_pipeline" + ("_quick" if args.quick else ""),
        {"volume": [n, n, n], "n_angles": n_angles, "workers": 2, "threads_per_worker": 1, "runs": rows},
        path=args.output,
    )


if __name__ == "__main__":
    main()
