"""Simulated training pairs of the ResNet jitter aligner (pure: no files; the trainer is
:func:`tomoflow.train.aligner.train_aligner`).

Data recipe (:class:`TrainingRecipe`; every scan's random choices come from its own stream spawned
from ``seed``, so scan ``k`` is the same whatever ``n_scans`` is):

- **Phantoms**: faceted gold particles (:func:`tomoflow.sim.gold_particle`), cathode-like particles
  with cracks and pores (:func:`tomoflow.sim.cathode_particle`) and random aggregates of elongated
  ellipsoids (:func:`tomoflow.sim.aggregate_particles`). Gold and cathode volumes are stretched along
  a random 3-D direction and moved off the rotation axis (one affine resampling), so projections
  change shape and position with the angle. Some scans add a weak pillar wider than the field of view
  and some objects leave it: truncated projections. An optional fourth family, ``filling`` (not in
  the default recipe), is a dense cathode or packed aggregate as wide and as tall as the field
  (radius 0.75-0.9 half-field, stretched up to 1.3x): at every angle the jitter pushes part of it out
  of the detector. A fine-tune of the shipped network on a recipe with it (a quarter of 260 scans,
  2026-11-23) traded Shepp-Logan 0.46 -> 0.39 px for capsules 0.37 -> 0.47 px, so it was not shipped.
- **Detector**: ``size x size`` (default 160, the network input) for most scans; some have fewer
  rows or more columns (resampled to the network input like at inference, which teaches the
  anisotropic resampling and the smoothing of downsampled detectors).
- **Scan**: 181 angles over 180 degrees (0 and 180 included, the paper's set), rotation axis off the
  detector centre by up to ``center_offset`` px, jitter ``(dy, dx)`` uniform in ``+-jitter`` px *in
  network pixels* (160-px input), i.e. ``+-jitter * rows / 160`` and ``+-jitter * cols / 160``
  detector px. The default ``jitter = 13.75`` network px is +-22 px on a 256-px detector: the
  paper's +-20 px with a 10 % margin so that the edges of the range are learnt too. 40 % of the
  scans draw a small half-range instead (log-uniform in ``small_jitter`` network px): what the
  second pass of the resnet method reads, the residual of the first.
- **Noise**: raw counts with photon (Poisson) noise, Gaussian read noise and salt-and-pepper up to
  60 % (:func:`tomoflow.sim.simulate_scan`), normalised with :func:`tomoflow.recon.normalize_log`,
  then a non-zero background after ``-log`` (offset, drift over the scan, a gentle column ramp).
- **Pairs exactly as at inference**, by the same functions: impulse noise removed
  (:func:`tomoflow.align.consistency.clean_copy`), centre estimated and the stack resampled to the
  network input (:func:`tomoflow.align.hybrid.start_network`), MLEM and reprojection in that network
  space (:func:`tomoflow.align.hybrid.network_pairs`).
- **Centre failures**: a scan whose estimated centre misses the jittered data's effective axis by
  more than ``max_center_error`` network px (the estimator failed: the pairs would carry labels
  the images cannot show) is drawn again from the next random stream of the same index.
- **Targets**: the jitter in the gauge the pairs can show (:func:`tomoflow.align.gauge.fix_gauge`
  with the angles): no mean ``dy``, no object-translation sinusoid in ``dx`` (the reconstruction
  absorbs it), and the constant of ``dx`` = the data's effective axis minus the centre the
  reference was made about; in network pixels.

Training (:func:`tomoflow.train.aligner.train_aligner`): Adam (default lr 1e-4, cosine decay to ``lr * lr_final`` over
``epochs`` or the time limit), MSE of the offsets in network pixels, random horizontal/vertical flips of whole pairs
(negating ``dx`` / ``dy``), validation split by scan, early stopping on the validation MSE, best
weights kept, a checkpoint every epoch (safetensors + JSON, never pickle) so a rerun resumes.
Simulated pairs are cached as one ``.npz`` per scan (read with ``allow_pickle=False``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import numpy as np

from tomoflow._checks import check_int, check_number
from tomoflow.align.resnet import INPUT_SIZE, normalize_pairs
from tomoflow.errors import ConfigError

__all__ = [
    "TrainingRecipe",
    "PairSet",
    "simulate_scan_pairs",
    "check_recipe",
    "normalize_pairs",
]

log = logging.getLogger(__name__)

FAMILIES = ("gold", "cathode", "aggregate", "filling")
"""Phantom families the recipe can draw (module docstring)."""

FILLING_STRETCH = (1.0, 1.3)
FILLING_OFF_AXIS = 0.1
"""Stretch range and largest off-axis distance (fraction of the half-field) of the ``filling`` family."""


# ----------------------------------------------------------------------------- recipe
@dataclass(frozen=True)
class TrainingRecipe:
    """The distribution of simulated training scans (recorded in the model card).

    Lengths in detector pixels of a ``size``-pixel detector unless said otherwise.
    """

    size: int = INPUT_SIZE
    n_angles: int = 181
    angle_range_deg: float = 180.0
    families: tuple[str, ...] = ("gold", "cathode", "aggregate")
    family_weights: tuple[float, ...] = (0.35, 0.3, 0.35)
    jitter: float = 13.75
    small_jitter_fraction: float = 0.4
    small_jitter: tuple[float, float] = (0.3, 4.0)
    center_offset: float = 8.0
    anisotropic_fraction: float = 0.3
    clean_fraction: float = 0.25
    max_salt_and_pepper: float = 0.6
    salt_and_pepper_fraction: float = 0.45
    photons: tuple[float, float] = (300.0, 1e5)
    gaussian: tuple[float, float] = (0.0, 0.03)
    background: tuple[float, float] = (-0.05, 0.3)
    pillar_fraction: float = 0.2
    stretch: tuple[float, float] = (1.0, 1.8)
    max_off_axis: float = 0.3
    mlem_iterations: int | None = None
    max_center_error: float = 4.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["jitter_note"] = (
            "jitter is the half-range in network pixels (160-px input); detector px = "
            "jitter * rows / 160 (dy), jitter * cols / 160 (dx); 13.75 = +-22 px at 256"
        )
        return d


def _recipe_from(d: dict[str, Any]) -> TrainingRecipe:
    keys = TrainingRecipe.__dataclass_fields__
    kw: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in keys}
    return TrainingRecipe(**kw)


# ----------------------------------------------------------------------------- one scan


def _stretch_and_move(
    vol: np.ndarray, rng: np.random.Generator, stretch: tuple[float, float], max_off_axis: float
) -> np.ndarray:
    """Stretch ``vol`` along a random 3-D direction by a factor in ``stretch`` and move it off the
    rotation axis by up to ``max_off_axis`` half-fields (one affine resampling, linear)."""
    from scipy import ndimage

    shape = vol.shape
    u = rng.normal(size=3)
    u /= np.linalg.norm(u)
    s = rng.uniform(*stretch)
    fwd = np.eye(3) + (s - 1.0) * np.outer(u, u)  # output = fwd @ input (about the centre)
    L = min(shape[1], shape[2]) / 2.0
    r = rng.uniform(0.0, max_off_axis) * L
    a = rng.uniform(0, 2 * np.pi)
    move = np.array([rng.uniform(-0.1, 0.1) * shape[0], r * np.sin(a), r * np.cos(a)])
    inv = np.linalg.inv(fwd)
    ctr = (np.array(shape) - 1) / 2.0
    return ndimage.affine_transform(
        vol, inv, offset=ctr - inv @ (ctr + move), order=1, mode="constant", cval=0.0, output=np.float32
    )


def _make_phantom(
    family: str, shape: tuple[int, int, int], rng: np.random.Generator, recipe: TrainingRecipe
) -> np.ndarray:
    from tomoflow.sim import aggregate_particles, cathode_particle, gold_particle

    seed = int(rng.integers(2**31))
    if family == "aggregate":
        vol = aggregate_particles(
            shape,
            seed=seed,
            n_particles=int(rng.integers(4, 24)),
            n_clusters=int(rng.integers(1, 4)),
            cluster_length=float(rng.uniform(0.2, 0.9)),
            offset=float(rng.uniform(0.1, 0.55)),
            attenuation=float(rng.uniform(1.5, 4.0)),
        )
    elif family == "gold":
        vol = gold_particle(
            shape,
            seed=seed,
            radius=float(rng.uniform(0.15, 0.4)),
            n_satellites=int(rng.integers(0, 6)),
            attenuation=float(rng.uniform(1.5, 4.0)),
        )
        vol = _stretch_and_move(vol, rng, recipe.stretch, recipe.max_off_axis)
    elif family == "cathode":
        vol = cast(  # without return_labels: the volume alone
            np.ndarray,
            cathode_particle(
                shape,
                seed=seed,
                radius=float(rng.uniform(0.3, 0.6)),
                porosity=float(rng.uniform(0.0, 0.15)),
                n_cracks=int(rng.integers(0, 6)),
                n_grains=int(rng.integers(20, 80)),
                attenuation=float(rng.uniform(1.2, 3.0)),
            ),
        )
        vol = _stretch_and_move(vol, rng, recipe.stretch, recipe.max_off_axis)
    elif family == "filling":  # a dense sample as wide and tall as the field: the jitter pushes it out
        if rng.random() < 0.6:
            vol = cast(  # without return_labels: the volume alone
                np.ndarray,
                cathode_particle(
                    shape,
                    seed=seed,
                    radius=float(rng.uniform(0.75, 0.9)),
                    porosity=float(rng.uniform(0.0, 0.15)),
                    n_cracks=int(rng.integers(0, 6)),
                    n_grains=int(rng.integers(40, 120)),
                    attenuation=float(rng.uniform(1.0, 3.0)),
                ),
            )
        else:
            vol = aggregate_particles(  # a packed bed of many clusters
                shape,
                seed=seed,
                n_particles=int(rng.integers(60, 120)),
                n_clusters=int(rng.integers(6, 12)),
                radius=(0.15, 0.35),
                elongation=(1.0, 2.0),
                cluster_length=float(rng.uniform(0.8, 1.4)),
                offset=float(rng.uniform(0.4, 0.7)),
                attenuation=float(rng.uniform(1.0, 3.0)),
            )
        vol = _stretch_and_move(vol, rng, FILLING_STRETCH, FILLING_OFF_AXIS)
    else:  # pragma: no cover - recipe validated
        raise ConfigError(f"unknown phantom family {family!r}")
    if rng.random() < recipe.pillar_fraction:  # a weak support wider than the field of view
        L = min(shape[1], shape[2]) / 2.0
        yy = np.arange(shape[1]) - (shape[1] - 1) / 2.0
        xx = np.arange(shape[2]) - (shape[2] - 1) / 2.0
        rad = rng.uniform(0.9, 1.4) * L
        pillar = (yy[:, None] ** 2 + xx[None, :] ** 2 <= rad * rad).astype(np.float32)
        vol = vol + np.float32(rng.uniform(0.05, 0.25) / L) * pillar[None]
    return vol.astype(np.float32, copy=False)


def simulate_scan_pairs(index: int, *, recipe: TrainingRecipe | None = None, seed: int = 0) -> dict[str, Any]:
    """Simulate training scan ``index`` and make its (projection, reprojection) pairs.

    Returns
    -------
    dict
        ``x``: ``(n_angles, 2, 160, 160)`` float16 un-normalised network input (resampled pairs);
        ``y``: ``(n_angles, 2)`` float32 targets ``(dy, dx)`` in network pixels; ``meta``: the
        scan's choices (family, detector, centre offset and error, noise, jitter half-range).
    """
    recipe = recipe or TrainingRecipe()
    # the family is drawn once per index, so redrawing failed scans does not bias the family mix
    weights = np.asarray(recipe.family_weights, dtype=float)
    family = str(np.random.default_rng([int(seed), int(index)]).choice(recipe.families, p=weights / weights.sum()))
    for attempt in range(8):
        item = _simulate_once(index, attempt, family, recipe, seed)
        if abs(item["meta"]["center_error_net_px"]) <= recipe.max_center_error:
            return item
        log.info(
            "training scan %d: centre estimate off by %.1f px, drawn again", index, item["meta"]["center_error_px"]
        )
    return item


def _simulate_once(index: int, attempt: int, family: str, recipe: TrainingRecipe, seed: int) -> dict[str, Any]:
    from tomoflow.align.reproject import DEFAULT_MLEM_ITERATIONS
    from tomoflow.recon import normalize_log
    from tomoflow.sim import simulate_scan

    rng = np.random.default_rng([int(seed), int(index), int(attempt), 1])
    size = recipe.size
    rows = cols = size
    if rng.random() < recipe.anisotropic_fraction:
        if rng.random() < 0.5:
            rows = int(round(size * rng.uniform(0.55, 0.9)))
        else:
            cols = int(round(size * rng.uniform(1.1, 1.3)))
            rows = int(round(size * rng.uniform(0.75, 1.0)))
    shape = (rows, cols, cols)
    vol = _make_phantom(family, shape, rng, recipe)
    angles = np.linspace(0.0, recipe.angle_range_deg, recipe.n_angles)
    if rng.random() >= recipe.small_jitter_fraction:
        half = recipe.jitter
    else:  # what the second pass reads: the residual of the first (log-uniform half-range)
        half = float(np.exp(rng.uniform(*np.log(recipe.small_jitter))))
    sc = np.array([rows, cols], float) / INPUT_SIZE
    shifts = rng.uniform(-1.0, 1.0, size=(recipe.n_angles, 2)) * half * sc[None, :]
    center_true = (cols - 1) / 2.0 + rng.uniform(-1.0, 1.0) * recipe.center_offset * cols / size
    noise: dict[str, float] = {}
    photons = None
    if rng.random() >= recipe.clean_fraction:
        if rng.random() < 0.6:
            photons = float(np.exp(rng.uniform(*np.log(recipe.photons))))
        if rng.random() < 0.5:
            noise["gaussian"] = float(rng.uniform(*recipe.gaussian))
        if rng.random() < recipe.salt_and_pepper_fraction:
            noise["salt_and_pepper"] = float(rng.uniform(0.0, recipe.max_salt_and_pepper))
    scan = simulate_scan(
        vol,
        angles,
        shifts=shifts,
        noise=noise,
        photons=photons,
        center=center_true,
        seed=int(rng.integers(2**31)),
        flat_variation=float(rng.uniform(0.0, 0.15)),
    )
    p = normalize_log(scan.projections, scan.flats, scan.darks)
    b0 = rng.uniform(*recipe.background)
    drift = rng.uniform(-0.03, 0.03) * np.linspace(0.0, 1.0, recipe.n_angles)
    ramp = rng.uniform(-0.03, 0.03) * np.linspace(-1.0, 1.0, cols)
    p = (p + (b0 + drift)[:, None, None] + ramp[None, None, :]).astype(np.float32)
    # the pairs exactly as at inference: outliers removed, centre estimated, network space, MLEM, reprojection
    from tomoflow.align.consistency import clean_copy
    from tomoflow.align.gauge import fix_gauge
    from tomoflow.align.hybrid import network_pairs, start_network

    state = start_network(clean_copy(p), angles, "auto")
    n_iter = recipe.mlem_iterations or DEFAULT_MLEM_ITERATIONS
    data, rep = network_pairs(state, angles, recon_iterations=n_iter)
    x = np.stack([data, rep], axis=1).astype(np.float16)
    center_est = state.center
    # targets in the gauge the pairs can show: no mean dy, no object-translation sinusoid in dx, and
    # the constant dx = where the data's axis sits relative to the centre the reference was made about
    g = fix_gauge(scan.shifts, angles_deg=angles)
    target = np.asarray(g.shifts, dtype=np.float64).copy()
    target[:, 1] += center_true + g.common_dx - center_est
    y = (target / sc[None, :]).astype(np.float32)
    c_err = center_est - center_true - g.common_dx
    meta = {
        "index": int(index),
        "family": family,
        "detector": [rows, cols],
        "center_offset_px": center_true - (cols - 1) / 2.0,
        "center_error_px": c_err,
        "center_error_net_px": c_err * INPUT_SIZE / cols,
        "attempt": int(attempt),
        "jitter_half_range_net_px": float(half),
        "photons": photons,
        "noise": noise,
        "background": float(b0),
    }
    return {"x": x, "y": y, "meta": meta}


@dataclass
class PairSet:
    """Simulated pairs of several scans held in memory."""

    x: np.ndarray  # (n, 2, 160, 160) float16, un-normalised
    y: np.ndarray  # (n, 2) float32 network px
    scan: np.ndarray  # (n,) int scan index
    meta: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.y.shape[0])


def check_recipe(recipe: TrainingRecipe) -> None:
    """Refuse a recipe with bad sizes, ranges or phantom families (:class:`~tomoflow.errors.ConfigError`)."""
    check_int("size", recipe.size, low=32)
    check_int("n_angles", recipe.n_angles, low=2)
    check_number("jitter", recipe.jitter, low=0.0, low_open=True)
    check_number("max_salt_and_pepper", recipe.max_salt_and_pepper, low=0.0, high=0.6)
    if len(recipe.families) != len(recipe.family_weights) or not recipe.families:
        raise ConfigError("families and family_weights must have the same, non-zero length")
    bad = set(recipe.families) - set(FAMILIES)
    if bad:
        raise ConfigError(f"unknown phantom families {sorted(bad)}; choose among {', '.join(FAMILIES)}")
