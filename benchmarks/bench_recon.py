#!/usr/bin/env python
"""Reconstruction benchmark: tomoflow vs ASTRA Toolbox (CPU algorithms) on the same sinograms.

What is measured, per case (slice size n x n, n_angles uniform over [0, 180)):

* FBP      tomoflow ``fbp(filter="ramp")`` vs ASTRA ``FBP`` (the CPU FBP, FilterType ``ram-lak``):
           seconds per slice and RMSE against the rasterised phantom inside the reconstruction circle.
* SIRT     tomoflow ``sirt`` vs ASTRA ``SIRT`` (CPU), the same number of iterations, both starting
           from zero with a non-negativity constraint (ASTRA ``MinConstraint=0``): seconds per
           iteration per slice and RMSE as for FBP.
* FP       tomoflow ``project`` vs ASTRA ``FP`` (CPU) of the rasterised phantom: seconds per slice and
           RMSE against the exact analytic line integrals.

Fairness
--------
* The sinograms are EXACT line integrals of an analytic ellipse phantom (modified Shepp-Logan, Toft's
  table), not the output of either projector, so neither side gets a matched-projector advantage.
  The RMSE reference image is the same phantom rasterised with 4 x 4 supersampling per pixel.
* tomoflow runs a slab of 16 slices at once, as the pipeline does (16 copies of the slice stacked
  in z; per-slice time = slab time / 16). ASTRA's CPU algorithms are 2-D only and run slice by slice;
  their time includes creating and freeing the ASTRA data objects and the algorithm for that slice
  (the projector and geometries are made once per case and reused).
* numba kernels are compiled (or loaded from numba's on-disk cache) by a warm-up pass on tiny inputs
  before anything is timed; its duration is reported separately. ASTRA is warmed up the same way.
* ASTRA uses the ``linear`` 2-D CPU projector (Joseph-type: the image is linearly interpolated along
  each ray), the closest of its CPU projectors to tomoflow's linear-interpolation model;
  ``--astra-projector line|strip`` changes that.

Geometry mapping (checked empirically on every run, see ``check_alignment``)
---------------------------------------------------------------------------
tomoflow: pixel (y, x) -> u = x - (nx-1)/2, v = y - (ny-1)/2, detector column
``s = u cos(theta) + v sin(theta) + (ncol-1)/2``. ASTRA 2-D ``parallel`` with
``create_vol_geom(ny, nx)`` and ``create_proj_geom('parallel', 1.0, ncol, angles)`` takes array row 0
as the TOP of the image (world y points up, i.e. y_astra = -v), so the same column is hit for
``angles_astra = -deg2rad(theta)``; the detector direction is the same (no column flip) and the
rotation axis is on detector column (ncol-1)/2 in both (no centre offset; a non-default tomoflow
centre c would need ASTRA's ``parallel_vec`` geometry with the detector shifted by c - (ncol-1)/2).
With this mapping the two FBPs reconstruct the same orientation (no flip between their images).

Run ``python benchmarks/bench_recon.py`` (full, several minutes) or ``--quick`` (tiny sizes, seconds,
ASTRA optional) - see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    OtherLoad,
    PeakMemory,
    fmt_time,
    print_table,
    time_call,
    wait_for_idle,
    write_results,
)

from tomoflow.recon import backproject, project
from tomoflow.recon.fbp import circle_mask, fbp
from tomoflow.recon.iterative import mlem, sirt

SLAB = 16

# Full-run cases: slice size, angles, SIRT iterations, timed repeats (tomoflow slab, ASTRA slice).
FULL_CASES = [
    {"n": 256, "n_angles": 180, "sirt_iters": 50, "reps_tf": 5, "reps_astra": 5},
    {"n": 512, "n_angles": 360, "sirt_iters": 30, "reps_tf": 3, "reps_astra": 3},
    {"n": 1024, "n_angles": 720, "sirt_iters": 10, "reps_tf": 2, "reps_astra": 2},
]
QUICK_CASES = [
    {"n": 64, "n_angles": 48, "sirt_iters": 5, "reps_tf": 2, "reps_astra": 2},
    {"n": 96, "n_angles": 72, "sirt_iters": 3, "reps_tf": 1, "reps_astra": 1},
]
FULL_MLEM = {"n_angles": 181, "rows": 256, "cols": 256, "n_iter": 10}
QUICK_MLEM = {"n_angles": 19, "rows": 8, "cols": 64, "n_iter": 3}
HEADLINE_CASE = (512, 360)
TARGETS = {"fbp_speedup": 5.0, "fp_speedup": 3.0, "mlem_seconds": 30.0}


# ----------------------------------------------------------------------------- analytic phantom
# The modified Shepp-Logan ellipse table of tomoflow.sim (Toft 1996 densities: 1.0 outer ellipse),
# radius n / 2, its exact line integrals and its 4x4-supersampled rasterisation (tomoflow.sim.analytic).
def shepp_logan_table(n: int) -> np.ndarray:
    """Ellipse table in pixel units with the table's own densities (scale = n / 2 undoes the 1 / L)."""
    from tomoflow.sim.phantoms import shepp_logan_ellipses

    return shepp_logan_ellipses(n, scale=n / 2.0)


