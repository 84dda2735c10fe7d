"""Recall by pore size: which of a reference's pores (the HR's) other volumes find.

Where :func:`tomoflow.recover.pores.pore_metrics` says how many pores a volume has, :func:`pore_recall`
says *which* of the reference's pores it has, under the same protocol (threshold, connectivity,
minimum size: :mod:`tomoflow.recover.pores`), binned by the reference pore's volume.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tomoflow._checks import check_int, check_number
from tomoflow.errors import ConfigError, InputError
from tomoflow.recover.pores import _check_connectivity, _check_spacing, _check_threshold, _check_volume, _label

__all__ = ["PoreRecall", "pore_recall"]


@dataclass
class PoreRecall:
    """Which of a reference's pores other volumes find, per pore-volume bin (:func:`pore_recall`).

    Attributes
    ----------
    edges_um3
        ``(n_bins + 1,)`` bin edges of the reference pores' volumes (µm³); the last may be ``inf``.
    reference
        ``(n_bins,)`` reference pores per bin (the protocol's pores: minimum size applied).
    found
        ``{name: (n_bins,)}`` how many of those pores each volume finds.
    found_fraction
        A pore is found when at least this fraction of its voxels is below the threshold there too.
    """

    edges_um3: np.ndarray
    reference: np.ndarray
    found: dict[str, np.ndarray]
    found_fraction: float

    def recall(self, name: str) -> np.ndarray:
        """``(n_bins,)`` fraction of the reference's pores that ``name`` finds (NaN for empty bins)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.found[name] / np.where(self.reference > 0, self.reference, np.nan)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: edges (``None`` for an open last edge), counts, recall per volume."""
        edges = [None if not np.isfinite(e) else float(e) for e in self.edges_um3]
        return {
            "edges_um3": edges,
            "reference": self.reference.tolist(),
            "found_fraction": self.found_fraction,
            "found": {k: v.tolist() for k, v in self.found.items()},
            "recall": {k: [None if not np.isfinite(r) else float(r) for r in self.recall(k)] for k in self.found},
        }


def pore_recall(
    reference: np.ndarray,
    volumes: Mapping[str, np.ndarray],
    *,
    threshold: float,
    edges_um3: Sequence[float] | None = None,
    spacing_um: float | Sequence[float] = (1.0, 1.0, 1.0),
    connectivity: int = 26,
    min_voxels: int = 8,
    found_fraction: float = 0.25,
) -> PoreRecall:
    """Recall by pore size: for each of the reference's pores (binned by volume), whether each volume
    has it too, under the same protocol as :func:`~tomoflow.recover.pores.pore_metrics`.

    Where :func:`~tomoflow.recover.pores.pore_metrics` says how many pores a recovered volume has, this
    says *which* of the HR's pores it has: a pore of the reference is found in a volume when at least ``found_fraction``
    of its voxels are below ``threshold`` there. Binned by the reference pore's volume, it shows the
    size below which a volume stops resolving pores (for a resolution-recovery network: about one
    LFOV voxel). In memory: the volumes must share the reference's grid and fit in RAM.

    Parameters
    ----------
    reference
        ``(z, y, x)`` reference grey values (the HR).
    volumes
        ``{name: (z, y, x) grey values}`` on the same grid (LFOV on the HR grid, recovered, ...).
    threshold
        The protocol's pore threshold (:func:`~tomoflow.recover.pores.threshold_from_reference`).
    edges_um3
        Increasing bin edges of pore volume (µm³), ``inf`` allowed last; default: doubling from the
        minimum pore volume up to the largest reference pore (last bin open).
    spacing_um, connectivity, min_voxels
        As for :func:`~tomoflow.recover.pores.pore_metrics` (applied to the reference's pores).
    found_fraction
        In ``(0, 1]``.

    Returns
    -------
    PoreRecall

    Raises
    ------
    InputError
        A volume of another shape than the reference, or bad volumes (see :func:`~tomoflow.recover.pores.pore_metrics`).
    ConfigError
        Bad protocol parameters, edges not increasing, ``found_fraction`` outside ``(0, 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> hr = np.ones((16, 16, 16))
    >>> hr[1:3, 1:3, 1:3] = 0.0                 # an 8-voxel pore
    >>> hr[8:12, 8:12, 8:12] = 0.0              # a 64-voxel pore
    >>> blurred = hr.copy(); blurred[1:3, 1:3, 1:3] = 1.0   # lost the small one
    >>> r = pore_recall(hr, {"blurred": blurred}, threshold=0.5, edges_um3=[8, 64, np.inf])
    >>> r.reference.tolist(), r.found["blurred"].tolist()
    ([1, 1], [0, 1])
    """
    threshold = _check_threshold(threshold)
    connectivity = _check_connectivity(connectivity)
    min_voxels = check_int("min_voxels (smallest pore, voxels)", min_voxels, low=0)
    spacing = _check_spacing(spacing_um)
    found_fraction = check_number("found_fraction", found_fraction, low=0.0, high=1.0, low_open=True)
    ref = _check_volume(reference, "reference")
    vols = {str(k): _check_volume(v, str(k)) for k, v in volumes.items()}
    for k, v in vols.items():
        if v.shape != ref.shape:
            raise InputError(
                f"shape {v.shape} differs from the reference's {ref.shape}; put both on one grid "
                "first (tomoflow.register.resample.resample_to_grid)",
                dataset=k,
            )
    labels, counts, _ = _label(ref, threshold, connectivity, None)
    keep = counts >= max(min_voxels, 1)
    voxel = float(np.prod(spacing))
    sizes_um3 = counts * voxel
    if edges_um3 is None:
        lo = max(min_voxels, 1) * voxel
        top = float(sizes_um3[keep].max()) if keep.any() else 2 * lo
        edges = lo * 2.0 ** np.arange(0, max(1, int(np.ceil(np.log2(top / lo)))) + 1)
        edges = np.append(edges[:-1], np.inf)
    else:
        edges = np.asarray(edges_um3, dtype=np.float64).ravel()
        if edges.size < 2 or np.any(np.isnan(edges)) or np.any(np.diff(edges) <= 0):
            raise ConfigError(f"edges_um3 must be at least two increasing pore volumes (um^3), got {edges_um3!r}")
    ref_hist = np.histogram(sizes_um3[keep], edges)[0]
    found = {}
    flat = labels.ravel()
    for k, v in vols.items():
        inside = np.bincount(flat, weights=(v < np.float64(threshold)).ravel(), minlength=counts.size + 1)[1:]
        ok = keep & (inside >= found_fraction * counts)
        found[k] = np.histogram(sizes_um3[ok], edges)[0]
    return PoreRecall(edges_um3=edges, reference=ref_hist, found=found, found_fraction=float(found_fraction))
