"""Storage layer: raw-format readers, the scan store and the volume store."""

from tomoflow.io.scan_store import ScanStore, open_scan, write_scan

__all__ = ["ScanStore", "open_scan", "write_scan"]
