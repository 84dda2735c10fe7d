"""``tomoflow demo``: the main job end to end on a local Dask cluster of worker processes."""


def test_demo_end_to_end(cli, tmp_path):
    out = tmp_path / "demo [b]"
    ran = cli("demo", "--out", out, "--size", 48, "--rows", 8, "--angles", 48, "--workers", 1)
    assert ran.code == 0, ran
    assert "Dask dashboard: http://127.0.0.1:" in ran.stdout
    assert f"tomoflow info {out / 'scan.zarr'}" in ran.stdout
    assert (out / "overview.png").exists()
    assert (out / "volume.zarr").exists()
