"""Find the raw scans in an archive folder and make a batch manifest of them (``tomoflow batch scan-archive``).

:func:`scan_archive` walks a folder recursively and recognises

- DXchange and NeXus NXtomo HDF5 files (``.h5 .hdf5 .hdf .nxs .nx5 .he5``; a NeXus file with several
  NXtomo entries gives one scan per entry), ZEISS TXRM files (``.txrm .txm``), and files without a
  suffix whose first bytes are an HDF5 or OLE2 signature;
- a folder holding ``.tif`` / ``.tiff`` files: one TIFF-stack scan. Files in it named ``flat*``,
  ``white*`` or ``bright*`` are its flats and ``dark*`` its darks; so are the TIFF files of sibling
  folders named ``flat(s)``/``white``/``bright`` and ``dark(s)`` when the parent holds exactly one
  TIFF-stack scan (then a generic folder name such as ``proj`` gives way to the parent's name). TIFF
  files carry no angles: they come from ``angles.txt`` / ``theta.txt`` (one angle a line) in the
  folder (or its parent, in the sibling layout); a stack without one is listed as unusable, saying so.

Every candidate is opened cheaply to catch a damaged file: the header and shape, the angle count,
the flat/dark frame shape, and the last projection is read (where a truncated file fails). No file
is hashed or read whole; ``verify=True`` opens each with the full reader instead (slower: it hashes
every file). A file that fails is listed with the reason (the tomoflow error message), never aborting
the walk.

Skipped without opening (returned in ``skipped``): files with any other suffix (``.txt``, ``.json``,
``.png``, ``.npy`` ...; arrays carry no angles and are added by hand), hidden files and folders
(``.name``), zarr stores (never descended into: outputs, not raw scans), folders reached through a
symbolic link, and the output root when it lies inside the archive.
"""

from __future__ import annotations

import glob as _glob
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tomoflow.batch.manifest import Manifest, ScanEntry, format_validation_error
from tomoflow.batch.stages import STAGES
from tomoflow.errors import ConfigError, InputError, TomoflowError
from tomoflow.io import dxchange, nexus, tiff, txrm
from tomoflow.io.ingest import HDF5_SUFFIXES, TIFF_SUFFIXES, TXRM_SUFFIXES, detect_format
from tomoflow.io.probe import error_reason, probe_dxchange, probe_nexus, probe_tiff_stack, probe_txrm
from tomoflow.io.readers import resolve_angles
from tomoflow.io.tiff import natural_key

__all__ = ["ArchiveScan", "FoundScan", "Unreadable", "scan_archive", "DEFAULT_PIPELINE"]

logger = logging.getLogger(__name__)

#: Stages of a manifest made from an archive unless told otherwise.
DEFAULT_PIPELINE = ("ingest", "align", "recon")

_FLAT_WORDS = ("flat", "white", "bright")
_DARK_WORDS = ("dark",)
_ANGLE_FILES = {"angles.txt", "angle.txt", "theta.txt"}
_FRAME_DIRS = {
    "flat": "flats",
    "flats": "flats",
    "white": "flats",
    "whites": "flats",
    "bright": "flats",
    "flatfield": "flats",
    "flat_field": "flats",
    "flat-field": "flats",
    "flatfields": "flats",
    "dark": "darks",
    "darks": "darks",
    "darkfield": "darks",
    "dark_field": "darks",
    "dark-field": "darks",
    "darkfields": "darks",
}
_GENERIC_DIRS = {
    "proj",
    "projs",
    "projection",
    "projections",
    "tomo",
    "data",
    "images",
    "image",
    "tif",
    "tiff",
    "raw",
    "sample",
}


@dataclass
class FoundScan:
    """A scan recognised in the archive."""

    name: str
    path: Path
    format: str
    shape: tuple[int, int, int] | None = None
    entry: str | None = None
    angles: Path | None = None
    flats: Path | list[Path] | None = None
    darks: Path | list[Path] | None = None
    notes: list[str] = field(default_factory=list)

    def entry_model(self) -> ScanEntry:
        """The manifest entry of the scan."""
        return ScanEntry(
            name=self.name,
            path=self.path,
            format=self.format,
            angles=self.angles,
            flats=self.flats,
            darks=self.darks,
            entry=self.entry,
        )


