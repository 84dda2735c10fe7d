"""Resolution recovery (Andrew et al., ZEISS): registration vs SimpleITK, tiled inference vs MONAI, training and pores.

Part (a), multiscale registration. A simulated porous sample (``tomoflow.sim.simulate_multiscale_pair``,
cathode family) scanned as a 160³ HR ROI (1 µm voxels) inside a 4x coarser 96³ LFOV (4 µm voxels),
with a random 9-DOF misregistration (rotations up to 3 degrees, scales within ±2 %) and a
translation-only stage prior a few HR voxels off. Registered by

- ``tomoflow.register.register`` (coarse translation by NCC search, translation, 9 DOF; NCC at LFOV
  voxels, L-BFGS in torch), and
- SimpleITK (the peer): translation (``TranslationTransform``), then ``ScaleVersor3DTransform``, Mattes
  mutual information, regular-step gradient descent with ``SetOptimizerScalesFromPhysicalShift``
  (parameter units normalised), 2 resolution levels, linear interpolation.

Error = distance between the estimated and the true mapping of every HR voxel centre, in HR voxels
(mean and max), and wall time.

Part (b), exact tiled U-Net inference. The default U-Net (``UNetConfig()``: channels 16, 32, 64;
receptive-field radius 23, alignment 4) with random variance-preserving weights (seed 0; inference
cost does not depend on training; see :func:`make_unet`) runs over an N³ float32 volume store of smooth random
structure (N = 512; ``--quick``
128) by

- ``tomoflow.pipeline.recover.recover_volume`` on a ``LocalCluster`` of 2 single-threaded worker
  processes with a memory budget of 2 GiB per worker: one output chunk per task, its size chosen from
  the budget (:func:`tomoflow.recover.tiling.block_for_budget`: 128³ at N = 512), each block's input
  box grown by the halo valid evaluation needs (the network run without padding on the box, only the
  kept voxels computed: :func:`tomoflow.recover.tiling.valid_halo`, 22 voxels, boxes of 176³;
  ``--quick``: 64³ chunks, 112³ boxes), written into an OME-Zarr store with its pyramid. Wall time, throughput and
  the peak resident memory
  (``VmHWM``, reset before the run) of each worker, against the budget; and
- MONAI (the peer) as it is used: the whole volume as one torch tensor in one process (2 torch
  threads), ``monai.inferers.sliding_window_inference`` with ``roi_size`` = tomoflow's input box,
  its default overlap 0.25, ``mode="constant"``, ``sw_batch_size=1``. Run in a subprocess so that its
  peak resident memory is its own; its wall time includes reading the volume from the store.

Both are compared with whole-volume inference (``tomoflow.recover.predict_volume``, reflect padding).
At N = 512 that does not fit, so the reference is computed for a central cube (default 160³,
containing tile faces of both methods) exactly: ``predict_volume`` on the sub-volume grown by a margin
of 24 voxels (>= the radius 23, a multiple of the alignment) whose origin is a multiple of the
alignment, so it pools on the same grid as the whole volume and its kept voxels never see the
crop's padding; for N <= 160 the whole-volume reference is also computed and checked against it.
Differences are max |a - b| over the central cube, the interior (voxels >= 23 from the volume faces;
N <= 160 only) and the whole volume (N <= 160 only), relative to max |reference|. MONAI's windows see
the network's zero padding at the volume faces instead of the reflected volume, so its whole-volume
difference includes that border convention; the centre and the interior show its seams.

Part (c), training and pore metrics. The network (default ``UNetConfig``) is trained by
``tomoflow.train.recovery.train_recovery`` on the 2-core CPU (2 torch threads) on part (a)'s first pair
(seed 1: the LFOV registered by tomoflow and resampled onto the 160³ HR grid; octants, one held out),
with the defaults of ``tomoflow train-recovery`` (``FULL_C`` reads them: ``tomoflow.train.recovery.DEFAULTS``,
120 epochs of 32 steps, patience 15, the 20-minute time limit); wall time recorded.
Then, on held-out samples (other seeds of the same family: samples the network never saw, a harder
test than the paper's, where the network runs on the rest of the same sample), each registered and
resampled the same way, the network predicts the HR grid, and pores are measured with one protocol
(threshold: Otsu on the HR volume; 26-connected; >= 8 voxels) on the LFOV on the HR grid, the HR and
the recovered volume: porosity, pore count, mean pore volume. PNGs: the central slices and the
pore-size histogram of the first held-out sample (``results/bench_recover[_c]_slices.png``,
``..._pores.png``). Where the missing pores are: HR's pores binned by volume, and in each bin the
fraction that the LFOV and the recovered volume find (a quarter or more of the pore's voxels below the
threshold): *recall by pore size* (``tomoflow.recover.pore_recall``), summed over the held-out samples.

``--lfov-spacing S`` (part (c)) scans the same samples with an LFOV of S µm voxels over the same
field (384 µm: 96³ at 4 µm, 128³ at 3 µm); the HR ROI, PSF (0.7 LFOV voxel) and noise are unchanged.
At 3 µm the LFOV finds 38 % of HR's pores, the fraction the paper's LFOV found (1154 of 3055): a
case as hard as the paper's, beside the 4 µm default (where it finds 19 %).

    python benchmarks/bench_recover.py               # (a) 160³ HR in 96³ LFOV, 3 seeds; (b) 512³; (c)
    python benchmarks/bench_recover.py --quick       # (a) 64³ HR in 40³ LFOV, 1 seed; (b) 128³; (c) tiny
    python benchmarks/bench_recover.py --parts b     # part (b) only -> results/bench_recover_b.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    RESULTS_DIR,
    _cpu_jiffies,
    _reset_hwm,
    _rss_bytes,
    _status_kib,
    fmt_bytes,
    other_cpu_load,
    print_table,
    wait_for_idle,
    write_results,
)

from tomoflow.register import register
from tomoflow.sim import simulate_multiscale_pair
from tomoflow.train.recovery import DEFAULTS as TRAIN_DEFAULTS

FULL = {"hr": 160, "lfov": 96, "seeds": [1, 2, 3]}
QUICK = {"hr": 64, "lfov": 40, "seeds": [1]}
# part (b): volume N³, output chunk (= one task), central reference cube, whole-volume reference up to N
# part (c): the benchmark pair of part (a) (seed 1) trains the network; held-out samples (other seeds) test it
FULL_C = {
    "hr": 160,
    "lfov": 96,
    "lfov_um": 4.0,
    "train_seed": 1,
    "test_seeds": [101, 102, 103],
    # the training: the defaults of `tomoflow train-recovery` (one source, tomoflow.train.recovery.DEFAULTS)
    "patch": TRAIN_DEFAULTS["patch"],
    "context": 0,
    "batch": TRAIN_DEFAULTS["batch"],
    "epochs": TRAIN_DEFAULTS["epochs"],
    "steps": TRAIN_DEFAULTS["steps_per_epoch"],
    "patience": TRAIN_DEFAULTS["patience"],
    "time_limit_s": TRAIN_DEFAULTS["time_limit_s"],
    "pore_weight": 0.0,
    "channels": [16, 32, 64],
}
QUICK_C = {
    "hr": 64,
    "lfov": 40,
    "lfov_um": 4.0,
    "train_seed": 1,
    "test_seeds": [101],
    "patch": 32,
    "context": 0,
    "batch": 2,
    "epochs": 2,
    "steps": 4,
    "patience": 2,
    "pore_weight": 0.0,
    "channels": [16, 32, 64],
}
BUDGET_B = 2 * 1024**3  # part (b): the memory budget per worker; tomoflow's chunk follows it unless --chunk
FULL_B = {"n": 512, "chunk": None, "ref": 160, "full_ref_max": 160, "seed": 0}
QUICK_B = {"n": 128, "chunk": 64, "ref": 72, "full_ref_max": 160, "seed": 0}
MONAI_OVERLAP = 0.25  # sliding_window_inference's default


def mapping_error(m_est: np.ndarray, m_true: np.ndarray, shape: tuple[int, int, int], spacing: float) -> np.ndarray:
    """Distance (HR voxels) between two HR -> LFOV mappings at every HR voxel centre."""
    d = np.asarray(m_est, dtype=np.float64) - np.asarray(m_true, dtype=np.float64)
    out = np.empty(int(np.prod(shape)))
    zz = np.arange(shape[0], dtype=np.float64) * spacing
    yy, xx = np.meshgrid(np.arange(shape[1]) * spacing, np.arange(shape[2]) * spacing, indexing="ij")
    plane = np.stack([np.zeros_like(yy), yy, xx], -1).reshape(-1, 3)
    n = plane.shape[0]
    for i, z in enumerate(zz):
        p = plane.copy()
        p[:, 0] = z
        out[i * n : (i + 1) * n] = np.linalg.norm(p @ d[:3, :3].T + d[:3, 3], axis=1)
    return out / spacing


def run_tomoflow(pair: Any) -> tuple[np.ndarray, float, dict[str, Any]]:
    t = time.perf_counter()
    res = register(
        pair.hr,
        pair.lfov,
        hr_spacing_um=pair.hr_spacing_um,
        lfov_spacing_um=pair.lfov_spacing_um,
        prior=pair.prior_matrix,
    )
    return (
        res.matrix,
        time.perf_counter() - t,
        {"stages": [(s["name"], round(s["seconds"], 3)) for s in res.stages], "ncc": res.ncc},
    )


def _sitk_image(a: np.ndarray, spacing: float) -> Any:
    import SimpleITK as sitk  # noqa: N813  (SimpleITK's own spelling)

    img = sitk.GetImageFromArray(np.ascontiguousarray(a, dtype=np.float32))
    img.SetSpacing((spacing,) * 3)
    img.SetOrigin((0.0, 0.0, 0.0))
    return img


def _sitk_matrix(tx: Any) -> np.ndarray:
    """4 x 4 (z, y, x) matrix of a SimpleITK transform (which works in (x, y, z))."""
    pts = [np.zeros(3), *np.eye(3)]
    out = [np.asarray(tx.TransformPoint(tuple(float(v) for v in p[::-1])))[::-1] for p in pts]
    m = np.eye(4)
    m[:3, 3] = out[0]
    for a in range(3):
        m[:3, a] = out[a + 1] - out[0]
    return m


def run_simpleitk(pair: Any, seed: int) -> tuple[np.ndarray, float, dict[str, Any]]:
    import SimpleITK as sitk  # noqa: N813  (SimpleITK's own spelling)

    t0 = time.perf_counter()
    fixed = _sitk_image(pair.hr, float(pair.hr_spacing_um[0]))
    moving = _sitk_image(pair.lfov, float(pair.lfov_spacing_um[0]))

    def method(lr: float, min_step: float, iters: int) -> Any:
        r = sitk.ImageRegistrationMethod()
        r.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
        r.SetMetricSamplingStrategy(r.RANDOM)
        r.SetMetricSamplingPercentage(0.25, seed)
        r.SetInterpolator(sitk.sitkLinear)
        r.SetOptimizerAsRegularStepGradientDescent(
            learningRate=lr, minStep=min_step, numberOfIterations=iters, gradientMagnitudeTolerance=1e-8
        )
        r.SetOptimizerScalesFromPhysicalShift()
        r.SetShrinkFactorsPerLevel([2, 1])
        r.SetSmoothingSigmasPerLevel([1.0, 0.0])
        r.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
        return r

    prior_t = pair.prior_matrix[:3, 3]
    tr = sitk.TranslationTransform(3, tuple(float(v) for v in prior_t[::-1]))
    r1 = method(4.0, 1e-3, 200)
    r1.SetInitialTransform(tr, inPlace=False)
    t_tr = r1.Execute(fixed, moving)
    t1 = time.perf_counter()
    centre = (np.asarray(pair.hr.shape) - 1) / 2.0 * float(pair.hr_spacing_um[0])
    sv = sitk.ScaleVersor3DTransform()
    sv.SetCenter(tuple(float(v) for v in centre[::-1]))
    off = np.asarray(sitk.CompositeTransform(t_tr).TransformPoint(tuple(float(v) for v in centre[::-1]))) - centre[::-1]
    sv.SetTranslation(tuple(float(v) for v in off))
    r2 = method(1.0, 1e-5, 300)
    r2.SetInitialTransform(sv, inPlace=False)
    t_9 = r2.Execute(fixed, moving)
    t2 = time.perf_counter()
    return (
        _sitk_matrix(t_9),
        t2 - t0,
        {
            "stages": [("translation", round(t1 - t0, 3)), ("scale-versor", round(t2 - t1, 3))],
            "iterations_last": r2.GetOptimizerIteration(),
            "stop": r2.GetOptimizerStopConditionDescription(),
        },
    )


def part_a(cfg: dict[str, Any], peer: bool) -> dict[str, Any]:
    """Registration against SimpleITK; returns the part's results."""
    rows, cases = [], []
    for seed in cfg["seeds"]:
        wait_for_idle(60.0)
        t = time.perf_counter()
        pair = simulate_multiscale_pair(
            hr_shape=(cfg["hr"],) * 3,
            lfov_shape=(cfg["lfov"],) * 3,
            hr_spacing_um=1.0,
            lfov_spacing_um=4.0,
            prior_error_lfov_vox=1.5,
            seed=seed,
        )
        sim_s = time.perf_counter() - t
        shape = pair.hr.shape
        e0 = mapping_error(pair.prior_matrix, pair.true_matrix, shape, 1.0)
        case: dict[str, Any] = {
            "seed": seed,
            "simulate_s": sim_s,
            "prior_error_hr_vox": {"mean": e0.mean(), "max": e0.max()},
            "true": {"rotation_deg": pair.rotation_deg.tolist(), "scale": pair.scale.tolist()},
            "methods": {},
        }
        runners = [("tomoflow", run_tomoflow)] + (
            [("simpleitk", lambda p, seed=seed: run_simpleitk(p, seed))] if peer else []
        )
        for name, fn in runners:
            load0 = other_cpu_load(0.5)
            m, secs, info = fn(pair)
            e = mapping_error(m, pair.true_matrix, shape, 1.0)
            case["methods"][name] = {
                "mean_error_hr_vox": float(e.mean()),
                "max_error_hr_vox": float(e.max()),
                "seconds": secs,
                "other_load_before": load0,
                **info,
            }
            rows.append([seed, name, f"{e0.mean():.2f}", f"{e.mean():.4f}", f"{e.max():.4f}", f"{secs:.2f}"])
            print(
                f"seed {seed} {name:10s} mean {e.mean():.4f} max {e.max():.4f} HR vox in {secs:.2f} s "
                f"(prior {e0.mean():.2f})",
                flush=True,
            )
        cases.append(case)
    print_table(
        rows,
        ["seed", "method", "prior err (HR vox)", "mean err", "max err", "time s"],
        title=f"Registration: {cfg['hr']}³ HR ROI (1 µm) in {cfg['lfov']}³ LFOV (4 µm)",
    )
    summary = {}
    for name in cases[0]["methods"]:
        summary[name] = {
            "mean_error_hr_vox": float(np.mean([c["methods"][name]["mean_error_hr_vox"] for c in cases])),
            "max_error_hr_vox": float(np.max([c["methods"][name]["max_error_hr_vox"] for c in cases])),
            "seconds_mean": float(np.mean([c["methods"][name]["seconds"] for c in cases])),
        }
    target = {
        "mean_error_le_0.03": summary["tomoflow"]["mean_error_hr_vox"] <= 0.03,
        "faster_than_simpleitk": (summary["tomoflow"]["seconds_mean"] < summary["simpleitk"]["seconds_mean"])
        if "simpleitk" in summary
        else None,
    }
    print("summary:", summary, "targets:", target)
    return {"config": cfg, "cases": cases, "summary": summary, "targets": target}


