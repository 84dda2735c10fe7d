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
with a JSON summary and a size histogram; :func:`plot_pore_sizes` overlays the histograms of several
volumes.

Volumes larger than memory are measured block by block, exactly: :func:`block_pores` labels one
block and keeps the voxel count of every label and the labels on its six faces;
:func:`merge_block_pores` joins labels of voxels that touch across block borders (faces, and for 18-
and 26-connectivity also edges and corners where 3 to 8 blocks meet) with a connected-components
pass over the block-boundary voxels, then applies the minimum size to the merged pores. The result
equals :func:`pore_metrics` of the whole volume for any partition of it into boxes.

Volumes are ``(z, y, x)``; voxel sizes ``spacing_um = (dz, dy, dx)`` in micrometres.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tomoflow._checks import check_choice, check_int, check_number
from tomoflow.errors import ConfigError, InputError

__all__ = [
    "PoreMetrics",
    "BlockPores",
    "pore_metrics",
    "threshold_from_reference",
    "PoreRecall",
    "pore_recall",
    "block_pores",
    "merge_block_pores",
    "plot_pore_sizes",
    "CONNECTIVITIES",
    "THRESHOLD_METHODS",
]

#: Voxel connectivities understood, and the rank of the matching ``scipy.ndimage`` structure.
CONNECTIVITIES = {6: 1, 18: 2, 26: 3}

#: Threshold methods of :func:`threshold_from_reference` (``skimage.filters.threshold_<method>``).
THRESHOLD_METHODS = ("otsu", "li", "isodata")

#: Order of the faces kept by :class:`BlockPores`.
FACES = ("z-", "z+", "y-", "y+", "x-", "x+")


