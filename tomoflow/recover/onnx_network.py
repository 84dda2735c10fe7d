"""The resolution-recovery U-Net exported to ONNX (:func:`tomoflow.train.onnx_export.export_onnx`), run
with onnxruntime: a drop-in model for :func:`~tomoflow.recover.tiling.predict_tiled`,
:func:`~tomoflow.recover.tiling.predict_volume` and the ``recover`` stage, for sites that deploy
without torch.

The exported file carries what tiled inference needs in its metadata (``metadata_props``): the
network's configuration (receptive field, alignment), whether the graph takes raw grey values (the
:func:`~tomoflow.recover.normalization.with_normalization` network, the one to deploy) or normalised ones,
and the training voxel size. Optional: ``pip install 'tomoflow[onnx]'``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from tomoflow.errors import ConfigError, InputError
from tomoflow.recover.unet import UNetConfig

__all__ = ["META_CONFIG", "META_VALUES", "META_HR_VOXEL", "OnnxNetwork", "load_onnx", "is_onnx_path"]

META_CONFIG = "tomoflow.unet_config"
"""Metadata key: the network's :class:`~tomoflow.recover.unet.UNetConfig` as JSON."""
META_VALUES = "tomoflow.values"
"""Metadata key: ``"raw"`` (normalisation inside the graph) or ``"normalised"``."""
META_HR_VOXEL = "tomoflow.hr_voxel_um"
"""Metadata key: the HR voxel size the network was trained on (micrometres), when known."""


def is_onnx_path(path: str | os.PathLike) -> bool:
    """True for a ``.onnx`` file name."""
    return Path(path).suffix.lower() == ".onnx"


class OnnxNetwork:
    """An exported U-Net in an onnxruntime session; call it on ``(n, 1, z, y, x)`` float32 NumPy arrays.

    Attributes
    ----------
    path
        The ``.onnx`` file.
    config
        The network's :class:`~tomoflow.recover.unet.UNetConfig` (from the file's metadata).
    raw_values
        True when the graph takes and returns raw grey values (normalisation inside).
    hr_voxel_um
        Training HR voxel size (micrometres) or None.
    card
        ``{"training_data": {"hr_voxel_um": ...}}``, what the ``recover`` stage checks.
    model_card
        The model card beside the file, which names it and holds its sha256 (checked on opening:
        :func:`tomoflow.weights.card.verified_model`).
    sha256
        The file's sha256 (the card's, verified).

    Raises
    ------
    ModelError
        No card beside the file, a card that records no ONNX export or another file, or a sha256 that
        is not the card's.
    InputError
        Not a readable ONNX graph, or one not exported by tomoflow.
    """

    runs_numpy = True  # tiled inference feeds it NumPy arrays, not torch tensors

    def __init__(self, path: str | os.PathLike, *, providers: list[str] | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError("running an ONNX network needs onnxruntime: pip install 'tomoflow[onnx]'") from None
        from tomoflow.weights.card import card_path, verified_model

        self.path = Path(path)
        if not self.path.is_file():
            raise InputError("no such ONNX file", path=self.path)
        # the gate: the card beside the file names it and holds its sha256 (no card, no load); the
        # session then reads the very file that was hashed
        model_card, real = verified_model(self.path)
        self.sha256 = str(model_card["onnx"]["sha256"])
        try:
            self._session = ort.InferenceSession(str(real), providers=providers or ["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001  (onnxruntime raises its own exception types for unreadable graphs)
            raise InputError(
                f"not a readable ONNX graph ({type(exc).__name__}: {str(exc).splitlines()[0]})", path=self.path
            ) from None
        meta = self._session.get_modelmeta().custom_metadata_map
        if META_CONFIG not in meta:
            raise InputError(
                f"the ONNX graph has no {META_CONFIG!r} metadata: it was not exported by "
                "tomoflow.train.onnx_export.export_onnx",
                path=self.path,
            )
        try:
            self.config = UNetConfig.from_dict(json.loads(meta[META_CONFIG]))
        except (ValueError, TypeError, ConfigError) as exc:
            raise InputError(f"bad {META_CONFIG!r} metadata: {exc}", path=self.path) from None
        self.raw_values = meta.get(META_VALUES) == "raw"
        values = model_card["onnx"].get("values")
        if values is not None and values != meta.get(META_VALUES):
            raise InputError(
                f"card {card_path(real).name} says the graph takes {values} values, its metadata "
                f"says {meta.get(META_VALUES)!r}",
                path=self.path,
            )
        from tomoflow.recover.unet import check_card_config

        check_card_config(model_card, self.config, card_path(real), "the graph's")
        hr = meta.get(META_HR_VOXEL)
        self.hr_voxel_um = float(hr) if hr not in (None, "", "None") else None
        self.model_card: dict[str, Any] = model_card
        self.card = {"training_data": {"hr_voxel_um": self.hr_voxel_um}}
        self._input = self._session.get_inputs()[0].name

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The network on ``x`` ``(n, 1, z, y, x)`` (sizes multiples of the alignment); float32 out."""
        return self._session.run(None, {self._input: np.ascontiguousarray(x, dtype=np.float32)})[0]

    def __repr__(self) -> str:
        return f"OnnxNetwork({str(self.path)!r}, channels={self.config.channels}, raw_values={self.raw_values})"


def load_onnx(path: str | os.PathLike, *, providers: list[str] | None = None) -> OnnxNetwork:
    """Open an ONNX U-Net exported by :func:`~tomoflow.train.onnx_export.export_onnx` (see :class:`OnnxNetwork`)."""
    return OnnxNetwork(path, providers=providers)
