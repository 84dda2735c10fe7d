"""Impulse-noise removal: zingers, dead and saturated pixels, salt-and-pepper up to 60 %.

Registration, centre finding and the jitter network read the *estimation* copy of a scan cleaned by
:func:`remove_outliers`; corrections are always applied to the raw data.

Algorithm (per projection, ``(angle, row, col)`` stacks):

1. **Clipped values.** A value taken by more than ``saturation_fraction`` of all pixels at the very
   top or bottom of the stack's range, and set apart from all other values by over half the data
   range (zero counts clipped by ``-log``, a saturated or dead detector element), carries no
   information: every such pixel is marked invalid.
2. **Outliers.** A pixel further than ``threshold`` times the robust range (1st-99th percentile) of the
   3 x 3 median-filtered stack from its 3 x 3 median is marked invalid.
3. **Repair.** Invalid pixels take the mean of the valid pixels in their ``window x window``
   neighbourhood (normalised convolution; the median where none is valid). Steps 2-3 repeat on the
   repaired stack (``passes``) so that clusters of impulses, which hide each other from the median,
   are found in turn.

Straight edges survive a 3 x 3 median, so a clean scan loses nothing but isolated one-pixel features
of more than ``threshold`` of the range; ``detect="auto"`` skips the filter altogether when a sample
of projections shows no impulses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tomoflow._checks import check_choice, check_int, check_number
from tomoflow._typing import Array
from tomoflow.backend import get_namespace, to_numpy
from tomoflow.errors import ConfigError, InputError

__all__ = ["OutlierResult", "remove_outliers", "median3x3"]

#: Fraction of invalid pixels in the sampled projections under which ``detect="auto"`` leaves the
#: stack untouched.
AUTO_MIN_FRACTION = 2e-3

#: Outlier threshold of that probe (fraction of the data range): stricter than the repair's, so that
#: the sharp one-pixel features of a clean scan do not count as impulses.
AUTO_THRESHOLD = 0.25


@dataclass
class OutlierResult:
    """Result of :func:`remove_outliers`.

    Attributes
    ----------
    data
        The repaired ``(angle, row, col)`` stack (float32, same namespace); the input itself when
        nothing was changed.
    fraction
        Fraction of pixels replaced (0 to 1).
    applied
        Whether the filter ran (``detect="auto"`` skips scans without impulses).
    """

    data: Any
    fraction: float
    applied: bool


def _ndimage(xp: Any) -> Any:
    if xp.__name__.startswith("cupy"):
        import cupyx.scipy.ndimage as nd  # pragma: no cover - GPU only

        return nd  # pragma: no cover
    from scipy import ndimage

    return ndimage


def _median3x3(nd: Any, xp: Any, p: Any) -> Any:
    """3 x 3 median of every image, edges replicated (numba on the CPU, cupyx on the GPU)."""
    if xp is np:
        from tomoflow.recon._median_numba import median3x3

        return median3x3(np.ascontiguousarray(p, dtype=np.float32))
    return nd.median_filter(p, size=(1, 3, 3), mode="nearest")  # pragma: no cover - GPU only


def median3x3(images: Array) -> Array:
    """3 x 3 median filter of every image of an ``(n, row, col)`` stack, edges replicated (float32,
    same namespace; numba on the CPU, about 50x ``scipy.ndimage.median_filter``)."""
    xp = get_namespace(images)
    return _median3x3(_ndimage(xp), xp, xp.asarray(images, dtype=xp.float32))


def _clipped_mask(xp: Any, p: Any, saturation_fraction: float) -> Any:
    """Pixels at a clip level: the stack's exact minimum or maximum when that value is over-represented
    *and* set apart from the rest of the data (a gap of over half the 1st-99th percentile range to the
    nearest other value), so that a legitimately flat background at the minimum is not a clip level."""
    mask = xp.zeros(p.shape, dtype=bool)
    sample = p[:: max(1, p.shape[0] // 16)]
    lo, hi = (float(v) for v in xp.percentile(sample, xp.asarray([1.0, 99.0])))
    for value in (sample.max(), sample.min()):
        hit = sample == value
        if float(hit.mean()) <= saturation_fraction:
            continue
        rest = sample[~hit]
        if rest.size == 0:
            continue
        gap = float(value - rest.max()) if value == sample.max() else float(rest.min() - value)
        if gap > 0.5 * (hi - lo):
            mask |= p == value
    return mask


def _outliers(nd: Any, xp: Any, p: Any, threshold: float) -> tuple[Any, Any]:
    """``(mask, median)``: pixels far from their 3 x 3 median, relative to the robust data range."""
    med = _median3x3(nd, xp, p)
    sample = med[:: max(1, med.shape[0] // 16)]
    lo, hi = (float(v) for v in xp.percentile(sample, xp.asarray([1.0, 99.0])))
    spread = max(hi - lo, 1e-12)
    return xp.abs(p - med) > xp.float32(threshold * spread), med


def _repair(nd: Any, xp: Any, p: Any, bad: Any, med: Any, window: int) -> Any:
    if xp is np:
        from tomoflow.recon._median_numba import fill_invalid

        return fill_invalid(np.ascontiguousarray(p, dtype=np.float32), np.ascontiguousarray(bad), med, window // 2)
    # The same clipped window as the CPU kernel: zeros outside the image count neither as values nor as
    # valid pixels, so the ratio is the mean of the valid pixels inside the image.
    size = (1, window, window)  # pragma: no cover - GPU only
    good = (~bad).astype(xp.float32)  # pragma: no cover
    num = nd.uniform_filter(xp.where(bad, xp.float32(0), p), size=size, mode="constant", cval=0.0)  # pragma: no cover
    den = nd.uniform_filter(good, size=size, mode="constant", cval=0.0)  # pragma: no cover
    fill = xp.where(den > 0.5 / window**2, num / xp.maximum(den, xp.float32(1e-12)), med)  # pragma: no cover
    return xp.where(bad, fill, p).astype(xp.float32, copy=False)  # pragma: no cover


def remove_outliers(
    projections: Array,
    *,
    threshold: float = 0.1,
    passes: int = 3,
    window: int = 5,
    saturation_fraction: float = 1e-3,
    detect: str = "auto",
) -> OutlierResult:
    """Replace impulse noise (zingers, dead/saturated pixels, salt-and-pepper) in a projection stack.

    Parameters
    ----------
    projections
        ``(angle, row, col)`` line integrals or intensities, NumPy or CuPy, finite.
    threshold
        Distance from the 3 x 3 median, as a fraction of the robust data range (1st-99th percentile
        of the median-filtered stack), beyond which a pixel is an outlier. In ``(0, 1]``.
    passes
        Detect-and-repair rounds (1-10).
    window
        Side (px, odd, 3-15) of the neighbourhood whose valid pixels replace an invalid one.
    saturation_fraction
        A value held by more than this fraction of the pixels at the stack's exact minimum or maximum
        is a clip level (zero counts, saturation): every pixel at it is invalid. In ``[0, 1]``.
    detect
        ``"auto"``: run only when a sample of 16 projections has more than 0.2 % invalid pixels
        (clipped, or outliers at a threshold of at least 0.25);
        ``"always"``: run on every scan.

    Returns
    -------
    OutlierResult
        The repaired stack, the fraction of pixels replaced and whether the filter ran.

    Examples
    --------
    >>> import numpy as np
    >>> from tomoflow.recon import remove_outliers
    >>> from tomoflow.sim import salt_and_pepper
    >>> yy, xx = np.mgrid[:32, :32]
    >>> clean = np.repeat((np.hypot(yy - 16, xx - 16) < 10)[None].astype(np.float32), 4, axis=0)
    >>> noisy = salt_and_pepper(clean, 0.3, seed=0, low=0.0, high=5.0)
    >>> fixed = remove_outliers(noisy).data
    >>> bool(np.abs(fixed - clean).mean() < 0.1 * np.abs(noisy - clean).mean())
    True
    """
    threshold = check_number(
        "outlier threshold (fraction of the data range)", threshold, low=0.0, high=1.0, low_open=True
    )
    passes = check_int("outlier passes", passes, low=1)
    window = check_int("outlier window (px)", window, low=3)
    if passes > 10 or window > 15 or window % 2 == 0:
        raise ConfigError(f"outlier passes must be 1-10 and the window an odd 3-15 px, got {passes} and {window}")
    saturation_fraction = check_number("saturation fraction", saturation_fraction, low=0.0, high=1.0)
    detect = check_choice("outlier detection", detect, ("auto", "always"))
    xp = get_namespace(projections)
    p = xp.asarray(projections)
    if p.ndim != 3:
        raise InputError(f"remove_outliers expects an (angle, row, col) stack, got shape {tuple(p.shape)}")
    p = p.astype(xp.float32, copy=False)
    if p.size == 0:
        return OutlierResult(p, 0.0, False)
    if not bool(xp.all(xp.isfinite(p))):
        raise InputError("remove_outliers: the projections contain NaN or Inf")
    nd = _ndimage(xp)
    if detect == "auto":
        sample = p[:: max(1, p.shape[0] // 16)]
        probe = (
            _clipped_mask(xp, sample, saturation_fraction)
            | _outliers(nd, xp, sample, max(threshold, AUTO_THRESHOLD))[0]
        )
        if float(probe.mean()) <= AUTO_MIN_FRACTION:
            return OutlierResult(p, 0.0, False)
    bad = _clipped_mask(xp, p, saturation_fraction)
    out = p
    for k in range(passes):
        new, med = _outliers(nd, xp, out, threshold)
        new &= ~bad
        if k > 0 and not bool(new.any()):
            break
        bad |= new
        out = _repair(nd, xp, p, bad, med, window)
    return OutlierResult(out, float(to_numpy(bad.mean())), True)
