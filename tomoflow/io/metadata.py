"""Pydantic models of what tomoflow stores write into zarr attributes.

They are the single source of the JSON Schemas in ``schemas/`` (``tomoflow schema`` regenerates them,
a test fails when they drift).
"""

from __future__ import annotations

import datetime as _dt
from typing import Any, Final, Literal

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

SCAN_FORMAT: Final = "tomoflow-scan"
VOLUME_FORMAT: Final = "tomoflow-volume"


def utc_now() -> str:
    """ISO-8601 UTC timestamp, second resolution."""
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Quantity(_Model):
    """A positive, finite number with its unit (``{"value": 0.03, "unit": "micrometer"}``)."""

    value: float = Field(gt=0, allow_inf_nan=False)
    unit: str


class SourceFile(_Model):
    """A file a store was made from."""

    path: str = Field(description="Path of the file as given at ingest time.")
    format: str = Field(description="dxchange, nexus, txrm, tiff, numpy or synthetic.")
    sha256: str | None = Field(default=None, description="Hex sha256 of the file's bytes.")
    size_bytes: int | None = None


class StageRecord(_Model):
    """Record of one pipeline stage in a store (``stages/<name>`` group attributes).

    Written by the one process driving the stage: incomplete at the start, complete only after every
    block's data and marker was written (see :mod:`tomoflow.io.stages`).
    """

    complete: bool = False
    started: str | None = None
    finished: str | None = None
    seconds: float | None = Field(default=None, description="Wall time of the stage in seconds.")
    fingerprint: str | None = Field(
        default=None,
        description="sha256 of the stage's input identities and parameters; a rerun "
        "resumes only into a store with the same fingerprint.",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="The parameters fingerprinted.")
    output_id: str | None = Field(
        default=None,
        description="Identity of what the stage wrote (content sha256 of ingested data, "
        "or the fingerprint of computed data); set on completion.",
    )
    timings: dict[str, float] = Field(default_factory=dict, description="Seconds per step of the stage.")
    info: dict[str, Any] = Field(default_factory=dict)


class Provenance(_Model):
    """Who made a store, from what, with which settings, and how long each stage took."""

    tomoflow_version: str
    created: str = Field(default_factory=utc_now)
    config: dict[str, Any] = Field(default_factory=dict, description="Full configuration in force.")
    inputs: list[SourceFile] = Field(default_factory=list)


class ScanAttrs(_Model):
    """Attributes of a scan store (zarr v3 group holding one scan as an xarray Dataset).

    Variables of the group: ``projections`` (angle, row, col) float32, ``flats`` (flat, row, col)
    float32, ``darks`` (dark, row, col) float32 (uint16 where raw counts came as 8- or 16-bit
    integers), coordinate ``angle`` (degrees), optional
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
    provenance: Provenance


class VolumeAttrs(_Model):
    """tomoflow attributes of a volume store (besides the OME-Zarr 0.5 ``ome`` metadata)."""

    tomoflow_format: Literal["tomoflow-volume"] = VOLUME_FORMAT
    format_version: int = 1
    voxel_size: Quantity | None = Field(
        description="Edge of a level-0 voxel (micrometer); null when the scan's pixel size is unknown "
        "(the OME-Zarr scale then says 1.0 and means one pixel)."
    )
    algorithm: str | None = Field(default=None, description="fbp, mlem, sirt, ...")
    rotation_center: float | None = Field(default=None, description="Rotation axis column used (px).")
    scan: str | None = Field(
        default=None,
        description="Path of the scan store reconstructed, as given "
        "(informative only: resume goes by identity, see stages/<name>).",
    )
    provenance: Provenance
