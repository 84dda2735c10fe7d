"""Shared helpers of the benchmark stubs in this folder (see README.md here).

``stub(name, why)`` returns a placeholder *class*: it can be subclassed and its attributes looked up
(each again a placeholder), so module-level code that merely names things imports; creating or calling
one raises :class:`NotImplementedError` naming what was called and why it is missing.
"""

from __future__ import annotations

from typing import Any


class _StubMeta(type):
    """Metaclass of the placeholders: any attribute is another placeholder; calling one raises."""

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return stub(f"{cls._stub_name}.{name}", cls._stub_why)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{cls._stub_name}: {cls._stub_why}")

    def __repr__(cls) -> str:
        return f"<benchmark stub {cls._stub_name}>"


def stub(name: str, why: str) -> Any:
    """A placeholder class called ``name`` (see module docstring)."""
    return _StubMeta(name.rsplit(".", 1)[-1], (), {"_stub_name": name, "_stub_why": why})


def module_getattr(module: str, why: str):
    """A module-level ``__getattr__`` returning placeholders for every unknown public name."""

    def __getattr__(name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        return stub(f"{module}.{name}", why)

    return __getattr__
