"""Resolution recovery (Andrew et al., ZEISS): multiscale registration against SimpleITK.

Part (a) of the issue's benchmark, in one run: a simulated porous sample (``tomoflow.sim.
simulate_multiscale_pair``, cathode family) scanned as a 160³ HR ROI (1 µm voxels) inside a 4x coarser
96³ LFOV (4 µm voxels), with a random 9-DOF misregistration (rotations up to 3 degrees, scales within
±2 %) and a translation-only stage prior a few HR voxels off. Registered by

- ``tomoflow.register.register`` (coarse translation by NCC search, translation, 9 DOF; NCC at LFOV
  voxels, L-BFGS in torch), and
- SimpleITK (the peer): translation (``TranslationTransform``), then ``ScaleVersor3DTransform``, Mattes
  mutual information, regular-step gradient descent with ``SetOptimizerScalesFromPhysicalShift``
  (parameter units normalised), 2 resolution levels, linear interpolation.

Error = distance between the estimated and the true mapping of every HR voxel centre, in HR voxels
(mean and max), and wall time. Parts (b) tiled inference against MONAI and (c) recovery training and
pore metrics are to come (the issue "Resolution recovery").

    python benchmarks/bench_recover.py            # 160³ HR in 96³ LFOV, 3 seeds
    python benchmarks/bench_recover.py --quick    # 64³ HR in 40³ LFOV, 1 seed
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import other_cpu_load, print_table, wait_for_idle, write_results  # noqa: E402

from tomoflow.register import register  # noqa: E402
from tomoflow.sim import simulate_multiscale_pair  # noqa: E402

FULL = {"hr": 160, "lfov": 96, "seeds": [1, 2, 3]}
QUICK = {"hr": 64, "lfov": 40, "seeds": [1]}


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
    res = register(pair.hr, pair.lfov, pair.hr_spacing_um, pair.lfov_spacing_um, prior=pair.prior_matrix)
    return res.matrix, time.perf_counter() - t, {"stages": [(s["name"], round(s["seconds"], 3)) for s in res.stages],
                                                  "ncc": res.ncc}


def _sitk_image(a: np.ndarray, spacing: float) -> Any:
    import SimpleITK as sitk

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
    import SimpleITK as sitk

    t0 = time.perf_counter()
    fixed = _sitk_image(pair.hr, float(pair.hr_spacing_um[0]))
    moving = _sitk_image(pair.lfov, float(pair.lfov_spacing_um[0]))

    def method(lr: float, min_step: float, iters: int) -> Any:
        r = sitk.ImageRegistrationMethod()
        r.SetMetricAsMattesMutualInformation(numberOfHistogramBins=50)
        r.SetMetricSamplingStrategy(r.RANDOM)
        r.SetMetricSamplingPercentage(0.25, seed)
        r.SetInterpolator(sitk.sitkLinear)
        r.SetOptimizerAsRegularStepGradientDescent(learningRate=lr, minStep=min_step, numberOfIterations=iters,
                                                   gradientMagnitudeTolerance=1e-8)
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
    return _sitk_matrix(t_9), t2 - t0, {"stages": [("translation", round(t1 - t0, 3)), ("scale-versor", round(t2 - t1, 3))],
                                        "iterations_last": r2.GetOptimizerIteration(),
                                        "stop": r2.GetOptimizerStopConditionDescription()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="64³ HR in a 40³ LFOV, one seed (seconds)")
    ap.add_argument("--output", type=Path, default=None, help="JSON path (default benchmarks/results/bench_recover.json)")
    ap.add_argument("--no-peer", action="store_true", help="skip SimpleITK")
    args = ap.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    peer = not args.no_peer
    if peer:
        try:
            import SimpleITK  # noqa: F401
        except ImportError:
            print("SimpleITK is not installed (benchmark environment: pip install SimpleITK); running without "
                  "the peer", file=sys.stderr)
            peer = False
    import torch

    torch.set_num_threads(2)
    rows, cases = [], []
    for seed in cfg["seeds"]:
        wait_for_idle(60.0)
        t = time.perf_counter()
        pair = simulate_multiscale_pair(hr_shape=(cfg["hr"],) * 3, lfov_shape=(cfg["lfov"],) * 3, hr_spacing_um=1.0,
                                        lfov_spacing_um=4.0, prior_error_lfov_vox=1.5, seed=seed)
        sim_s = time.perf_counter() - t
        shape = pair.hr.shape
        e0 = mapping_error(pair.prior_matrix, pair.true_matrix, shape, 1.0)
        case: dict[str, Any] = {"seed": seed, "simulate_s": sim_s, "prior_error_hr_vox": {"mean": e0.mean(), "max": e0.max()},
                                "true": {"rotation_deg": pair.rotation_deg.tolist(), "scale": pair.scale.tolist()},
                                "methods": {}}
        runners = [("tomoflow", run_tomoflow)] + ([("simpleitk", lambda p: run_simpleitk(p, seed))] if peer else [])
        for name, fn in runners:
            load0 = other_cpu_load(0.5)
            m, secs, info = fn(pair)
            e = mapping_error(m, pair.true_matrix, shape, 1.0)
            case["methods"][name] = {"mean_error_hr_vox": float(e.mean()), "max_error_hr_vox": float(e.max()),
                                     "seconds": secs, "other_load_before": load0, **info}
            rows.append([seed, name, f"{e0.mean():.2f}", f"{e.mean():.4f}", f"{e.max():.4f}", f"{secs:.2f}"])
            print(f"seed {seed} {name:10s} mean {e.mean():.4f} max {e.max():.4f} HR vox in {secs:.2f} s "
                  f"(prior {e0.mean():.2f})", flush=True)
        cases.append(case)
    print_table(rows, ["seed", "method", "prior err (HR vox)", "mean err", "max err", "time s"],
                title=f"Registration: {cfg['hr']}³ HR ROI (1 µm) in {cfg['lfov']}³ LFOV (4 µm)")
    summary = {}
    for name in cases[0]["methods"]:
        summary[name] = {"mean_error_hr_vox": float(np.mean([c["methods"][name]["mean_error_hr_vox"] for c in cases])),
                         "max_error_hr_vox": float(np.max([c["methods"][name]["max_error_hr_vox"] for c in cases])),
                         "seconds_mean": float(np.mean([c["methods"][name]["seconds"] for c in cases]))}
    target = {"mean_error_le_0.03": summary["tomoflow"]["mean_error_hr_vox"] <= 0.03,
              "faster_than_simpleitk": (summary["tomoflow"]["seconds_mean"] < summary["simpleitk"]["seconds_mean"])
              if "simpleitk" in summary else None}
    print("summary:", summary, "targets:", target)
    path = write_results("bench_recover_quick" if args.quick else "bench_recover",
                         {"config": cfg, "cases": cases, "summary": summary, "targets": target,
                          "parts_missing": ["(b) tiled inference vs MONAI", "(c) training time and pore metrics"]},
                         path=args.output, extra_packages=["torch", "SimpleITK", "scipy"])
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
