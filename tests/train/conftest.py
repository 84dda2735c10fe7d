"""Fixtures of the recovery tests: torch on one thread (small networks; the machine is shared)."""

import importlib.util

import pytest


@pytest.fixture(autouse=True)
def _one_thread():
    """torch on one thread while a test runs; nothing when torch is absent (the pore tests need none)."""
    if importlib.util.find_spec("torch") is None:
        yield
        return
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
