"""Simulate a complete raw tomography scan (projections, flats, darks) from a phantom.

Model, per projection ``i`` at angle ``theta_i``::

    p_i      = project(phantom, theta_i)              ideal line integrals (tomoflow.recon.project)
    q_i      = shift(p_i, (dy_i, dx_i))               jitter applied to the line integrals
    raw_i    = dark + flat_level * F * exp(-q_i)      detector counts
    flat_k   = dark + flat_level * F                  flat fields (open beam, no sample)
    dark_k   = dark                                   dark fields (beam off)

``F`` is a smooth, seeded beam profile of mean 1 (relative variation ``flat_variation``) and ``dark``
a fixed pattern around ``dark_level``; both are the same in every frame, so flat/dark normalisation
``-log((raw - dark) / (flat - dark))`` recovers ``q_i`` exactly when noise is off.

Noise, when asked for, is added in this order: photon noise (``photons``: mean photons per pixel of
the open beam; counts scale as ``flat_level / photons`` per photon) on projections and flats; Gaussian
read noise on projections, flats and darks; salt-and-pepper (zingers/dead pixels) on projections.
Every random component has its own stream spawned from ``seed``, so switching one on or off does not
change the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tomoflow._checks import (
    check_choice,
    check_finite,
    check_int,
    check_number,
    check_seed,
    random_generator,
    validate_angles,
)
from tomoflow._typing import Array, ArrayLike
from tomoflow.backend import to_numpy
from tomoflow.errors import InputError
from tomoflow.geometry import check_center
from tomoflow.sim.jitter import apply_jitter, random_jitter
from tomoflow.sim.noise import MAX_PHOTONS, MAX_SALT_AND_PEPPER, gaussian_noise, poisson_noise, salt_and_pepper

__all__ = ["SyntheticScan", "ScanSimulator", "RawProjections", "simulate_scan", "NOISE_KEYS"]

NOISE_KEYS: tuple[str, ...] = ("gaussian", "salt_and_pepper")
"""Keys accepted in the ``noise`` dict of :func:`simulate_scan`."""


@dataclass
class SyntheticScan:
    """A simulated raw scan and the ground truth it was made from.

    Attributes
    ----------
    projections
        ``(angle, row, col)`` float32 raw detector counts (dark + flat * transmission, with noise).
    flats
        ``(flat, row, col)`` float32 open-beam frames.
    darks
        ``(dark, row, col)`` float32 beam-off frames.
    angles_deg
        ``(angle,)`` float64 rotation angles, degrees.
    shifts
        ``(angle, 2)`` float64 true jitter ``(dy, dx)`` in pixels (``+dx``: content moved to larger
        column index); correction shifts by ``-shifts``.
    line_integrals
        ``(angle, row, col)`` float32 noise-free line integrals as measured, i.e. *with* jitter: what
        flat/dark-normalised ``-log`` of the raw projections gives without noise.
    ideal_line_integrals
        ``(angle, row, col)`` float32 line integrals of a perfect stage (no jitter).
    phantom
        ``(z, y, x)`` float32 attenuation per voxel.
    center
        Rotation-axis column on the detector, pixels.
    flat_field
        ``(row, col)`` float32 noise-free open-beam counts ``flat_level * F`` (without dark).
    dark_field
        ``(row, col)`` float32 noise-free dark counts.
    params
        The simulation parameters (seed, jitter amplitude, photons, noise, levels), JSON-serialisable.
    """

    projections: np.ndarray
    flats: np.ndarray
    darks: np.ndarray
    angles_deg: np.ndarray
    shifts: np.ndarray
    line_integrals: np.ndarray
    ideal_line_integrals: np.ndarray
    phantom: np.ndarray
    center: float
    flat_field: np.ndarray
    dark_field: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_angles(self) -> int:
        """Number of projections."""
        return int(self.projections.shape[0])

    @property
    def detector_shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the detector."""
        return tuple(self.projections.shape[1:])


