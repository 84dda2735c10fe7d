"""Simulation kernels: phantoms, exact analytic projections, noise, jitter and whole raw scans.

Pure functions on in-memory arrays (no files, zarr or Dask); writing a simulated scan to a store is
:func:`tomoflow.io.synthetic.write_synthetic_scan`. Volumes are ``(z, y, x)``, projections
``(angle, row, col)``, angles in degrees; phantom values are attenuation per voxel.
"""

from tomoflow.sim.analytic import (
    ellipse_sinogram,
    ellipsoid_projections,
    rasterize_ellipses,
    rasterize_ellipsoids,
)
from tomoflow.sim.jitter import apply_jitter, random_jitter
from tomoflow.sim.multiscale import (
    MultiscalePair,
    PorousSample,
    porous_sample,
    rasterize_sample,
    simulate_multiscale_pair,
)
from tomoflow.sim.noise import gaussian_noise, poisson_noise, salt_and_pepper
from tomoflow.sim.phantoms import (
    SHEPP_LOGAN_2D,
    SHEPP_LOGAN_3D,
    aggregate_particles,
    cathode_particle,
    gold_particle,
    shepp_logan_3d,
    shepp_logan_ellipses,
    shepp_logan_ellipsoids,
)
from tomoflow.sim.scan import SyntheticScan, simulate_scan

__all__ = [
    "gold_particle",
    "cathode_particle",
    "aggregate_particles",
    "shepp_logan_3d",
    "shepp_logan_ellipsoids",
    "shepp_logan_ellipses",
    "SHEPP_LOGAN_3D",
    "SHEPP_LOGAN_2D",
    "ellipse_sinogram",
    "ellipsoid_projections",
    "rasterize_ellipses",
    "rasterize_ellipsoids",
    "gaussian_noise",
    "poisson_noise",
    "salt_and_pepper",
    "random_jitter",
    "apply_jitter",
    "SyntheticScan",
    "simulate_scan",
    "simulate_multiscale_pair",
    "MultiscalePair",
    "porous_sample",
    "PorousSample",
    "rasterize_sample",
]
