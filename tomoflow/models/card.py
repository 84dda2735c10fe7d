"""The model card shipped beside every set of weights in ``tomoflow/models/`` (``<name>.json``).

It says what the network is, how it was trained (data recipe, seed, the exact command), how well it
does on held-out data, and the sha256 of the weights file it describes; :func:`validate_card` checks
a card before its weights are used. The JSON Schema is ``schemas/model-card.schema.json``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tomoflow.errors import InputError

__all__ = ["ModelCard", "validate_card"]


class ModelCard(BaseModel):
    """A trained network's card. Cards written by ``tomoflow train-aligner`` fill every field (a test
    checks the shipped one); only ``sha256`` is required to load weights. Extra keys are kept."""

    model_config = ConfigDict(extra="allow")

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the weights file (required).")
    name: str | None = Field(default=None, description="What the network is, e.g. 'tomoflow jitter ResNet'.")
    format: str | None = Field(default=None, description="Weights format; always 'safetensors' (never pickle).")
    weights: str | None = Field(default=None, description="File name of the weights beside the card.")
    architecture: dict[str, Any] | None = Field(default=None, description="Layers, input, parameter count.")
    input_size: list[int] | None = Field(default=None, min_length=2, max_length=3,
                                         description="Network input (pixels).")
    training_data: dict[str, Any] | None = Field(default=None, description="Data recipe and seed.")
    training: dict[str, Any] | None = Field(default=None, description="Optimiser, schedule, history.")
    metrics: dict[str, Any] | None = Field(default=None, description="Metrics on held-out data, with units.")
    command: str | None = Field(default=None, description="The exact command that trained these weights.")
    created: str | None = Field(default=None, description="When the weights were written (ISO 8601).")


def validate_card(card: dict[str, Any], path: Any = None) -> ModelCard:
    """Parse a model card, or raise :class:`InputError` naming the file and the problem."""
    if card.get("format") not in (None, "safetensors"):
        raise InputError(f"model card says format {card.get('format')!r}; only safetensors weights are loaded", path)
    try:
        return ModelCard.model_validate(card)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        raise InputError(f"invalid model card: {where}: {first.get('msg')}", path) from None


def read_verified_card(weights: Any, card_file: Any, *, verify: bool = True) -> dict[str, Any]:
    """The model card beside a weights file, validated; with ``verify``, the card must exist and its
    sha256 must be the weights file's (a modified or mismatched file is refused). Without a card and
    without ``verify``: ``{}``.

    Raises
    ------
    InputError
        Card missing (``verify``), not JSON, not a valid card, or sha256 mismatch.
    """
    import json
    from pathlib import Path

    from tomoflow._hashing import file_sha256

    weights, card_file = Path(weights), Path(card_file)
    card: dict[str, Any] = {}
    if card_file.is_file():
        try:
            card = json.loads(card_file.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"model card is not valid JSON: {exc}", path=card_file) from None
        validate_card(card, card_file)
    elif verify:
        raise InputError(f"model card {card_file.name} missing beside the weights (needed to verify them)",
                         path=weights)
    if verify:
        want, got = str(card.get("sha256", "")), file_sha256(weights)
        if want != got:
            raise InputError(f"sha256 of the weights ({got}) does not match the model card ({want or 'none'}); "
                             "the file was modified or belongs to another card", path=weights)
    return card
