"""JSON Schemas of tomoflow's stores and configuration, generated from the pydantic models.

``tomoflow schema`` writes them to ``schemas/``; a test fails when the files drift from the code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tomoflow.batch.manifest import Manifest
from tomoflow.config import TomoflowConfig
from tomoflow.io.metadata import ScanAttrs, VolumeAttrs
from tomoflow.weights.card import ModelCard

__all__ = ["SCHEMAS", "schema_json", "write_schemas", "stale_schemas"]

#: file stem -> model
SCHEMAS: dict[str, type[BaseModel]] = {
    "scan-store": ScanAttrs,
    "volume-store": VolumeAttrs,
    "config": TomoflowConfig,
    "model-card": ModelCard,
    "batch-manifest": Manifest,
}

_TITLES = {
    "scan-store": "tomoflow scan store (zarr v3 group attributes)",
    "volume-store": "tomoflow volume store (OME-Zarr 0.5 group, tomoflow attributes)",
    "config": "tomoflow runtime configuration",
    "model-card": "tomoflow model card (JSON beside every shipped set of weights)",
    "batch-manifest": "tomoflow batch manifest (YAML or JSON: scans, pipeline stages, output root, cluster)",
}


def schema_json(name: str) -> str:
    """The JSON Schema text of ``name`` (stable formatting, trailing newline)."""
    model = SCHEMAS[name]
    schema: dict[str, Any] = model.model_json_schema(mode="serialization")
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"tomoflow/{name}.schema.json",
        **schema,
        "title": _TITLES[name],
    }
    # The file policy's stamp: files of this schema written by tomoflow carry one (a JSON manifest, a
    # model card), and the schema file itself is stamped (no version: its text changes with the model).
    if isinstance(schema.get("properties"), dict):
        schema["properties"]["tomoflow_file"] = {
            "type": "object",
            "description": "Written by tomoflow: the file's kind and the fingerprint of what it "
            "was made from (tomoflow.io.output; not part of the document).",
        }
    from tomoflow.io.output import body_digest

    schema["tomoflow_file"] = {"kind": "schema", "fingerprint": None, "body": body_digest(schema)}
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(directory: str | Path) -> list[Path]:
    """Write every schema to ``directory/<name>.schema.json``; return the paths.

    The file policy applies (checked for every file before any is written): the folder is no store, and
    each file is new or a schema tomoflow wrote; a file tomoflow did not write is never replaced.
    """
    from tomoflow.io.output import plan_files, write_file

    plans = plan_files(directory, {f"{name}.schema.json": "schema" for name in SCHEMAS}, overwrite=True, option=None)
    return [write_file(plans[f"{name}.schema.json"], schema_json(name)) for name in SCHEMAS]


def stale_schemas(directory: str | Path) -> list[str]:
    """Names whose file in ``directory`` is missing or differs from the code."""
    d = Path(directory)
    return [
        n
        for n in SCHEMAS
        if not (d / f"{n}.schema.json").exists() or (d / f"{n}.schema.json").read_text() != schema_json(n)
    ]
