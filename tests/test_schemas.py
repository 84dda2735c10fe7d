import json
from pathlib import Path

import jsonschema

from tomoflow.io import write_scan
from tomoflow.schemas import SCHEMAS, schema_json, stale_schemas

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"


def test_schema_files_are_up_to_date():
    stale = stale_schemas(SCHEMA_DIR)
    assert not stale, f"schemas out of date: {stale}; run `tomoflow schema --out schemas`"


def test_a_real_scan_store_validates_against_its_schema(tmp_path):
    import numpy as np

    store = write_scan(tmp_path / "s.zarr", np.ones((4, 2, 3)), [0, 45, 90, 135], pixel_size_um=0.1)
    schema = json.loads(schema_json("scan-store"))
    jsonschema.validate(dict(store.group.attrs), schema)
    bad = dict(store.group.attrs)
    bad["values"] = "counts"
    try:
        jsonschema.validate(bad, schema)
    except jsonschema.ValidationError:
        pass
    else:  # pragma: no cover
        raise AssertionError("schema accepted an invalid 'values'")
    assert set(SCHEMAS) == {"scan-store", "volume-store", "config", "model-card", "batch-manifest"}
