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


DEVICE_MEMORY_FRACTION = 0.6
"""Share of a GPU's free memory one process's network passes may plan for (the rest: CUDA context,
cuDNN workspaces, fragmentation, other libraries on the same GPU)."""


def device_memory_budget(dev: Any, *, fraction: float = DEVICE_MEMORY_FRACTION, share: int = 1) -> int | None:
    """Bytes of GPU memory one network pass on ``dev`` may plan for; None where no device bound applies.

    ``fraction`` of the device's free memory plus what torch's caching allocator holds unused (it is
    free to this process), split evenly between ``share`` passes that may run at once in the process.
    Read at call time, so a pass sized by it fits what is free now, whatever the size of the volume.

    Parameters
    ----------
    dev
        A ``torch.device``; a CPU device (or None) has no device bound: None is returned.
    fraction
        Share of the free memory to plan for, in (0, 1].
    share
        Passes of this process that may run on the device at once (>= 1).

    Returns
    -------
    int or None
        Bytes, or None for the CPU.
    """
    if not 0 < float(fraction) <= 1:
        raise ConfigError(f"fraction must be in (0, 1], got {fraction}")
    if int(share) < 1:
        raise ConfigError(f"share must be >= 1, got {share}")
    if dev is None or getattr(dev, "type", "cpu") != "cuda":
        return None
    import torch

    free, _total = torch.cuda.mem_get_info(dev)
    cached = torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
    return int((free + max(0, cached)) * float(fraction) / int(share))
