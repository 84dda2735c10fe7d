"""The volume store (tomoflow/io/volume_store.py): refuses what is not there or not finished."""

from __future__ import annotations

import numpy as np
import pytest

from tomoflow.errors import ConfigError, StoreError
from tomoflow.io import VolumeStore, open_volume
from tomoflow.io.output import create_store, fingerprint, prepare_output
from tomoflow.io.stages import StageLog


def _volume(path, complete: bool):
    fp = fingerprint("recon", inputs={}, params={})
    v = VolumeStore.create(
        prepare_output(path, kind="tomoflow-volume", stage="recon", fingerprint=fp),
        (16, 16, 16),
        None,
        chunks=(8, 16, 16),
        n_levels=2,
    )
    log = StageLog.begin(path, "recon", fingerprint=fp, params={}, steps={"level-0": 2})
    if complete:
        v.level(0)[:] = 1.0
        log.finish(output_id=fp, seconds=0.0)
    return path


def test_incomplete_volume_is_refused(tmp_path):
    path = _volume(tmp_path / "v.zarr", complete=False)
    with pytest.raises(StoreError, match="did not complete"):
        open_volume(path)
    assert VolumeStore.open(path, require_complete=False).shape == (16, 16, 16)


def test_missing_level_is_a_config_error(tmp_path):
    path = _volume(tmp_path / "v.zarr", complete=True)
    assert float(open_volume(path, level=1).mean()) == 0.0  # level 1 exists (not computed by this toy)
    for level in (5, -1, 1.5):
        with pytest.raises(ConfigError, match="no pyramid level"):
            open_volume(path, level=level)


def test_unknown_voxel_size_is_recorded_as_unknown(tmp_path):
    path = _volume(tmp_path / "v.zarr", complete=True)
    da = open_volume(path)
    assert VolumeStore.open(path).attrs.voxel_size is None
    assert "unknown" in da.x.attrs["units"]
    np.testing.assert_array_equal(da.x.values, np.arange(16.0))


def test_not_a_volume_store(tmp_path):
    (tmp_path / "plain").mkdir()
    for path in (tmp_path / "missing.zarr", tmp_path / "plain"):
        with pytest.raises(StoreError):
            open_volume(path)
    create_store(
        prepare_output(tmp_path / "s.zarr", kind="tomoflow-scan", stage="ingest", fingerprint="x"),
        {"tomoflow_format": "tomoflow-scan"},
    )
    with pytest.raises(StoreError, match="not a tomoflow volume store"):
        open_volume(tmp_path / "s.zarr")
