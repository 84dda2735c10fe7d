"""tomoflow: jitter-corrected nano-tomography and resolution recovery at facility scale, on Dask."""

from tomoflow import config
from tomoflow._version import __version__
from tomoflow.errors import ConfigError, InputError, StoreError, TomoflowError

__all__ = ["__version__", "config", "TomoflowError", "InputError", "StoreError", "ConfigError"]
