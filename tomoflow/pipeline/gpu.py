"""The GPU side of the slab conveyor: bounded device sections, one CUDA stream per thread, pinned copies.

A GPU worker runs several block tasks at once (its threads; ``resources={"GPU": n}`` on a dask-cuda
worker, or the local thread pool). Each task is *read -> compute -> write*: the read (zarr, decompress)
and the write (compress, zarr) are CPU work, the compute is GPU work. Only the compute holds the GPU:
it runs inside :func:`gpu_section`, which admits at most ``slots`` tasks per process (default 2), each
on its own non-blocking CUDA stream, so while slab k computes, slab k+1 is being read and slab k-1
written by other threads, and two computing slabs overlap one's copies with the other's kernels.
Device memory per worker is therefore bounded by ``slots x`` the device bytes of one sub-slab
(:func:`device_rows`), whatever the volume size. Results come back through page-locked (pinned) host
buffers (:func:`to_host`), the fast path for device-to-host copies.

Nothing here runs on the CPU path: callers use it only when their array namespace is CuPy, or their
torch device CUDA (:func:`torch_gpu_section`: the recovery's network passes share the same slots).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = [
    "gpu_section",
    "torch_gpu_section",
    "set_gpu_slots",
    "gpu_slots",
    "device_rows",
    "to_host",
    "GPU_SLOTS",
    "CONVEYOR_TASKS",
]

GPU_SLOTS = 2
"""Default number of tasks per process computing on the GPU at once."""

CONVEYOR_TASKS = 4
"""Block tasks per GPU worker at once (each asks for ``1 / CONVEYOR_TASKS`` of its ``GPU`` resource): they
read and write on the CPU, at most :func:`gpu_slots` compute."""

_lock = threading.Lock()
_state: dict[str, Any] = {"slots": GPU_SLOTS, "sem": None}
_local = threading.local()


def set_gpu_slots(n: int) -> None:
    """Set how many tasks of this process may compute on the GPU at once (>= 1)."""
    n = int(n)
    if n < 1:
        raise ValueError(f"GPU slots must be >= 1, got {n}")
    with _lock:
        _state["slots"], _state["sem"] = n, None


def gpu_slots() -> int:
    """Tasks of this process that may compute on the GPU at once."""
    return int(_state["slots"])


def _semaphore() -> threading.Semaphore:
    with _lock:
        if _state["sem"] is None:
            _state["sem"] = threading.BoundedSemaphore(_state["slots"])
        return _state["sem"]


def _stream() -> Any:
    import cupy

    s = getattr(_local, "stream", None)
    if s is None or getattr(_local, "device", None) != cupy.cuda.Device().id:
        s = cupy.cuda.Stream(non_blocking=True)
        _local.stream, _local.device = s, cupy.cuda.Device().id
    return s


@contextlib.contextmanager
def gpu_section() -> Iterator[Any]:
    """Hold one of the process's GPU slots, with this thread's own CUDA stream current.

    Yields the stream. On exit the stream is synchronised (the results are complete) before the slot
    is released; the CuPy memory pool keeps the blocks for the next section.
    """
    sem = _semaphore()
    sem.acquire()
    try:
        stream = _stream()
        with stream:
            yield stream
        stream.synchronize()
    finally:
        sem.release()


@contextlib.contextmanager
def torch_gpu_section(dev: Any) -> Iterator[Any]:
    """:func:`gpu_section` for torch work on the CUDA device ``dev``: one of the process's GPU slots (the
    same slots as CuPy's), with this thread's own torch CUDA stream current.

    The stream first waits for the device's default stream (where the network's weights were copied),
    and is synchronised on exit (outputs copied to the host are complete) before the slot is released.
    Yields the stream.
    """
    import torch

    if dev.index is None:  # "cuda": the current device, as a stream names it
        dev = torch.device("cuda", torch.cuda.current_device())
    sem = _semaphore()
    sem.acquire()
    try:
        s = getattr(_local, "torch_stream", None)
        if s is None or s.device != dev:
            s = torch.cuda.Stream(device=dev)
            _local.torch_stream = s
        s.wait_stream(torch.cuda.default_stream(dev))
        with torch.cuda.stream(s):
            yield s
        s.synchronize()
    finally:
        sem.release()


def device_rows(bytes_per_row: int, rows: int, *, fraction: float = 0.6) -> int:
    """Rows per sub-slab so that every slot's sub-slab fits in ``fraction`` of the free device memory.

    Parameters
    ----------
    bytes_per_row
        Peak device bytes per detector row of the computation (an estimate, e.g. from
        :func:`tomoflow.pipeline.reconstruct.slab_bytes`).
    rows
        Rows of the whole block.
    fraction
        Share of the device's free memory (plus what CuPy's pool holds already) the slots may use.
    """
    import cupy

    free, _total = cupy.cuda.runtime.memGetInfo()
    pool = cupy.get_default_memory_pool()
    avail = (free + pool.free_bytes()) * fraction / gpu_slots()
    return int(max(1, min(rows, avail // max(1, bytes_per_row))))


def to_host(array: Any, out: np.ndarray | None = None) -> np.ndarray:
    """Copy a CuPy array into ``out`` (or a new array) through a pinned staging buffer on this
    thread's stream; returns the host array (valid at return)."""
    import cupy
    import cupyx

    stream = cupy.cuda.get_current_stream()
    pinned = cupyx.empty_pinned(array.shape, dtype=array.dtype)
    array.get(stream=stream, out=pinned)
    stream.synchronize()
    if out is None:
        return np.array(pinned, copy=True)
    out[...] = pinned
    return out
