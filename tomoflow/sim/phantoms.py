"""Synthetic 3-D phantoms for nano-tomography: gold nanoparticle, battery cathode, Shepp-Logan.

All phantoms are float32 NumPy volumes ``(z, y, x)`` holding the linear attenuation coefficient
*per voxel* (so a sum along a ray is the dimensionless line integral ``-log(I / I0)``).

Scale
-----
Geometry is isotropic and measured in units of the *half-width* ``L = min(ny, nx) / 2`` voxels of the
transverse (``y, x``) plane, centred on the volume centre ``((n - 1) / 2)`` on each axis. The rotation
axis is ``z``; a volume with few slices (``nz < ny``) is a slab cut through the same object (harmless
in parallel beam, where detector rows are independent), while the object always fits inside the
transverse field of view at every angle (no truncated projections).

Attenuation parameters are given per half-width: ``attenuation = 2.5`` means that a path of ``L``
voxels through the material integrates to 2.5, i.e. a voxel value of ``2.5 / L``. Line integrals are
therefore the same at every size; with the defaults the largest line integral through each phantom is
about 3 (gold), 3 (cathode) and 2 (Shepp-Logan), so ``exp(-p)`` stays measurable. Multiply the
volume (or pass another ``attenuation`` / ``scale``) for other contrasts.

Seeds
-----
Random phantoms take ``seed`` (anything :func:`numpy.random.default_rng` accepts) and are
deterministic for a given ``(shape, seed)`` and parameters.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tomoflow._checks import check_int, check_number, random_generator
from tomoflow.backend import fft_workers
from tomoflow.errors import ConfigError
from tomoflow.sim.analytic import rasterize_ellipsoids

__all__ = [
    "gold_particle",
    "cathode_particle",
    "aggregate_particles",
    "shepp_logan_3d",
    "shepp_logan_ellipsoids",
    "shepp_logan_ellipses",
    "SHEPP_LOGAN_3D",
    "SHEPP_LOGAN_2D",
]

Shape = int | tuple[int, int, int]

# 3-D Shepp-Logan head phantom: ellipsoid geometry of Kak & Slaney (1988, p. 102) with the
# higher-contrast "modified" intensities of Yu, Ye & Wang (2004). Normalised coordinates in
# [-1, 1] with y pointing *up* (textbook orientation); rotations about z only.
# Columns: value, a, b, c, x0, y0, z0, phi_deg (tomoflow.sim.analytic.ELLIPSOID_COLUMNS).
SHEPP_LOGAN_3D: np.ndarray = np.array(
    [
        [1.0, 0.6900, 0.920, 0.900, 0.00, 0.000, 0.000, 0.0],
        [-0.8, 0.6624, 0.874, 0.880, 0.00, 0.000, 0.000, 0.0],
        [-0.2, 0.4100, 0.160, 0.210, -0.22, 0.000, -0.250, 108.0],
        [-0.2, 0.3100, 0.110, 0.220, 0.22, 0.000, -0.250, 72.0],
        [0.2, 0.2100, 0.250, 0.500, 0.00, 0.350, -0.250, 0.0],
        [0.2, 0.0460, 0.046, 0.046, 0.00, 0.100, -0.250, 0.0],
        [0.1, 0.0460, 0.023, 0.020, -0.08, -0.650, -0.250, 0.0],
        [0.1, 0.0460, 0.023, 0.020, 0.06, -0.650, -0.250, 90.0],
        [0.2, 0.0560, 0.040, 0.100, 0.06, -0.105, 0.625, 90.0],
        [-0.2, 0.0560, 0.056, 0.100, 0.00, 0.100, 0.625, 0.0],
    ],
    dtype=np.float64,
)
SHEPP_LOGAN_3D.setflags(write=False)

# 2-D modified Shepp-Logan (Toft 1996 intensities). Columns: value, a, b, x0, y0, phi_deg
# (tomoflow.sim.analytic.ELLIPSE_COLUMNS), normalised coordinates, y up.
SHEPP_LOGAN_2D: np.ndarray = np.array(
    [
        [1.0, 0.6900, 0.9200, 0.00, 0.0000, 0.0],
        [-0.8, 0.6624, 0.8740, 0.00, -0.0184, 0.0],
        [-0.2, 0.1100, 0.3100, 0.22, 0.0000, -18.0],
        [-0.2, 0.1600, 0.4100, -0.22, 0.0000, 18.0],
        [0.1, 0.2100, 0.2500, 0.00, 0.3500, 0.0],
        [0.1, 0.0460, 0.0460, 0.00, 0.1000, 0.0],
        [0.1, 0.0460, 0.0460, 0.00, -0.1000, 0.0],
        [0.1, 0.0460, 0.0230, -0.08, -0.6050, 0.0],
        [0.1, 0.0230, 0.0230, 0.00, -0.6060, 0.0],
        [0.1, 0.0230, 0.0460, 0.06, -0.6050, 0.0],
    ],
    dtype=np.float64,
)
SHEPP_LOGAN_2D.setflags(write=False)

# Default attenuation scale of Shepp-Logan, per half-width for a table value of 1.0: the largest
# line integral of the 3-D phantom is then about 2.2 (it is about 0.55 * scale).
_SHEPP_SCALE = 4.0


# --------------------------------------------------------------------------- helpers
def _shape3(shape: Shape) -> tuple[int, int, int]:
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),) * 3
    try:
        out = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise ConfigError(f"shape must be an int or (nz, ny, nx), got {shape!r}") from None
    if len(out) != 3 or min(out) < 1 or any(o != s for o, s in zip(out, shape)):
        raise ConfigError(f"shape must be three positive integers (nz, ny, nx), got {shape!r}")
    return out


def _half_width(shape: tuple[int, int, int]) -> float:
    return min(shape[1], shape[2]) / 2.0


def _radius_range(name: str, value: Any, hi: float = 0.3) -> tuple[float, float]:
    """A ``(min, max)`` radius range in half-widths with ``0 < min <= max <= hi``."""
    try:
        lo_r, hi_r = (float(v) for v in value)
        ok = 0 < lo_r <= hi_r <= hi
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"{name} must be (min, max) with 0 < min <= max <= {hi}, got {value!r}")
    return lo_r, hi_r


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Uniformly distributed 3x3 rotation matrix (QR of a Gaussian matrix)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))[None, :]
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _axes_coords(shape: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel-centre coordinates (voxels) relative to the volume centre, as open (z, y, x) grids."""
    return tuple(  # type: ignore[return-value]  # three grids, one per axis
        (np.arange(n, dtype=np.float32) - (n - 1) / 2.0).reshape([-1 if i == k else 1 for i in range(3)])
        for k, n in enumerate(shape)
    )


