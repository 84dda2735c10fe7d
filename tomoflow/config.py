"""Runtime configuration: one object, read by every layer, set by the CLI or the user.

Modelled on ``zarr.config`` / ``dask.config``: a process-wide default that can be changed
temporarily with a context manager.

>>> import tomoflow
>>> with tomoflow.config.set(device="cpu", worker_memory_budget="2GB"):
...     tomoflow.config.get().device
'cpu'
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tomoflow.errors import ConfigError

__all__ = ["TomoflowConfig", "get", "set", "parse_bytes"]


def parse_bytes(value: int | float | str) -> int:
    """Parse ``"2GB"``, ``"512 MiB"``, ``2e9`` into a number of bytes."""
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ConfigError(f"memory size must be positive, got {value!r}")
        return int(value)
    try:
        from dask.utils import parse_bytes as _parse

        out = int(_parse(value))
    except Exception as exc:
        raise ConfigError(f"cannot read {value!r} as a memory size (examples: '2GB', '512MiB')") from exc
    if out <= 0:
        raise ConfigError(f"memory size must be positive, got {value!r}")
    return out


class TomoflowConfig(BaseModel):
    """Settings shared by the pipeline stages.

    Attributes
    ----------
    device
        Where kernels run: ``"cpu"`` (NumPy/numba), ``"cuda"`` (CuPy, torch on GPU) or ``"auto"``
        (CUDA when a device is visible, else CPU).
    worker_memory_budget
        Bytes one Dask task may use at its peak; slab sizes are derived from it.
    scan_chunk_angles, scan_chunk_rows
        Zarr chunk shape of scan-store projections along angle and detector row (columns are never
        split). See :mod:`tomoflow.io.scan_store` for why.
    volume_chunk
        Zarr chunk edge (voxels) of volume stores along y and x; along z the chunk equals
        ``scan_chunk_rows`` so sinogram slabs map onto whole volume chunks.
    pyramid_levels
        Number of extra OME-Zarr resolution levels (each 2x coarser) written after level 0.
    """

    model_config = ConfigDict(validate_assignment=True, extra="forbid")

    device: Literal["cpu", "cuda", "auto"] = "auto"
    worker_memory_budget: int = Field(default=2 * 1024**3, gt=0)
    scan_chunk_angles: int = Field(default=8, ge=1)
    scan_chunk_rows: int = Field(default=32, ge=1)
    volume_chunk: int = Field(default=256, ge=8)
    pyramid_levels: int = Field(default=2, ge=0, le=8)

    @field_validator("worker_memory_budget", mode="before")
    @classmethod
    def _bytes(cls, v: Any) -> int:
        return parse_bytes(v)


_lock = threading.Lock()
_config = TomoflowConfig()


def get() -> TomoflowConfig:
    """The configuration in force."""
    return _config


@contextlib.contextmanager
def _restore(previous: TomoflowConfig) -> Iterator[TomoflowConfig]:
    global _config
    try:
        yield _config
    finally:
        with _lock:
            _config = previous


def set(**changes: Any) -> contextlib.AbstractContextManager[TomoflowConfig]:  # noqa: A001  (tomoflow.config.set is the public name)
    """Change settings; use as a context manager to restore them afterwards.

    Raises
    ------
    ConfigError
        If a setting is unknown or out of range.
    """
    global _config
    with _lock:
        previous = _config
        try:
            _config = previous.model_copy(update={})
            for key, value in changes.items():
                if key not in TomoflowConfig.model_fields:
                    raise ConfigError(f"unknown tomoflow setting {key!r}; known: {sorted(TomoflowConfig.model_fields)}")
                setattr(_config, key, value)
        except ValidationError as exc:
            _config = previous
            raise ConfigError(f"invalid tomoflow setting: {exc.errors()[0]['msg']} ({changes})") from None
        except ConfigError:
            _config = previous
            raise
    return _restore(previous)
