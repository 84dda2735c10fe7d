"""Batch manifest: which scans a batch processes, through which stages, into which folder, on which cluster.

A manifest is a YAML or JSON file; its JSON Schema is ``schemas/batch-manifest.schema.json``::

    version: 1
    output: processed            # output root: every scan writes under <output>/<name>/ only
    cluster: local               # a spec of tomoflow.cluster.connect, or none
    retries: 2
    pipeline:                    # stages in order; a bare name keeps the stage's defaults
      - ingest
      - {stage: align, method: hybrid}
      - {stage: recon, algorithm: fbp}
    scans:
      - {name: tooth, path: raw/tooth.h5, center: 296.0}
      - name: chip-tiffs
        path: raw/chip/          # a folder (or glob) of TIFF files is one scan
        angles: {start: 0, stop: 180, step: 0.5}
        overrides: {recon: {algorithm: sirt, iterations: 30}}

:func:`load_manifest` validates everything before any work: unknown keys at every level, names
that could leave the output root, stage order and needs, per-scan overrides, missing input files
(all listed at once), an output folder overlapping an input. Relative paths are resolved against
the manifest's folder. Errors are :class:`~tomoflow.errors.ConfigError` (invalid manifest) or
:class:`~tomoflow.errors.InputError` (missing files), one message naming the file and every
offending key (``scans[2].name: ...``). :func:`save_manifest` writes it back (paths inside the
manifest's folder written relative to it). :func:`scan_outputs` is the per-scan output layout.

The stages and their options are in :mod:`tomoflow.batch.stages`; the names of the files a batch
writes in :mod:`tomoflow.batch.names`.
"""

from __future__ import annotations

import glob as _glob
import math
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tomoflow.batch._manifest_util import (
    SUFFIXES,
    clean_message,
    glob_base,
    globby,
    read_document,
    real_path,
    relative_text,
    validation_error,
    write_document,
)
from tomoflow.batch.names import OUTPUT_NAMES, REPORT_NAMES
from tomoflow.batch.stages import (
    STAGE_MODELS,
    STAGES,
    RecoverStage,
    StageName,
    StageSpec,
    TrainOptions,
    resolve_path,
)
from tomoflow.cluster import is_address, parse_kind
from tomoflow.errors import ConfigError, InputError, shorten, summarise
from tomoflow.io.ingest import FORMATS, HDF5_SUFFIXES, TIFF_SUFFIXES, TXRM_SUFFIXES
from tomoflow.io.output import FilePlan

__all__ = [
    "AngleRange",
    "ScanEntry",
    "Manifest",
    "load_manifest",
    "save_manifest",
    "scan_outputs",
    "missing_inputs",
    "format_validation_error",
    "NAME_PATTERN",
    "SHOWN_PROBLEMS",
]

#: What a scan name must look like (it names the scan's output folder).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_NAME_RE = re.compile(NAME_PATTERN)
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}

#: Problems named in one error message (an invalid manifest, missing inputs); the rest are counted, so a
#: manifest of 20,000 scans with a mistake in each gives a message of a few lines, not megabytes.
SHOWN_PROBLEMS = 10
#: Longest text of one problem in a message.
PROBLEM_CHARS = 300

_CLUSTER_KINDS_HELP = (
    "local, local-cuda, slurm[:profile], pbs[:profile], a scheduler address "
    "(tcp://host:port, host:port), a scheduler .json file, a cluster settings .yaml "
    "file, or none (no cluster: a thread pool in the runner)"
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ----------------------------------------------------------------------------- angles
class AngleRange(_Model):
    """Equally spaced angles in degrees: ``start, start + step, ...`` up to ``stop`` (exclusive or
    inclusive, whichever gives the scan's number of projections; see
    :func:`tomoflow.io.readers.resolve_angles`)."""

    start: float = Field(allow_inf_nan=False)
    stop: float = Field(allow_inf_nan=False)
    step: float = Field(allow_inf_nan=False)

    @model_validator(mode="after")
    def _direction(self) -> AngleRange:
        if self.step == 0 or (self.stop - self.start) / self.step <= 0:
            raise ValueError(f"step {self.step:g} does not lead from start {self.start:g} to stop {self.stop:g}")
        return self

    def as_tuple(self) -> tuple[float, float, float]:
        """``(start, stop, step)``: what :func:`tomoflow.io.ingest.ingest` takes as ``angles``."""
        return (self.start, self.stop, self.step)


def _angles_kind(value: Any) -> str | None:
    if isinstance(value, (dict, AngleRange)):
        return "range"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, (str, os.PathLike)):
        return "file"
    return None


