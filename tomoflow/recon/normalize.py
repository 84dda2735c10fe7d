"""Flat/dark-field normalisation and the minus-log transform (kernel: in-memory arrays only).

Raw counts ``p`` of a projection become transmission ``t = (p - d) / (f - d)`` where ``f`` and
``d`` are the mean flat (white) and mean dark frames, then line integrals ``-log(t)``. Real data has
dead and hot pixels, so both steps guard against what would otherwise make NaN or Inf:

- *bad reference pixels*: detector pixels where ``f - d <= 0`` or ``f``/``d`` is not finite (no
  finite frame). Their transmission is set to 1 (line integral 0) on every projection.
- *non-finite values*: NaN/Inf in the projections (or a division that overflowed). Set to
  transmission 1 (line integral 0).
- *clipping*: transmission below ``min_transmission`` (e.g. ``p < d`` from noise) is raised to it, so
  ``-log`` stays finite (at most ``-log(min_transmission)`` = 13.8 for the default 1e-6).

Repairs are counted in a :class:`NormalizeReport` (``return_report=True``) and logged as warnings;
``on_invalid="raise"`` raises :class:`~tomoflow.errors.InputError` instead of repairing. Clipping is
normal for noisy data and never raises.

Arrays are ``(angle, row, col)``; a single ``(row, col)`` projection is accepted too. Output is
float32. The same code runs on NumPy and CuPy (namespace of the inputs).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np

from tomoflow._checks import as_stack, check_choice, check_frames, check_number
from tomoflow._typing import Array
from tomoflow.backend import get_namespace
from tomoflow.errors import InputError

__all__ = ["NormalizeReport", "normalize", "minus_log", "normalize_log", "mean_frames"]

logger = logging.getLogger(__name__)

OnInvalid = Literal["repair", "raise"]


@dataclass
class NormalizeReport:
    """What :func:`normalize` / :func:`minus_log` had to repair.

    Attributes
    ----------
    bad_reference_pixels
        Detector pixels ``(row, col)`` where flat - dark <= 0 or not finite (transmission set to 1
        on every projection).
    nonfinite_values
        Projection / transmission values that were NaN or Inf (set to transmission 1), not counting
        those on bad reference pixels.
    clipped_values
        Values whose transmission was below ``min_transmission`` and was raised to it.
    """

    bad_reference_pixels: int = 0
    nonfinite_values: int = 0
    clipped_values: int = 0

    @property
    def repaired(self) -> int:
        """Number of repairs (bad reference pixels + non-finite values; clipping excluded)."""
        return self.bad_reference_pixels + self.nonfinite_values

    def __add__(self, other: NormalizeReport) -> NormalizeReport:
        return NormalizeReport(
            self.bad_reference_pixels + other.bad_reference_pixels,
            self.nonfinite_values + other.nonfinite_values,
            self.clipped_values + other.clipped_values,
        )


def _check_options(min_transmission: float, on_invalid: str) -> None:
    check_choice("on_invalid", on_invalid, ("repair", "raise"))
    check_number("min_transmission", min_transmission, low=0.0, high=1.0, low_open=True, high_open=True)


def _prepare_out(xp: Any, src: Any, out: Any) -> Any:
    """Copy ``src`` into float32 ``out`` (allocated if None); ``out`` may be ``src`` itself."""
    if out is None:
        return src.astype(xp.float32, copy=True)
    if tuple(out.shape) != tuple(src.shape) or out.dtype != xp.float32:
        raise InputError(
            f"out must be float32 of shape {tuple(src.shape)}, got {out.dtype} {tuple(out.shape)}", dataset="out"
        )
    if out is not src:
        out[...] = src
    return out


def mean_frames(frames: Array, detector_shape: tuple[int, int], *, name: str = "frames") -> Array:
    """Mean of ``(frame, row, col)`` frames over the frame axis, ignoring non-finite values.

    Parameters
    ----------
    frames
        ``(frame, row, col)`` or ``(row, col)`` array (NumPy or CuPy), or None / zero frames.
    detector_shape
        Expected detector shape ``(row, col)`` in pixels.
    name
        Name used in error messages (``"flats"``, ``"darks"``).

    Returns
    -------
    array or None
        ``(row, col)`` float64 mean; NaN where no frame is finite. None when there are no frames.

    Raises
    ------
    InputError
        Frames not 2-D/3-D or of another detector shape.
    """
    if frames is None:
        return None
    xp = get_namespace(frames)
    a = check_frames(name, xp.asarray(frames), *detector_shape)
    if a.shape[0] == 0:
        return None
    a = a.astype(xp.float64, copy=False)
    finite = xp.isfinite(a)
    count = finite.sum(axis=0)
    total = xp.where(finite, a, 0.0).sum(axis=0)
    mean = total / xp.maximum(count, 1)
    return xp.where(count > 0, mean, xp.nan)


def _warn(report: NormalizeReport, what: str) -> None:
    if report.repaired:
        logger.warning(
            "%s: repaired %d bad reference pixels (flat <= dark or not finite) and %d NaN/Inf values "
            "(set to transmission 1)",
            what,
            report.bad_reference_pixels,
            report.nonfinite_values,
        )
    if report.clipped_values:
        logger.debug("%s: clipped %d values to min_transmission", what, report.clipped_values)


@overload
def normalize(
    projections: Array,
    flats: Array,
    darks: Array,
    *,
    min_transmission: float = ...,
    on_invalid: OnInvalid = ...,
    out: Array = ...,
    return_report: Literal[False] = ...,
) -> Array: ...
@overload
def normalize(
    projections: Array,
    flats: Array,
    darks: Array,
    *,
    min_transmission: float = ...,
    on_invalid: OnInvalid = ...,
    out: Array = ...,
    return_report: Literal[True],
) -> tuple[Array, NormalizeReport]: ...


def normalize(
    projections: Array,
    flats: Array,
    darks: Array,
    *,
    min_transmission: float = 1e-6,
    on_invalid: OnInvalid = "repair",
    out: Array | None = None,
    return_report: bool = False,
) -> Any:
    """Flat/dark-field correction: transmission ``(p - mean(darks)) / (mean(flats) - mean(darks))``.

    Parameters
    ----------
    projections
        ``(angle, row, col)`` (or one ``(row, col)``) raw counts, any real dtype (NumPy or CuPy).
    flats
        ``(flat, row, col)`` or ``(row, col)`` flat (white) fields, or None / zero frames: then
        ``f - d`` is taken as 1, i.e. the projections are already flat-corrected.
    darks
        ``(dark, row, col)`` or ``(row, col)`` dark fields, or None / zero frames (= zeros).
    min_transmission
        Lower clip of the transmission, in (0, 1).
    on_invalid
        ``"repair"``: bad reference pixels and NaN/Inf become transmission 1 (counted, logged);
        ``"raise"``: raise :class:`InputError` if there are any.
    out
        Optional float32 array of the projections' shape to write into (may be ``projections``
        itself when that is float32, for an in-place update).
    return_report
        Also return a :class:`NormalizeReport`.

    Returns
    -------
    transmission : array
        float32, same shape as ``projections``, finite, ``>= min_transmission``.
    report : NormalizeReport
        Only with ``return_report=True``.
    """
    _check_options(min_transmission, on_invalid)
    xp = get_namespace(projections, flats, darks, out)
    p, was2d = as_stack(xp.asarray(projections))
    shape2d = tuple(p.shape[1:])
    f = mean_frames(flats, shape2d, name="flats")
    d = mean_frames(darks, shape2d, name="darks")
    d64 = xp.zeros(shape2d, xp.float64) if d is None else d
    denom = xp.ones(shape2d, xp.float64) if f is None else f - d64
    bad_ref = ~xp.isfinite(denom) | (denom <= 0) | ~xp.isfinite(d64)
    n_bad_ref = int(xp.count_nonzero(bad_ref))
    if n_bad_ref and on_invalid == "raise":
        raise InputError(
            f"{n_bad_ref} detector pixels have flat <= dark or no finite flat/dark value", dataset="flats/darks"
        )
    dark32 = xp.where(bad_ref, 0.0, d64).astype(xp.float32)
    denom32 = xp.where(bad_ref, 1.0, denom).astype(xp.float32)

    if was2d and out is not None and out.ndim == 2:
        out = out[None]
    o = _prepare_out(xp, p, out)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        xp.subtract(o, dark32, out=o)
        xp.divide(o, denom32, out=o)
    nonfinite = ~xp.isfinite(o)
    nonfinite &= ~bad_ref[None]
    n_nonfinite = int(xp.count_nonzero(nonfinite))
    if n_nonfinite and on_invalid == "raise":
        raise InputError(
            f"{n_nonfinite} projection values are NaN/Inf (in the input, or after flat/dark correction)",
            dataset="projections",
        )
    one = xp.float32(1.0)
    xp.copyto(o, one, where=nonfinite)
    xp.copyto(o, one, where=xp.broadcast_to(bad_ref[None], o.shape))
    low = o < xp.float32(min_transmission)
    n_clipped = int(xp.count_nonzero(low))
    xp.maximum(o, xp.float32(min_transmission), out=o)

    report = NormalizeReport(n_bad_ref, n_nonfinite, n_clipped)
    _warn(report, "normalize")
    result = o[0] if was2d else o
    return (result, report) if return_report else result


@overload
def minus_log(
    transmission: Array,
    *,
    min_transmission: float = ...,
    on_invalid: OnInvalid = ...,
    out: Array = ...,
    return_report: Literal[False] = ...,
) -> Array: ...
@overload
def minus_log(
    transmission: Array,
    *,
    min_transmission: float = ...,
    on_invalid: OnInvalid = ...,
    out: Array = ...,
    return_report: Literal[True],
) -> tuple[Array, NormalizeReport]: ...


def minus_log(
    transmission: Array,
    *,
    min_transmission: float = 1e-6,
    on_invalid: OnInvalid = "repair",
    out: Array | None = None,
    return_report: bool = False,
) -> Any:
    """Line integrals ``-log(max(t, min_transmission))`` of transmission ``t``.

    Parameters
    ----------
    transmission
        ``(angle, row, col)`` (any shape works) transmission, NumPy or CuPy.
    min_transmission
        Lower clip of ``t`` in (0, 1); bounds the output by ``-log(min_transmission)``.
    on_invalid
        ``"repair"``: NaN/Inf transmission becomes line integral 0 (counted, logged);
        ``"raise"``: raise :class:`InputError`.
    out
        Optional float32 output array of the same shape (may be ``transmission`` itself).
    return_report
        Also return a :class:`NormalizeReport`.

    Returns
    -------
    line_integrals : array
        float32, finite, ``<= -log(min_transmission)``.
    report : NormalizeReport
        Only with ``return_report=True``.
    """
    _check_options(min_transmission, on_invalid)
    xp = get_namespace(transmission, out)
    t = xp.asarray(transmission)
    o = _prepare_out(xp, t, out)
    nonfinite = ~xp.isfinite(o)
    n_nonfinite = int(xp.count_nonzero(nonfinite))
    if n_nonfinite and on_invalid == "raise":
        raise InputError(f"{n_nonfinite} transmission values are NaN/Inf", dataset="transmission")
    xp.copyto(o, xp.float32(1.0), where=nonfinite)
    n_clipped = int(xp.count_nonzero(o < xp.float32(min_transmission)))
    xp.maximum(o, xp.float32(min_transmission), out=o)
    xp.log(o, out=o)
    xp.negative(o, out=o)
    report = NormalizeReport(0, n_nonfinite, n_clipped)
    _warn(report, "minus_log")
    return (o, report) if return_report else o


@overload
def normalize_log(
    projections: Array,
    flats: Array,
    darks: Array,
    *,
    min_transmission: float = ...,
    on_invalid: OnInvalid = ...,
    out: Array = ...,
    return_report: Literal[False] = ...,
) -> Array: ...
@overload
def normalize_log(
    projections: Array,
    flats: Array,
    darks: Array,
    *,
    min_transmission: float = ...,
    on_invalid: OnInvalid = ...,
    out: Array = ...,
    return_report: Literal[True],
) -> tuple[Array, NormalizeReport]: ...


def normalize_log(
    projections: Array,
    flats: Array,
    darks: Array,
    *,
    min_transmission: float = 1e-6,
    on_invalid: OnInvalid = "repair",
    out: Array | None = None,
    return_report: bool = False,
) -> Any:
    """Flat/dark correction followed by ``-log``: line integrals ready for reconstruction.

    Same parameters as :func:`normalize`. Returns float32 ``(angle, row, col)`` line integrals in
    ``[-log(max transmission), -log(min_transmission)]``, always finite, and with
    ``return_report=True`` a :class:`NormalizeReport` (``clipped_values`` counted once).
    """
    t, rep = normalize(
        projections, flats, darks, min_transmission=min_transmission, on_invalid=on_invalid, out=out, return_report=True
    )
    xp = get_namespace(t)
    # t is finite and >= min_transmission here: only the log remains.
    xp.log(t, out=t)
    xp.negative(t, out=t)
    return (t, rep) if return_report else t
