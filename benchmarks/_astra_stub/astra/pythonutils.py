"""Stub of ``astra.pythonutils`` (see the package docstring)."""

from _bench_stub import module_getattr as _module_getattr

_WHY = "astra-toolbox is not installed; this is bench_gpu.py's import stub (benchmarks/_astra_stub)"


class GPULink:
    """Plain record of a GPU buffer (pointer, sizes, pitch), as astra's; nothing uses it in the stub."""

    def __init__(self, ptr: int = 0, x: int = 0, y: int = 0, z: int = 0, pitch: int = 0) -> None:
        self.ptr, self.x, self.y, self.z, self.pitch = ptr, x, y, z, pitch

    def __repr__(self) -> str:
        return f"GPULink(ptr={self.ptr}, x={self.x}, y={self.y}, z={self.z}, pitch={self.pitch})"


__getattr__ = _module_getattr("astra.pythonutils", _WHY)
