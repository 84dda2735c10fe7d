"""Shared helpers for the benchmark scripts in ``benchmarks/``.

Timing (wall and process CPU time), peak resident memory of a block of code, machine information,
a plain-text table printer and a JSON writer for ``benchmarks/results/<name>.json``.

Nothing here imports tomoflow, so the helpers work in any environment (the benchmark venv
``.venv-bench`` or the main one).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "BENCH_DIR",
    "RESULTS_DIR",
    "Timing",
    "PeakMemory",
    "time_call",
    "machine_info",
    "package_versions",
    "print_table",
    "write_results",
    "fmt_time",
    "fmt_bytes",
    "other_cpu_load",
    "OtherLoad",
    "wait_for_idle",
]

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"


# ----------------------------------------------------------------------------- timing
@dataclass
class Timing:
    """Repeated timings of one call, in seconds.

    ``wall`` holds one wall-clock time per repeat, ``cpu`` the process CPU time (all threads) of the
    same repeats, so ``cpu / wall`` is the number of cores kept busy on average.
    """

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @property
    def best(self) -> float:
        return min(self.wall)

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def cores_busy(self) -> float:
        """Mean CPU time / wall time over the repeats (about 1 for single-threaded code)."""
        w = sum(self.wall)
        return sum(self.cpu) / w if w > 0 else float("nan")

    def as_dict(self, per: float = 1.0) -> dict[str, Any]:
        """Summary; with ``per`` > 1 the times are also given divided by ``per`` (e.g. slices)."""
        d: dict[str, Any] = {
            "repeats": len(self.wall),
            "wall_s": [round(t, 6) for t in self.wall],
            "best_s": round(self.best, 6),
            "median_s": round(self.median, 6),
            "cores_busy": round(self.cores_busy, 3),
        }
        if per != 1.0:
            d["per"] = per
            d["best_per_s"] = round(self.best / per, 6)
            d["median_per_s"] = round(self.median / per, 6)
        return d


def time_call(fn: Callable[[], Any], *, repeat: int = 3, warmup: int = 0) -> tuple[Timing, Any]:
    """Call ``fn()`` ``warmup`` times untimed, then ``repeat`` times timed.

    Returns the :class:`Timing` and the result of the last call.
    """
    result = None
    for _ in range(max(0, warmup)):
        result = fn()
    t = Timing()
    for _ in range(max(1, repeat)):
        c0 = time.process_time()
        w0 = time.perf_counter()
        result = fn()
        w1 = time.perf_counter()
        c1 = time.process_time()
        t.wall.append(w1 - w0)
        t.cpu.append(c1 - c0)
    return t, result


# ----------------------------------------------------------------------------- memory
def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _rss_bytes() -> int:
    kib = _status_kib("VmRSS")
    if kib is not None:
        return kib * 1024
    try:  # pragma: no cover - non-Linux
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001  (psutil missing or refused: memory unknown)  # pragma: no cover
        return 0


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return _status_kib("VmHWM") is not None
    except OSError:
        return False


class PeakMemory:
    """Peak resident memory of the process while a ``with`` block runs.

    On Linux the kernel's high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs``) is
    used, which is exact and also sees memory allocated by native code (numba, C++ extensions).
    Elsewhere a background thread samples the RSS every ``interval`` seconds (may miss short peaks).

    Attributes after the block: ``baseline`` (RSS at entry), ``peak`` (bytes), ``delta``
    (``peak - baseline``: what the block needed on top of what was already resident), ``method``.
    """

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.baseline = 0
        self.peak = 0
        self.method = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        self.baseline = _rss_bytes()
        if _reset_hwm():
            self.method = "VmHWM"
        else:
            self.method = "sampled"
            self.peak = self.baseline
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss_bytes())
            self._stop.wait(self.interval)

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, _rss_bytes())
        else:
            self.peak = (_status_kib("VmHWM") or 0) * 1024

    @property
    def delta(self) -> int:
        return max(0, self.peak - self.baseline)

    def as_dict(self) -> dict[str, Any]:
        return {"peak_rss_bytes": self.peak, "delta_rss_bytes": self.delta, "method": self.method}


# ----------------------------------------------------------------------------- machine load
def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    try:
        with open("/proc/stat") as fh:
            f = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = f[3] + (f[4] if len(f) > 4 else 0)
    return sum(f) - idle, sum(f)


def other_cpu_load(interval: float = 1.0) -> float | None:
    """Cores kept busy by OTHER processes over ``interval`` seconds (this process is subtracted).

    0 on an idle machine; about 1 when another process keeps one core busy. None where /proc/stat
    is unavailable. Benchmarks record it because a 2-core machine shared with a test run gives
    meaningless timings for multi-threaded code.
    """
    a = _cpu_jiffies()
    if a is None:
        return None
    c0 = time.process_time()
    time.sleep(interval)
    c1 = time.process_time()
    b = _cpu_jiffies()
    if b is None:
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy_cores = (b[0] - a[0]) / hz / interval
    return max(0.0, busy_cores - (c1 - c0) / interval)


class OtherLoad:
    """Cores kept busy by OTHER processes, on average, while a ``with`` block runs.

    Costs nothing during the block (reads /proc/stat at entry and exit and subtracts this process's
    own CPU time). ``cores`` is None where /proc/stat is unavailable.
    """

    def __init__(self) -> None:
        self.cores: float | None = None
        self._a: tuple[int, int] | None = None

    def __enter__(self) -> OtherLoad:
        self._a = _cpu_jiffies()
        self._c0 = time.process_time()
        self._w0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        b = _cpu_jiffies()
        wall = time.perf_counter() - self._w0
        own = time.process_time() - self._c0
        if self._a is None or b is None or wall <= 0:
            return
        hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        # jiffies are coarse (10 ms): blocks much shorter than ~0.5 s give noisy values
        self.cores = max(0.0, ((b[0] - self._a[0]) / hz - own) / wall)
        self.wall = wall


def wait_for_idle(
    max_wait: float, threshold: float = 0.3, interval: float = 1.0, log: Callable[[str], None] | None = None
) -> float | None:
    """Wait (up to ``max_wait`` seconds) until other processes use less than ``threshold`` cores.

    Returns the last measured :func:`other_cpu_load`.
    """
    t0 = time.perf_counter()
    load = other_cpu_load(interval)
    tries = 0
    while load is not None and load >= threshold and time.perf_counter() - t0 < max_wait:
        if log is not None and tries % 10 == 0:
            log(f"machine busy: other processes use {load:.2f} cores; waiting (up to {max_wait:.0f} s) ...")
        tries += 1
        load = other_cpu_load(interval)
    return load


# ----------------------------------------------------------------------------- machine info
def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    """Installed distribution versions (None when not installed)."""
    out: dict[str, str | None] = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _git_commit() -> str | None:
    try:
        r = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if r.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return r.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info(extra_packages: Sequence[str] = ()) -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, memory, Python, package versions, commit."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        affinity = os.cpu_count()
    pk = ["tomoflow", "numpy", "scipy", "numba", "torch", *extra_packages]
    return {
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "memory_total_bytes": _mem_total(),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "packages": package_versions(dict.fromkeys(pk)),
        "thread_env": {
            k: os.environ[k]
            for k in sorted(os.environ)
            if k.endswith("_NUM_THREADS") or k in ("OMP_PROC_BIND", "NUMBA_THREADING_LAYER")
        },
        "git_commit": _git_commit(),
        "loadavg": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }


# ----------------------------------------------------------------------------- output
def fmt_time(seconds: float | None) -> str:
    """Human-readable duration: ``812 us``, ``41.2 ms``, ``3.07 s``."""
    if seconds is None or seconds != seconds:
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0
    return f"{n:.1f} GiB"  # pragma: no cover


def print_table(
    rows: Sequence[Sequence[Any]], headers: Sequence[str], *, title: str | None = None, file: Any = None
) -> str:
    """Print (and return) a plain-text table; numbers are right-aligned, text left-aligned."""
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    numeric = [all(_looks_numeric(r[i]) for r in cells[1:]) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric)).rstrip()

    out = []
    if title:
        out.append(title)
    out.append(line(cells[0]))
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(r) for r in cells[1:])
    text = "\n".join(out)
    print(text, file=file or sys.stdout, flush=True)
    return text


def report_summary(summary: dict[str, Any], path: Any) -> None:
    """Print a benchmark's summary, one ``key: value`` per line, and where its results were written."""
    print("\nSummary:", flush=True)
    for k, v in summary.items():
        print(f"  {k}: {v}", flush=True)
    print(f"wrote {path}", flush=True)


def _looks_numeric(s: str) -> bool:
    s = s.strip()
    if s in ("-", ""):
        return True
    return s[0].isdigit() or (s[0] in "+-." and len(s) > 1 and (s[1].isdigit() or s[1] == "."))


def _json_default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_results(
    name: str, payload: dict[str, Any], *, path: str | Path | None = None, extra_packages: Sequence[str] = ()
) -> Path:
    """Write ``payload`` plus machine information as JSON.

    The file is ``benchmarks/results/<name>.json`` unless ``path`` is given; it is written to a
    ``.tmp`` file first and renamed, so a reader never sees half a file.
    """
    target = Path(path) if path is not None else RESULTS_DIR / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": name,
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(extra_packages),
        **payload,
    }
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")
    os.replace(tmp, target)
    return target
