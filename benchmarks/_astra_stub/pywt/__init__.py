"""Stand-in for ``PyWavelets`` used ONLY by ``benchmarks/bench_gpu.py``.

httomolibgpu imports pywt at package load (``prep/stripe.py``, for a wavelet stripe filter the
benchmark never calls). bench_gpu.py prepends this folder to ``sys.path`` only when ``import pywt``
fails; every name is a placeholder that raises ``NotImplementedError`` when used.
"""

from _bench_stub import module_getattr as _module_getattr

__version__ = "0+bench-stub"
BENCH_STUB = True

__getattr__ = _module_getattr("pywt", "PyWavelets is not installed; this is bench_gpu.py's import stub")
