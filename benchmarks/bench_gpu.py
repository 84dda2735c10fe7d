#!/usr/bin/env python
"""GPU benchmark: tomoflow's CuPy paths (FBP, MLEM, projectors, the whole pipeline) vs httomolibgpu.

What is measured (each part selected with ``--parts fbp,mlem,e2e,kernels``, default all):

* fbp      tomoflow ``fbp(method="direct")`` (filter + fused backprojection) and ``fbp(method="fourier")``
           (NUFFT gridding, direct Fourier) vs httomolibgpu ``LPRec3d_tomobar`` (TomocuPy's log-polar
           Fourier method) on exact analytic sinograms, n = 2048 columns, 2048 angles uniform over
           [0, 180), replicated to slabs of 32 and 128 rows already on the GPU: milliseconds per slice
           (slab time / rows), the host-to-device copy per slice (separately), peak GPU memory, and the
           RMSE of row 0 against the rasterised phantom inside the reconstruction disk (raw, and after a
           least-squares scale fit), at the best of the 8 transpose/flip orientations (recorded; it must
           be the identity for tomoflow).
* mlem     ``mlem(cupy_array, angles, n_iter=10)`` on 181 angles x 1024 rows x 1024 columns, in slabs of
           ``--mlem-slab`` rows (host -> GPU -> host per slab): total seconds, seconds per iteration,
           peak GPU memory. Target: under 5 s.
* e2e      ``reconstruct_scan`` (what ``tomoflow recon`` runs) from a scan store of raw counts (uint16
           values, flats, darks) to a float32 OME-Zarr volume, 2048 angles x 2048 rows x 2048 columns by
           default (rows halved while input + output would exceed 90 % of the free disk): wall time,
           the I/O floor (reading every input array + writing arrays of every level's shape with the
           volume's chunks and codec on the same disk), their ratio, and the GPU busy fraction (nvidia-smi).
* kernels  ``project`` and ``backproject(model="adjoint" | "interpolate")`` with CuPy input against the
           NumPy (compiled) results (max relative error), the adjoint identity <Ax, y> = <x, A^T y> on
           the GPU, time per call and G voxel-angle updates per second, on 1024^2 x 181 angles x 32 rows.

Fairness
--------
* Sinograms are EXACT line integrals of the modified Shepp-Logan ellipse phantom (Toft's table, as in
  bench_recon.py), not the output of any projector. The reference image is the same phantom rasterised
  with 4 x 4 supersampling; RMSE inside a disk of radius (n - 1) / 2 - 2 px.
* Every method gets the same CuPy slab, already on the GPU; the host-to-device copy is reported
  separately (it is the same for all). Per-slice time = slab time / rows.
* Conventions differ between tools (angle direction, image transpose/flips, intensity scale): the
  orientation is not assumed but taken as the best of the 8 transpose/flip combinations (all recorded),
  and a least-squares scale factor is fitted per method (raw RMSE, scaled RMSE and the factor are all
  recorded). httomolibgpu 6.0.1's LPRec returns ``(N, rows, N)`` (it swaps tomobar's axes), tomoflow
  ``(rows, N, N)``: the rows axis is found from the output shape (``rows_axis``; a view, outside the
  timing) and recorded as ``output_layout``. LPRec gets the filter closest to ramp that it accepts
  (recorded), no detector padding and no output mask (``recon_mask_radius=2.0``), as tomoflow's
  ``mask=False``; its signature and defaults are recorded. tomobar imports astra at module load: when
  ``import astra`` (or nvtx, pywt) fails, ``benchmarks/_astra_stub`` is put on ``sys.path`` (recorded
  in ``lprec_info.stubs``); LPRec never calls astra.
* End to end: the data are the 2-D exact sinogram times a smooth row scale (the 3-D
  ``ellipsoid_projections`` holds its whole float64 output and same-sized temporaries at once, 64 GiB
  each at 2048^3, and extrapolates to 5-15 min of one core; its estimated cost is recorded),
  turned into raw counts (I0 = 30000, dark 100, Gaussian noise of Poisson variance, uint16). The scan
  store keeps them as uint16, as ``tomoflow ingest`` does with 8/16-bit counts. Before the read floor and before
  ``reconstruct_scan`` the scan store's files are dropped from the page cache (``--e2e-cache cold``,
  posix_fadvise on our own files only), so both read from the disk; the volume's writes go through
  the page cache in both the pipeline and the floor. ``reconstruct_scan`` runs with ``client=None``
  (its local thread pool, no cluster), centre given ((ncol - 1) / 2), device from
  ``tomoflow.config.set(device=...)``; the stores live in a fresh temporary folder (``--workdir``),
  deleted at the end; the file-system type is recorded (a tmpfs floor is a memory floor).
* GPU timings: a warm-up call (kernel compilation, FFT plans), then the median of ``--repeats`` (>= 3)
  timed calls, each bracketed by ``cupy.cuda.Device().synchronize()`` (wall time, the headline) and by
  CUDA events on the current stream (``event_*``, recorded too). CPU timings (``--quick`` on a machine
  without a GPU) use ``time.perf_counter``. The CuPy memory pool (and FFT plan cache) is freed between
  methods; peak GPU memory is the pool's high-water mark of used bytes, tracked by an allocator hook, on
  top of what was allocated before the call (the input slab).
* Each part catches its own failures and records ``{"error": ...}`` (within fbp, per method), and the
  JSON is rewritten after every part, so one broken part (or a killed run) loses nothing else.

Run on the GPU machine, from the repository root, with tomoflow importable (installed, or
``PYTHONPATH=$PWD``) and CuPy; the peer is ``pip install --no-deps httomolibgpu tomobar`` (plus
``nvtx``, ``PyWavelets`` if available; stubbed otherwise)::

    python benchmarks/bench_gpu.py --parts fbp             # -> benchmarks/results/bench_gpu.json
    python benchmarks/bench_gpu.py --parts mlem,kernels
    python benchmarks/bench_gpu.py --parts e2e --e2e-rows 512 --workdir /fast/disk
    python benchmarks/bench_gpu.py --quick                 # tiny sizes (smoke test), CPU NumPy without a GPU

``--quick`` (n = 64, 4-row slabs, ...) runs in seconds on a CPU-only machine (NumPy; the peer is then
skipped with the reason recorded) and writes ``bench_gpu_quick.json``; on the GPU machine it is a quick
smoke test of the CuPy paths. See ``--help`` for the size options.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import inspect
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
STUB_DIR = BENCH_DIR / "_astra_stub"
sys.path.insert(0, str(BENCH_DIR))
from _common import PeakMemory, fmt_bytes, fmt_time, print_table, report_summary, write_results  # noqa: E402  (after the sys.path set-up)
from bench_recon import analytic_sinogram, rasterise_phantom, uniform_angles  # noqa: E402  (after the sys.path set-up)

PARTS = ("fbp", "mlem", "e2e", "kernels")
FULL = {
    "fbp": {"n": 2048, "n_angles": 2048, "rows": [32, 128]},
    "mlem": {"n_angles": 181, "rows": 1024, "cols": 1024, "n_iter": 10, "slab": 32},
    "e2e": {"size": 2048, "rows": None, "n_flats": 10, "n_darks": 5},
    "kernels": {"n": 1024, "n_angles": 181, "rows": 32},
}
QUICK = {
    "fbp": {"n": 64, "n_angles": 64, "rows": [4]},
    "mlem": {"n_angles": 16, "rows": 4, "cols": 32, "n_iter": 10, "slab": 2},
    "e2e": {"size": 32, "rows": 8, "n_flats": 2, "n_darks": 1},
    "kernels": {"n": 32, "n_angles": 16, "rows": 4},
}
TARGETS = {"mlem_seconds": 5.0}
I0_COUNTS = 30000.0
DARK_COUNTS = 100.0
PEER_PACKAGES = [
    "cupy",
    "cupy-cuda12x",
    "cupy-cuda13x",
    "httomolibgpu",
    "tomobar",
    "nvtx",
    "zarr",
    "dask",
    "distributed",
]

_T0 = time.perf_counter()


def log(msg: str) -> None:
    print(f"{time.perf_counter() - _T0:7.1f}s  {msg}", flush=True)


def _err(exc: BaseException) -> dict[str, Any]:
    return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-3000:]}


# ----------------------------------------------------------------------------- device
class Device:
    """CuPy on the first CUDA device when usable (and not ``--device cpu``), else NumPy on the CPU."""

    def __init__(self, want: str) -> None:
        self.cp: Any = None
        self.reason = "--device cpu"
        if want != "cpu":
            try:
                import cupy

                if cupy.cuda.runtime.getDeviceCount() > 0:
                    cupy.cuda.Device(0).use()
                    self.cp = cupy
                else:
                    self.reason = "CuPy sees no CUDA device"
            except Exception as exc:  # noqa: BLE001 - any failure means no usable GPU
                self.reason = f"CuPy not usable ({type(exc).__name__}: {exc})"
        if want == "cuda" and self.cp is None:
            raise SystemExit(f"--device cuda: {self.reason}")
        self.xp = self.cp if self.cp is not None else np
        self.name = "cuda" if self.cp is not None else "cpu"

    @property
    def gpu(self) -> bool:
        return self.cp is not None

    def sync(self) -> None:
        if self.cp is not None:
            self.cp.cuda.Device().synchronize()

    def put(self, a: np.ndarray) -> Any:
        return self.cp.asarray(a) if self.cp is not None else a

    def get(self, a: Any) -> np.ndarray:
        return self.cp.asnumpy(a) if self.cp is not None else np.asarray(a)

    def free(self) -> None:
        """Free the CuPy memory pools and FFT plan cache (between methods)."""
        if self.cp is None:
            return
        self.sync()
        with contextlib.suppress(Exception):
            self.cp.fft.config.get_plan_cache().clear()
        self.cp.get_default_memory_pool().free_all_blocks()
        self.cp.get_default_pinned_memory_pool().free_all_blocks()

    def pool_bytes(self) -> dict[str, int]:
        if self.cp is None:
            return {}
        pool = self.cp.get_default_memory_pool()
        free, total = self.cp.cuda.runtime.memGetInfo()
        return {
            "pool_used_bytes": int(pool.used_bytes()),
            "pool_total_bytes": int(pool.total_bytes()),
            "device_used_bytes": int(total - free),
        }

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"device": self.name}
        if self.cp is None:
            out["why_cpu"] = self.reason
            return out
        cp = self.cp
        rt = cp.cuda.runtime
        props = rt.getDeviceProperties(0)
        name = props.get("name", b"")
        out.update(
            {
                "gpu_name": name.decode() if isinstance(name, bytes) else str(name),
                "gpu_memory_bytes": int(props.get("totalGlobalMem", 0)),
                "compute_capability": cp.cuda.Device(0).compute_capability,
                "cupy_version": cp.__version__,
                "cuda_runtime_version": rt.runtimeGetVersion(),
                "cuda_driver_version": rt.driverGetVersion(),
            }
        )
        return out


class GpuPeak:
    """Peak bytes used from the CuPy memory pool while the block runs (allocator hook on this thread).

    ``extra`` = peak - used bytes at entry (what the block needed on top of its inputs). On the CPU it
    records the process's peak resident memory instead (``_common.PeakMemory``).
    """

    def __init__(self, dev: Device) -> None:
        self.dev = dev
        self.base = self.peak = 0
        self._ctx: Any = None
        self._cpu: PeakMemory | None = None

    def _malloc(self, size: int) -> Any:
        mem = self._pool.malloc(size)
        used = self._pool.used_bytes()
        if used > self.peak:
            self.peak = used
        return mem

    def __enter__(self) -> GpuPeak:
        if not self.dev.gpu:
            self._cpu = PeakMemory().__enter__()
            return self
        cp = self.dev.cp
        self._pool = cp.get_default_memory_pool()
        self.base = self.peak = int(self._pool.used_bytes())
        using = getattr(cp.cuda, "using_allocator", None) or getattr(cp.cuda.memory, "using_allocator", None)
        if using is not None:
            self._ctx = using(self._malloc)
            self._ctx.__enter__()
        else:  # pragma: no cover - older CuPy
            cp.cuda.set_allocator(self._malloc)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._cpu is not None:
            self._cpu.__exit__(*exc)
            return
        if self._ctx is not None:
            self._ctx.__exit__(*exc)
        else:  # pragma: no cover
            self.dev.cp.cuda.set_allocator(self._pool.malloc)

    def as_dict(self) -> dict[str, Any]:
        if self._cpu is not None:
            return {"cpu_" + k: v for k, v in self._cpu.as_dict().items()}
        return {
            "gpu_peak_bytes": int(self.peak),
            "gpu_peak_extra_bytes": int(self.peak - self.base),
            "gpu_bytes_before": int(self.base),
            **self.dev.pool_bytes(),
        }


class Timed:
    """Wall times (synchronised) and CUDA event times of repeated calls, in seconds."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.event: list[float] = []
        self.warmup_s: list[float] = []

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    def as_dict(self, per: int = 1) -> dict[str, Any]:
        d: dict[str, Any] = {
            "repeats": len(self.wall),
            "warmup_s": [round(t, 6) for t in self.warmup_s],
            "wall_s": [round(t, 6) for t in self.wall],
            "median_s": round(self.median, 6),
            "min_s": round(min(self.wall), 6),
        }
        if self.event:
            d["event_s"] = [round(t, 6) for t in self.event]
            d["event_median_s"] = round(statistics.median(self.event), 6)
        if per != 1:
            d["per"] = per
            d["median_per_s"] = round(self.median / per, 9)
            if self.event:
                d["event_median_per_s"] = round(statistics.median(self.event) / per, 9)
        return d


