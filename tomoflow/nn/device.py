"""The torch device of a ``device`` argument (``"cpu"``, ``"cuda"``, ``"auto"``, or None: the config's)."""

from __future__ import annotations

from typing import Any

from tomoflow._checks import check_choice
from tomoflow.errors import ConfigError


def resolve_device(device: str | None = None) -> Any:
    """``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when torch sees a GPU) as a ``torch.device``; None:
    the device of :func:`tomoflow.config.get` (``"auto"`` unless configured)."""
    import torch

    if device is None:
        from tomoflow import config

        device = config.get().device
    device = check_choice("device", device, ("cpu", "cuda", "auto"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' asked for, but torch sees no CUDA device; use 'cpu' or 'auto'")
    return torch.device(device)