@dataclass
class Unreadable:
    """A file (or folder) that looks like a scan but cannot be used, and why."""

    path: Path
    reason: str


@dataclass
class ArchiveScan:
    """What :func:`scan_archive` found: the manifest (None when no scan was found), the scans, the
    unusable candidates with their reasons, and the files skipped as not scans."""

    root: Path
    manifest: Manifest | None
    scans: list[FoundScan]
    unreadable: list[Unreadable]
    skipped: list[Path]


# ----------------------------------------------------------------------------- TIFF folders
@dataclass
class _TiffDir:
    path: Path
    projections: list[Path]
    flats: list[Path]
    darks: list[Path]


def _role(name: str) -> str:
    low = name.lower()
    if low.startswith(_FLAT_WORDS):
        return "flats"
    return "darks" if low.startswith(_DARK_WORDS) else "projections"


def _frames_spec(files: list[Path]) -> Path | list[Path] | None:
    """A glob matching exactly ``files`` (all in one folder) when their names share a prefix, else the list."""
    if len(files) < 2:
        return files[0] if files else None
    prefix = os.path.commonprefix([f.name for f in files])
    if prefix and not any(c in prefix for c in "*?["):
        pattern = files[0].parent / f"{prefix}*"
        if sorted(Path(p) for p in _glob.glob(str(pattern))) == sorted(files):
            return pattern
    return files


def _angles_file(folder: Path) -> Path | None:
    try:
        return next((f for f in sorted(folder.iterdir()) if f.name.lower() in _ANGLE_FILES and f.is_file()), None)
    except OSError:
        return None


def _tiff_scan(t: _TiffDir, frames_dirs: dict[str, Path], root: Path) -> FoundScan:
    shape = probe_tiff_stack(t.projections, "projections")
    sibling = bool(frames_dirs)
    angles = _angles_file(t.path) or (_angles_file(t.path.parent) if sibling else None)
    if angles is None:
        raise InputError(
            "TIFF stack without rotation angles: put them in angles.txt in the folder (one angle a "
            "line), or add the scan to the manifest by hand with angles: [start, stop, step]",
            t.path,
        )
    resolve_angles(angles, shape[0], angles)
    found = FoundScan(
        name="", path=t.path, format="tiff", shape=shape, angles=angles, notes=[f"angles from {angles.name}"]
    )
    for role in ("flats", "darks"):
        files = getattr(t, role)
        spec: Path | list[Path] | None = _frames_spec(files)
        if not files and role in frames_dirs:
            files = sorted(
                (f for f in frames_dirs[role].iterdir() if f.suffix.lower() in TIFF_SUFFIXES), key=natural_key
            )
            spec = frames_dirs[role]
        if files:
            px = probe_tiff_stack(files, role)[1:]
            if px != shape[1:]:
                raise InputError(f"{role} of {tuple(px)} px, projections of {shape[1:]} px", files[0])
            setattr(found, role, spec)
            found.notes.append(f"{len(files)} {role[:-1]} file(s)")
    generic = t.path.name.lower() in _GENERIC_DIRS and t.path != root
    found.name = t.path.parent.name if generic or sibling else t.path.name
    return found