def bench(
    dev: Device,
    fn: Callable[[], Any],
    *,
    repeat: int,
    warmup: int = 1,
    max_call_s: float = 30.0,
    before: Callable[[], None] | None = None,
) -> tuple[Timed, Any]:
    """``warmup`` untimed calls, then ``repeat`` timed ones (1 if a warm-up call took > ``max_call_s``).

    ``before`` runs (untimed) before every call, e.g. to restore an input a method modified.
    Returns the timings and the last call's result.
    """
    t = Timed()
    out = None
    for _ in range(max(0, warmup)):
        if before is not None:
            before()
        dev.sync()
        w0 = time.perf_counter()
        out = fn()
        dev.sync()
        t.warmup_s.append(time.perf_counter() - w0)
        out = None
    if t.warmup_s and t.warmup_s[-1] > max_call_s:
        log(f"  one call took {t.warmup_s[-1]:.1f} s (> {max_call_s:g} s): timing 1 repeat instead of {repeat}")
        repeat = 1
    for _ in range(max(1, repeat)):
        out = None  # free the previous result before the next call
        if before is not None:
            before()
        dev.sync()
        if dev.gpu:
            e0, e1 = dev.cp.cuda.Event(), dev.cp.cuda.Event()
            e0.record()
        w0 = time.perf_counter()
        out = fn()
        if dev.gpu:
            e1.record()
            e1.synchronize()
        dev.sync()
        t.wall.append(time.perf_counter() - w0)
        if dev.gpu:
            t.event.append(dev.cp.cuda.get_elapsed_time(e0, e1) / 1e3)
    return t, out


# ----------------------------------------------------------------------------- image quality
def disk_mask(n: int, margin: float = 2.0) -> np.ndarray:
    """Pixels within ``(n - 1) / 2 - margin`` of the slice centre."""
    c = (n - 1) / 2.0
    yy, xx = np.ogrid[:n, :n]
    return (yy - c) ** 2 + (xx - c) ** 2 <= (c - margin) ** 2


