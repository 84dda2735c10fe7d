"""What a batch run reports: the result of each stage and scan, of the batch, and its progress events.

Plain dataclasses (no Dask, no files): :mod:`tomoflow.batch.runner` fills them in and
:mod:`tomoflow.batch.report` writes them out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "StageResult",
    "ScanResult",
    "BatchResult",
    "BatchEvent",
    "Progress",
    "COMPLETE",
    "SKIPPED",
    "FAILED",
    "PENDING",
]

#: Scan and stage statuses.
COMPLETE, SKIPPED, FAILED, PENDING = "complete", "skipped-complete", "failed", "pending"


@dataclass
class StageResult:
    """One stage of one scan in this run: ``complete`` (work done now), ``skipped-complete`` (its output
    was already complete: nothing written) or ``failed``; ``seconds`` of this run, and the seconds the
    store recorded when the stage was computed."""

    stage: str
    status: str
    seconds: float = 0.0
    recorded_seconds: float | None = None


@dataclass
class ScanResult:
    """What happened to one scan (see :meth:`as_dict` for the report's fields)."""

    name: str
    status: str = PENDING
    stages: list[StageResult] = field(default_factory=list)
    attempts: int = 0
    seconds: float = 0.0
    error: str | None = None
    error_type: str | None = None
    failed_stage: str | None = None
    retried_after: list[str] = field(default_factory=list)
    center: float | None = None
    alignment: dict[str, Any] | None = None
    thumbnail: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    #: The scan's failure log (full tracebacks of every failed attempt), relative to the report folder.
    log: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in (COMPLETE, SKIPPED)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BatchResult:
    """The batch: every scan's result in manifest order, wall time and the report files.

    ``report_json`` / ``report_html`` are None when the report could not be written; ``report_error``
    then says why (``no space left on /data/out``); likewise ``performance_error``.
    """

    scans: list[ScanResult]
    seconds: float = 0.0
    report_json: Path | None = None
    report_html: Path | None = None
    performance_report: Path | None = None
    interrupted: bool = False
    report_error: str | None = None
    performance_error: str | None = None
    report_dir: Path | None = None

    @property
    def failed(self) -> list[ScanResult]:
        return [s for s in self.scans if s.status == FAILED]

    @property
    def ok(self) -> bool:
        """Every scan complete (now or already)."""
        return all(s.ok for s in self.scans)

    def counts(self) -> dict[str, int]:
        out = {COMPLETE: 0, SKIPPED: 0, FAILED: 0, PENDING: 0}
        for s in self.scans:
            out[s.status] = out.get(s.status, 0) + 1
        return out


@dataclass(frozen=True)
class BatchEvent:
    """A progress report of :func:`run_batch` (passed to its ``progress`` callback, from any thread).

    ``kind``: ``"batch-start"`` (``total`` scans, ``info`` = in-flight limit, cluster), ``"scan-start"``,
    ``"stage"`` (``stage`` of ``scan`` at ``step``: ``done`` of ``total`` tasks), ``"scan-done"``
    (``result``), ``"batch-done"``.
    """

    kind: str
    scan: str | None = None
    stage: str | None = None
    step: str | None = None
    done: int = 0
    total: int = 0
    result: ScanResult | None = None
    info: dict[str, Any] | None = None


Progress = Callable[[BatchEvent], None]