# ============================================================================= part (b)
def _start_peak() -> int:
    """Reset this process's peak-RSS counter (VmHWM); return its resident memory now (bytes)."""
    _reset_hwm()
    return _rss_bytes()


def _peak() -> int:
    return (_status_kib("VmHWM") or 0) * 1024


def _warm_worker() -> dict[str, Any]:
    """Import torch and the network code in a worker (not part of the measured peak); its threads."""
    import torch

    import tomoflow.pipeline.recover
    import tomoflow.recover.unet  # noqa: F401  (imported to load it before timing)

    return {"torch_threads": torch.get_num_threads(), "omp": os.environ.get("OMP_NUM_THREADS")}


def _cpu_seconds() -> float:
    return time.process_time()


def _smooth_slab(
    z0: int, z1: int, n: int, waves: list[tuple[np.ndarray, np.ndarray, float]], noise: np.random.Generator
) -> np.ndarray:
    """Slab ``[z0, z1)`` of a smooth random field: separable cosine waves through ``tanh``, plus 2 % noise."""
    f = np.zeros((z1 - z0, n, n), np.float32)
    idx = np.arange(n, dtype=np.float32)
    for w, ph, amp in waves:
        cz = np.cos(w[0] * idx[z0:z1] + ph[0]).astype(np.float32)
        cy = np.cos(w[1] * idx + ph[1]).astype(np.float32)
        cx = np.cos(w[2] * idx + ph[2]).astype(np.float32)
        f += amp * cz[:, None, None] * (cy[:, None] * cx[None, :])[None]
    f = np.tanh(2.0 * f)
    f += 0.02 * noise.standard_normal(f.shape, dtype=np.float32)
    return f


