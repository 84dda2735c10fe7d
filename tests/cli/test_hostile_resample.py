"""``tomoflow resample`` given hostile grids and matrices: every plan is bounded and every matrix checked
before anything is created (:func:`tomoflow.pipeline.resample.plan_resample`,
:func:`tomoflow.register.transform.check_affine`). A mistyped voxel size or chunk is refused at once, not
planned for minutes; a singular matrix is refused, not interpolated into a constant volume. CLI: one
``error:`` line, exit code 2, the inputs byte-identical, nothing left behind; API: the tomoflow error."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest

from tomoflow.errors import ConfigError, InputError, StoreError
from tomoflow.io.synthetic import SIMULATION_TRUTH, write_multiscale_pair
from tomoflow.pipeline.resample import MAX_CHUNK_VOXELS, MIN_CHUNK_EDGE, plan_resample, resample_volume
from tomoflow.register.transform import MAX_CONDITION, check_affine
from tomoflow.sim import simulate_multiscale_pair

FAST_S = 30.0  # a refusal is a check, not work: far under this on any machine


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    pair = simulate_multiscale_pair(
        hr_shape=(24, 24, 24), lfov_shape=(16, 16, 16), max_translation_lfov_vox=1.0, seed=5
    )
    hr, lf = write_multiscale_pair(pair, d / "hr.zarr", d / "lfov.zarr")
    truth = json.loads((hr / "zarr.json").read_text())["attributes"]["extra"][SIMULATION_TRUTH]["hr_to_lfov_matrix"]
    return hr, lf, np.asarray(truth)


def _digest(*roots: Path) -> dict[str, str]:
    out = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        out.update({str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files})
    return out


def _refused(cli, one_line_error, unchanged, folder: Path, inputs: list[Path], args: list, *words) -> str:
    before = _digest(*inputs)
    t0 = time.perf_counter()
    with unchanged(folder):
        line = one_line_error(cli("resample", *args), *words)
    assert time.perf_counter() - t0 < FAST_S
    assert _digest(*inputs) == before
    return line


# ----------------------------------------------------------------------------- planned outputs bounded
def test_a_tiny_voxel_size_is_refused_at_once(cli, one_line_error, unchanged, stores, tmp_path):
    """``--voxel 1e-6`` planned a 60000001³ grid (killed at 120 s, leaving o.zarr)."""
    _, lf, _ = stores
    for voxel in ("1e-6", "1e-300"):
        _refused(
            cli,
            one_line_error,
            unchanged,
            tmp_path,
            [lf],
            [lf, "-o", tmp_path / "o.zarr", "--voxel", voxel, "--cluster", "none"],
            "resampled volume",
            "one command may plan",
        )


def test_tiny_chunks_are_refused_at_once(cli, one_line_error, unchanged, stores, tmp_path):
    """``--chunk 1`` on a 51³ output ran for minutes (132651 one-voxel tasks)."""
    _, lf, _ = stores
    for chunk in (1, 2, MIN_CHUNK_EDGE - 1):
        _refused(
            cli,
            one_line_error,
            unchanged,
            tmp_path,
            [lf],
            [lf, "-o", tmp_path / "o.zarr", "--voxel", 1.2, "--chunk", chunk, "--cluster", "none"],
            "too small",
            f"{MIN_CHUNK_EDGE} voxels per axis",
        )
    # the floor is per axis and never above the axis: a chunk of the whole (short) axis is fine
    plan = plan_resample(lf, None, matrix=np.eye(4), shape=(5, 40, 40), spacing_um=1.0, chunks=(5, 16, 16))
    assert plan.chunks == (5, 16, 16) and plan.n_chunks >= 9


def test_the_output_is_bounded_by_the_free_space(stores, tmp_path, monkeypatch):
    import shutil as _shutil

    import tomoflow._checks as checks

    _, lf, _ = stores
    usage = _shutil.disk_usage(tmp_path)
    monkeypatch.setattr(checks.shutil, "disk_usage", lambda p: usage._replace(free=100_000))
    with pytest.raises(StoreError, match="free"):
        resample_volume(lf, tmp_path / "o.zarr", matrix=np.eye(4), shape=(61, 61, 61), spacing_um=1.0)
    assert not (tmp_path / "o.zarr").exists()
    resample_volume(lf, tmp_path / "small.zarr", matrix=np.eye(4), shape=(16, 16, 16), spacing_um=1.0)


def test_chunk_counts_and_chunk_sizes_are_bounded(stores, tmp_path):
    _, lf, _ = stores
    with pytest.raises(ConfigError, match="chunks"):  # billions of files: refused before the footprint
        plan_resample(
            lf, tmp_path / "o.zarr", matrix=np.eye(4), shape=(32_000,) * 3, spacing_um=1e-3, chunks=(16, 16, 16)
        )
    edge = round(MAX_CHUNK_VOXELS ** (1 / 3)) * 2
    with pytest.raises(ConfigError, match="one task"):
        plan_resample(
            lf, tmp_path / "o.zarr", matrix=np.eye(4), shape=(edge,) * 3, spacing_um=60 / edge, chunks=(edge,) * 3
        )
    assert not (tmp_path / "o.zarr").exists()


# ----------------------------------------------------------------------------- matrices checked
def _singular_matrices(truth: np.ndarray) -> dict[str, np.ndarray]:
    zero = np.zeros((4, 4))
    affine_zero = np.eye(4) * 0
    affine_zero[3, 3] = 1.0
    rank2 = truth.copy()
    rank2[:3, 2] = rank2[:3, 1]  # two equal columns: the grid maps onto a plane
    squeezed = truth.copy()
    squeezed[:3, :3] *= 1e-9  # invertible in exact arithmetic, a point in practice
    stretched = truth.copy()
    stretched[:3, 0] *= 10 * MAX_CONDITION  # one axis a hundred thousand times the others
    nan = truth.copy()
    nan[1, 1] = np.nan
    projective = truth.copy()
    projective[3] = [0.0, 0.0, 0.1, 1.0]
    return {
        "zero": zero,
        "affine-zero": affine_zero,
        "rank-2": rank2,
        "squeezed": squeezed,
        "ill-conditioned": stretched,
        "nan": nan,
        "projective": projective,
    }


@pytest.mark.parametrize("name", ["zero", "affine-zero", "rank-2", "squeezed", "ill-conditioned", "nan", "projective"])
def test_a_registration_whose_matrix_is_not_invertible_is_refused(
    cli, one_line_error, unchanged, stores, tmp_path, name
):
    hr, lf, truth = stores
    m = _singular_matrices(truth)[name]
    reg = tmp_path / "reg.json"
    reg.write_text(json.dumps({"matrix": [[float(v) for v in row] for row in m]}))
    _refused(
        cli,
        one_line_error,
        unchanged,
        tmp_path,
        [lf, hr, reg],
        [lf, "-o", tmp_path / "o.zarr", "--registration", reg, "--hr", hr, "--cluster", "none"],
        "reg.json",
        "matrix",
    )


@pytest.mark.parametrize("name", ["zero", "affine-zero", "rank-2", "squeezed", "ill-conditioned", "nan", "projective"])
def test_the_api_refuses_the_same_matrices(stores, tmp_path, name):
    from tomoflow.register.resample import resample_to_grid

    hr, lf, truth = stores
    m = _singular_matrices(truth)[name]
    with pytest.raises(ConfigError, match="matrix"):
        resample_volume(lf, tmp_path / "o.zarr", matrix=m, shape=(24, 24, 24), spacing_um=1.0)
    assert not (tmp_path / "o.zarr").exists()
    with pytest.raises(ConfigError, match="matrix"):
        resample_to_grid(np.zeros((16, 16, 16), np.float32), m, (24, 24, 24), 1.0, 4.0)
    with pytest.raises(InputError, match="reg.json"):
        check_affine(m, "matrix", path=tmp_path / "reg.json")


def test_good_matrices_pass_and_a_reflection_is_allowed(stores):
    _, _, truth = stores
    np.testing.assert_array_equal(check_affine(truth), truth)
    flip = np.diag([1.0, 1.0, -1.0, 1.0])
    check_affine(flip)  # a mirror is invertible: a legitimate resampling
    scaled = np.diag([0.5, 2.0, 1.0, 1.0])  # a 9-DOF registration's scales
    check_affine(scaled)
