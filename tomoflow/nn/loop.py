"""What the training loops of both networks share."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["ProgressCallback"]

ProgressCallback = Callable[[int, int, int, "float | None", "float | None"], None]
"""``progress(epoch, step, n_steps, train_loss, val_loss)``; epoch 0 is the simulation of the pairs
(``step`` = scans done of ``n_steps``), training epochs count from 1 (``val_loss`` given once per
epoch, at its end, with ``step == n_steps``)."""