_ANGLES_HELP = (
    "a list of angles in degrees (one per projection), [start, stop, step], "
    "{start: .., stop: .., step: ..} or the path of a text file with one angle per line"
)

Angles = Annotated[
    Annotated[AngleRange, Tag("range")]
    | Annotated[list[Annotated[float, Field(allow_inf_nan=False)]], Tag("list")]
    | Annotated[Path, Tag("file")],
    Discriminator(_angles_kind, custom_error_type="angles", custom_error_message=f"expected {_ANGLES_HELP}"),
]


# ----------------------------------------------------------------------------- scans
class ScanEntry(_Model):
    """One scan of a batch: its raw input, per-scan settings, and which stages it runs."""

    name: str = Field(
        description="Unique name (case-insensitively); names the scan's output folder "
        "<output>/<name>/. Letters, digits, '.', '_', '-'; starts with a letter or digit; at "
        "most 128 characters; no '..'.",
        json_schema_extra={"pattern": NAME_PATTERN},
    )
    path: Path | None = Field(
        default=None,
        description="Raw scan: a DXchange/NeXus HDF5 file, a ZEISS TXRM "
        "file, a TIFF file, a folder or glob of TIFF files, or a .npy file. Needed by "
        "ingest.",
    )
    format: Literal[("auto", *FORMATS)] = Field(  # type: ignore[valid-type]
        default="auto", description="Raw format (tomoflow.io.ingest.FORMATS), or auto (detected)."
    )
    angles: Angles | None = Field(
        default=None,
        description="Rotation angles in degrees, overriding the "
        f"file's (required for TIFF and .npy): {_ANGLES_HELP}. A list of exactly "
        "three numbers is read as [start, stop, step].",
    )
    center: float | Literal["auto"] | None = Field(
        default=None,
        description="Rotation axis column (px) or 'auto'; default: the centre saved in the "
        "scan store, else auto. The starting centre of align (which refines it), or recon's centre when "
        "align does not run.",
    )
    pixel_size_um: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="Detector pixel size (micrometre), overriding the file's."
    )
    energy_kev: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="Beam energy (keV), overriding the file's."
    )
    flats: Path | list[Path] | None = Field(
        default=None, description="TIFF / .npy flat fields: a file, folder, glob or list of files."
    )
    darks: Path | list[Path] | None = Field(default=None, description="TIFF / .npy dark fields, as flats.")
    entry: str | None = Field(default=None, min_length=1, description="NeXus NXtomo entry (default: the only one).")
    hr: Path | None = Field(
        default=None, description="Paired HR region-of-interest volume store (OME-Zarr) for recover."
    )
    hr_scan: str | None = Field(
        default=None,
        description="Or: the name of another scan of this manifest "
        "whose reconstructed volume is the HR volume (it must run recon, not recover).",
    )
    volume: Path | None = Field(
        default=None, description="An existing LFOV volume store that recover uses, for a scan that does not run recon."
    )
    stages: list[StageName] | None = Field(
        default=None, description="The pipeline stages this scan runs (default: all)."
    )
    overrides: dict[StageName, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per-stage option overrides for this scan, e.g. "
        "{recon: {algorithm: sirt}}; checked like the pipeline's options.",
    )

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not _NAME_RE.match(value) or ".." in value or value.split(".")[0].lower() in _RESERVED:
            raise ValueError(
                f"{value!r} is not a safe scan name: use letters, digits, '.', '_' and '-', start "
                "with a letter or digit, at most 128 characters, no '..' (it names the scan's "
                "output folder)"
            )
        if value.lower() in REPORT_NAMES:
            raise ValueError(
                f"{value!r} is taken by the batch report ({', '.join(REPORT_NAMES)} are in the output "
                "root); rename the scan"
            )
        return value

    @field_validator("angles", mode="before")
    @classmethod
    def _three_is_a_range(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)) and len(value) == 3:
            return dict(zip(("start", "stop", "step"), value))
        if isinstance(value, (list, tuple)) and len(value) < 2:
            raise ValueError(f"a list of angles needs one angle per projection, got {len(value)}")
        return value

    @field_validator("center", mode="before")
    @classmethod
    def _center(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
            return float(value)
        raise ValueError(f"expected a rotation axis column in pixels (>= 0) or 'auto', got {value!r}")

    @field_validator("flats", "darks", mode="before")
    @classmethod
    def _frames(cls, value: Any) -> Any:
        if value is None or isinstance(value, (str, os.PathLike)):
            return value
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, (str, os.PathLike)) for v in value):
            return list(value)
        raise ValueError(f"expected a file, folder or glob, or a non-empty list of files, got {value!r}")

    @field_validator("path", "hr", "volume", "flats", "darks", "angles", mode="after")
    @classmethod
    def _resolve(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, list):
            return [resolve_path(v, info) for v in value]
        return resolve_path(value, info)

    def known_format(self) -> str | None:
        """The format as far as it is known without opening the file: ``format`` when given, else
        ``"tiff"`` (a folder, glob or .tif), ``"numpy"`` (.npy), ``"txrm"``, ``"hdf5"`` (DXchange or
        NeXus) from the name, or None."""
        if self.format != "auto":
            return self.format
        if self.path is None:
            return None
        suffix = self.path.suffix.lower()
        if globby(self.path) or suffix in TIFF_SUFFIXES or self.path.is_dir():
            return "tiff"
        if suffix == ".npy":
            return "numpy"
        if suffix in TXRM_SUFFIXES:
            return "txrm"
        return "hdf5" if suffix in HDF5_SUFFIXES else None

    @model_validator(mode="after")
    def _format_options(self) -> ScanEntry:
        fmt = self.known_format()
        problems = []
        if fmt not in (None, "tiff", "numpy"):
            problems += [
                ((k,), "flats and darks are given for TIFF and .npy scans only (others hold their own)")
                for k in ("flats", "darks")
                if getattr(self, k) is not None
            ]
        if fmt not in (None, "nexus", "hdf5") and self.entry is not None:
            problems.append((("entry",), "entry applies to NeXus files only"))
        if fmt in ("tiff", "numpy") and self.angles is None:
            problems.append((("angles",), f"{fmt} scans carry no rotation angles; give angles: {_ANGLES_HELP}"))
        if self.hr is not None and self.hr_scan is not None:
            problems.append((("hr_scan",), "give hr (a volume store) or hr_scan (a scan's name), not both"))
        if problems:
            raise validation_error(
                "ScanEntry",
                [
                    (loc, f"{msg} (format {fmt})" if loc[0] != "hr_scan" else msg, getattr(self, loc[0]))
                    for loc, msg in problems
                ],
            )
        return self

    def ingest_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`tomoflow.io.ingest.ingest` for this scan (besides source and store)."""
        out: dict[str, Any] = {"format": self.format}
        if isinstance(self.angles, AngleRange):
            out["angles"] = self.angles.as_tuple()
        elif isinstance(self.angles, Path):
            out["angles"] = str(self.angles)
        elif self.angles is not None:
            out["angles"] = list(self.angles)
        for key in ("flats", "darks"):
            v = getattr(self, key)
            if v is not None:
                out[key] = [str(p) for p in v] if isinstance(v, list) else str(v)
        for key in ("entry", "pixel_size_um", "energy_kev"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    def inputs(self) -> list[Path]:
        """The input files and folders this scan reads (a glob as written)."""
        out: list[Path] = []
        for key in ("path", "angles", "hr", "volume", "flats", "darks"):
            v = getattr(self, key)
            if isinstance(v, Path):
                out.append(v)
            elif isinstance(v, list) and v and isinstance(v[0], Path):
                out.extend(v)
        return out


def _bare_name_schema(schema: dict[str, Any]) -> None:
    """The pipeline's JSON Schema admits a bare stage name (``- recon``) as an item."""
    schema["items"] = {"anyOf": [{"enum": list(STAGES), "type": "string"}, schema["items"]]}


