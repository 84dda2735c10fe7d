"""Pore metrics of a porous sample: one protocol for the low-res, high-res and recovered volumes.

Resolution recovery (LFOV -> network -> recovered, checked against HR) is judged by what it does to
the pore space. The comparison is only fair when the *same* protocol is applied to every volume over
the *same* region:

1. **Threshold.** :func:`threshold_from_reference` derives one grey-value threshold from the HR
   volume (Otsu by default). That number is then passed unchanged to :func:`pore_metrics` for the
   LFOV, HR and recovered volumes; it is never re-derived per volume.
2. **Pores.** Voxels strictly below the threshold (low attenuation, compared in float64) and inside
   the analysed region (``mask``, default the whole volume) are pore voxels. Pores are their
   connected components under the stated ``connectivity`` (6 faces, 18 faces + edges, or 26 faces +
   edges + corners). Voxels outside the mask never connect pores.
3. **Minimum size.** Components of fewer than ``min_voxels`` voxels are noise, not pores: they are
   left out of the pore count *and* of the porosity.
4. **Boundary.** Pores cut by the edge of the volume or of the mask are counted, with the volume of
   their part inside the region (nothing is extrapolated). The region is the same for all volumes,
   so the truncation is the same too.

Metrics (:class:`PoreMetrics`): porosity (counted pore voxels / analysed voxels), count, pore
volumes (um^3, descending) and equivalent diameters (diameter of the sphere of the same volume, um),
with a JSON summary and a size histogram.

The same protocol, elsewhere:

- :mod:`tomoflow.recover.recall`: :func:`~tomoflow.recover.recall.pore_recall`, which of the
  reference's pores each volume finds, by pore size;
- :mod:`tomoflow.recover.pore_blocks`: volumes larger than memory, block by block, exactly
  (:func:`~tomoflow.recover.pore_blocks.block_pores`, :func:`~tomoflow.recover.pore_blocks.merge_block_pores`);
- :mod:`tomoflow.recover.pore_plot`: :func:`~tomoflow.recover.pore_plot.pore_size_figure` overlays the
  size histograms of several volumes (saved by :func:`tomoflow.pipeline.pores.plot_pore_sizes`).

Volumes are ``(z, y, x)``; voxel sizes ``spacing_um = (dz, dy, dx)`` in micrometres.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tomoflow._checks import check_choice, check_int, check_number
from tomoflow.errors import ConfigError, InputError

__all__ = [
    "PoreMetrics",
    "pore_metrics",
    "threshold_from_reference",
    "CONNECTIVITIES",
    "THRESHOLD_METHODS",
]

#: Voxel connectivities understood, and the rank of the matching ``scipy.ndimage`` structure.
CONNECTIVITIES = {6: 1, 18: 2, 26: 3}

#: Threshold methods of :func:`threshold_from_reference` (``skimage.filters.threshold_<method>``).
THRESHOLD_METHODS = ("otsu", "li", "isodata")


# ----------------------------------------------------------------------------- results
@dataclass
class PoreMetrics:
    """Pore metrics of one volume under one protocol (:func:`pore_metrics`,
    :func:`~tomoflow.recover.pore_blocks.merge_block_pores`).

    Attributes
    ----------
    porosity
        Fraction (0 to 1) of the analysed (masked) volume occupied by counted pores.
    count
        Number of pores (components of at least ``min_voxels`` voxels).
    voxel_counts
        ``(count,)`` int64 voxels per pore, descending.
    volumes_um3
        ``(count,)`` float64 pore volumes (um^3), descending.
    equivalent_diameters_um
        ``(count,)`` float64 diameters (um) of the spheres of the pores' volumes, descending.
    analysed_volume_um3
        Volume of the analysed region (um^3).
    analysed_voxels
        Voxels of the analysed region.
    threshold
        Grey value under which a voxel is pore.
    connectivity
        6, 18 or 26.
    min_voxels
        Smallest pore counted (voxels).
    spacing_um
        ``(dz, dy, dx)`` voxel size (um).
    """

    porosity: float
    count: int
    voxel_counts: np.ndarray
    volumes_um3: np.ndarray
    equivalent_diameters_um: np.ndarray
    analysed_volume_um3: float
    analysed_voxels: int
    threshold: float
    connectivity: int
    min_voxels: int
    spacing_um: tuple[float, float, float]

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (plain floats and ints; ``None`` for statistics of no pores).

        Keys: ``porosity_percent``, ``count``, ``total_pore_volume_um3``, ``mean_pore_volume_um3``,
        ``median_pore_volume_um3``, ``max_pore_volume_um3``, ``mean_equivalent_diameter_um``,
        ``median_equivalent_diameter_um``, ``analysed_volume_um3``, ``analysed_voxels``, ``threshold``,
        ``connectivity``, ``min_voxels``, ``spacing_um``.
        """
        v, d = self.volumes_um3, self.equivalent_diameters_um

        def stat(f: Any, a: np.ndarray) -> float | None:
            return float(f(a)) if a.size else None

        return {
            "porosity_percent": 100.0 * float(self.porosity),
            "count": int(self.count),
            "total_pore_volume_um3": float(v.sum()),
            "mean_pore_volume_um3": stat(np.mean, v),
            "median_pore_volume_um3": stat(np.median, v),
            "max_pore_volume_um3": stat(np.max, v),
            "mean_equivalent_diameter_um": stat(np.mean, d),
            "median_equivalent_diameter_um": stat(np.median, d),
            "analysed_volume_um3": float(self.analysed_volume_um3),
            "analysed_voxels": int(self.analysed_voxels),
            "threshold": float(self.threshold),
            "connectivity": int(self.connectivity),
            "min_voxels": int(self.min_voxels),
            "spacing_um": [float(s) for s in self.spacing_um],
        }

    def histogram(
        self, bins: int | Sequence[float] | np.ndarray = 20, *, log: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Number of pores per equivalent-diameter bin.

        Parameters
        ----------
        bins
            Number of bins spanning the smallest to the largest diameter (widened by 5 % each way
            when they are equal; one voxel's diameter to twice that when there are no pores), or
            the bin edges (um, increasing) themselves - pass the same edges to compare volumes.
        log
            Log-spaced bins (default) or linear ones; ignored when edges are given.

        Returns
        -------
        counts, edges
            ``(n,)`` int64 pore counts and ``(n + 1,)`` float64 edges (um).
        """
        edges = _bin_edges([self], bins, log)
        counts, _ = np.histogram(self.equivalent_diameters_um, bins=edges)
        return counts.astype(np.int64), edges


# ----------------------------------------------------------------------------- checks
def _check_connectivity(connectivity: Any) -> int:
    if isinstance(connectivity, bool) or connectivity not in CONNECTIVITIES:
        raise ConfigError(f"connectivity must be 6, 18 or 26 (voxel neighbours), got {connectivity!r}")
    return int(connectivity)


def _check_spacing(spacing_um: Any) -> tuple[float, float, float]:
    s = (spacing_um,) * 3 if np.ndim(spacing_um) == 0 else tuple(np.asarray(spacing_um, dtype=object).ravel())
    if len(s) != 3:
        raise ConfigError(f"spacing_um must be (dz, dy, dx) in um, got {spacing_um!r}")
    return tuple(
        check_number(f"voxel size {a} (um)", v, low=0.0, low_open=True)  # type: ignore[return-value]
        for a, v in zip("zyx", s)
    )


def _check_volume(volume: Any, name: str) -> np.ndarray:
    """``volume`` as a finite, non-empty, real ``(z, y, x)`` NumPy array (not copied)."""
    v = np.asarray(volume)
    if v.ndim != 3:
        raise InputError(f"expected a (z, y, x) volume, got shape {v.shape}", dataset=name)
    if v.size == 0:
        raise InputError(f"the volume is empty (shape {v.shape})", dataset=name)
    if v.dtype == bool or not (np.issubdtype(v.dtype, np.integer) or np.issubdtype(v.dtype, np.floating)):
        raise InputError(f"expected integer or float grey values, got dtype {v.dtype}", dataset=name)
    if np.issubdtype(v.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(v)))
        if bad:
            raise InputError(f"the volume contains NaN or Inf ({bad} voxels); mask or fill them first", dataset=name)
    return v


def _check_mask(mask: Any, shape: tuple[int, ...], name: str) -> np.ndarray | None:
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.shape != tuple(shape):
        raise InputError(f"mask shape {m.shape} differs from the volume shape {tuple(shape)}", dataset=f"{name} mask")
    if m.dtype != bool and not np.issubdtype(m.dtype, np.integer):
        raise InputError(f"mask must be boolean (or 0/1 integers), got dtype {m.dtype}", dataset=f"{name} mask")
    return m.astype(bool, copy=False)


def _check_threshold(threshold: Any) -> float:
    return check_number("pore threshold (grey value)", threshold)


# ----------------------------------------------------------------------------- whole volume
def _label(
    volume: np.ndarray, threshold: float, connectivity: int, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """``(labels, voxel_counts, analysed_voxels)``: components of pore voxels inside the mask."""
    from scipy import ndimage

    pore = volume < np.float64(threshold)
    if mask is not None:
        pore &= mask
    analysed = int(volume.size if mask is None else np.count_nonzero(mask))
    structure = ndimage.generate_binary_structure(3, CONNECTIVITIES[connectivity])
    labels, n = ndimage.label(pore, structure=structure)
    counts = np.bincount(labels.ravel(), minlength=n + 1)[1:].astype(np.int64)
    return labels, counts, analysed


def _metrics(
    counts: np.ndarray,
    analysed_voxels: int,
    *,
    threshold: float,
    connectivity: int,
    min_voxels: int,
    spacing_um: tuple[float, float, float],
    name: str,
) -> PoreMetrics:
    """Apply the minimum size to per-component voxel counts and convert to physical units."""
    if analysed_voxels <= 0:
        raise InputError("the mask selects no voxels: nothing to analyse", dataset=name)
    kept = np.sort(counts[counts >= max(min_voxels, 1)])[::-1].astype(np.int64)
    voxel = float(np.prod(spacing_um))
    volumes = kept.astype(np.float64) * voxel
    return PoreMetrics(
        porosity=float(int(kept.sum()) / analysed_voxels),
        count=int(kept.size),
        voxel_counts=kept,
        volumes_um3=volumes,
        equivalent_diameters_um=np.cbrt(6.0 * volumes / np.pi),
        analysed_volume_um3=analysed_voxels * voxel,
        analysed_voxels=int(analysed_voxels),
        threshold=float(threshold),
        connectivity=int(connectivity),
        min_voxels=int(min_voxels),
        spacing_um=spacing_um,
    )


def pore_metrics(
    volume: np.ndarray,
    *,
    threshold: float,
    spacing_um: float | Sequence[float] = (1.0, 1.0, 1.0),
    connectivity: int = 26,
    min_voxels: int = 8,
    mask: np.ndarray | None = None,
    name: str = "volume",
) -> PoreMetrics:
    """Porosity, pore count and pore sizes of a volume under a fixed protocol.

    Parameters
    ----------
    volume
        ``(z, y, x)`` grey values (integer or float, finite); pores are darker than solid.
    threshold
        Grey value; voxels strictly below it (compared in float64) are pore. Derive it once from
        the HR volume (:func:`threshold_from_reference`) and use it for every volume compared.
    spacing_um
        Voxel size ``(dz, dy, dx)`` in um, or one number for cubic voxels.
    connectivity
        Voxels touching by a face (6), a face or edge (18), or a face, edge or corner (26) belong to
        the same pore.
    min_voxels
        Components smaller than this (voxels) are not pores: excluded from the count and the
        porosity. 0 or 1 keeps every component.
    mask
        ``(z, y, x)`` boolean analysed region (e.g. the sample cylinder), or None for the whole
        volume. Pores cut by the region's edge are counted with their volume inside it.
    name
        What the volume is (``"LFOV"``, ``"HR"``, ``"recovered"``), named in errors.

    Returns
    -------
    PoreMetrics
        Porosity, count, pore volumes and equivalent diameters (descending), and the protocol.

    Raises
    ------
    InputError
        Not 3-D, empty, not real numbers, NaN/Inf, a mask of another shape, or a mask selecting
        nothing.
    ConfigError
        Threshold not a finite number, connectivity not 6/18/26, negative ``min_voxels``, voxel
        sizes not positive.

    Examples
    --------
    >>> import numpy as np
    >>> vol = np.ones((8, 8, 8))
    >>> vol[1:3, 1:3, 1:3] = 0.0           # one 8-voxel pore
    >>> m = pore_metrics(vol, threshold=0.5, spacing_um=2.0, min_voxels=1)
    >>> m.count, float(m.volumes_um3[0]), m.porosity
    (1, 64.0, 0.015625)
    """
    threshold = _check_threshold(threshold)
    connectivity = _check_connectivity(connectivity)
    min_voxels = check_int("min_voxels (smallest pore, voxels)", min_voxels, low=0)
    spacing = _check_spacing(spacing_um)
    v = _check_volume(volume, name)
    m = _check_mask(mask, v.shape, name)
    _, counts, analysed = _label(v, threshold, connectivity, m)
    return _metrics(
        counts,
        analysed,
        threshold=threshold,
        connectivity=connectivity,
        min_voxels=min_voxels,
        spacing_um=spacing,
        name=name,
    )


def threshold_from_reference(
    hr: np.ndarray, *, method: str = "otsu", mask: np.ndarray | None = None, name: str = "HR"
) -> float:
    """The protocol's pore threshold, derived once from the high-resolution reference volume.

    The returned grey value must then be passed unchanged to :func:`pore_metrics` (or
    :func:`~tomoflow.recover.pore_blocks.block_pores`) for the LFOV, HR *and* recovered volumes, so that
    differences in the metrics come from the volumes and not from the segmentation.

    Parameters
    ----------
    hr
        ``(z, y, x)`` HR grey values (finite). A subsample of a large volume is fine.
    method
        ``"otsu"`` (default), ``"li"`` or ``"isodata"`` (``skimage.filters.threshold_<method>``) on
        the values inside ``mask``.
    mask
        ``(z, y, x)`` boolean region whose values are used (the sample, not the air around it), or
        None for all voxels.
    name
        What the volume is, named in errors.

    Returns
    -------
    float
        The threshold (grey value; pores are strictly below it).

    Raises
    ------
    InputError
        Bad volume or mask (see :func:`pore_metrics`), a mask selecting nothing, or constant values.
    ConfigError
        Unknown method.
    """
    method = check_choice("threshold method", method, THRESHOLD_METHODS)
    v = _check_volume(hr, name)
    m = _check_mask(mask, v.shape, name)
    values = v if m is None else v[m]
    if values.size == 0:
        raise InputError("the mask selects no voxels: no values to threshold", dataset=name)
    if values.min() == values.max():
        raise InputError(f"all values are equal ({values.min()}): no threshold separates pore from solid", dataset=name)
    from skimage import filters

    return float(getattr(filters, f"threshold_{method}")(np.asarray(values, dtype=np.float64).ravel()))


# ----------------------------------------------------------------------------- histogram
def _bin_edges(metrics: Sequence[PoreMetrics], bins: Any, log: bool) -> np.ndarray:
    """Common equivalent-diameter bin edges (um) of several metrics."""
    if np.ndim(bins) == 1:
        edges = np.asarray(bins, dtype=np.float64)
        if edges.size < 2 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
            raise ConfigError(f"histogram bin edges must be >= 2 increasing finite numbers, got {bins!r}")
        return edges
    n = check_int("number of histogram bins", bins, low=1)
    d = np.concatenate([m.equivalent_diameters_um for m in metrics])
    if d.size:
        lo, hi = float(d.min()), float(d.max())
    else:
        lo = min(float(np.cbrt(6.0 * np.prod(m.spacing_um) / np.pi)) for m in metrics)
        hi = 2.0 * lo
    if hi <= lo:
        lo, hi = lo / 1.05, hi * 1.05
    return np.geomspace(lo, hi, n + 1) if log else np.linspace(lo, hi, n + 1)