# ----------------------------------------------------------------------------- results
@dataclass
class PoreMetrics:
    """Pore metrics of one volume under one protocol (:func:`pore_metrics`, :func:`merge_block_pores`).

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

    def histogram(self, bins: int | Sequence[float] | np.ndarray = 20, *, log: bool = True
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


@dataclass
class BlockPores:
    """Pores of one block, labelled alone (:func:`block_pores`), ready for :func:`merge_block_pores`.

    Attributes
    ----------
    shape
        ``(z, y, x)`` shape of the block (voxels).
    voxel_counts
        ``(n_labels,)`` int64 voxels of labels ``1..n_labels`` (no minimum size applied yet).
    faces
        Six int32 label images of the block's faces, in the order ``z-, z+, y-, y+, x-, x+``
        (``block[0]``, ``block[-1]``, ``block[:, 0]``, ``block[:, -1]``, ``block[:, :, 0]``,
        ``block[:, :, -1]``); 0 is not pore.
    analysed_voxels
        Voxels of the block inside the mask.
    threshold, connectivity
        The protocol the block was labelled with.
    """

    shape: tuple[int, int, int]
    voxel_counts: np.ndarray
    faces: tuple[np.ndarray, ...] = field(repr=False)
    analysed_voxels: int
    threshold: float
    connectivity: int

    @property
    def n_labels(self) -> int:
        """Number of labels (pore components of the block alone)."""
        return int(self.voxel_counts.size)


# ----------------------------------------------------------------------------- checks
def _check_connectivity(connectivity: Any) -> int:
    if isinstance(connectivity, bool) or connectivity not in CONNECTIVITIES:
        raise ConfigError(f"connectivity must be 6, 18 or 26 (voxel neighbours), got {connectivity!r}")
    return int(connectivity)


def _check_spacing(spacing_um: Any) -> tuple[float, float, float]:
    s = (spacing_um,) * 3 if np.ndim(spacing_um) == 0 else tuple(np.asarray(spacing_um, dtype=object).ravel())
    if len(s) != 3:
        raise ConfigError(f"spacing_um must be (dz, dy, dx) in um, got {spacing_um!r}")
    return tuple(check_number(f"voxel size {a} (um)", v, low=0.0, low_open=True)  # type: ignore[return-value]
                 for a, v in zip("zyx", s))


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
            raise InputError(f"the volume contains NaN or Inf ({bad} voxels); mask or fill them first",
                             dataset=name)
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
def _label(volume: np.ndarray, threshold: float, connectivity: int,
           mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, int]:
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


def _metrics(counts: np.ndarray, analysed_voxels: int, *, threshold: float, connectivity: int,
             min_voxels: int, spacing_um: tuple[float, float, float], name: str) -> PoreMetrics:
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
    volume: Any,
    *,
    threshold: float,
    spacing_um: float | Sequence[float] = (1.0, 1.0, 1.0),
    connectivity: int = 26,
    min_voxels: int = 8,
    mask: Any = None,
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
    return _metrics(counts, analysed, threshold=threshold, connectivity=connectivity, min_voxels=min_voxels,
                    spacing_um=spacing, name=name)


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
        return {"edges_um3": edges, "reference": self.reference.tolist(), "found_fraction": self.found_fraction,
                "found": {k: v.tolist() for k, v in self.found.items()},
                "recall": {k: [None if not np.isfinite(r) else float(r) for r in self.recall(k)] for k in self.found}}


def pore_recall(
    reference: Any,
    volumes: Mapping[str, Any],
    *,
    threshold: float,
    edges_um3: Sequence[float] | None = None,
    spacing_um: float | Sequence[float] = (1.0, 1.0, 1.0),
    connectivity: int = 26,
    min_voxels: int = 8,
    found_fraction: float = 0.25,
) -> PoreRecall:
    """Recall by pore size: for each of the reference's pores (binned by volume), whether each volume
    has it too, under the same protocol as :func:`pore_metrics`.

    Where :func:`pore_metrics` says how many pores a recovered volume has, this says *which* of the
    HR's pores it has: a pore of the reference is found in a volume when at least ``found_fraction``
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
        The protocol's pore threshold (:func:`threshold_from_reference`).
    edges_um3
        Increasing bin edges of pore volume (µm³), ``inf`` allowed last; default: doubling from the
        minimum pore volume up to the largest reference pore (last bin open).
    spacing_um, connectivity, min_voxels
        As for :func:`pore_metrics` (applied to the reference's pores).
    found_fraction
        In ``(0, 1]``.

    Returns
    -------
    PoreRecall

    Raises
    ------
    InputError
        A volume of another shape than the reference, or bad volumes (see :func:`pore_metrics`).
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
            raise InputError(f"shape {v.shape} differs from the reference's {ref.shape}; put both on one grid "
                             "first (tomoflow.register.resample.resample_to_grid)", dataset=k)
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


def threshold_from_reference(hr: Any, *, method: str = "otsu", mask: Any = None, name: str = "HR") -> float:
    """The protocol's pore threshold, derived once from the high-resolution reference volume.

    The returned grey value must then be passed unchanged to :func:`pore_metrics` (or
    :func:`block_pores`) for the LFOV, HR *and* recovered volumes, so that differences in the metrics
    come from the volumes and not from the segmentation.

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
        raise InputError(f"all values are equal ({values.min()}): no threshold separates pore from solid",
                         dataset=name)
    from skimage import filters

    return float(getattr(filters, f"threshold_{method}")(np.asarray(values, dtype=np.float64).ravel()))


# ----------------------------------------------------------------------------- blockwise
def block_pores(block: Any, *, threshold: float, connectivity: int = 26, mask: Any = None,
                name: str = "block") -> BlockPores:
    """Label the pore voxels of one block alone, keeping what :func:`merge_block_pores` needs.

    Parameters
    ----------
    block
        ``(z, y, x)`` grey values of one block of the volume (finite).
    threshold, connectivity
        As in :func:`pore_metrics`; the same for every block.
    mask
        ``(z, y, x)`` boolean analysed region of this block, or None for all of it.
    name
        What the block is, named in errors.

    Returns
    -------
    BlockPores
        Voxel counts of the block's components and the labels on its six faces. No minimum size is
        applied: a pore split between blocks may be small in each.
    """
    threshold = _check_threshold(threshold)
    connectivity = _check_connectivity(connectivity)
    v = _check_volume(block, name)
    m = _check_mask(mask, v.shape, name)
    labels, counts, analysed = _label(v, threshold, connectivity, m)
    faces = tuple(np.ascontiguousarray(f, dtype=np.int32) for f in (
        labels[0], labels[-1], labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1]))
    return BlockPores(shape=tuple(int(s) for s in v.shape), voxel_counts=counts, faces=faces,  # type: ignore[arg-type]
                      analysed_voxels=analysed, threshold=threshold, connectivity=connectivity)


def _block_list(blocks: Mapping[Any, BlockPores] | Iterable[tuple[Any, BlockPores]]
                ) -> list[tuple[tuple[int, int, int], BlockPores]]:
    items = list(blocks.items()) if isinstance(blocks, Mapping) else list(blocks)
    if not items:
        raise InputError("no blocks to merge", dataset="blocks")
    out = []
    for item in items:
        try:
            origin, bp = item
        except (TypeError, ValueError):
            raise InputError(f"blocks must be {{origin: BlockPores}} or (origin, BlockPores) pairs, got {item!r}",
                             dataset="blocks") from None
        if not isinstance(bp, BlockPores):
            raise InputError(f"block at {origin!r} is a {type(bp).__name__}, not BlockPores", dataset="blocks")
        o = tuple(np.asarray(origin).ravel().tolist()) if np.ndim(origin) else ()
        if len(o) != 3 or not all(isinstance(c, int) and c >= 0 for c in o):
            raise InputError(f"block origin must be 3 voxel indices >= 0 (z, y, x), got {origin!r}", dataset="blocks")
        out.append((o, bp))
    first = out[0][1]
    for o, bp in out:
        if bp.threshold != first.threshold or bp.connectivity != first.connectivity:
            raise InputError(
                f"block at {o} was labelled with threshold {bp.threshold:g} and connectivity {bp.connectivity}, "
                f"others with {first.threshold:g} and {first.connectivity}: one protocol for all blocks",
                dataset="blocks")
    return out


def _face_voxels(origin: tuple[int, int, int], bp: BlockPores) -> tuple[np.ndarray, np.ndarray]:
    """Global ``(n, 3)`` coordinates and block labels of the pore voxels on a block's faces."""
    nz, ny, nx = bp.shape
    fixed = (0, nz - 1, 0, ny - 1, 0, nx - 1)
    coords, labels = [], []
    for k, face in enumerate(bp.faces):
        axis = k // 2
        idx = np.nonzero(face)
        c = np.empty((idx[0].size, 3), dtype=np.int64)
        free = [a for a in range(3) if a != axis]
        c[:, axis] = fixed[k]
        c[:, free[0]] = idx[0]
        c[:, free[1]] = idx[1]
        coords.append(c + np.asarray(origin, dtype=np.int64))
        labels.append(face[idx].astype(np.int64))
    return np.concatenate(coords), np.concatenate(labels)


def _half_offsets(connectivity: int) -> np.ndarray:
    """Neighbour offsets of one half of the connectivity's neighbourhood (each pair found once)."""
    rank = CONNECTIVITIES[connectivity]
    offs = [tuple(c - 1 for c in d) for d in np.ndindex(3, 3, 3)]
    return np.array([d for d in offs if d > (0, 0, 0) and sum(map(abs, d)) <= rank], dtype=np.int64)


def _border_edges(items: list[tuple[tuple[int, int, int], BlockPores]], offsets: np.ndarray,
                  first_id: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of global label ids of pore voxels that touch across block borders."""
    coords, gids, owner = [], [], []
    for b, (origin, bp) in enumerate(items):
        c, lab = _face_voxels(origin, bp)
        coords.append(c)
        gids.append(first_id[b] + lab - 1)
        owner.append(np.full(lab.size, b, dtype=np.int64))
    c, gid, own = np.concatenate(coords), np.concatenate(gids), np.concatenate(owner)
    if c.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    extent = c.max(axis=0) + 2  # room for the +1 neighbour of the last voxel
    keys = np.ravel_multi_index(tuple((c + 1).T), tuple(extent + 1))
    order = np.argsort(keys, kind="stable")
    keys, gid, own, c = keys[order], gid[order], own[order], c[order]
    dup = np.nonzero(keys[1:] == keys[:-1])[0]
    if np.any(own[dup] != own[dup + 1]):
        z, y, x = c[dup[own[dup] != own[dup + 1]][0]]
        raise InputError(f"blocks overlap (voxel {(int(z), int(y), int(x))} is in two blocks)", dataset="blocks")
    keep = np.ones(keys.size, dtype=bool)
    keep[dup + 1] = False  # the same face voxel twice: a block one voxel thick
    keys, gid, own, c = keys[keep], gid[keep], own[keep], c[keep]
    a, b = [], []
    for d in offsets:
        nb = np.ravel_multi_index(tuple((c + 1 + d).T), tuple(extent + 1))
        pos = np.minimum(np.searchsorted(keys, nb), keys.size - 1)
        hit = (keys[pos] == nb) & (own[pos] != own)
        a.append(gid[hit])
        b.append(gid[pos[hit]])
    return np.concatenate(a), np.concatenate(b)


def merge_block_pores(
    blocks: Mapping[tuple[int, int, int], BlockPores] | Iterable[tuple[tuple[int, int, int], BlockPores]],
    *,
    spacing_um: float | Sequence[float] = (1.0, 1.0, 1.0),
    min_voxels: int = 8,
    name: str = "volume",
) -> PoreMetrics:
    """Pore metrics of a volume from its independently labelled blocks, exactly as for the whole volume.

    Pore voxels that touch across block borders (by a face, and with 18/26-connectivity also by an
    edge or corner, including voxels of blocks that meet only at an edge or a corner) join their
    labels; the joined components are the pores. The minimum size is applied after joining, so a pore
    split into small parts is still one pore. Blocks must not overlap (checked on their pore voxels)
    and together make the analysed volume; any partition into boxes works, not only a regular grid.

    Parameters
    ----------
    blocks
        ``{origin: BlockPores}`` or ``(origin, BlockPores)`` pairs; ``origin`` is the ``(z, y, x)``
        voxel index of the block's first voxel in the volume. All labelled with one threshold and
        connectivity (:func:`block_pores`).
    spacing_um, min_voxels, name
        As in :func:`pore_metrics`.

    Returns
    -------
    PoreMetrics
        Equal to :func:`pore_metrics` of the assembled volume and mask.

    Raises
    ------
    InputError
        No blocks, bad origins, blocks of different protocols, overlapping blocks, no analysed voxels.
    ConfigError
        Negative ``min_voxels`` or bad voxel sizes.
    """
    from scipy import sparse
    from scipy.sparse.csgraph import connected_components

    min_voxels = check_int("min_voxels (smallest pore, voxels)", min_voxels, low=0)
    spacing = _check_spacing(spacing_um)
    items = _block_list(blocks)
    sizes = np.array([bp.n_labels for _, bp in items], dtype=np.int64)
    first_id = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    counts = np.concatenate([bp.voxel_counts.astype(np.int64) for _, bp in items])
    analysed = sum(int(bp.analysed_voxels) for _, bp in items)
    connectivity = items[0][1].connectivity
    a, b = _border_edges(items, _half_offsets(connectivity), first_id)
    n = counts.size
    if a.size:
        graph = sparse.coo_matrix((np.ones(a.size, dtype=np.int8), (a, b)), shape=(n, n)).tocsr()
        n_comp, comp = connected_components(graph, directed=False)
        merged = np.zeros(n_comp, dtype=np.int64)
        np.add.at(merged, comp, counts)
    else:
        merged = counts
    return _metrics(merged, analysed, threshold=items[0][1].threshold, connectivity=connectivity,
                    min_voxels=min_voxels, spacing_um=spacing, name=name)


# ----------------------------------------------------------------------------- plot
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


def _plain(text: str) -> str:
    return str(text).replace("$", r"\$")


def plot_pore_sizes(metrics: Mapping[str, PoreMetrics], path: Any, *, bins: int = 30,
                    title: str | None = None, overwrite: bool = False) -> Path:
    """Overlay the equivalent-diameter histograms of several volumes in a PNG.

    Parameters
    ----------
    metrics
        ``{name: PoreMetrics}``, e.g. ``{"LFOV": ..., "HR": ..., "recovered": ...}``, all measured
        with the same threshold and connectivity.
    path
        PNG file to write (folders are created), or a :class:`tomoflow.io.output.FilePlan` of one. The
        file policy applies: a file tomoflow did not write is never replaced, one it wrote only with
        ``overwrite``.
    bins
        Number of log-spaced bins shared by all volumes.
    title
        Figure title; the protocol (threshold, connectivity, minimum size) is appended.

    Returns
    -------
    Path
        The PNG path.

    Raises
    ------
    ConfigError
        No metrics, or metrics of different thresholds or connectivities.
    """
    if not metrics:
        raise ConfigError("plot_pore_sizes needs at least one {name: PoreMetrics}")
    ms = list(metrics.values())
    protocols = {(m.threshold, m.connectivity) for m in ms}
    if len(protocols) != 1:
        raise ConfigError(f"pore metrics from different protocols (threshold, connectivity) {sorted(protocols)}: "
                          "apply one threshold and connectivity to every volume")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = _bin_edges(ms, bins, True)
    fig, ax = plt.subplots(figsize=(6.0, 4.0), constrained_layout=True)
    for key, m in metrics.items():
        counts, _ = m.histogram(edges)
        ax.stairs(counts, edges, linewidth=1.6,
                  label=_plain(f"{key}: porosity {100 * m.porosity:.2f} %, {m.count} pores"))
    ax.set_xscale("log")
    from matplotlib.ticker import LogFormatter

    # plain numbers at 1-2-5 steps, so that the few ticks of a short log range do not overlap as "3 x 10^0"
    ax.xaxis.set_major_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax.xaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax.set_xlabel("equivalent diameter (um)")
    ax.set_ylabel("pores per bin")
    ax.legend(fontsize=8)
    mins = sorted({m.min_voxels for m in ms})
    protocol = (f"threshold {ms[0].threshold:g}, {ms[0].connectivity}-connected, "
                f"min {'/'.join(map(str, mins))} voxels")
    ax.set_title(_plain(f"{title}\n{protocol}" if title else protocol), fontsize=9)
    from tomoflow.io.output import save_figure

    return save_figure(fig, path, overwrite=overwrite)