def _pipeline_entry(value: Any) -> Any:
    """A pipeline entry written as a bare stage name (``- recon``) as its mapping."""
    return {"stage": value} if isinstance(value, str) else value


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``extra``, nested mappings merged key by key."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _override(stage: Any, options: dict[str, Any]) -> dict[str, Any]:
    """The options of pipeline ``stage`` with a scan's ``options`` over them. A scan that gives recover
    a weights file drops the pipeline's training options (they apply to ``model: train`` only)."""
    base = stage.model_dump(exclude_none=True)
    if stage.stage == "recover" and options.get("model", "train") != "train" and "train" not in options:
        base.pop("train", None)
    return _merge(base, options)


# ----------------------------------------------------------------------------- manifest
class Manifest(_Model):
    """A batch: the scans, the stages each runs, the output root and the cluster."""

    version: Literal[1] = Field(description="Manifest format version.")
    output: Path = Field(description="Output root; scan <name> writes only under <output>/<name>/.")
    cluster: str = Field(default="local", min_length=1, description=f"Where to run: {_CLUSTER_KINDS_HELP}.")
    retries: int = Field(default=2, ge=0, description="Times a failed scan is retried before it is reported failed.")
    max_scans_in_flight: int | None = Field(
        default=None, ge=1, description="Most scans processed at once (default: as the cluster allows)."
    )
    pipeline: list[StageSpec] = Field(
        min_length=1,
        description="Stages in order (ingest, align, recon, recover); a bare stage name keeps its defaults.",
        json_schema_extra=_bare_name_schema,
    )
    scans: list[ScanEntry] = Field(min_length=1, description="The scans.")

    @field_validator("pipeline", mode="before")
    @classmethod
    def _bare_names(cls, value: Any) -> Any:
        return [_pipeline_entry(v) for v in value] if isinstance(value, list) else value

    @field_validator("output", mode="after")
    @classmethod
    def _resolve_output(cls, value: Path, info: ValidationInfo) -> Path:
        return resolve_path(value, info)

    @field_validator("cluster", mode="after")
    @classmethod
    def _cluster_spec(cls, value: str, info: ValidationInfo) -> str:
        text = value.strip()
        if text == "none" or parse_kind(text) is not None or is_address(text):
            return text
        if text.endswith((".json", ".yaml", ".yml")):
            return str(resolve_path(Path(text), info))
        raise ValueError(f"invalid cluster spec {value!r}; valid: {_CLUSTER_KINDS_HELP}")

    @field_validator("pipeline", mode="after")
    @classmethod
    def _stage_order(cls, stages: list[Any]) -> list[Any]:
        names = [s.stage for s in stages]
        problems = []
        for i, name in enumerate(names):
            if name in names[:i]:
                problems.append(((i,), f"stage {name!r} appears twice"))
            elif any(STAGES.index(name) < STAGES.index(prev) for prev in names[:i]):
                problems.append(((i,), f"stage {name!r} comes too late: stages run in the order {', '.join(STAGES)}"))
            elif name in ("align", "recon") and "ingest" not in names:
                problems.append(((i,), f"stage {name!r} needs ingest first"))
        if problems:
            raise validation_error("pipeline", [(loc, msg, names[loc[0]]) for loc, msg in problems])
        return stages

    @model_validator(mode="after")
    def _scans_fit_pipeline(self, info: ValidationInfo) -> Manifest:
        problems: list[Any] = []
        seen: dict[str, int] = {}
        for i, scan in enumerate(self.scans):
            key = scan.name.lower()
            if key in seen:
                problems.append(
                    (
                        ("scans", i, "name"),
                        f"{scan.name!r} is the name of scans[{seen[key]}] too "
                        "(names are compared ignoring case: they name output folders)",
                        scan.name,
                    )
                )
            seen.setdefault(key, i)
        by_name = {s.name: s for s in self.scans}
        for i, scan in enumerate(self.scans):
            problems += [
                {**p, "loc": ("scans", i, *p["loc"])} if isinstance(p, dict) else (("scans", i, *p[0]), *p[1:])
                for p in self._scan_problems(scan, by_name, info)
            ]
        problems += self._overlaps()
        if problems:
            raise validation_error("Manifest", problems)
        return self

    # --------------------------------------------------------------- checks of one scan
    def _scan_problems(self, scan: ScanEntry, by_name: dict[str, ScanEntry], info: ValidationInfo | None) -> list[Any]:
        pipeline = [s.stage for s in self.pipeline]
        out: list[Any] = []
        if scan.stages is not None:
            extra = [s for s in scan.stages if s not in pipeline]
            if extra:
                return [(("stages",), f"{', '.join(extra)} not in the pipeline ({', '.join(pipeline)})", scan.stages)]
            if len(set(scan.stages)) != len(scan.stages):
                return [(("stages",), "a stage is listed twice", scan.stages)]
            if not scan.stages:
                return [(("stages",), "no stage to run: leave the scan out instead", scan.stages)]
        runs = self.stage_names(scan)
        if "ingest" in runs and scan.path is None:
            out.append((("path",), "the raw scan is needed by ingest", None))
        if any(s in runs for s in ("align", "recon")) and "ingest" not in runs:
            out.append((("stages",), "align and recon need ingest", scan.stages))
        if "recover" in runs:
            if scan.hr is None and scan.hr_scan is None:
                out.append(
                    (
                        ("hr",),
                        "recover needs the paired HR volume: give hr (a volume store) or hr_scan "
                        "(the name of the HR scan in this manifest)",
                        None,
                    )
                )
            if "recon" in runs and scan.volume is not None:
                out.append(
                    (
                        ("volume",),
                        "recon makes this scan's volume; drop volume, or recon from its stages",
                        str(scan.volume),
                    )
                )
            if "recon" not in runs and scan.volume is None:
                out.append((("volume",), "recover needs recon, or an existing LFOV volume store (volume)", None))
        elif scan.volume is not None:
            out.append((("volume",), "only recover uses volume, and this scan does not run it", str(scan.volume)))
        if scan.hr_scan is not None:
            target = by_name.get(scan.hr_scan)
            if target is None or target is scan:
                why = "is this scan" if target is scan else "is no scan of this manifest"
                out.append((("hr_scan",), f"{scan.hr_scan!r} {why}", scan.hr_scan))
            elif "recon" not in self.stage_names(target) or "recover" in self.stage_names(target):
                out.append(
                    (
                        ("hr_scan",),
                        f"scan {scan.hr_scan!r} must run recon (its volume is the HR) and not recover",
                        scan.hr_scan,
                    )
                )
        for stage, options in scan.overrides.items():
            if stage not in runs:
                out.append((("overrides", stage), f"this scan does not run {stage}", options))
                continue
            if "stage" in options:
                out.append((("overrides", stage, "stage"), "a stage's override cannot change its stage", options))
                continue
            try:
                merged = STAGE_MODELS[stage].model_validate(
                    _override(self._pipeline_stage(stage), options), context=info.context if info is not None else None
                )
            except ValidationError as exc:
                out += [{**e, "loc": ("overrides", stage, *e["loc"])} for e in exc.errors()]
                continue
            dumped = merged.model_dump(mode="json")
            scan.overrides[stage] = {k: dumped[k] for k in options}
        return out

    def _overlaps(self) -> list[tuple[tuple[Any, ...], str, Any]]:
        """Outputs overlapping inputs: the output root inside an input, an input inside (or being) a
        scan's output folder."""
        out: list[tuple[tuple[Any, ...], str, Any]] = []
        root = real_path(self.output)
        folders = {root / s.name.lower(): j for j, s in enumerate(self.scans)}
        for i, scan in enumerate(self.scans):
            for p in scan.inputs():
                src = real_path(Path(glob_base(p)))
                if root == src or src in root.parents:
                    out.append((("output",), f"is inside the input {p} of scans[{i}]", str(self.output)))
                    continue
                j = next((folders[a] for a in (src, *src.parents) if a in folders), None)
                if j is not None:
                    out.append(
                        (
                            ("scans", i),
                            f"its input {p} is inside the output folder of scans[{j}] ({self.scans[j].name})",
                            str(p),
                        )
                    )
        return out

    # --------------------------------------------------------------- for the runner
    def scan(self, name: str) -> ScanEntry:
        """The scan called ``name`` (:class:`KeyError` if none)."""
        for s in self.scans:
            if s.name == name:
                return s
        raise KeyError(name)

    def _pipeline_stage(self, name: str) -> Any:
        return next(s for s in self.pipeline if s.stage == name)

    def stage_names(self, scan: ScanEntry) -> list[str]:
        """Names of the stages ``scan`` runs, in pipeline order."""
        chosen = set(scan.stages) if scan.stages is not None else None
        return [s.stage for s in self.pipeline if chosen is None or s.stage in chosen]

    def stages_for(self, scan: ScanEntry) -> list[Any]:
        """The stages ``scan`` runs, in order, with its overrides applied (stage models)."""
        out = []
        for name in self.stage_names(scan):
            stage = self._pipeline_stage(name)
            if name in scan.overrides:
                stage = STAGE_MODELS[name].model_validate(_override(stage, scan.overrides[name]))
            out.append(stage)
        return out

    def hr_volume(self, scan: ScanEntry) -> Path | None:
        """The HR volume store of ``scan``: its ``hr``, or the volume of its ``hr_scan``."""
        if scan.hr_scan is not None:
            return scan_outputs(self, self.scan(scan.hr_scan))["volume"]
        return scan.hr


