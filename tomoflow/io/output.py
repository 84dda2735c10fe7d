"""Output safety and identity of tomoflow stores: what a stage may do with its output path.

Part of the stage engine (:mod:`tomoflow.pipeline.engine` re-exports everything here); it lives in the
storage layer so that ingest, which writes scan stores from raw files, obeys the same rules:

* a stage's output is fingerprinted by the *identity* of its inputs and its parameters
  (:func:`identity_of`, :func:`fingerprint`), never by path strings;
* :func:`prepare_output` decides — writing nothing — whether to create, resume, return at once or
  replace, and refuses everything that could lose a user's data;
* :func:`create_store` creates the root group with its attributes in one atomic write, deleting a
  previous store only when it is a tomoflow store of the expected kind.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tomoflow.errors import StoreError, TomoflowError
from tomoflow.io.stages import StageLog, read_zarr_json, store_identity, store_kind

__all__ = ["OutputPlan", "fingerprint", "identity_of", "prepare_output", "create_store", "resolved_path"]


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


def _describe_params_change(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    keys = sorted(set(old) | set(new))
    diffs = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys if _canonical(old.get(k)) != _canonical(new.get(k))]
    return "; ".join(diffs[:4]) if diffs else "its inputs differ (another scan or an input that changed)"


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
    real = resolved_path(out)
    for inp in inputs:
        r = resolved_path(inp)
        if real == r:
            raise StoreError(f"{out}: is an input of this {stage} run; choose another output path")
        if _inside(r, real):
            raise StoreError(f"{out}: contains the input {inp}; choose an output path outside it")
        if _inside(real, r):
            raise StoreError(f"{out}: lies inside the input {inp}; choose an output path outside it")
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
        raise StoreError(f"{out}: is a folder that is not a tomoflow store; refusing to write into it or "
                         f"delete it{' (even with --overwrite)' if overwrite else ''}; choose a new path")
    if found != kind:
        raise StoreError(f"{out}: is a tomoflow {_KIND_NAMES.get(found, found)}, not a {what}; "
                         "refusing to replace it; choose another output path")
    if overwrite:
        return OutputPlan("replace", out)
    log_ = StageLog(out, stage)
    if not log_.exists:
        root = (read_zarr_json(out) or {}).get("attributes") or {}
        if "stages" in root:
            raise StoreError(f"{out}: a {what} made by an older tomoflow (format without stage records); "
                             "pass --overwrite to replace it, or choose another output path")
        # Our own store, interrupted while it was being created: nothing was computed into it yet.
        return OutputPlan("replace", out)
    rec = log_.record
    if rec.fingerprint != fingerprint:
        why = _describe_params_change(rec.params, params or {})
        raise StoreError(f"{out}: was made from other inputs or parameters ({why}); pass --overwrite to "
                         "replace it, or choose another output path")
    return OutputPlan("complete" if rec.complete else "resume", out)


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
    except Exception as exc:  # noqa: BLE001 - zarr wraps OS errors (e.g. ContainsGroupError)
        if isinstance(exc, TomoflowError):
            raise
        raise StoreError(f"{path}: cannot create the store ({type(exc).__name__}: {exc})") from None
