"""The output policy of every file tomoflow writes: stores, and the files beside them.

Part of the stage engine (:mod:`tomoflow.pipeline.engine` re-exports the store half); it lives in the
storage layer so that ingest, which writes scan stores from raw files, obeys the same rules.

Stores:

* a stage's output is fingerprinted by the *identity* of its inputs and its parameters
  (:func:`identity_of`, :func:`fingerprint`), never by path strings;
* :func:`prepare_output` decides — writing nothing — whether to create, resume, return at once or
  replace, and refuses everything that could lose a user's data;
* :func:`create_store` creates the root group with its attributes in one atomic write, deleting a
  previous store only when it is a tomoflow store of the expected kind, made by the same stage.

Files (JSON, PNG, model weights and cards, ONNX, checkpoints, manifests, schemas, reports, logs):

* :func:`plan_file` (and :func:`plan_folder`, :func:`plan_files` for a folder of named files) decides,
  writing nothing and before any work, whether a file may be written: never inside a store, never
  onto or inside an input, never over a file tomoflow did not write (recognised by the *stamp* every
  tomoflow file carries, :func:`read_stamp`), over one it wrote only with ``overwrite``, and not at
  all when the same inputs and parameters made it (``action == "same"``);
* :func:`write_file` checks again, writes a temporary name in the same folder and renames it into
  place (:func:`write_json`, :func:`save_figure` for the common formats).

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> plan = plan_file(d / "doc.json", kind="document", fingerprint="abc")
>>> plan.action
'create'
>>> _ = write_json(plan, {"answer": 42})
>>> read_stamp(d / "doc.json")["kind"], plan_file(d / "doc.json", kind="document", fingerprint="abc").action
('document', 'same')
>>> (d / "notes.json").write_text("{}")
2
>>> plan_file(d / "notes.json", kind="document", overwrite=True)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
tomoflow.errors.StoreError: .../notes.json: exists and was not written by tomoflow; refusing to replace it ...
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tomoflow.errors import StoreError, TomoflowError
from tomoflow.io.stages import StageLog, read_zarr_json, stage_records, store_identity, store_kind

__all__ = [
    "OutputPlan",
    "fingerprint",
    "identity_of",
    "prepare_output",
    "create_store",
    "resolved_path",
    "FilePlan",
    "FILE_KINDS",
    "STAMP_KEY",
    "plan_file",
    "plan_folder",
    "write_file",
    "write_json",
    "read_stamp",
    "as_file_plan",
    "check_not_an_input",
    "enclosing_store",
    "check_writable_location",
    "save_figure",
    "save_image",
    "file_stamp",
    "plan_files",
    "stamped_json",
    "body_digest",
]


def _canonical(obj: Any) -> Any:
    """JSON-able, order-independent form of parameters (tuples as lists, NumPy scalars as Python)."""
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return repr(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if isinstance(obj, os.PathLike):
        raise TypeError("paths are not parameters: pass inputs by identity (identity_of)")
    return repr(obj)


def identity_of(path: str | os.PathLike) -> str:
    """Identity of a stage input, independent of the path used to reach it.

    A tomoflow store: :func:`tomoflow.io.stages.store_identity` (its complete stages' output ids).
    A file: ``"sha256:<hex>"`` of its bytes.

    Raises
    ------
    StoreError
        The path does not exist, or is an incomplete store.
    """
    p = Path(path)
    if store_kind(p) is not None:
        return store_identity(p)
    if p.is_file():
        from tomoflow._hashing import file_sha256

        return "sha256:" + file_sha256(p)
    raise StoreError(f"{p}: no such file or tomoflow store")


def fingerprint(stage: str, *, inputs: Mapping[str, str], params: Mapping[str, Any]) -> str:
    """sha256 (hex) of a stage's name, its inputs' identities and its parameters.

    Parameters
    ----------
    stage
        Stage name, e.g. ``"recon"``.
    inputs
        Role -> identity (:func:`identity_of`), e.g. ``{"scan": identity_of("scan.zarr")}``.
    params
        The parameters *as requested* (``center="auto"``, not the estimate it led to), JSON-able.
        Leave out what does not change the result (device, block size, cluster).
    """
    doc = {"stage": stage, "inputs": _canonical(dict(inputs)), "params": _canonical(dict(params))}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# ----------------------------------------------------------------------------- output safety
@dataclass(frozen=True)
class OutputPlan:
    """What :func:`prepare_output` decided for an output path.

    Attributes
    ----------
    action
        ``"create"`` (nothing there, or an empty folder), ``"resume"`` (our store, same fingerprint,
        incomplete), ``"complete"`` (our store, same fingerprint, complete: write nothing) or
        ``"replace"`` (our store of the expected kind, ``overwrite`` asked: delete, then create).
    path
        The output path as given.
    """

    action: Literal["create", "resume", "complete", "replace"]
    path: Path


def resolved_path(path: str | os.PathLike) -> Path:
    """Absolute path with symlinks resolved (how two paths are compared)."""
    return Path(os.path.abspath(os.path.realpath(os.fspath(path))))


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``{"a.b": leaf}`` (so a change deep in a dictionary is named, not dumped)."""
    if isinstance(value, Mapping) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def _short(value: Any, limit: int = 48) -> str:
    text = repr(_canonical(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe_params_change(old: Mapping[str, Any], new: Mapping[str, Any], first: int = 4) -> str:
    """The first few parameters that differ, as ``name: old -> new`` (values shortened), and a count.

    >>> _describe_params_change({"center": 295.9, "cal": {"a": 1, "b": 2}}, {"center": 300.0, "cal": {"a": 1, "b": 3}})
    'cal.b: 2 -> 3; center: 295.9 -> 300.0'
    """
    flat_old, flat_new = _flatten(dict(old)), _flatten(dict(new))
    keys = sorted(set(flat_old) | set(flat_new))
    diffs = [
        f"{k}: {_short(flat_old.get(k))} -> {_short(flat_new.get(k))}"
        for k in keys
        if _canonical(flat_old.get(k)) != _canonical(flat_new.get(k))
    ]
    if not diffs:
        return "its inputs differ (another scan or an input that changed)"
    more = f"; and {len(diffs) - first} more" if len(diffs) > first else ""
    return "; ".join(diffs[:first]) + more


_KIND_NAMES = {"tomoflow-scan": "scan store", "tomoflow-volume": "volume store"}


def prepare_output(
    path: str | os.PathLike,
    *,
    kind: str,
    stage: str,
    fingerprint: str,
    params: Mapping[str, Any] | None = None,
    inputs: Sequence[str | os.PathLike] = (),
    overwrite: bool = False,
) -> OutputPlan:
    """Decide, writing nothing, what a stage may do with its output path.

    Parameters
    ----------
    path
        The output store the stage wants to write.
    kind
        The store kind the stage makes (``"tomoflow-scan"``, ``"tomoflow-volume"``).
    stage
        The stage whose record decides resume (``"ingest"``, ``"recon"``).
    fingerprint
        The stage's :func:`fingerprint`; ``params`` (optional) only improves the refusal message.
    inputs
        Every file or store the stage reads: none may be, contain or lie inside the output.
    overwrite
        Replace an existing store of the same kind made with other inputs or parameters.

    Returns
    -------
    OutputPlan

    Raises
    ------
    StoreError
        With a one-line reason: the output is an input, lies inside one or contains one; it is a
        file, a non-empty folder that is not a tomoflow store, or a tomoflow store of another kind
        (never replaced, whatever ``overwrite`` says); or it is our kind made from other inputs or
        parameters and ``overwrite`` is False.
    """
    out = Path(path)
    check_not_an_input(out, inputs, f"the {stage} output")
    if out.is_symlink():  # replacing would follow it to wherever it points, or delete the link's target
        raise StoreError(
            f"{out}: is a symbolic link; tomoflow writes a store only at a real path; choose another output path"
        )
    outer = enclosing_store(out.absolute().parent)
    if outer is not None:  # a store inside a store: its files would be part of the outer one
        raise StoreError(
            f"{out}: lies inside the tomoflow store {outer}; tomoflow never writes into a store; "
            "choose a path outside it"
        )
    what = _KIND_NAMES.get(kind, kind)
    if not os.path.lexists(out):
        return OutputPlan("create", out)
    if not out.is_dir():
        raise StoreError(f"{out}: exists and is not a folder; refusing to replace it")
    found = store_kind(out)
    if found is None:
        try:
            empty = not any(out.iterdir())
        except OSError as exc:
            raise StoreError(f"{out}: cannot read ({exc.strerror or exc})") from None
        if empty:
            return OutputPlan("create", out)
        raise StoreError(
            f"{out}: is a folder that is not a tomoflow store; refusing to write into it or "
            f"delete it{' (even with --overwrite)' if overwrite else ''}; choose a new path"
        )
    if found != kind:
        raise StoreError(
            f"{out}: is a tomoflow {_KIND_NAMES.get(found, found)}, not a {what}; "
            "refusing to replace it; choose another output path"
        )
    log_ = StageLog(out, stage)
    if not log_.exists:
        made_by = sorted(stage_records(out))
        if made_by:
            # Same kind, another stage: an ingested scan is not an alignment, an HR volume is not a
            # recovered one. Such a store may be the only copy of the data: never replaced.
            raise StoreError(
                f"{out}: is a {what} made by tomoflow {' and '.join(made_by)}, not by {stage}; "
                f"refusing to replace it{' (even with --overwrite)' if overwrite else ''}; "
                "choose another output path"
            )
        root = (read_zarr_json(out) or {}).get("attributes") or {}
        if "stages" in root:
            if overwrite:
                return _replacing(out)
            raise StoreError(
                f"{out}: a {what} made by an older tomoflow (format without stage records); "
                "pass --overwrite to replace it, or choose another output path"
            )
        # Our own store, interrupted while it was being created: nothing was computed into it yet.
        return _replacing(out)
    if overwrite:
        return _replacing(out)
    rec = log_.record
    if rec.fingerprint != fingerprint:
        why = _describe_params_change(rec.params, params or {})
        raise StoreError(
            f"{out}: was made from other inputs or parameters ({why}); pass --overwrite to "
            "replace it, or choose another output path"
        )
    return OutputPlan("complete" if rec.complete else "resume", out)


def foreign_files(store: str | os.PathLike, first: int = 5) -> tuple[list[str], int]:
    """Files inside a tomoflow store that are not part of a zarr v3 hierarchy (a user's notes, a
    folder copied in): ``(the first few, relative to the store; how many in all)``.

    A zarr v3 store holds only ``zarr.json`` in every node, sub-nodes (folders with their own
    ``zarr.json``) in groups, and chunks (``c/...`` or ``c.<i>.<j>...``) in arrays.
    """
    root = Path(store)
    found: list[str] = []
    count = 0

    def visit(node: Path) -> None:
        nonlocal count
        doc = read_zarr_json(node) or {}
        is_array = doc.get("node_type") == "array"
        try:
            entries = list(os.scandir(node))
        except OSError:
            return
        for e in entries:
            if e.name == "zarr.json":
                continue
            if is_array and (e.name == "c" or e.name.startswith("c.")):
                continue
            if not is_array and e.is_dir(follow_symlinks=False) and (Path(e.path) / "zarr.json").is_file():
                visit(Path(e.path))
                continue
            if e.is_dir(follow_symlinks=False):
                inner = [str(p.relative_to(root)) for p in Path(e.path).rglob("*") if not p.is_dir()]
                count += max(1, len(inner))
                found.extend((inner or [str(Path(e.path).relative_to(root)) + "/"])[: max(0, first - len(found))])
            else:
                count += 1
                if len(found) < first:
                    found.append(str(Path(e.path).relative_to(root)))

    visit(root)
    return found, count


def _replacing(out: Path) -> OutputPlan:
    """A replace plan for a store of ours, unless files tomoflow did not write are inside it."""
    found, count = foreign_files(out)
    if count:
        more = f" and {count - len(found)} more" if count > len(found) else ""
        raise StoreError(
            f"{out}: holds files tomoflow did not write ({', '.join(found)}{more}); refusing to "
            "delete it (even with --overwrite); move them out, or choose another output path"
        )
    return OutputPlan("replace", out)


def create_store(plan: OutputPlan, attributes: Mapping[str, Any]) -> Any:
    """Create the root group of a new store with ``attributes`` in one write; return the zarr group.

    For ``plan.action == "replace"`` the existing store is deleted first — after checking once more
    that it is a tomoflow store (the only kind of folder tomoflow ever deletes).

    Raises
    ------
    StoreError
        The location cannot be written (read-only file system, permissions, disk full).
    """
    import zarr

    if plan.action not in ("create", "replace"):
        raise ValueError(f"create_store needs a create/replace plan, got {plan.action!r}")
    path = plan.path
    try:
        if plan.action == "replace":
            if store_kind(path) is None:  # pragma: no cover - prepare_output checked it
                raise StoreError(f"{path}: not a tomoflow store; refusing to delete it")
            shutil.rmtree(path)
        return zarr.create_group(str(path), zarr_format=3, attributes=dict(attributes), overwrite=False)
    except OSError as exc:
        raise StoreError(f"{path}: cannot create the store ({exc.strerror or exc})") from None
    except Exception as exc:  # zarr wraps OS errors (e.g. ContainsGroupError)
        if isinstance(exc, TomoflowError):
            raise
        raise StoreError(f"{path}: cannot create the store ({type(exc).__name__}: {exc})") from None


# ============================================================================= files
# Every file tomoflow writes beside its stores (JSON documents, PNG pictures, model weights and cards,
# ONNX exports, checkpoints, manifests, reports, logs) goes through the same policy as the stores:
#
# * nothing is written inside a tomoflow store, onto an input of the run or inside an input folder;
# * a file tomoflow did not make is never replaced: tomoflow recognises its own files by a *stamp*
#   carried in the file itself (a JSON key, a PNG text chunk, safetensors/ONNX metadata, a first-line
#   comment in YAML, HTML and logs) naming the kind of file and the fingerprint of what made it;
# * a file tomoflow made is left untouched when the rerun would write the same thing (same kind,
#   same fingerprint), replaced only with ``overwrite`` otherwise, and never by a file of another kind;
# * every check runs before any work (:func:`plan_file`) and again just before the write
#   (:func:`write_file`), which writes a temporary name in the same folder and renames it into place.

#: The key (JSON), text-chunk keyword (PNG) and metadata key (safetensors, ONNX) of a file's stamp.
STAMP_KEY = "tomoflow_file"

#: What each kind of file may be called (its suffixes); the first is the one suggested in messages.
FILE_KINDS: dict[str, tuple[str, ...]] = {
    "picture": (".png",),
    "registration": (".json",),
    "pore-metrics": (".json",),
    "model-weights": (".safetensors",),
    "model-card": (".json",),
    "model-onnx": (".onnx",),
    "aligner-checkpoint": (".safetensors", ".json"),
    "recovery-checkpoint": (".safetensors", ".json"),
    "training-data": (".safetensors", ".json"),
    "manifest": (".yaml", ".yml", ".json"),
    "batch-report": (".html", ".json"),
    "log": (".log",),
    "schema": (".json",),
    "document": (".json",),
    "raw-scan": (".h5", ".hdf5", ".hdf", ".he5", ".nxs"),
}

#: Largest file read when looking for a stamp (a bigger JSON or YAML is not one tomoflow wrote).
_STAMP_READ_LIMIT = 256 * 2**20
_TEXT_FORMATS = {".yaml": "# ", ".yml": "# ", ".log": "# ", ".txt": "# "}


def _version() -> str:
    from tomoflow._version import __version__

    return __version__


@dataclass(frozen=True)
class FilePlan:
    """What :func:`plan_file` decided for a file tomoflow is about to write.

    Attributes
    ----------
    path
        The file, as given.
    kind
        What the file is (a key of :data:`FILE_KINDS`): files of different kinds never replace each other.
    action
        ``"create"`` (nothing there), ``"replace"`` (a file tomoflow made, ``overwrite`` asked) or
        ``"same"`` (a file tomoflow made from the same inputs and parameters: written again by nobody).
    fingerprint
        Digest of what the file is made from (:func:`fingerprint`), recorded in its stamp.
    inputs, overwrite, option
        As given to :func:`plan_file` (the write checks them again).
    """

    path: Path
    kind: str
    action: Literal["create", "replace", "same"]
    fingerprint: str | None = None
    inputs: tuple[str, ...] = ()
    overwrite: bool = False
    option: str | None = None

    @property
    def stamp(self) -> dict[str, Any]:
        """The stamp the file carries: its kind, fingerprint and the tomoflow version that wrote it."""
        return {"kind": self.kind, "fingerprint": self.fingerprint, "tomoflow": _version()}

    @property
    def stamp_text(self) -> str:
        return json.dumps(self.stamp, sort_keys=True, separators=(",", ":"))

    def png_metadata(self) -> dict[str, str]:
        """``metadata=`` for matplotlib's ``savefig``/``imsave``: the stamp as a PNG text chunk."""
        return {"Software": f"tomoflow {_version()}", STAMP_KEY: self.stamp_text}

    def safetensors_metadata(self, **extra: str) -> dict[str, str]:
        """safetensors header metadata carrying the stamp (plus ``extra``, all strings)."""
        return {**{k: str(v) for k, v in extra.items()}, STAMP_KEY: self.stamp_text}

    def json_text(self, doc: Mapping[str, Any], *, indent: int | None = 2, default: Any = None) -> str:
        """``doc`` as JSON text carrying the stamp under :data:`STAMP_KEY` (:func:`stamped_json`)."""
        return stamped_json(doc, self.kind, self.fingerprint, indent=indent, default=default)

    def text_document(self, body: str, *, html: bool = False) -> str:
        """``body`` (YAML, a log, an HTML page) after a first line carrying the stamp, with the digest
        of ``body``: a file edited after tomoflow wrote it is no longer taken for tomoflow's."""
        stamp = dict(self.stamp, body=hashlib.sha256(body.encode("utf-8")).hexdigest())
        text = json.dumps(stamp, sort_keys=True, separators=(",", ":"))
        return (f"<!-- {STAMP_KEY}: {text} -->\n" if html else f"# {STAMP_KEY}: {text}\n") + body


def body_digest(value: Any) -> str:
    """Digest of a JSON document's content (its stamp left out), independent of its formatting.

    Parameters
    ----------
    value
        The document (JSON-serialisable), without its ``tomoflow_file`` stamp.

    Returns
    -------
    str
        sha256 hex digest of its canonical JSON (sorted keys, no spaces).
    """
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def stamped_json(
    doc: Mapping[str, Any],
    kind: str | None = None,
    fingerprint: str | None = None,
    *,
    indent: int | None = 2,
    default: Any = None,
) -> str:
    """JSON text of ``doc`` carrying tomoflow's stamp: its kind, fingerprint, version and the digest of
    the document itself (a file a user edited, or wrote with a copied stamp, is not taken for one
    tomoflow wrote). ``kind`` None keeps the kind and fingerprint of the stamp ``doc`` already has."""
    old = doc.get(STAMP_KEY)
    old = old if isinstance(old, Mapping) else {}
    if kind is None:
        kind, fingerprint = old.get("kind"), old.get("fingerprint")
    body = json.loads(json.dumps({k: v for k, v in doc.items() if k != STAMP_KEY}, default=default))
    stamp = dict(file_stamp(str(kind), fingerprint), body=body_digest(body))
    return json.dumps({**body, STAMP_KEY: stamp}, indent=indent) + "\n"


def _png_stamp(path: Path) -> dict[str, Any] | None:
    import struct

    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return None
        for _ in range(256):
            head = f.read(8)
            if len(head) < 8:
                return None
            length, ctype = struct.unpack(">I4s", head)
            if ctype in (b"IDAT", b"IEND") or length > 2**20:
                return None
            data = f.read(length)
            f.read(4)  # crc
            if ctype == b"tEXt" and b"\0" in data:
                key, _, value = data.partition(b"\0")
                if key.decode("latin-1") == STAMP_KEY:
                    return _parse_stamp(value.decode("latin-1"))
            elif ctype == b"iTXt" and data.startswith(STAMP_KEY.encode() + b"\0\0"):  # uncompressed
                rest = data[len(STAMP_KEY) + 3 :]
                parts = rest.split(b"\0", 2)  # language tag, translated keyword, text
                if len(parts) == 3:
                    return _parse_stamp(parts[2].decode("utf-8", "replace"))
    return None


def _parse_stamp(text: Any) -> dict[str, Any] | None:
    if isinstance(text, str):
        try:
            text = json.loads(text)
        except ValueError:
            return None
    if isinstance(text, dict) and isinstance(text.get("kind"), str):
        return text
    return None


def _safetensors_stamp(path: Path) -> dict[str, Any] | None:
    import struct

    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return None
        (n,) = struct.unpack("<Q", head)
        if n > 100 * 2**20:
            return None
        try:
            header = json.loads(f.read(n))
        except ValueError:
            return None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return _parse_stamp(meta.get(STAMP_KEY)) if isinstance(meta, dict) else None


def _onnx_stamp(path: Path) -> dict[str, Any] | None:
    try:
        import onnx
    except ImportError:
        return None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not an ONNX file
        return None
    for prop in model.metadata_props:
        if prop.key == STAMP_KEY:
            return _parse_stamp(prop.value)
    return None


def read_stamp(path: str | os.PathLike) -> dict[str, Any] | None:
    """The stamp of a file tomoflow wrote (``{"kind", "fingerprint", "tomoflow"}``), or None.

    None for anything else: a file without a stamp, an unreadable or oversized one, a folder, a link.
    Reads only what it needs (a JSON document, a PNG's chunks before its image data, a safetensors
    header, an ONNX file's metadata, the first line of a text file).
    """
    p = Path(path)
    try:
        if p.is_symlink() or not p.is_file():
            return None
        suffix = p.suffix.lower()
        if suffix == ".png":
            return _png_stamp(p)
        if suffix == ".safetensors":
            return _safetensors_stamp(p)
        if suffix == ".onnx":
            return _onnx_stamp(p)
        if suffix == ".json":
            if p.stat().st_size > _STAMP_READ_LIMIT:
                return None
            with open(p, encoding="utf-8") as f:
                doc = json.load(f)
            if not isinstance(doc, dict):
                return None
            sid = doc.get("$id")
            old = doc.get(STAMP_KEY)
            if (
                (old is None or (isinstance(old, dict) and "body" not in old))
                and isinstance(sid, str)
                and sid.startswith("tomoflow/")
                and sid.endswith(".schema.json")
            ):  # schemas of tomoflow 0.1
                return {"kind": "schema", "fingerprint": None}
            stamp = _parse_stamp(doc.pop(STAMP_KEY, None))
            # the document must be the one stamped: edited (or a copied stamp) is no longer tomoflow's
            return stamp if stamp is not None and stamp.get("body") == body_digest(doc) else None
        if suffix in FILE_KINDS["raw-scan"]:
            import h5py

            with h5py.File(p, "r") as f:
                stamp = f.attrs.get(STAMP_KEY)
                if (
                    stamp is None and f.attrs.get("tomoflow_writer") == "tomoflow"
                ):  # Data Exchange files of tomoflow 0.1
                    return {"kind": "raw-scan", "fingerprint": None}
                return _parse_stamp(stamp.decode() if isinstance(stamp, bytes) else stamp)
        if p.stat().st_size > _STAMP_READ_LIMIT:
            return None
        raw = p.read_bytes()
        head, _, body = raw.partition(b"\n")
        first = head.decode("utf-8").strip()
        for lead, tail in (("# ", ""), ("<!-- ", " -->")):
            prefix = f"{lead}{STAMP_KEY}: "
            if first.startswith(prefix) and first.endswith(tail):
                stamp = _parse_stamp(first[len(prefix) : len(first) - len(tail)])
                ok = stamp is not None and stamp.get("body") == hashlib.sha256(body).hexdigest()
                return stamp if ok else None
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    except Exception:  # noqa: BLE001 - h5py raises its own types for a file that is not HDF5
        return None
    return None


def enclosing_store(path: str | os.PathLike) -> Path | None:
    """The tomoflow store that ``path`` is, or lies inside (following links), else None."""
    real = resolved_path(path)
    for p in (real, *real.parents):
        if store_kind(p) is not None:
            return p
    return None


def check_writable_location(path: str | os.PathLike) -> None:
    """Refuse up front a file or folder that cannot be created: its nearest existing parent must be a
    writable folder.

    Raises
    ------
    StoreError
        Naming the path and the folder that refuses it.
    """
    p = Path(path)
    parent = p.absolute().parent
    while not os.path.lexists(parent) and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise StoreError(f"{p}: cannot be created: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StoreError(f"{p}: cannot be created: the folder {parent} is not writable")


def check_not_an_input(path: str | os.PathLike, inputs: Sequence[str | os.PathLike], what: str) -> None:
    """Refuse (:class:`StoreError`) an output that is an input of the run, lies inside one or holds one."""
    path = Path(path)
    real = resolved_path(path)
    for inp in inputs:
        r = resolved_path(inp)
        if real == r:
            raise StoreError(f"{path}: is an input of this run; refusing to write {what} over it; choose another path")
        if _inside(real, r):
            raise StoreError(f"{path}: lies inside the input {inp}; choose a path outside it")
        if _inside(r, real):
            raise StoreError(f"{path}: contains the input {inp}; choose another path")


def plan_file(
    path: str | os.PathLike,
    *,
    kind: str,
    fingerprint: str | None = None,
    inputs: Sequence[str | os.PathLike] = (),
    overwrite: bool = False,
    option: str | None = None,
) -> FilePlan:
    """Decide, writing nothing, whether tomoflow may write the file ``path``; call it before any work.

    Parameters
    ----------
    path
        The file to write.
    kind
        What it is (a key of :data:`FILE_KINDS`); its suffix must be one of that kind's.
    fingerprint
        Digest of the inputs and parameters the file is made from (:func:`fingerprint`): a file tomoflow
        made with the same one is left as it is (``action == "same"``). None: always a new file.
    inputs
        Every file or store the run reads: the file may not be one of them or lie inside one.
    overwrite
        Replace a file tomoflow made from other inputs or parameters (of the same kind).
    option
        The command-line option that named the file (``"--png"``), for messages.

    Returns
    -------
    FilePlan

    Raises
    ------
    ConfigError
        The name does not fit the kind (a ``.json`` given to ``--png``).
    StoreError
        One line, naming the file: it lies in a tomoflow store or an input, is an input, is a folder
        or a link, is a file tomoflow did not make or a tomoflow file of another kind, was made from
        other inputs without ``overwrite``, or its folder cannot be written.
    """
    from tomoflow.errors import ConfigError

    if kind not in FILE_KINDS:
        raise ValueError(f"unknown file kind {kind!r}; one of {sorted(FILE_KINDS)}")
    p = Path(path)
    label = f"{option} {p}" if option else str(p)
    suffixes = FILE_KINDS[kind]
    if p.name in ("", ".", "..") or str(path).endswith(("/", os.sep)):
        raise ConfigError(f"{label}: expected a file name ending in {' or '.join(suffixes)}, got a folder")
    if p.suffix.lower() not in suffixes:
        raise ConfigError(
            f"{label}: a {kind.replace('-', ' ')} file must end in {' or '.join(suffixes)}, "
            f"not {p.suffix or 'no suffix'}"
        )
    store = enclosing_store(p)
    if store is not None:
        raise StoreError(
            f"{p}: {'is' if store == resolved_path(p) else 'lies inside'} the tomoflow store {store}; "
            "tomoflow never writes files into a store; choose a path outside it"
        )
    check_not_an_input(p, inputs, f"a {kind.replace('-', ' ')}")
    common = dict(
        path=p,
        kind=kind,
        fingerprint=fingerprint,
        inputs=tuple(os.fspath(i) for i in inputs),
        overwrite=overwrite,
        option=option,
    )
    if not os.path.lexists(p):
        check_writable_location(p)
        return FilePlan(action="create", **common)  # type: ignore[arg-type]  # common holds the typed fields
    if p.is_symlink():
        raise StoreError(f"{p}: is a symbolic link; tomoflow does not replace links; choose another path")
    if p.is_dir():
        raise StoreError(f"{p}: is a folder; expected a {' or '.join(suffixes)} file name")
    if not p.is_file():
        raise StoreError(f"{p}: exists and is not a regular file; choose another path")
    stamp = read_stamp(p)
    if stamp is None:
        raise StoreError(
            f"{p}: exists and was not written by tomoflow; refusing to replace it"
            f"{' (even with --overwrite)' if overwrite else ''}; choose another path or move it away"
        )
    if stamp.get("kind") != kind:
        raise StoreError(
            f"{p}: is a tomoflow {str(stamp.get('kind')).replace('-', ' ')} file, not a "
            f"{kind.replace('-', ' ')}; refusing to replace it; choose another path"
        )
    if fingerprint is not None and stamp.get("fingerprint") == fingerprint:
        return FilePlan(action="same", **common)  # type: ignore[arg-type]  # common holds the typed fields
    if not overwrite:
        raise StoreError(
            f"{p}: was written by tomoflow from other inputs or parameters; pass --overwrite to "
            "replace it, or choose another path"
        )
    check_writable_location(p)
    return FilePlan(action="replace", **common)  # type: ignore[arg-type]  # common holds the typed fields


def plan_folder(
    path: str | os.PathLike, *, inputs: Sequence[str | os.PathLike] = (), option: str | None = None, what: str = "files"
) -> Path:
    """Check, writing nothing, a folder tomoflow will write named files into (each through
    :func:`plan_file`): not a tomoflow store, not inside one, not an input or inside one, not a file.

    Returns the folder path. Raises :class:`StoreError` with one line naming it.
    """
    p = Path(path)
    store = enclosing_store(p)
    if store is not None:
        raise StoreError(
            f"{p}: {'is' if store == resolved_path(p) else 'lies inside'} the tomoflow store {store}; "
            f"tomoflow never writes {what} into a store; choose a folder outside it"
        )
    check_not_an_input(p, inputs, what)
    if os.path.lexists(p) and not p.is_dir():
        raise StoreError(f"{p}: exists and is not a folder; choose another path for the {what}")
    check_writable_location(p / "probe")
    return p


def write_file(plan: FilePlan, content: bytes | str | Callable[[Path], Any]) -> Path:
    """Write a planned file: checks again, writes a temporary name in the same folder, renames it.

    Parameters
    ----------
    plan
        From :func:`plan_file` (before the work).
    content
        The bytes or text, or a function ``write(tmp_path)`` that writes the file (matplotlib,
        safetensors, ONNX) at the temporary path, which has the right suffix. Text and JSON must
        carry the plan's stamp (:meth:`FilePlan.json_text`, :meth:`FilePlan.text_document`); a
        writer passes :meth:`FilePlan.png_metadata` or :meth:`FilePlan.safetensors_metadata`.

    Returns
    -------
    Path
        The file (left untouched when ``plan.action == "same"``).

    Raises
    ------
    StoreError
        The file became something tomoflow may not replace since it was planned, or the write
        failed (disk full, permissions): nothing is left behind.
    """
    again = plan_file(
        plan.path,
        kind=plan.kind,
        fingerprint=plan.fingerprint,
        inputs=plan.inputs,
        overwrite=plan.overwrite or plan.action == "replace",
        option=plan.option,
    )
    if again.action == "same":
        return plan.path
    path = plan.path
    path.absolute().parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    try:
        if callable(content):
            content(tmp)
        else:
            data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
            with open(tmp, "wb") as f:
                f.write(data)
        stamp = read_stamp(tmp)
        if stamp is None or stamp.get("kind") != plan.kind or stamp.get("fingerprint") != plan.fingerprint:
            raise RuntimeError(f"{path}: the {plan.kind} writer did not stamp the file (a tomoflow bug)")
        os.replace(tmp, path)
    except OSError as exc:
        from tomoflow.errors import describe_os_error

        raise StoreError(describe_os_error(exc, path)) from None
    finally:
        with contextlib.suppress(OSError):
            if os.path.lexists(tmp):
                os.unlink(tmp)
    return path


def _temporary_name(path: Path) -> Path:
    """A name beside ``path`` that nobody can guess (so no link can be planted there), same suffix
    (writers such as matplotlib choose the format by it), hidden."""
    return path.with_name(f".{path.stem}.tomoflow-{os.getpid()}-{os.urandom(6).hex()}{path.suffix}")


def write_json(plan: FilePlan, doc: Mapping[str, Any], *, indent: int | None = 2, **dump: Any) -> Path:
    """:func:`write_file` of a JSON document carrying the plan's stamp."""
    return write_file(plan, plan.json_text(doc, indent=indent, default=dump.get("default")))


def as_file_plan(
    target: str | os.PathLike | FilePlan,
    *,
    kind: str,
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike] = (),
    fingerprint: str | None = None,
) -> FilePlan:
    """``target`` if it is already a :class:`FilePlan`, else :func:`plan_file` of it (API functions that
    write a file take either)."""
    if isinstance(target, FilePlan):
        if target.kind != kind:
            raise ValueError(f"{target.path}: planned as a {target.kind} file, written as a {kind}")
        return target
    return plan_file(target, kind=kind, overwrite=overwrite, inputs=inputs, fingerprint=fingerprint)


def save_figure(
    fig: Any,
    target: str | os.PathLike | FilePlan,
    *,
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike] = (),
    dpi: int = 110,
) -> Path:
    """Save a matplotlib figure as a PNG through the file policy (stamped, atomic) and close it.

    ``target`` is a :class:`FilePlan` made before the work, or a path planned here (a new file, or a
    picture tomoflow made when ``overwrite``).
    """
    import matplotlib.pyplot as plt

    try:
        plan = as_file_plan(target, kind="picture", overwrite=overwrite, inputs=inputs)
        return write_file(plan, lambda tmp: fig.savefig(tmp, dpi=dpi, metadata=plan.png_metadata()))
    finally:
        plt.close(fig)


def save_image(
    image: Any, target: str | os.PathLike | FilePlan, *, overwrite: bool = False, cmap: str = "gray"
) -> Path:
    """``matplotlib.pyplot.imsave`` of a 2-D array (values 0..1) through the file policy."""
    import matplotlib.pyplot as plt

    plan = as_file_plan(target, kind="picture", overwrite=overwrite)
    return write_file(plan, lambda tmp: plt.imsave(tmp, image, cmap=cmap, metadata=plan.png_metadata()))


def file_stamp(kind: str, fingerprint: str | None = None) -> dict[str, Any]:
    """The stamp a file of ``kind`` carries (for writers that build the file themselves, e.g. a model
    card written beside its weights): ``{"kind", "fingerprint", "tomoflow"}``."""
    if kind not in FILE_KINDS:
        raise ValueError(f"unknown file kind {kind!r}")
    return {"kind": kind, "fingerprint": fingerprint, "tomoflow": _version()}


def plan_files(
    folder: str | os.PathLike,
    files: Mapping[str, str],
    *,
    fingerprint: str | None = None,
    inputs: Sequence[str | os.PathLike] = (),
    overwrite: bool = False,
    option: str | None = "--out",
    renew: Sequence[str] = (),
) -> dict[str, FilePlan]:
    """Check, before any work, a folder and the named files tomoflow will write into it (a training
    folder: weights, model card, checkpoint ...).

    Parameters
    ----------
    folder
        The output folder (:func:`plan_folder`: never a store, an input or inside one).
    files
        Relative file name -> kind (:data:`FILE_KINDS`).
    fingerprint
        What the files are made from: a file tomoflow made with the same one belongs to this very run
        (a resumed training) and may be rewritten by it.
    renew
        Names of files the run rewrites as it goes (checkpoints): tomoflow's own files of the right kind
        are accepted whatever their fingerprint (the run checks their content itself).

    Returns
    -------
    dict
        Name -> :class:`FilePlan`.
    """
    base = plan_folder(folder, inputs=inputs, option=option)
    return {
        name: plan_file(
            base / name,
            kind=kind,
            fingerprint=fingerprint,
            inputs=inputs,
            overwrite=overwrite or name in renew,
            option=option,
        )
        for name, kind in files.items()
    }
