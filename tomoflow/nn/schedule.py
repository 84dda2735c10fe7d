"""The learning-rate schedule of both trainers."""

from __future__ import annotations

import math


def cosine_lr(progress: float, lr: float, lr_final: float) -> float:
    """Cosine decay from ``lr`` (progress 0) to ``lr * lr_final`` (progress 1)."""
    t = min(max(progress, 0.0), 1.0)
    return lr * (lr_final + (1.0 - lr_final) * 0.5 * (1.0 + math.cos(math.pi * t)))
