"""``tomoflow recon``: the centre it uses and says it used, and mistakes refused before anything is written."""

import re

import pytest


def test_recon_then_info(cli, tooth_store, tmp_path):
    vol = tmp_path / "tooth_vol.zarr"
    ran = cli("recon", tooth_store, "--out", vol, "--cluster", "none", "--png", tmp_path / "o.png")
    assert ran.code == 0, ran
    ran = cli("info", vol)
    assert ran.code == 0 and "2 x 640 x 640" in ran.stdout and "fbp" in ran.stdout, ran
    assert (tmp_path / "o.png").stat().st_size > 10_000


def test_help_says_where_the_default_centre_comes_from(cli):
    ran = cli("recon", "--help")
    assert ran.code == 0
    text = " ".join(re.sub(r"[│\s]+", " ", ran.stdout).split())
    assert "omitted = the centre saved by `tomoflow center --save`, else auto" in text, ran


def _centre(stdout):
    m = re.search(r"rotation centre ([\d.]+) px \((.*)\)", stdout)
    assert m, stdout
    return float(m.group(1)), m.group(2)


@pytest.mark.slow
def test_recon_uses_the_saved_centre(cli, fresh_tooth_store, tmp_path):
    from tomoflow.io.volume_store import VolumeStore

    store = fresh_tooth_store
    ran = cli("recon", store, "-o", tmp_path / "auto.zarr", "--cluster", "none")
    assert ran.code == 0, ran
    c_auto, source = _centre(ran.stdout)
    assert "no centre saved" in source

    ran = cli("center", store, "--save")
    assert ran.code == 0, ran
    saved = float(re.search(r"rotation centre: ([\d.]+)", ran.stdout).group(1))
    vol = tmp_path / "vol [b].zarr"
    ran = cli("recon", store, "-o", vol, "--cluster", "none", "--png", tmp_path / "o [b].png")
    assert ran.code == 0, ran
    used, source = _centre(ran.stdout)
    assert source == "saved by `tomoflow center --save`"
    assert used == pytest.approx(saved, abs=0.01)
    assert VolumeStore.open(vol).attrs.rotation_center == pytest.approx(saved, abs=0.01)
    assert f"wrote {vol} 2 x 640 x 640 voxels" in ran.stdout
    assert f"overview: {tmp_path / 'o [b].png'}" in ran.stdout

    ran = cli("recon", store, "-o", tmp_path / "given.zarr", "--cluster", "none", "--center", "300")
    assert ran.code == 0, ran
    assert _centre(ran.stdout) == (300.0, "given with --center")
    ran = cli("recon", store, "-o", tmp_path / "auto2.zarr", "--cluster", "none", "--center", "auto")
    assert ran.code == 0, ran
    assert _centre(ran.stdout)[1] == "estimated, --center auto"


@pytest.mark.parametrize("center", ["abc", "1e9", "-5", "nan", "inf", "640"])
def test_bad_centre_is_refused_before_anything_is_written(
    cli, one_line_error, unchanged, tooth_store, tmp_path, center
):
    with unchanged(tmp_path):
        one_line_error(
            cli("recon", tooth_store, "-o", tmp_path / "v.zarr", "--cluster", "none", "--center", center),
            "centre" if center not in ("abc", "nan", "inf") else "--center",
        )


def test_recon_into_read_only_folder(cli, one_line_error, tooth_store, readonly_dir):
    vol = readonly_dir / "tomoflow-test-vol.zarr"
    one_line_error(cli("recon", tooth_store, "-o", vol, "--cluster", "none", "--center", "296"), str(vol))
    assert not vol.exists()


def test_missing_gpu_extra_keeps_its_brackets(cli, one_line_error, unchanged, tooth_store, tmp_path):
    """``pip install 'tomoflow[gpu]'`` is printed with ``[gpu]`` (it was swallowed as markup)."""
    try:
        import dask_cuda  # noqa: F401  (imported to check it is installed)
    except ImportError:
        pass
    else:
        pytest.skip("dask-cuda is installed: local-cuda starts instead of failing")
    with unchanged(tmp_path):
        one_line_error(
            cli("recon", tooth_store, "-o", tmp_path / "v.zarr", "--cluster", "local-cuda"),
            "pip install 'tomoflow[gpu]'",
        )
