"""The moving image of registration: the HR volume smoothed by a Gaussian and sampled every ``step`` HR voxels.

Registration compares the HR volume with the LFOV at LFOV voxels, several HR voxels apart, so it never
needs the HR volume itself, only the HR volume *smoothed to about the LFOV's resolution*: a Gaussian of
``sigma`` HR voxels, sampled at HR voxel indices ``(step a, step b, step c)`` (strided sampling keeps
the voxel centres exact: sample ``k`` sits at HR index ``step k``, origin and spacing known). With
``sigma >= ~0.7 step`` the strided samples are nearly alias-free and trilinear interpolation between
them stays accurate (:func:`moving_step` picks ``step`` from a voxel budget).

:func:`smooth_sample` is the one implementation: it computes any box of the sampled grid from a
``(z, y, x)`` array-like (NumPy, or a zarr array read by slicing) by reading only the HR region the box
needs plus the Gaussian's support (reflected at the volume's faces, as
:func:`scipy.ndimage.gaussian_filter` does), and filtering one axis at a time at the sampled positions
only. Memory: O(the box's HR region), never the whole volume unless the box is the whole grid.

A :class:`MovingImage` is what :func:`tomoflow.register.register` takes in place of the HR array: it has
the HR ``shape`` and ``sample(sigma, step)``. :class:`ArrayMoving` is the in-memory one; the pipeline
builds one over a volume store's chunks (:mod:`tomoflow.pipeline.registration`).
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import numpy as np

from tomoflow.errors import ConfigError

__all__ = [
    "MovingImage",
    "ArrayMoving",
    "smooth_sample",
    "filter_sample",
    "gaussian_radius",
    "moving_step",
    "sampled_shape",
]

#: Truncation of the Gaussian, in sigmas (as :func:`scipy.ndimage.gaussian_filter`).
TRUNCATE = 4.0


@runtime_checkable
class MovingImage(Protocol):
    """The HR volume as registration reads it: its ``shape`` ``(z, y, x)`` (HR voxels) and
    ``sample(sigma, step)``, the volume smoothed by a Gaussian of ``sigma`` HR voxels and sampled at HR
    indices ``step * k`` (``(ceil(nz / step), ceil(ny / step), ceil(nx / step))`` float32)."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def sample(self, sigma: float, step: int) -> np.ndarray: ...


def gaussian_radius(sigma: float) -> int:
    """Half-width (voxels) of the truncated Gaussian of ``sigma`` voxels: ``int(4 sigma + 0.5)``."""
    return int(TRUNCATE * float(sigma) + 0.5)


