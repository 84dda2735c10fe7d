"""Compiled CUDA kernels of the recon package: one cache of CuPy ``RawModule`` per source and device."""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def _module(source: str, device_id: int) -> Any:
    import cupy

    with cupy.cuda.Device(device_id):
        return cupy.RawModule(code=source, options=("--std=c++14",))


def cuda_kernel(source: str, name: str) -> Any:
    """Kernel ``name`` of CUDA C ``source``, compiled once per device (the current one)."""
    import cupy

    return _module(source, cupy.cuda.Device().id).get_function(name)
