"""Storage layer: raw-format readers, the scan store and the volume store.

The readers (:mod:`~tomoflow.io.dxchange`, :mod:`~tomoflow.io.nexus`, :mod:`~tomoflow.io.txrm`,
:mod:`~tomoflow.io.tiff`, :mod:`~tomoflow.io.npy`; their cheap checks in :mod:`~tomoflow.io.probe`),
:func:`ingest` (raw file -> scan store), the stores (:mod:`~tomoflow.io.scan_store`,
:mod:`~tomoflow.io.volume_store`), their stage records (:mod:`~tomoflow.io.stages`), locks
(:mod:`~tomoflow.io.lock`) and the output policy every written file obeys (:mod:`~tomoflow.io.output`).
It imports the base modules and the kernels only, never the pipeline, batch or command line above it.
"""

from tomoflow.io.ingest import FORMATS, detect_format, ingest
from tomoflow.io.scan_store import ScanStore, open_scan, write_scan
from tomoflow.io.volume_store import VolumeStore, open_volume

__all__ = ["FORMATS", "detect_format", "ingest", "ScanStore", "open_scan", "write_scan", "VolumeStore", "open_volume"]
