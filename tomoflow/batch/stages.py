"""The stages of a batch pipeline, as they appear in a batch manifest (:mod:`tomoflow.batch.manifest`).

One pydantic model per stage, told apart by its ``stage`` key. Each holds the options of the pipeline
function that runs the stage, checked against the same constants that function checks them with
(:data:`tomoflow.pipeline.align.METHODS`, :data:`tomoflow.pipeline.reconstruct.ALGORITHMS`, ...), so
a manifest can never name a method or algorithm the pipeline does not have. :meth:`kwargs` gives the
keyword arguments of that function (without the per-scan ones: paths, centre, client).

===========  ==========================================================  ================================
stage        runs                                                        needs
===========  ==========================================================  ================================
``ingest``   :func:`tomoflow.io.ingest.ingest` (raw file -> scan store)  the scan's ``path``
``align``    :func:`tomoflow.pipeline.align.align_scan`                  ``ingest``
``recon``    :func:`tomoflow.pipeline.reconstruct_scan`                  ``ingest``
``recover``  register (:func:`tomoflow.register.register`), train      ``recon`` (or the scan's LFOV
             (:func:`tomoflow.train.recovery.train_recovery`, when       ``volume``), and the scan's HR
             ``model: train``), recover the field at the HR voxel size   volume (``hr`` / ``hr_scan``)
             resampled on the fly
             (:func:`tomoflow.pipeline.recover.recover_volume`)
===========  ==========================================================  ================================

The constants come from the modules that run the stages (not their functions): a manifest is the
description of pipeline work, and the constants are its single source. None of those modules imports
torch when imported, so neither does this one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from tomoflow.pipeline.align import METHODS as ALIGN_METHODS
from tomoflow.pipeline.reconstruct import ALGORITHMS, DEFAULT_ITERATIONS
from tomoflow.recon.filters import FILTERS
from tomoflow.recover.splits import SPLITS
from tomoflow.recover.tiling import PAD_MODES
from tomoflow.recover.unet import WEIGHTS_NAME
from tomoflow.register.registration import DOFS
from tomoflow.train.recovery import DEFAULTS as _TRAIN

__all__ = [
    "STAGES",
    "StageName",
    "IngestStage",
    "AlignStage",
    "ReconStage",
    "RecoverStage",
    "TrainOptions",
    "StageSpec",
    "STAGE_MODELS",
    "ALIGN_OPTIONS",
    "resolve_path",
]

#: Stage names in the order a pipeline runs them.
STAGES = ("ingest", "align", "recon", "recover")
StageName = Literal[STAGES]  # type: ignore[valid-type]

#: The method options of :class:`AlignStage` and the alignment methods that use them (as
#: :func:`tomoflow.pipeline.align.align_scan` passes them on; a test checks them against the kernels).
ALIGN_OPTIONS: dict[str, tuple[str, ...]] = {
    "recon_iterations": ALIGN_METHODS,
    "despeckle": ALIGN_METHODS,
    "vertical": ("hybrid", "phase", "consistency"),
    "upsample": ("hybrid", "phase", "consistency"),
    "passes": ("hybrid", "resnet"),
    "n_iter": ("hybrid", "consistency"),
    "tol": ("hybrid", "consistency"),
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def resolve_path(value: Any, info: ValidationInfo | None) -> Any:
    """A path with ``~`` expanded and, when validation runs with ``context={"base_dir": folder}``
    (a manifest being loaded), a relative path made absolute against that folder."""
    if not isinstance(value, Path):
        return value
    value = value.expanduser()
    base = (info.context or {}).get("base_dir") if info is not None else None
    if base is not None and not value.is_absolute():
        value = Path(os.path.normpath(Path(base) / value))
    return value


class IngestStage(_Model):
    """Copy the raw scan into a scan store (``<output>/<scan>/scan.zarr``).

    It has no options of its own: what :func:`tomoflow.io.ingest.ingest` needs besides the file
    (format, angles, flats and darks, NeXus entry, pixel size, energy) belongs to each scan.
    """

    stage: Literal["ingest"] = "ingest"

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`tomoflow.io.ingest.ingest` set by the stage (none)."""
        return {}


