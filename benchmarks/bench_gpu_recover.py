#!/usr/bin/env python
"""GPU benchmark of resolution recovery: training, tiled inference and registration on CUDA vs the CPU.

Every GPU figure stands beside a CPU figure measured in the same run, on the same machine (and beside
MONAI where named). Parts, selected with ``--parts train,infer,register`` (default all):

* train     ``tomoflow.train.recovery.train_recovery(device="cuda")`` on bench_recover.py part (c)'s
            pair (seed 1, 160³ HR in a 96³ LFOV of 4 µm, registered by tomoflow and resampled onto the
            HR grid: ``bench_recover._pair_on_hr_grid``) with the defaults of ``tomoflow train-recovery``
            (``bench_recover.FULL_C``) except the time limit (``--train-time-limit``, 60 s). Recorded: the
            wall time from the call's start until the held-out L1 first reaches the stored CPU run's final
            held-out L1 (``results/bench_recover_c_defaults.json``, read, not copied), the whole curve
            (seconds, epoch, held-out L1) and the pore figures of the GPU-trained network on part (c)'s
            held-out samples (seeds 101-103; porosity error, pore count vs HR, recall), beside the stored
            CPU run's. CPU comparison, same run: ``train_recovery(device="cpu")`` with a time limit equal to
            the GPU's wall time to the target (or its whole wall time if not reached; at most
            ``--train-cpu-max-s``) and its held-out L1 at that time, beside the GPU's best L1 at the same
            second of its curve.
* infer     Tiled U-Net inference over N³ volumes (512³, and 768³: the largest HR size of
            bench_scale.py) of bench_recover part (b)'s smooth random structure
            (``bench_recover._smooth_slab``, the same waves and noise as its store), with part (b)'s network
            (``bench_recover.make_unet``: default ``UNetConfig``, random variance-preserving weights) by

            - ``tomoflow.recover.predict_tiled(device="cuda")`` with the output block that
              ``recover_volume`` would choose (``block_for_budget`` of the configured worker memory
              budget, 128³) and with the largest block (256³), host NumPy in and out, in one process;
            - MONAI ``sliding_window_inference`` on the same GPU (the peer as it is used on a GPU: the
              volume as one CUDA tensor, ``roi_size`` = tomoflow's input box, overlap 0.25,
              ``mode="constant"``, ``sw_batch_size=1``); its time includes the host-to-device copy of the
              input and the copy of the output back (tomoflow's does too: NumPy in, NumPy out).

            Per method: wall time, peak GPU memory (``torch.cuda.max_memory_allocated``, reset before each),
            peak host RSS (``VmHWM``, reset before each), and exactness: max |a - ref| on a central cube
            (``--infer-ref``, 160³) against ``predict_volume`` of that cube grown by an aligned margin
            (as part (b)), relative to max |ref|; where the whole-volume estimate fits in the free GPU
            memory (``--infer-whole-max``), also against ``predict_volume`` of the whole volume.
            The CPU figure: ``predict_tiled(device="cpu")`` at a reduced size (``--infer-cpu-size``, 128³,
            labelled), with the GPU's output of the same volume (the device agreement). Also recorded:
            whether tomoflow's peak GPU memory stays put while the volume grows (``memory_bound``: the
            peaks at the smallest and the largest size, measured), the estimate ``inference_bytes`` of each
            box beside the measured peak, and ``torch.cuda.mem_get_info``.
* register  ``tomoflow.register.register(device="cuda")`` vs ``device="cpu"`` on bench_recover part (a)'s
            pair (seed 1: 160³ HR in 96³ LFOV, prior 1.5 LFOV voxels off) and on bench_scale.py's pairs
            (HR 192³ and 384³ in LFOV N/4 + max(48, 3N/32) of 4 µm, seed 1, the ``simulate-pair``
            defaults; ``--register-sizes``, 768 when the time allows): wall time and the mapping error
            against the simulation's truth (part (a): every HR voxel centre, ``bench_recover.mapping_error``;
            scale pairs: bench_scale's 9³ grid of HR voxel centres), and the distance between the two
            devices' mappings.

Fairness
--------
* Same inputs, same code, same process for both devices; only ``device`` changes. GPU timings are
  bracketed by ``torch.cuda.synchronize()``; a small untimed warm-up call on each device (CUDA context,
  cuDNN autotuning) precedes the timed ones. The CPU runs use every core torch sees (its default threads;
  recorded). torch's TF32 flags (``torch.backends.cudnn.allow_tf32``, on by default, so GPU convolutions
  round their inputs to TF32) are recorded, not changed: tomoflow does not set them, so this is what
  a user gets; the CPU vs GPU difference of the same volume shows their effect.
* Pairs are simulated in memory by ``tomoflow.sim.simulate_multiscale_pair`` with the benchmarks' own
  parameters (no stores written, no CLI process): the cheapest honest way, since the simulator is the
  one both benchmarks use (bench_scale.py's ``tomoflow simulate-pair`` calls it too, then writes stores).
  Its rasteriser is single-threaded NumPy (~0.1 µs per point, 8 points per HR voxel: ~40 s at 384³), so
  from ``coarse_raster_from`` (384) the HR volume is rasterised at one point per voxel
  (``supersample_hr=1``, 8x cheaper; same sample, misregistration and truth; recorded per case).
  The volumes of ``infer`` are made in z-slabs on a thread pool. Simulation time is recorded separately
  and never counted as registration or inference time.
* Sizing: the full run is meant to fit in about 4 minutes on one H100 with 16 cores. ``--time-cap``
  (per part: train 130 s, infer 90 s, register 60 s) skips a CPU comparison (or a size) whose estimated
  time would overrun the cap, with the reason recorded, rather than overrun.
* Each part catches its own failures and records ``{"error": ...}``; the JSON is rewritten after every
  part, so one broken part (or a killed run) loses nothing else.

Run on the GPU machine from the repository root, with tomoflow importable (``PYTHONPATH=$PWD``), torch
with CUDA and MONAI::

    python benchmarks/bench_gpu_recover.py                    # -> benchmarks/results/bench_gpu_recover.json
    python benchmarks/bench_gpu_recover.py --parts infer --infer-sizes 512
    python benchmarks/bench_gpu_recover.py --quick            # tiny sizes; device cpu without a GPU (recorded)

``--quick`` (HR 64³, volumes of 64³ and 96³, ...) runs in well under 90 s on a 2-core CPU machine and
writes ``bench_gpu_recover_quick.json``; on the GPU machine it is a smoke test of the CUDA paths.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from _common import RESULTS_DIR, PeakMemory, fmt_bytes, print_table, report_summary, write_results  # noqa: E402  (after the sys.path set-up)
from bench_gpu import _err, log  # noqa: E402  (after the sys.path set-up)
from bench_recover import (  # noqa: E402  (after the sys.path set-up)
    FULL,
    FULL_C,
    MONAI_OVERLAP,
    QUICK,
    QUICK_C,
    _maxabs,
    _pair_on_hr_grid,
    _pore_row,
    _smooth_slab,
    make_unet,
    mapping_error,
    recall_by_size,
)
from bench_scale import HR_UM, LFOV_UM  # noqa: E402  (after the sys.path set-up)
from bench_scale import SEED as SCALE_SEED  # noqa: E402  (after the sys.path set-up)

PARTS = ("train", "infer", "register")
STORED_CPU = RESULTS_DIR / "bench_recover_c_defaults.json"
FULL_CFG: dict[str, dict[str, Any]] = {
    "train": {**FULL_C, "time_limit_s": 60.0, "cpu_max_s": 30.0},
    "infer": {"sizes": [512, 768], "cpu_size": 128, "ref": 160, "whole_max": 512, "seed": 0},
    "register": {"hidden": dict(FULL, seeds=FULL["seeds"][:1]), "sizes": [192, 384], "coarse_raster_from": 384},
}
QUICK_CFG: dict[str, dict[str, Any]] = {
    "train": {**QUICK_C, "time_limit_s": 12.0, "cpu_max_s": 6.0},
    "infer": {"sizes": [48, 64], "cpu_size": 32, "ref": 24, "whole_max": 64, "seed": 0},
    "register": {"hidden": QUICK, "sizes": [64], "coarse_raster_from": 64},
}
# seconds per part (--time-cap overrides): the full run is meant to end within about 4 minutes on an H100 node
TIME_CAPS = {"train": 130.0, "infer": 90.0, "register": 60.0}
QUICK_TIME_CAP = 60.0
PEER_PACKAGES = ["monai", "dask", "distributed", "dask-cuda", "zarr", "cupy-cuda12x", "cupy-cuda13x"]

_T0 = time.perf_counter()


# ----------------------------------------------------------------------------- device, timing, budget
class Device:
    """torch's CUDA device when usable (and not ``--device cpu``), else the CPU (the reason recorded)."""

    def __init__(self, want: str) -> None:
        import torch

        self.torch = torch
        self.reason = "--device cpu"
        cuda = False
        if want != "cpu":
            cuda = bool(torch.cuda.is_available())
            self.reason = "" if cuda else f"torch {torch.__version__} sees no CUDA device"
        if want == "cuda" and not cuda:
            raise SystemExit(f"--device cuda: {self.reason}")
        self.name = "cuda" if cuda else "cpu"

    @property
    def gpu(self) -> bool:
        return self.name == "cuda"

    def sync(self) -> None:
        if self.gpu:
            self.torch.cuda.synchronize()

    def release(self) -> None:
        """Return cached blocks to the driver and reset the peak counter (between methods)."""
        if self.gpu:
            self.sync()
            self.torch.cuda.empty_cache()
            self.torch.cuda.reset_peak_memory_stats()

    def allocated(self) -> int | None:
        return int(self.torch.cuda.memory_allocated()) if self.gpu else None

    def peak(self) -> int | None:
        return int(self.torch.cuda.max_memory_allocated()) if self.gpu else None

    def free_total(self) -> tuple[int, int] | None:
        if not self.gpu:
            return None
        free, total = self.torch.cuda.mem_get_info()
        return int(free), int(total)

    def info(self) -> dict[str, Any]:
        torch = self.torch
        out: dict[str, Any] = {
            "device": self.name,
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
        }
        if not self.gpu:
            out["why_cpu"] = self.reason
            return out
        props = torch.cuda.get_device_properties(0)
        out.update(
            {
                "gpu_name": props.name,
                "gpu_memory_bytes": int(props.total_memory),
                "compute_capability": f"{props.major}.{props.minor}",
                "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version(),
                "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
                "matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
                "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            }
        )
        return out


def measured(dev: Device, fn: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    """``fn()`` once: synchronised wall time, peak GPU memory (reset before) and peak host RSS."""
    dev.release()
    before = dev.allocated()
    with PeakMemory() as pm:
        t = time.perf_counter()
        out = fn()
        dev.sync()
        wall = time.perf_counter() - t
    stats = {"wall_s": wall, "host_peak_rss_bytes": pm.peak, "host_delta_rss_bytes": pm.delta}
    if dev.gpu:
        stats.update({"gpu_peak_bytes": dev.peak(), "gpu_bytes_before": before})
    return out, stats


class Budget:
    """The per-part time cap: whether an estimated step still fits, and the reason when it does not."""

    def __init__(self, cap_s: float) -> None:
        self.cap = float(cap_s)
        self.t0 = time.perf_counter()
        self.cpu_ratio = 1.0  # the CPU / device time ratio seen so far (estimates the CPU steps to come)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def refuse(self, what: str, estimate_s: float) -> str | None:
        """None when ``estimate_s`` more seconds fit in the cap; else the reason to skip ``what``."""
        if self.elapsed() + estimate_s <= self.cap:
            return None
        return (
            f"skipped {what}: estimated {estimate_s:.0f} s after {self.elapsed():.0f} s of the part would "
            f"overrun --time-cap {self.cap:.0f} s"
        )


# ----------------------------------------------------------------------------- part train
def stored_cpu_run(path: Path = STORED_CPU) -> dict[str, Any]:
    """The stored CPU run of bench_recover part (c) with the defaults: its held-out L1, time, pore figures."""
    doc = json.loads(path.read_text())
    c = doc["training_and_pores"]
    tr = c["training"]
    return {
        "file": str(path.relative_to(BENCH_DIR.parent)),
        "created_utc": doc.get("created_utc"),
        "cpu_model": doc.get("machine", {}).get("cpu_model"),
        "threads": tr.get("threads"),
        "val_l1": tr["held_out"]["val_l1"],
        "val_l1_input": tr["held_out"]["val_l1_input"],
        "wall_s": tr["wall_s"],
        "training_s": tr["training_s"],
        "epochs_run": tr["epochs_run"],
        "best_epoch": tr["best_epoch"],
        "summary": c["summary"],
        "hr": c["config"]["hr"],
        "test_seeds": c["config"]["test_seeds"],
    }


def _train(
    pair: Any, inp: np.ndarray, cfg: dict[str, Any], device: str, time_limit_s: float, out: Path
) -> tuple[Any, dict[str, Any]]:
    """``train_recovery`` on the pair with part (c)'s parameters; the held-out L1 curve against wall time."""
    from tomoflow.recover.unet import UNetConfig
    from tomoflow.train.recovery import train_recovery

    curve: list[list[float]] = []
    t0 = time.perf_counter()

    def progress(epoch: int, step: int, n: int, train_l1: float | None, val_l1: float | None) -> None:
        if val_l1 is not None:
            curve.append([round(time.perf_counter() - t0, 3), epoch, float(val_l1)])

    res = train_recovery(
        inp,
        pair.hr,
        out_dir=out,
        patch=cfg["patch"],
        context=cfg["context"],
        config=UNetConfig(channels=tuple(cfg["channels"])),
        batch=cfg["batch"],
        epochs=cfg["epochs"],
        steps_per_epoch=cfg["steps"],
        patience=cfg["patience"],
        time_limit_s=time_limit_s,
        pore_weight=cfg["pore_weight"],
        seed=0,
        device=device,
        progress=progress,
        hr_voxel_um=1.0,
        lfov_voxel_um=cfg["lfov_um"],
        overwrite=True,
    )
    wall = time.perf_counter() - t0
    tr = res.card["training"]
    return res, {
        "device": tr["device"],
        "threads": tr["threads"],
        "time_limit_s": time_limit_s,
        "wall_s": wall,
        "training_s": res.card["timing"]["training_s"],
        "phases_s": res.card["timing"]["phases"],
        "epochs_run": tr["epochs_run"],
        "best_epoch": tr["best_epoch"],
        "stopped_by": tr["stopped_by"],
        "val_l1": res.metrics["val_l1"],
        "val_l1_input": res.metrics["val_l1_input"],
        "curve_s_epoch_val_l1": curve,
    }


def _first_at_or_below(curve: list[list[float]], target: float) -> list[float] | None:
    return next((p for p in curve if p[2] <= target), None)


def _best_by(curve: list[list[float]], seconds: float) -> float | None:
    vals = [p[2] for p in curve if p[0] <= seconds]
    return min(vals) if vals else None


def held_out_pores(cfg: dict[str, Any], res: Any, device: str) -> dict[str, Any]:
    """Part (c)'s protocol on its held-out samples with the trained (calibrated) network, on ``device``."""
    from tomoflow.recover import pore_metrics, predict_volume, threshold_from_reference, with_normalization

    net = with_normalization(res.model, res.card)  # calibrated, as `tomoflow recover` runs it
    samples, recall = [], {}
    for seed in cfg["test_seeds"]:
        q, xq, info = _pair_on_hr_grid(cfg, seed)
        t = time.perf_counter()
        vols = {"LFOV": xq, "HR": q.hr, "recovered": predict_volume(net, xq, device=device)}
        info["inference_s"] = time.perf_counter() - t
        thr = threshold_from_reference(q.hr)
        ms = {k: pore_metrics(v, threshold=thr, spacing_um=1.0, connectivity=26, min_voxels=8) for k, v in vols.items()}
        rows = {k: _pore_row(m) for k, m in ms.items()}
        for k in ("LFOV", "recovered"):
            rows[k]["porosity_error_pp"] = rows[k]["porosity_percent"] - rows["HR"]["porosity_percent"]
            rows[k]["count_fraction_of_hr"] = rows[k]["count"] / max(rows["HR"]["count"], 1)
        for k, v in recall_by_size(q.hr, {k: vols[k] for k in ("LFOV", "recovered")}, thr).items():
            recall[k] = recall.get(k, 0) + v
        samples.append({**info, "threshold": thr, "volumes": rows})
    summary = {
        f"{k}_{what}": float(np.mean([abs(s["volumes"][k][key]) for s in samples]))
        for k in ("LFOV", "recovered")
        for what, key in (("abs_porosity_error_pp", "porosity_error_pp"), ("count_fraction_of_hr",) * 2)
    }
    summary.update({f"{k}_recall": float(recall[k].sum() / max(recall["HR"].sum(), 1)) for k in ("LFOV", "recovered")})
    return {"samples": samples, "summary": summary, "recall_by_size": {k: v.tolist() for k, v in recall.items()}}


def part_train(dev: Device, cfg: dict[str, Any], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    budget = Budget(args.time_cap["train"])
    stored = stored_cpu_run()
    target = float(stored["val_l1"])
    res: dict[str, Any] = {"config": cfg, "stored_cpu_run": stored, "target_val_l1": target}
    res["target_comparable"] = cfg["hr"] == stored["hr"] and cfg["test_seeds"] == stored["test_seeds"]
    if not res["target_comparable"]:
        res["target_note"] = f"this pair ({cfg['hr']}³) is not the stored run's ({stored['hr']}³): informative only"

    pair, inp, info = _pair_on_hr_grid(cfg, cfg["train_seed"])
    res["pair"] = info
    log(f"train: pair {cfg['hr']}³ ready ({info['simulate_s']:.1f} s simulate); target held-out L1 {target:.4f}")
    net, gpu = _train(pair, inp, cfg, dev.name, float(cfg["time_limit_s"]), work / "model_gpu")
    hit = _first_at_or_below(gpu["curve_s_epoch_val_l1"], target)
    gpu["target_reached"] = hit is not None
    gpu["time_to_target_s"] = hit[0] if hit else None
    gpu["epoch_at_target"] = int(hit[1]) if hit else None
    res["device_run"] = gpu
    log(
        f"train ({dev.name}): {gpu['epochs_run']} epochs in {gpu['wall_s']:.1f} s, held-out L1 {gpu['val_l1']:.4f}; "
        f"target {'reached at ' + format(hit[0], '.1f') + ' s' if hit else 'not reached'}"
    )
    t = time.perf_counter()
    res["pores"] = held_out_pores(cfg, net, dev.name)
    res["pores"]["seconds"] = time.perf_counter() - t
    res["pores"]["stored_cpu_summary"] = stored["summary"]
    log(f"train: pores of the {dev.name}-trained network {res['pores']['summary']}")

    # the CPU for the same wall time (the GPU's time to the target, else its whole run), capped
    same = float(hit[0] if hit else gpu["wall_s"])
    limit = min(same, float(cfg["cpu_max_s"]))
    cpu: dict[str, Any] = {"requested_wall_s": same, "time_limit_s": limit}
    if limit < same:
        cpu["note"] = f"limited to --train-cpu-max-s {cfg['cpu_max_s']:g} s (the GPU's wall time was {same:.1f} s)"
    why = budget.refuse("the CPU training comparison", limit + 5.0)
    if why:
        cpu["skipped"] = why
    else:
        _, c = _train(pair, inp, cfg, "cpu", limit, work / "model_cpu")
        cpu.update(c)
        cpu["device_best_val_l1_at_same_s"] = _best_by(gpu["curve_s_epoch_val_l1"], c["wall_s"])
        cpu["target_reached"] = c["val_l1"] <= target
    res["cpu"] = cpu
    rows = [
        [
            k,
            r.get("threads"),
            f"{r['wall_s']:.1f}" if "wall_s" in r else "-",
            r.get("epochs_run"),
            f"{r['val_l1']:.4f}" if "val_l1" in r else "-",
            "-" if r.get("time_to_target_s") is None else f"{r['time_to_target_s']:.1f}",
        ]
        for k, r in (
            ("stored CPU run", {**stored, "time_to_target_s": stored["wall_s"]}),
            (f"device ({dev.name})", gpu),
            ("cpu, same wall time", cpu),
        )
    ]
    print_table(rows, ["run", "threads", "wall s", "epochs", "held-out L1", "to target s"], title="Training")
    res["speedup_to_target_vs_stored_cpu"] = stored["wall_s"] / hit[0] if hit else None
    return res


# ----------------------------------------------------------------------------- part infer
def smooth_volume(n: int, seed: int, slab: int = 64) -> np.ndarray:
    """bench_recover part (b)'s volume (the same waves, slabs and noise as its store), in memory, made on threads."""
    rng = np.random.default_rng(seed)
    waves = [
        (rng.uniform(2 * np.pi / 64, 2 * np.pi / 8, 3), rng.uniform(0, 2 * np.pi, 3), float(rng.uniform(0.3, 1.0)))
        for _ in range(12)
    ]
    out = np.empty((n, n, n), np.float32)

    def fill(z0: int) -> None:
        z1 = min(z0 + slab, n)
        out[z0:z1] = _smooth_slab(z0, z1, n, waves, np.random.default_rng([seed, z0]))

    with ThreadPoolExecutor(os.cpu_count() or 1) as ex:
        list(ex.map(fill, range(0, n, slab)))
    return out


def _monai(dev: Device, model: Any, vol: np.ndarray, roi: int) -> np.ndarray:
    """MONAI's sliding window on ``dev``: the volume as one tensor there, output back to host NumPy."""
    from monai.inferers import sliding_window_inference

    torch = dev.torch
    x = torch.from_numpy(vol)[None, None].to(dev.name)
    with torch.inference_mode():
        y = sliding_window_inference(
            x, roi_size=(roi,) * 3, sw_batch_size=1, predictor=model, overlap=MONAI_OVERLAP, mode="constant"
        )
    return y[0, 0].to("cpu").numpy()


def memory_bound(sizes: list[dict[str, Any]]) -> dict[str, Any]:
    """Whether tomoflow's peak GPU memory stays the same while the volume grows (measured, per method):
    the peaks of the smallest and the largest size run, their ratio against the ratio of voxels."""
    done = [s for s in sizes if "methods" in s]
    out: dict[str, Any] = {}
    if len(done) < 2:
        return {"note": "fewer than two sizes ran: nothing to compare"}
    a, b = done[0], done[-1]
    for name in ("tomoflow_budget_block", "tomoflow_largest_block", "monai"):
        pa = a["methods"].get(name, {}).get("gpu_peak_bytes")
        pb = b["methods"].get(name, {}).get("gpu_peak_bytes")
        if pa and pb:
            out[name] = {
                "sizes": [a["n"], b["n"]],
                "peak_bytes": [pa, pb],
                "peak_ratio": pb / pa,
                "voxel_ratio": (b["n"] / a["n"]) ** 3,
                "bounded": pb / pa < 1.2,
            }
    return out or {"note": "no GPU peaks were measured (a CPU run)"}


def _infer_size(dev: Device, model: Any, n: int, cfg: dict[str, Any], monai_ok: bool, budget: Budget) -> dict[str, Any]:
    from tomoflow import config
    from tomoflow.recover import predict_tiled, predict_volume
    from tomoflow.recover.tiling import block_for_budget, plan_tiles, read_box, valid_halo
    from tomoflow.recover.unet import alignment, inference_bytes, receptive_field

    radius, align = receptive_field(model), alignment(model)
    t = time.perf_counter()
    vol = smooth_volume(n, int(cfg["seed"]))
    out: dict[str, Any] = {"n": n, "make_volume_s": time.perf_counter() - t, "methods": {}}
    blocks = {
        "tomoflow_budget_block": block_for_budget(model, config.get().worker_memory_budget, shape=vol.shape),
        "tomoflow_largest_block": block_for_budget(model, 1 << 62, shape=vol.shape),
    }
    # the reference: the central cube, exactly (part (b)'s rule), and the whole volume where it fits
    margin = math.ceil(radius / align) * align
    size = min(int(cfg["ref"]), n)
    c0 = ((n - size) // 2 // align) * align
    region = (slice(c0, c0 + size),) * 3

    def centre() -> np.ndarray:
        crop = read_box(vol, (c0 - margin,) * 3, (c0 + size + margin,) * 3, "reflect")
        return predict_volume(model, crop, device=dev.name)[(slice(margin, margin + size),) * 3]

    ref, st = measured(dev, centre)
    out["reference"] = {"region": [c0, c0 + size], "margin": margin, **st}
    whole = None
    est_whole = inference_bytes(model, (n + 2 * margin,) * 3)
    free = dev.free_total()
    out["whole_volume_estimate_bytes"] = est_whole
    if n <= int(cfg["whole_max"]) and (free is None or est_whole < 0.8 * free[0]):
        try:
            whole, st = measured(dev, lambda: predict_volume(model, vol, device=dev.name))
            out["reference"]["whole"] = st
        except Exception as exc:  # noqa: BLE001 - an out-of-memory whole volume is a finding, not a failure
            out["reference"]["whole"] = _err(exc)
            dev.release()
    else:
        out["reference"]["whole"] = {"skipped": f"n > {cfg['whole_max']} or estimate above 0.8 x free {free}"}
    scale = float(np.abs(ref).max())

    def diffs(y: np.ndarray) -> dict[str, float]:
        d = {"region_rel": _maxabs(y[region], ref) / scale}
        if whole is not None:
            d["whole_rel"] = _maxabs(y, whole) / scale
        return d

    for name, block in blocks.items():
        tiles = plan_tiles(vol.shape, block, valid_halo(model, vol.shape, block, align) or radius, align)
        box = tiles[0].in_shape[0]
        y, st = measured(dev, lambda block=block: predict_tiled(model, vol, block=block, device=dev.name))
        out["methods"][name] = {
            "block": block,
            "input_box": box,
            "tiles": len(tiles),
            "estimate_bytes_per_box": inference_bytes(model, (box,) * 3),
            "voxels_per_s": n**3 / st["wall_s"],
            **st,
            **diffs(y),
        }
        del y
        log(f"infer {n}³ {name} ({block}³, boxes {box}³): {st['wall_s']:.2f} s")
    roi = out["methods"]["tomoflow_budget_block"]["input_box"]
    why = budget.refuse(f"MONAI at {n}³", 2.5 * out["methods"]["tomoflow_budget_block"]["wall_s"])
    if why:
        out["methods"]["monai"] = {"skipped": why}
    elif monai_ok:
        y, st = measured(dev, lambda: _monai(dev, model, vol, roi))
        out["methods"]["monai"] = {"roi": roi, "overlap": MONAI_OVERLAP, "voxels_per_s": n**3 / st["wall_s"], **st}
        out["methods"]["monai"].update(diffs(y))
        del y
        log(f"infer {n}³ monai (roi {roi}³): {st['wall_s']:.2f} s")
    if free is not None:
        out["free_before_bytes"], out["gpu_total_bytes"] = free
    return out


def part_infer(dev: Device, cfg: dict[str, Any], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from tomoflow.recover import predict_tiled

    budget = Budget(args.time_cap["infer"])
    res: dict[str, Any] = {"config": cfg, "sizes": []}
    monai_ok = not args.no_peer
    try:
        import monai

        res["monai"] = monai.__version__
    except ImportError as exc:
        monai_ok = False
        res["monai"] = f"skipped: {exc}"
    if args.no_peer:
        res["monai"] = "skipped: --no-peer"
    model = make_unet(work / "unet.safetensors", int(cfg["seed"]))
    warm = smooth_volume(48, 1)
    for d in {dev.name, "cpu"}:  # untimed: CUDA context, cuDNN autotuning, first-call costs
        predict_tiled(model, warm, block=48, device=d)
        if monai_ok:
            _monai(Device(d), model, warm, 48)
    last = (1, 0.0)  # (n, seconds) of the last size: the next one's estimate scales with the voxels
    for n in cfg["sizes"]:
        why = budget.refuse(f"{n}³", last[1] * (n / last[0]) ** 3)
        if why:
            res["sizes"].append({"n": n, "skipped": why})
            continue
        t = time.perf_counter()
        res["sizes"].append(_infer_size(dev, model, int(n), cfg, monai_ok, budget))
        last = (n, time.perf_counter() - t)
    # the CPU figure at a reduced size, with the device's output of the same volume beside it
    m = int(cfg["cpu_size"])
    cpu: dict[str, Any] = {"n": m, "label": f"tomoflow predict_tiled on the CPU at {m}³ (reduced size)"}
    why = budget.refuse(f"the CPU figure at {m}³", 0.0)
    if why:
        cpu["skipped"] = why
    else:
        from tomoflow import config
        from tomoflow.recover.tiling import block_for_budget

        vol = smooth_volume(m, int(cfg["seed"]))
        block = block_for_budget(model, config.get().worker_memory_budget, shape=vol.shape)
        yc, st = measured(Device("cpu"), lambda: predict_tiled(model, vol, block=block, device="cpu"))
        cpu.update({"block": block, "voxels_per_s": m**3 / st["wall_s"], **st})
        yg, st = measured(dev, lambda: predict_tiled(model, vol, block=block, device=dev.name))
        cpu["device_same_volume"] = {"device": dev.name, "voxels_per_s": m**3 / st["wall_s"], **st}
        cpu["device_vs_cpu_max_rel_diff"] = _maxabs(yg, yc) / float(np.abs(yc).max())
    res["cpu"] = cpu
    res["memory_bound"] = memory_bound(res["sizes"])
    rows = []
    for s in res["sizes"]:
        for name, r in s.get("methods", {}).items():
            if "wall_s" not in r:
                continue
            rows.append(
                [
                    f"{s['n']}³",
                    name,
                    f"{r['wall_s']:.2f}",
                    f"{r['voxels_per_s'] / 1e6:.1f}",
                    fmt_bytes(r.get("gpu_peak_bytes")),
                    fmt_bytes(r["host_peak_rss_bytes"]),
                    f"{r['region_rel']:.1e}",
                    f"{r['whole_rel']:.1e}" if "whole_rel" in r else "-",
                ]
            )
    if "wall_s" in cpu:
        rate = f"{cpu['voxels_per_s'] / 1e6:.1f}"
        rows.append(
            [f"{m}³", "tomoflow on the CPU", f"{cpu['wall_s']:.2f}", rate, "-", fmt_bytes(cpu["host_peak_rss_bytes"])]
        )
        rows[-1] += ["-", "-"]
    print_table(
        rows,
        ["size", "method", "wall s", "Mvox/s", "peak GPU", "peak RSS", "rel diff centre", "whole"],
        title=f"Tiled inference on {dev.name}",
    )
    return res


# ----------------------------------------------------------------------------- part register
def _register_pair(pair: Any, device: str) -> tuple[np.ndarray, float]:
    from tomoflow.register import register

    t = time.perf_counter()
    r = register(
        pair.hr,
        pair.lfov,
        hr_spacing_um=pair.hr_spacing_um,
        lfov_spacing_um=pair.lfov_spacing_um,
        prior=pair.prior_matrix,
        device=device,
    )
    return r.matrix, time.perf_counter() - t


def grid_error(m_est: np.ndarray, m_true: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """bench_scale's accuracy: the mapping error (HR voxels) at a 9³ grid of HR voxel centres spanning the ROI
    (``mapping_error`` on 9 points per axis, ``(n - 1) / 8`` voxels apart)."""
    step = (max(shape) - 1) / 8.0 * HR_UM
    return mapping_error(m_est, m_true, (9, 9, 9), step) * step / HR_UM


def _register_case(dev: Device, label: str, pair: Any, sim_s: float, grid: bool, budget: Budget) -> dict[str, Any]:
    shape = pair.hr.shape

    def err(m: np.ndarray) -> np.ndarray:
        return grid_error(m, pair.true_matrix, shape) if grid else mapping_error(m, pair.true_matrix, shape, 1.0)

    case: dict[str, Any] = {
        "case": label,
        "hr_shape": list(shape),
        "lfov_shape": list(pair.lfov.shape),
        "simulate_s": sim_s,
        "error_points": "9³ grid of HR voxel centres (bench_scale)" if grid else "every HR voxel (bench_recover)",
        "prior_error_hr_vox": float(err(pair.prior_matrix).mean()),
        "devices": {},
    }
    mats = {}
    for d in dict.fromkeys([dev.name, "cpu"]):
        est = case["devices"][dev.name]["seconds"] * budget.cpu_ratio if d == "cpu" and dev.gpu else 0.0
        why = budget.refuse(f"register on {d} ({label})", est) if d == "cpu" and dev.gpu else None
        if why:
            case["devices"][d] = {"skipped": why}
            continue
        m, secs = _register_pair(pair, d)
        e = err(m)
        mats[d] = m
        case["devices"][d] = {"seconds": secs, "mean_error_hr_vox": float(e.mean()), "max_error_hr_vox": float(e.max())}
        log(f"register {label} on {d}: {secs:.2f} s, error mean {e.mean():.4f} max {e.max():.4f} HR vox")
    if len(mats) == 2:
        gap = grid_error(mats[dev.name], mats["cpu"], shape)
        case["device_vs_cpu_max_hr_vox"] = float(gap.max())
        c, g = case["devices"]["cpu"]["seconds"], case["devices"][dev.name]["seconds"]
        case["speedup"] = c / g
        budget.cpu_ratio = max(budget.cpu_ratio, c / g)
    return case


def part_register(dev: Device, cfg: dict[str, Any], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from tomoflow.sim import simulate_multiscale_pair

    budget = Budget(args.time_cap["register"])
    h = cfg["hidden"]
    res: dict[str, Any] = {"config": cfg, "cases": []}
    warm = simulate_multiscale_pair(hr_shape=(32,) * 3, lfov_shape=(32,) * 3, lfov_spacing_um=2.0, seed=0)
    for d in dict.fromkeys([dev.name, "cpu"]):  # untimed: first-call costs (CUDA context, kernels)
        _register_pair(warm, d)
    t = time.perf_counter()
    pair = simulate_multiscale_pair(
        hr_shape=(h["hr"],) * 3,
        lfov_shape=(h["lfov"],) * 3,
        hr_spacing_um=1.0,
        lfov_spacing_um=4.0,
        prior_error_lfov_vox=1.5,
        seed=h["seeds"][0],
    )
    label = f"bench_recover (a): {h['hr']}³ HR in {h['lfov']}³ LFOV, seed {h['seeds'][0]}"
    res["cases"].append(_register_case(dev, label, pair, time.perf_counter() - t, False, budget))
    sim_rate = res["cases"][0]["simulate_s"] / h["hr"] ** 3
    for n in cfg["sizes"]:
        lf = n // 4 + max(48, 3 * n // 32)  # bench_scale's LFOV
        ss = 1 if n >= int(cfg["coarse_raster_from"]) else 2  # HR partial-volume supersampling (simulate-pair: 2)
        why = budget.refuse(f"the scale pair {n}³", sim_rate * n**3 * (2.0 if ss == 2 else 0.5))
        if why:
            res["cases"].append({"case": f"bench_scale {n}³", "skipped": why})
            continue
        t = time.perf_counter()
        pair = simulate_multiscale_pair(
            hr_shape=(n,) * 3,
            lfov_shape=(lf,) * 3,
            hr_spacing_um=HR_UM,
            lfov_spacing_um=LFOV_UM,
            seed=SCALE_SEED,
            supersample_hr=ss,
        )
        sim = time.perf_counter() - t
        if ss == 2:
            sim_rate = max(sim_rate, sim / n**3)
        case = _register_case(dev, f"bench_scale {n}³ in {lf}³ LFOV", pair, sim, True, budget)
        case["supersample_hr"] = ss
        if ss == 1:
            case["note"] = (
                "HR rasterised at 1 point per voxel (supersample_hr=1; simulate-pair uses 2): the single-threaded "
                "rasteriser costs ~8x less; same sample, misregistration and truth, coarser partial-volume edges"
            )
        res["cases"].append(case)
        del pair
    rows = [
        [
            c["case"],
            *(
                f"{c['devices'][d]['seconds']:.2f} / {c['devices'][d]['mean_error_hr_vox']:.4f}"
                if "seconds" in c.get("devices", {}).get(d, {})
                else "-"
                for d in dict.fromkeys([dev.name, "cpu"])
            ),
            f"{c['simulate_s']:.1f}" if "simulate_s" in c else "-",
        ]
        for c in res["cases"]
    ]
    print_table(
        rows,
        ["pair", *(f"{d} s / mean err" for d in dict.fromkeys([dev.name, "cpu"])), "simulate s"],
        title="Registration",
    )
    return res


# ----------------------------------------------------------------------------- main
def summarise(results: dict[str, Any], dev: Device) -> dict[str, Any]:
    s: dict[str, Any] = {}
    tr = results.get("train", {})
    g = tr.get("device_run", {})
    if g:
        s["train_time_to_target_s"] = g.get("time_to_target_s")
        s["train_val_l1"] = g.get("val_l1")
        s["train_cpu_val_l1_same_time"] = tr.get("cpu", {}).get("val_l1")
        s.update({f"train_pores_{k}": v for k, v in tr.get("pores", {}).get("summary", {}).items()})
    for size in results.get("infer", {}).get("sizes", []):
        for name, r in size.get("methods", {}).items():
            if "wall_s" not in r:
                continue
            s[f"infer_{size['n']}_{name}_s"] = r["wall_s"]
            s[f"infer_{size['n']}_{name}_region_rel"] = r["region_rel"]
    for c in results.get("register", {}).get("cases", []):
        for d, r in c.get("devices", {}).items():
            if "seconds" in r:
                s[f"register_{c['hr_shape'][0]}_{d}_s"] = r["seconds"]
    for part, r in results.items():
        s[f"{part}_status"] = "error" if isinstance(r, dict) and "error" in r else "ok"
    return s


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (seconds): smoke test, on the CPU without a GPU")
    ap.add_argument("--output", type=Path, default=None, help="JSON path (default results/bench_gpu_recover.json)")
    ap.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto", help="auto: CUDA when torch sees it")
    ap.add_argument(
        "--time-cap",
        type=float,
        default=None,
        help="seconds per part (default train 130, infer 90, register 60; --quick 60)",
    )
    ap.add_argument("--no-peer", action="store_true", help="skip MONAI")
    ap.add_argument("--train-time-limit", type=float, default=None, help="train: device time limit (default 60 s)")
    ap.add_argument("--train-cpu-max-s", type=float, default=None, help="train: most seconds of CPU comparison (45)")
    ap.add_argument("--train-test-seeds", default=None, help="train: held-out seeds (default 101,102,103)")
    ap.add_argument("--infer-sizes", default=None, help="infer: comma-separated N (default 512,768)")
    ap.add_argument("--infer-cpu-size", type=int, default=None, help="infer: N of the CPU figure (default 128)")
    ap.add_argument("--infer-ref", type=int, default=None, help="infer: edge of the central reference cube (160)")
    ap.add_argument("--infer-whole-max", type=int, default=None, help="infer: largest N with a whole-volume reference")
    ap.add_argument("--register-sizes", default=None, help="register: bench_scale HR sizes (default 192,384)")
    ap.add_argument("--workdir", default=None, help="folder for the temporary files (default: system temp)")
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = [p for p in parts if p not in PARTS]
    if bad:
        ap.error(f"unknown part(s) {bad}; choose from {PARTS}")
    args.parts = parts
    default = dict.fromkeys(PARTS, QUICK_TIME_CAP) if args.quick else TIME_CAPS
    args.time_cap = {p: args.time_cap if args.time_cap is not None else default[p] for p in PARTS}
    return args


def configs(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    cfg = {k: dict(v) for k, v in (QUICK_CFG if args.quick else FULL_CFG).items()}

    def ints(s: str) -> list[int]:
        return [int(v) for v in s.split(",") if v.strip()]

    for key, part, name, conv in (
        ("train_time_limit", "train", "time_limit_s", float),
        ("train_cpu_max_s", "train", "cpu_max_s", float),
        ("train_test_seeds", "train", "test_seeds", ints),
        ("infer_sizes", "infer", "sizes", ints),
        ("infer_cpu_size", "infer", "cpu_size", int),
        ("infer_ref", "infer", "ref", int),
        ("infer_whole_max", "infer", "whole_max", int),
        ("register_sizes", "register", "sizes", ints),
    ):
        value = getattr(args, key)
        if value is not None:
            cfg[part][name] = conv(value)
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    dev = Device(args.device)
    cfg = configs(args)
    name = "bench_gpu_recover_quick" if args.quick else "bench_gpu_recover"
    env = dev.info()
    log(f"device: {dev.name}" + (f" ({env['gpu_name']}, torch {env['torch']})" if dev.gpu else f" - {dev.reason}"))
    results: dict[str, Any] = {}
    payload: dict[str, Any] = {
        "quick": bool(args.quick),
        "parts_requested": args.parts,
        "time_cap_s": args.time_cap,
        "config": cfg,
        "device": env,
        "results": results,
    }
    fns = {"train": part_train, "infer": part_infer, "register": part_register}
    work = Path(tempfile.mkdtemp(prefix="tomoflow-bench-gpu-recover-", dir=args.workdir))
    path = None
    try:
        for part in args.parts:
            log(f"===== part {part} =====")
            t0 = time.perf_counter()
            try:
                r = fns[part](dev, cfg[part], args, work)
            except Exception as exc:  # noqa: BLE001 - one broken part must not lose the others
                r = _err(exc)
                log(f"part {part} FAILED: {r['error']}")
                print(r["traceback"], file=sys.stderr, flush=True)
            with contextlib.suppress(Exception):
                dev.release()
            r["part_seconds"] = round(time.perf_counter() - t0, 2)
            results[part] = r
            payload.update(
                {
                    "summary": summarise(results, dev),
                    "complete": False,
                    "total_runtime_s": round(time.perf_counter() - _T0, 1),
                }
            )
            path = write_results(name, payload, path=args.output, extra_packages=PEER_PACKAGES)  # after every part
    finally:
        shutil.rmtree(work, ignore_errors=True)
    payload.update(
        {"summary": summarise(results, dev), "complete": True, "total_runtime_s": round(time.perf_counter() - _T0, 1)}
    )
    path = write_results(name, payload, path=args.output, extra_packages=PEER_PACKAGES)
    report_summary(payload["summary"], path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
