"""The ``tomoflow`` command line.

Every command has ``--help``. Long work shows a progress bar; a Dask dashboard link is printed when a
cluster is started. An ordinary mistake (bad input, a parameter out of range, an unwritable folder) is
shown as one line on stderr with exit code 2, never a traceback, and is found before anything is written.

Modules: :mod:`~tomoflow.cli._app` (the app, output, errors, option parsing, progress, cluster),
:mod:`~tomoflow.cli.scan` (ingest, info, simulate, center), :mod:`~tomoflow.cli.recon` (recon, schema),
:mod:`~tomoflow.cli.align` (align, correct, train-aligner), :mod:`~tomoflow.cli.recovery` (simulate-pair, register,
recover, pores),
:mod:`~tomoflow.cli.train_recovery` (train-recovery), :mod:`~tomoflow.cli.resample` (resample),
:mod:`~tomoflow.cli.demo` (demo), :mod:`~tomoflow.cli.batch` (batch scan-archive, batch check).
"""

from __future__ import annotations

from tomoflow.cli import align, batch, demo, recon, recovery, resample, scan, train_recovery  # noqa: F401 - importing registers the commands
from tomoflow.cli._app import app

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover - console entry
    app()
