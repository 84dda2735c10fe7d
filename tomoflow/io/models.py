"""Pydantic models of what tomoflow stores write into zarr attributes.

They are the single source of the JSON Schemas in ``schemas/`` (``tomoflow schema`` regenerates them,
a test fails when they drift).
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Quantity",
    "SourceFile",
    "StageRecord",
    "Provenance",
    "ScanAttrs",
    "VolumeAttrs",
    "SCAN_FORMAT",
    "VOLUME_FORMAT",
]

SCAN_FORMAT = "tomoflow-scan"
VOLUME_FORMAT = "tomoflow-volume"


def utc_now() -> str:
    """ISO-8601 UTC timestamp, second resolution."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Quantity(_Model):
    """A number with its unit (``{"value": 0.03, "unit": "micrometer"}``)."""

    value: float
    unit: str


class SourceFile(_Model):
    """A file a store was made from."""

    path: str = Field(description="Path of the file as given at ingest time.")
    format: str = Field(description="dxchange, nexus, txrm, tiff, numpy or synthetic.")
    sha256: str | None = Field(default=None, description="Hex sha256 of the file's bytes.")
    size_bytes: int | None = None


class StageRecord(_Model):
    """Completion marker of one pipeline stage (``ingest``, ``align``, ``recon`` ...)."""

    complete: bool = False
    started: str | None = None
    finished: str | None = None
    seconds: float | None = Field(default=None, description="Wall time of the stage in seconds.")
    info: dict[str, Any] = Field(default_factory=dict)


class Provenance(_Model):
    """Who made a store, from what, with which settings, and how long each stage took."""

    tomoflow_version: str
    created: str = Field(default_factory=utc_now)
    config: dict[str, Any] = Field(default_factory=dict, description="Full configuration in force.")
    inputs: list[SourceFile] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict, description="Seconds per stage.")


class ScanAttrs(_Model):
    """Attributes of a scan store (zarr v3 group holding one scan as an xarray Dataset).

    Variables of the group: ``projections`` (angle, row, col) float32, ``flats`` (flat, row, col)
    float32, ``darks`` (dark, row, col) float32, coordinate ``angle`` (degrees), optional
    ``stage_position`` (angle, axis) in micrometres and, after alignment, ``shifts`` (angle, 2).
    """

    tomoflow_format: Literal["tomoflow-scan"] = SCAN_FORMAT
    format_version: int = 1
    values: Literal["intensity", "line-integral"] = Field(
        default="intensity",
        description="'intensity': raw counts, normalise with flats/darks and -log before "
        "reconstruction; 'line-integral': already normalised (-log applied).",
    )
    pixel_size: Quantity | None = Field(default=None, description="Detector pixel size (micrometer).")
    energy: Quantity | None = Field(default=None, description="Beam energy (keV).")
    rotation_center: float | None = Field(
        default=None, description="Rotation axis column in pixels; (ncol - 1) / 2 is centred."
    )
    instrument: dict[str, Any] = Field(default_factory=dict, description="Raw instrument metadata.")
    source: SourceFile | None = None
    stages: dict[str, StageRecord] = Field(default_factory=dict)
    provenance: Provenance


class VolumeAttrs(_Model):
    """tomoflow attributes of a volume store (besides the OME-Zarr 0.5 ``ome`` metadata)."""

    tomoflow_format: Literal["tomoflow-volume"] = VOLUME_FORMAT
    format_version: int = 1
    voxel_size: Quantity = Field(description="Edge of a level-0 voxel (micrometer).")
    algorithm: str | None = Field(default=None, description="fbp, mlem, sirt, ...")
    rotation_center: float | None = None
    scan: str | None = Field(default=None, description="Path of the scan store reconstructed.")
    slab_rows: int = Field(
        gt=0, description="Height (z) of the slabs level 0 is written in; the resume markers are one "
        "uint8 per slab in the array 'slab_done'."
    )
    stages: dict[str, StageRecord] = Field(default_factory=dict)
    provenance: Provenance
