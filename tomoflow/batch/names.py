"""The names of the files a batch writes, defined once: the batch report in the report folder (the
output root by default) and each scan's outputs under ``<output>/<scan>/``.

The manifest refuses a scan named like a report file (:data:`REPORT_NAMES`), since a scan's outputs
go to ``<output>/<name>/``; the runner and the report write these names.
"""

from __future__ import annotations

__all__ = [
    "REPORT_JSON",
    "REPORT_HTML",
    "PERFORMANCE_REPORT",
    "THUMBNAILS",
    "LOGS",
    "REPORT_NAMES",
    "OUTPUT_NAMES",
    "TRAINING_MARKER",
]

#: The batch report for programs (everything) and for people (one table).
REPORT_JSON = "batch-report.json"
REPORT_HTML = "batch-report.html"
#: Dask's ``performance_report`` of the run.
PERFORMANCE_REPORT = "dask-performance.html"
#: Folder of the PNG thumbnails of each scan's central slice.
THUMBNAILS = "thumbnails"
#: Folder of the traceback log of each failed scan (``batch-logs/<name>.log``).
LOGS = "batch-logs"
#: Files and folders of the batch report in the output root: no scan may be named like them.
REPORT_NAMES = (REPORT_JSON, REPORT_HTML, PERFORMANCE_REPORT, THUMBNAILS, LOGS)

#: Per-scan outputs under ``<output>/<name>/`` (see :func:`tomoflow.batch.manifest.scan_outputs`).
OUTPUT_NAMES = {
    "scan": "scan.zarr",
    "aligned": "aligned.zarr",
    "volume": "volume.zarr",
    "registration": "registration.json",
    "training": "training",
    "recovered": "recovered.zarr",
    "report": "scan-report.json",
}

#: Completion marker of a per-scan training, written in ``<output>/<scan>/training/`` after the weights.
TRAINING_MARKER = "batch-training.json"