class AlignStage(_Model):
    """Estimate and correct the jitter (:func:`tomoflow.pipeline.align.align_scan`) into
    ``<output>/<scan>/aligned.zarr``; the reconstruction then uses the aligned store and its refined
    centre. Options left out keep the method's default."""

    stage: Literal["align"] = "align"
    method: Literal[ALIGN_METHODS] = Field(  # type: ignore[valid-type]
        default="hybrid", description="Alignment method (tomoflow.pipeline.align.METHODS)."
    )
    max_size: int = Field(
        default=256,
        ge=32,
        description="Largest detector axis (px) the shifts are "
        "estimated at; larger scans are binned for the estimation.",
    )
    vertical: bool | None = Field(
        default=None, description="Estimate vertical jitter too (hybrid, phase, consistency)."
    )
    recon_iterations: int | None = Field(
        default=None, ge=1, description="MLEM iterations of the reference reconstructions."
    )
    passes: int | None = Field(default=None, ge=1, description="Network passes (hybrid, resnet).")
    n_iter: int | None = Field(default=None, ge=1, description="Most consistency iterations (hybrid, consistency).")
    tol: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="Stop the iterations below this update (px; hybrid, consistency).",
    )
    upsample: int | None = Field(
        default=None, ge=1, description="Phase-correlation upsampling (hybrid, phase, consistency)."
    )
    despeckle: bool | None = Field(default=None, description="Remove impulse noise first (default true).")

    @model_validator(mode="after")
    def _options_fit_method(self) -> AlignStage:
        wrong = [
            k for k, methods in ALIGN_OPTIONS.items() if getattr(self, k) is not None and self.method not in methods
        ]
        if wrong:
            uses = "; ".join(f"{k} applies to {', '.join(ALIGN_OPTIONS[k])}" for k in wrong)
            raise ValueError(f"method {self.method!r} does not use {', '.join(wrong)} ({uses})")
        return self

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`tomoflow.pipeline.align.align_scan` (the options that are set)."""
        out: dict[str, Any] = {"method": self.method, "max_size": self.max_size}
        out.update({k: getattr(self, k) for k in ALIGN_OPTIONS if getattr(self, k) is not None})
        return out


class ReconStage(_Model):
    """Reconstruct the (aligned, when ``align`` runs) scan store into the OME-Zarr volume store
    ``<output>/<scan>/volume.zarr`` (:func:`tomoflow.pipeline.reconstruct_scan`)."""

    stage: Literal["recon"] = "recon"
    algorithm: Literal[ALGORITHMS] = Field(  # type: ignore[valid-type]
        default="fbp", description="Reconstruction algorithm (tomoflow.pipeline.reconstruct.ALGORITHMS)."
    )
    filter: Literal[FILTERS] | None = Field(  # type: ignore[valid-type]
        default=None, description="FBP filter (fbp only; default ramp)."
    )
    iterations: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="Iterations of mlem / sirt "
        f"(default {DEFAULT_ITERATIONS.get('mlem')} / {DEFAULT_ITERATIONS.get('sirt')}).",
    )
    shape: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] | None = Field(
        default=None, description="Slice shape [ny, nx] in voxels (default [ncol, ncol])."
    )

    @model_validator(mode="after")
    def _options_fit_algorithm(self) -> ReconStage:
        if self.algorithm == "fbp" and self.iterations is not None:
            raise ValueError("iterations apply to mlem and sirt; fbp is not iterative")
        if self.algorithm != "fbp" and self.filter is not None:
            raise ValueError(f"filter applies to fbp only, not {self.algorithm}")
        return self

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`tomoflow.pipeline.reconstruct_scan` (``center`` is the scan's)."""
        out: dict[str, Any] = {"algorithm": self.algorithm}
        if self.algorithm == "fbp":
            out["filter"] = self.filter or "ramp"
        if self.iterations is not None:
            out["n_iter"] = self.iterations
        if self.shape is not None:
            out["shape"] = tuple(self.shape)
        return out


