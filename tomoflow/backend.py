"""Array-namespace helpers: one implementation per algorithm, NumPy on CPU, CuPy on GPU.

Kernels call :func:`get_namespace` on their inputs and use the returned module (``numpy`` or
``cupy``) for every array operation. CuPy is imported lazily, only when a CuPy array is seen or a GPU
is asked for, so importing tomoflow never touches CUDA.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["get_namespace", "to_numpy", "is_cupy", "has_cuda", "asarray_on", "fft_module"]


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


def to_numpy(array: Any) -> np.ndarray:
    """Copy a CuPy array to the host; NumPy arrays are returned unchanged."""
    if is_cupy(array):
        return array.get()
    return np.asarray(array)


def asarray_on(array: Any, xp: ModuleType, dtype: Any = None) -> Any:
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
