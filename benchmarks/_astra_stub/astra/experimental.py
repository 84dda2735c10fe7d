"""Stub of ``astra.experimental`` (see the package docstring): the direct GPU projector entry points."""

from _bench_stub import module_getattr as _module_getattr

_WHY = "astra-toolbox is not installed; this is bench_gpu.py's import stub (benchmarks/_astra_stub)"


def direct_FP3D(*args, **kwargs):  # noqa: N802 - astra's name
    """Would forward-project with astra's CUDA code; not available in the stub."""
    raise NotImplementedError(f"astra.experimental.direct_FP3D: {_WHY}")


def direct_BP3D(*args, **kwargs):  # noqa: N802 - astra's name
    """Would backproject with astra's CUDA code; not available in the stub."""
    raise NotImplementedError(f"astra.experimental.direct_BP3D: {_WHY}")


__getattr__ = _module_getattr("astra.experimental", _WHY)
