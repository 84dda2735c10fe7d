"""Multiscale pair simulator: a low-resolution large field of view (LFOV) and a high-resolution ROI.

A porous sample is "scanned" twice, as in multiscale X-ray microscopy workflows (e.g. ZEISS
resolution recovery): a coarse LFOV volume of the whole sample and a fine HR volume of a region of
interest inside it, rotated, scaled and shifted relative to the LFOV by a small random 9-DOF
transform whose exact value is returned, together with the translation-only prior that the stage
positions give. Pure kernel: NumPy/SciPy arrays in memory, no files (writing the pair to two volume
stores is :func:`tomoflow.io.synthetic.write_multiscale_pair`).

Geometry
--------
Physical coordinates are ``(z, y, x)`` in micrometres. A volume's physical frame has its origin at the
centre of its first voxel: voxel ``(i, j, k)`` is at ``(i * dz, j * dy, k * dx)``. Transforms are 4x4
homogeneous matrices acting on column vectors, ``p_to = M @ [z, y, x, 1]``.

The *sample frame* is the LFOV's physical frame: the analytic sample (:class:`PorousSample`) is
described there, and the LFOV is rasterised with the identity. The true HR -> LFOV transform is

    ``M = T(t) @ R @ S @ T(-c_hr)``,  i.e.  ``p_lfov = R @ diag(s) @ (p_hr - c_hr) + t``

with ``c_hr = (n_hr - 1) / 2 * spacing_hr`` the physical centre of the HR volume (scale and rotation
act about the HR centre, scale first, in the HR frame), ``s = (s_z, s_y, s_x)`` the per-axis
scales, ``t`` the LFOV position of the HR centre and ``R = R_z(a_z) @ R_y(a_y) @ R_x(a_x)`` where
``R_axis(a)`` rotates by ``a`` the plane of the two other axes taken cyclically in (z, y, x) order::

    R_z(a): y' = cos a * y - sin a * x,  x' = sin a * y + cos a * x
    R_y(a): x' = cos a * x - sin a * z,  z' = sin a * x + cos a * z
    R_x(a): z' = cos a * z - sin a * y,  y' = sin a * z + cos a * y

So ``M[:3, :3] = R @ diag(s)`` and ``M[:3, 3] = t - R @ diag(s) @ c_hr`` (see :func:`compose_matrix`).
The matrix is authoritative; the angles only say how it was drawn.

Stage positions and the prior
-----------------------------
Stage positions are the sample-stage coordinates (µm, axes parallel to and with the signs of the
volume axes ``z, y, x``) of each volume's *centre*. The prior is translation only::

    prior_matrix[:3, :3] = I
    prior_matrix[:3, 3]  = (hr_stage_position_um - lfov_stage_position_um) + c_lfov - c_hr

with ``c_lfov = (n_lfov - 1) / 2 * spacing_lfov``. The prior puts the HR centre at
``t_prior = t + e`` where the stage error ``e`` has a uniformly random direction and a length
uniform in ``[0.5, 1] * prior_error_lfov_vox`` LFOV voxels (measured in LFOV voxel units per axis).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tomoflow._checks import check_choice, check_int, check_number, random_generator
from tomoflow.errors import ConfigError, InputError
from tomoflow.sim.noise import gaussian_noise
from tomoflow.sim.phantoms import _random_rotation

__all__ = [
    "PHASES",
    "FAMILIES",
    "PorousSample",
    "MultiscalePair",
    "porous_sample",
    "rasterize_sample",
    "compose_matrix",
    "rotation_from_euler_deg",
    "simulate_multiscale_pair",
]

PHASES: tuple[str, ...] = ("background", "solid", "crack", "pore")
"""Phase names; a primitive's ``phase`` code is the index here (0, background, is never a primitive)."""
FAMILIES: tuple[str, ...] = ("cathode", "foam")

_SOLID, _CRACK, _PORE = 1, 2, 3
_POINTS_PER_SLAB = 1 << 22  # sub-sample points held at once (int32 labels: 16 MB)

Vec3 = float | Sequence[float]


