"""Stand-in for ``astra-toolbox`` used ONLY by ``benchmarks/bench_gpu.py`` (never by tomoflow).

tomobar (and so httomolibgpu) imports astra at module load (``from astra.experimental import
direct_BP3D, direct_FP3D``, ``from astra.pythonutils import GPULink``, ``import astra``) even for its
log-polar Fourier method ``LPRec3d_tomobar``, which never calls astra. bench_gpu.py puts this folder
at the front of ``sys.path`` only when ``import astra`` fails, so that import succeeds; anything that
would really need astra (FBP3d_tomobar, the iterative methods) raises ``NotImplementedError``.

Unknown names resolve to placeholders (module-level ``__getattr__``) so that other import-time
references do not fail either; using one raises ``NotImplementedError``.
"""

from _bench_stub import module_getattr as _module_getattr

from astra import experimental, pythonutils  # real astra exposes these submodules

__version__ = "0+bench-stub"
BENCH_STUB = True
__all__ = ["experimental", "pythonutils", "BENCH_STUB"]
_WHY = "astra-toolbox is not installed; this is bench_gpu.py's import stub (benchmarks/_astra_stub)"

__getattr__ = _module_getattr("astra", _WHY)
