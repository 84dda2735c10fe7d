"""Array-namespace helpers: one implementation per algorithm, NumPy on CPU, CuPy on GPU.

Kernels call :func:`get_namespace` on their inputs and use the returned module (``numpy`` or
``cupy``) for every array operation. CuPy is imported lazily, only when a CuPy array is seen or a GPU
is asked for, so importing tomoflow never touches CUDA.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from types import ModuleType
from typing import Any

import numpy as np

from tomoflow._typing import Array, ArrayLike

__all__ = [
    "get_namespace",
    "to_numpy",
    "is_cupy",
    "has_cuda",
    "asarray_on",
    "fft_module",
    "cpu_count",
    "thread_budget",
    "thread_budget_set",
    "fft_workers",
    "limit_threads",
    "torch_threads",
]

_THREADS: ContextVar[int | None] = ContextVar("tomoflow_thread_budget", default=None)


def is_cupy(array: Any) -> bool:
    """True when ``array`` is a CuPy array (checked without importing CuPy)."""
    return type(array).__module__.split(".")[0] == "cupy"


def get_namespace(*arrays: Any) -> ModuleType:
    """Return the array module (``numpy`` or ``cupy``) of the given arrays.

    Raises
    ------
    TypeError
        If NumPy and CuPy arrays are mixed.
    """
    kinds = {is_cupy(a) for a in arrays if a is not None and not np.isscalar(a)}
    if len(kinds) > 1:
        raise TypeError("tomoflow: cannot mix NumPy and CuPy arrays in one call")
    if kinds == {True}:
        import cupy

        return cupy
    return np


def fft_module(xp: ModuleType) -> ModuleType:
    """FFT module matching ``xp`` (scipy.fft on CPU for its multithreading, cupy.fft on GPU)."""
    if xp is np:
        import scipy.fft

        return scipy.fft
    return xp.fft


def to_numpy(array: ArrayLike) -> np.ndarray:
    """Copy a CuPy array to the host; NumPy arrays are returned unchanged."""
    if is_cupy(array):
        return array.get()  # type: ignore[union-attr]  # a CuPy array here
    return np.asarray(array)


def asarray_on(array: ArrayLike, xp: ModuleType, dtype: Any = None) -> Array:
    """Move ``array`` onto the device of namespace ``xp`` (host<->device copy if needed)."""
    if xp is np:
        return np.asarray(to_numpy(array), dtype=dtype)
    return xp.asarray(array, dtype=dtype)


@functools.lru_cache(maxsize=1)
def has_cuda() -> bool:
    """True when CuPy is importable and sees at least one CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - any failure means "no usable GPU"
        return False


def device_namespace(device: str) -> ModuleType:
    """The array namespace of a ``device`` setting in this process: CuPy for ``"cuda"`` (and for ``"auto"``
    where CuPy sees a GPU), NumPy otherwise.

    Raises
    ------
    ConfigError
        ``"cuda"`` where CuPy is missing or sees no GPU.
    """
    if device == "cuda" or (device == "auto" and has_cuda()):
        if not has_cuda():
            from tomoflow.errors import ConfigError

            raise ConfigError(
                "device is 'cuda' but this process has no usable CUDA device or CuPy "
                "(install tomoflow[gpu], or use --device cpu / auto)"
            )
        import cupy

        return cupy
    return np


# ----------------------------------------------------------------------------- thread budget
def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS / Windows
        return max(1, os.cpu_count() or 1)


def thread_budget() -> int:
    """Threads one kernel call may use: the budget set by :func:`limit_threads`, else every CPU.

    Every multithreaded CPU kernel honours it: numba kernels through numba's (thread-local) thread
    count, which :func:`limit_threads` sets, and FFTs through ``workers=fft_workers()``.
    """
    n = _THREADS.get()
    return cpu_count() if n is None else n


def thread_budget_set() -> int | None:
    """The budget :func:`limit_threads` set for the running code (e.g. a Dask task's), or None outside one."""
    return _THREADS.get()


def fft_workers() -> int:
    """``workers=`` for :mod:`scipy.fft` (and other threaded SciPy calls) under the thread budget."""
    return thread_budget()


@contextlib.contextmanager
def limit_threads(n: int) -> Iterator[int]:
    """Run the block with at most ``n`` threads per kernel call (numba and FFT), then restore.

    The pipeline's stage engine wraps every block task in it, with ``n`` derived from the worker's
    share of its node's CPUs, so a node running one task per worker thread is never oversubscribed.
    numba's thread count is thread-local, so concurrent tasks on one worker do not interfere.

    Parameters
    ----------
    n
        Thread budget, >= 1.
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"thread budget must be >= 1, got {n}")
    token = _THREADS.set(n)
    numba: Any = None
    try:
        import numba  # type: ignore[no-redef]  # None where numba is missing
    except ImportError:  # pragma: no cover - numba is a dependency
        pass
    previous = numba.get_num_threads() if numba is not None else None
    if numba is not None:
        numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    try:
        yield n
    finally:
        if numba is not None and previous is not None:
            numba.set_num_threads(previous)
        _THREADS.reset(token)


_TORCH_LOCK = threading.Lock()
_TORCH_STATE: dict[str, Any] = {"users": 0, "previous": None}


@contextlib.contextmanager
def torch_threads() -> Iterator[int]:
    """Run the block with torch's intra-op thread count set to :func:`thread_budget`, then restore it.

    Dask worker processes start with ``OMP_NUM_THREADS=1``, so without this a task of a 2-CPU budget
    would run its network on one thread. torch's setting is per thread in OpenMP builds (the Linux
    wheels) but process-wide in others; concurrent blocks on one worker get the same budget, so the
    first to enter sets it and the last to leave restores it, which is right in both cases.

    Yields
    ------
    int
        The thread count set.
    """
    import torch

    n = thread_budget()
    with _TORCH_LOCK:
        if _TORCH_STATE["users"] == 0:
            _TORCH_STATE["previous"] = torch.get_num_threads()
        _TORCH_STATE["users"] += 1
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
    try:
        yield n
    finally:
        with _TORCH_LOCK:
            _TORCH_STATE["users"] -= 1
            previous = _TORCH_STATE["previous"]
            if _TORCH_STATE["users"] == 0 and previous is not None and torch.get_num_threads() != previous:
                torch.set_num_threads(previous)
