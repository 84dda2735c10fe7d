"""The files the trainers write (through the output policy, :mod:`tomoflow.io.output`) and read back:
network weights (safetensors, :func:`save_weights`, :func:`save_unet`), model cards
(:func:`write_card`, :func:`write_json`) and the resumable training checkpoint of both networks
(:func:`save_checkpoint`, :func:`load_checkpoint`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tomoflow._hashing import file_sha256
from tomoflow.errors import ConfigError, ModelError
from tomoflow.nn import count_parameters
from tomoflow.nn.loop import checkpoint_tensors
from tomoflow.recover.unet import ARCHITECTURE_NAME, UNetConfig, architecture

__all__ = [
    "CHECKPOINT_TENSORS",
    "CHECKPOINT_STATE",
    "save_checkpoint",
    "load_checkpoint",
    "save_weights",
    "save_unet",
    "write_card",
    "write_json",
]

CHECKPOINT_TENSORS = "last.safetensors"
CHECKPOINT_STATE = "state.json"
"""A training checkpoint (both networks): the tensors, and their card: the state, which names them and
holds their sha256 (:func:`tomoflow.weights.card.verified_checkpoint`)."""


def save_checkpoint(
    ckpt: Path, model: Any, best_state: dict[str, Any], opt: Any, info: dict[str, Any], kind: str = "aligner-checkpoint"
) -> None:
    """Write the model, its best state and the optimiser state (``<ckpt>/last.safetensors``), then the
    state JSON naming them with their sha256 (``<ckpt>/state.json``; ``kind`` says whose)."""
    from safetensors.torch import save_file

    ckpt.mkdir(parents=True, exist_ok=True)
    tensors = checkpoint_tensors(model, best_state, opt)
    from tomoflow.io.output import STAMP_KEY, file_stamp

    stamp = file_stamp(kind)  # which network's: one training never resumes or replaces the other's
    tmp = ckpt / (CHECKPOINT_TENSORS + ".tmp")
    save_file(tensors, str(tmp), metadata={STAMP_KEY: json.dumps(stamp)})
    sha = file_sha256(tmp)
    os.replace(tmp, ckpt / CHECKPOINT_TENSORS)
    tmpj = ckpt / (CHECKPOINT_STATE + ".tmp")  # written last: the tensors are never newer than their state
    from tomoflow.io.output import stamped_json

    tmpj.write_text(stamped_json({**info, "weights": CHECKPOINT_TENSORS, "sha256": sha}, kind, indent=1))
    os.replace(tmpj, ckpt / CHECKPOINT_STATE)


def load_checkpoint(ckpt: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The state and tensors (CPU) of a checkpoint, through the gate: the state must name the tensors
    and hold their sha256.

    Raises
    ------
    ModelError
        The tensors changed after the state was written, are missing, or the state is not a checkpoint's.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from tomoflow.weights.card import verified_checkpoint

    info = verified_checkpoint(ckpt / CHECKPOINT_TENSORS, ckpt / CHECKPOINT_STATE)
    try:
        tensors = load_file(str(ckpt / CHECKPOINT_TENSORS), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"not a readable safetensors file: {exc}", path=ckpt / CHECKPOINT_TENSORS) from None
    return info, tensors


def save_weights(model: Any, path: str | os.PathLike, *, fingerprint: str | None = None) -> str:
    """Write a JitterResNet ``model``'s state (parameters and BatchNorm buffers) as safetensors; return its sha256.

    The file policy applies: ``path`` may be a new file or weights tomoflow wrote, never another file.
    """
    from safetensors.torch import save_file

    from tomoflow.io.output import STAMP_KEY, file_stamp, plan_file

    plan_file(path, kind="model-weights", fingerprint=fingerprint, overwrite=True)

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(
        state,
        str(tmp),
        metadata={
            "format": "pt",
            "architecture": "JitterResNet",
            STAMP_KEY: json.dumps(file_stamp("model-weights", fingerprint)),
        },
    )
    os.replace(tmp, path)
    os.chmod(path, 0o644)
    return file_sha256(path)


def _card_path(weights: Path) -> Path:
    """The model card beside a weights file (one rule: :func:`tomoflow.weights.card.card_path`)."""
    from tomoflow.weights.card import card_path

    return card_path(weights)


def save_unet(
    model: Any,
    config: UNetConfig,
    path: str | os.PathLike,
    *,
    card: dict[str, Any] | None = None,
    fingerprint: str | None = None,
) -> dict[str, Any]:
    """Write the weights as safetensors and the model card JSON beside them.

    The :class:`UNetConfig` goes into the safetensors metadata (``"config"``, JSON) and into the card
    (``architecture``), with the weights' sha256.

    Parameters
    ----------
    model
        The network (its state is saved; it is not modified).
    config
        Its configuration (must equal ``model.config`` when the model has one).
    path
        Weights file, e.g. ``recover_unet.safetensors``; the card is ``recover_unet.json`` beside it.
    card
        Further model-card fields (name, training_data, training, metrics, command, ...). ``sha256``,
        ``format``, ``weights`` and ``architecture`` are filled in here.

    Returns
    -------
    dict
        The card as written.

    Raises
    ------
    ConfigError
        ``config`` differs from the model's own, or is not a :class:`UNetConfig`.
    """
    from safetensors.torch import save_file

    from tomoflow.weights.card import validate_card

    if not isinstance(config, UNetConfig):
        raise ConfigError(f"config must be a UNetConfig, got {type(config).__name__}")
    own = getattr(model, "config", None)
    if isinstance(own, UNetConfig) and own != config:
        raise ConfigError(f"config {config} differs from the model's own {own}")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    from tomoflow.io.output import STAMP_KEY, file_stamp, plan_file

    # The file policy: a file tomoflow did not write is never replaced (callers plan the folder first).
    for target, kind in ((path, "model-weights"), (_card_path(path), "model-card")):
        plan_file(target, kind=kind, fingerprint=fingerprint, overwrite=True)
    save_file(
        state,
        str(tmp),
        metadata={
            "format": "pt",
            "architecture": ARCHITECTURE_NAME,
            "config": config.to_json(),
            STAMP_KEY: json.dumps(file_stamp("model-weights", fingerprint)),
        },
    )
    os.replace(tmp, path)
    os.chmod(path, 0o644)
    full = dict(card or {})
    full.update(
        {
            "format": "safetensors",
            "weights": path.name,
            "sha256": file_sha256(path),
            "architecture": dict(architecture(config), parameters=count_parameters(model)),
        }
    )
    full.setdefault("name", "tomoflow resolution-recovery 3D U-Net")
    card_file = _card_path(path)
    validate_card(full, card_file)
    from tomoflow.io.output import stamped_json

    text = stamped_json(full, "model-card", fingerprint, indent=1)
    full[STAMP_KEY] = json.loads(text)[STAMP_KEY]  # the card returned is the card written
    tmp_card = card_file.with_name(card_file.name + ".tmp")
    tmp_card.write_text(text)
    os.replace(tmp_card, card_file)
    return full


def write_card(path: Path, card: dict[str, Any], fingerprint: str | None = None) -> None:
    """Write a model card (kind ``model-card``) through a temporary file; ``card`` gets the stamp written."""
    from tomoflow.io.output import STAMP_KEY, stamped_json

    text = stamped_json(card, "model-card", fingerprint, indent=1, default=float)
    card[STAMP_KEY] = json.loads(text)[STAMP_KEY]  # the card returned is the card written
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Rewrite a card, keeping its stamp (kind and fingerprint), through a temporary file."""
    from tomoflow.io.output import stamped_json

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(stamped_json(doc, indent=1, default=float))  # keeps the card's kind and fingerprint
    os.replace(tmp, path)
