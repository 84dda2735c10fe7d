"""Storage layer: raw-format readers, the scan store and the volume store."""

from tomoflow.io.ingest import FORMATS, detect_format, ingest
from tomoflow.io.scan_store import ScanStore, open_scan, write_scan
from tomoflow.io.volume_store import VolumeStore, open_volume

__all__ = ["FORMATS", "detect_format", "ingest", "ScanStore", "open_scan", "write_scan", "VolumeStore", "open_volume"]
