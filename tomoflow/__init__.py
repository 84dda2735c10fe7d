"""tomoflow: jitter-corrected nano-tomography and resolution recovery at facility scale, on Dask.

Public API (everything else is reachable through the subpackages ``tomoflow.recon``, ``tomoflow.sim``,
``tomoflow.io``, ``tomoflow.pipeline``, ``tomoflow.cluster``, ``tomoflow.batch``)::

    tomoflow.ingest(source, "scan.zarr")                  # raw file -> zarr scan store
    tomoflow.open_scan("scan.zarr")                       # -> xarray.Dataset
    tomoflow.reconstruct_scan("scan.zarr", "vol.zarr")    # Dask, slab by slab, resumable
    tomoflow.open_volume("vol.zarr")                      # -> xarray.DataArray (micrometre coords)
    tomoflow.connect("local")                             # -> distributed.Client
    tomoflow.recon.fbp / mlem / sirt / project / find_center

The names are loaded on first use (module ``__getattr__``, as scikit-image does), so ``import
tomoflow`` and the kernels (``import tomoflow.recon``, ``tomoflow.sim``) load no Dask, distributed,
zarr or xarray; the storage, pipeline and cluster layers are imported when one of their names is
first touched.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tomoflow._version import __version__
from tomoflow.errors import ConfigError, InputError, StoreError, TomoflowError

#: Lazily loaded public names: name -> (module, attribute); attribute None means the module itself.
_LAZY: dict[str, tuple[str, str | None]] = {
    "config": ("tomoflow.config", None),
    "recon": ("tomoflow.recon", None),
    "sim": ("tomoflow.sim", None),
    "connect": ("tomoflow.cluster", "connect"),
    "dashboard_url": ("tomoflow.cluster", "dashboard_url"),
    "ingest": ("tomoflow.io", "ingest"),
    "open_scan": ("tomoflow.io", "open_scan"),
    "open_volume": ("tomoflow.io", "open_volume"),
    "write_scan": ("tomoflow.io", "write_scan"),
    "reconstruct_scan": ("tomoflow.pipeline", "reconstruct_scan"),
}

__all__ = [
    "__version__",
    "config",
    "recon",
    "sim",
    "connect",
    "dashboard_url",
    "ingest",
    "open_scan",
    "open_volume",
    "write_scan",
    "reconstruct_scan",
    "TomoflowError",
    "InputError",
    "StoreError",
    "ConfigError",
]

if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from tomoflow import config, recon, sim
    from tomoflow.cluster import connect, dashboard_url
    from tomoflow.io import ingest, open_scan, open_volume, write_scan  # type: ignore[no-redef]  # the function, not its submodule tomoflow.io.ingest
    from tomoflow.pipeline import reconstruct_scan


def __getattr__(name: str) -> Any:
    """Import a public name on first access and cache it in the module namespace."""
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'tomoflow' has no attribute {name!r}") from None
    value = importlib.import_module(module)
    if attr is not None:
        value = getattr(value, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
