"""The one training loop of both networks: epochs of steps under a cosine learning-rate schedule, a
validation per epoch, the best weights kept, early stopping (patience), a time budget, and a
checkpoint after every epoch from which a rerun continues exactly.

A trainer supplies what is its own: one optimisation step (:data:`StepFunction`), the validation, the
history entry of an epoch and the checkpoint writer (the trainers in :mod:`tomoflow.train` write it
through the output policy; this kernel writes no file). The random numbers of epoch ``e`` come from
``numpy.random.default_rng([seed, e])``, so a resumed run draws what the uninterrupted one would have.
torch is imported lazily.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tomoflow.nn.schedule import cosine_lr

__all__ = [
    "ProgressCallback",
    "LoopState",
    "StepFunction",
    "copy_state",
    "checkpoint_tensors",
    "restore",
    "train_epochs",
]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, int, "float | None", "float | None"], None]
"""``progress(epoch, step, n_steps, train_loss, val_loss)``; epoch 0 is the simulation of the pairs
(``step`` = scans done of ``n_steps``), training epochs count from 1 (``val_loss`` given once per
epoch, at its end, with ``step == n_steps``)."""

StepFunction = Callable[[int, int, np.random.Generator], "tuple[float, int]"]
"""``step(epoch, step, rng) -> (loss sum, count)``: one optimisation step (batch, forward, loss, backward,
``opt.step()``); the running training loss of the epoch is the sum of the sums over the sum of the counts."""


@dataclass
class LoopState:
    """Where a training stands (what a checkpoint holds besides the tensors).

    Attributes
    ----------
    epoch
        Last finished epoch (0: none yet).
    best_val, best_epoch
        Best validation value so far and its epoch (0: the starting network).
    bad
        Epochs since the last improvement.
    history
        One entry per finished epoch (the trainer's :func:`train_epochs` ``record``).
    train_s
        Wall seconds spent training, summed over resumed runs.
    best_state
        The best weights (a state dict).
    stopped
        Why the loop ended: ``"epochs"``, ``"early stopping"``, ``"time limit"`` or ``"resumed finished run"``.
    """

    epoch: int = 0
    best_val: float = math.inf
    best_epoch: int = 0
    bad: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    train_s: float = 0.0
    best_state: dict[str, Any] = field(default_factory=dict)
    stopped: str = "epochs"


def copy_state(model: Any) -> dict[str, Any]:
    """A detached copy of ``model``'s state dict (the best weights so far)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def checkpoint_tensors(model: Any, best_state: dict[str, Any], opt: Any) -> dict[str, Any]:
    """The tensors of a checkpoint: ``model.*`` (current), ``best.*`` and the optimiser's ``opt.*``, on the CPU."""
    from tomoflow.nn.state import optimizer_tensors

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in best_state.items()})
    tensors.update(optimizer_tensors(opt))
    return tensors


def restore(model: Any, opt: Any, tensors: dict[str, Any], device: Any) -> dict[str, Any]:
    """Load the current weights and the optimiser state of checkpoint ``tensors`` (:func:`checkpoint_tensors`)
    into ``model`` and ``opt``; return the best weights (on ``device``)."""
    from tomoflow.nn.state import load_optimizer

    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    best = {k[5:]: v.to(device) for k, v in tensors.items() if k.startswith("best.")}
    load_optimizer(opt, {k: v.to(device) for k, v in tensors.items() if k.startswith("opt.")})
    return best


def train_epochs(
    model: Any,
    opt: Any,
    state: LoopState,
    *,
    epochs: int,
    n_steps: int,
    lr: float,
    lr_final: float,
    seed: int,
    patience: int,
    time_limit_s: float | None,
    step: StepFunction,
    validate: Callable[[int], tuple[float, Any]],
    record: Callable[[int, float, float, Any, int, float], dict[str, Any]],
    checkpoint: Callable[[LoopState], None],
    begin_epoch: Callable[[int, np.random.Generator], None] | None = None,
    progress: ProgressCallback | None = None,
    progress_every: int = 10,
    log_every: int | None = None,
    loss_name: str = "train loss",
) -> LoopState:
    """Train ``model`` from ``state`` (fresh, or a checkpoint's) up to ``epochs``; return the final state.

    Each epoch ``e``: ``rng = default_rng([seed, e])``, ``begin_epoch(e, rng)``, then ``n_steps`` calls of
    ``step(e, k, rng)``, each after setting the learning rate to :func:`~tomoflow.nn.schedule.cosine_lr` of the
    progress (steps done over ``epochs * n_steps``, or the share of ``time_limit_s`` spent when that is
    larger); the epoch is cut short when the time is up. Then ``val, extra = validate(e)``; a smaller
    ``val`` than the best so far keeps a copy of the weights; ``record(e, train_loss, val, extra, steps run,
    epoch start time)`` gives the history entry (and may log it); ``checkpoint(state)`` saves; ``progress`` is
    told. The loop stops after ``patience`` epochs without improvement, or once ``time_limit_s`` of
    training is spent. A state that had already stopped (a resumed finished run) trains no further.
    """
    first_epoch = state.epoch + 1
    if state.epoch > 0 and (state.bad >= patience or (time_limit_s is not None and state.train_s >= time_limit_s)):
        first_epoch = epochs + 1  # already finished: just write the outputs again
        state.stopped = "resumed finished run"
    for epoch in range(first_epoch, epochs + 1):
        t_ep = time.perf_counter()
        rng = np.random.default_rng([int(seed), int(epoch)])
        if begin_epoch is not None:
            begin_epoch(epoch, rng)
        model.train()
        run_loss, run_n = 0.0, 0
        for k in range(n_steps):
            # cosine decay over the run: epochs, or the time limit when that comes first
            done = ((epoch - 1) * n_steps + k) / (epochs * n_steps)
            if time_limit_s is not None:
                done = max(done, (state.train_s + time.perf_counter() - t_ep) / time_limit_s)
            for g in opt.param_groups:
                g["lr"] = cosine_lr(done, lr, lr_final)
            loss_sum, count = step(epoch, k, rng)
            run_loss += loss_sum
            run_n += count
            if progress is not None and (k + 1) % progress_every == 0 and k + 1 < n_steps:
                progress(epoch, k + 1, n_steps, run_loss / run_n, None)
            if log_every and (k + 1) % log_every == 0:
                log.info(
                    "epoch %d step %d/%d: %s %.4f, lr %.3g",
                    epoch,
                    k + 1,
                    n_steps,
                    loss_name,
                    run_loss / run_n,
                    opt.param_groups[0]["lr"],
                )
            if time_limit_s is not None and state.train_s + time.perf_counter() - t_ep >= time_limit_s:
                break  # the time is up: validate this (partial) epoch and stop
        train_loss = run_loss / max(run_n, 1)
        val, extra = validate(epoch)
        state.train_s += time.perf_counter() - t_ep
        if val < state.best_val:
            state.best_val, state.best_epoch, state.bad = val, epoch, 0
            state.best_state = copy_state(model)
        else:
            state.bad += 1
        state.epoch = epoch
        state.history.append(record(epoch, train_loss, val, extra, run_n, t_ep))
        checkpoint(state)
        if progress is not None:
            progress(epoch, n_steps, n_steps, train_loss, val)
        if state.bad >= patience:
            state.stopped = "early stopping"
            break
        if time_limit_s is not None and state.train_s >= time_limit_s:
            state.stopped = "time limit"
            break
    return state
