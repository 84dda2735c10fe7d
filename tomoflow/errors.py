"""Exceptions raised by tomoflow.

Every error caused by bad input names the file, the dataset inside it (where there is one) and what
is wrong, so that a facility data engineer can act on it without reading a traceback.
"""

from __future__ import annotations

import errno as _errno
import os as _os
from collections.abc import Iterable
from os import PathLike
from typing import Any

__all__ = [
    "TomoflowError",
    "InputError",
    "ModelError",
    "StoreError",
    "OutputLockedError",
    "ConfigError",
    "PipelineError",
    "RegistrationError",
    "summarise",
    "shorten",
    "describe_os_error",
]


class TomoflowError(Exception):
    """Base class of all tomoflow errors."""


class InputError(TomoflowError, ValueError):
    """Bad input data: missing dataset, wrong shape, NaN, empty or truncated file.

    Parameters
    ----------
    problem
        What is wrong, in words.
    path
        The file (or store) the problem was found in, if any.
    dataset
        The dataset / stream / variable inside the file, if any.
    """

    def __init__(
        self,
        problem: str,
        path: str | PathLike | None = None,
        dataset: str | None = None,
    ) -> None:
        self.problem = problem
        self.path = None if path is None else str(path)
        self.dataset = dataset
        where = ""
        if self.path is not None:
            where = self.path
            if dataset:
                where += f" [{dataset}]"
            where += ": "
        elif dataset:
            where = f"[{dataset}]: "
        super().__init__(where + problem)


class ModelError(InputError):
    """A model file (weights, ONNX export, training checkpoint) that may not be loaded: no model card beside
    it, a card that names another file, or bytes whose sha256 is not the card's (the file changed after
    training). Same parameters as :class:`InputError` (``path`` is the model file or its card)."""


class StoreError(TomoflowError):
    """A zarr store is missing, incomplete or does not follow the tomoflow layout."""


class OutputLockedError(StoreError):
    """Another process holds the lock of an output (:mod:`tomoflow.io.lock`). It may finish or stop (a
    worker whose job was cancelled), so a batch retries the scan after a pause instead of failing it."""


class ConfigError(TomoflowError, ValueError):
    """A parameter is out of range or a configuration file is invalid."""


class PipelineError(TomoflowError):
    """A pipeline task failed: names the store, the stage and the block, and says how to go on."""


class RegistrationError(TomoflowError):
    """A registration result is implausible (scale, rotation) or did not improve on the prior
    (:func:`tomoflow.register.register`)."""


# ----------------------------------------------------------------------------- message helpers
def summarise(items: Iterable[Any], first: int = 5, *, sep: str = ", ", last: str = " and ") -> str:
    """A list that could be huge, as its first few items and a count of the rest.

    >>> summarise(["a", "b"])
    'a and b'
    >>> summarise(f"f{i}.h5" for i in range(20000))
    'f0.h5, f1.h5, f2.h5, f3.h5, f4.h5 and 19,995 more'
    >>> summarise(["x: gone", "y: gone", "z: gone"], first=2, sep="; ", last="; and ")
    'x: gone; y: gone; and 1 more'
    """
    shown: list[str] = []
    rest = 0
    for item in items:
        if len(shown) < first:
            shown.append(str(item))
        else:
            rest += 1
    if rest:
        return sep.join(shown) + f"{last}{rest:,} more"
    if len(shown) < 2:
        return "".join(shown)
    return sep.join(shown[:-1]) + last + shown[-1]


def shorten(text: Any, limit: int = 300) -> str:
    """``text`` on one line (its non-blank lines joined with ``; ``), cut to ``limit`` characters.

    >>> shorten("first\\n  second\\n", 40)
    'first; second'
    >>> shorten("x" * 50, 20)
    'xxxxxxxxxxxxxxxxx...'
    """
    one = "; ".join(line.strip() for line in str(text).splitlines() if line.strip())
    return one if len(one) <= limit else one[: max(0, limit - 3)] + "..."


_OS_PHRASES = {
    _errno.ENOSPC: "no space left on {path}",
    _errno.EDQUOT: "disk quota exceeded on {path}",
    _errno.EROFS: "{path} is on a read-only file system",
    _errno.EACCES: "permission denied: {path}",
    _errno.EPERM: "operation not permitted: {path}",
    _errno.ENOENT: "no such file or folder: {path}",
    _errno.EIO: "input/output error on {path} (a failing disk or network file system?)",
}


def describe_os_error(exc: OSError, path: str | PathLike | None = None) -> str:
    """What an OS error means for ``path`` (default: the file the error names), in a few words.

    >>> describe_os_error(OSError(28, "No space left on device"), "/data/out")
    'no space left on /data/out'
    >>> describe_os_error(PermissionError(13, "Permission denied", "/x/y.zarr"))
    'permission denied: /x/y.zarr'
    """
    where = path if path is not None else (exc.filename if exc.filename is not None else None)
    code = exc.errno if isinstance(exc.errno, int) else None
    if code in _OS_PHRASES:
        return _OS_PHRASES[code].format(path=where if where is not None else "the device")
    reason = _os.strerror(code) if code else (exc.strerror or str(exc) or type(exc).__name__)
    return f"{where}: {reason}" if where is not None else reason