def make_volume_store(path: Path, n: int, seed: int, chunks: int = 64, slab: int = 64) -> None:
    """An N³ float32 tomoflow volume store of smooth random structure, written in z-slabs."""
    from tomoflow.io.output import prepare_output
    from tomoflow.io.stages import StageLog
    from tomoflow.io.volume_store import VolumeStore

    rng = np.random.default_rng(seed)
    waves = [
        (rng.uniform(2 * np.pi / 64, 2 * np.pi / 8, 3), rng.uniform(0, 2 * np.pi, 3), float(rng.uniform(0.3, 1.0)))
        for _ in range(12)
    ]
    plan = prepare_output(
        path, kind="tomoflow-volume", stage="recon", fingerprint=f"bench-recover-{n}-{seed}", params={}, inputs=[]
    )
    c = min(chunks, n)
    v = VolumeStore.create(plan, (n, n, n), 1.0, chunks=(c, c, c), n_levels=1, algorithm="synthetic")
    arr = v.level(0)
    for z0 in range(0, n, slab):
        z1 = min(z0 + slab, n)
        arr[z0:z1] = _smooth_slab(z0, z1, n, waves, np.random.default_rng([seed, z0]))
    StageLog.begin(path, "recon", fingerprint=f"bench-recover-{n}-{seed}", params={}, steps={"level-0": 1})
    StageLog(path, "recon").mark_done("level-0", [0])
    StageLog(path, "recon").finish(output_id=f"bench-recover-{n}-{seed}", seconds=0.0)


