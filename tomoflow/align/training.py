"""Simulated training pairs and the training loop of the ResNet jitter aligner.

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

Training (:func:`train_aligner`): Adam (default lr 1e-4, cosine decay to ``lr * lr_final`` over
``epochs`` or the time limit), MSE of the offsets in network pixels, random horizontal/vertical flips of whole pairs
(negating ``dx`` / ``dy``), validation split by scan, early stopping on the validation MSE, best
weights kept, a checkpoint every epoch (safetensors + JSON, never pickle) so a rerun resumes.
Simulated pairs are cached as one ``.npz`` per scan (read with ``allow_pickle=False``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tomoflow._checks import check_int, check_number
from tomoflow.align.resnet import (
    ARCHITECTURE,
    CARD_NAME,
    CHECK_NAME,
    INPUT_SIZE,
    NORMALIZATION,
    WEIGHTS_NAME,
    build_network,
    normalize_pairs,
    save_weights,
)
from tomoflow.errors import ConfigError, InputError, ModelError
from tomoflow.nn import count_parameters, cosine_lr, load_optimizer, optimizer_tensors, resolve_device

__all__ = [
    "TrainingRecipe",
    "PairSet",
    "simulate_scan_pairs",
    "make_training_scans",
    "train_aligner",
    "ProgressCallback",
    "install_weights",
]

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, int, "float | None", "float | None"], None]
"""``progress(epoch, step, n_steps, train_loss, val_loss)``; epoch 0 is the simulation of the pairs
(``step`` = scans done of ``n_steps``), training epochs count from 1 (``val_loss`` given once per
epoch, at its end, with ``step == n_steps``)."""

CHECK_PAIRS = 24
"""Pairs in the held-out check set saved beside the weights."""

CACHE_VERSION = 3


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
        d["jitter_note"] = ("jitter is the half-range in network pixels (160-px input); detector px = "
                            "jitter * rows / 160 (dy), jitter * cols / 160 (dx); 13.75 = +-22 px at 256")
        return d


def _recipe_from(d: dict[str, Any]) -> TrainingRecipe:
    keys = TrainingRecipe.__dataclass_fields__
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in keys}
    return TrainingRecipe(**kw)


# ----------------------------------------------------------------------------- one scan


def _stretch_and_move(vol: np.ndarray, rng: np.random.Generator, stretch: tuple[float, float],
                      max_off_axis: float) -> np.ndarray:
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
    return ndimage.affine_transform(vol, inv, offset=ctr - inv @ (ctr + move), order=1, mode="constant",
                                    cval=0.0, output=np.float32)


def _make_phantom(family: str, shape: tuple[int, int, int], rng: np.random.Generator,
                  recipe: TrainingRecipe) -> np.ndarray:
    from tomoflow.sim import aggregate_particles, cathode_particle, gold_particle

    seed = int(rng.integers(2**31))
    if family == "aggregate":
        vol = aggregate_particles(
            shape, seed=seed, n_particles=int(rng.integers(4, 24)), n_clusters=int(rng.integers(1, 4)),
            cluster_length=float(rng.uniform(0.2, 0.9)), offset=float(rng.uniform(0.1, 0.55)),
            attenuation=float(rng.uniform(1.5, 4.0)))
    elif family == "gold":
        vol = gold_particle(shape, seed=seed, radius=float(rng.uniform(0.15, 0.4)),
                            n_satellites=int(rng.integers(0, 6)), attenuation=float(rng.uniform(1.5, 4.0)))
        vol = _stretch_and_move(vol, rng, recipe.stretch, recipe.max_off_axis)
    elif family == "cathode":
        vol = cathode_particle(shape, seed=seed, radius=float(rng.uniform(0.3, 0.6)),
                               porosity=float(rng.uniform(0.0, 0.15)), n_cracks=int(rng.integers(0, 6)),
                               n_grains=int(rng.integers(20, 80)), attenuation=float(rng.uniform(1.2, 3.0)))
        vol = _stretch_and_move(vol, rng, recipe.stretch, recipe.max_off_axis)
    elif family == "filling":  # a dense sample as wide and tall as the field: the jitter pushes it out
        if rng.random() < 0.6:
            vol = cathode_particle(shape, seed=seed, radius=float(rng.uniform(0.75, 0.9)),
                                   porosity=float(rng.uniform(0.0, 0.15)), n_cracks=int(rng.integers(0, 6)),
                                   n_grains=int(rng.integers(40, 120)), attenuation=float(rng.uniform(1.0, 3.0)))
        else:
            vol = aggregate_particles(  # a packed bed of many clusters
                shape, seed=seed, n_particles=int(rng.integers(60, 120)), n_clusters=int(rng.integers(6, 12)),
                radius=(0.15, 0.35), elongation=(1.0, 2.0), cluster_length=float(rng.uniform(0.8, 1.4)),
                offset=float(rng.uniform(0.4, 0.7)), attenuation=float(rng.uniform(1.0, 3.0)))
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
        log.info("training scan %d: centre estimate off by %.1f px, drawn again", index,
                 item["meta"]["center_error_px"])
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
    scan = simulate_scan(vol, angles, shifts=shifts, noise=noise, photons=photons, center=center_true,
                         seed=int(rng.integers(2**31)), flat_variation=float(rng.uniform(0.0, 0.15)))
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
        "index": int(index), "family": family, "detector": [rows, cols], "center_offset_px": center_true - (cols - 1) / 2.0,
        "center_error_px": c_err, "center_error_net_px": c_err * INPUT_SIZE / cols, "attempt": int(attempt),
        "jitter_half_range_net_px": float(half), "photons": photons, "noise": noise, "background": float(b0),
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


def _cache_recipe(recipe: TrainingRecipe, seed: int) -> dict[str, Any]:
    return {"cache_version": CACHE_VERSION, "seed": int(seed), "recipe": recipe.to_dict(),
            "input_size": INPUT_SIZE}


def make_training_scans(
    n_scans: int,
    *,
    recipe: TrainingRecipe | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    progress: ProgressCallback | None = None,
) -> PairSet:
    """Simulate ``n_scans`` training scans (or read them from ``cache_dir``) as one :class:`PairSet`.

    With ``cache_dir`` each scan's pairs are written to ``scan_<index>.npz`` once; a later call with
    the same recipe and seed reads them instead of simulating again. A cache made with another recipe
    or seed raises :class:`~tomoflow.errors.ConfigError` (use another folder).
    """
    n_scans = check_int("n_scans", n_scans, low=1)
    recipe = recipe or TrainingRecipe()
    _check_recipe(recipe)
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        want = _cache_recipe(recipe, seed)
        rfile = cache / "recipe.json"
        if rfile.is_file():
            have = json.loads(rfile.read_text())
            if isinstance(have, dict):
                have.pop("tomoflow_file", None)
            if have != json.loads(json.dumps(want)):
                raise ConfigError(f"the pair cache {cache} was made with another recipe or seed; "
                                  "use another output folder (or delete that cache)")
        else:
            from tomoflow.io.output import stamped_json

            rfile.write_text(stamped_json(want, "training-data", indent=1))
    xs, ys, ids, metas = [], [], [], []
    t0 = time.perf_counter()
    for k in range(n_scans):
        f = cache / f"scan_{k:05d}.npz" if cache is not None else None
        if f is not None and f.is_file():
            with np.load(f, allow_pickle=False) as z:
                item = {"x": z["x"], "y": z["y"], "meta": json.loads(str(z["meta"]))}
        else:
            item = simulate_scan_pairs(k, recipe=recipe, seed=seed)
            if f is not None:
                tmp = f.with_name(f.stem + ".tmp.npz")
                np.savez(tmp, x=item["x"], y=item["y"], meta=np.array(json.dumps(item["meta"])))
                os.replace(tmp, f)
        xs.append(item["x"])
        ys.append(item["y"])
        ids.append(np.full(item["y"].shape[0], k, dtype=np.int32))
        metas.append(item["meta"])
        log.info("training scan %d/%d (%s, %.1f s)", k + 1, n_scans, item["meta"]["family"], time.perf_counter() - t0)
        if progress is not None:
            progress(0, k + 1, n_scans, None, None)
    return PairSet(x=np.concatenate(xs), y=np.concatenate(ys), scan=np.concatenate(ids), meta=metas)


def _check_recipe(recipe: TrainingRecipe) -> None:
    check_int("size", recipe.size, low=32)
    check_int("n_angles", recipe.n_angles, low=2)
    check_number("jitter", recipe.jitter, low=0.0, low_open=True)
    check_number("max_salt_and_pepper", recipe.max_salt_and_pepper, low=0.0, high=0.6)
    if len(recipe.families) != len(recipe.family_weights) or not recipe.families:
        raise ConfigError("families and family_weights must have the same, non-zero length")
    bad = set(recipe.families) - set(FAMILIES)
    if bad:
        raise ConfigError(f"unknown phantom families {sorted(bad)}; choose among {', '.join(FAMILIES)}")


# ----------------------------------------------------------------------------- training
def _split_by_scan(n_scans: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([int(seed), 7])
    order = rng.permutation(n_scans)
    n_val = max(1, int(round(val_fraction * n_scans))) if n_scans > 1 else 0
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _evaluate(model: Any, x: np.ndarray, y: np.ndarray, scan: np.ndarray, device: Any,
              batch_size: int) -> dict[str, Any]:
    """Held-out metrics in network pixels: MSE, RMSE per axis, RMSE after removing each scan's
    common offset (the benchmark's residual), max error, fraction over 1 px."""
    import torch

    model.eval()
    pred = np.zeros_like(y, dtype=np.float64)
    with torch.no_grad():
        for i in range(0, len(y), batch_size):
            xb = normalize_pairs(torch.from_numpy(x[i : i + batch_size].astype(np.float32)).to(device))
            pred[i : i + batch_size] = model(xb).double().cpu().numpy()
    err = pred - y
    centred = err.copy()
    for s in np.unique(scan):
        centred[scan == s] -= centred[scan == s].mean(axis=0)
    return {
        "mse_px2": float(np.mean(err**2)),
        "rmse_px": [float(v) for v in np.sqrt(np.mean(err**2, axis=0))],
        "rmse_combined_px": float(np.sqrt(np.mean(np.sum(err**2, axis=1)))),
        "rmse_common_removed_px": [float(v) for v in np.sqrt(np.mean(centred**2, axis=0))],
        "max_abs_px": float(np.abs(err).max()) if err.size else 0.0,
        "fraction_over_1px": float(np.mean(np.abs(err).max(axis=1) > 1.0)) if err.size else 0.0,
        "n_pairs": int(len(y)),
    }


CHECKPOINT_TENSORS = "last.safetensors"
CHECKPOINT_STATE = "state.json"
"""A training checkpoint (both networks): the tensors, and their card: the state, which names them and
holds their sha256 (:func:`tomoflow.weights.card.verified_checkpoint`)."""


def _save_checkpoint(ckpt: Path, model: Any, best_state: dict[str, Any], opt: Any, info: dict[str, Any],
                     kind: str = "aligner-checkpoint") -> None:
    from safetensors.torch import save_file

    from tomoflow._hashing import file_sha256

    ckpt.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in best_state.items()})
    tensors.update(optimizer_tensors(opt))
    from tomoflow.io.output import STAMP_KEY, file_stamp

    stamp = file_stamp(kind)  # which network's: one training never resumes or replaces the other's
    tmp = ckpt / (CHECKPOINT_TENSORS + ".tmp")
    save_file(tensors, str(tmp), metadata={STAMP_KEY: json.dumps(stamp)})
    sha = file_sha256(tmp)
    os.replace(tmp, ckpt / CHECKPOINT_TENSORS)
    tmpj = ckpt / (CHECKPOINT_STATE + ".tmp")  # written last: the tensors are never newer than their state
    from tomoflow.io.output import stamped_json

    tmpj.write_text(stamped_json({**info, "weights": CHECKPOINT_TENSORS, "sha256": sha}, kind, indent=1))
    os.replace(tmpj, ckpt / CHECKPOINT_STATE)


