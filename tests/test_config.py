import pytest

import tomoflow
from tomoflow.config import parse_bytes
from tomoflow.errors import ConfigError


def test_set_is_restored_by_the_context_manager():
    before = tomoflow.config.get().worker_memory_budget
    with tomoflow.config.set(worker_memory_budget="512MiB", device="cpu"):
        assert tomoflow.config.get().worker_memory_budget == 512 * 2**20
        assert tomoflow.config.get().device == "cpu"
    assert tomoflow.config.get().worker_memory_budget == before


@pytest.mark.parametrize(
    "changes,match",
    [
        ({"device": "tpu"}, "invalid"),
        ({"colour": 1}, "unknown"),
        ({"worker_memory_budget": "lots"}, "memory size"),
        ({"scan_chunk_rows": 0}, "invalid"),
    ],
)
def test_bad_settings_are_clear_errors_and_change_nothing(changes, match):
    before = tomoflow.config.get()
    with pytest.raises(ConfigError, match=match):
        tomoflow.config.set(**changes)
    assert tomoflow.config.get() == before


def test_parse_bytes():
    assert parse_bytes("2GB") == 2_000_000_000
    assert parse_bytes(1e6) == 1_000_000
    with pytest.raises(ConfigError):
        parse_bytes(-1)