# Facet normals of a cubic (fcc) crystal: {111}, {100}, {110}.
_N111 = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float) / np.sqrt(3)
_N100 = np.vstack([np.eye(3), -np.eye(3)])
_N110 = np.array([[1, 1, 0], [1, -1, 0], [1, 0, 1], [1, 0, -1], [0, 1, 1], [0, 1, -1]], float) / np.sqrt(2)
_N110 = np.vstack([_N110, -_N110])


def _crystal_facets(rng: np.random.Generator, radius: float, roughness: float) -> tuple[np.ndarray, np.ndarray]:
    """Random fcc-like convex polyhedron: facet normals (k, 3) in (z, y, x) order and distances (k,).

    {111} facets at ``radius``, truncated by {100} (always) and {110} (half of the particles)
    facets at random larger distances; every facet distance jittered by ``roughness`` (relative).
    """
    normals = [_N111, _N100]
    dists = [np.full(8, 1.0), np.full(6, rng.uniform(1.05, 1.35))]
    if rng.random() < 0.5:
        normals.append(_N110)
        dists.append(np.full(12, rng.uniform(1.15, 1.4)))
    n = np.vstack(normals) @ _random_rotation(rng).T
    d = np.concatenate(dists) * radius * (1.0 + roughness * rng.uniform(-1.0, 1.0, size=n.shape[0]))
    return n, d


