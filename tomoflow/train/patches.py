"""Training batches of the resolution-recovery network, read from a pair source by data-loader workers.

:class:`PatchStream` is a torch ``IterableDataset`` of batches: batch ``k`` of epoch ``e`` is drawn from
``numpy.random.default_rng([seed, e, k])`` (corners :meth:`~tomoflow.recover.splits.Split.sample`, then
the augmentation), whatever worker makes it, so ``(seed, epoch)`` reproduces the patches and a resumed run
draws what the uninterrupted one drew. Each patch is read from the pair source (a box of the target and,
for a :class:`~tomoflow.io.pair_source.StorePair`, the LFOV resampled onto it), normalised and augmented
in the worker; the stream is consumed in order, epoch after epoch, from the first epoch to run.
:func:`patch_loader` wraps it in a ``torch.utils.data.DataLoader`` (``num_workers`` processes, each with
its own opened stores: :meth:`for_worker` of the source). Memory: O(patch x batch x prefetch).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from tomoflow.recover.augment import augment_pair
from tomoflow.recover.normalization import apply_normalization
from tomoflow.recover.pairs import BoxView
from tomoflow.recover.splits import PAD_MODE, Split
from tomoflow.recover.tiling import read_box

__all__ = ["PatchStream", "make_batch", "patch_loader"]


def make_batch(
    source: Any,
    split: Split,
    norm: dict[str, Any],
    *,
    patch: int,
    context: int,
    batch: int,
    seed: int,
    epoch: int,
    step: int,
    augment: dict[str, Any] | None,
) -> dict[str, Any]:
    """Batch ``step`` of ``epoch``: ``{"x": (batch, 1, p + 2c, ...), "y": (batch, 1, p, p, p), "gains":
    (batch, 2) gain and offset of each patch's augmentation, "epoch", "step"}`` (NumPy, normalised units)."""
    rng = np.random.default_rng([int(seed), int(epoch), int(step)])
    view = BoxView(source, "input")
    xb = np.empty((batch, 1) + (patch + 2 * context,) * 3, dtype=np.float32)
    yb = np.empty((batch, 1, patch, patch, patch), dtype=np.float32)
    gains = np.zeros((batch, 2), dtype=np.float32)
    gains[:, 0] = 1.0
    for i, c in enumerate(split.sample(batch, rng)):
        box = tuple((int(s), int(s) + patch) for s in c)
        xi = read_box(view, c - context, c + patch + context, PAD_MODE) if context else source.read_input(box)
        xi, yi = apply_normalization(xi, norm), apply_normalization(source.read_target(box), norm)
        if augment is not None:
            xb[i, 0], yb[i, 0], drawn = augment_pair(
                xi,
                yi,
                rng,
                flips=augment["flips"],
                permute=augment["permute"],
                gain=augment["gain"],
                offset=augment["offset"],
            )
            gains[i] = drawn["gain"], drawn["offset"]
        else:
            xb[i, 0], yb[i, 0] = xi, yi
    return {"x": xb, "y": yb, "gains": gains, "epoch": int(epoch), "step": int(step)}


class PatchStream(torch.utils.data.IterableDataset):
    """Endless stream of training batches from ``first_epoch`` on (module docstring); the arguments are
    those of :func:`make_batch`, with ``n_steps`` batches per epoch."""

    def __init__(self, source: Any, split: Split, norm: dict[str, Any], *, first_epoch: int, n_steps: int, **kw: Any):
        super().__init__()
        self.source, self.split, self.norm = source, split, norm
        self.first_epoch, self.n_steps, self.kw = int(first_epoch), int(n_steps), kw

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        source = self.source.for_worker() if info is not None else self.source
        j = worker
        while True:
            epoch, step = self.first_epoch + j // self.n_steps, j % self.n_steps
            yield make_batch(source, self.split, self.norm, epoch=epoch, step=step, **self.kw)
            j += workers


def patch_loader(stream: PatchStream, num_workers: int, *, pin_memory: bool = False) -> Any:
    """A ``DataLoader`` over ``stream`` with ``num_workers`` worker processes (0: in this process); batches
    come in stream order whatever the number of workers; ``pin_memory``: in page-locked memory (for a
    GPU: copies to it can then overlap its compute)."""
    return torch.utils.data.DataLoader(
        stream,
        batch_size=None,
        num_workers=int(num_workers),
        prefetch_factor=2 if num_workers else None,
        persistent_workers=False,
        pin_memory=bool(pin_memory),
    )