# --------------------------------------------------------------------------- small helpers
def _vec3(name: str, value: Any, *, positive: bool = False) -> np.ndarray:
    """A scalar or 3-sequence as a float64 (3,) array of finite numbers (``> 0`` if ``positive``)."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number or three numbers (z, y, x), got {value!r}") from None
    if arr.ndim == 0:
        arr = np.repeat(arr, 3)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)) or (positive and np.any(arr <= 0)):
        what = "positive " if positive else ""
        raise ConfigError(f"{name} must be a {what}number or three {what}numbers (z, y, x), got {value!r}")
    return arr


def _shape3(name: str, shape: Any, low: int = 1) -> tuple[int, int, int]:
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),) * 3
    try:
        vals = tuple(shape)
    except TypeError:
        raise ConfigError(f"{name} must be an int or (nz, ny, nx), got {shape!r}") from None
    if len(vals) != 3:
        raise ConfigError(f"{name} must be three integers (nz, ny, nx), got {shape!r}")
    return tuple(check_int(name, v, low=low) for v in vals)  # type: ignore[return-value]  # three values, checked above


def rotation_from_euler_deg(angles_deg: Vec3) -> np.ndarray:
    """``R = R_z(a_z) @ R_y(a_y) @ R_x(a_x)`` for angles ``(a_z, a_y, a_x)`` in degrees, (z, y, x) axes.

    ``R_axis(a)`` rotates the plane of the two other axes, taken cyclically in (z, y, x) order (see
    the module docstring), so ``R_x`` is applied first.
    """
    a = np.deg2rad(_vec3("angles_deg", angles_deg))
    out = np.eye(3)
    for axis in (0, 1, 2):  # R_z @ R_y @ R_x
        c, s = math.cos(a[axis]), math.sin(a[axis])
        i, j = (axis + 1) % 3, (axis + 2) % 3
        r = np.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        out = out @ r
    return out


def compose_matrix(rotation_deg: Vec3, scale: Vec3, translation_um: Vec3, center_um: Vec3) -> np.ndarray:
    """4x4 ``T(translation) @ R(rotation) @ S(scale) @ T(-center)``: maps a point at ``center_um`` to
    ``translation_um``, scaling (first) and rotating about it (see the module docstring)."""
    rs = rotation_from_euler_deg(rotation_deg) @ np.diag(_vec3("scale", scale, positive=True))
    m = np.eye(4)
    m[:3, :3] = rs
    m[:3, 3] = _vec3("translation_um", translation_um) - rs @ _vec3("center_um", center_um)
    return m


def _unit_vector(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


# --------------------------------------------------------------------------- analytic sample
@dataclass(frozen=True)
class PorousSample:
    """An analytic sample: ellipsoids painted in order (a later one overwrites an earlier one).

    The value at a point is the ``value`` of the *last* primitive containing it (0 outside all), and
    its phase is that primitive's ``phase`` (:data:`PHASES` index; background 0 outside all). Grains
    come first, then cracks, then pores, so pores cut through grains and cracks.

    Attributes
    ----------
    centers_um
        ``(m, 3)`` centres in the sample frame (µm, z, y, x).
    semi_axes_um
        ``(m, 3)`` semi-axes (µm), along the columns of ``rotations``.
    rotations
        ``(m, 3, 3)`` rotation matrices; column ``k`` is the direction of semi-axis ``k`` in (z, y, x).
    values
        ``(m,)`` attenuation inside (solid about 1, pores 0).
    phases
        ``(m,)`` int8 phase codes: 1 solid, 2 crack, 3 pore.
    family
        ``"cathode"``, ``"foam"`` or ``"custom"``.
    """

    centers_um: np.ndarray
    semi_axes_um: np.ndarray
    rotations: np.ndarray
    values: np.ndarray
    phases: np.ndarray
    family: str = "custom"

    def __post_init__(self) -> None:
        try:
            c = np.array(self.centers_um, dtype=np.float64).reshape(-1, 3)
            m = c.shape[0]
            a = np.array(self.semi_axes_um, dtype=np.float64).reshape(m, 3)
            r = np.array(self.rotations, dtype=np.float64).reshape(m, 3, 3)
            v = np.array(self.values, dtype=np.float64).reshape(m)
            p = np.array(self.phases).reshape(m)
        except (TypeError, ValueError) as exc:
            raise InputError(f"sample primitives: inconsistent arrays ({exc})") from None
        if not all(np.all(np.isfinite(x)) for x in (c, a, r, v)):
            raise InputError("sample primitives contain NaN or Inf")
        if np.any(a <= 0):
            raise InputError("sample primitives: semi-axes must be positive")
        if m and not np.allclose(np.einsum("mji,mjk->mik", r, r), np.eye(3), atol=1e-6):
            raise InputError("sample primitives: rotations must be orthonormal 3x3 matrices")
        if np.any((p < 1) | (p >= len(PHASES))) or not np.all(p == np.round(p)):
            raise InputError(f"sample primitives: phase codes must be 1..{len(PHASES) - 1} ({PHASES[1:]})")
        for name, arr in (
            ("centers_um", c),
            ("semi_axes_um", a),
            ("rotations", r),
            ("values", v),
            ("phases", p.astype(np.int8)),
        ):
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)

    def __len__(self) -> int:
        return int(self.values.shape[0])

    @classmethod
    def spheres(
        cls, centers_um: Any, radii_um: Any, values: Any, phases: Any = _SOLID, family: str = "custom"
    ) -> PorousSample:
        """Spheres (broadcast ``radii_um``, ``values``, ``phases`` to the number of centres)."""
        c = np.asarray(centers_um, dtype=np.float64).reshape(-1, 3)
        m = c.shape[0]
        r = np.broadcast_to(np.asarray(radii_um, dtype=np.float64), (m,))
        return cls(
            c,
            np.repeat(r[:, None], 3, axis=1),
            np.broadcast_to(np.eye(3), (m, 3, 3)),
            np.broadcast_to(np.asarray(values, dtype=np.float64), (m,)),
            np.broadcast_to(np.asarray(phases), (m,)),
            family,
        )


def _field_fraction(lo: np.ndarray, hi: np.ndarray, rng: np.random.Generator, inside, n: int = 20000) -> float:
    """Monte Carlo fraction of the box ``[lo, hi]`` where ``inside(points)`` holds."""
    pts = lo + (hi - lo) * rng.random((n, 3))
    return float(np.mean(inside(pts)))


def porous_sample(
    family: str = "cathode",
    *,
    size_um: Vec3 = 192.0,
    center_um: Vec3 = 0.0,
    pore_radius_um: tuple[float, float] | None = None,
    porosity: float | None = None,
    seed: Any = 0,
) -> PorousSample:
    """Random analytic porous sample filling a field of view.

    The families:

    ``"cathode"``
        Battery-cathode secondary particle: a slightly ellipsoidal envelope (radius 0.42 of the
        smallest field side, attenuation 1) filled with ~300 overlapping ellipsoidal primary grains
        (attenuation 0.95-1.05, so grain boundaries show), 4 thin disc-shaped cracks (attenuation
        0.1) and spherical pores (attenuation 0) inside the envelope.
    ``"foam"``
        Rock / foam: a core-plug-like matrix (an ellipsoid elongated far beyond the field along z,
        radius 0.45 of the smallest transverse side, attenuation 1) with 25 dense inclusions
        (attenuation 1.5-1.8), 2 thin fractures (attenuation 0) and many pores.

    Pore radii are log-uniform in ``pore_radius_um``; crack half-thickness is 0.4-0.8 times the
    smallest pore radius. Pores are added until their summed volume (overlaps counted twice)
    reaches ``porosity`` times the solid volume within the field; the true phase fractions come out
    of :func:`rasterize_sample` (``return_phases``).

    Parameters
    ----------
    family
        ``"cathode"`` or ``"foam"``.
    size_um, center_um
        Field of view (box) size and centre in the sample frame, µm (scalar or (z, y, x)).
    pore_radius_um
        ``(min, max)`` pore radius in µm; default ``(1, 5)`` (cathode) or ``(1, 10)`` (foam).
    porosity
        Nominal pore volume fraction of the solid, in ``[0, 0.5]``; default 0.08 (cathode), 0.2 (foam).
    seed
        Random seed (anything :func:`numpy.random.default_rng` accepts).

    Returns
    -------
    PorousSample
    """
    family = check_choice("sample family", family, FAMILIES)
    size = _vec3("size_um", size_um, positive=True)
    center = _vec3("center_um", center_um)
    if pore_radius_um is None:
        pore_radius_um = (1.0, 5.0) if family == "cathode" else (1.0, 10.0)
    try:
        r_lo, r_hi = (float(v) for v in pore_radius_um)
        ok = math.isfinite(r_lo) and math.isfinite(r_hi) and 0 < r_lo <= r_hi <= 0.25 * float(size.min())
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(
            f"pore_radius_um must be (min, max) with 0 < min <= max <= a quarter of the smallest "
            f"field side ({0.25 * float(size.min()):g} µm), got {pore_radius_um!r}"
        )
    porosity = (0.08 if family == "cathode" else 0.2) if porosity is None else porosity
    porosity = check_number("porosity", porosity, low=0.0, high=0.5)
    rng = random_generator(seed)
    prims: list[tuple[np.ndarray, np.ndarray, np.ndarray, float, int]] = []
    lo, hi = center - size / 2, center + size / 2

    if family == "cathode":
        R = 0.42 * float(size.min())
        env_semi = R * (1.0 + rng.uniform(-0.05, 0.05, size=3))
        env_rot = _random_rotation(rng)
        env_c = center + rng.uniform(-0.02, 0.02, size=3) * R
        prims.append((env_c, env_semi, env_rot, 1.0, _SOLID))
        for _ in range(300):  # primary grains, entirely inside the envelope
            g = R * rng.uniform(0.10, 0.22)
            semi = g * np.array([1.0, rng.uniform(0.6, 1.0), rng.uniform(0.45, 0.9)])
            u = _unit_vector(rng) * rng.random() ** (1 / 3)
            room = np.maximum(1.0 - semi.max() / env_semi, 0.0)
            pos = env_c + env_rot @ (u * env_semi * room)
            prims.append((pos, semi, _random_rotation(rng), 1.0 + rng.uniform(-0.05, 0.05), _SOLID))
        for _ in range(4):  # cracks: thin discs through the interior
            disc = R * rng.uniform(0.3, 0.6)
            semi = np.array([rng.uniform(0.4, 0.8) * r_lo, disc, disc * rng.uniform(0.7, 1.0)])
            pos = env_c + env_rot @ (rng.normal(size=3) * 0.2 * env_semi)
            prims.append((pos, semi, _random_rotation(rng), 0.1, _CRACK))

        def in_solid(p):  # the envelope
            loc = (p - env_c) @ env_rot
            return np.sum((loc / env_semi) ** 2, axis=1) <= 1.0
    else:
        Rt = 0.45 * float(min(size[1], size[2]))
        mat_semi = np.array([4.0 * float(size[0]), Rt, Rt]) * np.array([1.0, *(1.0 + rng.uniform(-0.04, 0.04, 2))])
        mat_rot = rotation_from_euler_deg((rng.uniform(0, 360), rng.uniform(-1, 1), rng.uniform(-1, 1)))
        mat_c = center + np.array([0.0, *rng.uniform(-0.02, 0.02, size=2) * Rt])
        prims.append((mat_c, mat_semi, mat_rot, 1.0, _SOLID))

        def in_solid(p):  # the matrix
            loc = (p - mat_c) @ mat_rot
            return np.sum((loc / mat_semi) ** 2, axis=1) <= 1.0

        for _ in range(25):  # dense mineral inclusions
            g = rng.uniform(2.0, 8.0) * r_lo
            semi = g * np.array([1.0, rng.uniform(0.5, 1.0), rng.uniform(0.4, 0.9)])
            for _attempt in range(50):
                pos = lo + (hi - lo) * rng.random(3)
                if in_solid(pos[None])[0]:
                    break
            prims.append((pos, semi, _random_rotation(rng), rng.uniform(1.5, 1.8), _SOLID))
        for _ in range(2):  # fractures
            disc = Rt * rng.uniform(0.3, 0.6)
            semi = np.array([rng.uniform(0.4, 0.8) * r_lo, disc, disc * rng.uniform(0.6, 1.0)])
            pos = mat_c + np.array([rng.uniform(-0.3, 0.3) * size[0], *rng.uniform(-0.3, 0.3, 2) * Rt])
            prims.append((pos, semi, _random_rotation(rng), 0.0, _CRACK))

    # ---- pores: log-uniform radii, centres uniform in the solid region of the field (rejection)
    solid_volume = _field_fraction(lo, hi, rng, in_solid) * float(np.prod(size))
    target = porosity * solid_volume
    total = 0.0
    log_lo, log_hi = math.log(r_lo), math.log(r_hi)
    while total < target:
        radii = np.exp(rng.uniform(log_lo, log_hi, size=256))
        pos = lo + (hi - lo) * rng.random((256, 3))
        for r, c in zip(radii[in_solid(pos)], pos[in_solid(pos)]):
            if total >= target:
                break
            prims.append((c, np.full(3, r), np.eye(3), 0.0, _PORE))
            total += 4.0 / 3.0 * math.pi * r**3

    return PorousSample(
        centers_um=np.array([p[0] for p in prims]),
        semi_axes_um=np.array([p[1] for p in prims]),
        rotations=np.array([p[2] for p in prims]),
        values=np.array([p[3] for p in prims]),
        phases=np.array([p[4] for p in prims], dtype=np.int8),
        family=family,
    )


# --------------------------------------------------------------------------- rasterisation
def _check_matrix(matrix: Any) -> np.ndarray:
    if matrix is None:
        return np.eye(4)
    try:
        m = np.array(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"matrix must be a 4x4 array of numbers, got {matrix!r}") from None
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise InputError(f"matrix must be a finite 4x4 homogeneous matrix, got shape {m.shape}")
    if not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0]):
        raise InputError(f"matrix must be affine (last row 0 0 0 1), got last row {m[3].tolist()}")
    if abs(np.linalg.det(m[:3, :3])) < 1e-12:
        raise InputError("matrix is singular (its 3x3 part has no inverse)")
    return m


def rasterize_sample(
    sample: PorousSample,
    shape: Any,
    spacing_um: Vec3,
    matrix: Any = None,
    *,
    supersample: int = 2,
    return_phases: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Evaluate an analytic sample on a voxel grid placed anywhere in the sample frame.

    Voxel ``(i, j, k)`` of the grid is at grid-physical ``p = (i * dz, j * dy, k * dx)`` µm and at
    ``matrix @ [p, 1]`` in the sample frame. Each voxel is the mean of the sample's value at
    ``supersample**3`` points on a regular sub-grid of the voxel (partial volume), mapped through
    ``matrix`` too, so a rotated, scaled grid is rasterised exactly (no resampling). Only voxels a
    primitive's surface may cross are sub-sampled (decided exactly, from the Lipschitz bound of the
    ellipsoid function), so the cost is about one evaluation per voxel and primitive bounding box
    plus ``supersample**3`` per surface voxel. Memory: the output plus a z-slab of
    ``~4 M`` int32 sub-sample labels.

    Parameters
    ----------
    sample
        The analytic sample (:func:`porous_sample` or a hand-made :class:`PorousSample`).
    shape
        ``(nz, ny, nx)`` or one int.
    spacing_um
        Voxel size (µm), scalar or ``(dz, dy, dx)``.
    matrix
        4x4 affine from grid-physical to sample coordinates (default identity).
    supersample
        Sub-samples per axis, 1..8.
    return_phases
        Also return the phase coverage.

    Returns
    -------
    volume : numpy.ndarray
        ``(z, y, x)`` float32 mean value per voxel.
    phases : numpy.ndarray
        Only with ``return_phases``: ``(len(PHASES), z, y, x)`` float32 fraction of each voxel in
        each phase (:data:`PHASES` order), summing to 1.
    """
    if not isinstance(sample, PorousSample):
        raise InputError(f"sample must be a PorousSample, got {type(sample).__name__}")
    shp = _shape3("shape", shape)
    spacing = _vec3("spacing_um", spacing_um, positive=True)
    m = _check_matrix(matrix)
    ss = check_int("supersample", supersample)
    if ss > 8:
        raise ConfigError(f"supersample must be an integer in [1, 8], got {supersample!r}")
    nz, ny, nx = shp
    n_sub = ss**3
    out = np.zeros(shp, dtype=np.float32)
    phases_out = np.zeros((len(PHASES), *shp), dtype=np.float32) if return_phases else None
    n_prim = len(sample)
    lut_val = np.concatenate([sample.values, [0.0]]).astype(np.float32)  # label -1 -> background
    lut_phase = np.concatenate([sample.phases, [0]]).astype(np.int8)

    # index -> sample coordinates: q = B @ idx + m_t,  B = A3 @ diag(spacing)
    B = m[:3, :3] * spacing[None, :]
    Binv = np.linalg.inv(B)
    sub = (np.arange(ss) + 0.5) / ss - 0.5
    offs = np.stack(np.meshgrid(sub, sub, sub, indexing="ij"), -1).reshape(-1, 3)  # (S, 3) voxel units
    d_sample = offs @ B.T  # (S, 3) sub-sample displacement in the sample frame
    h = float(np.max(np.linalg.norm(d_sample, axis=1))) if ss > 1 else 0.0

    # Per primitive: L = R^T B (index -> local), b = R^T (m_t - c); index-space bounding boxes.
    rot_t = np.transpose(sample.rotations, (0, 2, 1))
    L = rot_t @ B  # (m, 3, 3)
    b = np.einsum("mij,mj->mi", rot_t, m[:3, 3][None, :] - sample.centers_um)
    d_local = np.einsum("mij,sj->msi", rot_t, d_sample) if n_prim else np.zeros((0, n_sub, 3))  # (m, S, 3)
    c_idx = (sample.centers_um - m[:3, 3][None, :]) @ Binv.T  # (m, 3) centre in index units
    half = np.linalg.norm(Binv[None, :, :] @ (sample.rotations * sample.semi_axes_um[:, None, :]), axis=2)
    box_lo = np.maximum(np.floor(c_idx - half - 0.5).astype(np.int64), 0)
    box_hi = np.minimum(np.ceil(c_idx + half + 0.5).astype(np.int64) + 1, np.array(shp))
    alive = np.all(box_hi > box_lo, axis=1)
    margin = h / sample.semi_axes_um.min(axis=1)  # bound on |rho(sub-sample) - rho(centre)|
    in2 = np.where(margin < 1.0, (1.0 - margin) ** 2, -1.0)  # rho^2 <= in2: every sub-sample inside
    out2 = (1.0 + margin) ** 2  # rho^2 > out2: every sub-sample outside
    inv_semi = 1.0 / sample.semi_axes_um

    slab = max(1, _POINTS_PER_SLAB // max(1, n_sub * ny * nx))
    for s0 in range(0, nz, slab):
        s1 = min(nz, s0 + slab)
        labels = np.full((n_sub, s1 - s0, ny, nx), -1, dtype=np.int32)
        todo = np.nonzero(alive & (box_lo[:, 0] < s1) & (box_hi[:, 0] > s0))[0]
        for p in todo:
            z0, z1 = max(int(box_lo[p, 0]), s0), min(int(box_hi[p, 0]), s1)
            (y0, x0), (y1, x1) = box_lo[p, 1:], box_hi[p, 1:]
            Lp = L[p]
            base = Lp @ np.array([z0, y0, x0], dtype=np.float64) + b[p]
            zi = np.arange(z1 - z0, dtype=np.float32)
            yi = np.arange(y1 - y0, dtype=np.float32)
            xi = np.arange(x1 - x0, dtype=np.float32)
            loc = []
            rho2 = None
            for k in range(3):
                lk = ((np.float32(Lp[k, 0]) * zi)[:, None, None] + (np.float32(Lp[k, 1]) * yi)[None, :, None]) + (
                    np.float32(Lp[k, 2]) * xi + np.float32(base[k])
                )[None, None, :]
                loc.append(lk)
                t = (lk * np.float32(inv_semi[p, k])) ** 2
                rho2 = t if rho2 is None else rho2 + t
            view = labels[:, z0 - s0 : z1 - s0, y0:y1, x0:x1]
            inside = rho2 <= in2[p]
            if inside.any():
                view[:, inside] = p
            edge = (rho2 > in2[p]) & (rho2 <= out2[p])
            if n_sub == 1:
                continue
            if edge.any():
                r2: Any = None
                for k in range(3):
                    t = (
                        (loc[k][edge][None, :] + d_local[p, :, k].astype(np.float32)[:, None])
                        * np.float32(inv_semi[p, k])
                    ) ** 2
                    r2 = t if r2 is None else r2 + t
                hit = r2 <= 1.0
                vals = view[:, edge]
                vals[hit] = p
                view[:, edge] = vals
        out[s0:s1] = lut_val[labels].mean(axis=0, dtype=np.float64)
        if phases_out is not None:
            ph = lut_phase[labels]
            for k in range(len(PHASES)):
                phases_out[k, s0:s1] = np.mean(ph == k, axis=0)
    return (out, phases_out) if return_phases else out  # type: ignore[return-value]  # the labels only with return_phases


# --------------------------------------------------------------------------- the pair
@dataclass(frozen=True)
class MultiscalePair:
    """A simulated LFOV volume, an HR ROI volume inside it, and the exact transform between them.

    Attributes
    ----------
    hr, lfov
        ``(z, y, x)`` float32 volumes (attenuation: solid about 1, pores 0), blurred and noisy.
    hr_spacing_um, lfov_spacing_um
        Voxel sizes ``(dz, dy, dx)`` in µm.
    true_matrix
        4x4 float64, HR physical -> LFOV physical (module docstring), exact.
    prior_matrix
        4x4 float64, translation only: what the stage positions say.
    hr_stage_position_um, lfov_stage_position_um
        ``(3,)`` stage coordinates of each volume's centre (µm, z, y, x); the prior's translation is
        ``hr_stage - lfov_stage + c_lfov - c_hr``.
    rotation_deg, scale, translation_um
        The drawn DOF: angles about z, y, x (degrees), per-axis scales, and the LFOV position of the
        HR volume's centre (µm).
    prior_error_um
        ``t_prior - t``: where the prior puts the HR centre, minus where it is (µm).
    phase_fractions
        Volume fraction of each phase (:data:`PHASES`) in the HR ROI, from the analytic sample
        (``supersample**3`` points per HR voxel).
    sample
        The analytic sample (in the LFOV physical frame).
    params
        The simulation parameters (JSON-able).
    """

    hr: np.ndarray
    lfov: np.ndarray
    hr_spacing_um: tuple[float, float, float]
    lfov_spacing_um: tuple[float, float, float]
    true_matrix: np.ndarray
    prior_matrix: np.ndarray
    hr_stage_position_um: np.ndarray
    lfov_stage_position_um: np.ndarray
    rotation_deg: np.ndarray
    scale: np.ndarray
    translation_um: np.ndarray
    prior_error_um: np.ndarray
    phase_fractions: dict[str, float]
    sample: PorousSample = field(repr=False)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def pore_fraction(self) -> float:
        """Pore volume fraction of the HR ROI (phase ``"pore"``; cracks not included)."""
        return self.phase_fractions["pore"]

    @property
    def porosity(self) -> float:
        """Pores and cracks over all material (solid + crack + pore) in the HR ROI."""
        f = self.phase_fractions
        mat = f["solid"] + f["crack"] + f["pore"]
        return (f["pore"] + f["crack"]) / mat if mat > 0 else 0.0

    @property
    def hr_center_um(self) -> np.ndarray:
        """Physical centre of the HR volume in its own frame, ``(n - 1) / 2 * spacing``."""
        return (np.array(self.hr.shape) - 1) / 2.0 * np.array(self.hr_spacing_um)

    @property
    def lfov_center_um(self) -> np.ndarray:
        """Physical centre of the LFOV volume in its own frame."""
        return (np.array(self.lfov.shape) - 1) / 2.0 * np.array(self.lfov_spacing_um)


def _roi_fit_check(hr_shape, hr_sp, lfov_shape, lfov_sp, roi_center, max_rot_deg, max_scale, max_trans_um):
    """ConfigError unless the HR ROI lies inside the LFOV field for *every* draw of the transform.

    The HR ROI (outer voxel faces) must lie inside the box of LFOV voxel centres,
    ``[0, (n_lfov - 1) * spacing]`` per axis. A bound valid for every draw: the ROI corners relative
    to its centre ``v`` (``|v_k| <= h_k``) become ``R S v`` with ``|R S v - S v| <= 2 sin(phi / 2) |S v|``
    (``phi = min(3 * max_rotation, pi)`` bounds the total rotation angle).
    """
    h = np.array(hr_shape) * hr_sp / 2.0 * (1.0 + max_scale)
    phi = min(3.0 * math.radians(max_rot_deg), math.pi)
    reach = h + 2.0 * math.sin(phi / 2.0) * float(np.linalg.norm(h)) + max_trans_um
    field_hi = (np.array(lfov_shape) - 1) * lfov_sp
    need_lo, need_hi = roi_center - reach, roi_center + reach
    for k, ax in enumerate("zyx"):
        if need_lo[k] < 0 or need_hi[k] > field_hi[k]:
            raise ConfigError(
                f"the HR ROI ({hr_shape[k]} voxels of {hr_sp[k]:g} µm along {ax}, centred at "
                f"{roi_center[k]:g} µm in the LFOV frame, with rotation up to {max_rot_deg:g} deg, scale up to "
                f"{max_scale:g} and translation up to {max_trans_um[k]:g} µm) may reach [{need_lo[k]:.2f}, "
                f"{need_hi[k]:.2f}] µm along {ax}, outside the LFOV field [0, {field_hi[k]:g}] µm "
                f"({lfov_shape[k]} voxels of {lfov_sp[k]:g} µm); use a smaller or more central ROI, a larger "
                "LFOV or smaller transform ranges"
            )


def simulate_multiscale_pair(
    *,
    family: str = "cathode",
    hr_shape: Any = (64, 64, 64),
    hr_spacing_um: Vec3 = 1.0,
    lfov_shape: Any = (48, 48, 48),
    lfov_spacing_um: Vec3 = 4.0,
    max_rotation_deg: float = 3.0,
    max_scale: float = 0.02,
    max_translation_lfov_vox: float = 3.0,
    prior_error_lfov_vox: float = 2.0,
    psf_sigma_lfov_vox: float = 0.7,
    noise: float = 0.02,
    seed: Any = 0,
    roi_center_um: Vec3 | None = None,
    hr_psf_sigma_hr_vox: float = 0.5,
    hr_noise: float | None = None,
    supersample_hr: int = 2,
    supersample_lfov: int | None = None,
    pore_radius_um: tuple[float, float] | None = None,
    porosity: float | None = None,
) -> MultiscalePair:
    """Simulate an LFOV scan of a porous sample and an HR ROI scan inside it, with exact ground truth.

    The analytic sample (:func:`porous_sample`, filling the LFOV field, described in the LFOV
    physical frame) is rasterised twice with partial-volume supersampling: on the LFOV grid (identity)
    and on the HR grid through ``true_matrix`` (no resampling). The LFOV is then blurred by a Gaussian
    PSF and gets Gaussian noise; the HR volume a sharper PSF and less noise. See the module docstring
    for the transform and prior conventions.

    Parameters
    ----------
    family
        Sample family, ``"cathode"`` or ``"foam"``.
    hr_shape, hr_spacing_um
        HR grid ``(nz, ny, nx)`` and voxel size (µm, scalar or (dz, dy, dx)).
    lfov_shape, lfov_spacing_um
        LFOV grid and voxel size.
    max_rotation_deg
        Each of the three angles is uniform in ``±max_rotation_deg``, in ``[0, 30]``.
    max_scale
        Each per-axis scale is ``1 + uniform(±max_scale)``, ``max_scale`` in ``[0, 0.2]``.
    max_translation_lfov_vox
        The HR centre lies at ``roi_center_um + uniform(±max_translation_lfov_vox)`` LFOV voxels per axis.
    prior_error_lfov_vox
        Length of the stage-position error of the prior, ``[0.5, 1] * prior_error_lfov_vox`` LFOV
        voxels, random direction.
    psf_sigma_lfov_vox
        Gaussian PSF sigma of the LFOV in LFOV voxels (0: none), in ``[0, 10]``.
    noise
        Gaussian noise sigma of the LFOV (solid attenuation is about 1).
    seed
        Random seed (anything :func:`numpy.random.default_rng` accepts). The sample depends only on
        the seed, the family, the LFOV field and the pore settings, not on the transform ranges.
    roi_center_um
        Nominal LFOV position of the HR centre (µm); default the LFOV centre.
    hr_psf_sigma_hr_vox, hr_noise
        HR PSF sigma (HR voxels) and noise sigma (default ``noise / 2``).
    supersample_hr, supersample_lfov
        Sub-samples per axis; the LFOV default makes its sub-sample spacing about the HR voxel size
        (``ceil(lfov / hr spacing)``, 2..6).
    pore_radius_um, porosity
        Passed to :func:`porous_sample`; the default pore radii are ``(1, 5)`` (cathode) or ``(1, 10)``
        (foam) HR voxels.

    Returns
    -------
    MultiscalePair

    Raises
    ------
    ConfigError
        Parameters out of range, or the HR ROI could leave the LFOV field for some draw.
    """
    family = check_choice("sample family", family, FAMILIES)
    hr_shp = _shape3("hr_shape", hr_shape, low=2)
    lf_shp = _shape3("lfov_shape", lfov_shape, low=2)
    hr_sp = _vec3("hr_spacing_um", hr_spacing_um, positive=True)
    lf_sp = _vec3("lfov_spacing_um", lfov_spacing_um, positive=True)
    max_rot = check_number("max_rotation_deg", max_rotation_deg, low=0.0, high=30.0)
    max_scale = check_number("max_scale", max_scale, low=0.0, high=0.2)
    max_trans = check_number("max_translation_lfov_vox", max_translation_lfov_vox, low=0.0)
    prior_err = check_number("prior_error_lfov_vox", prior_error_lfov_vox, low=0.0)
    psf = check_number("psf_sigma_lfov_vox", psf_sigma_lfov_vox, low=0.0, high=10.0)
    noise = check_number("noise", noise, low=0.0)
    hr_psf = check_number("hr_psf_sigma_hr_vox", hr_psf_sigma_hr_vox, low=0.0, high=10.0)
    hr_noise = noise / 2.0 if hr_noise is None else check_number("hr_noise", hr_noise, low=0.0)
    ss_hr = check_int("supersample_hr", supersample_hr)
    if supersample_lfov is None:
        ss_lf = int(min(6, max(2, math.ceil(float(np.max(lf_sp / hr_sp)) - 1e-9))))
    else:
        ss_lf = check_int("supersample_lfov", supersample_lfov)
    for name, v in (("supersample_hr", ss_hr), ("supersample_lfov", ss_lf)):
        if v > 8:
            raise ConfigError(f"{name} must be an integer in [1, 8], got {v}")
    c_hr = (np.array(hr_shp) - 1) / 2.0 * hr_sp
    c_lf = (np.array(lf_shp) - 1) / 2.0 * lf_sp
    roi_c = c_lf.copy() if roi_center_um is None else _vec3("roi_center_um", roi_center_um)
    if pore_radius_um is None:
        pore_radius_um = (float(hr_sp.min()), (5.0 if family == "cathode" else 10.0) * float(hr_sp.max()))
    _roi_fit_check(hr_shp, hr_sp, lf_shp, lf_sp, roi_c, max_rot, max_scale, max_trans * lf_sp)

    master = random_generator(seed)
    s_sample, s_dof, s_lnoise, s_hnoise = (int(v) for v in master.integers(0, 2**63 - 1, size=4))
    sample = porous_sample(
        family,
        size_um=np.array(lf_shp) * lf_sp,
        center_um=c_lf,
        pore_radius_um=pore_radius_um,
        porosity=porosity,
        seed=s_sample,
    )

    rng = np.random.default_rng(s_dof)
    angles = rng.uniform(-max_rot, max_rot, size=3)
    scale = 1.0 + rng.uniform(-max_scale, max_scale, size=3)
    trans = roi_c + rng.uniform(-max_trans, max_trans, size=3) * lf_sp
    true_m = compose_matrix(angles, scale, trans, c_hr)  # type: ignore[arg-type]  # arrays of three
    err_vox = _unit_vector(rng) * rng.uniform(0.5, 1.0) * prior_err
    err_um = err_vox * lf_sp
    lfov_stage = rng.uniform(-5000.0, 5000.0, size=3)
    hr_stage = lfov_stage + (trans + err_um - c_lf)
    prior_m = np.eye(4)
    prior_m[:3, 3] = (hr_stage - lfov_stage) + c_lf - c_hr

    from scipy.ndimage import gaussian_filter

    hr_clean, phases = rasterize_sample(sample, hr_shp, hr_sp, true_m, supersample=ss_hr, return_phases=True)  # type: ignore[arg-type]  # an array of three
    fractions = {name: float(phases[k].mean(dtype=np.float64)) for k, name in enumerate(PHASES)}
    del phases
    lf_clean = rasterize_sample(sample, lf_shp, lf_sp, None, supersample=ss_lf)  # type: ignore[arg-type]  # an array of three
    hr = hr_clean if hr_psf == 0 else gaussian_filter(hr_clean, hr_psf, mode="nearest")
    lf = lf_clean if psf == 0 else gaussian_filter(lf_clean, psf, mode="nearest")
    hr = gaussian_noise(hr, hr_noise, seed=s_hnoise)
    lf = gaussian_noise(lf, noise, seed=s_lnoise)

    params = {
        "family": family,
        "hr_shape": list(hr_shp),
        "hr_spacing_um": hr_sp.tolist(),
        "lfov_shape": list(lf_shp),
        "lfov_spacing_um": lf_sp.tolist(),
        "max_rotation_deg": max_rot,
        "max_scale": max_scale,
        "max_translation_lfov_vox": max_trans,
        "prior_error_lfov_vox": prior_err,
        "psf_sigma_lfov_vox": psf,
        "noise": noise,
        "seed": int(seed) if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) else repr(seed),
        "roi_center_um": roi_c.tolist(),
        "hr_psf_sigma_hr_vox": hr_psf,
        "hr_noise": hr_noise,
        "supersample_hr": ss_hr,
        "supersample_lfov": ss_lf,
        "pore_radius_um": [float(v) for v in pore_radius_um],
        "porosity": porosity,
        "n_primitives": len(sample),
    }
    return MultiscalePair(
        hr=np.ascontiguousarray(hr, dtype=np.float32),
        lfov=np.ascontiguousarray(lf, dtype=np.float32),
        hr_spacing_um=tuple(float(v) for v in hr_sp),  # type: ignore[arg-type]  # three spacings, one per axis
        lfov_spacing_um=tuple(float(v) for v in lf_sp),  # type: ignore[arg-type]  # three spacings, one per axis
        true_matrix=true_m,
        prior_matrix=prior_m,
        hr_stage_position_um=hr_stage,
        lfov_stage_position_um=lfov_stage,
        rotation_deg=angles,
        scale=scale,
        translation_um=trans,
        prior_error_um=err_um,
        phase_fractions=fractions,
        sample=sample,
        params=params,
    )