# ----------------------------------------------------------------------------- layout
def scan_outputs(manifest: Manifest, scan: ScanEntry | str) -> dict[str, Path]:
    """Where ``scan`` writes: ``{"dir": <output>/<name>, "scan": .../scan.zarr, "aligned": ...,
    "volume": ..., "registration": ..., "training": ..., "recovered": ...,
    "report": ...}`` (see :data:`tomoflow.batch.names.OUTPUT_NAMES`).

    Raises
    ------
    ConfigError
        The folder would not be inside the output root (a symbolic link leading out of it).
    """
    entry = manifest.scan(scan) if isinstance(scan, str) else scan
    folder = Path(manifest.output) / entry.name
    root = real_path(manifest.output)
    real = real_path(folder)
    if root not in real.parents:
        raise ConfigError(
            f"{folder}: the output folder of scan {entry.name!r} is not inside the output root "
            f"{manifest.output} (it resolves to {real})"
        )
    return {"dir": folder, **{k: folder / v for k, v in OUTPUT_NAMES.items()}}


# ----------------------------------------------------------------------------- files
def missing_inputs(manifest: Manifest) -> list[str]:
    """Every input the manifest names that is not there, as ``"scans[2].path: /x/a.h5 (no such file)"``."""
    out = []
    for i, scan in enumerate(manifest.scans):
        where = f"scans[{i}] ({scan.name})"
        for key in ("path", "angles", "flats", "darks", "hr", "volume"):
            value = getattr(scan, key)
            for p in value if isinstance(value, list) else [value]:
                if not isinstance(p, Path):
                    continue
                text = str(p)
                if key in ("path", "flats", "darks") and globby(p):
                    if not any(Path(f).is_file() for f in _glob.glob(text)):
                        out.append(f"{where}.{key}: {text} (no file matches)")
                elif not p.exists():
                    out.append(f"{where}.{key}: {text} (no such file or folder)")
                elif key in ("hr", "volume") and not (p / "zarr.json").is_file():
                    out.append(f"{where}.{key}: {text} (not a zarr store: no zarr.json)")
    models: list[tuple[str, RecoverStage | dict[str, Any]]] = [
        ("pipeline", s) for s in manifest.pipeline if s.stage == "recover"
    ]
    models += [
        (f"scans[{i}] ({s.name}).overrides", s.overrides["recover"])
        for i, s in enumerate(manifest.scans)
        if "recover" in s.overrides
    ]
    for where, stage in models:
        model = stage.model if isinstance(stage, BaseModel) else stage.get("model")
        if isinstance(model, Path):
            if not model.is_file():
                out.append(f"{where}.recover.model: {model} (no such file)")
            elif not model.with_suffix(".json").is_file():
                out.append(f"{where}.recover.model: {model.with_suffix('.json')} (its model card is missing)")
    if manifest.cluster.endswith((".json", ".yaml", ".yml")) and not Path(manifest.cluster).is_file():
        out.append(f"cluster: {manifest.cluster} (no such file)")
    return out


