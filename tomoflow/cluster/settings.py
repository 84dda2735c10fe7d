"""Cluster settings files: built-in defaults, ``<kind>.yaml`` lookup, profiles.

The settings of a cluster kind are, from bottom to top: the built-in defaults below, the first
``<kind>.yaml`` found (``config_dir``, else ``$TOMOFLOW_CLUSTER_DIR``, else the files shipped in
this package under ``tomoflow/cluster/defaults/``), then a profile of that file. Nothing here
imports Dask.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tomoflow.errors import ConfigError

__all__ = ["CLUSTER_KINDS", "CLUSTER_DIR_ENV", "DEFAULTS_DIR", "load_cluster_config"]

logger = logging.getLogger(__name__)

#: Cluster kinds tomoflow can start itself (each has a ``<kind>.yaml`` settings file).
CLUSTER_KINDS: tuple[str, ...] = ("local", "local-cuda", "slurm", "pbs")

#: Environment variable naming a directory of cluster settings files.
CLUSTER_DIR_ENV = "TOMOFLOW_CLUSTER_DIR"

#: The settings files shipped with tomoflow (package data; ``cluster/*.yaml`` of the source tree
#: are symbolic links to them).
DEFAULTS_DIR: Path = Path(__file__).resolve().parent / "defaults"

# Settings under every file, used alone when no <kind>.yaml is found (e.g. a config_dir without one).
_DEFAULTS: dict[str, dict[str, Any]] = {
    "local": {
        "n_workers": None,  # None: one worker per core (processes) or one worker (threads)
        "threads_per_worker": None,  # None: 1 with processes, all cores with threads
        "memory_limit": "auto",  # machine memory split evenly between workers
        "processes": True,
        "dashboard_address": "127.0.0.1:8787",
    },
    "local-cuda": {
        "n_workers": None,  # None: one worker per visible GPU
        "threads_per_worker": 4,
        "memory_limit": "auto",
        "dashboard_address": "127.0.0.1:8787",
        "rmm_pool_size": 0.5,
        "rmm_allocator_external_lib_list": ["cupy", "torch"],
    },
    # security: TLS with temporary credentials between the scheduler and the workers on other machines
    "slurm": {"jobs": 1, "gpus_per_job": 0, "dashboard_address": "127.0.0.1:8787", "security": True},
    "pbs": {"jobs": 1, "gpus_per_job": 0, "dashboard_address": "127.0.0.1:8787", "security": True},
}


def _config_dirs(config_dir: str | os.PathLike | None) -> list[Path]:
    """Directories searched for ``<kind>.yaml``, first match wins."""
    if config_dir is not None:
        return [Path(config_dir)]
    dirs = []
    if os.environ.get(CLUSTER_DIR_ENV):
        dirs.append(Path(os.environ[CLUSTER_DIR_ENV]))
    dirs.append(DEFAULTS_DIR)
    return dirs


def _read_yaml(path: Path) -> dict[str, Any]:
    """The mapping in a settings file (``{}`` for an empty file).

    Raises
    ------
    ConfigError
        The file cannot be read, is not YAML, or does not hold a mapping.
    """
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read cluster settings ({exc.strerror or exc})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: cluster settings must be a mapping of keys to values")
    return dict(data)


def _apply_profile(data: dict[str, Any], profile: str | None, source: str) -> dict[str, Any]:
    profiles = data.pop("profiles", None) or {}
    if not isinstance(profiles, Mapping):
        raise ConfigError(f"{source}: `profiles` must map profile names to settings")
    if profile is None:
        return data
    if profile not in profiles:
        raise ConfigError(f"{source}: no profile {profile!r}; profiles in this file: {sorted(profiles) or 'none'}")
    chosen = profiles[profile] or {}
    if not isinstance(chosen, Mapping):
        raise ConfigError(f"{source}: profile {profile!r} must be a mapping of settings")
    return {**data, **chosen}


def _find_file(kind: str, config_dir: str | os.PathLike | None) -> Path | None:
    for d in _config_dirs(config_dir):
        candidate = d / f"{kind}.yaml"
        if candidate.is_file():
            return candidate
    logger.debug(
        "no %s.yaml in %s; using built-in %r defaults",
        kind,
        ", ".join(map(str, _config_dirs(config_dir))),
        kind,
    )
    return None


def load_cluster_config(
    kind: str,
    *,
    config_dir: str | os.PathLike | None = None,
    profile: str | None = None,
    path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Read the settings of a cluster kind: built-in defaults, then its YAML file, then a profile.

    Parameters
    ----------
    kind
        ``"local"``, ``"local-cuda"``, ``"slurm"`` or ``"pbs"``.
    config_dir
        Directory holding ``<kind>.yaml``; a missing file there leaves the built-in defaults.
        Default: ``$TOMOFLOW_CLUSTER_DIR`` if it has the file, else the settings files shipped with
        tomoflow (:data:`DEFAULTS_DIR`, the same files as ``cluster/`` of the source tree).
    profile
        Name of an entry of the file's ``profiles:`` mapping (e.g. ``"gpu"``) whose keys override
        the top-level ones.
    path
        Read this file instead of looking ``<kind>.yaml`` up.

    Returns
    -------
    dict
        The merged settings, with ``kind`` set and, when a file was read, ``source`` (its path).

    Raises
    ------
    ConfigError
        Unknown kind, unreadable or invalid YAML, a ``kind:`` that contradicts ``kind``, or an
        unknown profile.
    """
    if kind not in CLUSTER_KINDS:
        raise ConfigError(f"unknown cluster kind {kind!r}; known kinds: {', '.join(CLUSTER_KINDS)}")
    settings: dict[str, Any] = dict(_DEFAULTS[kind])
    if path is not None:
        file: Path | None
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"{file}: cluster settings file not found")
    else:
        file = _find_file(kind, config_dir)
    data: dict[str, Any] = {}
    source = "built-in defaults"
    if file is not None:
        source = str(file)
        data = _read_yaml(file)
        file_kind = data.pop("kind", kind)
        if file_kind != kind:
            raise ConfigError(f"{file}: `kind: {file_kind}` but settings for {kind!r} were asked for")
        logger.debug("cluster settings for %r read from %s", kind, file)
    data = _apply_profile(data, profile, source)
    settings.update(data)
    settings["kind"] = kind
    if file is not None:
        settings["source"] = str(file)
    return settings
