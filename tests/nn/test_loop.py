"""The one training loop (tomoflow.nn.loop): schedule, early stopping, resume from a checkpoint gives the
same weights as an uninterrupted run; no files (the checkpoint is a callback)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tomoflow.nn import cosine_lr  # noqa: E402
from tomoflow.nn.loop import LoopState, checkpoint_tensors, copy_state, restore, train_epochs  # noqa: E402


def _setup():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(32, 3)).astype(np.float32))
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])

    def step(epoch, k, rng):
        idx = torch.from_numpy(rng.integers(0, 32, size=8))
        opt.zero_grad()
        loss = torch.mean((model(x[idx]) - y[idx]) ** 2)
        loss.backward()
        opt.step()
        return float(loss.detach()) * 8, 8

    def validate(epoch):
        with torch.no_grad():
            return float(torch.mean((model(x) - y) ** 2)), None

    return model, opt, step, validate


class _Crash(Exception):
    pass


def _run(epochs, state=None, saved=None, patience=5, crash_after=None):
    model, opt, step, validate = _setup()
    if saved is not None:
        state = copy.deepcopy(saved["state"])
        state.best_state = restore(model, opt, saved["tensors"], "cpu")
    state = state or LoopState(best_state=copy_state(model))
    last = {}

    def checkpoint(s):
        last["state"] = copy.deepcopy(s)
        last["tensors"] = checkpoint_tensors(model, s.best_state, opt)
        if s.epoch == crash_after:
            raise _Crash

    lrs = []
    try:
        state = train_epochs(
            model,
            opt,
            state,
            epochs=epochs,
            n_steps=4,
            lr=0.1,
            lr_final=0.05,
            seed=1,
            patience=patience,
            time_limit_s=None,
            step=step,
            validate=validate,
            record=lambda e, tl, v, x, n, t: {"epoch": e, "lr": opt.param_groups[0]["lr"], "val": v},
            checkpoint=checkpoint,
            begin_epoch=lambda e, rng: lrs.append(e),
        )
    except _Crash:
        pass
    return model, state, last


def test_resume_from_a_checkpoint_gives_the_uninterrupted_weights():
    straight, s1, _ = _run(3)
    _, _, saved = _run(3, crash_after=1)  # the process dies after the checkpoint of epoch 1
    resumed, s2, _ = _run(3, saved=saved)
    assert [h["epoch"] for h in s2.history] == [1, 2, 3] and s2.history == s1.history
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert s1.stopped == s2.stopped == "epochs" and s1.history[-1]["lr"] == pytest.approx(cosine_lr(11 / 12, 0.1, 0.05))


def test_patience_stops_and_a_finished_run_trains_no_further():
    model, opt, step, _ = _setup()
    state = LoopState(best_val=-1.0, best_state=copy_state(model))  # nothing can beat it
    state = train_epochs(
        model,
        opt,
        state,
        epochs=10,
        n_steps=2,
        lr=0.1,
        lr_final=0.05,
        seed=0,
        patience=2,
        time_limit_s=None,
        step=step,
        validate=lambda e: (0.0, None),
        record=lambda *a: {},
        checkpoint=lambda s: None,
    )
    assert state.stopped == "early stopping" and state.epoch == 2 and state.bad == 2
    again = train_epochs(
        model,
        opt,
        state,
        epochs=10,
        n_steps=2,
        lr=0.1,
        lr_final=0.05,
        seed=0,
        patience=2,
        time_limit_s=None,
        step=step,
        validate=lambda e: (0.0, None),
        record=lambda *a: {},
        checkpoint=lambda s: None,
    )
    assert again.stopped == "resumed finished run" and again.epoch == 2
