"""Pipeline layer: Dask graphs built from the kernels and the stores, all run by the stage engine
(:mod:`tomoflow.pipeline.engine`)."""

from tomoflow.pipeline.reconstruct import reconstruct_scan

__all__ = ["reconstruct_scan"]
