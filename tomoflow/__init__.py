"""tomoflow: jitter-corrected nano-tomography and resolution recovery at facility scale, on Dask.

Public API (everything else is reachable through the subpackages ``tomoflow.recon``, ``tomoflow.sim``,
``tomoflow.io``, ``tomoflow.pipeline``, ``tomoflow.cluster``)::

    tomoflow.ingest(source, "scan.zarr")                  # raw file -> zarr scan store
    tomoflow.open_scan("scan.zarr")                       # -> xarray.Dataset
    tomoflow.reconstruct_scan("scan.zarr", "vol.zarr")    # Dask, slab by slab, resumable
    tomoflow.open_volume("vol.zarr")                      # -> xarray.DataArray (micrometre coords)
    tomoflow.connect("local")                             # -> distributed.Client
    tomoflow.recon.fbp / mlem / sirt / project / find_center
"""

from tomoflow import config, recon, sim
from tomoflow._version import __version__
from tomoflow.cluster import connect, dashboard_url
from tomoflow.errors import ConfigError, InputError, StoreError, TomoflowError
from tomoflow.io import ingest, open_scan, open_volume, write_scan
from tomoflow.pipeline import reconstruct_scan

__all__ = [
    "__version__", "config", "recon", "sim", "connect", "dashboard_url", "ingest", "open_scan", "open_volume",
    "write_scan", "reconstruct_scan", "TomoflowError", "InputError", "StoreError", "ConfigError",
]
