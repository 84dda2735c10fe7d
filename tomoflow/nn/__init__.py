"""Shared torch machinery of the two networks (kernel layer: imports base modules only).

:func:`resolve_device` (the torch device of a ``device`` argument or of :mod:`tomoflow.config`),
:func:`device_memory_budget` (the GPU memory a network pass may plan for, read when it runs),
:func:`count_parameters`, the optimiser state as flat tensors (:func:`optimizer_tensors`,
:func:`load_optimizer`), the cosine learning-rate schedule (:func:`cosine_lr`) and the one training
loop of both networks (:func:`tomoflow.nn.loop.train_epochs`: schedule, early stopping, time budget,
resumable checkpoints written by a callback of the trainer). torch is imported lazily inside the
functions: importing this package never imports torch.
"""

from tomoflow.nn.device import device_memory_budget, resolve_device
from tomoflow.nn.schedule import cosine_lr
from tomoflow.nn.state import count_parameters, load_optimizer, optimizer_tensors

__all__ = [
    "resolve_device",
    "device_memory_budget",
    "count_parameters",
    "optimizer_tensors",
    "load_optimizer",
    "cosine_lr",
]