def _paint_polyhedron(
    vol: np.ndarray, centre: np.ndarray, normals: np.ndarray, dists: np.ndarray, value: float
) -> None:
    """Add ``value`` x coverage of a convex polyhedron (soft one-voxel edge) into ``vol`` (in place).

    ``centre`` is in voxel coordinates relative to the volume centre, (z, y, x).
    """
    shape = vol.shape
    reach = float(np.max(dists)) * np.sqrt(3.0) + 2.0  # bounding radius of the polyhedron
    sl = []
    for k in range(3):
        c_idx = centre[k] + (shape[k] - 1) / 2.0
        lo, hi = max(int(np.floor(c_idx - reach)), 0), min(int(np.ceil(c_idx + reach)) + 1, shape[k])
        if lo >= hi:
            return
        sl.append(slice(lo, hi))
    z = (np.arange(sl[0].start, sl[0].stop, dtype=np.float32) - (shape[0] - 1) / 2.0 - centre[0])[:, None, None]
    y = (np.arange(sl[1].start, sl[1].stop, dtype=np.float32) - (shape[1] - 1) / 2.0 - centre[1])[None, :, None]
    x = (np.arange(sl[2].start, sl[2].stop, dtype=np.float32) - (shape[2] - 1) / 2.0 - centre[2])[None, None, :]
    # Signed distance (voxels) to the polyhedron surface: exact inside, a lower bound outside.
    f = np.full((z.shape[0], y.shape[1], x.shape[2]), -np.inf, dtype=np.float32)
    for nrm, d in zip(normals.astype(np.float32), dists.astype(np.float32)):
        np.maximum(f, nrm[0] * z + nrm[1] * y + nrm[2] * x - d, out=f)
    vol[tuple(sl)] += np.float32(value) * np.clip(0.5 - f, 0.0, 1.0)


# --------------------------------------------------------------------------- gold
def gold_particle(
    shape: Shape,
    *,
    seed: Any = 0,
    radius: float = 0.45,
    attenuation: float = 2.5,
    n_satellites: int = 3,
    satellite_radius: tuple[float, float] = (0.06, 0.14),
    roughness: float = 0.04,
) -> np.ndarray:
    """Faceted gold nanoparticle (convex fcc-like polyhedron) with optional small satellites.

    The main particle is the intersection of half-spaces with crystal-like normals ({111} facets,
    truncated by {100} and sometimes {110} facets, random orientation and per-facet jitter) around a
    centre near the volume centre. Edges are anti-aliased (a one-voxel linear partial-volume ramp
    of the signed distance to the surface).

    Parameters
    ----------
    shape
        ``(nz, ny, nx)`` or one int for a cube.
    seed
        Random seed (anything :func:`numpy.random.default_rng` accepts).
    radius
        Distance from the centre to the {111} facets, in half-widths ``L = min(ny, nx) / 2``.
        Must be in ``[0.05, 0.55]`` so the particle stays inside the field of view.
    attenuation
        Attenuation per half-width of the particle material (voxel value ``attenuation / L``). The
        default makes the largest line integral about 3 at any size.
    n_satellites
        Number of small particles placed around the main one (0 for none).
    satellite_radius
        ``(min, max)`` facet radius of the satellites, in half-widths.
    roughness
        Relative random jitter of each facet distance.

    Returns
    -------
    numpy.ndarray
        ``(z, y, x)`` float32 attenuation per voxel, 0 outside the particles.
    """
    shp = _shape3(shape)
    radius = check_number("radius", radius, low=0.05, high=0.55)
    attenuation = check_number("attenuation", attenuation, low=0.0)
    roughness = check_number("roughness", roughness, low=0.0, high=0.3)
    n_satellites = check_int("n_satellites", n_satellites, low=0)
    s_lo, s_hi = _radius_range("satellite_radius", satellite_radius)
    rng = random_generator(seed)
    L = _half_width(shp)
    mu = attenuation / L
    vol = np.zeros(shp, dtype=np.float32)

    centre = np.array([0.0, *rng.uniform(-0.05, 0.05, size=2)]) * L
    normals, dists = _crystal_facets(rng, radius * L, roughness)
    _paint_polyhedron(vol, centre, normals, dists, mu)
    main_reach = float(np.max(dists)) * 1.3  # bounds the vertex distance of these truncated octahedra

    placed: list[tuple[np.ndarray, float]] = [(centre, main_reach)]
    for _ in range(int(n_satellites)):
        r_s = rng.uniform(s_lo, s_hi) * L
        n_s, d_s = _crystal_facets(rng, r_s, roughness)
        reach = float(np.max(d_s)) * 1.3
        for _attempt in range(200):
            # In-plane position inside the disk that stays in the field of view at every angle.
            rad = np.sqrt(rng.random()) * (0.92 * L - reach)
            ang = rng.uniform(0, 2 * np.pi)
            zmax = max((shp[0] - 1) / 2.0 - reach, 0.0)
            pos = np.array([rng.uniform(-zmax, zmax), rad * np.sin(ang), rad * np.cos(ang)])
            if all(np.linalg.norm(pos - c) > reach + r + 1.0 for c, r in placed):
                _paint_polyhedron(vol, pos, n_s, d_s, mu)
                placed.append((pos, reach))
                break
    # Overlapping soft edges of different particles could exceed the material value.
    np.minimum(vol, np.float32(mu), out=vol)
    return vol