def load_manifest(path: str | os.PathLike, *, check_files: bool = True) -> Manifest:
    """Read and validate a batch manifest (YAML or JSON); relative paths are taken from its folder.

    Parameters
    ----------
    path
        The ``.yaml`` / ``.yml`` / ``.json`` file.
    check_files
        Also check that every input file and folder exists (all missing ones reported at once).

    Returns
    -------
    Manifest
        With absolute paths.

    Raises
    ------
    ConfigError
        Unreadable YAML/JSON, or a manifest that breaks a rule; the message names the file and every
        offending key (``scans[2].name: ...``).
    InputError
        The manifest file, or (``check_files``) input files it names, are missing (the first
        :data:`SHOWN_PROBLEMS` named and the rest counted; :func:`missing_inputs` lists them all).
    """
    p = Path(path)
    doc = read_document(p)
    if not isinstance(doc, dict):
        raise ConfigError(
            f"{p}: a batch manifest is a mapping (version, output, pipeline, scans, ...), not {type(doc).__name__}"
        )
    try:
        manifest = Manifest.model_validate(doc, context={"base_dir": p.absolute().parent})
    except ValidationError as exc:
        raise ConfigError(f"{p}: invalid batch manifest\n" + format_validation_error(exc)) from None
    if check_files:
        missing = missing_inputs(manifest)
        if missing:
            raise InputError(
                f"{len(missing):,} input(s) of the manifest missing: "
                + summarise(missing, SHOWN_PROBLEMS, sep="; ", last="; and "),
                p,
            )
    return manifest


