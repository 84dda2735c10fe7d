"""Whole samples at real size: time and memory of the resolution-recovery chain against the sample's size.

For each HR size N (default 192, 384 and 768 voxels of 1 µm; ``--quick``: 64) a pair is simulated as a
user would (``tomoflow simulate-pair --hr-size N --lfov-size N/4+48``, cathode, seed 1: an LFOV of 4 µm
voxels around the HR ROI, 4x coarser), and the README's commands run, each as its own process, as a user
runs them:

- ``tomoflow register HR LFOV --out reg.json`` — and its error against the simulation's truth (distance
  between the estimated and the true mapping of a 9³ grid of HR voxel centres, in HR voxels, mean and max);
- ``tomoflow train-recovery HR LFOV --registration reg.json --time-limit 120`` (the CLI's defaults
  otherwise; ``--quick``: 20 s, 2 epochs of 2 steps);
- **fused** whole-field recovery, ``tomoflow recover LFOV --voxel 1 --model ... --out rec.zarr``: the LFOV
  resampled block by block inside the recovery tasks (``--quick``: on the HR grid, ``--registration
  reg.json --hr HR``), on the default local cluster;
- for comparison, on sizes up to ``--two-step-max`` (384): ``tomoflow resample LFOV --voxel 1`` then
  ``tomoflow recover`` of that store (the two-step path, which writes the intermediate store);
- today's code (``--baseline TREE``: a checkout of the previous version, run with ``PYTHONPATH=TREE``) for
  ``register`` and ``train-recovery`` on the sizes it survives (up to ``--baseline-max``, 384).

Each command's wall time and peak resident memory are measured two ways: the largest single process (exact:
the kernel's high-water mark, ``ru_maxrss`` from ``wait4``, what ``/usr/bin/time`` reports), and the whole
process tree (the command, its DataLoader workers, its Dask workers; the sum of their RSS sampled every
0.1 s with psutil). For ``recover`` the largest process is a Dask worker: it is compared with the worker
memory budget (``tomoflow.config``'s ``worker_memory_budget``, 2 GiB).

The per-voxel costs follow, and an extrapolation, with the arithmetic written out in the JSON and the
printed report, to an HR ROI of 2048³ in an LFOV of 2048³ (4 µm) on one CPU node and on one GPU worker.

    python benchmarks/bench_scale.py                      # 192, 384, 768 (about an hour on 2 cores)
    python benchmarks/bench_scale.py --sizes 192,384 --baseline /path/to/old/checkout
    python benchmarks/bench_scale.py --quick              # smoke run (HR 64³, seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, fmt_bytes, print_table, write_results

LFOV_UM, HR_UM, SEED = 4.0, 1.0, 1
TIME_LIMIT = 120.0
NODE_CORES = 64
"""Cores of the "one CPU node" of the extrapolation (a common dual-socket node)."""


# ----------------------------------------------------------------------------- measuring a command
def measure(cmd: list[str], *, tree: Path, log: Path, timeout: float = 7200.0) -> dict[str, Any]:
    """Run ``cmd`` with ``PYTHONPATH=tree``; wall time, exit status, peak RSS of the largest process
    (exact, ``wait4``) and of the process tree (sampled), output kept in ``log``."""
    import psutil

    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", ""))
    if not env["OMP_NUM_THREADS"]:
        env.pop("OMP_NUM_THREADS")
    env["COLUMNS"] = "120"
    peaks: dict[str, int] = {"tree": 0}
    per_pid: dict[int, int] = {}
    stop = threading.Event()
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        # in the log's folder: ``python -m`` puts the working directory first on sys.path, before
        # PYTHONPATH, so a command started from a checkout would import that checkout's tomoflow
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=log.parent)

        def sample() -> None:
            try:
                root = psutil.Process(proc.pid)
            except psutil.Error:
                return
            while not stop.is_set():
                total = 0
                try:
                    procs = [root, *root.children(recursive=True)]
                except psutil.Error:
                    break
                for p in procs:
                    try:
                        rss = p.memory_info().rss
                    except psutil.Error:
                        continue
                    total += rss
                    per_pid[p.pid] = max(per_pid.get(p.pid, 0), rss)
                peaks["tree"] = max(peaks["tree"], total)
                stop.wait(0.1)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        stop.set()
        th.join()
    workers = sorted((v for k, v in per_pid.items() if k != proc.pid), reverse=True)
    return {
        "command": " ".join(str(c) for c in cmd),
        "returncode": proc.returncode,
        "wall_s": wall,
        "peak_rss_largest_process": int(usage.ru_maxrss) * 1024,
        "peak_rss_tree_sampled": peaks["tree"],
        "peak_rss_main_sampled": per_pid.get(proc.pid, 0),
        "peak_rss_children_sampled": workers[:4],
        "log": str(log),
        "tail": log.read_text(errors="replace")[-1500:],
    }


def tomoflow_cmd(*args: Any) -> list[str]:
    return [sys.executable, "-m", "tomoflow.cli", *[str(a) for a in args]]


# ----------------------------------------------------------------------------- accuracy
def registration_error(reg_json: Path, hr_store: Path, tree: Path) -> dict[str, float] | None:
    """Mean and max distance (HR voxels) between the estimated and the true mapping of a 9³ grid of HR
    voxel centres (the truth is in the simulated HR store's metadata)."""
    code = (
        "import json,sys,numpy as np\n"
        "from tomoflow.io.volume_store import VolumeStore\n"
        f"h=VolumeStore.open({str(hr_store)!r})\n"
        "print(json.dumps({'truth': h.extra['simulation_truth']['hr_to_lfov_matrix'], 'shape': list(h.shape)}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(tree))
    )
    if out.returncode or not reg_json.is_file():
        return None
    info = json.loads(out.stdout.strip().splitlines()[-1])
    m_true = np.asarray(info["truth"], dtype=np.float64)
    m_est = np.asarray(json.loads(reg_json.read_text())["matrix"], dtype=np.float64)
    axes = [np.linspace(0, n - 1, 9) for n in info["shape"]]
    p = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3) * HR_UM
    ph = np.c_[p, np.ones(len(p))]
    d = np.linalg.norm((ph @ m_est.T - ph @ m_true.T)[:, :3], axis=1)
    # an LFOV micrometre displacement, seen in the HR frame: HR voxels
    err = d / HR_UM
    return {"mean_hr_vox": float(err.mean()), "max_hr_vox": float(err.max())}


