"""Parameters and optimiser state of a torch module as plain tensors (for safetensors checkpoints)."""

from __future__ import annotations

from typing import Any


def count_parameters(model: Any) -> int:
    """Number of trainable parameters of a torch module."""
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def optimizer_tensors(opt: Any) -> dict[str, Any]:
    """The state of a torch optimiser as flat CPU tensors ``{"opt.<param>.<name>": tensor}``."""
    out = {}
    for i, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            import torch

            out[f"opt.{i}.{k}"] = v.detach().cpu().contiguous() if isinstance(v, torch.Tensor) else torch.tensor(v)
    return out


def load_optimizer(opt: Any, tensors: dict[str, Any]) -> None:
    """Load the state written by :func:`optimizer_tensors` into ``opt`` (same parameters)."""
    sd = opt.state_dict()
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        _, i, k = key.split(".", 2)
        state.setdefault(int(i), {})[k] = v
    sd["state"] = state
    opt.load_state_dict(sd)