# ----------------------------------------------------------------------------- walk
def _safe_name(text: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", text)
    base = re.sub(r"\.{2,}", ".", base).lstrip("._-")[:120] or "scan"
    name, k = base, 2
    while name.lower() in taken:
        name, k = f"{base}-{k}", k + 1
    taken.add(name.lower())
    return name


def _is_store(d: Path) -> bool:
    return d.suffix.lower() == ".zarr" or (d / "zarr.json").is_file() or (d / ".zgroup").is_file()


def _verify(found: FoundScan) -> None:
    """Open ``found`` with the full reader (hashing the file) and validate it."""
    if found.format == "dxchange":
        raw = dxchange.open_dxchange(found.path)
    elif found.format == "nexus":
        raw = nexus.open_nexus(found.path, entry=found.entry)
    elif found.format == "txrm":
        raw = txrm.open_txrm(found.path)
    else:
        spec = {
            k: ([str(p) for p in v] if isinstance(v, list) else str(v))
            for k in ("flats", "darks")
            if (v := getattr(found, k)) is not None
        }
        raw = tiff.open_tiff(str(found.path), angles=str(found.angles), **spec)
    with raw:
        raw.validate()


@dataclass
class _Walk:
    found: list[FoundScan] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    tiff_dirs: list[_TiffDir] = field(default_factory=list)
    frame_dirs: dict[Path, dict[str, Path]] = field(default_factory=dict)


def _walk(root: Path, out_root: Path) -> _Walk:
    """Probe the HDF5 and TXRM files under ``root``; collect the TIFF folders and flat/dark folders."""
    w = _Walk()

    def on_error(exc: OSError) -> None:
        w.unreadable.append(Unreadable(Path(exc.filename or root), f"cannot list folder ({exc.strerror or exc})"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
        d = Path(dirpath)
        keep = []
        for n in sorted(dirnames, key=natural_key):
            sub = d / n
            if n.startswith(".") or sub.is_symlink() or _is_store(sub) or sub == out_root:
                w.skipped.append(sub)
            else:
                keep.append(n)
        dirnames[:] = keep  # os.walk descends into these only
        tiffs: dict[str, list[Path]] = {"projections": [], "flats": [], "darks": []}
        for n in sorted(filenames, key=natural_key):
            p = d / n
            suffix = p.suffix.lower()
            if n.startswith("."):
                w.skipped.append(p)
            elif suffix in TIFF_SUFFIXES:
                tiffs[_role(n)].append(p)
            elif suffix in HDF5_SUFFIXES or suffix in TXRM_SUFFIXES or (suffix == "" and _sniff(p)):
                for item in _probe_file(p):
                    if isinstance(item, FoundScan):
                        w.found.append(item)
                    else:
                        w.unreadable.append(item)
            else:
                w.skipped.append(p)
        role = _FRAME_DIRS.get(d.name.lower()) if d != root else None
        if role is not None and any(tiffs.values()):
            w.frame_dirs.setdefault(d.parent, {})[role] = d
        elif tiffs["projections"]:
            w.tiff_dirs.append(_TiffDir(d, tiffs["projections"], tiffs["flats"], tiffs["darks"]))
        elif tiffs["flats"] or tiffs["darks"]:
            w.unreadable.append(Unreadable(d, "only flat/dark TIFF files, no projections"))
    return w


def _tiff_scans(w: _Walk, root: Path) -> None:
    """Probe the TIFF folders of a walk, with the flat/dark folders beside them, into ``w.found``."""
    per_parent: dict[Path, int] = {}
    for t in w.tiff_dirs:
        per_parent[t.path.parent] = per_parent.get(t.path.parent, 0) + 1
    for parent, roles in w.frame_dirs.items():
        if per_parent.get(parent, 0) != 1:
            for folder in roles.values():
                w.unreadable.append(
                    Unreadable(
                        folder,
                        f"flat/dark folder, but {per_parent.get(parent, 0)} TIFF-stack "
                        "scans beside it (need exactly one): add flats/darks by hand",
                    )
                )
    for t in w.tiff_dirs:
        beside = w.frame_dirs.get(t.path.parent, {}) if per_parent[t.path.parent] == 1 else {}
        try:
            w.found.append(_tiff_scan(t, beside, root))
        except TomoflowError as exc:
            w.unreadable.append(Unreadable(t.path, error_reason(exc, t.path)))
        except Exception as exc:
            logger.warning("%s: unexpected error", t.path, exc_info=True)
            w.unreadable.append(Unreadable(t.path, f"unexpected error ({type(exc).__name__}: {exc})"))


def scan_archive(
    directory: str | os.PathLike,
    *,
    output: str | os.PathLike | None = None,
    pipeline: Sequence[Any] | None = None,
    cluster: str = "local",
    verify: bool = False,
) -> ArchiveScan:
    """Find the raw scans under ``directory`` and make a batch manifest of them (module docstring).

    Parameters
    ----------
    directory
        The archive folder (walked recursively).
    output
        Output root of the manifest; default ``<directory>-processed`` beside the archive.
    pipeline
        Stages (names or stage mappings); default :data:`DEFAULT_PIPELINE`.
    cluster
        Cluster spec of the manifest.
    verify
        Open every scan with its full reader (hashes every file: slow on a large archive).

    Returns
    -------
    ArchiveScan
        ``manifest`` is None when no usable scan was found.

    Raises
    ------
    InputError
        ``directory`` is not a folder.
    ConfigError
        ``pipeline``, ``output`` or ``cluster`` make an invalid manifest (e.g. ``recover``, which needs
        each scan's HR volume: add it by hand).
    """
    root = Path(directory).absolute()
    if not root.is_dir():
        raise InputError("not a folder (expected an archive of raw scans)", root)
    # names or stage mappings: the Manifest validates them into stage models
    stages: list[Any] = list(pipeline) if pipeline is not None else list(DEFAULT_PIPELINE)
    names = [
        s if isinstance(s, str) else s.get("stage") if isinstance(s, dict) else getattr(s, "stage", None)
        for s in stages
    ]
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage(s) {', '.join(map(repr, unknown))}; stages are {', '.join(STAGES)}")
    if "recover" in names:
        raise ConfigError(
            "recover needs every scan's paired HR volume, which an archive does not tell; add the "
            "recover stage and each scan's hr: to the manifest by hand"
        )
    out_root = Path(output).absolute() if output is not None else root.with_name(root.name + "-processed")
    walk = _walk(root, out_root)
    found, unreadable, skipped = walk.found, walk.unreadable, walk.skipped
    _tiff_scans(walk, root)
    found.sort(key=lambda f: natural_key(f.path))
    taken: set[str] = set()
    for f in found:
        f.name = _safe_name(f.name, taken)
    if verify:
        kept = []
        for f in found:
            try:
                _verify(f)
                kept.append(f)
            except TomoflowError as exc:
                unreadable.append(Unreadable(f.path, error_reason(exc, f.path)))
        found = kept
    unreadable.sort(key=lambda u: natural_key(u.path))
    used = {f.angles for f in found}
    skipped = [p for p in skipped if p not in used]
    manifest = None
    if found:
        try:
            manifest = Manifest(
                version=1, output=out_root, cluster=cluster, pipeline=stages, scans=[f.entry_model() for f in found]
            )
        except ValidationError as exc:
            raise ConfigError(
                f"{root}: the manifest of this archive would be invalid\n" + format_validation_error(exc)
            ) from None
    return ArchiveScan(root=root, manifest=manifest, scans=found, unreadable=unreadable, skipped=skipped)


def _sniff(path: Path) -> bool:
    """A file without suffix that starts like HDF5 or OLE2 (TXRM)."""
    try:
        return detect_format(path) in ("dxchange", "nexus", "txrm")
    except TomoflowError:
        return False


def _probe_file(path: Path) -> list[FoundScan | Unreadable]:
    """The scan(s) of an HDF5 / TXRM file, or why it cannot be used."""
    try:
        fmt = detect_format(path)
        if fmt == "dxchange":
            return [FoundScan(path.stem, path, fmt, probe_dxchange(path))]
        if fmt == "txrm":
            return [FoundScan(path.stem, path, fmt, probe_txrm(path))]
        if fmt != "nexus":
            raise InputError(f"a {fmt} file, not DXchange, NeXus or TXRM", path)
        entries = probe_nexus(path)
        out: list[FoundScan | Unreadable] = []
        for entry, shape, problem in entries:
            label = path.stem if len(entries) == 1 else f"{path.stem}-{entry.strip('/').replace('/', '-')}"
            if problem is not None:
                out.append(Unreadable(path, problem))
            else:
                out.append(
                    FoundScan(
                        label,
                        path,
                        fmt,
                        shape,
                        entry=entry if len(entries) > 1 else None,
                        notes=[f"NeXus entry {entry}"] if len(entries) > 1 else [],
                    )
                )
        return out
    except TomoflowError as exc:
        return [Unreadable(path, error_reason(exc, path))]
    except Exception as exc:
        logger.warning("%s: unexpected error", path, exc_info=True)
        return [Unreadable(path, f"unexpected error ({type(exc).__name__}: {exc})")]