# --------------------------------------------------------------------------- cathode
def cathode_particle(
    shape: Shape,
    *,
    seed: Any = 0,
    porosity: float = 0.03,
    radius: float = 0.8,
    attenuation: float = 1.8,
    n_grains: int = 80,
    grain_contrast: float = 0.05,
    n_cracks: int = 3,
    crack_width: float = 1.0,
    crack_density: float = 0.1,
    pore_radius: tuple[float, float] = (0.03, 0.07),
    return_labels: bool = False,
) -> np.ndarray | tuple[np.ndarray, dict[str, np.ndarray]]:
    """Battery-cathode secondary particle: grains, cracks and pores.

    A slightly ellipsoidal aggregate (random semi-axes within 6 % of ``radius``, anti-aliased
    surface) of Voronoi primary grains, each with a density differing by up to ``grain_contrast``;
    ``n_cracks`` thin planar disc-shaped low-density sheets through the interior; and spherical pores
    of zero density added until they occupy ``porosity`` of the particle volume.

    Parameters
    ----------
    shape
        ``(nz, ny, nx)`` or one int for a cube.
    seed
        Random seed (anything :func:`numpy.random.default_rng` accepts).
    porosity
        Target pore volume fraction of the particle, in ``[0, 0.4]``. The achieved value
        ``labels["pores"].sum() / labels["particle"].sum()`` is within one pore volume of it (above).
    radius
        Mean particle radius in half-widths ``L = min(ny, nx) / 2``, in ``[0.1, 0.9]``.
    attenuation
        Attenuation per half-width of the solid (voxel value ``attenuation / L`` on average). The
        default makes the largest line integral about 3 at any size.
    n_grains
        Number of primary grains (Voronoi cells).
    grain_contrast
        Maximum relative density difference of a grain from the mean, in ``[0, 0.5]``.
    n_cracks
        Number of planar cracks.
    crack_width
        Crack thickness in voxels (soft-edged).
    crack_density
        Density inside a crack relative to the surrounding grain, in ``[0, 1]``.
    pore_radius
        ``(min, max)`` pore radius in half-widths; pores are never smaller than 1 voxel in radius.
    return_labels
        Also return the label volumes.

    Returns
    -------
    volume : numpy.ndarray
        ``(z, y, x)`` float32 attenuation per voxel.
    labels : dict of numpy.ndarray
        Only with ``return_labels``: ``"particle"`` (bool, voxel centre inside the particle surface),
        ``"pores"`` (bool, voxel centre inside a pore; density exactly 0 there), ``"cracks"`` (bool,
        crack covers at least half the voxel) and ``"grains"`` (int32 grain id 1..n, 0 outside).
    """
    shp = _shape3(shape)
    porosity = check_number("porosity", porosity, low=0.0, high=0.4)
    radius = check_number("radius", radius, low=0.1, high=0.9)
    attenuation = check_number("attenuation", attenuation, low=0.0)
    grain_contrast = check_number("grain_contrast", grain_contrast, low=0.0, high=0.5)
    crack_width = check_number("crack_width", crack_width, low=0.0)
    crack_density = check_number("crack_density", crack_density, low=0.0, high=1.0)
    n_grains = check_int("n_grains", n_grains, low=1)
    n_cracks = check_int("n_cracks", n_cracks, low=0)
    p_lo, p_hi = _radius_range("pore_radius", pore_radius)

    from scipy.spatial import cKDTree

    rng = random_generator(seed)
    L = _half_width(shp)
    R = radius * L
    mu = attenuation / L
    nz, ny, nx = shp

    # ---- envelope: rotated ellipsoid, semi-axes within 6 % of R
    semi = R * (1.0 + rng.uniform(-0.06, 0.06, size=3))
    rot = _random_rotation(rng)  # columns: the ellipsoid's axes in (z, y, x)
    reach = float(semi.max()) + 2.0
    sl = tuple(
        slice(max(int(np.floor((n - 1) / 2.0 - reach)), 0), min(int(np.ceil((n - 1) / 2.0 + reach)) + 1, n))
        for n in shp
    )
    # ---- all random geometry first (grains, cracks), so the voxels can be painted slab by slab
    seeds_local = rng.normal(size=(int(n_grains), 3))
    seeds_local *= (rng.random(int(n_grains)) ** (1 / 3) / np.linalg.norm(seeds_local, axis=1))[:, None]
    seeds = (seeds_local * semi[None, :]) @ rot.T  # Voronoi grain seeds, uniformly inside the envelope
    grain_density = mu * (1.0 + grain_contrast * rng.uniform(-1.0, 1.0, size=int(n_grains)))
    discs = []  # cracks: thin planar discs through the interior (point, unit normal, disc radius)
    for _ in range(int(n_cracks)):
        p0 = ((rng.normal(size=3) * 0.2) * semi) @ rot.T
        nrm = rng.normal(size=3)
        nrm /= np.linalg.norm(nrm)
        discs.append((p0.astype(np.float32), nrm.astype(np.float32), rng.uniform(0.3, 0.7) * R))
    tree = cKDTree(seeds)

    vol = np.zeros(shp, dtype=np.float32)
    particle = np.zeros(shp, dtype=bool)
    grains: Any = np.zeros(shp, dtype=np.int32) if return_labels else None
    cracks: Any = np.zeros(shp, dtype=bool) if return_labels else None
    yc, xc = (np.arange(s.start, s.stop, dtype=np.float32) - (n - 1) / 2.0 for s, n in zip(sl[1:], shp[1:]))
    rot32 = rot.astype(np.float32)
    slab = max(1, (1 << 22) // max(1, yc.size * xc.size))  # ~4 M voxels per slab: memory independent of size
    for z0 in range(sl[0].start, sl[0].stop, slab):
        z1 = min(z0 + slab, sl[0].stop)
        zc = np.arange(z0, z1, dtype=np.float32) - (nz - 1) / 2.0
        zz, yy, xx = np.meshgrid(zc, yc, xc, indexing="ij")
        local = [rot32[0, k] * zz + rot32[1, k] * yy + rot32[2, k] * xx for k in range(3)]
        rho = np.sqrt(sum((lc / np.float32(s)) ** 2 for lc, s in zip(local, semi)))
        del local
        dist = (rho - 1.0) * np.float32(semi.min())  # ~signed distance to the surface (voxels)
        cover = np.clip(0.5 - dist, 0.0, 1.0)  # anti-aliased envelope
        sel = cover > 0
        pts = np.stack([zz[sel], yy[sel], xx[sel]], axis=1)  # (M, 3) voxel coords of the support
        del zz, yy, xx
        _, gid = tree.query(pts, k=1, workers=fft_workers())
        dens = grain_density[gid].astype(np.float32) * cover[sel]
        crack_cov = np.zeros(pts.shape[0], dtype=np.float32)
        for p0, nrm, disc in discs:  # type: ignore[assignment]  # float32 discs
            rel = pts - p0[None, :]
            dn = rel @ nrm
            dp2 = np.einsum("ij,ij->i", rel, rel) - dn * dn
            c = np.clip(0.5 + crack_width / 2.0 - np.abs(dn), 0.0, 1.0)
            c *= np.clip(0.5 + disc - np.sqrt(np.maximum(dp2, 0.0)), 0.0, 1.0)  # soft rim
            np.maximum(crack_cov, c.astype(np.float32), out=crack_cov)
        dens *= 1.0 - (1.0 - crack_density) * crack_cov
        box = (slice(z0, z1), sl[1], sl[2])
        vol[box][sel] = dens
        particle[box] = rho <= 1.0
        if return_labels:
            grains[box][sel] = gid.astype(np.int32) + 1
            cracks[box][sel] = crack_cov >= 0.5
    n_particle = int(particle.sum())

    # ---- pores: zero-density spheres inside the particle, until the target porosity is met
    pores = np.zeros(shp, dtype=bool)
    n_pore = 0
    target = porosity * n_particle
    r_lo, r_hi = max(p_lo * L, 1.0), max(p_hi * L, 1.0)
    attempts = 0
    while n_pore < target and attempts < 200000:
        attempts += 1
        r = rng.uniform(r_lo, r_hi)
        u = rng.normal(size=3)
        u *= rng.random() ** (1 / 3) / np.linalg.norm(u)
        shrink = np.maximum(1.0 - (r + 0.5) / semi, 0.0)
        pos = (u * semi * shrink) @ rot.T  # pore centre (voxels, rel. volume centre), inside the particle
        span = []
        for k in range(3):
            c_idx = pos[k] + (shp[k] - 1) / 2.0
            lo, hi = max(int(np.ceil(c_idx - r)), 0), min(int(np.floor(c_idx + r)) + 1, shp[k])
            span.append((lo, hi))
        if any(lo >= hi for lo, hi in span):
            continue
        bz, by, bx = (np.arange(lo, hi) - (n - 1) / 2.0 - p for (lo, hi), n, p in zip(span, shp, pos))
        ball = bz[:, None, None] ** 2 + by[None, :, None] ** 2 + bx[None, None, :] ** 2 <= r * r
        region = tuple(slice(lo, hi) for lo, hi in span)
        ball &= particle[region]
        before = int(pores[region].sum())
        pores[region] |= ball
        n_pore += int(pores[region].sum()) - before
    vol[pores] = 0.0

    if not return_labels:
        return vol
    grains[~particle] = 0
    cracks &= particle & ~pores
    return vol, {"particle": particle, "pores": pores, "cracks": cracks, "grains": grains}


# --------------------------------------------------------------------------- Shepp-Logan
def shepp_logan_ellipsoids(shape: Shape, *, scale: float | None = None) -> np.ndarray:
    """The 3-D Shepp-Logan table in voxel units for a volume of ``shape``.

    Transverse coordinates are scaled isotropically by ``L = min(ny, nx) / 2`` (normalised 1.0 is
    the edge of the smaller transverse side), ``z`` by ``nz / 2``; ``y`` is flipped so the phantom
    looks as in textbooks when slices are displayed with row 0 at the top. Values become attenuation
    per voxel: ``table value * scale / L`` (default ``scale = 4.0``, max line integral about 2).

    Returns
    -------
    numpy.ndarray
        ``(10, 8)`` table, columns ``value, a, b, c, x0, y0, z0, phi_deg``
        (:data:`tomoflow.sim.analytic.ELLIPSOID_COLUMNS`), ready for
        :func:`tomoflow.sim.analytic.ellipsoid_projections` and ``rasterize_ellipsoids``.
    """
    shp = _shape3(shape)
    scale = _SHEPP_SCALE if scale is None else check_number("scale", scale, low=0.0, low_open=True)
    L = _half_width(shp)
    Lz = shp[0] / 2.0
    tab = SHEPP_LOGAN_3D.copy()
    tab[:, 0] *= scale / L
    tab[:, [1, 2, 4]] *= L
    tab[:, 5] *= -L
    tab[:, 3] *= Lz
    tab[:, 6] *= Lz
    tab[:, 7] *= -1.0
    return tab


def shepp_logan_ellipses(n: int, *, scale: float | None = None) -> np.ndarray:
    """The 2-D modified Shepp-Logan table in pixel units for an ``n x n`` image.

    Same conventions as :func:`shepp_logan_ellipsoids` (``L = n / 2``, y flipped, values
    ``table value * scale / L``; default ``scale = 4.0``). Columns ``value, a, b, x0, y0, phi_deg``.
    """
    n = check_int("n", n)
    scale = _SHEPP_SCALE if scale is None else check_number("scale", scale, low=0.0, low_open=True)
    L = n / 2.0
    tab = SHEPP_LOGAN_2D.copy()
    tab[:, 0] *= scale / L
    tab[:, [1, 2, 3]] *= L
    tab[:, 4] *= -L
    tab[:, 5] *= -1.0
    return tab


def shepp_logan_3d(shape: Shape, *, scale: float | None = None, supersample: int = 2) -> np.ndarray:
    """Rasterised 3-D Shepp-Logan head phantom (Kak & Slaney geometry, modified contrast).

    Parameters
    ----------
    shape
        ``(nz, ny, nx)`` or one int for a cube.
    scale
        Attenuation per half-width of a table value of 1.0 (default 4.0: largest line integral
        about 2 at any size). The skull is ``1.0``, brain ``0.2`` in table values.
    supersample
        Sub-samples per axis for partial-volume voxels on ellipsoid surfaces.

    Returns
    -------
    numpy.ndarray
        ``(z, y, x)`` float32 attenuation per voxel; exactly the phantom whose projections
        :func:`tomoflow.sim.analytic.ellipsoid_projections` computes from
        :func:`shepp_logan_ellipsoids` ``(shape, scale)``.
    """
    shp = _shape3(shape)
    return rasterize_ellipsoids(shepp_logan_ellipsoids(shp, scale=scale), shp, supersample=supersample)


# --------------------------------------------------------------------------- aggregates
def aggregate_particles(
    shape: Shape,
    *,
    seed: Any = 0,
    n_particles: int = 14,
    n_clusters: int = 2,
    radius: tuple[float, float] = (0.06, 0.2),
    elongation: tuple[float, float] = (1.0, 2.5),
    cluster_length: float = 0.5,
    offset: float = 0.3,
    attenuation: float = 3.0,
    contrast: float = 0.4,
) -> np.ndarray:
    """Random aggregate: clusters of overlapping ellipsoidal particles, elongated and off-centre.

    ``n_clusters`` cluster centres are placed at a distance up to ``offset`` (half-widths) from the
    rotation axis (the volume's ``z`` axis); each cluster is elongated along its own random 3-D
    direction (particles spread along it over about ``cluster_length`` half-widths, and 4 times less
    across it). Every particle is an ellipsoid with random 3-D orientation, semi-axes
    ``r * (1, 1/sqrt(e), ... )`` from ``radius`` and aspect ratio ``e`` in ``elongation``, and its
    own material density (``1 - contrast .. 1`` times ``attenuation / L``). Overlapping particles
    take the denser value (an aggregate of touching grains, not a sum), edges are anti-aliased. The
    projections therefore change shape and position with the angle. With large ``offset`` and
    ``cluster_length`` the aggregate can leave the transverse field of view (truncated projections),
    which training on "samples wider than the field of view" wants; the defaults keep most of it
    inside.

    Parameters
    ----------
    shape
        ``(nz, ny, nx)`` or one int for a cube.
    seed
        Random seed (anything :func:`numpy.random.default_rng` accepts).
    n_particles
        Total number of particles (``>= 1``), shared out among the clusters.
    n_clusters
        Number of clusters (``1 <= n_clusters <= n_particles``).
    radius
        ``(min, max)`` largest semi-axis of a particle in half-widths ``L = min(ny, nx) / 2``,
        ``0 < min <= max <= 0.5``.
    elongation
        ``(min, max)`` ratio of a particle's largest to smallest semi-axis, ``1 <= min <= max <= 6``.
    cluster_length
        Spread of the particle centres along a cluster's axis, in half-widths, in ``[0, 1.5]``.
    offset
        Largest distance of a cluster centre from the rotation axis, in half-widths, in ``[0, 1]``.
    attenuation
        Attenuation per half-width of the densest material (voxel value ``attenuation / L``).
    contrast
        Relative spread of the particles' densities, in ``[0, 0.9]``.

    Returns
    -------
    numpy.ndarray
        ``(z, y, x)`` float32 attenuation per voxel, 0 outside the particles.
    """
    shp = _shape3(shape)
    n_particles = check_int("n_particles", n_particles, low=1)
    n_clusters = check_int("n_clusters", n_clusters, low=1)
    if n_clusters > n_particles:
        raise ConfigError(f"n_clusters ({n_clusters}) must not exceed n_particles ({n_particles})")
    r_lo, r_hi = _radius_range("radius", radius, hi=0.5)
    try:
        e_lo, e_hi = (float(v) for v in elongation)
        ok = 1.0 <= e_lo <= e_hi <= 6.0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"elongation must be (min, max) with 1 <= min <= max <= 6, got {elongation!r}")
    cluster_length = check_number("cluster_length", cluster_length, low=0.0, high=1.5)
    offset = check_number("offset", offset, low=0.0, high=1.0)
    attenuation = check_number("attenuation", attenuation, low=0.0)
    contrast = check_number("contrast", contrast, low=0.0, high=0.9)

    rng = random_generator(seed)
    L = _half_width(shp)
    mu = attenuation / L
    vol = np.zeros(shp, dtype=np.float32)
    zhalf = (shp[0] - 1) / 2.0
    sizes = np.bincount(rng.integers(0, n_clusters, size=n_particles - n_clusters), minlength=n_clusters) + 1
    for n_in in sizes:
        rad = offset * np.sqrt(rng.random()) * L
        ang = rng.uniform(0.0, 2.0 * np.pi)
        centre = np.array([rng.uniform(-0.4, 0.4) * zhalf, rad * np.sin(ang), rad * np.cos(ang)])
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        for _ in range(int(n_in)):
            along = rng.uniform(-0.5, 0.5) * cluster_length * L
            across = rng.normal(size=3) * cluster_length * L / 8.0
            across -= (across @ axis) * axis
            pos = centre + along * axis + across
            r_max = rng.uniform(r_lo, r_hi) * L
            e = rng.uniform(e_lo, e_hi)
            semi = np.array([r_max, r_max / np.sqrt(e), r_max / e])
            semi = np.maximum(semi, 1.0)  # at least one voxel
            value = mu * (1.0 - contrast * rng.random())
            _paint_ellipsoid(vol, pos, _random_rotation(rng), semi, value)
    return vol