def make_unet(path: Path, seed: int) -> Any:
    """Default U-Net, random weights (fixed seed), saved with ``save_unet``; returns the network.

    The weights are variance-preserving (He-normal for LeakyReLU: std ``gain / sqrt(fan_in)``, where a
    stride-2 transposed convolution's fan-in is its input channels; biases N(0, 0.05)), so the
    predicted correction is of the order of the input and the whole receptive field matters, as in a
    trained network. PyTorch's default initialisation shrinks the signal at every layer: the
    correction is nearly zero and any tiling, exact or not, would agree to ~1e-6.
    """
    import torch
    from torch import nn

    from tomoflow.recover.unet import NEGATIVE_SLOPE, UNetConfig, build_unet
    from tomoflow.train.files import save_unet

    torch.manual_seed(seed)
    cfg = UNetConfig()
    model = build_unet(config=cfg).eval()
    gain = math.sqrt(2.0 / (1.0 + NEGATIVE_SLOPE**2))
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.ConvTranspose3d):
                nn.init.normal_(mod.weight, std=gain / math.sqrt(mod.in_channels))
                nn.init.normal_(mod.bias, std=0.05)
            elif isinstance(mod, nn.Conv3d):
                fan_in = mod.in_channels * int(np.prod(mod.kernel_size))
                nn.init.normal_(mod.weight, std=(1.0 if mod is model.head else gain) / math.sqrt(fan_in))
                nn.init.normal_(mod.bias, std=0.05)
    save_unet(model, cfg, path, card={"name": f"bench-random-unet-seed-{seed}"})
    return model


def run_tomoflow_b(
    volume: Path, weights: Path, out: Path, chunk: int, workers: int, idle_wait: float = 60.0
) -> dict[str, Any]:
    """``recover_volume`` on a LocalCluster of ``workers`` single-threaded processes."""
    from tomoflow.cluster import connect
    from tomoflow.io.volume_store import VolumeStore
    from tomoflow.pipeline.recover import recover_volume

    with connect(
        "local", n_workers=workers, threads_per_worker=1, processes=True, memory_limit="8GB", dashboard_address=":0"
    ) as client:
        threads = client.run(_warm_worker)
        load0 = wait_for_idle(idle_wait)
        base = client.run(_start_peak)
        cpu0 = client.run(_cpu_seconds)
        j0, c0 = _cpu_jiffies(), time.process_time()
        t = time.perf_counter()
        recover_volume(volume, weights, out, chunks=(chunk,) * 3, memory_budget=BUDGET_B, client=client, overwrite=True)
        wall = time.perf_counter() - t
        j1, c1 = _cpu_jiffies(), time.process_time()
        peaks = client.run(_peak)
        cpu1 = client.run(_cpu_seconds)
    rec = VolumeStore.open(out).stages()["recover"]
    worker_cpu = sum(cpu1[k] - cpu0[k] for k in cpu0)
    other = None
    if j0 is not None and j1 is not None:
        busy = (j1[0] - j0[0]) / os.sysconf("SC_CLK_TCK")
        other = max(0.0, (busy - worker_cpu - (c1 - c0)) / wall)
    return {
        "wall_s": wall,
        "cpu_s": worker_cpu,
        "level0_wall_s": rec.timings.get("recover"),
        "timings": rec.timings,
        "blocks": rec.info.get("blocks"),
        "halo": rec.info.get("halo"),
        "worker_cores_busy": worker_cpu / wall,
        "other_load_before": load0,
        "other_load_during": other,
        "worker_threads": list(threads.values()),
        "worker_peak_rss_bytes": sorted(peaks.values()),
        "worker_baseline_rss_bytes": sorted(base.values()),
    }


