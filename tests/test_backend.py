"""tomoflow.backend: the thread budget of a task reaches torch as well as numba and the FFTs."""

from __future__ import annotations

import threading

import pytest

from tomoflow.backend import limit_threads, thread_budget, thread_budget_set, torch_threads

torch = pytest.importorskip("torch")


@pytest.fixture
def one_torch_thread():
    """torch at 1 intra-op thread (as in a Dask worker process: OMP_NUM_THREADS=1), restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_torch_threads_follow_the_budget_and_are_restored(one_torch_thread):
    with limit_threads(2):
        assert thread_budget() == 2
        torch.set_num_threads(1)  # (numba's OpenMP layer may share torch's setting: set it after the budget)
        with torch_threads() as n:
            assert n == 2 and torch.get_num_threads() == 2
        assert torch.get_num_threads() == 1


def test_thread_budget_set_only_inside_a_budget():
    assert thread_budget_set() is None
    with limit_threads(3):
        assert thread_budget_set() == 3
    assert thread_budget_set() is None


def test_concurrent_blocks_keep_their_budget_until_they_leave(one_torch_thread):
    """Blocks on the threads of one worker: one leaving does not take the other's threads away."""
    entered, release = threading.Barrier(2), threading.Event()
    seen: dict[str, int] = {}

    def block(name: str, hold: float) -> None:
        with limit_threads(2):
            torch.set_num_threads(1)
            with torch_threads():
                entered.wait()
                release.wait(hold)
                seen[name] = torch.get_num_threads()

    first = threading.Thread(target=block, args=("first", 0.0))  # leaves at once
    second = threading.Thread(target=block, args=("second", 10.0))  # leaves when released
    first.start()
    second.start()
    first.join()
    release.set()
    second.join()
    assert seen == {"first": 2, "second": 2}


def test_torch_threads_restore_after_an_error(one_torch_thread):
    with limit_threads(2):
        torch.set_num_threads(1)
        with pytest.raises(RuntimeError), torch_threads():
            raise RuntimeError("block failed")
        assert torch.get_num_threads() == 1