def _orientations(img: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """The 8 transpose / flip-up-down / flip-left-right combinations (applied in that order)."""
    for tr in (False, True):
        for ud in (False, True):
            for lr in (False, True):
                a = img.T if tr else img
                if ud:
                    a = a[::-1]
                if lr:
                    a = a[:, ::-1]
                name = "+".join(n for n, f in (("transpose", tr), ("flipud", ud), ("fliplr", lr)) if f)
                yield name or "identity", a


def quality(img: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """RMSE against ``ref`` inside ``mask`` for the 8 orientations: raw and after a least-squares scale
    ``a`` (min ||a * img - ref||); the best orientation is the one with the lowest scaled RMSE."""
    r = ref[mask].astype(np.float64)
    per: dict[str, dict[str, float]] = {}
    for name, a in _orientations(np.asarray(img, dtype=np.float64)):
        v = a[mask]
        raw = float(np.sqrt(np.mean((v - r) ** 2)))
        vv = float(v @ v)
        scale = float(v @ r) / vv if vv > 0 else float("nan")
        scaled = float(np.sqrt(np.mean((scale * v - r) ** 2))) if vv > 0 else float("nan")
        per[name] = {"rmse": raw, "scale": scale, "rmse_scaled": scaled}
    best = min(per, key=lambda k: per[k]["rmse_scaled"])
    ranked = sorted(per, key=lambda k: per[k]["rmse_scaled"])
    return {
        "orientation": best,
        "rmse": per[best]["rmse"],
        "scale": per[best]["scale"],
        "rmse_scaled": per[best]["rmse_scaled"],
        "identity_rmse": per["identity"]["rmse"],
        "second_best": ranked[1],
        "second_best_rmse_scaled": per[ranked[1]]["rmse_scaled"],
        "reference_rms": float(np.sqrt(np.mean(r * r))),
        "all_orientations": per,
    }


# ----------------------------------------------------------------------------- peer: httomolibgpu
def install_import_stubs(names: tuple[str, ...] = ("astra", "nvtx", "pywt")) -> list[str]:
    """Import ``names``; for those that fail, make ``benchmarks/_astra_stub`` importable (prepended to
    sys.path). Modules that did import stay in sys.modules, so the stubs never shadow them.
    Returns the stubbed names."""
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - e.g. astra present but its CUDA libraries missing (OSError)
            missing.append(name)
            for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
                del sys.modules[key]
    if missing and str(STUB_DIR) not in sys.path:
        sys.path.insert(0, str(STUB_DIR))
    for name in missing:
        importlib.import_module(name)
    return missing


def load_lprec(dev: Device, no_peer: bool) -> tuple[Callable[..., Any] | None, dict[str, Any]]:
    """``(LPRec3d_tomobar, info)``, or ``(None, {"skipped": why})`` / ``(None, {"error": ...})``."""
    installed = importlib.util.find_spec("httomolibgpu") is not None
    if no_peer:
        return None, {"skipped": "--no-peer", "installed": installed}
    if not dev.gpu:
        return None, {
            "skipped": f"no GPU ({dev.reason}): LPRec3d_tomobar needs CuPy on a CUDA device"
            + ("" if installed else "; httomolibgpu is not installed either"),
            "installed": installed,
        }
    if not installed:
        return None, {
            "skipped": "httomolibgpu is not installed (pip install --no-deps httomolibgpu tomobar)",
            "installed": False,
        }
    info: dict[str, Any] = {"installed": True}
    try:
        info["stubs"] = install_import_stubs()
        if info["stubs"]:
            log(f"  peer import: using benchmark stubs for {', '.join(info['stubs'])} ({STUB_DIR})")
        from httomolibgpu import cupywrapper
        from httomolibgpu.recon.algorithm import LPRec3d_tomobar
    except Exception as exc:  # noqa: BLE001  (a failing peer or probe is recorded, not fatal)
        return None, {**info, **_err(exc)}
    if not getattr(cupywrapper, "cupy_run", True):
        return None, {
            **info,
            "error": "httomolibgpu fell back to its CPU mocks (cupywrapper.cupy_run is False: "
            "cupy or nvtx failed to import inside httomolibgpu)",
        }
    sig = inspect.signature(LPRec3d_tomobar)
    info["signature"] = f"LPRec3d_tomobar{sig}"
    info["defaults"] = {
        k: repr(p.default) for k, p in sig.parameters.items() if p.default is not inspect.Parameter.empty
    }
    log(f"  peer: LPRec3d_tomobar{sig}")
    for pkg in ("httomolibgpu", "tomobar"):
        with contextlib.suppress(Exception):
            from importlib import metadata

            info[f"{pkg}_version"] = metadata.version(pkg)
    return LPRec3d_tomobar, info


def choose_lprec_filter(dev: Device, fn: Callable[..., Any], info: dict[str, Any]) -> dict[str, Any]:
    """The first of ramp-like names LPRec accepts, found by calls on a tiny input; extra keyword
    arguments (no padding, no output mask) where the signature has them."""
    params = inspect.signature(fn).parameters
    kwargs: dict[str, Any] = {}
    if "recon_mask_radius" in params:
        kwargs["recon_mask_radius"] = 2.0  # "2.0: no cropping" (tomoflow's mask=False)
    if "detector_pad" in params:
        kwargs["detector_pad"] = False
    tiny = dev.cp.ones((64, 2, 64), dtype=dev.cp.float32)
    ang = np.deg2rad(uniform_angles(64))
    tried = {}
    if "filter_type" in params:
        for cand in ("ramp", "ram-lak", "ramlak", "ram_lak", "shepp"):
            try:
                fn(tiny, ang, center=31.5, filter_type=cand, **kwargs)
                kwargs["filter_type"] = cand
                break
            except Exception as exc:  # noqa: BLE001  (a failing peer or probe is recorded, not fatal)
                tried[cand] = f"{type(exc).__name__}: {exc}"[:300]
        else:
            raise RuntimeError(f"LPRec3d_tomobar accepted none of the ramp-like filters: {tried}")
    info["filter"] = kwargs.get("filter_type", "(no filter_type parameter: its default)")
    info["filters_rejected"] = tried
    info["kwargs"] = dict(kwargs)
    dev.free()
    return kwargs


# ----------------------------------------------------------------------------- part 1: FBP
def tomoflow_fbp(method: str) -> Callable[..., Any]:
    from tomoflow.recon import fbp

    has_method = "method" in inspect.signature(fbp).parameters
    if not has_method and method != "direct":
        raise RuntimeError(
            f"tomoflow.recon.fbp has no 'method' parameter: method={method!r} is not available in this tomoflow"
        )

    def run(slab: Any, angles_deg: np.ndarray) -> Any:
        if has_method:
            return fbp(slab, angles_deg, filter="ramp", method=method)
        return fbp(slab, angles_deg, filter="ramp")

    run.note = None if has_method else "fbp has no method parameter: its only (direct) path"  # type: ignore[attr-defined]
    return run


def rows_axis(shape: tuple[int, ...], rows: int, n: int) -> int:
    """Axis of a reconstructed slab holding the detector rows: tomoflow returns ``(rows, N, N)``;
    httomolibgpu 6.0.1's LPRec3d_tomobar returns ``(N, rows, N)`` (it swaps tomobar's axes 0 and 1).
    With ``rows == N`` the shape cannot tell: ``(rows, N, N)`` is assumed (avoid such slabs)."""
    for axis in range(3):
        expect = [n, n]
        expect.insert(axis, rows)
        if shape == tuple(expect):
            return axis
    raise RuntimeError(
        f"output shape {shape} is none of (rows, N, N), (N, rows, N), (N, N, rows) for rows = {rows}, N = {n}"
    )


def part_fbp(dev: Device, cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    n, na, rows_list = cfg["n"], cfg["n_angles"], cfg["rows"]
    ang = uniform_angles(na)
    t0 = time.perf_counter()
    sino = analytic_sinogram(n, ang)  # (angle, col) float32, exact line integrals
    phantom = rasterise_phantom(n, 4)
    mask = disk_mask(n)
    res: dict[str, Any] = {
        "n": n,
        "n_angles": na,
        "rows": rows_list,
        "angles": "k * 180 / n_angles degrees",
        "phantom": "modified Shepp-Logan (Toft), radius n/2; reference rasterised 4x4 supersampled",
        "rmse_region": f"disk of radius (n-1)/2 - 2 = {(n - 1) / 2 - 2:g} px, row 0 of the slab",
        "setup_s": round(time.perf_counter() - t0, 3),
        "device": dev.name,
    }
    log(f"[fbp] n = {n}, {na} angles, exact sinogram + phantom in {res['setup_s']:.1f} s")

    methods: dict[str, dict[str, Any]] = {}
    runners: dict[str, Callable[[Any], Any]] = {}
    for m in ("direct", "fourier"):
        key = f"tomoflow_{m}"
        methods[key] = {"label": f"tomoflow fbp(method={m!r}, filter='ramp')", "by_rows": {}}
        try:
            run = tomoflow_fbp(m)
            if run.note:  # type: ignore[attr-defined]
                methods[key]["note"] = run.note  # type: ignore[attr-defined]
            runners[key] = (lambda r: lambda s: r(s, ang))(run)
        except Exception as exc:  # noqa: BLE001  (a failing peer or probe is recorded, not fatal)
            methods[key].update(_err(exc))
            log(f"[fbp] {key}: {methods[key]['error']}")

    lprec, linfo = load_lprec(dev, args.no_peer)
    methods["lprec"] = {"label": "httomolibgpu LPRec3d_tomobar", "by_rows": {}}
    if lprec is not None:
        try:
            kw = choose_lprec_filter(dev, lprec, linfo)
            rad = np.deg2rad(ang)
            ctr = (n - 1) / 2.0
            runners["lprec"] = lambda s: lprec(s, rad, center=ctr, **kw)
            log(f"[fbp] LPRec filter: {linfo['filter']!r}, kwargs {kw}")
        except Exception as exc:  # noqa: BLE001  (a failing peer or probe is recorded, not fatal)
            linfo.update(_err(exc))
    if "skipped" in linfo:
        log(f"[fbp] LPRec3d_tomobar skipped: {linfo['skipped']}")
        methods["lprec"]["skipped"] = linfo["skipped"]
    elif "error" in linfo and "lprec" not in runners:
        log(f"[fbp] LPRec3d_tomobar unavailable: {linfo['error']}")
        methods["lprec"]["error"] = linfo["error"]
    res["lprec_info"] = linfo

    res["h2d"] = {}
    for R in rows_list:
        host = np.ascontiguousarray(np.broadcast_to(sino[:, None, :], (na, R, n)))
        h2d: dict[str, Any] = {"bytes": int(host.nbytes)}
        if dev.gpu:
            th, slab = bench(dev, lambda host=host: dev.put(host), repeat=args.repeats)
            h2d.update(th.as_dict(per=R))
            h2d["GBps"] = round(host.nbytes / th.median / 1e9, 2)
            h2d["host_memory"] = "pageable (numpy)"
        else:
            slab = host.copy()  # the methods' input; ``host`` stays pristine for restore()
            h2d["note"] = "CPU run: no copy"
        res["h2d"][str(R)] = h2d
        sino_ref = dev.put(sino)

        def restore(slab: Any = slab, host: np.ndarray = host, sino_ref: Any = sino_ref) -> None:
            """Re-upload the slab if a method changed its input in place (checked on rows 0 and -1)."""
            xp = dev.xp
            changed = [float(xp.max(xp.abs(slab[:, r, :] - sino_ref))) > 0 for r in (0, -1)]
            if any(changed):
                slab[...] = dev.put(host)
                restore.modified = True  # type: ignore[attr-defined]

        for key, run in runners.items():
            restore.modified = False  # type: ignore[attr-defined]
            dev.free()
            entry = methods[key]
            log(f"[fbp] {key}: slab of {R} rows ...")
            try:
                with GpuPeak(dev) as pk:
                    tm, out = bench(
                        dev,
                        lambda run=run, slab=slab: run(slab),
                        repeat=args.repeats,
                        max_call_s=args.max_call_s,
                        before=restore,
                    )
                shape = tuple(int(s) for s in out.shape)
                row = {
                    **tm.as_dict(per=R),
                    **pk.as_dict(),
                    "output_shape": list(shape),
                    "ms_per_slice": round(tm.median / R * 1e3, 4),
                    "modifies_input": bool(restore.modified),
                }  # type: ignore[attr-defined]
                axis = rows_axis(shape, R, n)
                row["output_layout"] = ["(rows, N, N)", "(N, rows, N)", "(N, N, rows)"][axis]
                vol = dev.xp.moveaxis(out, axis, 0)  # a view; outside the timing
                row["slab_rows_max_abs_diff"] = float(dev.xp.max(dev.xp.abs(vol - vol[:1])))
                if "quality" not in entry:
                    entry["quality"] = quality(dev.get(vol[0]), phantom, mask)
                vol = None
                entry["by_rows"][str(R)] = row
                q = entry["quality"]
                log(
                    f"[fbp] {key} R={R}: {row['ms_per_slice']:.3f} ms/slice (median of {tm.as_dict()['repeats']}), "
                    f"RMSE {q['rmse']:.4f} (scaled {q['rmse_scaled']:.4f}, a={q['scale']:.4f}, {q['orientation']})"
                )
            except Exception as exc:  # noqa: BLE001  (a failing peer or probe is recorded, not fatal)
                entry["by_rows"][str(R)] = _err(exc)
                log(f"[fbp] {key} R={R} FAILED: {type(exc).__name__}: {exc}")
            out = None
            dev.free()
        slab = host = sino_ref = None  # free before the next slab size
        dev.free()

    for key in ("tomoflow_direct", "tomoflow_fourier"):
        q = methods[key].get("quality")
        if q is not None:
            q["identity_is_best"] = q["orientation"] == "identity"
            if not q["identity_is_best"]:
                log(f"[fbp] WARNING: {key}'s best orientation is {q['orientation']}, not identity")
    res["methods"] = methods
    _print_fbp(res)
    return res


def _print_fbp(res: dict[str, Any]) -> None:
    rows = []
    for key, m in res["methods"].items():
        q = m.get("quality", {})
        if not m["by_rows"]:
            rows.append([key, "-", "-", "-", "-", "-", "-", "-", m.get("skipped") and "skipped" or "error"])
        for R, r in m["by_rows"].items():
            if "error" in r:
                rows.append([key, R, "-", "-", "-", "-", "-", "-", "error"])
                continue
            rows.append(
                [
                    key,
                    R,
                    f"{r['ms_per_slice']:.3f}",
                    f"{r['event_median_per_s'] * 1e3:.3f}" if "event_median_per_s" in r else "-",
                    f"{q.get('rmse', float('nan')):.4f}",
                    f"{q.get('rmse_scaled', float('nan')):.4f}",
                    f"{q.get('scale', float('nan')):.4f}",
                    q.get("orientation", "-"),
                    fmt_bytes(r.get("gpu_peak_extra_bytes", r.get("cpu_delta_rss_bytes"))),
                ]
            )
    print()
    print_table(
        rows,
        [
            "method",
            "rows",
            "ms/slice",
            "event ms/slice",
            "RMSE",
            "RMSE scaled",
            "scale",
            "orientation",
            "peak extra mem",
        ],
        title=f"FBP {res['n']}^2 x {res['n_angles']} angles ({res['device']}); RMSE of row 0 vs phantom in the "
        "disk, best of 8 orientations",
    )
    for R, h in res["h2d"].items():
        if "median_per_s" in h:
            print(
                f"host->device copy, slab of {R}: {h['median_per_s'] * 1e3:.3f} ms/slice ({h['GBps']} GB/s)", flush=True
            )


# ----------------------------------------------------------------------------- part 2: MLEM
def part_mlem(dev: Device, cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from tomoflow.recon import mlem

    na, rows, cols, k = cfg["n_angles"], cfg["rows"], cfg["cols"], cfg["n_iter"]
    slab = max(1, min(cfg["slab"], rows))
    ang = np.linspace(0.0, 180.0, na)
    sino = analytic_sinogram(cols, ang)
    host = np.ascontiguousarray(np.broadcast_to(sino[:, None, :], (na, rows, cols)))
    out_buf = np.empty((slab, cols, cols), np.float32)
    res: dict[str, Any] = {
        "shape": [na, rows, cols],
        "angles": f"linspace(0, 180, {na}) degrees",
        "n_iter": k,
        "slab_rows": slab,
        "device": dev.name,
        "input_bytes": int(host.nbytes),
        "data": "exact Shepp-Logan sinogram (bench_recon table) replicated over rows",
    }
    log(f"[mlem] {na} x {rows} x {cols}, {k} iterations, slabs of {slab} rows: warm-up ...")
    w = dev.put(np.ascontiguousarray(host[:, : min(rows, 2)]))
    mlem(w, ang, n_iter=2)
    dev.sync()
    del w
    dev.free()

    slice0: list[np.ndarray] = []

    def run_all() -> dict[str, float]:
        """Host -> GPU -> MLEM -> host for every slab; returns the split of the wall time."""
        comp = h2d = d2h = 0.0
        for z0 in range(0, rows, slab):
            z1 = min(rows, z0 + slab)
            a = time.perf_counter()
            p = dev.put(np.ascontiguousarray(host[:, z0:z1]))
            dev.sync()
            b = time.perf_counter()
            x = mlem(p, ang, n_iter=k)
            dev.sync()
            c = time.perf_counter()
            if dev.gpu:  # the pipeline's download path: through a pinned staging buffer
                from tomoflow.pipeline.gpu import to_host

                to_host(x, out_buf[: z1 - z0])
            else:
                out_buf[: z1 - z0] = dev.get(x)
            d = time.perf_counter()
            if z0 == 0:
                slice0[:] = [out_buf[0].copy()]
            del p, x
            comp, h2d, d2h = comp + (c - b), h2d + (b - a), d2h + (d - c)
        return {"compute_s": comp, "h2d_s": h2d, "d2h_s": d2h}

    runs = []
    with GpuPeak(dev) as pk:
        for i in range(max(1, args.repeats)):
            t0 = time.perf_counter()
            split = run_all()
            split["total_s"] = time.perf_counter() - t0
            runs.append(split)
            log(f"[mlem] run {i + 1}: {split['total_s']:.2f} s total, {split['compute_s']:.2f} s in mlem")
            if split["total_s"] > 60:
                log("[mlem] a run took > 60 s: no further repeats")
                break
    med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    res.update(
        {
            "repeats": len(runs),
            "runs": [{k2: round(v, 4) for k2, v in r.items()} for r in runs],
            "total_s": round(med["total_s"], 4),
            "compute_s": round(med["compute_s"], 4),
            "h2d_s": round(med["h2d_s"], 4),
            "d2h_s": round(med["d2h_s"], 4),
            "per_iteration_s": round(med["compute_s"] / k, 4),
            **pk.as_dict(),
            "target_s": TARGETS["mlem_seconds"],
            "target_met": bool(med["total_s"] < TARGETS["mlem_seconds"]),
            "target_met_compute_only": bool(med["compute_s"] < TARGETS["mlem_seconds"]),
        }
    )
    phantom = rasterise_phantom(cols, 4)
    res["quality_slice0"] = {
        k2: v for k2, v in quality(slice0[0], phantom, disk_mask(cols)).items() if k2 != "all_orientations"
    }
    print(
        f"\nMLEM {k} iterations on {na} x {rows} x {cols} ({dev.name}, slabs of {slab}): "
        f"{res['total_s']:.2f} s total ({res['compute_s']:.2f} s in mlem, {res['per_iteration_s']:.3f} s/iteration; "
        f"copies {res['h2d_s']:.2f} + {res['d2h_s']:.2f} s), peak "
        f"{fmt_bytes(res.get('gpu_peak_bytes', res.get('cpu_peak_rss_bytes')))}; "
        f"target < {TARGETS['mlem_seconds']:g} s: "
        f"{'met' if res['target_met'] else 'NOT met'}",
        flush=True,
    )
    return res


# ----------------------------------------------------------------------------- part 3: end to end
class CountsSource:
    """Lazy ``(angle, row, col)`` uint16 raw counts: ``dark + I0 exp(-p * s(row))`` plus Gaussian
    (Poisson-like) noise, from a 2-D exact sinogram ``p`` and a row scale ``s``; generated block by
    block on the GPU when there is one (``write_scan`` slices it along angles)."""

    def __init__(self, dev: Device, sino: np.ndarray, row_scale: np.ndarray, *, noise: bool, seed: int = 0) -> None:
        self.dev, self.noise, self.seed = dev, noise, seed
        self.sino = dev.put(np.ascontiguousarray(sino, dtype=np.float32))
        self.row_scale = dev.put(np.asarray(row_scale, dtype=np.float32))
        self.shape = (sino.shape[0], row_scale.size, sino.shape[1])
        self.dtype = np.dtype(np.uint16)
        self.ndim = 3

    def __len__(self) -> int:
        return self.shape[0]

    def _normal(self, shape: tuple[int, ...], seed: int) -> Any:
        if self.dev.gpu:
            return self.dev.cp.random.RandomState(seed).standard_normal(shape, dtype=self.dev.cp.float32)
        return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError("CountsSource supports angle slices only")
        a0, a1, step = key.indices(self.shape[0])
        if step != 1:
            raise ValueError("step must be 1")
        xp = self.dev.xp
        p = self.sino[a0:a1, None, :] * self.row_scale[None, :, None]
        counts = I0_COUNTS * xp.exp(-p)
        if self.noise:
            counts += xp.sqrt(counts) * self._normal(counts.shape, self.seed + 1 + a0)
        counts += DARK_COUNTS
        return self.dev.get(xp.clip(xp.rint(counts), 0, 65535).astype(xp.uint16))

    def frames(self, n: int, level: float, seed: int) -> np.ndarray:
        """``n`` flat (``level`` = I0 + dark) or dark frames with the same noise model, uint16."""
        _, rows, cols = self.shape
        xp = self.dev.xp
        f = xp.full((n, rows, cols), level, dtype=xp.float32)
        if self.noise:
            f += xp.sqrt(f) * self._normal(f.shape, seed)
        return self.dev.get(xp.clip(xp.rint(f), 0, 65535).astype(xp.uint16))


def _filesystem(path: Path) -> dict[str, str | None]:
    """Mount point, device and type of the file system holding ``path`` (from /proc/mounts)."""
    best: tuple[str, str, str] | None = None
    target = os.path.realpath(path)
    try:
        with open("/proc/mounts") as fh:
            for line in fh:
                dev_, mnt, fstype = line.split()[:3]
                if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) and (
                    best is None or len(mnt) > len(best[1])
                ):
                    best = (dev_, mnt, fstype)
    except OSError:
        pass
    return (
        {"device": best[0], "mount": best[1], "type": best[2]}
        if best
        else {"device": None, "mount": None, "type": None}
    )


def _tree_bytes(path: Path) -> tuple[int, int]:
    """(bytes, files) under ``path``."""
    total = files = 0
    for root, _, names in os.walk(path):
        for nm in names:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(root, nm))
                files += 1
    return total, files


def evict_page_cache(path: Path) -> int:
    """Write back and drop ``path``'s files from the OS page cache (posix_fadvise DONTNEED on our own
    files; no root, nothing system-wide), so the next read comes from the disk. Returns files evicted."""
    if not hasattr(os, "posix_fadvise"):
        return 0
    n = 0
    for root, _, names in os.walk(path):
        for nm in names:
            try:
                fd = os.open(os.path.join(root, nm), os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                n += 1
            except OSError:
                pass
            finally:
                os.close(fd)
    return n


class GpuUtilSampler:
    """Samples ``nvidia-smi --query-gpu=utilization.gpu`` every ``interval`` s in a background thread."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.exe = shutil.which("nvidia-smi")
        self.samples: list[float] = []
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        nxt = time.perf_counter()
        while not self._stop.is_set():
            try:
                r = subprocess.run(
                    [self.exe, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "--id=0"],
                    capture_output=True,
                    text=True,
                    timeout=5,
                )
                self.samples.append(float(r.stdout.strip().splitlines()[0]))
            except Exception:  # noqa: BLE001  (a failing peer or probe is recorded, not fatal)
                self.errors += 1
            nxt += self.interval
            self._stop.wait(max(0.0, nxt - time.perf_counter()))

    def __enter__(self) -> GpuUtilSampler:
        if self.exe is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def as_dict(self) -> dict[str, Any]:
        if self.exe is None:
            return {"gpu_busy_fraction": None, "note": "nvidia-smi not found"}
        mean = statistics.fmean(self.samples) if self.samples else None
        return {
            "gpu_busy_fraction": None if mean is None else round(mean / 100.0, 4),
            "samples": len(self.samples),
            "sample_errors": self.errors,
            "interval_s": self.interval,
            "max_utilization_pct": max(self.samples) if self.samples else None,
        }


def _read_floor(scan_path: Path, threads: int) -> dict[str, Any]:
    """Read every array of the scan store (projections by row slabs of one chunk, flats, darks)."""
    import zarr

    g = zarr.open_group(str(scan_path), mode="r")
    jobs = []
    for name in ("projections", "flats", "darks"):
        arr = g[name]
        if arr.shape[0] == 0:
            continue
        step = int(arr.chunks[1])
        jobs += [(arr, z0, min(arr.shape[1], z0 + step)) for z0 in range(0, arr.shape[1], step)]

    def read(job: tuple[Any, int, int]) -> int:
        arr, z0, z1 = job
        return int(np.asarray(arr[:, z0:z1, :]).nbytes)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        nbytes = sum(pool.map(read, jobs))
    dt = time.perf_counter() - t0
    return {
        "read_s": round(dt, 4),
        "read_bytes": nbytes,
        "read_GBps": round(nbytes / dt / 1e9, 3),
        "read_tasks": len(jobs),
        "threads": threads,
    }


def _write_floor(layout: dict[str, Any], sample: np.ndarray, path: Path, threads: int) -> dict[str, Any]:
    """Write an array of the volume's ``layout`` (shape, dtype, chunks, codecs), filled with real volume
    data (``sample``: one z-chunk slab of the reconstruction, repeated), into a fresh zarr store."""
    import zarr

    kw: dict[str, Any] = {k: layout[k] for k in ("compressors", "filters", "serializer")}
    if layout.get("shards"):
        kw["shards"] = layout["shards"]
    shape, cz = layout["shape"], int(layout["chunks"][0])
    arr = zarr.create_array(
        str(path), shape=shape, chunks=layout["chunks"], dtype=layout["dtype"], fill_value=0.0, zarr_format=3, **kw
    )

    def write(z0: int) -> int:
        z1 = min(shape[0], z0 + cz)
        arr[z0:z1] = sample[: z1 - z0]
        return (z1 - z0) * sample[0].nbytes

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        nbytes = sum(pool.map(write, range(0, shape[0], cz)))
    dt = time.perf_counter() - t0
    return {
        "write_s": round(dt, 4),
        "write_bytes": nbytes,
        "write_GBps": round(nbytes / dt / 1e9, 3),
        "codecs": {k: repr(layout[k]) for k in ("compressors", "filters", "serializer", "shards")},
        "chunks": list(layout["chunks"]),
    }


def part_e2e(dev: Device, cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    import tomoflow.config as tf_config
    from tomoflow.io.scan_store import write_scan
    from tomoflow.pipeline.reconstruct import reconstruct_scan
    from tomoflow.sim.analytic import ellipse_sinogram, rasterize_ellipses
    from tomoflow.sim.phantoms import shepp_logan_ellipses

    size = args.e2e_size or cfg["size"]
    rows = args.e2e_rows or cfg["rows"] or size
    A = C = size
    n_flats, n_darks = cfg["n_flats"], cfg["n_darks"]
    threads = args.io_threads or (os.cpu_count() or 1)
    base = Path(tempfile.mkdtemp(prefix="bench_gpu_e2e_", dir=args.workdir))
    res: dict[str, Any] = {
        "workdir": str(base),
        "device": dev.name,
        "I0_counts": I0_COUNTS,
        "dark_counts": DARK_COUNTS,
        "noise": not args.no_noise,
        "cache": args.e2e_cache,
    }
    try:
        free = shutil.disk_usage(base).free
        # the scan store keeps uint16 raw counts as uint16 (2 bytes), the volume is float32 (4 bytes) plus
        # its pyramid (1/7); uncompressed sizes, so the estimate is an upper bound of what lands on disk
        from tomoflow.io.scan_store import storage_dtype

        in_bytes = storage_dtype(np.uint16).itemsize

        def need(r: int) -> int:
            return int(in_bytes * r * C * (A + n_flats + n_darks) + 4 * r * C * C * (1 + 1 / 7))

        res["disk_free_bytes"] = int(free)
        res["filesystem"] = _filesystem(base)
        log(
            f"[e2e] workdir {base}: {res['filesystem']['type']} file system at {res['filesystem']['mount']}, "
            f"{fmt_bytes(free)} free"
        )
        if res["filesystem"]["type"] in ("tmpfs", "ramfs"):
            log(
                "[e2e] WARNING: the workdir is in memory (tmpfs): the I/O floor is a memory floor; "
                "use --workdir on a disk"
            )
        res["rows_requested"] = rows
        while need(rows) > 0.9 * free and rows > 8:
            rows //= 2
            log(
                f"[e2e] input + output would exceed 90 % of the free disk ({fmt_bytes(free)}): "
                f"halving the rows to {rows}"
            )
            res.setdefault("rows_halved_to", []).append(rows)
        if need(rows) > 0.9 * free:
            raise RuntimeError(f"not enough free disk in {base} ({fmt_bytes(free)}) even for {rows} rows")
        res.update(
            {"shape": [A, rows, C], "n_flats": n_flats, "n_darks": n_darks, "disk_needed_estimate_bytes": need(rows)}
        )

        # --- data: why not the 3-D analytic phantom (ellipsoid_projections)? measure its cost
        from tomoflow.sim.analytic import ellipsoid_projections
        from tomoflow.sim.phantoms import shepp_logan_ellipsoids

        m = 128
        t0 = time.perf_counter()
        ellipsoid_projections(shepp_logan_ellipsoids((m, m, m)), uniform_angles(m), (m, m))
        per_value = (time.perf_counter() - t0) / m**3
        est = per_value * A * rows * C
        res["ellipsoid_projections_estimate_s"] = {
            "single_core": round(est, 1),
            "ideal_all_cores": round(est / (os.cpu_count() or 1), 1),
        }
        ang = uniform_angles(A)
        tab = shepp_logan_ellipses(C)  # default scale: largest line integral about 2
        sino = np.asarray(ellipse_sinogram(tab, ang, C), dtype=np.float32)
        zc = (rows - 1) / 2.0
        row_scale = (1.0 - 0.5 * ((np.arange(rows) - zc) / max(zc, 1.0)) ** 2).astype(np.float32)  # 1 .. 0.5
        res["data"] = (
            "2-D exact Shepp-Logan sinogram (tomoflow.sim default scale, max line integral ~2) times a "
            "row scale 1 - 0.5 ((row - c) / c)^2; counts = dark + I0 exp(-p) (+ Gaussian noise of "
            "variance = counts), rounded, clipped to uint16; 3-D ellipsoid_projections would take "
            f"~{res['ellipsoid_projections_estimate_s']['single_core']:.0f} s on one core (extrapolated "
            f"from {m}^3) and hold {fmt_bytes(8 * A * rows * C)} of float64 output at once"
        )
        src = CountsSource(dev, sino, row_scale, noise=not args.no_noise)
        flats = src.frames(n_flats, I0_COUNTS + DARK_COUNTS, seed=10_000_001)
        darks = src.frames(n_darks, DARK_COUNTS, seed=10_000_002)
        scan_path, out_path = base / "scan.zarr", base / "volume.zarr"
        log(
            f"[e2e] writing the scan store {A} x {rows} x {C} "
            f"({fmt_bytes(in_bytes * A * rows * C)} of uint16 counts) ..."
        )
        t0 = time.perf_counter()
        write_scan(
            scan_path,
            src,
            ang,
            flats=flats,
            darks=darks,
            values="intensity",
            pixel_size_um=1.0,
            block_angles=max(8, min(64, A)) // 8 * 8 if A >= 8 else None,
        )
        res["ingest_s"] = round(time.perf_counter() - t0, 3)
        res["scan_store_bytes"], res["scan_store_files"] = _tree_bytes(scan_path)
        del src
        dev.free()
        log(f"[e2e] scan store written in {res['ingest_s']:.1f} s ({fmt_bytes(res['scan_store_bytes'])} on disk)")

        # --- the I/O floor, part 1: read everything the reconstruction reads
        if args.e2e_cache == "cold":
            res["evicted_files_before_read_floor"] = evict_page_cache(scan_path)
        floor = _read_floor(scan_path, threads)
        log(f"[e2e] read floor: {floor['read_s']:.2f} s ({floor['read_GBps']} GB/s)")

        # --- the pipeline
        sig = inspect.signature(reconstruct_scan)
        kwargs: dict[str, Any] = {"center": (C - 1) / 2.0}
        if "device" in sig.parameters:
            kwargs["device"] = dev.name
        if "client" in sig.parameters:
            kwargs["client"] = None
        if args.e2e_memory_budget:
            kwargs["memory_budget"] = args.e2e_memory_budget
        if args.e2e_fbp_method is not None:
            if "fbp_method" not in sig.parameters:
                raise RuntimeError("--e2e-fbp-method: reconstruct_scan has no fbp_method parameter")
            kwargs["fbp_method"] = args.e2e_fbp_method
        res["reconstruct_scan"] = {
            "signature": f"reconstruct_scan{sig}",
            "kwargs": dict(kwargs),
            "config_device": dev.name,
            "cluster": "none: client=None, so reconstruct_scan runs its blocks in a local thread pool in this process "
            "(tomoflow.pipeline.engine, no distributed cluster)",
        }
        if args.e2e_cache == "cold":
            res["evicted_files_before_recon"] = evict_page_cache(scan_path)
        log(f"[e2e] reconstruct_scan(device={dev.name!r}, {kwargs}) ...")
        with tf_config.set(device=dev.name), GpuUtilSampler() as util:
            t0 = time.perf_counter()
            vs = reconstruct_scan(str(scan_path), str(out_path), **kwargs)
            wall = time.perf_counter() - t0
        res["wall_s"] = round(wall, 3)
        res["gpu_utilization"] = util.as_dict()
        rec = vs.stages().get("recon")
        if rec is not None:
            res["stage_record"] = {
                "seconds": rec.seconds,
                "timings": rec.timings,
                "info": rec.info,
                "params": rec.params,
            }
            res["fbp_method_used"] = rec.params.get("fbp_method", "direct")
        level0 = vs.level(0)
        res["volume"] = {
            "shape": list(level0.shape),
            "chunks": list(level0.chunks),
            "dtype": str(level0.dtype),
            "levels": vs.n_levels,
        }
        res["volume_store_bytes"], res["volume_store_files"] = _tree_bytes(out_path)
        log(f"[e2e] reconstruct_scan: {wall:.2f} s; GPU busy {res['gpu_utilization'].get('gpu_busy_fraction')}")

        # sanity check of the result: the middle row against the row-scaled phantom
        zm = rows // 2
        ref = np.asarray(rasterize_ellipses(tab, C, supersample=4), dtype=np.float32) * row_scale[zm]
        q = quality(np.asarray(level0[zm]), ref, disk_mask(C))
        res["quality_middle_row"] = {k: v for k, v in q.items() if k != "all_orientations"}

        # --- the I/O floor, part 2: write arrays of every level's layout (level 0 and the pyramid)
        layouts, samples = [], []
        for k in range(vs.n_levels):
            lev = vs.level(k)
            cz = int(lev.chunks[0])
            zk = min(max(0, (zm >> k) - (zm >> k) % cz), max(0, int(lev.shape[0]) - cz))
            samples.append(np.asarray(lev[zk : zk + cz]))
            layouts.append(
                {
                    "shape": tuple(lev.shape),
                    "chunks": tuple(lev.chunks),
                    "dtype": lev.dtype,
                    "compressors": lev.compressors,
                    "filters": lev.filters,
                    "serializer": lev.serializer,
                    "shards": getattr(lev, "shards", None),
                }
            )
        del level0, vs, lev
        shutil.rmtree(out_path)  # make room: the floor's arrays take the volume's place on the disk
        levels = [
            _write_floor(lay, smp, base / f"floor{k}.zarr", threads)
            for k, (lay, smp) in enumerate(zip(layouts, samples))
        ]
        floor.update(levels[0])
        floor["write_level0_s"] = levels[0]["write_s"]
        floor["write_s"] = round(sum(lv["write_s"] for lv in levels), 4)
        floor["write_bytes"] = int(sum(lv["write_bytes"] for lv in levels))
        floor["write_levels_s"] = [lv["write_s"] for lv in levels]
        floor["floor_s"] = round(floor["read_s"] + floor["write_s"], 4)
        floor["floor_level0_s"] = round(floor["read_s"] + floor["write_level0_s"], 4)
        floor["note"] = (
            "read: every scan-store array by one-chunk row slabs; write: every level of the output "
            "(level 0 and the pyramid), each with its own chunks and codecs; same disk, thread pool "
            "of `threads`; floor_level0_s counts level 0 only"
        )
        res["ratio_wall_to_level0_floor"] = (
            round(wall / floor["floor_level0_s"], 3) if floor["floor_level0_s"] > 0 else None
        )
        res["ratio_wall_to_floor"] = round(wall / floor["floor_s"], 3) if floor["floor_s"] > 0 else None
        res["floor"] = floor
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return res


def _print_e2e(res: dict[str, Any]) -> None:
    f = res.get("floor", {})
    util = res.get("gpu_utilization", {})
    busy = util.get("gpu_busy_fraction")
    print()
    print_table(
        [
            [
                " x ".join(map(str, res["shape"])),
                res["device"],
                fmt_time(res.get("ingest_s")),
                fmt_time(res["wall_s"]),
                fmt_time(f.get("read_s")),
                fmt_time(f.get("write_s")),
                fmt_time(f.get("floor_s")),
                f"{res['ratio_wall_to_floor']:.2f}x" if res.get("ratio_wall_to_floor") else "-",
                "-" if busy is None else f"{100 * busy:.0f} %",
            ]
        ],
        [
            "angles x rows x cols",
            "device",
            "ingest",
            "reconstruct_scan",
            "read floor",
            "write floor",
            "floor",
            "wall / floor",
            "GPU busy",
        ],
        title="End to end: scan store (raw counts) -> float32 OME-Zarr volume",
    )


# ----------------------------------------------------------------------------- part 4: kernels
def part_kernels(dev: Device, cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from tomoflow.recon import backproject, project

    n, na, nz = cfg["n"], cfg["n_angles"], cfg["rows"]
    ang = np.linspace(0.0, 180.0, na)
    vol_h = np.ascontiguousarray(np.broadcast_to(rasterise_phantom(n, 1)[None], (nz, n, n)))
    # on the CPU the "device" side is the generic array-namespace path (what CuPy runs) with NumPy
    dkw: dict[str, Any] = {} if dev.gpu else {"backend": "xp"}
    res: dict[str, Any] = {
        "shape": {"rows": nz, "ny": n, "nx": n, "angles": na},
        "device": dev.name,
        "device_path": "CuPy input, backend='auto'" if dev.gpu else "NumPy input, backend='xp'",
        "reference": "NumPy input, backend='auto' (compiled numba kernels)",
    }
    updates = nz * n * n * na
    # reference (CPU, compiled); warm the numba kernels on a tiny input first
    project(vol_h[:1, :16, :16], ang[:4])
    backproject(np.zeros((4, 1, 16), np.float32), ang[:4], model="adjoint")
    backproject(np.zeros((4, 1, 16), np.float32), ang[:4], model="interpolate")
    t0 = time.perf_counter()
    sino_h = project(vol_h, ang)
    ref_t = {"project": time.perf_counter() - t0}
    refs = {"project": sino_h}
    for model in ("adjoint", "interpolate"):
        t0 = time.perf_counter()
        refs[f"backproject_{model}"] = backproject(sino_h, ang, model=model)
        ref_t[f"backproject_{model}"] = time.perf_counter() - t0
    vol_d, sino_d = dev.put(vol_h), dev.put(sino_h)
    calls = {
        "project": lambda: project(vol_d, ang, **dkw),
        "backproject_adjoint": lambda: backproject(sino_d, ang, model="adjoint", **dkw),
        "backproject_interpolate": lambda: backproject(sino_d, ang, model="interpolate", **dkw),
    }
    ops: dict[str, Any] = {}
    for name, fn in calls.items():
        dev.free()
        try:
            with GpuPeak(dev) as pk:
                tm, out = bench(dev, fn, repeat=args.repeats, max_call_s=args.max_call_s)
            ref = refs[name]
            diff = float(dev.xp.max(dev.xp.abs(out - dev.put(ref))))
            ops[name] = {
                **tm.as_dict(),
                **pk.as_dict(),
                "max_abs_error": diff,
                "max_rel_error": diff / max(float(np.max(np.abs(ref))), 1e-30),
                "G_updates_per_s": round(updates / tm.median / 1e9, 3),
                "reference_cpu_s": round(ref_t[name], 4),
                "speedup_vs_reference": round(ref_t[name] / tm.median, 2),
            }
            log(
                f"[kernels] {name}: {tm.median * 1e3:.2f} ms/call, {ops[name]['G_updates_per_s']} G updates/s, "
                f"max rel. error vs NumPy {ops[name]['max_rel_error']:.2e}"
            )
        except Exception as exc:  # noqa: BLE001  (a failing peer or probe is recorded, not fatal)
            ops[name] = _err(exc)
            log(f"[kernels] {name} FAILED: {ops[name]['error']}")
        out = None
    res["ops"] = ops
    # adjoint identity on the device, random x and y
    try:
        xp = dev.xp
        rng = np.random.default_rng(1)
        x = dev.put(rng.random((nz, n, n), dtype=np.float32))
        y = dev.put(rng.random((na, nz, n), dtype=np.float32))
        ax = project(x, ang, **dkw)
        aty = backproject(y, ang, model="adjoint", **dkw)
        lhs = float(xp.sum(ax.astype(xp.float64) * y.astype(xp.float64)))
        rhs = float(xp.sum(x.astype(xp.float64) * aty.astype(xp.float64)))
        res["adjoint_identity"] = {
            "Ax_dot_y": lhs,
            "x_dot_ATy": rhs,
            "relative_difference": abs(lhs - rhs) / max(abs(lhs), abs(rhs), 1e-30),
        }
        del x, y, ax, aty
    except Exception as exc:  # noqa: BLE001  (a failing peer or probe is recorded, not fatal)
        res["adjoint_identity"] = _err(exc)
    dev.free()
    rows = [
        [
            k,
            fmt_time(v.get("median_s")),
            f"{v.get('G_updates_per_s', float('nan')):.2f}",
            f"{v.get('max_rel_error', float('nan')):.2e}",
            fmt_time(v.get("reference_cpu_s")),
            f"{v.get('speedup_vs_reference', float('nan')):.1f}x",
        ]
        if "error" not in v
        else [k, "error", "-", "-", "-", "-"]
        for k, v in ops.items()
    ]
    print()
    print_table(
        rows,
        ["operation", "time/call", "G vox-angle/s", "max rel err vs NumPy", "NumPy (CPU)", "speed-up"],
        title=f"Projector kernels, {nz} x {n}^2 x {na} angles ({res['device_path']})",
    )
    ai = res["adjoint_identity"]
    if "relative_difference" in ai:
        print(
            f"adjoint identity <Ax, y> vs <x, A^T y>: relative difference {ai['relative_difference']:.2e}", flush=True
        )
    return res


# ----------------------------------------------------------------------------- driver
def gpu_environment() -> dict[str, Any]:
    out: dict[str, Any] = {}
    exe = shutil.which("nvidia-smi")
    if exe is None:
        out["nvidia_smi_L"] = None
    else:
        try:
            out["nvidia_smi_L"] = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=10).stdout.strip()
            out["nvidia_smi_query"] = subprocess.run(
                [
                    exe,
                    "--query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit",
                    "--format=csv,noheader",
                ],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        except Exception as exc:  # noqa: BLE001  (a failing peer or probe is recorded, not fatal)
            out["nvidia_smi_L"] = f"failed: {exc}"
    from importlib import metadata

    for pkg in ("cupy", "cupy-cuda12x", "cupy-cuda13x", "httomolibgpu", "tomobar", "torch"):
        with contextlib.suppress(Exception):
            out[f"{pkg}_version"] = metadata.version(pkg)
    return out


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    s: dict[str, Any] = {}
    fbp_res = results.get("fbp")
    if isinstance(fbp_res, dict) and "methods" in fbp_res:
        for key, m in fbp_res["methods"].items():
            best = {R: r["ms_per_slice"] for R, r in m["by_rows"].items() if "ms_per_slice" in r}
            if best:
                R = max(best, key=int)
                s[f"fbp_{key}_ms_per_slice_R{R}"] = best[R]
            if "quality" in m:
                s[f"fbp_{key}_rmse"] = round(m["quality"]["rmse"], 5)
                s[f"fbp_{key}_orientation"] = m["quality"]["orientation"]
    mr = results.get("mlem")
    if isinstance(mr, dict) and "total_s" in mr:
        s["mlem_total_s"], s["mlem_target_met"] = mr["total_s"], mr["target_met"]
    er = results.get("e2e")
    if isinstance(er, dict) and "wall_s" in er:
        s["e2e_wall_s"] = er["wall_s"]
        s["e2e_ratio_wall_to_floor"] = er.get("ratio_wall_to_floor")
        s["e2e_gpu_busy_fraction"] = er.get("gpu_utilization", {}).get("gpu_busy_fraction")
    kr = results.get("kernels")
    if isinstance(kr, dict) and "ops" in kr:
        for k, v in kr["ops"].items():
            if "G_updates_per_s" in v:
                s[f"kernels_{k}_G_per_s"] = v["G_updates_per_s"]
                s[f"kernels_{k}_max_rel_error"] = v["max_rel_error"]
    for part, r in results.items():
        s[f"{part}_status"] = "error" if isinstance(r, dict) and "error" in r else "ok"
    return s


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)} (default all)"
    )
    ap.add_argument("--quick", action="store_true", help="tiny sizes (seconds): smoke test, on the CPU without a GPU")
    ap.add_argument(
        "--output",
        type=Path,
        default=None,
        help="JSON path (default benchmarks/results/bench_gpu.json, bench_gpu_quick.json with --quick)",
    )
    ap.add_argument(
        "--device",
        choices=["auto", "cuda", "cpu"],
        default="auto",
        help="auto: CuPy when it sees a GPU, else NumPy (default); cuda: fail without a GPU",
    )
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement, after a warm-up (default 3)")
    ap.add_argument(
        "--max-call-s",
        type=float,
        default=30.0,
        help="when a warm-up call takes longer than this, time 1 repeat only (default 30)",
    )
    ap.add_argument("--no-peer", action="store_true", help="skip httomolibgpu's LPRec3d_tomobar")
    ap.add_argument("--fbp-size", type=int, default=None, help="FBP: detector columns = slice size (default 2048)")
    ap.add_argument("--fbp-angles", type=int, default=None, help="FBP: angles (default = --fbp-size or 2048)")
    ap.add_argument("--fbp-rows", default=None, help="FBP: comma-separated slab rows (default 32,128)")
    ap.add_argument("--mlem-rows", type=int, default=None, help="MLEM: detector rows (default 1024)")
    ap.add_argument("--mlem-slab", type=int, default=None, help="MLEM: rows per GPU slab (default 32)")
    ap.add_argument("--e2e-size", type=int, default=None, help="end to end: angles = columns (default 2048)")
    ap.add_argument("--e2e-rows", type=int, default=None, help="end to end: detector rows (default = --e2e-size)")
    ap.add_argument("--e2e-memory-budget", default=None, help="end to end: reconstruct_scan memory_budget (e.g. 8GB)")
    ap.add_argument(
        "--e2e-fbp-method",
        choices=["auto", "direct", "fourier"],
        default=None,
        help="end to end: reconstruct_scan fbp_method (default: not passed, i.e. its own default)",
    )
    ap.add_argument(
        "--e2e-cache",
        choices=["cold", "warm"],
        default="cold",
        help="cold (default): drop the scan store's files from the page cache before the read floor and "
        "before reconstruct_scan (posix_fadvise on our own files); warm: leave them cached",
    )
    ap.add_argument("--no-noise", action="store_true", help="end to end: no noise on the raw counts")
    ap.add_argument(
        "--workdir", default=None, help="end to end: folder for the temporary stores (default: system temp)"
    )
    ap.add_argument("--io-threads", type=int, default=None, help="end to end: threads of the I/O floor (default: CPUs)")
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = [p for p in parts if p not in PARTS]
    if bad:
        ap.error(f"unknown part(s) {bad}; choose from {PARTS}")
    args.parts = parts
    args.repeats = max(1, args.repeats)
    return args


def configs(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    cfg = {k: dict(v) for k, v in (QUICK if args.quick else FULL).items()}
    if args.fbp_size:
        cfg["fbp"]["n"] = args.fbp_size
        cfg["fbp"]["n_angles"] = args.fbp_size
    if args.fbp_angles:
        cfg["fbp"]["n_angles"] = args.fbp_angles
    if args.fbp_rows:
        cfg["fbp"]["rows"] = [int(r) for r in args.fbp_rows.split(",") if r.strip()]
    if args.mlem_rows:
        cfg["mlem"]["rows"] = args.mlem_rows
    if args.mlem_slab:
        cfg["mlem"]["slab"] = args.mlem_slab
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    dev = Device(args.device)
    cfg = configs(args)
    name = "bench_gpu_quick" if args.quick else "bench_gpu"
    env = {**dev.info(), **gpu_environment()}
    log(
        f"device: {dev.name}"
        + (
            f" ({env.get('gpu_name')}, CuPy {env.get('cupy_version')})"
            if dev.gpu
            else f" - {dev.reason}; NumPy on the CPU"
        )
    )
    if env.get("nvidia_smi_L"):
        log(f"nvidia-smi -L: {env['nvidia_smi_L']}")
    results: dict[str, Any] = {}
    payload: dict[str, Any] = {
        "quick": bool(args.quick),
        "parts_requested": args.parts,
        "config": cfg,
        "repeats": args.repeats,
        "gpu": env,
        "targets": TARGETS,
        "results": results,
    }
    path = None
    fns = {"fbp": part_fbp, "mlem": part_mlem, "e2e": part_e2e, "kernels": part_kernels}
    for part in args.parts:
        log(f"===== part {part} =====")
        t0 = time.perf_counter()
        try:
            r = fns[part](dev, cfg[part], args)
            if part == "e2e":
                _print_e2e(r)
        except Exception as exc:  # noqa: BLE001 - one broken part must not lose the others
            r = _err(exc)
            log(f"part {part} FAILED: {r['error']}")
            print(r["traceback"], file=sys.stderr, flush=True)
        with contextlib.suppress(Exception):
            dev.free()
        r["part_seconds"] = round(time.perf_counter() - t0, 2)
        results[part] = r
        payload.update(
            {"summary": summarise(results), "complete": False, "total_runtime_s": round(time.perf_counter() - _T0, 1)}
        )
        path = write_results(name, payload, path=args.output, extra_packages=PEER_PACKAGES)  # after every part
    payload.update(
        {"summary": summarise(results), "complete": True, "total_runtime_s": round(time.perf_counter() - _T0, 1)}
    )
    path = write_results(name, payload, path=args.output, extra_packages=PEER_PACKAGES)
    report_summary(payload["summary"], path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