def _paint_ellipsoid(vol: np.ndarray, centre: np.ndarray, rot: np.ndarray, semi: np.ndarray, value: float) -> None:
    """Paint ``value`` x coverage of a rotated ellipsoid into ``vol`` with ``np.maximum`` (in place).

    ``centre`` (z, y, x) in voxels relative to the volume centre; ``rot`` columns are the ellipsoid's
    axes in (z, y, x); ``semi`` its semi-axes in voxels. Soft one-voxel edge.
    """
    shape = vol.shape
    reach = float(np.max(semi)) + 2.0
    sl = []
    for k in range(3):
        c_idx = centre[k] + (shape[k] - 1) / 2.0
        lo, hi = max(int(np.floor(c_idx - reach)), 0), min(int(np.ceil(c_idx + reach)) + 1, shape[k])
        if lo >= hi:
            return
        sl.append(slice(lo, hi))
    z, y, x = (
        (np.arange(s.start, s.stop, dtype=np.float32) - (n - 1) / 2.0 - c).reshape(
            [-1 if i == k else 1 for i in range(3)]
        )
        for k, (s, n, c) in enumerate(zip(sl, shape, centre))
    )
    r32 = rot.astype(np.float32)
    rho2 = sum(((r32[0, k] * z + r32[1, k] * y + r32[2, k] * x) / np.float32(semi[k])) ** 2 for k in range(3))
    dist = (np.sqrt(rho2) - 1.0) * np.float32(np.min(semi))  # ~signed distance to the surface (voxels)
    cover = np.clip(0.5 - dist, 0.0, 1.0)
    np.maximum(vol[tuple(sl)], np.float32(value) * cover, out=vol[tuple(sl)])