def _smooth_profile(rng: np.random.Generator, shape: tuple[int, int], variation: float) -> np.ndarray:
    """Smooth positive beam profile of mean 1 and relative peak deviation about ``variation``."""
    rows, cols = shape
    y = (np.arange(rows) + 0.5) / rows - 0.5
    x = (np.arange(cols) + 0.5) / cols - 0.5
    # Broad bell-shaped beam, plus a few low-frequency ripples (scintillator / optics structure).
    prof = -(x[None, :] ** 2 + (y[:, None] * rng.uniform(0.5, 1.5)) ** 2)
    for _ in range(4):
        ky, kx = rng.uniform(0.5, 3.0, size=2)
        ph = rng.uniform(0, 2 * np.pi)
        prof = prof + 0.25 * np.cos(2 * np.pi * (ky * y[:, None] + kx * x[None, :]) + ph)
    prof -= prof.mean()
    span = np.abs(prof).max()
    if span > 0:
        prof *= variation / span
    prof = 1.0 + prof
    return (prof / prof.mean()).astype(np.float32)


class ScanSimulator:
    """A simulated scan, computed block by block of angles on demand (see :func:`simulate_scan`).

    Constructing it validates the parameters, draws the jitter and the beam and dark fields and makes
    the flats and darks (small); :meth:`block` then simulates any range of projections. Every random
    component has its own stream per projection, so a scan streamed in blocks of any size equals the
    scan made at once, and memory stays at one block (plus the phantom) whatever the number of angles.
    :attr:`raw` is an array-like view of the raw projections that the stores' writers stream from.

    Parameters are those of :func:`simulate_scan`.
    """

    def __init__(
        self,
        phantom: Any,
        angles_deg: Sequence[float] | np.ndarray,
        *,
        jitter_px: float = 0.0,
        jitter_vertical: bool = True,
        shifts: Any = None,
        noise: Mapping[str, float] | None = None,
        photons: float | None = None,
        n_flats: int = 10,
        n_darks: int = 10,
        flat_level: float = 10000.0,
        dark_level: float = 100.0,
        flat_variation: float = 0.1,
        seed: Any = 0,
        center: float | None = None,
    ) -> None:
        vol = np.asarray(to_numpy(phantom), dtype=np.float32)
        if vol.ndim != 3 or 0 in vol.shape:
            raise InputError(f"phantom must be a non-empty (z, y, x) volume, got shape {vol.shape}")
        check_finite(vol, "phantom")
        angles = validate_angles(angles_deg)
        n_flats = check_int("n_flats", n_flats, low=0)
        n_darks = check_int("n_darks", n_darks, low=0)
        flat_level = check_number("flat_level (counts)", flat_level, low=0.0, low_open=True)
        dark_level = check_number("dark_level (counts)", dark_level, low=0.0)
        flat_variation = check_number("flat_variation", flat_variation, low=0.0, high=0.5)
        noise = dict(noise or {})
        for key in noise:
            check_choice("noise key (photon noise: photons=...)", key, NOISE_KEYS)
        sigma = check_number(
            "noise['gaussian'] (read-noise sigma as a fraction of flat_level)",
            noise.get("gaussian", 0.0) or 0.0,
            low=0.0,
        )
        frac = check_number(
            "noise['salt_and_pepper']", noise.get("salt_and_pepper", 0.0) or 0.0, low=0.0, high=MAX_SALT_AND_PEPPER
        )
        if photons is not None:
            photons = check_number(
                "photons (mean photons per open-beam pixel)", photons, low=0.0, low_open=True, high=MAX_PHOTONS
            )

        n_angles = angles.size
        rows, cols = vol.shape[0], vol.shape[2]
        if shifts is None:  # a jitter of half the detector or more moves the sample off it
            check_number(
                f"jitter_px (half-range, pixels; below half the {cols}-column detector)",
                jitter_px,
                low=0.0,
                high=cols / 2.0,
                high_open=True,
            )
        if seed is None or isinstance(seed, (int, np.integer)):
            entropy = None if seed is None else check_seed("seed", seed)
        else:  # a SeedSequence or Generator: draw the root entropy from it
            entropy = int(random_generator(seed).integers(2**63))
        root = np.random.SeedSequence(entropy)
        entropy = int(root.entropy)  # type: ignore[arg-type]  # an int: the root was seeded with an int or None; recorded, so a scan made with seed=None can be reproduced
        s_jit, s_flat, s_dark, s_poisson, s_gauss, s_sp = root.spawn(6)

        if shifts is not None:
            true_shifts = np.asarray(shifts, dtype=np.float64)
            if true_shifts.shape != (n_angles, 2) or not np.all(np.isfinite(true_shifts)):
                raise InputError(
                    f"shifts must be a finite (n_angles, 2) = ({n_angles}, 2) array of (dy, dx), "
                    f"got shape {true_shifts.shape}"
                )
        else:
            true_shifts = random_jitter(n_angles, jitter_px, seed=s_jit, vertical=jitter_vertical)

        ctr = check_center(center, cols)
        flat_field = flat_level * _smooth_profile(np.random.default_rng(s_flat), (rows, cols), flat_variation)
        dark_rng = np.random.default_rng(s_dark)
        dark_field = (dark_level * (1.0 + 0.02 * dark_rng.standard_normal((rows, cols)))).astype(np.float32)
        if dark_level > 0:
            np.maximum(dark_field, 0.0, out=dark_field)
        p_seeds = s_poisson.spawn(2)
        g_seeds = s_gauss.spawn(3)
        flats = np.broadcast_to(flat_field / flat_level, (int(n_flats), rows, cols)).astype(np.float32)
        if photons is not None and flats.size:
            flats = poisson_noise(flats, photons, seed=p_seeds[1])
        flats = (dark_field[None] + flat_level * flats).astype(np.float32)
        darks = np.broadcast_to(dark_field, (int(n_darks), rows, cols)).astype(np.float32)
        if sigma > 0:
            if flats.size:
                flats = gaussian_noise(flats, sigma * flat_level, seed=g_seeds[1])
            if darks.size:
                darks = gaussian_noise(darks, sigma * flat_level, seed=g_seeds[2])
        # one random stream per projection and component: blocks of any size give the same scan
        self._poisson = p_seeds[0].spawn(n_angles) if photons is not None else None
        self._gauss = g_seeds[0].spawn(n_angles) if sigma > 0 else None
        self._zinger = s_sp.spawn(n_angles) if frac > 0 else None
        self._zinger_range = (float(dark_field.min()), float((dark_field + flat_field).max()))
        self.phantom = vol
        self.angles_deg = angles
        self.shifts = true_shifts
        self.center = ctr
        self.flat_field = flat_field.astype(np.float32)
        self.dark_field = dark_field
        self.flats = flats
        self.darks = darks
        self.shape = (n_angles, rows, cols)
        self._photons, self._sigma, self._frac, self._flat_level = photons, sigma, frac, flat_level
        self.params = {
            "seed": entropy,
            "jitter_px": float(jitter_px) if shifts is None else None,
            "jitter_vertical": bool(jitter_vertical),
            "photons": None if photons is None else float(photons),
            "noise": {k: float(v) for k, v in noise.items()},
            "flat_level": flat_level,
            "dark_level": dark_level,
            "flat_variation": flat_variation,
            "n_flats": int(n_flats),
            "n_darks": int(n_darks),
            "phantom_shape": list(vol.shape),
        }

    def block(self, a0: int, a1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Projections ``a0:a1``: ``(raw counts, measured line integrals, ideal line integrals)``,
        each ``(a1 - a0, rows, cols)`` float32."""
        from tomoflow.recon import project

        a0, a1 = max(0, int(a0)), min(self.shape[0], int(a1))
        ideal = np.asarray(project(self.phantom, self.angles_deg[a0:a1], center=self.center), dtype=np.float32)
        sh = self.shifts[a0:a1]
        measured = apply_jitter(ideal, sh) if np.any(sh != 0) else ideal.copy()
        raw = np.empty_like(measured)
        profile = (self.flat_field / self._flat_level)[None]
        for k, i in enumerate(range(a0, a1)):
            t = np.exp(-measured[k : k + 1].astype(np.float64)) * profile
            if self._poisson is not None:
                t = poisson_noise(t, self._photons, seed=self._poisson[i])  # type: ignore[arg-type]  # set together with _poisson
            p = (self.dark_field[None] + self._flat_level * t).astype(np.float32)
            if self._gauss is not None:
                p = gaussian_noise(p, self._sigma * self._flat_level, seed=self._gauss[i])
            if self._zinger is not None:
                lo, hi = self._zinger_range
                p = salt_and_pepper(p, self._frac, seed=self._zinger[i], low=lo, high=hi)
            raw[k] = p[0]
        return raw, np.asarray(measured, dtype=np.float32), ideal

    @property
    def raw(self) -> RawProjections:
        """The raw projections as a lazy ``(angle, row, col)`` float32 array-like (sliced on angles)."""
        return RawProjections(self)

    def scan(self) -> SyntheticScan:
        """The whole scan in memory (all projections at once)."""
        raw, measured, ideal = self.block(0, self.shape[0])
        return SyntheticScan(
            projections=raw,
            flats=self.flats,
            darks=self.darks,
            angles_deg=self.angles_deg,
            shifts=self.shifts,
            line_integrals=measured,
            ideal_line_integrals=ideal,
            phantom=self.phantom,
            center=self.center,
            flat_field=self.flat_field,
            dark_field=self.dark_field,
            params=dict(self.params),
        )


class RawProjections:
    """Lazy raw projections of a :class:`ScanSimulator`: ``shape``, ``dtype``, ``ndim`` and slicing
    along the angle axis, which simulates just those projections (what the writers stream from)."""

    def __init__(self, sim: ScanSimulator) -> None:
        self._sim = sim
        self.shape = sim.shape
        self.dtype = np.dtype(np.float32)
        self.ndim = 3

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        first = key[0] if isinstance(key, tuple) else key
        rest = key[1:] if isinstance(key, tuple) else ()
        if isinstance(first, (int, np.integer)):
            i = int(first) % self.shape[0]
            return self._sim.block(i, i + 1)[0][(0, *rest)]
        if not isinstance(first, slice) or first.step not in (None, 1):
            raise TypeError("RawProjections supports integer or contiguous slice indexing along angles")
        a0, a1, _ = first.indices(self.shape[0])
        return self._sim.block(a0, a1)[0][(slice(None), *rest)]


def simulate_scan(
    phantom: Array,
    angles_deg: Sequence[float] | np.ndarray,
    *,
    jitter_px: float = 0.0,
    jitter_vertical: bool = True,
    shifts: ArrayLike | None = None,
    noise: Mapping[str, float] | None = None,
    photons: float | None = None,
    n_flats: int = 10,
    n_darks: int = 10,
    flat_level: float = 10000.0,
    dark_level: float = 100.0,
    flat_variation: float = 0.1,
    seed: Any = 0,
    center: float | None = None,
) -> SyntheticScan:
    """Simulate the raw projections, flats and darks of a jittered scan of ``phantom``.

    Parameters
    ----------
    phantom
        ``(z, y, x)`` attenuation per voxel (see :mod:`tomoflow.sim.phantoms`); the detector has
        ``z`` rows and ``x`` columns. Simulation runs on the host (NumPy); outputs are NumPy.
    angles_deg
        ``(angle,)`` rotation angles in degrees.
    jitter_px
        Jitter half-range in pixels: each projection is displaced by ``(dy, dx)`` uniform in
        ``[-jitter_px, +jitter_px]`` (:func:`tomoflow.sim.jitter.random_jitter`); 0 for none; below half
        the detector width (a larger shift moves the sample off the detector).
    jitter_vertical
        Jitter rows too (``dy``); False keeps ``dy = 0``.
    shifts
        Explicit ``(angle, 2)`` jitter ``(dy, dx)`` in pixels, instead of random jitter.
    noise
        None, or a dict with any of ``"gaussian"`` (read-noise standard deviation as a fraction of
        ``flat_level``) and ``"salt_and_pepper"`` (fraction of projection pixels hit, in [0, 0.6]).
    photons
        Mean photons per pixel of the open beam, at most :data:`tomoflow.sim.noise.MAX_PHOTONS`; None for
        no photon noise.
    n_flats, n_darks
        Number of flat and dark frames (``>= 0``).
    flat_level
        Mean open-beam counts above the dark level (detector units).
    dark_level
        Mean dark counts (detector units), ``>= 0``.
    flat_variation
        Relative peak deviation of the beam profile from its mean, in ``[0, 0.5]``.
    seed
        Random seed for jitter, beam profile and noise: an integer in ``[0, 2**63 - 1]``, a
        :class:`numpy.random.SeedSequence` or a Generator.
    center
        Rotation-axis detector column in pixels; default ``(x - 1) / 2``.

    Returns
    -------
    SyntheticScan
        Raw data and ground truth (jitter, line integrals, phantom).
    """
    return ScanSimulator(
        phantom,
        angles_deg,
        jitter_px=jitter_px,
        jitter_vertical=jitter_vertical,
        shifts=shifts,
        noise=noise,
        photons=photons,
        n_flats=n_flats,
        n_darks=n_darks,
        flat_level=flat_level,
        dark_level=dark_level,
        flat_variation=flat_variation,
        seed=seed,
        center=center,
    ).scan()
