"""``tomoflow demo``: the main job end to end on a local Dask cluster of worker processes, then the small
resolution recovery (simulated pair, registration, training, whole-field recovery, pores, before/after)."""

import json

import pytest


@pytest.mark.slow
def test_demo_end_to_end(cli, tmp_path):
    from tomoflow.io.volume_store import VolumeStore
    from tomoflow.pipeline.resample import field_grid

    out = tmp_path / "demo [b]"
    ran = cli(
        "demo",
        "--out",
        out,
        "--size",
        48,
        "--rows",
        8,
        "--angles",
        48,
        "--workers",
        1,
        "--recovery-size",
        40,
        "--recovery-train-seconds",
        3,
    )
    assert ran.code == 0, ran
    assert "Dask dashboard: http://127.0.0.1:" in ran.stdout
    assert f"tomoflow info {out / 'scan.zarr'}" in ran.stdout
    assert (out / "overview.png").exists()
    assert (out / "volume.zarr").exists()

    rec = out / "recovery"
    assert json.loads((rec / "registration.json").read_text())["ncc"] > 0.8
    assert (rec / "model" / "recover_unet.safetensors").is_file()
    # the whole LFOV field (22³ voxels of 4 um) recovered at the HR voxel size (1 um)
    shape, _ = field_grid((22, 22, 22), 4.0, 1.0)
    recovered = VolumeStore.open(rec / "recovered.zarr")
    assert recovered.shape == shape and float(recovered.attrs.voxel_size.value) == 1.0
    assert recovered.attrs.algorithm == "unet-recovery"
    assert VolumeStore.open(rec / "recovered_roi.zarr").shape == VolumeStore.open(rec / "hr.zarr").shape == (40,) * 3
    doc = json.loads((rec / "pores.json").read_text())
    assert set(doc["volumes"]) == {"LFOV on the HR grid", "HR", "recovered"}
    for m in doc["volumes"].values():
        assert 0 < m["porosity_percent"] < 100 and m["count"] >= 1 and m["threshold"] == doc["threshold"]
    assert "porosity %" in ran.stdout and "recovered" in ran.stdout
    for png in ("recovery.png", "pores.png"):
        assert (rec / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert str(rec / png) in ran.stdout


def test_demo_recovery_size_checked_before_work(cli, tmp_path, one_line_error):
    ran = cli("demo", "--out", tmp_path / "d", "--recovery-size", 8)
    one_line_error(ran, "--recovery-size", "40")
    assert not (tmp_path / "d").exists()