def _to_document(manifest: Manifest, base: Path | None) -> dict[str, Any]:
    """The manifest as plain data; with ``base``, absolute paths inside ``base`` made relative to it."""
    doc = manifest.model_dump(mode="json", exclude_none=True)
    if base is None:
        return doc

    def rel(value: Any) -> Any:
        return [relative_text(v, base) for v in value] if isinstance(value, list) else relative_text(value, base)

    doc["output"] = rel(doc["output"])
    if manifest.cluster.endswith((".json", ".yaml", ".yml")):
        doc["cluster"] = rel(doc["cluster"])
    for stage in doc["pipeline"]:
        if stage["stage"] == "recover":
            stage["model"] = rel(stage["model"])
    for scan in doc["scans"]:
        for key in ("path", "angles", "flats", "darks", "hr", "volume"):
            if key in scan:
                scan[key] = rel(scan[key])
        recover = scan.get("overrides", {}).get("recover", {})
        if "model" in recover:
            recover["model"] = rel(recover["model"])
        if not scan.get("overrides"):
            scan.pop("overrides", None)
    return doc


def save_manifest(manifest: Manifest, path: Any, *, relative: bool = True, overwrite: bool = False) -> Path:
    """Write ``manifest`` as YAML (``.yaml`` / ``.yml``) or JSON (``.json``).

    ``path`` is a file or a :class:`tomoflow.io.output.FilePlan` of one. The file policy applies: a new
    file, or a manifest tomoflow wrote (replaced only with ``overwrite``); never a file tomoflow did not
    write, never inside a store. With ``relative``, absolute paths inside the manifest's folder are
    written relative to it (so the folder can move); :func:`load_manifest` reads the file back into an
    equal manifest.
    """
    p = path.path if isinstance(path, FilePlan) else Path(path)
    if p.suffix.lower() not in SUFFIXES:
        raise ConfigError(f"{p}: a batch manifest is a .yaml, .yml or .json file")
    doc = _to_document(manifest, p.absolute().parent if relative else None)
    write_document(path, doc, overwrite=overwrite)
    return p