def rasterise_phantom(n: int, supersample: int = 4) -> np.ndarray:
    """The phantom on an ``(n, n)`` grid, each pixel the mean of ``supersample^2`` samples."""
    from tomoflow.sim.analytic import rasterize_ellipses

    return np.asarray(rasterize_ellipses(shepp_logan_table(n), n, supersample=supersample), dtype=np.float32)


def analytic_sinogram(n: int, angles_deg: np.ndarray, n_cols: int | None = None) -> np.ndarray:
    """Exact line integrals ``(angle, col)`` of the phantom in tomoflow's geometry (centre (ncol-1)/2)."""
    from tomoflow.sim.analytic import ellipse_sinogram

    return np.asarray(
        ellipse_sinogram(shepp_logan_table(n), angles_deg, n if n_cols is None else n_cols), dtype=np.float32
    )


def uniform_angles(n_angles: int) -> np.ndarray:
    return np.arange(n_angles) * (180.0 / n_angles)


def rmse_masked(img: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    d = (np.asarray(img, dtype=np.float64) - ref)[mask]
    return float(np.sqrt(np.mean(d * d)))


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(np.sqrt(np.mean(d * d)))


# ----------------------------------------------------------------------------- ASTRA peer
class Astra:
    """Slice-by-slice ASTRA CPU algorithms in tomoflow's geometry (see the module docstring)."""

    def __init__(self, astra_mod: Any, n: int, angles_deg: np.ndarray, projector: str = "linear") -> None:
        self.astra = astra_mod
        self.vol_geom = astra_mod.create_vol_geom(n, n)
        self.proj_geom = astra_mod.create_proj_geom("parallel", 1.0, n, astra_angles(angles_deg))
        self.projector_type = projector
        self.pid = astra_mod.create_projector(projector, self.proj_geom, self.vol_geom)

    def close(self) -> None:
        self.astra.projector.delete(self.pid)

    def _run(
        self,
        alg: str,
        sino: np.ndarray | None,
        vol: np.ndarray | None,
        iters: int = 1,
        options: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, float, float]:
        """Run one algorithm on one slice; returns (output, setup seconds, run seconds)."""
        a = self.astra
        t0 = time.perf_counter()
        sid = a.data2d.create("-sino", self.proj_geom, 0 if sino is None else sino)
        vid = a.data2d.create("-vol", self.vol_geom, 0 if vol is None else vol)
        cfg = a.astra_dict(alg)
        cfg["ProjectorId"] = self.pid
        if alg == "FP":
            cfg["VolumeDataId"] = vid
            cfg["ProjectionDataId"] = sid
        else:
            cfg["ProjectionDataId"] = sid
            cfg["ReconstructionDataId"] = vid
        if extra:
            cfg.update(extra)
        if options:
            cfg["option"] = options
        aid = a.algorithm.create(cfg)
        t1 = time.perf_counter()
        a.algorithm.run(aid, iters)
        t2 = time.perf_counter()
        out = a.data2d.get(sid if alg == "FP" else vid)
        a.algorithm.delete(aid)
        a.data2d.delete(sid)
        a.data2d.delete(vid)
        t3 = time.perf_counter()
        return out, (t1 - t0) + (t3 - t2), t2 - t1

    def fbp(self, sino: np.ndarray) -> np.ndarray:
        return self._run("FBP", sino, None, extra={"FilterType": "ram-lak"})[0]

    def fp(self, img: np.ndarray) -> np.ndarray:
        return self._run("FP", None, img)[0]

    def sirt(self, sino: np.ndarray, iters: int) -> tuple[np.ndarray, float, float]:
        return self._run("SIRT", sino, None, iters, options={"MinConstraint": 0.0})


def astra_angles(angles_deg: np.ndarray) -> np.ndarray:
    """tomoflow angles (degrees) -> ASTRA 2-D parallel angles (radians): sign flipped."""
    return -np.deg2rad(np.asarray(angles_deg, dtype=np.float64))


def import_astra() -> Any:
    try:
        import astra  # type: ignore[import-not-found]
    except ImportError:
        return None
    return astra


def check_alignment(astra_mod: Any, projector: str = "linear") -> dict[str, Any]:
    """Project an off-centre point with both projectors; its detector column must agree per angle.

    Also reports the disagreement under the naive mapping (same angle sign), showing the sign flip
    is what aligns them.
    """
    n = 64
    ang = np.array([0.0, 17.0, 45.0, 71.0, 90.0, 123.0, 160.0])
    img = np.zeros((n, n), np.float32)
    img[11, 45] = 1.0  # y = 11 (row), x = 45 (column): off centre in both directions
    cols = np.arange(n)

    def centroid(s: np.ndarray) -> np.ndarray:
        return (s * cols).sum(1) / s.sum(1)

    tf = centroid(np.asarray(project(img, ang)))
    res: dict[str, Any] = {"tomoflow_columns": np.round(tf, 3).tolist()}
    for label, a_ang in (("astra_angles=-theta", astra_angles(ang)), ("astra_angles=+theta", np.deg2rad(ang))):
        vg = astra_mod.create_vol_geom(n, n)
        pg = astra_mod.create_proj_geom("parallel", 1.0, n, a_ang)
        pid = astra_mod.create_projector(projector, pg, vg)
        sid, sino = astra_mod.create_sino(img, pid)
        astra_mod.data2d.delete(sid)
        astra_mod.projector.delete(pid)
        res[label] = {"max_column_difference": round(float(np.max(np.abs(centroid(sino) - tf))), 4)}
    res["aligned"] = bool(res["astra_angles=-theta"]["max_column_difference"] < 0.25)
    return res


# ----------------------------------------------------------------------------- warm-up
def warm_up(astra_mod: Any, projector: str) -> dict[str, float]:
    """Compile (or load from numba's cache) every kernel the timed code uses, on tiny inputs."""
    t0 = time.perf_counter()
    n, ang = 32, uniform_angles(12)
    sino = np.repeat(analytic_sinogram(n, ang)[:, None, :], SLAB, axis=1)
    vol = np.repeat(rasterise_phantom(n, 1)[None], SLAB, axis=0)
    fbp(sino, ang)
    project(vol, ang)
    backproject(sino, ang)
    sirt(sino, ang, n_iter=2)
    mlem(sino, ang, n_iter=2)
    out = {"tomoflow_s": round(time.perf_counter() - t0, 3)}
    if astra_mod is not None:
        t1 = time.perf_counter()
        peer = Astra(astra_mod, n, ang, projector)
        peer.fbp(sino[:, 0])
        peer.fp(vol[0])
        peer.sirt(sino[:, 0], 2)
        peer.close()
        out["astra_s"] = round(time.perf_counter() - t1, 3)
    return out


# ----------------------------------------------------------------------------- measurement guard
class Guard:
    """Runs a measurement under :class:`PeakMemory` and :class:`OtherLoad`; repeats it (after waiting
    for the machine to go idle) when other processes took more than ``threshold`` cores meanwhile."""

    def __init__(self, log: Any, wait_s: float, retries: int, threshold: float = 0.3) -> None:
        self.log, self.wait_s, self.retries, self.threshold = log, wait_s, retries, threshold
        self.busy_measurements: list[str] = []

    def __call__(self, label: str, fn: Any) -> tuple[Any, dict[str, Any]]:
        self.log(f"{label} ...")
        attempt = 0
        while True:
            attempt += 1
            with OtherLoad() as ld, PeakMemory() as mem:
                out = fn()
            # jiffy resolution makes the load of blocks shorter than ~0.5 s too noisy to act on
            busy = ld.cores is not None and ld.cores >= self.threshold and getattr(ld, "wall", 0.0) >= 0.5
            if not busy or attempt > self.retries:
                break
            self.log(f"  other processes used {ld.cores:.2f} cores during it; waiting for idle and repeating")
            wait_for_idle(self.wait_s, self.threshold, log=self.log)
        if busy:
            self.busy_measurements.append(label)
            self.log(f"  WARNING: other processes used {ld.cores:.2f} cores during {label}; timing unreliable")
        info = {
            **mem.as_dict(),
            "other_cpu_load": None if ld.cores is None else round(ld.cores, 3),
            "attempts": attempt,
        }
        return out, info


# ----------------------------------------------------------------------------- one case
def run_case(case: dict[str, Any], astra_mod: Any, projector: str, guard: Guard) -> dict[str, Any]:
    n, na = case["n"], case["n_angles"]
    ang = uniform_angles(na)
    t0 = time.perf_counter()
    phantom = rasterise_phantom(n, 4)
    sino = analytic_sinogram(n, ang)
    mask = circle_mask((n, n))
    slab_sino = np.ascontiguousarray(np.repeat(sino[:, None, :], SLAB, axis=1))
    slab_vol = np.ascontiguousarray(np.repeat(phantom[None], SLAB, axis=0))
    res: dict[str, Any] = {
        "n": n,
        "n_angles": na,
        "slab": SLAB,
        "sirt_iters": case["sirt_iters"],
        "phantom_setup_s": round(time.perf_counter() - t0, 3),
    }
    peer = Astra(astra_mod, n, ang, projector) if astra_mod is not None else None
    tag = f"[{n}^2/{na}]"

    # --- FBP
    (tt, rec), info = guard(
        f"{tag} FBP tomoflow (slab of {SLAB})",
        lambda: time_call(lambda: fbp(slab_sino, ang, filter="ramp"), repeat=case["reps_tf"]),
    )
    fbp_res: dict[str, Any] = {
        "tomoflow": {
            **tt.as_dict(per=SLAB),
            **info,
            "rmse": rmse_masked(rec[0], phantom, mask),
            "slab_slices_identical_maxdiff": float(np.max(np.abs(rec - rec[:1]))),
        }
    }
    if peer is not None:
        (ta, reca), info = guard(
            f"{tag} FBP astra (slice by slice)", lambda: time_call(lambda: peer.fbp(sino), repeat=case["reps_astra"])
        )
        fbp_res["astra"] = {
            **ta.as_dict(),
            **info,
            "rmse": rmse_masked(reca, phantom, mask),
            "algorithm": "FBP (CPU)",
            "filter": "ram-lak",
            "projector": projector,
        }
        fbp_res["speedup"] = ta.best / (tt.best / SLAB)
        fbp_res["speedup_median"] = ta.median / (tt.median / SLAB)
        fbp_astra_best = ta.best
        fbp_res["rmse_tomoflow_vs_astra"] = rmse_masked(rec[0], reca, mask)
        fbp_res["rmse_tomoflow_vs_astra_flipped_ud"] = rmse_masked(rec[0], reca[::-1], mask)
    one = np.ascontiguousarray(slab_sino[:, :1])
    (t1, _), info = guard(
        f"{tag} FBP tomoflow, one slice per call (for reference)",
        lambda: time_call(lambda: fbp(one, ang, filter="ramp"), repeat=case["reps_tf"]),
    )
    fbp_res["tomoflow_single_slice"] = {**t1.as_dict(), **info}
    if peer is not None:
        fbp_res["speedup_single_slice"] = fbp_astra_best / t1.best
    res["fbp"] = fbp_res
    del rec

    # --- forward projection
    (tt, fp), info = guard(
        f"{tag} FP tomoflow (slab of {SLAB})", lambda: time_call(lambda: project(slab_vol, ang), repeat=case["reps_tf"])
    )
    per_angle = np.sqrt(np.mean((fp[:, 0].astype(np.float64) - sino) ** 2, axis=1))
    fp_res: dict[str, Any] = {
        "tomoflow": {
            **tt.as_dict(per=SLAB),
            **info,
            "rmse": rmse(fp[:, 0], sino),
            "worst_angle_deg": float(ang[np.argmax(per_angle)]),
            "worst_angle_rmse": float(per_angle.max()),
            "model": "pixel-driven, linear interpolation",
        }
    }
    del fp
    if peer is not None:
        (ta, fpa), info = guard(
            f"{tag} FP astra (slice by slice)", lambda: time_call(lambda: peer.fp(phantom), repeat=case["reps_astra"])
        )
        per_angle = np.sqrt(np.mean((fpa.astype(np.float64) - sino) ** 2, axis=1))
        fp_res["astra"] = {
            **ta.as_dict(),
            **info,
            "rmse": rmse(fpa, sino),
            "worst_angle_deg": float(ang[np.argmax(per_angle)]),
            "worst_angle_rmse": float(per_angle.max()),
            "algorithm": "FP (CPU)",
            "projector": projector,
        }
        fp_res["speedup"] = ta.best / (tt.best / SLAB)
        fp_res["speedup_median"] = ta.median / (tt.median / SLAB)
    one_vol = np.ascontiguousarray(slab_vol[:1])
    (t1, _), info = guard(
        f"{tag} FP tomoflow, one slice per call (for reference)",
        lambda: time_call(lambda: project(one_vol, ang), repeat=case["reps_tf"]),
    )
    fp_res["tomoflow_single_slice"] = {**t1.as_dict(), **info}
    if peer is not None:
        fp_res["speedup_single_slice"] = ta.best / t1.best
    fp_res["reference_rms"] = float(np.sqrt(np.mean(sino.astype(np.float64) ** 2)))
    res["fp"] = fp_res

    # --- SIRT
    k = case["sirt_iters"]

    def tf_sirt() -> tuple[Any, list[float], float, float]:
        stamps: list[float] = []
        c0, w0 = time.process_time(), time.perf_counter()
        x = sirt(slab_sino, ang, n_iter=k, positivity=True, callback=lambda it, _x: stamps.append(time.perf_counter()))
        return x, [s - w0 for s in stamps], time.perf_counter() - w0, time.process_time() - c0

    (xs, stamps, wall, cpu), info = guard(f"{tag} SIRT tomoflow, {k} iterations (slab of {SLAB})", tf_sirt)
    # mean time of iterations 2..k; the gap before the first callback also holds the set-up
    per_it = (stamps[-1] - stamps[0]) / (k - 1) if k > 1 else wall
    sirt_res: dict[str, Any] = {
        "tomoflow": {
            "total_s": round(wall, 6),
            "iterations": k,
            "per_iteration_s": round(per_it, 6),
            "per_iteration_per_slice_s": round(per_it / SLAB, 6),
            "setup_s": round(max(0.0, stamps[0] - per_it), 6),
            "cores_busy": round(cpu / wall, 3),
            **info,
            "rmse": rmse_masked(xs[0], phantom, mask),
            "positivity": True,
        }
    }
    if peer is not None:

        def astra_sirt() -> tuple[Any, float, float, float]:
            c0 = time.process_time()
            xa, setup, run_s = peer.sirt(sino, k)
            return xa, setup, run_s, time.process_time() - c0

        (xa, setup, run_s, cpu), info = guard(f"{tag} SIRT astra, {k} iterations (one slice)", astra_sirt)
        sirt_res["astra"] = {
            "total_s": round(setup + run_s, 6),
            "iterations": k,
            "per_iteration_per_slice_s": round(run_s / k, 6),
            "setup_s": round(setup, 6),
            "cores_busy": round(cpu / max(setup + run_s, 1e-9), 3),
            **info,
            "rmse": rmse_masked(xa, phantom, mask),
            "algorithm": "SIRT (CPU)",
            "options": {"MinConstraint": 0.0},
            "projector": projector,
        }
        sirt_res["speedup"] = (run_s / k) / (per_it / SLAB)
    res["sirt"] = sirt_res
    if peer is not None:
        peer.close()
    return res


def run_mlem(cfg: dict[str, int], guard: Guard) -> dict[str, Any]:
    na, rows, cols, k = cfg["n_angles"], cfg["rows"], cfg["cols"], cfg["n_iter"]
    ang = np.linspace(0.0, 180.0, na)
    sino = analytic_sinogram(cols, ang)
    proj = np.ascontiguousarray(np.repeat(sino[:, None, :], rows, axis=1))

    def run() -> tuple[Any, list[float], float, float]:
        stamps: list[float] = []
        c0, w0 = time.process_time(), time.perf_counter()
        x = mlem(proj, ang, n_iter=k, callback=lambda it, _x: stamps.append(time.perf_counter()))
        return x, [s - w0 for s in stamps], time.perf_counter() - w0, time.process_time() - c0

    (x, stamps, wall, cpu), info = guard(
        f"[MLEM] {k} iterations on {na} x {rows} x {cols} (angles x rows x cols), one call", run
    )
    per_it = (stamps[-1] - stamps[0]) / (k - 1) if k > 1 else wall
    phantom = rasterise_phantom(cols, 4)
    return {
        "shape": [na, rows, cols],
        "angles": f"linspace(0, 180, {na}) degrees",
        "n_iter": k,
        "total_s": round(wall, 4),
        "per_iteration_s": round(per_it, 4),
        "setup_s": round(max(0.0, stamps[0] - per_it), 4),
        "cores_busy": round(cpu / wall, 3),
        **info,
        "input_bytes": int(proj.nbytes),
        "rmse_slice0": rmse_masked(x[0], phantom, circle_mask((cols, cols))),
    }


# ----------------------------------------------------------------------------- report
def summarise(cases: list[dict[str, Any]], mlem_res: dict[str, Any] | None, have_astra: bool) -> dict[str, Any]:
    head = next((c for c in cases if (c["n"], c["n_angles"]) == HEADLINE_CASE), cases[-1])
    h: dict[str, Any] = {"case": f"{head['n']}^2/{head['n_angles']}", "targets": TARGETS}
    if have_astra:
        f, p = head["fbp"], head["fp"]
        h["fbp_speedup"] = round(f["speedup"], 3)
        h["fbp_rmse_tomoflow"] = f["tomoflow"]["rmse"]
        h["fbp_rmse_astra"] = f["astra"]["rmse"]
        h["fbp_target_met"] = bool(
            f["speedup"] >= TARGETS["fbp_speedup"] and f["tomoflow"]["rmse"] <= f["astra"]["rmse"]
        )
        h["fp_speedup"] = round(p["speedup"], 3)
        h["fp_target_met"] = bool(p["speedup"] >= TARGETS["fp_speedup"])
    if mlem_res is not None:
        h["mlem_seconds"] = mlem_res["total_s"]
        h["mlem_target_met"] = bool(mlem_res["total_s"] <= TARGETS["mlem_seconds"])
    return h


def print_report(
    cases: list[dict[str, Any]],
    mlem_res: dict[str, Any] | None,
    headline: dict[str, Any],
    have_astra: bool,
    projector: str,
    busy: list[str] = (),
) -> None:
    rows = []
    for c in cases:
        tag = f"{c['n']}^2/{c['n_angles']}"
        for op, label in (("fbp", "FBP ramp"), ("sirt", f"SIRT x{c['sirt_iters']} (per it.)"), ("fp", "forward proj.")):
            r = c[op]
            if op == "sirt":
                t_tf = r["tomoflow"]["per_iteration_per_slice_s"]
                t_as = r["astra"]["per_iteration_per_slice_s"] if have_astra else None
            else:
                t_tf = r["tomoflow"]["best_per_s"]
                t_as = r["astra"]["best_s"] if have_astra else None
            single = r.get("tomoflow_single_slice")
            rows.append(
                [
                    tag,
                    label,
                    fmt_time(t_tf),
                    fmt_time(single["best_s"]) if single else "-",
                    fmt_time(t_as),
                    f"{r['speedup']:.1f}x" if have_astra else "-",
                    f"{r['tomoflow']['rmse']:.4f}",
                    f"{r['astra']['rmse']:.4f}" if have_astra else "-",
                ]
            )
    print()
    print_table(
        rows,
        [
            "case",
            "operation",
            "tomoflow/slice",
            "(1-slice call)",
            "astra/slice",
            "speed-up",
            "RMSE tomoflow",
            "RMSE astra",
        ],
        title=f"tomoflow (slab of {SLAB}, per slice) vs ASTRA CPU (slice by slice, '{projector}' projector); "
        "RMSE: FBP/SIRT vs phantom in circle, FP vs exact line integrals",
    )
    if mlem_res is not None:
        print(
            f"\nMLEM {mlem_res['n_iter']} iterations on {' x '.join(map(str, mlem_res['shape']))}: "
            f"{mlem_res['total_s']:.2f} s ({mlem_res['per_iteration_s']:.2f} s/iteration, "
            f"peak RSS +{mlem_res['delta_rss_bytes'] / 2**20:.0f} MiB)"
        )
    print(f"\nHeadline ({headline['case']}):", end=" ")
    parts = []
    if have_astra:
        parts.append(
            f"FBP speed-up {headline['fbp_speedup']:.1f}x (target >= {TARGETS['fbp_speedup']:g}x at equal or "
            f"lower RMSE: {'met' if headline['fbp_target_met'] else 'NOT met'})"
        )
        parts.append(
            f"FP speed-up {headline['fp_speedup']:.1f}x (target >= {TARGETS['fp_speedup']:g}x: "
            f"{'met' if headline['fp_target_met'] else 'NOT met'})"
        )
    if mlem_res is not None:
        parts.append(
            f"MLEM {headline['mlem_seconds']:.1f} s (target <= {TARGETS['mlem_seconds']:g} s: "
            f"{'met' if headline['mlem_target_met'] else 'NOT met'})"
        )
    print("; ".join(parts) if parts else "-")
    if busy:
        print(f"WARNING: other processes were using the CPU during: {', '.join(busy)} - those timings are unreliable")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="tiny sizes (seconds); for smoke tests")
    ap.add_argument(
        "--output",
        type=Path,
        default=None,
        help="JSON path (default benchmarks/results/bench_recon.json, or bench_recon_quick.json with --quick)",
    )
    ap.add_argument(
        "--astra-projector",
        default="linear",
        choices=["linear", "line", "strip"],
        help="ASTRA 2-D CPU projector used by FBP, SIRT and FP (default linear)",
    )
    ap.add_argument("--no-astra", action="store_true", help="skip the ASTRA peer even when installed")
    ap.add_argument("--require-astra", action="store_true", help="fail when astra-toolbox is not importable")
    ap.add_argument("--no-mlem", action="store_true", help="skip the MLEM timing")
    ap.add_argument(
        "--wait-idle",
        type=float,
        default=None,
        metavar="SECONDS",
        help="before each case wait up to SECONDS for other processes to leave the CPU "
        "(default 120, 0 with --quick); the measured load is recorded either way",
    )
    ap.add_argument("--strict", action="store_true", help="exit 1 when a headline target is missed")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"{time.perf_counter() - t_start:7.1f}s  {msg}", flush=True)

    astra_mod = None if args.no_astra else import_astra()
    if astra_mod is None and args.require_astra:
        print("astra-toolbox is not installed in this environment (see benchmarks/README.md)", file=sys.stderr)
        return 2
    have_astra = astra_mod is not None
    astra_version = getattr(astra_mod, "__version__", None) if have_astra else None
    import numba

    log(f"astra-toolbox: {astra_version or 'not available - tomoflow only'}; numba threads: {numba.get_num_threads()}")
    alignment = None
    if have_astra:
        alignment = check_alignment(astra_mod, args.astra_projector)
        log(
            f"geometry check: max column difference {alignment['astra_angles=-theta']['max_column_difference']} px "
            f"with astra angles = -theta "
            f"(vs {alignment['astra_angles=+theta']['max_column_difference']} px with +theta)"
        )
        if not alignment["aligned"]:
            print("ERROR: ASTRA and tomoflow geometries do not line up; results would be meaningless", file=sys.stderr)
            return 3
    log("warm-up (numba compile / cache load, ASTRA first call) ...")
    warm = warm_up(astra_mod, args.astra_projector)
    log(f"warm-up done: {warm}")
    try:
        threading_layer = numba.threading_layer()
    except ValueError:  # no parallel numba code has run
        threading_layer = numba.config.THREADING_LAYER

    cases_cfg = QUICK_CASES if args.quick else FULL_CASES
    wait = args.wait_idle if args.wait_idle is not None else (0.0 if args.quick else 120.0)
    guard = Guard(log, wait, retries=0 if args.quick else 2)
    cases = []
    for c in cases_cfg:
        if wait > 0:
            wait_for_idle(wait, log=log)
        cases.append(run_case(c, astra_mod, args.astra_projector, guard))
    mlem_res = None
    if not args.no_mlem:
        if wait > 0:
            wait_for_idle(wait, log=log)
        mlem_res = run_mlem(QUICK_MLEM if args.quick else FULL_MLEM, guard)
    headline = summarise(cases, mlem_res, have_astra)
    print_report(cases, mlem_res, headline, have_astra, args.astra_projector, guard.busy_measurements)

    payload = {
        "quick": bool(args.quick),
        "slab": SLAB,
        "astra_version": astra_version,
        "astra_projector": args.astra_projector if have_astra else None,
        "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": threading_layer,
        "geometry": {
            "mapping": "astra parallel angles = -deg2rad(theta_tomoflow); same detector direction; "
            "rotation axis on column (ncol-1)/2 in both; astra image row 0 = top (y up)",
            "check": alignment,
        },
        "method": {
            "phantom": "modified Shepp-Logan (Toft), radius n/2; reference image rasterised with 4x4 supersampling",
            "sinograms": "exact analytic line integrals sampled at detector column centres",
            "angles": "uniform over [0, 180): k * 180 / n_angles",
            "rmse": "FBP/SIRT: vs rasterised phantom inside circle_mask (radius n/2); "
            "FP: vs analytic sinogram, all bins",
            "tomoflow": f"slab of {SLAB} identical slices per call; per-slice time = slab time / {SLAB}",
            "astra": "2-D CPU algorithms, one slice per call; time includes creating/freeing data objects and "
            "the algorithm (projector and geometry reused)",
            "timing": "FBP/FP: best of the repeats (median also recorded; speedup = astra best / tomoflow best "
            "per slice); SIRT: mean time per iteration, iterations 2..k from the iteration callbacks "
            "(tomoflow) or algorithm run time / iterations (astra)",
            "load": "other_cpu_load = cores kept busy by other processes during each measurement (from "
            "/proc/stat); a measurement during which it exceeded 0.3 is repeated after waiting for "
            "the machine to go idle (up to 2 times), and listed in busy_measurements if still busy",
            "warmup": "numba kernels compiled/loaded from cache and ASTRA called once before any timing",
        },
        "warmup_s": warm,
        "cases": cases,
        "mlem": mlem_res,
        "headline": headline,
        "busy_measurements": guard.busy_measurements,
        "total_runtime_s": round(time.perf_counter() - t_start, 1),
    }
    name = "bench_recon_quick" if args.quick else "bench_recon"
    path = write_results(name, payload, path=args.output, extra_packages=["astra-toolbox"])
    log(f"wrote {path}")
    if args.strict:
        missed = [k for k in ("fbp_target_met", "fp_target_met", "mlem_target_met") if headline.get(k) is False]
        if missed:
            print(f"targets missed: {', '.join(missed)}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
