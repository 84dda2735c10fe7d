"""The grammar of cluster specs, shared by :func:`~tomoflow.cluster.connect` and
:func:`~tomoflow.cluster.start_cluster`: which strings name a kind tomoflow starts and which a
scheduler that already runs."""

from __future__ import annotations

import re
from typing import Any

from tomoflow.cluster.settings import CLUSTER_KINDS
from tomoflow.errors import ConfigError

#: Human-readable list of everything :func:`~tomoflow.cluster.connect` accepts (for error messages).
VALID_SPECS: tuple[str, ...] = (
    "local",
    "local-cuda",
    "slurm[:profile]",
    "pbs[:profile]",
    "tcp://host:port (or tls://, ucx://, inproc://, host:port)",
    "path/to/scheduler.json (an existing scheduler file)",
    "path/to/cluster.yaml (a settings file with a `kind:` key)",
)

_ADDRESS_SCHEMES = ("tcp", "tls", "inproc", "ucx", "ucxx", "ws", "wss")
_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


def is_address(spec: str) -> bool:
    """Whether ``spec`` is a scheduler address (``tcp://host:port``, ``host:port``, ...)."""
    scheme, sep, _ = spec.partition("://")
    if sep:
        return scheme in _ADDRESS_SCHEMES
    return bool(_HOST_PORT.match(spec))


def parse_kind(spec: str) -> tuple[str, str | None] | None:
    """``"slurm:gpu"`` -> ``("slurm", "gpu")``; ``None`` when ``spec`` names no cluster kind."""
    kind, _, profile = spec.partition(":")
    if kind in CLUSTER_KINDS:
        if profile and kind in ("local", "local-cuda"):
            return None
        return kind, profile or None
    return None


def invalid_spec(spec: Any, why: str = "") -> ConfigError:
    """The error for a spec that is none of :data:`VALID_SPECS` (the message lists them)."""
    lines = "\n  ".join(VALID_SPECS)
    reason = f" ({why})" if why else ""
    return ConfigError(f"invalid cluster spec {spec!r}{reason}; valid specs are:\n  {lines}")
