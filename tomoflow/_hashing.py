"""sha256 of input files, for provenance (the one hashing helper of tomoflow)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable

__all__ = ["file_sha256", "files_sha256"]

_BLOCK = 1 << 22  # 4 MiB


def files_sha256(paths: Iterable[str | os.PathLike], block: int = _BLOCK) -> tuple[str, int]:
    """sha256 of the files' bytes concatenated in the given order, and their total size in bytes.

    Files are read in ``block``-byte pieces, so a file is never held in memory whole.
    """
    h = hashlib.sha256()
    total = 0
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(block):
                h.update(chunk)
                total += len(chunk)
    return h.hexdigest(), total


def file_sha256(path: str | os.PathLike, block: int = _BLOCK) -> str:
    """sha256 (hex digest) of a file's bytes, read in 4 MiB blocks."""
    return files_sha256([path], block)[0]
