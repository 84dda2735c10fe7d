"""One runner per output: lock files that say who is writing an output, and refuse a second writer.

Two runs writing one output at once lose work or data: both recompute everything, and one may delete
what the other just created (a store found without its stage record looks like an interrupted
creation, and is replaced). So every run that is about to *write* an output first takes its lock:

* :func:`output_lock` — the context manager: an exclusive lock file, created atomically
  (``os.open(O_CREAT | O_EXCL)``, which also works on NFS v3+), holding JSON ``{host, pid, started,
  command, ...}``; removed on exit, also on an exception or Ctrl-C. A second runner is refused with a
  :class:`~tomoflow.errors.StoreError` naming the holder: ``<output> is being written by PID 1234 on
  host h since 2026-12-06 03:40 UTC (tomoflow batch run m.yaml); wait for it or stop it``.
* A **stale** lock — its holder ran on this host and that process is gone (``os.kill(pid, 0)``; a
  PID reused by another process is told apart by its start time) — is taken over, with a warning
  naming the dead holder. A lock written on *another* host is never taken over automatically: this
  host cannot tell whether that process still runs; the refusal says which file to delete once it
  has stopped.
* :func:`claim_output` — how the stages use it: plan the output (writing nothing); a plan with
  nothing to write (``complete``) takes no lock; otherwise take the lock, then **plan again under
  it** (another runner may have created, finished or replaced the output meanwhile) and keep the
  lock until the stage function returns (:func:`writes_outputs`, :func:`output_lock_scope`).

Where the lock file lives
-------------------------
* **An output root of a batch** (a folder tomoflow owns, holding one folder per scan):
  ``<root>/.tomoflow.lock`` (:func:`lock_file` with ``root=True``). Scan names start with a letter or
  digit, so no scan folder is ever called that.
* **A single store**: *beside* it, ``<parent>/<store name>.lock`` (e.g. ``volume.zarr.lock``), not
  inside it, because

  - the lock must exist *before* the store does: the creation of the store is itself what two
    runners race for;
  - replacing a store (``--overwrite``, or a store interrupted during its creation) deletes the
    store's folder, which would delete a lock kept inside it while it is held;
  - what decides resume and completion reads the store's folder: :func:`~tomoflow.io.output.
    prepare_output` creates into an *empty* folder only and refuses any other folder that is not a
    store, and :func:`~tomoflow.io.stages.store_kind` / :func:`~tomoflow.io.stages.store_identity`
    read its files. A lock beside the store changes none of them, so a resumed or complete store looks
    exactly as its stage left it.

  The lock exists only while a stage writes: it is created after the stage's output plan was
  validated, and only when there is something to write.

Nothing here prints: refusals are errors, a take-over is a logged warning.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import logging
import os
import shlex
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tomoflow.errors import OutputLockedError, StoreError, describe_os_error

__all__ = [
    "LOCK_NAME",
    "LockHolder",
    "lock_file",
    "output_lock",
    "check_unlocked",
    "claim_output",
    "output_lock_scope",
    "writes_outputs",
    "recorded_plans",
]

log = logging.getLogger(__name__)

#: Name of the lock file of an output root (inside the root).
LOCK_NAME = ".tomoflow.lock"
#: Suffix of the lock file of a single store (beside the store).
STORE_LOCK_SUFFIX = ".lock"
_FORMAT = 1
#: A lock file younger than this that cannot be parsed is being written right now: wait for it.
_YOUNG_S = 2.0
#: A take-over guard older than this was left by a crash during a take-over: remove it.
_GUARD_STALE_S = 30.0

T = TypeVar("T")


# ----------------------------------------------------------------------------- who holds a lock
@dataclass(frozen=True)
class LockHolder:
    """What a lock file says about the run that holds it."""

    path: Path
    host: str
    pid: int
    started: str
    command: str
    what: str = "output"
    pid_start: int | None = None
    token: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def since(self) -> str:
        """``started`` as ``2026-12-06 03:40 UTC``."""
        try:
            t = _dt.datetime.fromisoformat(self.started).astimezone(_dt.UTC)
        except (TypeError, ValueError):
            return str(self.started)
        return t.strftime("%Y-%m-%d %H:%M UTC")

    @property
    def here(self) -> bool:
        """The holder ran on this host."""
        return self.host == _host()

    def alive(self) -> bool | None:
        """True: the holder still runs; False: it is gone (stale lock); None: another host (unknown)."""
        if not self.here:
            return None
        return _pid_alive(self.pid, self.pid_start)

    def describe(self) -> str:
        """``PID 1234 on host h since 2026-12-06 03:40 UTC (tomoflow batch run m.yaml)``."""
        return f"PID {self.pid} on host {self.host} since {self.since} ({self.command or 'command unknown'})"


def _host() -> str:
    return socket.gethostname() or "unknown-host"


def _proc_start(pid: int) -> int | None:
    """Start time of process ``pid`` (clock ticks since boot, Linux ``/proc``), or None where unknown."""
    try:
        with open(f"/proc/{int(pid)}/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
        return int(text[text.rindex(")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _pid_alive(pid: int, start: int | None) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        pass
    except OSError:
        return True  # cannot tell: assume it runs (never take over a live lock)
    if start is not None:
        now = _proc_start(pid)
        if now is not None and now != start:
            return False  # the PID was reused by another process
    return True


def _command() -> str:
    """The command line of this process, as a user would type it (``tomoflow batch run m.yaml``)."""
    argv = [str(a) for a in sys.argv] or ["python"]
    head = argv[0].replace(os.sep, "/")
    if Path(head).name in ("tomoflow", "tomoflow.exe") or head.endswith("tomoflow/cli/__main__.py"):
        argv[0] = "tomoflow"
    else:
        argv[0] = Path(head).name or "python"
    text = " ".join(shlex.quote(a) for a in argv)
    return text if len(text) <= 200 else text[:197] + "..."


def lock_file(path: str | os.PathLike, *, root: bool = False) -> Path:
    """The lock file of an output: ``<path>/.tomoflow.lock`` for an output root (``root=True``), else
    ``<parent>/<name>.lock`` beside the store (module docstring says why). Symbolic links are resolved
    first, so two runs that reach one output through different paths share its lock."""
    p = Path(os.path.realpath(os.fspath(path)))
    return p / LOCK_NAME if root else p.with_name(p.name + STORE_LOCK_SUFFIX)


class _Unparsable:
    """A lock file that is not (yet) a tomoflow lock."""


_MISSING = object()


def _read(lock: Path) -> LockHolder | _Unparsable | object:
    """The holder of ``lock``; :data:`_MISSING` when the file is gone; an :class:`_Unparsable` when it
    is not a tomoflow lock (or is being written)."""
    try:
        with open(lock, "rb") as f:
            data = f.read(65536)
    except FileNotFoundError:
        return _MISSING
    except IsADirectoryError:
        return _Unparsable()
    except OSError as exc:
        raise StoreError(f"{lock}: cannot read the lock file ({describe_os_error(exc, lock)})") from None
    try:
        doc = json.loads(data.decode("utf-8"))
        if not isinstance(doc, dict) or doc.get("tomoflow_lock") != _FORMAT:
            return _Unparsable()
        start = doc.get("pid_start")
        return LockHolder(
            path=lock,
            host=str(doc["host"]),
            pid=int(doc["pid"]),
            started=str(doc.get("started", "")),
            command=str(doc.get("command", "")),
            what=str(doc.get("what", "output")),
            pid_start=int(start) if isinstance(start, int) else None,
            token=str(doc.get("token", "")),
            raw=doc,
        )
    except (ValueError, KeyError, TypeError):
        return _Unparsable()


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _refusal(output: Path, holder: LockHolder) -> StoreError:
    if holder.here:
        return OutputLockedError(f"{output} is being written by {holder.describe()}; wait for it or stop it")
    return OutputLockedError(
        f"{output} is being written by {holder.describe()}; this host ({_host()}) cannot tell "
        f"whether that process still runs: wait for it, or, once it has stopped, delete {holder.path}"
    )


def check_unlocked(path: str | os.PathLike, *, root: bool = False) -> LockHolder | None:
    """Refuse, writing nothing, when another run holds the lock of ``path`` (as :func:`output_lock`
    would); return the holder of a stale lock (which :func:`output_lock` will take over), else None.

    Raises
    ------
    StoreError
        The lock is held by a running process on this host or by any process on another host, or the
        lock file is not a tomoflow lock.
    """
    output = Path(path)
    lock = lock_file(output, root=root)
    holder = _read(lock)
    if holder is _MISSING:
        return None
    if isinstance(holder, _Unparsable):
        if _age(lock) < _YOUNG_S:
            return None  # being written by a runner starting now: output_lock will see it
        raise _not_a_lock(output, lock)
    assert isinstance(holder, LockHolder)
    if holder.alive() is False:
        return holder
    raise _refusal(output, holder)


def _not_a_lock(output: Path, lock: Path) -> StoreError:
    return StoreError(
        f"{lock}: exists and is not a tomoflow lock file (or is damaged); if no tomoflow run is "
        f"writing {output}, delete it"
    )


def _take_over(lock: Path, holder: LockHolder) -> bool:
    """Remove the stale lock ``lock`` if it still is ``holder``'s; True when removed (by us)."""
    guard = lock.with_name(lock.name + ".takeover")
    try:
        os.close(os.open(guard, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        if _age(guard) > _GUARD_STALE_S:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(guard)
        else:
            time.sleep(0.05)
        return False
    except OSError as exc:
        raise StoreError(f"{lock}: cannot take over the stale lock ({describe_os_error(exc, lock.parent)})") from None
    try:
        again = _read(lock)
        if isinstance(again, LockHolder) and again.token == holder.token and again.pid == holder.pid:
            os.unlink(lock)
            return True
        return False
    finally:
        with contextlib.suppress(OSError):
            os.unlink(guard)


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; return the folders created (deepest last)."""
    missing = []
    p = folder
    while not os.path.lexists(p) and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            pass
    return list(reversed(missing))


def _remove_empty(folders: list[Path]) -> None:
    for d in reversed(folders):
        try:
            d.rmdir()
        except OSError:
            break


class _Held:
    """A lock this process holds."""

    def __init__(self, lock: Path, output: Path, token: str, created: list[Path]) -> None:
        self.lock, self.output, self.token, self.created = lock, output, token, created
        self.released = False

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        holder = _read(self.lock)
        try:
            if isinstance(holder, LockHolder) and holder.token == self.token:
                os.unlink(self.lock)
            elif holder is _MISSING:
                log.warning("the lock %s of %s was removed while this run held it", self.lock, self.output)
            else:
                log.warning(
                    "the lock %s of %s is no longer this run's (deleted and taken by another run?); left in place",
                    self.lock,
                    self.output,
                )
        except OSError as exc:
            log.warning("cannot remove the lock %s: %s", self.lock, describe_os_error(exc, self.lock))
        _remove_empty(self.created)


def _acquire(output: Path, lock: Path, what: str, command: str | None) -> _Held:
    created = _make_parents_or_fail(output, lock)
    token = uuid.uuid4().hex
    try:
        for _ in range(200):
            try:
                fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = _read(lock)
                if holder is _MISSING:
                    continue
                if isinstance(holder, _Unparsable):
                    if _age(lock) < _YOUNG_S:
                        time.sleep(0.05)
                        continue
                    raise _not_a_lock(output, lock)  # noqa: B904  (the refusal is the error, not the race)
                assert isinstance(holder, LockHolder)
                alive = holder.alive()
                if alive is not False:
                    raise _refusal(output, holder)  # noqa: B904  (the refusal is the error, not the race)
                if _take_over(lock, holder):
                    log.warning(
                        "%s: taking over the stale lock %s of %s, which no longer runs", output, lock, holder.describe()
                    )
                continue
            except OSError as exc:
                raise StoreError(
                    f"{output}: cannot create its lock file {lock} ({describe_os_error(exc, lock.parent)})"
                ) from None
            doc = {
                "tomoflow_lock": _FORMAT,
                "what": what,
                "output": str(output),
                "host": _host(),
                "pid": os.getpid(),
                "pid_start": _proc_start(os.getpid()),
                "started": _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat(),
                "command": command if command is not None else _command(),
                "token": token,
            }
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(json.dumps(doc) + "\n")
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.unlink(lock)
                raise StoreError(
                    f"{output}: cannot write its lock file {lock} ({describe_os_error(exc, lock.parent)})"
                ) from None
            return _Held(lock, output, token, created)
        raise StoreError(f"{output}: its lock {lock} keeps changing hands; try again")
    except BaseException:
        _remove_empty(created)
        raise


def _make_parents_or_fail(output: Path, lock: Path) -> list[Path]:
    try:
        return _make_parents(lock.parent)
    except OSError as exc:
        raise StoreError(
            f"{output}: cannot create the folder {exc.filename or lock.parent} "
            f"({describe_os_error(exc, exc.filename or lock.parent)})"
        ) from None


@contextlib.contextmanager
def output_lock(
    path: str | os.PathLike, *, what: str = "output", root: bool = False, command: str | None = None
) -> Iterator[Path]:
    """Hold the lock of the output ``path`` for the duration of the block (module docstring).

    Parameters
    ----------
    path
        The output: a store (lock beside it) or, with ``root=True``, an output root folder (lock inside).
        Missing parent folders of the lock file are created (and removed again when left empty).
    what
        What the output is, recorded in the lock (``"batch output root"``, ``"recon output"``).
    root
        ``path`` is an output root that tomoflow owns: the lock is ``<path>/.tomoflow.lock``.
    command
        The command recorded for a refused runner to see; default this process's command line.

    Yields
    ------
    Path
        The lock file.

    Raises
    ------
    StoreError
        Another run holds the lock (who, where, since when, which command); the lock file cannot be
        created (read-only folder, full disk: said in words); a file of that name that is not a lock.
    """
    output = Path(path)
    lock = lock_file(output, root=root)
    held = _acquire(output, lock, what, command)
    try:
        yield lock
    finally:
        held.release()


# ----------------------------------------------------------------------------- stages: claim, scope
class _Scope:
    def __init__(self) -> None:
        self.stack = contextlib.ExitStack()
        self.held: dict[Path, _Held] = {}


_SCOPE: ContextVar[_Scope | None] = ContextVar("tomoflow_output_lock_scope", default=None)
_PLANS: ContextVar[list[tuple[Path, str]] | None] = ContextVar("tomoflow_recorded_plans", default=None)


@contextlib.contextmanager
def output_lock_scope() -> Iterator[None]:
    """Locks taken by :func:`claim_output` inside the block are held until it ends (also on errors)."""
    scope = _Scope()
    token = _SCOPE.set(scope)
    try:
        with scope.stack:
            yield
    finally:
        _SCOPE.reset(token)


def writes_outputs(fn: Callable[..., T]) -> Callable[..., T]:
    """Decorator of a stage function: the outputs it claims (:func:`claim_output`, the stage engine's
    ``prepare_output``) stay locked until it returns or raises."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        with output_lock_scope():
            return fn(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def recorded_plans() -> Iterator[list[tuple[Path, str]]]:
    """Collect ``(output, action)`` of every :func:`claim_output` in the block (this thread): lets a
    caller tell an output that was already complete (nothing written) from one written now."""
    plans: list[tuple[Path, str]] = []
    token = _PLANS.set(plans)
    try:
        yield plans
    finally:
        _PLANS.reset(token)


def _note(path: Path, action: str) -> None:
    plans = _PLANS.get()
    if plans is not None:
        plans.append((Path(os.path.abspath(path)), action))


def claim_output(plan: Callable[[], T], path: str | os.PathLike, *, what: str = "output") -> T:
    """Plan an output and, when there is something to write, lock it for the current stage.

    ``plan()`` decides, writing nothing (e.g. :func:`tomoflow.io.output.prepare_output`); it returns an
    object with an ``action``. ``"complete"``: returned at once, no lock. Otherwise the lock of ``path``
    is taken (:func:`output_lock`) and ``plan()`` is asked again under it (another runner may have
    created, finished or replaced the output meanwhile); the lock is then held until the enclosing
    :func:`output_lock_scope` / :func:`writes_outputs` function ends (released at once when the second
    plan is ``complete``). Outside any scope no lock is taken (logged at debug level).

    Raises
    ------
    StoreError
        Another run is writing ``path`` (see :func:`output_lock`), or ``plan()`` refuses.
    """
    first = plan()
    if getattr(first, "action", None) == "complete":
        _note(Path(path), "complete")
        return first
    scope = _SCOPE.get()
    output = Path(path)
    if scope is None:
        log.debug("%s: planned outside a lock scope; written without a lock", output)
        _note(output, str(getattr(first, "action", "")))
        return first
    lock = lock_file(output)
    if lock in scope.held:  # claimed twice by one stage: the lock is ours already
        _note(output, str(getattr(first, "action", "")))
        return first
    held = _acquire(output, lock, what, None)
    try:
        again = plan()
    except BaseException:
        held.release()
        raise
    action = str(getattr(again, "action", ""))
    if action == "complete":
        held.release()
    else:
        scope.held[lock] = held
        scope.stack.callback(held.release)
    _note(output, action)
    return again