def _weights(sigma: float) -> np.ndarray:
    r = gaussian_radius(sigma)
    if sigma <= 0 or r == 0:
        return np.ones(1)
    x = np.arange(-r, r + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def sampled_shape(shape: Any, step: int) -> tuple[int, int, int]:
    """Shape of the grid of HR indices ``0, step, 2 step, ...`` of a volume of ``shape``."""
    a, b, c = (-(-int(n) // int(step)) for n in shape)
    return (a, b, c)


def moving_step(shape: Any, sigma: float, max_voxels: int, sigma_per_step: float) -> int:
    """Sampling step (HR voxels) of the moving image: the smallest whose grid has at most ``max_voxels``
    samples, or coarser while ``sigma >= sigma_per_step * step`` (no accuracy lost, less memory)."""
    step = 1
    while int(np.prod(sampled_shape(shape, step), dtype=np.int64)) > max_voxels:
        step += 1
    return max(step, int(math.floor(float(sigma) / sigma_per_step)) if sigma_per_step > 0 else step)


def smooth_sample(
    source: Any, sigma: float, step: int, box: Any = None, *, shape: Any = None, dtype: Any = np.float32
) -> np.ndarray:
    """A box of the HR volume smoothed by a Gaussian of ``sigma`` voxels and sampled every ``step`` voxels.

    Parameters
    ----------
    source
        ``(z, y, x)`` volume: a NumPy or zarr array (read by slicing, only the region the box needs).
    sigma
        Gaussian standard deviation, HR voxels (0: no smoothing), truncated at 4 sigma; the volume is
        reflected at its faces (``scipy.ndimage.gaussian_filter``'s default, to which the result is
        equal to float32 rounding).
    step
        Sampling step, HR voxels: sample ``k`` is at HR index ``step * k`` along each axis.
    box
        ``((k0, k1), ...)`` sample indices to compute per axis; default the whole sampled grid
        (:func:`sampled_shape`).
    shape
        The volume's shape when ``source`` is a callable-free array-like without one (default
        ``source.shape``).

    Returns
    -------
    numpy.ndarray
        ``(k1 - k0, ...)`` float32.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy.ndimage import gaussian_filter
    >>> v = np.random.default_rng(0).random((20, 18, 16)).astype(np.float32)
    >>> s = smooth_sample(v, 1.5, 2)
    >>> s.shape
    (10, 9, 8)
    >>> bool(np.allclose(s, gaussian_filter(v, 1.5)[::2, ::2, ::2], atol=1e-5))
    True
    """
    n = tuple(int(v) for v in (source.shape if shape is None else shape))
    step = int(step)
    if step < 1:
        raise ConfigError(f"step must be a positive number of HR voxels, got {step!r}")
    if float(sigma) < 0:
        raise ConfigError(f"sigma must be >= 0 HR voxels, got {sigma!r}")
    grid = sampled_shape(n, step)
    kbox = tuple((0, g) for g in grid) if box is None else tuple((int(a), int(b)) for a, b in box)
    if len(kbox) != 3 or any(not 0 <= a < b <= g for (a, b), g in zip(kbox, grid)):
        raise ConfigError(f"box must be 3 (start, stop) pairs inside the sampled grid {grid}, got {box!r}")
    r = gaussian_radius(sigma) if sigma > 0 else 0
    # HR region the box needs: from step k0 - r to step (k1 - 1) + r, reflected where it leaves the volume
    lo = [step * a - r for a, _ in kbox]
    hi = [step * (b - 1) + r + 1 for _, b in kbox]
    read_lo = [max(a, 0) for a in lo]
    read_hi = [min(b, m) for b, m in zip(hi, n)]
    region = np.asarray(source[tuple(slice(a, b) for a, b in zip(read_lo, read_hi))], dtype=dtype)
    pad = [(a - b, c - d) for a, b, c, d in zip(read_lo, lo, hi, read_hi)]
    if any(p for pp in pad for p in pp):
        region = _reflect_pad(region, pad)
    return filter_sample(region, sigma, step, (r, r, r), tuple(b - a for a, b in kbox))


def filter_sample(region: np.ndarray, sigma: float, step: int, first: Any, count: Any) -> np.ndarray:
    """Smooth a region by a Gaussian of ``sigma`` voxels and sample it every ``step`` voxels: output
    ``(j0, j1, j2)`` is centred at region index ``first + step * j`` per axis, ``j < count``. The region
    must hold the Gaussian's support around each sample (``first >= gaussian_radius(sigma)``, and as
    much after the last one). The filtering of :func:`smooth_sample`, one axis at a time at the sampled
    positions only; float32 out.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.zeros((9, 9, 9), np.float32)
    >>> a[4, 4, 4] = 1.0
    >>> filter_sample(a, 1.0, 4, (4, 4, 4), (1, 1, 1)).shape
    (1, 1, 1)
    """
    w = _weights(float(sigma)).astype(region.dtype)
    r = (w.size - 1) // 2
    out = region
    for axis in range(3):
        if first[axis] < r:
            raise ConfigError(f"the region holds {first[axis]} voxels before the first sample, fewer than {r}")
        out = _filter_axis(
            np.moveaxis(np.moveaxis(out, axis, 0)[first[axis] - r :], 0, axis), w, axis, step, count[axis]
        )
    return np.ascontiguousarray(out, dtype=np.float32)


def _reflect_pad(a: np.ndarray, pad: list[tuple[int, int]]) -> np.ndarray:
    """``np.pad(mode="symmetric")`` (= scipy's ``reflect``), repeated while a pad exceeds the axis."""
    while any(p > 0 for pp in pad for p in pp):
        now = [(min(p, s), min(q, s)) for (p, q), s in zip(pad, a.shape)]
        a = np.pad(a, now, mode="symmetric")
        pad = [(p - u, q - v) for (p, q), (u, v) in zip(pad, now)]
    return a


def _filter_axis(a: np.ndarray, w: np.ndarray, axis: int, step: int, count: int) -> np.ndarray:
    """Correlate ``a`` with ``w`` along ``axis`` at positions ``r + step * k``, ``k < count``
    (``r`` = half the kernel: the first output sits at the padded region's centre). Every position
    (``step`` 1): scipy's compiled correlation; otherwise a weighted sum of strided slices, which
    computes only the sampled positions."""
    if step == 1:
        from scipy.ndimage import correlate1d

        r = (w.size - 1) // 2
        keep = [slice(None)] * a.ndim
        keep[axis] = slice(r, r + count)
        return correlate1d(a, w, axis=axis, mode="constant")[tuple(keep)]
    a = np.moveaxis(a, axis, 0)
    out = np.zeros((count, *a.shape[1:]), dtype=a.dtype)
    span = step * (count - 1) + 1
    tmp = np.empty_like(out)
    for j, wj in enumerate(w):
        np.multiply(a[j : j + span : step], wj, out=tmp)
        out += tmp
    return np.moveaxis(out, 0, axis)


class ArrayMoving:
    """A :class:`MovingImage` of an in-memory HR volume (each ``sample`` computed by :func:`smooth_sample`).

    Parameters
    ----------
    hr
        ``(z, y, x)`` HR volume (NumPy array; read whole).
    """

    def __init__(self, hr: Any) -> None:
        self.array = np.asarray(hr, dtype=np.float32)

    @property
    def shape(self) -> tuple[int, ...]:
        """The HR volume's shape ``(z, y, x)``."""
        return tuple(int(n) for n in self.array.shape)

    def sample(self, sigma: float, step: int) -> np.ndarray:
        """The volume smoothed by ``sigma`` HR voxels, sampled every ``step`` HR voxels."""
        return smooth_sample(self.array, sigma, step)
