"""The ``tomoflow`` command line's shared machinery: the typer app, output that never parses user text
as markup, one-line errors, option parsing, progress bars and the cluster context.

An ordinary mistake (bad input, a parameter out of range, an unwritable folder) is shown as one line
on stderr with exit code 2, never a traceback, and is found before anything is written. Everything a
user typed or a file held (paths, error messages, metadata) is printed as plain text: Rich markup in
it (``scan [b].zarr``, ``tomoflow[gpu]``) is escaped, never interpreted.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.style import Style
from rich.table import Table
from rich.text import Text

from tomoflow.errors import ConfigError, TomoflowError


class _OneLineUsage(typer.Typer):
    """The app, whose command-line mistakes (an unknown option, a missing argument, a value of the wrong
    type) are one ``error:`` line on stderr with exit code 2 like every other mistake, not click's
    boxed usage panel."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import sys

        from typer.main import get_command

        try:  # typer vendors its own click (0.20+); older typer uses click itself
            from typer import _click as click
        except ImportError:  # pragma: no cover - depends on the typer version
            import click  # type: ignore[no-redef]  # the same module under older typer

        usage_error = click.exceptions.UsageError
        click_error = getattr(click.exceptions, "ClickException", usage_error)
        try:
            kwargs.setdefault("prog_name", "tomoflow")  # also under `python -m tomoflow.cli`
            rv = get_command(self).main(*args, standalone_mode=False, **kwargs)  # type: ignore[misc]  # callers never pass standalone_mode
        except usage_error as exc:
            message = _one_line(exc.format_message())
            if message:  # (no arguments at all: the help was shown, nothing to add)
                where = exc.ctx.command_path if exc.ctx is not None else "tomoflow"
                err_console.print(Text.assemble(("error: ", "bold red"), f"{message} (see '{where} --help')"))
            sys.exit(2)
        except click_error as exc:
            err_console.print(Text.assemble(("error: ", "bold red"), _one_line(exc.format_message())))
            sys.exit(exc.exit_code)
        except (KeyboardInterrupt, typer.Abort):
            err_console.print(Text.assemble(("error: ", "bold red"), "interrupted; rerun the same command to resume"))
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)


