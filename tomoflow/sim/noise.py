"""Detector noise models: Gaussian (read) noise, photon (Poisson) noise, salt-and-pepper (zingers).

Each function takes a NumPy or CuPy array and returns a new array of the same shape, namespace and
float dtype (float32 unless the input is float64). Random numbers are drawn on the host with
:func:`numpy.random.default_rng` (``seed``: an int, a :class:`numpy.random.SeedSequence` or a
:class:`numpy.random.Generator`), so a seed gives the same noise on CPU and GPU.
Out-of-range parameters raise :class:`tomoflow.errors.ConfigError`; bad data (NaN, negative
intensities for photon noise) raises :class:`tomoflow.errors.InputError`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tomoflow._checks import check_number, random_generator
from tomoflow._typing import Array
from tomoflow.backend import asarray_on, get_namespace, to_numpy
from tomoflow.errors import InputError

__all__ = ["gaussian_noise", "poisson_noise", "salt_and_pepper", "MAX_SALT_AND_PEPPER", "MAX_PHOTONS"]

MAX_SALT_AND_PEPPER = 0.6
"""Largest accepted salt-and-pepper fraction."""

MAX_PHOTONS = 1e13
"""Largest mean photon count per pixel: photon noise then has a relative size ``1/sqrt(N)`` of 3e-7,
about float32's resolution (1.2e-7): beyond it the noise is invisible in the data (use no photon noise),
and NumPy's Poisson sampler refuses means past about 1e18."""


def _float_dtype(x: Any) -> Any:
    return np.float64 if np.dtype(x.dtype) == np.float64 else np.float32


def gaussian_noise(x: Array, sigma: float, *, seed: Any = None) -> Array:
    """Add zero-mean Gaussian noise of standard deviation ``sigma``.

    Parameters
    ----------
    x
        Array of any shape (e.g. ``(angle, row, col)`` projections), NumPy or CuPy.
    sigma
        Standard deviation, in the units of ``x``; must be ``>= 0`` (0 returns a copy).
    seed
        Random seed.

    Returns
    -------
    ``x + N(0, sigma^2)``, same shape and namespace, float32 (float64 for float64 input).
    """
    sigma = check_number("gaussian noise sigma", sigma, low=0.0)
    xp = get_namespace(x)
    dtype = _float_dtype(x)
    out = xp.asarray(x, dtype=dtype).copy()
    if sigma > 0:
        noise = random_generator(seed).normal(0.0, sigma, size=tuple(x.shape)).astype(dtype)
        out += asarray_on(noise, xp)
    return out


def poisson_noise(intensity: Array, photons: float, *, seed: Any = None) -> Array:
    """Photon-counting noise on a *normalised transmission*.

    The input is the flat-normalised intensity ``T = I / I0`` (``exp(-line integral)``; 1 means the
    unattenuated beam, values may exceed 1 where the flat field is brighter than average). A pixel
    receiving ``T`` detects ``N ~ Poisson(photons * T)`` photons, and the returned value is
    ``N / photons``: the same scale as the input, with mean ``T`` and variance ``T / photons``.
    To simulate raw counts multiply the result by the flat level; to noise line integrals ``p`` use
    ``-log(poisson_noise(exp(-p), photons))`` (beware of zero counts).

    Parameters
    ----------
    intensity
        Normalised transmission, ``>= 0``, any shape, NumPy or CuPy.
    photons
        Mean photon count per pixel of the unattenuated beam (``T = 1``); in ``(0, MAX_PHOTONS]``.
    seed
        Random seed.

    Returns
    -------
    Noisy transmission, same shape and namespace, float32 (float64 for float64 input).
    """
    photons = check_number(
        "photons (mean count of the unattenuated beam)", photons, low=0.0, low_open=True, high=MAX_PHOTONS
    )
    xp = get_namespace(intensity)
    dtype = _float_dtype(intensity)
    host = np.asarray(to_numpy(intensity), dtype=np.float64)
    if not np.all(np.isfinite(host)):
        raise InputError("poisson_noise: intensity contains NaN or Inf")
    if host.size and host.min() < 0:
        raise InputError(f"poisson_noise expects a non-negative transmission I/I0, found minimum {host.min():.3g}")
    counts = random_generator(seed).poisson(photons * host)
    return asarray_on((counts / photons).astype(dtype), xp)


def salt_and_pepper(
    x: Array,
    fraction: float,
    *,
    seed: Any = None,
    low: float | None = None,
    high: float | None = None,
) -> Array:
    """Set a random ``fraction`` of the elements to ``low`` (pepper) or ``high`` (salt).

    Exactly ``round(fraction * x.size)`` distinct elements are changed; each becomes ``low`` or
    ``high`` with equal probability. Models dead pixels and zingers (cosmic rays / scattered
    photons hitting the detector).

    Parameters
    ----------
    x
        Array of any shape, NumPy or CuPy.
    fraction
        Fraction of elements to corrupt, in ``[0, 0.6]``.
    seed
        Random seed.
    low, high
        Pepper and salt values; default the minimum and maximum of ``x``.

    Returns
    -------
    Corrupted copy, same shape and namespace, float32 (float64 for float64 input).
    """
    fraction = check_number("salt-and-pepper fraction", fraction, low=0.0, high=MAX_SALT_AND_PEPPER)
    xp = get_namespace(x)
    dtype = _float_dtype(x)
    out = xp.asarray(x, dtype=dtype).copy()
    n = int(round(fraction * out.size))
    if n == 0:
        return out
    lo = float(xp.min(out)) if low is None else check_number("low", low)
    hi = float(xp.max(out)) if high is None else check_number("high", high)
    rng = random_generator(seed)
    idx = rng.choice(out.size, size=n, replace=False)
    vals = np.where(rng.random(n) < 0.5, lo, hi).astype(dtype)
    flat = out.reshape(-1)
    flat[asarray_on(idx, xp)] = asarray_on(vals, xp)
    return flat.reshape(out.shape)