# ----------------------------------------------------------------------------- error messages
def _describe(loc: tuple[Any, ...]) -> tuple[str, list[str] | None]:
    """``loc`` as text (``scans[2].overrides.align.foo``; union tags dropped) and the keys allowed in
    the mapping ``loc`` points into (None when it is not a model)."""
    child: dict[tuple[Any, str], Any] = {
        (Manifest, "pipeline"): "tag",
        (Manifest, "scans"): ScanEntry,
        (ScanEntry, "angles"): "tag",
        (ScanEntry, "overrides"): "overrides",
        (RecoverStage, "train"): TrainOptions,
    }
    tagged = {**STAGE_MODELS, "range": AngleRange}
    model: Any = Manifest  # a model class, "tag" (next part names a union member), "overrides" or None
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
            continue
        if part == "[key]":  # a mapping's key itself (e.g. an unknown stage name in overrides)
            continue
        if model == "tag":
            model = tagged.get(part)
            continue
        text += f".{part}" if text else str(part)
        if model == "overrides":
            model = STAGE_MODELS.get(part)
        else:
            model = child.get((model, part)) if isinstance(model, type) else None
    # every class in child and tagged is a pydantic model
    return text, sorted(cast("type[BaseModel]", model).model_fields) if isinstance(model, type) else None


