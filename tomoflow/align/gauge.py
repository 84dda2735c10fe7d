"""Gauge fixing: remove the part of a jitter estimate that the data cannot determine.

Every projection of a scan seen through the same translation is the same scan: a shift common to all
projections cannot be told apart from a different object or axis position, so alignment determines
the jitter only up to it (its *gauge*).

- **Vertical** (``dy``): a common vertical shift of every projection is the object sitting higher or
  lower on the rotation axis. Nothing in the data fixes it; the mean ``dy`` is removed.
- **Horizontal** (``dx``): a common horizontal shift of every projection moves the rotation axis on
  the detector by the same amount. It is not lost but *reinterpreted*: the mean ``dx`` is removed from
  the shifts and added to the rotation centre. The raw data corrected with the gauge-fixed shifts and
  reconstructed about ``center + common_dx`` give the same slices as the raw data corrected with the
  full shifts and reconstructed about ``center``.
- **Object translation** (optional, ``angles_deg``): the object sitting elsewhere in the slice plane,
  by ``(ty, tx)`` pixels, projects ``tx cos(theta) + ty sin(theta)`` columns from where it would be; a
  jitter ``dx`` of that form gives the same data as a translated object (the reconstruction just
  moves), so these two sinusoids are as unobservable as the mean. An alignment that registers
  projections against a reconstruction made from the data cannot recover that part of the true
  jitter (tomoflow's baselines remove it from their estimates). For ``n`` random jitters of standard
  deviation ``s`` it has an RMS of about ``s sqrt(2 / n)`` px (1.2 px on average for 181 projections
  of +-20 px uniform jitter; 1.8 px on one such simulated scan): a floor no method can get under.
  Remove it (``angles_deg=...``) before comparing an estimate with a known truth.

Sign convention: a jitter ``(dy, dx)`` is how far a measured projection is displaced from where a
perfect stage would have put it; correction shifts the raw projection by ``(-dy, -dx)``. If every
projection is displaced by ``+c`` columns the axis appears ``c`` columns further right, hence
``center + common_dx``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tomoflow._checks import check_number, validate_angles
from tomoflow.backend import get_namespace, to_numpy
from tomoflow.errors import InputError

__all__ = ["fix_gauge", "GaugeResult"]


@dataclass(frozen=True)
class GaugeResult:
    """Gauge-fixed shifts and what was taken out of them.

    Attributes
    ----------
    shifts
        ``(n, 2)`` float64 ``(dy, dx)`` pixels with zero mean on both axes (and no object-translation
        sinusoid in ``dx`` when angles were given); same namespace as the input.
    common_dy
        Mean vertical shift removed (pixels); unobservable, reported for completeness.
    common_dx
        Common horizontal shift removed (pixels): a rotation-centre change.
    center
        ``center + common_dx`` (detector column, pixels) when a centre was given, else None.
    object_shift
        ``(ty, tx)`` slice-plane translation of the object (pixels, ``(y, x)`` axes of the
        reconstruction) whose projection sinusoid was removed from ``dx``; None without angles.
    """

    shifts: Any
    common_dy: float
    common_dx: float
    center: float | None
    object_shift: tuple[float, float] | None = None


def fix_gauge(shifts: Any, *, center: float | None = None, angles_deg: Any = None) -> GaugeResult:
    """Remove the unobservable common shift from jitter estimates (see the module docstring).

    Parameters
    ----------
    shifts
        ``(n, 2)`` jitter ``(dy, dx)`` in pixels (NumPy or CuPy).
    center
        Rotation-axis column (pixels) the shifts were estimated with; returned moved by the common
        ``dx``. None: only the shifts are fixed.
    angles_deg
        ``(n,)`` projection angles in degrees. When given, ``dx`` is fitted by least squares with
        ``c + tx cos(theta) + ty sin(theta)`` and the whole fit is removed (``common_dx = c``,
        ``object_shift = (ty, tx)``); otherwise only the mean is removed.

    Returns
    -------
    GaugeResult

    Raises
    ------
    InputError
        ``shifts`` not ``(n, 2)`` with ``n >= 1``, not finite, or angles not matching them.
    ConfigError
        ``center`` not a finite number.
    """
    xp = get_namespace(shifts)
    sh = xp.asarray(shifts, dtype=xp.float64)
    if sh.ndim != 2 or sh.shape[1] != 2 or sh.shape[0] == 0:
        raise InputError(
            f"shifts must be (n, 2) = (dy, dx) per projection, got shape {tuple(sh.shape)}", dataset="shifts"
        )
    if not bool(xp.all(xp.isfinite(sh))):
        raise InputError("shifts contain NaN or Inf", dataset="shifts")
    if center is not None:
        center = check_number("center (pixels)", center)
    common_dy = float(xp.mean(sh[:, 0]))
    out = sh.copy()
    out[:, 0] -= common_dy
    object_shift = None
    if angles_deg is None:
        common_dx = float(xp.mean(sh[:, 1]))
        out[:, 1] -= common_dx
    else:
        theta = np.deg2rad(validate_angles(angles_deg, int(sh.shape[0])))
        basis = np.stack([np.ones_like(theta), np.cos(theta), np.sin(theta)], axis=1)
        coef, *_ = np.linalg.lstsq(basis, to_numpy(sh[:, 1]), rcond=None)
        out[:, 1] -= xp.asarray(basis @ coef)
        common_dx = float(coef[0])
        object_shift = (float(coef[2]), float(coef[1]))
    return GaugeResult(
        shifts=out,
        common_dy=common_dy,
        common_dx=common_dx,
        center=None if center is None else center + common_dx,
        object_shift=object_shift,
    )
