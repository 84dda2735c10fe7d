"""Batch processing: many scans of a manifest through their stages on one cluster (``tomoflow batch``).

A batch is described by a manifest (YAML or JSON; its JSON Schema is
``schemas/batch-manifest.schema.json``), validated whole before any work, and run by
:func:`run_batch`, which writes each scan's outputs under ``<output>/<scan>/`` and a report beside
them; rerunning a manifest skips what is complete (the stores are the state)::

    from tomoflow.batch import load_manifest, run_batch, scan_archive

    found = scan_archive("raw/")                          # a manifest of the raw scans in a folder
    m = load_manifest("batch.yaml")                       # validated, paths absolute
    result = run_batch(m, client=client)                  # BatchResult: every scan's status

The modules, one job each:

=====================================  ============================================================
:mod:`~tomoflow.batch.manifest`        the manifest (pydantic): scans, output root, cluster, checks
:mod:`~tomoflow.batch.stages`          the stage models (ingest, align, recon, recover) and options
:mod:`~tomoflow.batch.archive`         find the raw scans of an archive folder, make a manifest
:mod:`~tomoflow.batch.names`           the names of the files a batch writes (report, per scan)
:mod:`~tomoflow.batch.runner`          :func:`run_batch` and :func:`preflight`: the scan pool, the lock
:mod:`~tomoflow.batch.scans`           one scan's stages with retries, the state a run shares
:mod:`~tomoflow.batch.tasks`           the work run as one task on a worker (ingest, train, ...)
:mod:`~tomoflow.batch.failures`        retry or not, and a failure in one line
:mod:`~tomoflow.batch.results`         the results and progress events of a run
:mod:`~tomoflow.batch.report`          ``batch-report.json`` / ``.html``, thumbnails, Dask's report
=====================================  ============================================================

The names below are loaded on first use (module ``__getattr__``), so ``import tomoflow.batch``
loads nothing else; no module of the package imports torch when imported (training imports it on
the worker that trains).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    # manifest
    "Manifest",
    "ScanEntry",
    "AngleRange",
    "load_manifest",
    "save_manifest",
    "scan_outputs",
    "missing_inputs",
    # stages
    "STAGES",
    "IngestStage",
    "AlignStage",
    "ReconStage",
    "RecoverStage",
    "TrainOptions",
    # archive
    "scan_archive",
    "ArchiveScan",
    "FoundScan",
    "Unreadable",
    # runner, results, report
    "run_batch",
    "preflight",
    "BatchResult",
    "ScanResult",
    "StageResult",
    "BatchEvent",
    "COMPLETE",
    "SKIPPED",
    "FAILED",
    "PENDING",
    "write_report",
]

#: The module of each public name (loaded on first use).
_LAZY: dict[str, str] = {
    **dict.fromkeys(__all__[:7], "tomoflow.batch.manifest"),
    **dict.fromkeys(__all__[7:13], "tomoflow.batch.stages"),
    **dict.fromkeys(__all__[13:17], "tomoflow.batch.archive"),
    **dict.fromkeys(__all__[17:19], "tomoflow.batch.runner"),
    **dict.fromkeys(__all__[19:27], "tomoflow.batch.results"),
    "write_report": "tomoflow.batch.report",
}

if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from tomoflow.batch.archive import ArchiveScan, FoundScan, Unreadable, scan_archive
    from tomoflow.batch.manifest import (
        AngleRange,
        Manifest,
        ScanEntry,
        load_manifest,
        missing_inputs,
        save_manifest,
        scan_outputs,
    )
    from tomoflow.batch.report import write_report
    from tomoflow.batch.results import (
        COMPLETE,
        FAILED,
        PENDING,
        SKIPPED,
        BatchEvent,
        BatchResult,
        ScanResult,
        StageResult,
    )
    from tomoflow.batch.runner import preflight, run_batch
    from tomoflow.batch.stages import STAGES, AlignStage, IngestStage, ReconStage, RecoverStage, TrainOptions


def __getattr__(name: str) -> Any:
    """Import a public name on first access and cache it in the module namespace."""
    try:
        module = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'tomoflow.batch' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