class TrainOptions(_Model):
    """Training of the per-sample recovery U-Net (as ``tomoflow train-recovery``; same defaults,
    :data:`tomoflow.train.recovery.DEFAULTS`)."""

    epochs: int = Field(default=_TRAIN["epochs"], ge=1, description="Most epochs.")
    steps: int = Field(default=_TRAIN["steps_per_epoch"], ge=1, description="Optimisation steps per epoch.")
    patch: int = Field(default=_TRAIN["patch"], ge=1, description="Training patch edge (voxels).")
    batch: int = Field(default=_TRAIN["batch"], ge=1, description="Patches per optimisation step.")
    lr: float = Field(default=_TRAIN["lr"], gt=0, allow_inf_nan=False, description="Adam learning rate.")
    channels: tuple[Annotated[int, Field(ge=1)], ...] = Field(
        default=(16, 32, 64), min_length=1, description="U-Net feature channels per level, finest first."
    )
    val_fraction: float = Field(default=0.125, gt=0, lt=1, description="Fraction of the blocks held out.")
    split: Literal[SPLITS] = Field(default="auto", description="How blocks are held out.")  # type: ignore[valid-type]
    patience: int = Field(default=_TRAIN["patience"], ge=1, description="Epochs without improvement before stopping.")
    seed: int = Field(default=0, ge=0, description="Seed of the split, initial weights and patches.")
    time_limit_s: float | None = Field(
        default=_TRAIN["time_limit_s"],
        gt=0,
        allow_inf_nan=False,
        description="Wall seconds the whole training task may take (reading, training, evaluation, calibration, "
        "writing); null: no limit.",
    )

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`tomoflow.train.recovery.train_recovery` (``config`` holds
        the channels as a :class:`tomoflow.recover.unet.UNetConfig`)."""
        from tomoflow.recover.unet import UNetConfig

        return {
            "config": UNetConfig(channels=tuple(self.channels)),
            "patch": self.patch,
            "batch": self.batch,
            "epochs": self.epochs,
            "steps_per_epoch": self.steps,
            "lr": self.lr,
            "val_fraction": self.val_fraction,
            "split": self.split,
            "patience": self.patience,
            "seed": self.seed,
            "time_limit_s": self.time_limit_s,
        }


class RecoverStage(_Model):
    """Resolution recovery of the scan's LFOV volume against its paired HR volume: register the HR
    volume into the LFOV one, train the U-Net on the pair (``model: train``) or use given weights, and
    run it over the whole LFOV field at the HR voxel size, resampled block by block on the fly
    (``<output>/<scan>/recovered.zarr``; no resampled volume is written)."""

    stage: Literal["recover"] = "recover"
    model: Literal["train"] | Path = Field(
        default="train",
        description=f"'train' (train a U-Net per sample on its HR/LFOV pair) or the path of "
        f"trained weights ({WEIGHTS_NAME}, its model card .json beside it).",
    )
    train: TrainOptions | None = Field(
        default=None, description="Training options (model: train only; default as tomoflow train-recovery)."
    )
    dof: Literal[DOFS] = Field(default=9, description="Registration degrees of freedom.")  # type: ignore[valid-type]
    max_rotation_deg: float = Field(
        default=10.0, gt=0, le=180, description="Refuse a registration rotated by more than this (degrees)."
    )
    order: int = Field(default=3, ge=0, le=5, description="Spline order of the resampling (3 cubic, 1 linear).")
    pad_mode: Literal[PAD_MODES] = Field(  # type: ignore[valid-type]
        default="reflect", description="Volume border extension of the inference (as in training)."
    )

    @field_validator("model", mode="before")
    @classmethod
    def _model_kind(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() == "train":
            return "train"
        if isinstance(value, (str, os.PathLike)):
            return Path(value)
        raise ValueError(f"expected 'train' or the path of a weights file, got {value!r}")

    @field_validator("model", mode="after")
    @classmethod
    def _resolve(cls, value: Any, info: ValidationInfo) -> Any:
        return resolve_path(value, info)

    @model_validator(mode="after")
    def _train_options(self) -> RecoverStage:
        if self.model != "train" and self.train is not None:
            raise ValueError("train options apply only with model: train (a weights file is given)")
        return self

    def training(self) -> TrainOptions | None:
        """The training options (their defaults where none are given), or None with a weights file."""
        if self.model != "train":
            return None
        return self.train if self.train is not None else TrainOptions()


#: One stage of a pipeline; the ``stage`` key says which.
StageSpec = Annotated[IngestStage | AlignStage | ReconStage | RecoverStage, Field(discriminator="stage")]

#: Stage name -> its model.
STAGE_MODELS: dict[str, type[_Model]] = {
    "ingest": IngestStage,
    "align": AlignStage,
    "recon": ReconStage,
    "recover": RecoverStage,
}
