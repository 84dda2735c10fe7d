"""No-op stand-in for ``nvtx`` (NVIDIA profiler ranges) used ONLY by ``benchmarks/bench_gpu.py``.

httomolibgpu's ``cupywrapper`` imports nvtx next to CuPy and silently falls back to CPU mock
classes when that import fails, so on a ``pip install --no-deps`` device without nvtx
``LPRec3d_tomobar`` would not run at all. bench_gpu.py prepends this folder to ``sys.path`` only when
``import nvtx`` fails. Ranges and marks do nothing here.
"""

from __future__ import annotations

from typing import Any

BENCH_STUB = True


class annotate:  # noqa: N801 - nvtx's name
    """``@annotate(...)`` decorator / ``with annotate(...)`` context manager that does nothing."""

    def __init__(self, message: Any = None, *args: Any, **kwargs: Any) -> None:
        self._func = message if callable(message) else None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._func is not None:  # used bare as @annotate: this is a call of the decorated function
            return self._func(*args, **kwargs)
        return args[0] if args else None  # @annotate(...): return the function unchanged

    def __enter__(self) -> "annotate":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


push_range = pop_range = start_range = end_range = mark = RangePush = RangePop = _noop  # noqa: N816


def __getattr__(name: str) -> Any:
    if name.startswith("__") and name.endswith("__"):
        raise AttributeError(name)
    return _noop
