"""Stage records and block markers inside a tomoflow store, and the identity of a store.

Every stage that writes into a store (``ingest`` into a scan store, ``recon`` into a volume store,
later ``align``, ``recover`` ...) owns one sub-group of the store::

    store.zarr/
      zarr.json                 root attributes: static metadata written once at creation
      stages/<stage>/zarr.json  the stage's :class:`~tomoflow.io.metadata.StageRecord` (fingerprint,
                                parameters, started/finished, timings, complete flag)
      stages/<stage>/<step>     uint8 (n_units,) block markers, ONE CHUNK PER UNIT

Why this layout
---------------
* **No clobbering.** A stage's record is written only by the one process driving that stage, and
  into its own file, so two stages (say ``ingest`` and a later ``align`` of the same scan store)
  never read-modify-write one shared JSON. zarr's local store writes every file atomically
  (temporary file + rename), so a record is never half-written.
* **Markers that concurrent tasks cannot lose.** A marker is one element in its own chunk: the one
  task that computed a unit writes it, after the unit's data, and no two tasks ever write one chunk.
  A crash between data and marker leaves the unit unmarked; a rerun recomputes it (rewriting whole
  chunks is idempotent).
* **Identity, not paths.** :func:`store_identity` says *what* a store holds: the ``output_id`` of its
  complete stages (a content hash for ingested data, the stage fingerprint for computed data), so a
  store reached by another path is the same input, and a different scan written to the same path is
  a different one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tomoflow.errors import StoreError
from tomoflow.io.metadata import StageRecord, utc_now

__all__ = ["StageLog", "stage_records", "store_identity", "store_kind", "read_zarr_json", "STAGES_GROUP"]

STAGES_GROUP = "stages"


def read_zarr_json(path: Path) -> dict[str, Any] | None:
    """The parsed ``zarr.json`` of a directory, or None (absent or not JSON)."""
    try:
        with open(path / "zarr.json", encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def store_kind(path: str | os.PathLike) -> str | None:
    """``"tomoflow-scan"``, ``"tomoflow-volume"`` ... for a tomoflow store, else None.

    Reads only the root ``zarr.json`` (no zarr import), so it is safe on any folder.
    """
    doc = read_zarr_json(Path(path))
    if doc is None or doc.get("node_type") != "group":
        return None
    kind = (doc.get("attributes") or {}).get("tomoflow_format")
    return kind if isinstance(kind, str) and kind.startswith("tomoflow-") else None


def stage_records(path: str | os.PathLike) -> dict[str, StageRecord]:
    """Every stage record of a store, by stage name (empty for a store without stages)."""
    root = Path(path) / STAGES_GROUP
    out: dict[str, StageRecord] = {}
    if not root.is_dir():
        return out
    for sub in sorted(root.iterdir()):
        doc = read_zarr_json(sub)
        if doc is None:
            continue
        try:
            out[sub.name] = StageRecord.model_validate(doc.get("attributes") or {})
        except Exception as exc:  # noqa: BLE001 - pydantic raises ValidationError
            raise StoreError(f"{path}: stage record {sub.name!r} is invalid ({exc})") from None
    return out


def store_identity(path: str | os.PathLike) -> str:
    """What a complete tomoflow store holds, as a hex digest independent of its path.

    The sha256 of the ``output_id`` of every complete stage (sorted by stage name).

    Raises
    ------
    StoreError
        If ``path`` is not a tomoflow store, or a stage of it is incomplete.
    """
    kind = store_kind(path)
    if kind is None:
        raise StoreError(f"{path}: not a tomoflow store")
    records = stage_records(path)
    if not records:
        raise StoreError(f"{path}: {kind} store has no completed stage")
    h = hashlib.sha256(kind.encode())
    for name, rec in sorted(records.items()):
        if not rec.complete or not rec.output_id:
            raise StoreError(f"{path}: stage {name!r} did not complete (interrupted?); run it again")
        h.update(f"\0{name}\0{rec.output_id}".encode())
    return h.hexdigest()


class StageLog:
    """Handle on one stage's record and block markers inside a store (see module docstring).

    Parameters
    ----------
    store
        Path of the store (its root directory).
    name
        Stage name (``"ingest"``, ``"recon"`` ...): hyphenated words.
    """

    def __init__(self, store: str | os.PathLike, name: str) -> None:
        self.store = Path(store)
        self.name = name

    # ------------------------------------------------------------------ zarr access
    def _group(self, mode: str = "r") -> Any:
        import zarr

        try:
            return zarr.open_group(str(self.store), mode=mode, path=f"{STAGES_GROUP}/{self.name}")
        except Exception as exc:  # noqa: BLE001 - zarr raises several types for a missing group
            raise StoreError(f"{self.store}: stage {self.name!r} has no record ({type(exc).__name__})") from None

    @property
    def exists(self) -> bool:
        return (self.store / STAGES_GROUP / self.name / "zarr.json").is_file()

    @classmethod
    def begin(
        cls,
        store: str | os.PathLike,
        name: str,
        *,
        fingerprint: str,
        params: Mapping[str, Any],
        steps: Mapping[str, int],
    ) -> StageLog:
        """Write a fresh, incomplete record of stage ``name`` and its empty marker arrays.

        Parameters
        ----------
        fingerprint
            Digest of the stage's inputs and parameters (see :func:`tomoflow.pipeline.engine.fingerprint`).
        params
            The parameters, as JSON-able data (recorded so a mismatch can be explained).
        steps
            Marker arrays to create: step name -> number of units.
        """
        import zarr

        log = cls(store, name)
        rec = StageRecord(complete=False, started=utc_now(), fingerprint=fingerprint, params=dict(params))
        try:
            grp = zarr.open_group(str(log.store), mode="a", path=f"{STAGES_GROUP}/{name}")
            for step, n in steps.items():
                grp.create_array(
                    step,
                    shape=(max(1, int(n)),),
                    chunks=(1,),
                    dtype="uint8",
                    fill_value=0,
                    dimension_names=["unit"],
                    overwrite=True,
                )
            grp.attrs.put(rec.model_dump(mode="json"))
        except OSError as exc:
            from tomoflow.errors import describe_os_error

            raise StoreError(f"{log.store}: cannot write ({describe_os_error(exc, log.store)})") from None
        return log

    # ------------------------------------------------------------------ record
    @property
    def record(self) -> StageRecord:
        doc = read_zarr_json(self.store / STAGES_GROUP / self.name)
        if doc is None:
            raise StoreError(f"{self.store}: stage {self.name!r} has no record")
        return StageRecord.model_validate(doc.get("attributes") or {})

    def finish(
        self, *, output_id: str, seconds: float, timings: Mapping[str, float] | None = None, **info: Any
    ) -> StageRecord:
        """Mark the stage complete (call only after every unit's data and marker is written)."""
        prev = self.record
        rec = prev.model_copy(
            update={
                "complete": True,
                "finished": utc_now(),
                "seconds": float(seconds),
                "output_id": output_id,
                "timings": {k: float(v) for k, v in (timings or {}).items()},
                "info": dict(info),
            }
        )
        self._group("r+").attrs.put(rec.model_dump(mode="json"))
        return rec

    # ------------------------------------------------------------------ markers
    def done(self, step: str) -> np.ndarray:
        """Boolean ``(n_units,)``: which units of ``step`` are written."""
        return np.asarray(self._group()[step][:]).astype(bool)

    def mark_done(self, step: str, units: Iterable[int]) -> None:
        """Set the markers of ``units`` (each its own chunk; call after their data is written)."""
        arr = self._group("r+")[step]
        for u in units:
            arr[int(u)] = 1