def format_validation_error(exc: ValidationError, indent: str = "  ", *, first: int = SHOWN_PROBLEMS) -> str:
    """A pydantic ValidationError of a :class:`Manifest` as lines ``scans[2].name: message``: the
    ``first`` distinct problems (each at most :data:`PROBLEM_CHARS` characters) and a count of the rest."""
    lines = []
    for e in exc.errors():
        loc = tuple(e.get("loc", ()))
        kind = e.get("type")
        msg = clean_message(e.get("msg", ""))
        inp = e.get("input")
        if kind == "extra_forbidden":
            where, known = _describe(loc[:-1])
            where = f"{where}.{loc[-1]}" if where else str(loc[-1])
            msg = "unknown key" + (f" (known here: {', '.join(known)})" if known else "")
        else:
            where, _ = _describe(loc)
            if (
                kind in ("string_type", "path_type")
                and isinstance(inp, (int, float, bool))
                or (kind == "string_type" and inp.__class__.__name__ in ("date", "datetime"))
            ):
                msg += f" (got {inp!r}: put it in quotes in YAML)"
            elif kind not in ("missing", "manifest", "value_error") and isinstance(inp, (str, int, float, bool)):
                shown = repr(inp) if len(repr(inp)) <= 80 else repr(inp)[:77] + "..."
                msg += f" (got {shown})"
        text = f"{where or '(top level)'}: {msg}"
        lines.append(indent + shorten(text, PROBLEM_CHARS))
    lines = list(dict.fromkeys(lines))
    if len(lines) > first:
        lines = lines[:first] + [f"{indent}and {len(lines) - first:,} more problem(s)"]
    return "\n".join(lines)