app = _OneLineUsage(
    name="tomoflow",
    help="Nano-tomography at facility scale: ingest raw scans into zarr stores, find the rotation "
    "centre, reconstruct volumes on a Dask cluster. Start with `tomoflow demo`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# soft_wrap: a long path is printed on one line (not cut at 80 columns when output is not a terminal).
console = Console(stderr=False, soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True, highlight=False)

#: Most trial centres ``tomoflow center --try`` reconstructs (one slice and one PNG each).
MAX_TRIAL_CENTERS = 401


def _e(value: Any) -> str:
    """``value`` as text safe to embed in Rich markup (``[...]`` printed as typed).

    >>> print(_e("scan [b].zarr"))
    scan \\[b].zarr
    """
    return escape(str(value))


def _one_line(text: str) -> str:
    """A message on one line: its non-blank lines joined with ``; ``."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return "; ".join(lines)


def _os_reason(exc: OSError) -> str:
    """What the system said, briefly (``Permission denied``), also for h5py's and zarr's wordy errors."""
    if isinstance(exc.errno, int) and exc.errno > 0:
        return os.strerror(exc.errno)
    return exc.strerror or str(exc) or type(exc).__name__


def _os_error_message(exc: OSError) -> str:
    """One line naming the path(s) of an OS error and what the system said."""
    what = _os_reason(exc)
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    if paths:
        return f"{' -> '.join(paths)}: {what}"
    return str(exc) or type(exc).__name__


#: What the stages planned for each output in the last :func:`_writing` block (absolute path -> ``create``,
#: ``resume``, ``replace`` or ``complete``: :func:`tomoflow.io.lock.recorded_plans`).
_PLANNED: dict[Path, str] = {}


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Report an OS error that names no file (h5py, zarr, a Dask worker) against ``path``, the output
    being written, so the one-line message says where; remember what the stages planned for their
    outputs (:func:`_wrote` tells an output that was already complete)."""
    from tomoflow.io.lock import recorded_plans

    with recorded_plans() as plans:
        try:
            yield
        except OSError as exc:
            if exc.filename is not None:
                raise
            raise OSError(exc.errno, _os_reason(exc), str(path)) from None
        finally:
            _PLANNED.update(plans)


def _wrote(path: Path, details: str = "") -> None:
    """``wrote PATH details``; or, when the stage found ``PATH`` complete for the same inputs and
    parameters in the last :func:`_writing` block, say so: nothing was written (no stale timings)."""
    if _PLANNED.get(Path(os.path.abspath(path))) == "complete":
        console.print(f"[bold]{_e(path)}[/] was already complete for these inputs and parameters: nothing written")
    else:
        sep = "" if details.startswith((":", ",", ";")) else " "
        console.print(f"wrote [bold]{_e(path)}[/]" + (f"{sep}{details}" if details else ""))


def _check_can_create(path: Path) -> None:
    """Refuse up front an output (file or folder) that cannot be created or written, before long work.

    Only a preflight: a folder the system refuses anyway (``/sys``, root on a read-only mount) is still
    reported when the write fails (see :func:`_writing`).
    """
    path = Path(path)
    parent = path.absolute() if path.is_dir() else path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{path}: cannot be created: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{path}: cannot be created: the folder {parent} is not writable")


def _plan_picture(
    png: Path | None,
    *,
    command: str,
    sources: dict[str, Path],
    params: dict[str, Any],
    overwrite: bool,
    outputs: tuple[Path, ...] = (),
) -> Any:
    """The file plan of a ``--png`` option, made before any work (None without one).

    The picture's fingerprint is the command's inputs (by identity) and parameters, so a rerun of the
    same command keeps the picture it wrote; the PNG may be none of the inputs or outputs.
    """
    if png is None:
        return None
    from tomoflow.errors import StoreError
    from tomoflow.io.output import fingerprint, identity_of, plan_file, resolved_path

    real = resolved_path(png)
    for o in outputs:  # the command's own outputs (stores it is about to write)
        r = resolved_path(o)
        if real == r or r in real.parents:
            raise StoreError(
                f"{png}: {'is' if real == r else 'lies inside'} {o}, an output of this command; "
                "choose a path outside it"
            )
    fp = fingerprint(f"{command}-png", inputs={k: identity_of(v) for k, v in sources.items()}, params=params)
    return plan_file(
        png, kind="picture", option="--png", fingerprint=fp, overwrite=overwrite, inputs=list(sources.values())
    )


def _fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` (plain text, one line) on stderr and exit with ``code``."""
    err_console.print(Text.assemble(("error: ", "bold red"), _one_line(message) or "unknown error"))
    raise typer.Exit(code=code)


_HELD: contextvars.ContextVar[contextlib.ExitStack | None] = contextvars.ContextVar("tomoflow_held", default=None)


def _hold_output(path: Path, what: str) -> None:
    """Lock the output ``path`` (a file or a folder of files; :func:`tomoflow.io.lock.output_lock`, the
    lock beside it) until the command returns: a second run writing it at the same time is refused,
    naming the holder. Call it once the output is planned (nothing is created before)."""
    from tomoflow.io.lock import output_lock

    stack = _HELD.get()
    if stack is None:  # pragma: no cover - every command runs inside _friendly
        raise RuntimeError("_hold_output outside a command")
    stack.enter_context(output_lock(path, what=what))


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn tomoflow errors, and as a last resort OS errors (a read-only or missing folder), into one
    line on stderr and exit code 2; release the outputs the command held (:func:`_hold_output`)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with contextlib.ExitStack() as stack:
                token = _HELD.set(stack)
                try:
                    return fn(*args, **kwargs)
                finally:
                    _HELD.reset(token)
        except TomoflowError as exc:
            _fail(str(exc))
        except OSError as exc:
            _fail(_os_error_message(exc))

    return wrapper


@app.callback()
def _main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what tomoflow does (INFO level)."),
    device: str = typer.Option("auto", help="Where kernels run: cpu, cuda or auto."),
    memory: str = typer.Option("2GB", help="Peak memory one Dask task may use (slab sizing), e.g. 2GB."),
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not verbose:
        logging.getLogger("distributed").setLevel(logging.WARNING)
    from tomoflow import config

    try:
        config.set(device=device, worker_memory_budget=memory)
    except TomoflowError as exc:
        _fail(str(exc))


# ----------------------------------------------------------------------------- parsing options
def _parse_float(option: str, text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{option}: expected {what}, got {text!r}") from None


def _parse_center(text: str | None) -> float | str | None:
    """``--center``: None (omitted), ``"auto"`` or a finite number of pixels.

    >>> _parse_center(None), _parse_center("Auto"), _parse_center("295.5")
    (None, 'auto', 295.5)
    >>> _parse_center("abc")
    Traceback (most recent call last):
    ...
    tomoflow.errors.ConfigError: --center: expected a detector column in pixels or 'auto', got 'abc'
    """
    if text is None:
        return None
    if text.strip().lower() == "auto":
        return "auto"
    value = _parse_float("--center", text.strip(), "a detector column in pixels or 'auto'")
    if not math.isfinite(value):
        raise ConfigError(f"--center: expected a finite detector column in pixels or 'auto', got {text!r}")
    return value


def _parse_angles(text: str) -> tuple[float, float, float] | str:
    """``--angles``: ``START,STOP,STEP`` in degrees, or the path of a text file (one angle a line).

    >>> _parse_angles("0,180,0.5"), _parse_angles("angles.txt")
    ((0.0, 180.0, 0.5), 'angles.txt')
    """
    if "," not in text:
        return text
    parts = [p.strip() for p in text.split(",")]
    form = "START,STOP,STEP in degrees (three numbers) or a text file with one angle per line"
    if len(parts) != 3:
        raise ConfigError(f"--angles: expected {form}, got {text!r}")
    try:
        start, stop, step = (float(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--angles: expected {form}, got {text!r}") from None
    if not all(math.isfinite(v) for v in (start, stop, step)) or step == 0:
        raise ConfigError(f"--angles: START, STOP and STEP must be finite and STEP non-zero, got {text!r}")
    return start, stop, step


def _check_positive(option: str, value: float | None, unit: str) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{option} must be a positive number of {unit}, got {value:g}")


def _sweep_size(half_range: float, step: float) -> int:
    """Number of trial centres of ``--try-range``/``--try-step``, checked before any work is done.

    >>> _sweep_size(5, 0.5)
    21
    """
    if not (math.isfinite(step) and step > 0):
        raise ConfigError(f"--try-step must be a positive number of pixels, got {step:g}")
    if not (math.isfinite(half_range) and half_range >= 0):
        raise ConfigError(f"--try-range must be zero or a positive number of pixels, got {half_range:g}")
    n = int(math.floor(2 * half_range / step + 1e-9)) + 1
    if n > MAX_TRIAL_CENTERS:
        raise ConfigError(
            f"--try-range {half_range:g} with --try-step {step:g} gives {n} trial centres; at most "
            f"{MAX_TRIAL_CENTERS} are allowed (lower --try-range or raise --try-step)"
        )
    return n


def _trial_centers(center: float, half_range: float, step: float, n_cols: int) -> Any:
    """The trial centres of a sweep around ``center``; all must lie on the detector (0 .. ncol - 1)."""
    import numpy as np

    n = _sweep_size(half_range, step)
    lo, hi = center - half_range, center + half_range
    if lo < 0 or hi > n_cols - 1:
        room = max(0.0, min(center, n_cols - 1 - center))
        raise ConfigError(
            f"trial centres {lo:.2f} to {hi:.2f} px leave the detector (columns 0 to {n_cols - 1}); "
            f"--try-range may be at most {math.floor(room * 100) / 100:g} around the centre {center:.2f} px"
        )
    return lo + step * np.arange(n, dtype=np.float64)


# ----------------------------------------------------------------------------- progress, cluster
def _progress_bar() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
    )


@contextlib.contextmanager
def _progress(description: str, total: int | None) -> Iterator[Callable[..., None]]:
    """``advance(n)`` of one bar, shown from the first report (a run refused before any work prints no
    empty bar)."""
    bar = _progress_bar()
    task: Any = None

    def advance(n: int = 1) -> None:
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task(_e(description), total=total)
        bar.advance(task, n)

    try:
        yield advance
    finally:
        if task is not None:
            bar.stop()


@contextlib.contextmanager
def _stage_progress() -> Iterator[Callable[[str, int, int], None]]:
    """``progress(stage, done, total)`` for the pipeline: one bar per stage, shown from the first report
    (a run refused before any work prints no empty bar)."""
    bar = _progress_bar()
    tasks: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        if not tasks:
            bar.start()
        if stage not in tasks:
            tasks[stage] = bar.add_task(_e(stage), total=total)
        bar.update(tasks[stage], completed=done, total=total)

    try:
        yield update
    finally:
        if tasks:
            bar.stop()


@contextlib.contextmanager
def _cluster(spec: str | None, workers: int | None = None) -> Iterator[Any]:
    """Connect to (or start) a Dask cluster and print the dashboard link; ``None`` = no cluster."""
    if spec is None or spec == "none":
        yield None
        return
    import distributed  # noqa: F401 - configures its loggers on import; quieten them afterwards

    from tomoflow.cluster import connect, dashboard_url

    if not logging.getLogger().isEnabledFor(logging.INFO):
        logging.getLogger("distributed").setLevel(logging.WARNING)
    kwargs: dict[str, Any] = {}
    if spec == "local" and workers is not None:  # 0 or -1 too: connect refuses them (and too many) clearly
        kwargs["n_workers"] = workers
    from tomoflow.cluster import quiet_task_failures

    verbose = logging.getLogger().isEnabledFor(logging.INFO)
    with connect(spec, **kwargs) as client:
        url = str(dashboard_url(client))
        console.print(Text.assemble("Dask dashboard: ", (url, Style(link=url))))
        _wait_for_first_worker(client)
        try:
            # a failing task is one line (the command's error), not the workers' "Compute Failed" dumps
            with contextlib.nullcontext() if verbose else quiet_task_failures(client):
                yield client
        finally:
            # Workers going away at shutdown are expected; do not print their connection errors.
            for name in ("distributed", "tornado"):
                logging.getLogger(name).setLevel(logging.CRITICAL)


#: How long a command waits for the first worker job of a batch-system cluster (SLURM, PBS) to start,
#: in seconds (``TOMOFLOW_WORKER_WAIT_S``); it says every half minute that it is still waiting.
WORKER_WAIT_S = 1800.0


def _wait_for_first_worker(client: Any) -> None:
    """On a cluster of batch-system jobs, wait until a worker has started, saying so every 30 s, and
    fail with one line after ``TOMOFLOW_WORKER_WAIT_S`` (default :data:`WORKER_WAIT_S`) instead of
    waiting silently for ever on jobs that never start (a full queue, resources no node has)."""
    import time

    cluster = getattr(client, "cluster", None)
    if cluster is None or not hasattr(cluster, "job_cls") or not getattr(cluster, "worker_spec", None):
        return  # not a batch-system cluster, or no job asked for yet (adapt from zero)
    limit = _parse_float(
        "TOMOFLOW_WORKER_WAIT_S", os.environ.get("TOMOFLOW_WORKER_WAIT_S", str(WORKER_WAIT_S)), "a number of seconds"
    )
    t0 = time.monotonic()
    while True:
        left = limit - (time.monotonic() - t0)
        try:
            client.wait_for_workers(1, timeout=max(0.5, min(30.0, left)))
            return
        except (TimeoutError, OSError):
            waited = time.monotonic() - t0
            if waited >= limit:
                from tomoflow.errors import PipelineError

                raise PipelineError(
                    f"no worker job of the {type(cluster).__name__} started within {waited:.0f} s "
                    f"({len(cluster.worker_spec)} job(s) still queued: see the batch system's queue); "
                    "nothing was written; ask for resources a node has, or set "
                    "TOMOFLOW_WORKER_WAIT_S to wait longer"
                ) from None
            console.print(
                f"waiting for the first worker job to start ({waited:.0f} s; {len(cluster.worker_spec)} job(s) queued)"
            )


def _stage_rows(store: Any) -> list[tuple[str, str]]:
    """``("stage NAME", "complete (1.2 s)")`` rows for the stages recorded in a scan or volume store."""
    rows = []
    for name, rec in store.stages().items():
        state = "complete" if rec.complete else "NOT complete"
        rows.append((f"stage {name}", state + (f" ({rec.seconds:.1f} s)" if rec.seconds else "")))
    return rows


def _table(title: str, rows: list[tuple[str, Any]]) -> Table:
    t = Table(title=_e(title), show_header=False)
    for key, value in rows:
        t.add_row(_e(key), _e(value))
    return t
