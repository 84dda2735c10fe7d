"""Export of the resolution-recovery U-Net to ONNX, with its model card, and a check of the export.

**ONNX** (:func:`export_onnx`, :func:`check_onnx`; optional: ``pip install 'tomoflow[onnx]'``): the
network traced with dynamic batch and spatial axes; the spatial sizes given to the ONNX graph must be
multiples of the network's :func:`~tomoflow.recover.unet.alignment` (the tiled inference's boxes
always are: the graph has no padding branch).

torch and onnx are imported lazily.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tomoflow._checks import check_int
from tomoflow.errors import ConfigError, InputError
from tomoflow.recover.normalization import is_normalized
from tomoflow.recover.unet import UNetConfig, alignment, architecture
from tomoflow.train.files import write_json

__all__ = ["export_onnx", "check_onnx"]


def export_onnx(
    model: Any,
    path: str | os.PathLike,
    *,
    patch_shape: Sequence[int] = (32, 32, 32),
    dynamic: bool = True,
    opset: int = 17,
) -> Path:
    """Export the network (or a :func:`~tomoflow.recover.normalization.with_normalization` wrapper) to ONNX.

    Parameters
    ----------
    model
        A network from :func:`~tomoflow.recover.unet.build_unet` / :func:`~tomoflow.recover.unet.load_unet`,
        or one wrapped by :func:`~tomoflow.recover.normalization.with_normalization` (the graph then
        takes and returns raw values).
    path
        The ``.onnx`` file to write. Its model card ``<name>.json`` beside it records the export (file,
        sha256, values), which loading requires (:func:`tomoflow.weights.card.verified_model`): the
        network's card there (``recover_unet.json`` of a training folder) is updated; none there: one is
        written from ``model.card``. A card of another network there is refused.
    patch_shape
        ``(z, y, x)`` of the example input traced; multiples of the network's alignment.
    dynamic
        Dynamic batch and spatial axes (input ``"volume"``, output ``"recovered"``, both
        ``(n, 1, z, y, x)``). Spatial sizes fed to the graph must be multiples of the alignment.
        The file's metadata records the network's configuration, whether it takes raw values (a
        :func:`~tomoflow.recover.normalization.with_normalization` network: the one to deploy) and the
        training voxel size, so that :func:`tomoflow.recover.onnx_network.load_onnx` runs it in tiled
        inference.
    opset
        ONNX opset.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ConfigError
        The ``onnx`` package is missing (``pip install 'tomoflow[onnx]'``), a bad ``patch_shape``, or a
        file beside ``path`` that is not this network's card.
    """
    import torch

    if importlib.util.find_spec("onnx") is None:  # torch's exporter needs it
        raise ConfigError("ONNX export needs the onnx package: pip install 'tomoflow[onnx]'") from None
    shp = tuple(check_int(f"patch_shape[{i}]", s, low=1) for i, s in enumerate(patch_shape))
    if len(shp) != 3:
        raise ConfigError(f"patch_shape must be (z, y, x), got {tuple(patch_shape)}")
    a = alignment(model) if getattr(model, "config", None) is not None else 1
    if any(s % a for s in shp):
        raise ConfigError(f"patch_shape {shp} must be multiples of the network's alignment {a}")
    path = Path(path)
    card_file, base = _onnx_card_base(path, model)  # checked before anything is written
    params = list(model.parameters())
    p0 = params[0] if params else torch.zeros(())
    was_training = bool(model.training)
    model.eval()
    x = torch.zeros((1, 1, *shp), dtype=p0.dtype, device=p0.device)
    axes = {0: "n", 2: "z", 3: "y", 4: "x"}
    kwargs: dict[str, Any] = {"input_names": ["volume"], "output_names": ["recovered"], "opset_version": int(opset)}
    if dynamic:
        kwargs["dynamic_axes"] = {"volume": axes, "recovered": axes}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript exporter: needs onnx only, not onnxscript
    from tomoflow.io.output import plan_file

    plan_file(path, kind="model-onnx", overwrite=True)  # never a file tomoflow did not write, never in a store
    tmp = path.with_name(path.name + ".tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about the Python-side shape arithmetic
            torch.onnx.export(model, (x,), str(tmp), **kwargs)
        _add_onnx_metadata(tmp, model)
        card = _onnx_card(base, path, tmp, model, opset)
        os.replace(tmp, path)
        write_json(card_file, card)  # after the file: a crash between leaves an export its card refuses
    finally:
        model.train(was_training)
        if tmp.exists():
            tmp.unlink()
    return path


def _onnx_card_base(path: Path, model: Any) -> tuple[Path, dict[str, Any]]:
    """The card the export of ``model`` to ``path`` goes into, and what it starts from.

    The card beside the ``.onnx`` (``<name>.json``, :func:`tomoflow.weights.card.card_path`) records the
    export (``card["onnx"]``: file, sha256, values), so the export passes the load gate. An existing
    card there is updated only when it is this network's (same weights sha256: the training folder's
    ``recover_unet.json``) or an earlier export's own card of this file; any other file is refused.
    No card there: the network's own card (``model.card``) is the start.
    """
    from tomoflow.weights.card import card_path, read_card

    card_file = card_path(path)
    own = dict(getattr(model, "card", None) or {})
    if card_file.exists():
        try:
            existing = read_card(card_file, path)
        except InputError as exc:
            raise ConfigError(
                f"{card_file}: the card of the export would replace a file that is not a model card "
                f"({exc.problem}); export under another name"
            ) from None
        same_net = bool(own.get("sha256")) and existing.get("sha256") == own.get("sha256")
        own_export = existing.get("format") == "onnx" and (existing.get("onnx") or {}).get("file") == path.name
        if not (same_net or own_export):
            raise ConfigError(
                f"{card_file}: the model card of another network is there; export beside this "
                "network's own card or under another name"
            )
        return card_file, dict(existing) if same_net else own
    return card_file, own


def _onnx_card(base: dict[str, Any], path: Path, onnx_file: Path, model: Any, opset: int) -> dict[str, Any]:
    """``base`` with the export recorded (and, when it describes no safetensors weights, the export
    as its weights: ``format`` 'onnx')."""
    from tomoflow._hashing import file_sha256
    from tomoflow.weights.card import card_path, validate_card

    sha = file_sha256(onnx_file)
    card = dict(base)
    if not card.get("sha256") or card.get("format") == "onnx" or not card.get("weights"):
        card.update({"format": "onnx", "weights": path.name, "sha256": sha})
    config = getattr(model, "config", None)
    if isinstance(config, UNetConfig) and not card.get("architecture"):
        card["architecture"] = architecture(config)
    card.setdefault("name", "tomoflow resolution-recovery 3D U-Net")
    from tomoflow.io.output import STAMP_KEY, file_stamp

    card.setdefault(STAMP_KEY, file_stamp("model-card"))
    card["onnx"] = {
        "file": path.name,
        "sha256": sha,
        "opset": int(opset),
        "values": "raw" if is_normalized(model) else "normalised",
    }
    validate_card(card, card_path(path))
    return card


def _add_onnx_metadata(path: Path, model: Any) -> None:
    """What tiled inference needs to run the graph (:mod:`tomoflow.recover.onnx_network`)."""
    import onnx

    from tomoflow.recover.onnx_network import META_CONFIG, META_HR_VOXEL, META_VALUES

    config = getattr(model, "config", None)
    if not isinstance(config, UNetConfig):
        return
    card = getattr(model, "card", None) or {}
    hr_um = (card.get("training_data") or {}).get("hr_voxel_um")
    g = onnx.load(str(path))
    for key, value in (
        (META_CONFIG, json.dumps(config.to_dict())),
        (META_VALUES, "raw" if is_normalized(model) else "normalised"),
        (META_HR_VOXEL, "" if hr_um is None else repr(float(hr_um))),
    ):
        entry = g.metadata_props.add()
        entry.key, entry.value = key, value
    from tomoflow.io.output import STAMP_KEY, file_stamp

    entry = g.metadata_props.add()  # the file policy's stamp: tomoflow wrote this export
    entry.key, entry.value = STAMP_KEY, json.dumps(file_stamp("model-onnx"))
    onnx.save(g, str(path))


def check_onnx(path: str | os.PathLike, model: Any, x: Any, *, rtol: float = 1e-4) -> dict[str, Any]:
    """Run the ONNX file with onnxruntime (CPU) and compare with ``model`` on the same input.

    Parameters
    ----------
    path
        The ``.onnx`` file (:func:`export_onnx`).
    model
        The torch network it was exported from.
    x
        Input ``(n, 1, z, y, x)`` or ``(z, y, x)`` (NumPy or torch), sizes multiples of the alignment.
    rtol
        Tolerance on the largest absolute difference relative to the largest absolute torch output.

    Returns
    -------
    dict
        ``max_abs_diff``, ``max_abs_output``, ``relative``, ``ok`` (``relative <= rtol``).

    Raises
    ------
    ConfigError
        onnxruntime is not installed.
    """
    import torch

    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError("checking an ONNX export needs onnxruntime: pip install 'tomoflow[onnx]'") from None
    arr = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    arr = arr.astype(np.float32)
    if arr.ndim == 3:
        arr = arr[None, None]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: arr})[0]
    params = list(model.parameters())
    dev = params[0].device if params else torch.device("cpu")
    was_training = bool(model.training)
    model.eval()
    try:
        with torch.inference_mode():
            want = model(torch.from_numpy(arr).to(dev)).float().cpu().numpy()
    finally:
        model.train(was_training)
    diff = float(np.abs(got - want).max())
    ref = float(np.abs(want).max())
    rel = diff / ref if ref > 0 else diff
    return {"max_abs_diff": diff, "max_abs_output": ref, "relative": rel, "ok": bool(rel <= rtol)}
