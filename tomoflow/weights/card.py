"""The model card beside every model file tomoflow loads, and the one gate every load goes through.

A card (``<name>.json`` beside ``<name>.safetensors`` or ``<name>.onnx``) says what the network is, how it
was trained (data recipe, seed, the exact command), how well it does on held-out data, and which file it
describes with that file's sha256: ``weights`` + ``sha256`` for the safetensors weights, and the ``onnx``
entry (``file`` + ``sha256``) for an ONNX export (:func:`tomoflow.train.onnx_export.export_onnx` records
it). The JSON Schema is ``schemas/model-card.schema.json``.

**The gate** (:func:`verified_model`): every model file tomoflow loads — the jitter ResNet's and the
U-Net's safetensors weights, the U-Net's ONNX export, ``--init-weights`` of both trainings — passes it
first; training checkpoints pass :func:`verified_checkpoint`, the same rule with the checkpoint's own
``state.json`` as its card. The rule, with no exception and no switch to turn it off:

1. the card exists beside the file (no card, no load);
2. it is a valid card, and the entry for this kind of file (``weights`` or ``onnx.file``) names this
   file (a card sits beside the one file it describes);
3. the file's sha256 is the card's (a file changed after training, or swapped in under the name of
   another, is refused).

Failures raise :class:`~tomoflow.errors.ModelError` (an ``InputError``), one line naming the file and
what is wrong.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tomoflow.errors import ModelError

__all__ = [
    "ModelCard",
    "OnnxExport",
    "validate_card",
    "card_path",
    "read_card",
    "verified_model",
    "verified_checkpoint",
    "MODEL_FORMATS",
]

MODEL_FORMATS = ("safetensors", "onnx")
"""Model file formats tomoflow loads (never pickle)."""

_SHA256 = r"^[0-9a-f]{64}$"


class OnnxExport(BaseModel):
    """The ONNX export of the card's network (``card["onnx"]``), written by ``export_onnx``."""

    model_config = ConfigDict(extra="allow")

    file: str = Field(description="File name of the .onnx export beside the card.")
    sha256: str = Field(pattern=_SHA256, description="sha256 of the .onnx file.")
    values: Literal["raw", "normalised"] | None = Field(
        default=None, description="'raw': the graph holds the normalisation (raw grey values in and out)."
    )


class ModelCard(BaseModel):
    """A trained network's card. Cards written by ``tomoflow train-aligner`` fill every field (a test
    checks the shipped one); loading needs ``sha256`` and ``weights`` (or ``onnx`` for an ONNX file).
    Extra keys are kept."""

    model_config = ConfigDict(extra="allow")

    sha256: str = Field(pattern=_SHA256, description="sha256 of the weights file (required).")
    name: str | None = Field(default=None, description="What the network is, e.g. 'tomoflow jitter ResNet'.")
    format: Literal["safetensors", "onnx"] | None = Field(
        default=None,
        description="Format of the 'weights' file: 'safetensors' (never pickle), or 'onnx' for the "
        "card of an ONNX export made without safetensors weights.",
    )
    weights: str | None = Field(
        default=None,
        description="File name of the weights beside the card (required "
        "to load them: a card describes the file beside it).",
    )
    onnx: OnnxExport | None = Field(default=None, description="The ONNX export of this network beside the card.")
    architecture: dict[str, Any] | None = Field(default=None, description="Layers, input, parameter count.")
    input_size: list[int] | None = Field(
        default=None, min_length=2, max_length=3, description="Network input (pixels)."
    )
    training_data: dict[str, Any] | None = Field(default=None, description="Data recipe and seed.")
    training: dict[str, Any] | None = Field(default=None, description="Optimiser, schedule, history.")
    metrics: dict[str, Any] | None = Field(default=None, description="Metrics on held-out data, with units.")
    command: str | None = Field(default=None, description="The exact command that trained these weights.")
    created: str | None = Field(default=None, description="When the weights were written (ISO 8601).")


def validate_card(card: dict[str, Any], path: Any = None) -> ModelCard:
    """Parse a model card, or raise :class:`~tomoflow.errors.ModelError` naming the file and the problem."""
    if not isinstance(card, dict):
        raise ModelError(f"a model card is a JSON object, not {type(card).__name__}", path)
    if card.get("format") not in (None, *MODEL_FORMATS):
        raise ModelError(
            f"model card says format {card.get('format')!r}; only safetensors weights (or their "
            "ONNX export) are loaded",
            path,
        )
    try:
        return ModelCard.model_validate(card)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        raise ModelError(f"invalid model card: {where}: {first.get('msg')}", path) from None


def card_path(model_path: str | os.PathLike) -> Path:
    """Where the card of a model file is: ``<name>.json`` beside ``<name>.safetensors`` / ``<name>.onnx``
    (any other file: its stem + ``.json``)."""
    p = Path(model_path)
    for suffix in (".safetensors", ".onnx"):
        if p.name.lower().endswith(suffix) and len(p.name) > len(suffix):
            return p.with_name(p.name[: -len(suffix)] + ".json")
    return p.with_name(p.stem + ".json")