# ----------------------------------------------------------------------------- one size
PARTS = ("register", "train", "fused", "two-step", "baseline", "baseline-train")


def run_size(
    n: int,
    work: Path,
    tree: Path,
    baseline: Path | None,
    *,
    quick: bool,
    do_baseline: bool,
    do_two_step: bool,
    parts: tuple[str, ...] = PARTS,
    fused_max_voxels: float | None = None,
) -> dict[str, Any]:
    lf_n = n // 4 + max(48, 3 * n // 32)  # N/4 + 48; at 768 the ROI's 3-degree rotations need 264
    d = work / f"n{n}"
    d.mkdir(parents=True, exist_ok=True)
    hr, lf = d / "hr.zarr", d / "lfov.zarr"
    res: dict[str, Any] = {"hr_size": n, "lfov_size": lf_n, "hr_voxels": n**3, "lfov_voxels": lf_n**3}
    done = d / "simulated.ok"
    if not done.is_file():
        for p in (hr, lf):
            shutil.rmtree(p, ignore_errors=True)
        res["simulate"] = measure(
            tomoflow_cmd(
                "simulate-pair", hr, lf, "--hr-size", n, "--lfov-size", lf_n, "--lfov-voxel", LFOV_UM, "--seed", SEED
            ),
            tree=tree,
            log=d / "simulate.log",
        )
        if res["simulate"]["returncode"] == 0:
            done.write_text("ok\n")
    reg, model = d / "reg.json", d / "model"
    weights = model / "recover_unet.safetensors"
    limit = 20.0 if quick else TIME_LIMIT
    extra = ["--epochs", 2, "--steps", 2] if quick else []
    if "register" in parts:
        reg.unlink(missing_ok=True)
        res["register"] = measure(tomoflow_cmd("register", hr, lf, "--out", reg), tree=tree, log=d / "register.log")
        res["register"]["error"] = registration_error(reg, hr, tree)
    if "train" in parts:  # the defaults and a time limit
        shutil.rmtree(model, ignore_errors=True)
        res["train"] = measure(
            tomoflow_cmd(
                "train-recovery", hr, lf, "--out", model, "--registration", reg, "--time-limit", limit, *extra
            ),
            tree=tree,
            log=d / "train.log",
        )
        res["train"]["time_limit_s"] = limit
        card = model / "recover_unet.json"
        if card.is_file():
            c = json.loads(card.read_text())
            res["train"]["card_timing"] = c.get("timing")
            res["train"]["epochs_run"] = c.get("training", {}).get("epochs_run")
    if "fused" in parts:
        rec = d / "recovered.zarr"
        shutil.rmtree(rec, ignore_errors=True)
        voxel = HR_UM
        while fused_max_voxels and (lf_n * LFOV_UM / voxel) ** 3 > fused_max_voxels:
            voxel *= 2  # the whole field at a coarser voxel: same blocks and memory, fewer of them
        res["fused_voxel_um"] = voxel
        grid = ["--registration", reg, "--hr", hr] if quick else ["--voxel", voxel]
        res["fused_recover"] = measure(
            tomoflow_cmd("recover", lf, "--model", weights, "--out", rec, *grid), tree=tree, log=d / "fused.log"
        )
        res["fused_recover"]["output_voxels"] = _store_voxels(rec, tree)
        shutil.rmtree(rec, ignore_errors=True)
    if do_two_step and "two-step" in parts:
        rs, rec2 = d / "resampled.zarr", d / "recovered_two_step.zarr"
        for p in (rs, rec2):
            shutil.rmtree(p, ignore_errors=True)
        if quick:
            step1 = tomoflow_cmd("resample", lf, "--registration", reg, "--hr", hr, "--out", rs)
        else:
            step1 = tomoflow_cmd("resample", lf, "--voxel", HR_UM, "--out", rs)
        a = measure(step1, tree=tree, log=d / "resample.log")
        b = measure(tomoflow_cmd("recover", rs, "--model", weights, "--out", rec2), tree=tree, log=d / "recover2.log")
        res["two_step"] = {
            "resample": a,
            "recover": b,
            "wall_s": a["wall_s"] + b["wall_s"],
            "intermediate_bytes": _du(rs),
        }
        for p in (rs, rec2):
            shutil.rmtree(p, ignore_errors=True)
    if do_baseline and baseline is not None and "baseline" in parts:
        reg0, model0 = d / "reg_baseline.json", d / "model_baseline"
        reg0.unlink(missing_ok=True)
        shutil.rmtree(model0, ignore_errors=True)
        old: dict[str, Any] = {"tree": str(baseline)}
        old["register"] = measure(
            tomoflow_cmd("register", hr, lf, "--out", reg0), tree=baseline, log=d / "register_baseline.log"
        )
        old["register"]["error"] = registration_error(reg0, hr, tree)
        if "baseline-train" not in parts:
            res["baseline"] = old
            return res
        old["train"] = measure(
            tomoflow_cmd(
                "train-recovery",
                hr,
                lf,
                "--out",
                model0,
                "--registration",
                reg if reg.is_file() else reg0,
                "--time-limit",
                limit,
                *extra,
            ),
            tree=baseline,
            log=d / "train_baseline.log",
        )
        res["baseline"] = old
        shutil.rmtree(model0, ignore_errors=True)
    return res


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def _store_voxels(path: Path, tree: Path) -> int | None:
    code = (
        "import math\nfrom tomoflow.io.volume_store import VolumeStore\n"
        f"print(math.prod(VolumeStore.open({str(path)!r}).shape))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(tree))
    )
    try:
        return int(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


# ----------------------------------------------------------------------------- extrapolation
def _slope(ok: list[dict[str, Any]], key: str, voxels: str) -> tuple[float, float, str]:
    """Seconds per voxel of ``key`` between the two largest sizes (the fixed costs cancel), with the
    largest size's ``(voxels, seconds)``; one size: its seconds per voxel."""
    pts = [(float(r[key][voxels] if voxels in r[key] else r[voxels]), r[key]["wall_s"]) for r in ok]
    (v2, t2) = pts[-1]
    if len(pts) >= 2 and pts[-1][0] > pts[-2][0]:
        (v1, t1) = pts[-2]
        k = (t2 - t1) / (v2 - v1)
        return k, t2, f"({t2:.1f} - {t1:.1f}) s / ({v2:.3g} - {v1:.3g}) voxels = {1e9 * k:.2f} ns per voxel"
    return t2 / v2, t2, f"{t2:.1f} s / {v2:.3g} voxels = {1e9 * t2 / v2:.2f} ns per voxel"


#: The default U-Net's multiply-adds per output voxel, valid evaluation (benchmarks/BENCHMARKS.md part (b):
#: 160 G for a 128³ block in a 176³ box).
UNET_MACS_PER_VOXEL = 160e9 / 128**3
#: Sustained FP32 throughput assumed for a GPU worker (one H100: 67 TFLOP/s FP32 peak; cuDNN's 3-D
#: convolutions of 16-64 channels reach a fraction of it). An assumption, not a measurement.
GPU_SUSTAINED_FLOPS = 20e12


def extrapolate(results: list[dict[str, Any]], cores: int) -> dict[str, Any]:
    """Per-voxel costs (the slope between the two largest sizes measured) and HR 2048³ in an LFOV 2048³
    of 4 µm, on one CPU node (:data:`NODE_CORES` cores, the per-core cost measured here) and one GPU
    worker (an estimate from counted multiply-adds, :data:`GPU_SUSTAINED_FLOPS`, unless measured)."""
    ok = [r for r in results if r.get("register", {}).get("returncode") == 0]
    if not ok:
        return {"note": "no size completed"}
    big = ok[-1]
    hr_n, lf_n = 2048, 2048
    field_n = int(lf_n * LFOV_UM / HR_UM)  # the whole LFOV field at the HR voxel size
    hr_vox, field = hr_n**3, field_n**3
    out: dict[str, Any] = {
        "target": f"HR {hr_n}³ of {HR_UM:g} um in an LFOV {lf_n}³ of {LFOV_UM:g} um "
        f"(the whole field at {HR_UM:g} um: {field_n}³ = {field:.3g} voxels)",
        "cpu_node_cores": NODE_CORES,
    }
    # register: linear in the voxels read (the HR once, through the smoothing graph; the LFOV around the ROI)
    k, t2, how = _slope(ok, "register", "hr_voxels")
    reg_s = t2 + k * (hr_vox - big["hr_voxels"])
    out["register"] = {
        "seconds_per_hr_voxel": k,
        "seconds_here": reg_s,
        "cpu_node_s": reg_s * cores / NODE_CORES,
        "peak_rss": max(r["register"]["peak_rss_largest_process"] for r in ok),
        "arithmetic": f"{how}; {t2:.1f} s + {1e9 * k:.2f} ns x ({hr_n}³ - {big['hr_size']}³) HR voxels = "
        f"{reg_s:.0f} s on {cores} cores, {reg_s * cores / NODE_CORES:.0f} s on {NODE_CORES} cores if the "
        f"smoothing graph scales with them; memory as measured at {big['hr_size']}³ "
        f"({fmt_bytes(big['register']['peak_rss_largest_process'])})",
    }
    trains = [r["train"] for r in ok if "train" in r]
    out["train"] = {
        "peak_rss": max((t["peak_rss_tree_sampled"] for t in trains), default=0),
        "arithmetic": "the time limit bounds the whole command at any size; memory is O(patch x batch + "
        f"model): at most {fmt_bytes(max((t['peak_rss_tree_sampled'] for t in trains), default=0))} "
        "(process tree) at every size measured",
    }
    rec = [
        r for r in ok if r.get("fused_recover", {}).get("returncode") == 0 and r["fused_recover"].get("output_voxels")
    ]
    if rec:
        k, t2, how = _slope(rec, "fused_recover", "output_voxels")
        core_s = k * cores  # core-seconds per output voxel
        gpu_s = 2 * UNET_MACS_PER_VOXEL / GPU_SUSTAINED_FLOPS
        out["fused_recover"] = {
            "seconds_per_output_voxel": k,
            "core_seconds_per_output_voxel": core_s,
            "cpu_node_h_whole_field": core_s * field / NODE_CORES / 3600,
            "cpu_node_h_hr_grid": core_s * hr_vox / NODE_CORES / 3600,
            "gpu_seconds_per_voxel_estimate": gpu_s,
            "gpu_h_whole_field_estimate": gpu_s * field / 3600,
            "gpu_h_hr_grid_estimate": gpu_s * hr_vox / 3600,
            "worker_peak_rss": max(max(r["fused_recover"]["peak_rss_children_sampled"] or [0]) for r in rec),
            "arithmetic": f"{how} on {cores} cores = {1e6 * core_s:.2f} core-us per voxel; whole field "
            f"{field:.3g} voxels x {1e6 * core_s:.2f} us / {NODE_CORES} cores = "
            f"{core_s * field / NODE_CORES / 3600:.0f} h on one CPU node (the HR ROI's grid, {hr_n}³: "
            f"{core_s * hr_vox / NODE_CORES / 3600:.1f} h); one GPU worker, estimated: "
            f"2 x {UNET_MACS_PER_VOXEL / 1e3:.0f} k multiply-adds per voxel / {GPU_SUSTAINED_FLOPS / 1e12:.0f} "
            f"TFLOP/s = {1e9 * gpu_s:.1f} ns per voxel: {gpu_s * field / 3600:.1f} h for the whole field, "
            f"{gpu_s * hr_vox / 60:.1f} min for the HR grid (not measured: no GPU in this run)",
        }
    return out


# ----------------------------------------------------------------------------- report
def report(results: list[dict[str, Any]]) -> None:
    rows = []
    for r in results:
        size = f"{r['hr_size']}³ / {r['lfov_size']}³"
        for name, m in (
            ("register", r.get("register")),
            ("train-recovery", r.get("train")),
            ("recover (fused)", r.get("fused_recover")),
        ):
            if m is None:
                continue
            extra = ""
            if name == "register" and m.get("error"):
                extra = f"err {m['error']['mean_hr_vox']:.3f} HR vox"
            if name == "recover (fused)" and m.get("output_voxels"):
                extra = f"{m['output_voxels']:.3g} voxels of {r.get('fused_voxel_um', HR_UM):g} um"
            rows.append(
                [
                    size,
                    name,
                    m["returncode"],
                    f"{m['wall_s']:.1f}",
                    fmt_bytes(m["peak_rss_largest_process"]),
                    fmt_bytes(m["peak_rss_tree_sampled"]),
                    extra,
                ]
            )
        if "two_step" in r:
            t = r["two_step"]
            rows.append(
                [
                    size,
                    "resample + recover",
                    max(t["resample"]["returncode"], t["recover"]["returncode"]),
                    f"{t['wall_s']:.1f}",
                    fmt_bytes(max(t["resample"]["peak_rss_largest_process"], t["recover"]["peak_rss_largest_process"])),
                    fmt_bytes(max(t["resample"]["peak_rss_tree_sampled"], t["recover"]["peak_rss_tree_sampled"])),
                    f"intermediate {fmt_bytes(t['intermediate_bytes'])}",
                ]
            )
        for name, m in (r.get("baseline") or {}).items():
            if name == "tree":
                continue
            extra = f"err {m['error']['mean_hr_vox']:.3f} HR vox" if m.get("error") else ""
            rows.append(
                [
                    size,
                    f"{name} (today's code)",
                    m["returncode"],
                    f"{m['wall_s']:.1f}",
                    fmt_bytes(m["peak_rss_largest_process"]),
                    fmt_bytes(m["peak_rss_tree_sampled"]),
                    extra,
                ]
            )
    print_table(
        rows,
        ["HR / LFOV", "command", "rc", "wall s", "peak (largest process)", "peak (tree)", ""],
        title="whole samples at real size",
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: HR 64³")
    ap.add_argument("--sizes", default=None, help="HR edges, comma-separated (default 192,384,768)")
    ap.add_argument("--baseline", type=Path, default=None, help="checkout of today's code to compare with")
    ap.add_argument("--baseline-max", type=int, default=384, help="largest HR edge today's code is run at")
    ap.add_argument("--two-step-max", type=int, default=384, help="largest HR edge of the resample + recover path")
    ap.add_argument("--workdir", type=Path, default=None, help="where the pairs and outputs go (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument(
        "--fused-max-voxels",
        type=float,
        default=None,
        help="recover the whole field at 2, 4, ... um when it has more voxels than this at 1 um (time)",
    )
    ap.add_argument("--output", type=Path, default=None)
    ap.add_argument(
        "--parts", default=",".join(PARTS), help=f"what to run, comma-separated among {', '.join(PARTS)} (default all)"
    )
    args = ap.parse_args(argv)
    sizes = [64] if args.quick else [int(s) for s in (args.sizes or "192,384,768").split(",")]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_scale_"))
    work.mkdir(parents=True, exist_ok=True)
    tree = REPO_ROOT
    cores = len(os.sched_getaffinity(0))
    results = []
    try:
        for n in sizes:
            print(f"HR {n}³ ...", flush=True)
            r = run_size(
                n,
                work,
                tree,
                args.baseline,
                quick=args.quick,
                do_baseline=n <= args.baseline_max,
                do_two_step=n <= args.two_step_max,
                parts=tuple(p.strip() for p in args.parts.split(",")),
                fused_max_voxels=args.fused_max_voxels,
            )
            results.append(r)
            write_results(
                "bench_scale",
                {"sizes": results, "partial": True},
                path=args.output,
            )
        report(results)
        ext = extrapolate(results, cores)
        for k, v in ext.items():
            if isinstance(v, dict) and "arithmetic" in v:
                print(f"{k}: {v['arithmetic']}")
        path = write_results(
            "bench_scale",
            {
                "lfov_um": LFOV_UM,
                "hr_um": HR_UM,
                "seed": SEED,
                "time_limit_s": TIME_LIMIT,
                "cores": cores,
                "sizes": results,
                "extrapolation": ext,
            },
            path=args.output,
        )
        print(f"results: {path}")
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    failed = [
        (r["hr_size"], k)
        for r in results
        for k in ("register", "train", "fused_recover")
        if k in r and r[k]["returncode"] != 0
    ]
    if failed:
        print(f"failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