def _load_checkpoint(ckpt: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The state and tensors (CPU) of a checkpoint, through the gate: the state must name the tensors
    and hold their sha256.

    Raises
    ------
    ModelError
        The tensors changed after the state was written, are missing, or the state is not a checkpoint's.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from tomoflow.weights.card import verified_checkpoint

    info = verified_checkpoint(ckpt / CHECKPOINT_TENSORS, ckpt / CHECKPOINT_STATE)
    try:
        tensors = load_file(str(ckpt / CHECKPOINT_TENSORS), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"not a readable safetensors file: {exc}", path=ckpt / CHECKPOINT_TENSORS) from None
    return info, tensors


def _init_weights_state(init_weights: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state dict on the CPU, {"file", "sha256"})`` of JitterResNet ``init_weights``, through the gate.

    Raises
    ------
    ModelError
        No card beside the file, a card naming another file, a sha256 that is not the card's.
    InputError
        Not safetensors, or not a JitterResNet.
    """
    from tomoflow.align.resnet import load_state_into
    from tomoflow.weights.card import verified_model

    given = Path(init_weights)
    try:
        card, real = verified_model(given)
        model = load_state_into(build_network(), real, shown=given)
    except InputError as exc:  # ModelError included: say which argument it was
        raise type(exc)(f"{exc.problem} (the init weights)", exc.path, exc.dataset) from None
    return model.state_dict(), {"file": given.name, "sha256": str(card["sha256"])}


def train_aligner(
    out_dir: str | os.PathLike,
    *,
    n_scans: int = 120,
    size: int = INPUT_SIZE,
    n_angles: int = 181,
    epochs: int = 8,
    batch_size: int = 32,
    lr: float = 1e-4,
    lr_final: float = 0.05,
    val_fraction: float = 0.1,
    patience: int = 3,
    seed: int = 0,
    resume: bool = True,
    device: str = "auto",
    threads: int | None = None,
    time_limit_s: float | None = None,
    recipe: TrainingRecipe | None = None,
    cache_dir: str | os.PathLike | None = None,
    command: str | None = None,
    progress: ProgressCallback | None = None,
    init_weights: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Simulate training pairs, train the jitter ResNet and write its weights and model card.

    Parameters
    ----------
    out_dir
        Output folder. Written: ``jitter_resnet.safetensors`` (best weights), ``jitter_resnet.json``
        (the model card), ``jitter_resnet_check.safetensors`` (a tiny held-out check set: pairs, targets
        and the card's check metric reproduce from it), ``checkpoint/`` (last epoch's state, for
        resume) and, unless ``cache_dir`` is given, ``cache/`` (the simulated pairs, one ``.npz`` per
        scan). Only the first three belong in ``tomoflow/weights/``.
    n_scans
        Simulated scans (each gives ``n_angles`` pairs).
    size
        Detector size of the simulated scans (most are ``size x size``; see :class:`TrainingRecipe`).
    n_angles
        Projections per scan over 180 degrees.
    epochs
        Largest number of epochs (also the length of the cosine learning-rate decay). A resumed run
        may be given more epochs than the first one (the decay is then stretched from there on).
    batch_size
        Pairs per optimisation step.
    lr, lr_final
        Adam learning rate, decayed (cosine, every step) to ``lr * lr_final`` at the end of the run:
        the last epoch, or ``time_limit_s`` when that comes first.
    val_fraction
        Fraction of the *scans* held out for validation (split by scan, never by pair).
    patience
        Stop after this many epochs without a better validation MSE.
    seed
        Seed of the data recipe, the split, the initialisation and the batch order.
    resume
        Continue from ``out_dir/checkpoint`` when it exists (and reuse the cached pairs); False
        starts over (the cache is still reused).
    device
        ``"cpu"``, ``"cuda"`` or ``"auto"``.
    threads
        Torch CPU threads (default: torch's choice).
    time_limit_s
        Stop training (as early stopping does) once this much wall time has been spent on it (the
        learning-rate decay then follows the wall time, so the run ends at the low rate).
    recipe
        The data recipe; default :class:`TrainingRecipe` with ``size`` and ``n_angles``.
    cache_dir
        Where the simulated pairs are cached; default ``out_dir/cache``.
    command
        The exact command that ran this training, recorded in the card.
    progress
        ``progress(epoch, step, n_steps, train_loss, val_loss)`` (see :data:`ProgressCallback`).

    overwrite
        Replace weights, card and check set that tomoflow wrote into ``out_dir`` for another training
        (files tomoflow did not write are never replaced; a resumed run of the same training rewrites
        its own).
    init_weights
        Start from these JitterResNet weights (safetensors with their model card beside them, which must
        name them and hold their sha256) instead of a random initialisation: fine-tuning. Checked
        before anything is simulated or written.

    Returns
    -------
    dict
        The model card written to ``jitter_resnet.json``.

    Raises
    ------
    ModelError
        ``init_weights`` or the checkpoint fail the load gate (no card beside them, a card naming another
        file, a sha256 that is not the card's: :func:`tomoflow.weights.card.verified_model`); raised
        before anything is simulated or written.
    InputError
        ``init_weights`` that are not JitterResNet safetensors.
    ConfigError
        Bad parameters, or a checkpoint made with other training parameters.
    """
    import torch

    n_scans = check_int("n_scans", n_scans, low=2)
    epochs = check_int("epochs", epochs, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    patience = check_int("patience", patience, low=1)
    lr = check_number("lr", lr, low=0.0, low_open=True)
    lr_final = check_number("lr_final", lr_final, low=0.0, high=1.0)
    val_fraction = check_number("val_fraction", val_fraction, low=0.0, high=0.5, low_open=True)
    if time_limit_s is not None:
        time_limit_s = check_number("time_limit_s", time_limit_s, low=0.0, low_open=True)
    if recipe is None:
        recipe = TrainingRecipe(size=check_int("size", size, low=32), n_angles=check_int("n_angles", n_angles, low=2))
    dev = resolve_device(device)
    if threads is not None:
        torch.set_num_threads(check_int("threads", threads, low=1))
    out = Path(out_dir)
    ckpt = out / "checkpoint"
    cache = Path(cache_dir) if cache_dir is not None else out / "cache"
    t_start = time.perf_counter()

    # ---- every model file read is checked before anything is simulated or written
    init_info, init_state = None, None
    if init_weights is not None:  # fine-tune: start from earlier weights (never unpickled), card-checked
        init_state, init_info = _init_weights_state(init_weights)
    resumed = None
    if resume and (ckpt / CHECKPOINT_STATE).is_file():
        resumed = _load_checkpoint(ckpt)
        saved = dict(resumed[0].get("config") or {})
        saved.pop("epochs", None)  # may grow on resume
        if saved != _train_config(n_scans, recipe, seed, val_fraction, batch_size, lr, lr_final):
            raise ConfigError(f"the checkpoint in {ckpt} was made with other training parameters; "
                              "use another output folder or resume=False")
    # ---- every file this training writes, checked by the file policy before any work
    from tomoflow.io.output import fingerprint as digest
    from tomoflow.io.output import plan_files
    from tomoflow.weights.card import card_path

    train_fp = digest("train-aligner", inputs={"init": (init_info or {}).get("sha256") or ""},
                      params=_train_config(n_scans, recipe, seed, val_fraction, batch_size, lr, lr_final))
    renew = [f"checkpoint/{CHECKPOINT_TENSORS}", f"checkpoint/{CHECKPOINT_STATE}"]
    read = [init_weights, card_path(Path(init_weights))] if init_weights is not None else []
    plan_files(out, {WEIGHTS_NAME: "model-weights", CARD_NAME: "model-card", CHECK_NAME: "training-data",
                     **{n: "aligner-checkpoint" for n in renew}}, fingerprint=train_fp, overwrite=overwrite,
               renew=renew, inputs=read)
    if cache_dir is None:
        plan_files(cache, {"recipe.json": "training-data"}, renew=["recipe.json"])
    out.mkdir(parents=True, exist_ok=True)

    # ---- data (cached per scan)
    t_sim = time.perf_counter()
    data = make_training_scans(n_scans, recipe=recipe, seed=seed, cache_dir=cache, progress=progress)
    sim_s = time.perf_counter() - t_sim
    train_scans, val_scans = _split_by_scan(n_scans, val_fraction, seed)
    tr = np.flatnonzero(np.isin(data.scan, train_scans))
    va = np.flatnonzero(np.isin(data.scan, val_scans))
    x_val, y_val, s_val = data.x[va], data.y[va], data.scan[va]

    # ---- model, optimiser, resume
    torch.manual_seed(int(seed))
    model = build_network().to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    first_epoch, best_val, bad, history, train_s = 1, math.inf, 0, [], 0.0
    if init_state is not None:
        model.load_state_dict(init_state)
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if resumed is not None:
        info, tensors = resumed
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        best_state = {k[5:]: v.to(dev) for k, v in tensors.items() if k.startswith("best.")}
        load_optimizer(opt, {k: v.to(dev) for k, v in tensors.items() if k.startswith("opt.")})
        first_epoch = int(info["epoch"]) + 1
        best_val, bad, history = float(info["best_val_mse"]), int(info["bad_epochs"]), info["history"]
        train_s = float(info.get("train_s", 0.0))
        log.info("resuming after epoch %d (best validation MSE %.4g)", first_epoch - 1, best_val)
    stopped = "epochs"
    if first_epoch > 1 and (bad >= patience or (time_limit_s is not None and train_s >= time_limit_s)):
        first_epoch = epochs + 1  # already finished: just write the outputs again
        stopped = "resumed finished run"

    n_steps = max(1, math.ceil(len(tr) / batch_size))
    for epoch in range(first_epoch, epochs + 1):
        t_ep = time.perf_counter()
        rng = np.random.default_rng([int(seed), int(epoch)])
        order = tr[rng.permutation(len(tr))]
        model.train()
        run_loss, run_n = 0.0, 0
        for step in range(n_steps):
            # cosine decay over the run: epochs, or the time limit when that comes first
            done = ((epoch - 1) * n_steps + step) / (epochs * n_steps)
            if time_limit_s is not None:
                done = max(done, (train_s + time.perf_counter() - t_ep) / time_limit_s)
            for g in opt.param_groups:
                g["lr"] = cosine_lr(done, lr, lr_final)
            idx = np.sort(order[step * batch_size : (step + 1) * batch_size])
            xb = data.x[idx].astype(np.float32)
            yb = data.y[idx].copy()
            flip_h = rng.random(len(idx)) < 0.5
            flip_v = rng.random(len(idx)) < 0.5
            xb[flip_h] = xb[flip_h][..., ::-1]
            xb[flip_v] = xb[flip_v][..., ::-1, :]
            yb[flip_h, 1] *= -1.0
            yb[flip_v, 0] *= -1.0
            xt = normalize_pairs(torch.from_numpy(np.ascontiguousarray(xb)).to(dev))
            xt = xt.contiguous(memory_format=torch.channels_last)
            yt = torch.from_numpy(yb).to(dev)
            opt.zero_grad(set_to_none=True)
            loss = torch.mean((model(xt) - yt) ** 2)
            loss.backward()
            opt.step()
            run_loss += float(loss.detach()) * len(idx)
            run_n += len(idx)
            if progress is not None and (step + 1) % 10 == 0 and step + 1 < n_steps:
                progress(epoch, step + 1, n_steps, run_loss / run_n, None)
            if (step + 1) % 100 == 0:
                log.info("epoch %d step %d/%d: train MSE %.4f px^2, lr %.3g", epoch, step + 1, n_steps,
                         run_loss / run_n, opt.param_groups[0]["lr"])
            if time_limit_s is not None and train_s + time.perf_counter() - t_ep >= time_limit_s:
                break  # the time is up: validate this (partial) epoch and stop
        train_loss = run_loss / max(run_n, 1)
        metrics = _evaluate(model, x_val, y_val, s_val, dev, 64)
        val = metrics["mse_px2"]
        train_s += time.perf_counter() - t_ep
        improved = val < best_val
        if improved:
            best_val, bad = val, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
        history.append({"epoch": epoch, "lr": opt.param_groups[0]["lr"], "train_mse_px2": train_loss,
                        "val_mse_px2": val, "val_rmse_px": metrics["rmse_px"], "seconds": time.perf_counter() - t_ep})
        log.info("epoch %d: train MSE %.4f, validation MSE %.4f px^2 (RMSE %s)%s", epoch, train_loss, val,
                 metrics["rmse_px"], " *" if improved else "")
        _save_checkpoint(ckpt, model, best_state, opt, {
            "epoch": epoch, "best_val_mse": best_val, "bad_epochs": bad, "history": history, "train_s": train_s,
            "config": _train_config(n_scans, recipe, seed, val_fraction, batch_size, lr, lr_final)})
        if progress is not None:
            progress(epoch, n_steps, n_steps, train_loss, val)
        if bad >= patience:
            stopped = "early stopping"
            break
        if time_limit_s is not None and train_s >= time_limit_s:
            stopped = "time limit"
            break

    # ---- outputs: best weights, check set, card
    model.load_state_dict(best_state)
    model.eval()
    final = _evaluate(model, x_val, y_val, s_val, dev, 64)
    weights = out / WEIGHTS_NAME
    sha = save_weights(model.to(memory_format=torch.contiguous_format), weights, fingerprint=train_fp)
    check = _write_check_set(out / CHECK_NAME, model, x_val, y_val, dev, fingerprint=train_fp)
    n_pairs = int(len(data))
    recipe_d = recipe.to_dict()
    families = {f: sum(m["family"] == f for m in data.meta) for f in recipe.families}
    card = {
        "name": "tomoflow jitter ResNet",
        "format": "safetensors",
        "weights": WEIGHTS_NAME,
        "sha256": sha,
        "architecture": dict(ARCHITECTURE, parameters=count_parameters(model)),
        "input_size": [INPUT_SIZE, INPUT_SIZE],
        "normalization": NORMALIZATION,
        "output": "(dy, dx) of the measured projection relative to its reprojection, network pixels "
                  "(160-px input); JitterAligner.predict scales to detector pixels",
        "training_data": {
            "recipe": recipe_d, "seed": int(seed), "n_scans": n_scans, "n_pairs": n_pairs,
            "n_train_scans": int(len(train_scans)), "n_val_scans": int(len(val_scans)),
            "n_train_pairs": int(len(tr)), "n_val_pairs": int(len(va)), "families": families,
            "pair_maker": "clean_copy + start_network + network_pairs (tomoflow.align, as at inference)",
            "targets": "fix_gauge(jitter, angles) + (effective axis - estimated centre) on dx, network pixels",
        },
        "training": {
            "optimizer": "Adam", "lr": lr, "lr_schedule": f"cosine per step to {lr_final} x lr over {epochs} epochs"
            + (f" or {time_limit_s:.0f} s of training, whichever first" if time_limit_s else ""),
            "loss": "MSE of (dy, dx) in network pixels", "batch_size": batch_size, "epochs_run": len(history),
            "max_epochs": epochs, "patience": patience, "stopped_by": stopped, "augmentation": "random flips of pairs", "initialized_from": init_info,
            "split": "by scan", "device": str(dev), "torch": torch.__version__,
            "history": history,
        },
        "metrics": {
            "held_out": dict(final, units="network pixels (160-px input; x 1.6 for a 256-px detector)",
                             rmse_combined_px_256_equivalent=final["rmse_combined_px"] * 256 / INPUT_SIZE),
            "check_set": check,
        },
        "command": command,
        "timing": {"simulation_s": sim_s, "training_s": train_s, "total_s": time.perf_counter() - t_start},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _write_card(out / CARD_NAME, card, train_fp)
    return card


def _train_config(n_scans: int, recipe: TrainingRecipe, seed: int, val_fraction: float, batch_size: int,
                  lr: float, lr_final: float) -> dict[str, Any]:
    return json.loads(json.dumps({"n_scans": n_scans, "recipe": recipe.to_dict(), "seed": int(seed),
                                  "val_fraction": val_fraction, "batch_size": batch_size, "lr": lr,
                                  "lr_final": lr_final}))


def _write_check_set(path: Path, model: Any, x_val: np.ndarray, y_val: np.ndarray, device: Any,
                     fingerprint: str | None = None) -> dict[str, Any]:
    """Save a few held-out pairs (160 x 160, float16 as cached) with their targets, and the metric the
    saved weights give on them through the public :meth:`JitterAligner.predict` path."""
    from safetensors.numpy import save_file

    from tomoflow._hashing import file_sha256
    from tomoflow.align.resnet import JitterAligner

    n = min(CHECK_PAIRS, len(y_val))
    pick = np.linspace(0, len(y_val) - 1, n).round().astype(int) if n else np.zeros(0, int)
    xs = np.ascontiguousarray(x_val[pick])
    ys = np.ascontiguousarray(y_val[pick]).astype(np.float32)
    tmp = path.with_name(path.name + ".tmp")
    from tomoflow.io.output import STAMP_KEY, file_stamp

    save_file({"projections": np.ascontiguousarray(xs[:, 0]), "reprojections": np.ascontiguousarray(xs[:, 1]),
               "shifts": ys}, str(tmp), metadata={STAMP_KEY: json.dumps(file_stamp("training-data", fingerprint))})
    os.replace(tmp, path)
    os.chmod(path, 0o644)
    aligner = JitterAligner(model=model, device=device)
    pred = aligner.predict(xs[:, 0].astype(np.float32), xs[:, 1].astype(np.float32)) if n else np.zeros((0, 2))
    err = pred - ys
    return {
        "file": path.name, "sha256": file_sha256(path), "n_pairs": int(n),
        "rmse_px": [float(v) for v in np.sqrt(np.mean(err**2, axis=0))] if n else [0.0, 0.0],
        "mse_px2": float(np.mean(err**2)) if n else 0.0,
        "predictions": pred.tolist(),
        "units": "pixels of the 160 x 160 check pairs",
    }


def _write_card(path: Path, card: dict[str, Any], fingerprint: str | None = None) -> None:
    from tomoflow.io.output import STAMP_KEY, stamped_json

    text = stamped_json(card, "model-card", fingerprint, indent=1, default=float)
    card[STAMP_KEY] = json.loads(text)[STAMP_KEY]  # the card returned is the card written
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def install_weights(out_dir: str | os.PathLike, models_dir: str | os.PathLike | None = None) -> list[Path]:
    """Copy the trained weights, card and check set from ``out_dir`` to ``tomoflow/weights/``."""
    from tomoflow.align.resnet import default_weights_path

    from tomoflow.weights.card import verified_model

    verified_model(Path(out_dir) / WEIGHTS_NAME)  # only weights that pass the gate are installed
    dest = Path(models_dir) if models_dir is not None else default_weights_path().parent
    copied = []
    for name in (WEIGHTS_NAME, CARD_NAME, CHECK_NAME):
        shutil.copy2(Path(out_dir) / name, dest / name)
        copied.append(dest / name)
    return copied