def monai_child(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: MONAI sliding-window inference over the whole volume; output saved as .npy."""
    import torch

    torch.set_num_threads(int(spec["threads"]))
    from monai.inferers import sliding_window_inference

    from tomoflow.io.volume_store import VolumeStore
    from tomoflow.recover.unet import load_unet

    model = load_unet(spec["weights"], device="cpu").eval()
    base = _start_peak()
    c0 = time.process_time()
    t0 = time.perf_counter()
    vol = np.asarray(VolumeStore.open(spec["volume"]).level(0)[...], dtype=np.float32)
    t1 = time.perf_counter()
    x = torch.from_numpy(vol)[None, None]
    with torch.inference_mode():
        y = sliding_window_inference(
            x,
            roi_size=tuple(spec["roi"]),
            sw_batch_size=int(spec["sw_batch_size"]),
            predictor=model,
            overlap=float(spec["overlap"]),
            mode="constant",
        )
    t2 = time.perf_counter()
    c1 = time.process_time()
    peak = _peak()
    np.save(spec["out"], np.asarray(y[0, 0].numpy(), dtype=np.float32))
    import monai

    return {
        "wall_s": t2 - t0,
        "load_s": t1 - t0,
        "inference_s": t2 - t1,
        "cpu_s": c1 - c0,
        "peak_rss_bytes": peak,
        "baseline_rss_bytes": base,
        "torch_threads": torch.get_num_threads(),
        "monai": monai.__version__,
    }


def run_monai(
    volume: Path, weights: Path, out_npy: Path, roi: int, threads: int, idle_wait: float = 60.0
) -> dict[str, Any]:
    spec = {
        "volume": str(volume),
        "weights": str(weights),
        "out": str(out_npy),
        "roi": [roi] * 3,
        "overlap": MONAI_OVERLAP,
        "sw_batch_size": 1,
        "threads": threads,
    }
    load0 = wait_for_idle(idle_wait)
    j0, ch0 = _cpu_jiffies(), os.times()
    t = time.perf_counter()
    r = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--monai-child", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - t
    j1, ch1 = _cpu_jiffies(), os.times()
    if r.returncode != 0:
        raise RuntimeError(f"MONAI subprocess failed ({r.returncode}):\n{r.stderr[-4000:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    if j0 is not None and j1 is not None:
        busy = (j1[0] - j0[0]) / os.sysconf("SC_CLK_TCK")
        own = (
            ch1.children_user
            + ch1.children_system
            - ch0.children_user
            - ch0.children_system
            + ch1.user
            + ch1.system
            - ch0.user
            - ch0.system
        )
        res["other_load_during"] = max(0.0, (busy - own) / wall)
    res["cores_busy"] = res["cpu_s"] / res["wall_s"]
    res["other_load_before"] = load0
    res["process_wall_s"] = wall
    res.update({k: spec[k] for k in ("roi", "overlap", "sw_batch_size", "threads")})
    return res


def _maxabs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def part_b(
    cfg: dict[str, Any], peer: bool, workers: int = 2, threads: int = 2, idle_wait: float = 60.0
) -> dict[str, Any]:
    """Exact tiled inference (tomoflow, Dask) against MONAI's sliding window; returns the part's results."""
    import torch

    from tomoflow.io.volume_store import VolumeStore
    from tomoflow.recover.tiling import block_for_budget, plan_tiles, predict_volume, read_box, valid_halo
    from tomoflow.recover.unet import UNetConfig, alignment, build_unet, load_unet, receptive_field

    ucfg = UNetConfig()
    n = int(cfg["n"])
    chunk = int(cfg["chunk"]) if cfg["chunk"] else block_for_budget(ucfg, BUDGET_B, shape=(n,) * 3)
    radius, align = receptive_field(ucfg), alignment(ucfg)
    tight = valid_halo(build_unet(config=ucfg), (n,) * 3, chunk, align)  # as recover_volume plans it
    halo = radius if tight is None else tight
    box = plan_tiles((n,) * 3, chunk, halo, align)[0].in_shape[0]
    n_tiles = len(plan_tiles((n,) * 3, chunk, halo, align))
    margin = math.ceil(radius / align) * align
    size = min(int(cfg["ref"]), n)
    c0 = ((n - size) // 2 // align) * align
    region = (slice(c0, c0 + size),) * 3
    print(
        f"part (b): {n}³ volume, U-Net {ucfg.channels} (radius {radius}, alignment {align}); tomoflow "
        f"{workers} workers x 1 thread, chunks {chunk}³ ({n_tiles} tasks, input boxes {box}³); MONAI roi {box}³, "
        f"overlap {MONAI_OVERLAP}, {threads} threads; reference cube [{c0}, {c0 + size})³",
        flush=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="tomoflow-bench-recover-"))
    res: dict[str, Any] = {
        "config": {
            **cfg,
            "unet": ucfg.to_dict(),
            "receptive_field": radius,
            "alignment": align,
            "tomoflow": {
                "workers": workers,
                "threads_per_worker": 1,
                "chunks": [chunk] * 3,
                "memory_budget_bytes": BUDGET_B,
                "chunk_from_budget": not cfg["chunk"],
                "input_box": [box] * 3,
                "halo": halo,
                "unpadded": tight is not None,
                "tasks": n_tiles,
                "pad_mode": "reflect",
            },
            "monai": {
                "roi_size": [box] * 3,
                "overlap": MONAI_OVERLAP,
                "mode": "constant",
                "sw_batch_size": 1,
                "threads": threads,
                "padding_mode": "constant",
            },
            "reference": {"region": [c0, c0 + size], "margin": margin, "whole_volume": n <= int(cfg["full_ref_max"])},
        },
    }
    try:
        t = time.perf_counter()
        vol, weights = tmp / "volume.zarr", tmp / "unet.safetensors"
        make_unet(weights, int(cfg["seed"]))
        make_volume_store(vol, n, int(cfg["seed"]))
        res["make_inputs_s"] = time.perf_counter() - t
        print(f"made the {n}³ volume store and the weights in {res['make_inputs_s']:.1f} s", flush=True)

        tf = run_tomoflow_b(vol, weights, tmp / "recovered.zarr", chunk, workers, idle_wait)
        tf["voxels_per_s"] = n**3 / tf["wall_s"]
        res["tomoflow"] = tf
        print(
            f"tomoflow: {tf['wall_s']:.1f} s ({tf['voxels_per_s'] / 1e6:.3f} Mvox/s), worker peaks "
            f"{[fmt_bytes(p) for p in tf['worker_peak_rss_bytes']]}",
            flush=True,
        )
        if peer:
            mo = run_monai(vol, weights, tmp / "monai.npy", box, threads, idle_wait)
            mo["voxels_per_s"] = n**3 / mo["wall_s"]
            res["monai"] = mo
            print(
                f"MONAI: {mo['wall_s']:.1f} s ({mo['voxels_per_s'] / 1e6:.3f} Mvox/s), peak "
                f"{fmt_bytes(mo['peak_rss_bytes'])}",
                flush=True,
            )

        # reference: exact whole-volume inference on the central cube (and on the whole volume when small)
        torch.set_num_threads(threads)
        model = load_unet(weights, device="cpu").eval()
        src = VolumeStore.open(vol).level(0)
        t = time.perf_counter()
        crop = read_box(src, (c0 - margin,) * 3, (c0 + size + margin,) * 3, "reflect")
        ref = predict_volume(model, crop)[(slice(margin, margin + size),) * 3]
        del crop
        res["reference"] = {"region_s": time.perf_counter() - t, "max_abs_ref_region": float(np.abs(ref).max())}
        scale = float(np.abs(ref).max())
        got = np.asarray(VolumeStore.open(tmp / "recovered.zarr").level(0)[region])
        diffs: dict[str, Any] = {"tomoflow_region": _maxabs(got, ref)}
        mon = np.load(tmp / "monai.npy", mmap_mode="r") if peer else None
        if mon is not None:
            diffs["monai_region"] = _maxabs(mon[region], ref)
        if res["config"]["reference"]["whole_volume"]:
            t = time.perf_counter()
            full = predict_volume(model, src[...])
            res["reference"]["whole_s"] = time.perf_counter() - t
            diffs["region_reference_vs_whole"] = _maxabs(full[region], ref)
            whole = np.asarray(VolumeStore.open(tmp / "recovered.zarr").level(0)[...])
            inner = (slice(radius, n - radius),) * 3  # voxels >= radius from the volume faces
            diffs["tomoflow_whole"] = _maxabs(whole, full)
            diffs["tomoflow_interior"] = _maxabs(whole[inner], full[inner])
            del whole
            if mon is not None:
                diffs["monai_whole"] = _maxabs(np.asarray(mon), full)
                diffs["monai_interior"] = _maxabs(mon[inner], full[inner])
            scale = max(scale, float(np.abs(full).max()))
            del full
        res["max_abs_diff"] = diffs
        res["relative_diff"] = {k: v / scale for k, v in diffs.items()}
        res["diff_scale"] = scale
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    tf, mo, rel = res["tomoflow"], res.get("monai"), res["relative_diff"]
    tf_rel = max(v for k, v in rel.items() if k.startswith("tomoflow"))

    def cells(m: str) -> list[str]:
        return [f"{rel[f'{m}_{k}']:.1e}" if f"{m}_{k}" in rel else "-" for k in ("region", "interior", "whole")]

    rows = [
        [
            "tomoflow",
            f"{tf['wall_s']:.1f}",
            f"{tf['cpu_s']:.1f}",
            f"{tf['voxels_per_s'] / 1e6:.3f}",
            " / ".join(fmt_bytes(p) for p in tf["worker_peak_rss_bytes"]),
            *cells("tomoflow"),
        ]
    ]
    if mo is not None:
        rows.append(
            [
                "MONAI",
                f"{mo['wall_s']:.1f}",
                f"{mo['cpu_s']:.1f}",
                f"{mo['voxels_per_s'] / 1e6:.3f}",
                fmt_bytes(mo["peak_rss_bytes"]),
                *cells("monai"),
            ]
        )
    print_table(
        rows,
        ["method", "wall s", "CPU s", "Mvox/s", "peak RSS (per process)", "rel. diff centre", "interior", "whole"],
        title=f"U-Net inference over {n}³: tomoflow {workers} workers x 1 thread, chunks {chunk}³ (boxes "
        f"{box}³) vs MONAI sliding window roi {box}³ overlap {MONAI_OVERLAP}, {threads} threads; "
        f"centre = [{c0}, {c0 + size})³",
    )
    targets: dict[str, Any] = {
        "exact_le_1e-5_relative": tf_rel <= 1e-5,
        "worker_peak_within_budget": max(tf["worker_peak_rss_bytes"]) <= BUDGET_B,
    }
    if mo is not None:
        frac = max(tf["worker_peak_rss_bytes"]) / mo["peak_rss_bytes"]
        res["worker_peak_fraction_of_monai"] = frac
        res["time_ratio_tomoflow_over_monai"] = tf["wall_s"] / mo["wall_s"]
        targets["time_le_monai"] = tf["wall_s"] <= mo["wall_s"]
        targets["worker_peak_below_monai_peak"] = frac < 1.0
    res["targets"] = targets
    print("targets:", targets, flush=True)
    return res


# ============================================================================= part (c)
def _pair_on_hr_grid(cfg: dict[str, Any], seed: int) -> tuple[Any, np.ndarray, dict[str, Any]]:
    """Simulate the benchmark pair of ``seed``, register it (tomoflow) and resample the LFOV onto the HR grid."""
    from tomoflow.register.resample import resample_to_grid

    t = time.perf_counter()
    pair = simulate_multiscale_pair(
        hr_shape=(cfg["hr"],) * 3,
        lfov_shape=(cfg["lfov"],) * 3,
        hr_spacing_um=1.0,
        lfov_spacing_um=cfg.get("lfov_um", 4.0),
        prior_error_lfov_vox=1.5,
        seed=seed,
    )
    t_sim = time.perf_counter() - t
    t = time.perf_counter()
    reg = register(
        pair.hr,
        pair.lfov,
        hr_spacing_um=pair.hr_spacing_um,
        lfov_spacing_um=pair.lfov_spacing_um,
        prior=pair.prior_matrix,
    )
    e = mapping_error(reg.matrix, pair.true_matrix, pair.hr.shape, 1.0)
    inp = resample_to_grid(pair.lfov, reg.matrix, pair.hr.shape, pair.hr_spacing_um, pair.lfov_spacing_um)
    return (
        pair,
        inp,
        {
            "seed": seed,
            "simulate_s": t_sim,
            "register_and_resample_s": time.perf_counter() - t,
            "registration_error_hr_vox": float(e.mean()),
        },
    )


def _pore_row(m: Any) -> dict[str, Any]:
    d = m.as_dict()
    return {
        "porosity_percent": d["porosity_percent"],
        "count": d["count"],
        "mean_pore_volume_um3": d["mean_pore_volume_um3"],
        "median_equivalent_diameter_um": d["median_equivalent_diameter_um"],
    }


def part_c(cfg: dict[str, Any], work: Path, figures: Path, idle_wait: float = 60.0) -> dict[str, Any]:
    """Training time on this CPU for the benchmark pair; pore metrics of LFOV / HR / recovered on held-out samples."""

    from tomoflow.pipeline.pores import plot_pore_sizes
    from tomoflow.recover import pore_metrics, predict_volume, threshold_from_reference
    from tomoflow.recover.normalization import with_normalization
    from tomoflow.train.recovery import train_recovery

    wait_for_idle(idle_wait)
    pair, inp, info = _pair_on_hr_grid(cfg, cfg["train_seed"])
    print(
        f"training pair: seed {cfg['train_seed']}, {cfg['hr']}³ HR, registration error "
        f"{info['registration_error_hr_vox']:.3f} HR vox",
        flush=True,
    )
    load0 = other_cpu_load(0.5)
    t = time.perf_counter()

    def progress(epoch: int, step: int, n: int, train_l1: float | None, val_l1: float | None) -> None:
        if val_l1 is not None:
            print(
                f"  epoch {epoch:3d}  train L1 {train_l1 if train_l1 is not None else float('nan'):.4f}  "
                f"val L1 {val_l1:.4f}  {time.perf_counter() - t:7.1f} s",
                flush=True,
            )

    from tomoflow.recover.unet import UNetConfig

    res = train_recovery(
        inp,
        pair.hr,
        out_dir=work / "model",
        patch=cfg["patch"],
        context=cfg["context"],
        config=UNetConfig(channels=tuple(cfg.get("channels", (16, 32, 64)))),
        batch=cfg["batch"],
        epochs=cfg["epochs"],
        steps_per_epoch=cfg["steps"],
        patience=cfg["patience"],
        time_limit_s=cfg.get("time_limit_s"),
        pore_weight=cfg.get("pore_weight", 0.0),
        seed=0,
        threads=2,
        device="cpu",
        progress=progress,
        hr_voxel_um=1.0,
        lfov_voxel_um=cfg.get("lfov_um", 4.0),
    )
    train_wall = time.perf_counter() - t
    tr = res.card["training"]
    training = {
        "pair": info,
        "wall_s": train_wall,
        "training_s": res.card["timing"]["training_s"],
        "epochs_run": tr["epochs_run"],
        "best_epoch": tr["best_epoch"],
        "stopped_by": tr["stopped_by"],
        "steps": tr["epochs_run"] * cfg["steps"],
        "threads": tr["threads"],
        "other_load_before": load0,
        "held_out": res.metrics,
        "parameters": {
            k: cfg.get(k)
            for k in (
                "patch",
                "context",
                "batch",
                "epochs",
                "steps",
                "patience",
                "time_limit_s",
                "pore_weight",
                "channels",
            )
        },
    }
    print(
        f"trained in {train_wall:.1f} s ({tr['epochs_run']} epochs, best {tr['best_epoch']}, {tr['stopped_by']}); "
        f"held-out L1 {res.metrics['val_l1_input']:.4f} -> {res.metrics['val_l1']:.4f}",
        flush=True,
    )
    from tomoflow.recover.calibration import apply_calibration, calibration_of, fit_calibration

    net_raw = with_normalization(res.model, res.card, calibrated=False)
    cal = calibration_of(res.card)
    training["calibration"] = res.card.get("calibration")
    training["held_out_pore_fraction"] = res.metrics.get("pore_fraction")
    # the control: the same calibration fitted to the LFOV itself on the training pair (what a threshold
    # moved to the LFOV's own quantile gives, with no network)
    lfov_fit = fit_calibration(inp, pair.hr)
    lfov_cal = None if lfov_fit is None else calibration_of({"calibration": lfov_fit})
    kinds = (
        ("LFOV", "recovered")
        + (("uncalibrated",) if cal is not None else ())
        + (("LFOV calibrated",) if lfov_cal is not None else ())
    )
    samples, rows = [], []
    recall: dict[str, np.ndarray] = {}
    for seed in cfg["test_seeds"]:
        q, xq, qinfo = _pair_on_hr_grid(cfg, seed)
        t = time.perf_counter()
        raw = predict_volume(net_raw, xq)
        pred = raw if cal is None else apply_calibration(raw, cal)  # what with_normalization(net) returns
        qinfo["inference_s"] = time.perf_counter() - t
        thr = threshold_from_reference(q.hr)
        vols = {
            "LFOV": xq,
            "HR": q.hr,
            "recovered": pred,
            **({"uncalibrated": raw} if cal is not None else {}),
            **({"LFOV calibrated": apply_calibration(xq, lfov_cal)} if lfov_cal is not None else {}),
        }
        ms = {
            name: pore_metrics(v, threshold=thr, spacing_um=1.0, connectivity=26, min_voxels=8, name=name)
            for name, v in vols.items()
        }
        sample = {
            **qinfo,
            "threshold": thr,
            "true_porosity_percent": 100 * q.porosity,
            "volumes": {k: _pore_row(m) for k, m in ms.items()},
        }
        hr_p, hr_n = ms["HR"].porosity * 100, ms["HR"].count
        for k in kinds:
            v = sample["volumes"][k]
            v["porosity_error_pp"] = v["porosity_percent"] - hr_p
            v["count_fraction_of_hr"] = v["count"] / hr_n if hr_n else None
        by_size = recall_by_size(q.hr, {k: vols[k] for k in kinds}, thr)
        sample["recall_by_size"] = {k: v.tolist() for k, v in by_size.items()}
        for k, v in by_size.items():
            recall[k] = recall.get(k, 0) + v
        samples.append(sample)
        for k in ("LFOV", "HR", *kinds[1:]):
            v = sample["volumes"][k]
            rows.append(
                [
                    seed,
                    k,
                    f"{v['porosity_percent']:.2f}",
                    f"{v.get('porosity_error_pp', 0.0):+.2f}",
                    v["count"],
                    "-" if k == "HR" else f"{100 * v['count_fraction_of_hr']:.0f}",
                    f"{v['mean_pore_volume_um3'] or 0:.1f}",
                ]
            )
        if seed == cfg["test_seeds"][0]:
            plot_pore_sizes({k: ms[k] for k in ("LFOV", "HR", "recovered")}, f"{figures}_pores.png")
            sample["slices_png"] = _save_recovery_slices(
                Path(f"{figures}_slices.png"), xq, pred, q.hr, seed, cfg.get("lfov_um", 4.0)
            )
    print_table(
        rows,
        ["seed", "volume", "porosity %", "vs HR pp", "pores", "% of HR", "mean pore um3"],
        title="Pores on held-out samples (threshold from HR, 26-connected, >= 8 voxels)",
    )
    edges = RECALL_BINS_UM3
    print_table(
        [
            [
                f"{edges[i]:g}-{edges[i + 1]:g}" if i + 2 < len(edges) else f">= {edges[i]:g}",
                int(recall["HR"][i]),
                *(f"{recall[k][i] / max(recall['HR'][i], 1):.2f}" for k in kinds),
            ]
            for i in range(len(edges) - 1)
        ],
        ["HR pore volume um3", "HR pores", *(f"{k} finds" for k in kinds)],
        title="Recall by pore size (held-out samples together)",
    )
    err = {k: [abs(s["volumes"][k]["porosity_error_pp"]) for s in samples] for k in kinds}
    frac = {k: [s["volumes"][k]["count_fraction_of_hr"] for s in samples] for k in kinds}
    summary = {
        f"{k}_{what}": float(np.mean(v))
        for what, dd in (("abs_porosity_error_pp", err), ("count_fraction_of_hr", frac))
        for k, v in dd.items()
    }
    targets = {
        "recovered_closer_to_hr_porosity_every_sample": all(r < lf for r, lf in zip(err["recovered"], err["LFOV"])),
        "recovered_closer_to_hr_count_every_sample": all(
            abs(1 - r) < abs(1 - lf) for r, lf in zip(frac["recovered"], frac["LFOV"])
        ),
        "porosity_within_0.3_pp": bool(max(err["recovered"]) <= 0.3),
        "count_at_least_85_percent": bool(min(frac["recovered"]) >= 0.85),
    }
    print("summary:", summary, "targets:", targets, flush=True)
    return {
        "config": cfg,
        "training": training,
        "samples": samples,
        "summary": summary,
        "targets": targets,
        "recall_by_size": {
            "bins_um3": list(RECALL_BINS_UM3[:-1]) + [None],  # bin edges; None: open
            **{k: v.tolist() for k, v in recall.items()},
        },
    }


#: HR pore volume bins (µm³ = HR voxels at 1 µm) of the recall-by-size table; the last bin is open.
RECALL_BINS_UM3 = (8, 16, 32, 64, 128, 256, 512, math.inf)


def recall_by_size(hr: np.ndarray, volumes: dict[str, np.ndarray], threshold: float) -> dict[str, np.ndarray]:
    """HR's pores per volume bin (:data:`RECALL_BINS_UM3`, HR voxels of 1 µm) and how many of them each of
    ``volumes`` finds (``tomoflow.recover.pore_recall``, the protocol's 26-connectivity and 8-voxel minimum)."""
    from tomoflow.recover import pore_recall

    r = pore_recall(
        hr, volumes, threshold=threshold, edges_um3=RECALL_BINS_UM3, spacing_um=1.0, connectivity=26, min_voxels=8
    )
    return {"HR": r.reference, **r.found}


def _save_recovery_slices(
    path: Path, lfov: np.ndarray, rec: np.ndarray, hr: np.ndarray, seed: int, lfov_um: float = 4.0
) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = hr.shape[0] // 2
    lo, hi = np.percentile(hr[z], [0.5, 99.5])
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.3), constrained_layout=True)
    for ax, img, title in zip(
        axes,
        (lfov[z], rec[z], hr[z]),
        (f"LFOV on the HR grid ({lfov_um:g} um -> 1 um)", "recovered (U-Net)", "HR (1 um)"),
    ):
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"held-out sample {seed}, central z slice")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return str(path)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--monai-child"]:
        print(json.dumps(monai_child(json.loads(argv[1]))), flush=True)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="(a) 64³ HR in a 40³ LFOV, one seed; (b) 128³, 64³ chunks")
    ap.add_argument(
        "--parts",
        default="a,b,c",
        help="parts to run, comma-separated: a (registration), b (tiled "
        "inference), c (training and pore metrics); default a,b,c",
    )
    ap.add_argument(
        "--output",
        type=Path,
        default=None,
        help="JSON path (default benchmarks/results/bench_recover[_<parts>][_quick].json)",
    )
    ap.add_argument("--no-peer", action="store_true", help="skip the peers (SimpleITK, MONAI)")
    ap.add_argument("--n", type=int, default=None, help="(b) volume size N (default 512, --quick 128)")
    ap.add_argument(
        "--chunk", type=int, default=None, help="(b) tomoflow output chunk (default: from the 2 GiB budget per worker)"
    )
    ap.add_argument("--ref", type=int, default=None, help="(b) size of the central reference cube (default 160)")
    ap.add_argument(
        "--workers",
        type=int,
        default=2,
        help="(b) tomoflow's single-threaded worker processes "
        "(default 2; 1: one worker whose tasks get both CPUs: torch runs on 2 threads)",
    )
    ap.add_argument("--epochs", type=int, default=None, help="(c) most training epochs (default 120, --quick 2)")
    ap.add_argument("--context", type=int, default=None, help="(c) training input context per side, voxels")
    ap.add_argument("--patch", type=int, default=None, help="(c) training patch edge, voxels (default 32)")
    ap.add_argument("--patience", type=int, default=None, help="(c) early-stopping patience, epochs (default 15)")
    ap.add_argument("--channels", default=None, help="(c) U-Net channels per level, e.g. 32,64,128 (default 16,32,64)")
    ap.add_argument(
        "--pore-weight",
        type=float,
        default=None,
        help="(c) weight of the pore term in the training loss (default 0: L1 only)",
    )
    ap.add_argument(
        "--lfov-spacing",
        type=float,
        default=None,
        help="(c) LFOV voxel size in um over the same "
        "field (default 4; 3 makes the paper's case: the LFOV finds 38 %% of HR's pores)",
    )
    args = ap.parse_args(argv)
    parts = sorted({p.strip().lower() for p in args.parts.split(",") if p.strip()})
    if not parts or set(parts) - {"a", "b", "c"}:
        ap.error(f"--parts takes a comma-separated subset of a, b, c; got {args.parts!r}")
    import torch

    torch.set_num_threads(2)
    payload: dict[str, Any] = {"parts": parts}
    packages = ["torch", "scipy"]
    if "a" in parts:
        peer = not args.no_peer
        if peer:
            try:
                import SimpleITK  # noqa: F401  (imported to check it is installed)
            except ImportError:
                print(
                    "SimpleITK is not installed (benchmark environment: pip install SimpleITK); running without "
                    "the peer",
                    file=sys.stderr,
                )
                peer = False
        # part (a)'s keys stay at the top level of the document (config, cases, summary, targets)
        payload.update(part_a(QUICK if args.quick else FULL, peer))
        packages.append("SimpleITK")
    if "b" in parts:
        cfg = dict(QUICK_B if args.quick else FULL_B)
        for key in ("n", "chunk", "ref"):
            if getattr(args, key) is not None:
                cfg[key] = getattr(args, key)
        peer = not args.no_peer
        if peer:
            try:
                import monai  # noqa: F401  (imported to check it is installed)
            except ImportError:
                print(
                    "MONAI is not installed (benchmark environment: pip install monai); running without the peer",
                    file=sys.stderr,
                )
                peer = False
        payload["tiled_inference"] = part_b(cfg, peer, workers=args.workers, idle_wait=10.0 if args.quick else 60.0)
        packages += ["monai", "dask", "distributed", "zarr"]
    name = (
        "bench_recover" + ("" if parts == ["a", "b", "c"] else "_" + "".join(parts)) + ("_quick" if args.quick else "")
    )
    if "c" in parts:
        cfg = dict(QUICK_C if args.quick else FULL_C)
        if args.channels is not None:
            cfg["channels"] = [int(c) for c in args.channels.split(",")]
        for key in ("epochs", "context", "patch", "patience", "pore_weight"):
            if getattr(args, key) is not None:
                cfg[key] = getattr(args, key)
        if args.lfov_spacing is not None:
            if not 1.0 < args.lfov_spacing <= 8.0:
                ap.error(f"--lfov-spacing must be in (1, 8] um (HR voxels are 1 um), got {args.lfov_spacing}")
            field = cfg["lfov"] * cfg["lfov_um"]  # the same samples: keep the LFOV field
            cfg["lfov"], cfg["lfov_um"] = int(round(field / args.lfov_spacing)), float(args.lfov_spacing)
        figures = args.output.with_suffix("") if args.output else RESULTS_DIR / name
        with tempfile.TemporaryDirectory(prefix="bench_recover_c_") as work:
            payload["training_and_pores"] = part_c(cfg, Path(work), figures, idle_wait=10.0 if args.quick else 60.0)
    payload["parts_missing"] = [
        m
        for p, m in (
            ("a", "(a) registration vs SimpleITK"),
            ("b", "(b) tiled inference vs MONAI"),
            ("c", "(c) training time and pore metrics"),
        )
        if p not in parts
    ]
    path = write_results(name, payload, path=args.output, extra_packages=packages)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
