"""Tests of tomoflow/cluster/settings.py: settings files, their lookup, profiles, and the deployment folder."""

from __future__ import annotations

import filecmp
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

import tomoflow.cluster as tc
from tomoflow.cluster.settings import DEFAULTS_DIR
from tomoflow.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kind", tc.CLUSTER_KINDS)
def test_cluster_yaml_files_load(kind: str, cluster_dir: Path) -> None:
    settings = tc.load_cluster_config(kind, config_dir=cluster_dir)
    assert settings["kind"] == kind
    assert settings["source"] == str(cluster_dir / f"{kind}.yaml")
    assert "profiles" not in settings
    if kind in ("slurm", "pbs"):
        for key in ("cores", "memory", "processes", "walltime", "queue", "job_extra_directives", "jobs"):
            assert key in settings
        gpu = tc.load_cluster_config(kind, config_dir=cluster_dir, profile="gpu")
        assert gpu["gpus_per_job"] > 0


def test_packaged_defaults_are_the_deployment_files(cluster_dir: Path) -> None:
    """One copy: cluster/<kind>.yaml (links) read exactly as the package's files."""
    assert DEFAULTS_DIR == Path(tc.__file__).resolve().parent / "defaults"
    assert sorted(p.stem for p in DEFAULTS_DIR.glob("*.yaml")) == sorted(tc.CLUSTER_KINDS)
    for kind in tc.CLUSTER_KINDS:
        top, packaged = cluster_dir / f"{kind}.yaml", DEFAULTS_DIR / f"{kind}.yaml"
        assert filecmp.cmp(top, packaged, shallow=False), f"{top} differs from {packaged}"


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(tc.CLUSTER_DIR_ENV, raising=False)
    # nothing given: the packaged defaults
    settings = tc.load_cluster_config("slurm")
    assert settings["source"] == str(DEFAULTS_DIR / "slurm.yaml")
    assert settings["cores"] == 32 and settings["jobs"] == 2

    # $TOMOFLOW_CLUSTER_DIR first; a kind it lacks still comes from the package
    env_dir = tmp_path / "site"
    env_dir.mkdir()
    (env_dir / "local.yaml").write_text("kind: local\nn_workers: 3\n")
    monkeypatch.setenv(tc.CLUSTER_DIR_ENV, str(env_dir))
    assert tc.load_cluster_config("local")["source"] == str(env_dir / "local.yaml")
    assert tc.load_cluster_config("local")["n_workers"] == 3
    assert tc.load_cluster_config("pbs")["source"] == str(DEFAULTS_DIR / "pbs.yaml")

    # an explicit config_dir is the only place looked at: without the file, built-in defaults
    explicit = tmp_path / "explicit"
    explicit.mkdir()
    settings = tc.load_cluster_config("local", config_dir=explicit)
    assert "source" not in settings and settings["n_workers"] is None
    (explicit / "local.yaml").write_text("n_workers: 5\n")
    assert tc.load_cluster_config("local", config_dir=explicit)["n_workers"] == 5


def test_settings_file_errors(tmp_path: Path, cluster_dir: Path) -> None:
    with pytest.raises(ConfigError, match="no profile 'nope'"):
        tc.load_cluster_config("slurm", config_dir=cluster_dir, profile="nope")
    with pytest.raises(ConfigError, match="unknown cluster kind"):
        tc.load_cluster_config("kubernetes")
    with pytest.raises(ConfigError, match="settings file not found"):
        tc.load_cluster_config("local", path=tmp_path / "missing.yaml")
    (tmp_path / "local.yaml").write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        tc.connect("local", config_dir=tmp_path)
    (tmp_path / "local.yaml").write_text("kind: slurm\n")
    with pytest.raises(ConfigError, match="kind: slurm"):
        tc.connect("local", config_dir=tmp_path)
    (tmp_path / "local.yaml").write_text("n_workers: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        tc.connect("local", config_dir=tmp_path)


def test_kubernetes_manifest(cluster_dir: Path) -> None:
    docs = [d for d in yaml.safe_load_all((cluster_dir / "kubernetes.yaml").read_text()) if d]
    cluster = next(d for d in docs if d["kind"] == "DaskCluster")
    assert cluster["apiVersion"] == "kubernetes.dask.org/v1"
    (scheduler,) = cluster["spec"]["scheduler"]["spec"]["containers"]
    assert scheduler["args"][:2] == ["dask", "scheduler"]
    ports = {p["name"]: p["containerPort"] for p in scheduler["ports"]}
    assert ports == {"tcp-comm": 8786, "http-dashboard": 8787}
    (worker,) = cluster["spec"]["worker"]["spec"]["containers"]
    args = worker["args"]
    assert args[args.index("--resources") + 1] == "GPU=1"
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "tomoflow" in worker["image"] and worker["image"] == scheduler["image"]


def test_readme_covers_every_deployment(cluster_dir: Path) -> None:
    text = (cluster_dir / "README.md").read_text()
    for needle in (
        "local-cuda",
        "SLURM",
        "PBS",
        "Kubernetes",
        "scheduler file",
        "ssh -N -L",
        'resources={"GPU": 1}',
        "waits forever",
        "tomoflow[hpc]",
        "tomoflow[gpu]",
        "tomoflow/cluster/defaults/",
        "TOMOFLOW_CLUSTER_DIR",
    ):
        assert needle in text, needle


@pytest.mark.slow
@pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("pip", "setuptools")),
    reason="building a wheel offline needs pip and setuptools (which brings bdist_wheel) here",
)
def test_wheel_ships_the_settings_files(tmp_path: Path) -> None:
    """A built wheel holds the YAML defaults, and tomoflow installed from it finds them."""
    src = tmp_path / "src"  # build from a copy: an in-tree build writes build/ into the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "tomoflow", src / "tomoflow", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            ".",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(out),
        ],
        cwd=src,
        check=True,
        timeout=300,
        capture_output=True,
    )
    (wheel,) = out.glob("tomoflow-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for kind in tc.CLUSTER_KINDS:
            assert f"tomoflow/cluster/defaults/{kind}.yaml" in names
        site = tmp_path / "site"
        zf.extractall(site)  # what pip installs into site-packages

    code = (
        "import tomoflow.cluster as tc; "
        "s = tc.load_cluster_config('slurm'); "
        "print(tc.__file__); print(s['source']); print(s['cores'])"
    )
    env = {k: v for k, v in os.environ.items() if k != tc.CLUSTER_DIR_ENV}
    env["PYTHONPATH"] = str(site)
    lines = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, timeout=120, capture_output=True, text=True
    ).stdout.split()
    module, source, cores = lines[-3:]
    assert Path(module).resolve().is_relative_to(site.resolve())
    assert Path(source) == site.resolve() / "tomoflow" / "cluster" / "defaults" / "slurm.yaml"
    assert cores == "32"
