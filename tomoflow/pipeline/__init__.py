"""Pipeline layer: Dask graphs built from the kernels and the stores."""

from tomoflow.pipeline.reconstruct import reconstruct_scan

__all__ = ["reconstruct_scan"]
