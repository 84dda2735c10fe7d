"""How a batch tells failures apart and says them in one line: a lost worker or crashed task (retried)
from bad input, a refusal or a full disk (the same again on a retry: failed at once), and an OS error
in words (``no space left on /data/out``)."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

from tomoflow.errors import OutputLockedError, PipelineError, StoreError, TomoflowError, describe_os_error, shorten

__all__ = ["ERROR_CHARS", "exception_chain", "killed_worker", "is_deterministic", "failure_message", "write_problem"]

#: Longest error text kept in a scan's result and report (the full text and traceback are in its log).
ERROR_CHARS = 2000


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then its cause or context, and so on (each once)."""
    seen = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def killed_worker(exc: BaseException) -> BaseException | None:
    """The ``distributed.KilledWorker`` in the chain of ``exc`` (None when there is none)."""
    return next((e for e in exception_chain(exc) if type(e).__name__ == "KilledWorker"), None)


#: OS errors that a retry right away would meet again (a full disk, no permission, a read-only folder).
_LASTING_OS_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def output_locked(exc: BaseException) -> bool:
    """Did ``exc`` (or an exception behind it) find an output locked by another process?"""
    return any(isinstance(e, OutputLockedError) for e in exception_chain(exc))


def is_deterministic(exc: BaseException) -> bool:
    """Bad input, a refusal or a full disk: the same again on a retry (a task failure or lost worker is not)."""
    if isinstance(exc, OSError) and exc.errno in _LASTING_OS_ERRORS:
        return True
    if output_locked(exc):
        return False  # another process writes the output: it may end (a cancelled worker job)
    return isinstance(exc, TomoflowError) and not isinstance(exc, PipelineError)


def failure_message(exc: BaseException) -> str:
    """The reason a scan failed, on one line (at most :data:`ERROR_CHARS` characters)."""
    if isinstance(exc, OSError) and not isinstance(exc, TomoflowError) and exc.errno is not None:
        return shorten(describe_os_error(exc), ERROR_CHARS)
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, StoreError) and "--overwrite" in text:
        text += (
            " [tomoflow batch never replaces an output: move that store away to redo the scan with the "
            "manifest's inputs and parameters]"
        )
    return shorten(text if isinstance(exc, TomoflowError) else f"{type(exc).__name__}: {text}", ERROR_CHARS)


def write_problem(exc: BaseException, where: Path) -> str:
    """Why a file of the batch could not be written, in words: the OS error behind ``exc`` (also one the
    file policy's :class:`~tomoflow.errors.StoreError` wraps: ``no space left on /data/out``), else the
    error's own text (one line)."""
    for e in exception_chain(exc):
        if isinstance(e, OSError) and not isinstance(e, TomoflowError) and e.errno is not None:
            return describe_os_error(e, where)
    return shorten(str(exc) or type(exc).__name__, 300)