def _read_json(card_file: Path, model: Path | None, what: str) -> Any:
    if not card_file.is_file():
        raise ModelError(f"no {what} beside it (expected {card_file.name})", model if model is not None else card_file)
    try:
        text = card_file.read_text()
    except OSError as exc:
        raise ModelError(f"cannot read the {what}: {exc.strerror or exc}", card_file) from None
    except UnicodeDecodeError:
        raise ModelError(f"the {what} is not text (expected JSON)", card_file) from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ModelError(
            f"the {what} is not valid JSON ({getattr(exc, 'msg', exc)}, line {getattr(exc, 'lineno', '?')})", card_file
        ) from None


def read_card(card_file: str | os.PathLike, model: str | os.PathLike | None = None) -> dict[str, Any]:
    """A model card read and validated (nothing checked against any model file).

    Parameters
    ----------
    card_file
        The card (``.json``).
    model
        The model file it should describe (named in the error when the card is missing).

    Raises
    ------
    ModelError
        Missing, unreadable, not JSON, or not a valid card.
    """
    card_file = Path(card_file)
    card = _read_json(card_file, None if model is None else Path(model), "model card")
    validate_card(card, card_file)
    return card


def _check_entry(shown: Path, real: Path, card_file: Path, named: Any, want: Any, what: str) -> None:
    """The card's entry names ``real`` and its sha256 is the file's (the one comparison of the gate)."""
    from tomoflow._hashing import file_sha256

    if not isinstance(named, str) or not named:
        raise ModelError(
            f"its card {card_file.name} names no {what}; a card must name the file it describes ({real.name})", shown
        )
    if named != real.name:
        raise ModelError(f"card {card_file.name} names {what} {named}, not {real.name}", shown)
    try:
        got = file_sha256(real)
    except OSError as exc:
        raise ModelError(f"cannot read the {what}: {exc.strerror or exc}", shown) from None
    if not isinstance(want, str) or got != want:
        raise ModelError(
            f"sha256 does not match its card {card_file.name} (the file changed after training, "
            "or the card belongs to another file)",
            shown,
        )


def _model_file(path: str | os.PathLike, what: str) -> tuple[Path, Path]:
    """``(as given, real file)``; the card sits beside the real file (a symlink's target)."""
    shown = Path(path)
    if not shown.is_file():
        raise ModelError(f"no such {what}" if not shown.exists() else f"not a {what} (a folder?)", shown)
    return shown, shown.resolve()


def verified_model(path: str | os.PathLike) -> tuple[dict[str, Any], Path]:
    """The gate every model file passes before it is loaded (module docstring): its card, checked.

    Parameters
    ----------
    path
        A ``.safetensors`` weights file or a ``.onnx`` export; the card is :func:`card_path` beside it.

    Returns
    -------
    (dict, pathlib.Path)
        The validated card and the file to load (the real file, symlinks resolved: load this one, so
        what was hashed is what is read).

    Raises
    ------
    ModelError
        No such file; no card beside it; the card unreadable or invalid; the card names another file
        (or none); the sha256 differs.
    """
    onnx = Path(path).suffix.lower() == ".onnx"
    shown, real = _model_file(path, "ONNX file" if onnx else "weights file")
    cf = card_path(real)
    card = read_card(cf, shown)
    if onnx:
        entry = card.get("onnx")
        if not isinstance(entry, dict):
            raise ModelError(
                f"its card {cf.name} records no ONNX export (export with "
                "tomoflow.train.onnx_export.export_onnx, which records the file and its sha256)",
                shown,
            )
        _check_entry(shown, real, cf, entry.get("file"), entry.get("sha256"), "ONNX file")
    else:
        if card.get("format") not in (None, "safetensors"):
            raise ModelError(f"card {cf.name} describes {card.get('format')} weights, not safetensors", shown)
        _check_entry(shown, real, cf, card.get("weights"), card.get("sha256"), "weights")
    return card, real


def verified_checkpoint(weights: str | os.PathLike, state_file: str | os.PathLike) -> dict[str, Any]:
    """A training checkpoint's tensors checked against its own card, the ``state.json`` beside them.

    The state records ``weights`` (the tensors' file name) and ``sha256``, written after the tensors
    (:func:`tomoflow.train.files.save_checkpoint`); the same rule as :func:`verified_model`.

    Returns
    -------
    dict
        The checkpoint state.

    Raises
    ------
    ModelError
        Tensors or state missing, state not JSON, no ``weights``/``sha256`` in it (a checkpoint made by an
        older tomoflow: start over), another file named, or the sha256 differs.
    """
    state_file = Path(state_file)
    state = _read_json(state_file, Path(weights), "checkpoint state")
    if not isinstance(state, dict):
        raise ModelError("the checkpoint state is not a JSON object", state_file)
    shown, real = _model_file(weights, "checkpoint tensors file")
    if "sha256" not in state:
        raise ModelError(
            f"the checkpoint state {state_file.name} records no sha256 of its tensors (made by an "
            "older tomoflow); start over (no resume) or use another output folder",
            shown,
        )
    _check_entry(shown, real, state_file, state.get("weights"), state.get("sha256"), "checkpoint tensors")
    return state
