"""Exceptions raised by tomoflow.

Every error caused by bad input names the file, the dataset inside it (where there is one) and what
is wrong, so that a facility data engineer can act on it without reading a traceback.
"""

from __future__ import annotations

from os import PathLike

__all__ = ["TomoflowError", "InputError", "ModelError", "StoreError", "ConfigError", "PipelineError"]


class TomoflowError(Exception):
    """Base class of all tomoflow errors."""


class InputError(TomoflowError, ValueError):
    """Bad input data: missing dataset, wrong shape, NaN, empty or truncated file.

    Parameters
    ----------
    problem
        What is wrong, in words.
    path
        The file (or store) the problem was found in, if any.
    dataset
        The dataset / stream / variable inside the file, if any.
    """

    def __init__(
        self,
        problem: str,
        path: str | PathLike | None = None,
        dataset: str | None = None,
    ) -> None:
        self.problem = problem
        self.path = None if path is None else str(path)
        self.dataset = dataset
        where = ""
        if self.path is not None:
            where = self.path
            if dataset:
                where += f" [{dataset}]"
            where += ": "
        elif dataset:
            where = f"[{dataset}]: "
        super().__init__(where + problem)


class ModelError(InputError):
    """A model file (weights, ONNX export, training checkpoint) that may not be loaded: no model card beside
    it, a card that names another file, or bytes whose sha256 is not the card's (the file changed after
    training). Same parameters as :class:`InputError` (``path`` is the model file or its card)."""


class StoreError(TomoflowError):
    """A zarr store is missing, incomplete or does not follow the tomoflow layout."""


class ConfigError(TomoflowError, ValueError):
    """A parameter is out of range or a configuration file is invalid."""


class PipelineError(TomoflowError):
    """A pipeline task failed: names the store, the stage and the block, and says how to go on."""
