"""Argument checks shared by every layer: one implementation of each check, one error type per cause.

Bad *data* (arrays, angle lists, frame stacks) raises :class:`~tomoflow.errors.InputError`, naming the
file and dataset when there is one; bad *parameters* (unknown option names, out-of-range numbers)
raise :class:`~tomoflow.errors.ConfigError`. Kernels (NumPy or CuPy arrays) and readers (files) use
the same functions, so a check and its message exist once.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from tomoflow.backend import get_namespace, to_numpy
from tomoflow.errors import ConfigError, InputError

__all__ = [
    "validate_angles",
    "check_frames",
    "as_stack",
    "check_finite",
    "check_choice",
    "check_number",
    "check_int",
]

PathLike = str | os.PathLike | None


# ----------------------------------------------------------------------------- data (InputError)
def validate_angles(
    angles_deg: Any, n_angles: int | None = None, path: PathLike = None, dataset: str | None = None
) -> np.ndarray:
    """Rotation angles in degrees as a checked float64 ``(angle,)`` array on the host.

    Parameters
    ----------
    angles_deg
        Angles in degrees: array-like (NumPy, CuPy, list) of any shape, flattened.
    n_angles
        Expected number of angles (the number of projections), or None for any non-zero number.
    path, dataset
        File and dataset named in errors (readers); None for in-memory data (kernels).

    Returns
    -------
    numpy.ndarray
        ``(angle,)`` float64 degrees.

    Raises
    ------
    InputError
        Not numbers, count different from ``n_angles``, no angles, or NaN/Inf.
    """
    try:
        angles = np.asarray(to_numpy(angles_deg), dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise InputError(f"angles are not numbers ({exc})", path, dataset) from None
    if n_angles is not None and angles.size != n_angles:
        raise InputError(f"angle count mismatch: {angles.size} angles for {n_angles} projections", path, dataset)
    if angles.size == 0:
        raise InputError("no projection angles given", path, dataset)
    if not np.all(np.isfinite(angles)):
        raise InputError("angles contain NaN or Inf", path, dataset)
    return angles


def check_frames(
    name: str, frames: Any, n_rows: int, n_cols: int, path: PathLike = None, dataset: str | None = None
) -> Any:
    """A stack of flat or dark frames checked against the detector shape.

    Parameters
    ----------
    name
        ``"flats"`` or ``"darks"`` (named in errors; also the dataset unless ``dataset`` is given).
    frames
        ``(frame, row, col)`` array (NumPy, CuPy, memory map), or one ``(row, col)`` frame, which is
        returned as a stack of one. Zero frames are allowed. Nothing is copied or converted.
    n_rows, n_cols
        Detector shape of the projections (pixels).
    path, dataset
        File and dataset named in errors.

    Returns
    -------
    The ``(frame, row, col)`` stack (a view of ``frames``).

    Raises
    ------
    InputError
        Wrong rank, or a detector shape other than ``(n_rows, n_cols)``.
    """
    ds = name if dataset is None else dataset
    shape = tuple(int(s) for s in getattr(frames, "shape", ()))
    if len(shape) == 2:
        frames = frames[None]
        shape = (1, *shape)
    if len(shape) != 3:
        raise InputError(f"{name} must be 3-D (frame, row, col) or 2-D (row, col), got shape {shape}", path, ds)
    if shape[1:] != (int(n_rows), int(n_cols)):
        raise InputError(
            f"{name} detector shape {shape[1:]} differs from the projections' {(int(n_rows), int(n_cols))}", path, ds
        )
    return frames


def as_stack(
    array: Any, *, what: str = "projections", axes: Sequence[str] = ("angle", "row", "col"), axis: int = 0
) -> tuple[Any, bool]:
    """``array`` as a 3-D stack; one 2-D item is promoted by inserting ``axis``.

    Parameters
    ----------
    array
        NumPy or CuPy array.
    what
        What the array is (``"projections"``, ``"volume"``, ``"images"``), named in errors.
    axes
        Names of the three axes, for the error message.
    axis
        Position of the axis a 2-D input lacks: 0 for one projection ``(row, col)`` or one slice
        ``(y, x)``, 1 for one sinogram ``(angle, col)``.

    Returns
    -------
    stack, promoted
        The 3-D array (a view) and whether a 2-D input was promoted.

    Raises
    ------
    InputError
        If ``array`` is neither 2-D nor 3-D.
    """
    ndim = getattr(array, "ndim", None)
    if ndim == 2:
        return get_namespace(array).expand_dims(array, axis), True
    if ndim != 3:
        two = tuple(a for i, a in enumerate(axes) if i != axis)
        raise InputError(
            f"{what} must be ({', '.join(axes)}) or ({', '.join(two)}), got shape {tuple(getattr(array, 'shape', ()))}",
            dataset=what,
        )
    return array, False


def check_finite(array: Any, what: str, hint: str = "") -> None:
    """Raise :class:`InputError` if the (NumPy or CuPy) ``array`` holds NaN or Inf."""
    xp = get_namespace(array)
    if not bool(xp.all(xp.isfinite(array))):
        raise InputError(f"{what} contain NaN or Inf" + (f"; {hint}" if hint else ""), dataset=what)


# ----------------------------------------------------------------------------- parameters (ConfigError)
def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``, else :class:`ConfigError` listing them."""
    options = tuple(choices)
    if value not in options:
        raise ConfigError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, options))}")
    return value


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    if math.isinf(low) and math.isinf(high):
        return "a finite number"
    if math.isinf(high):
        return f"{'>' if low_open else '>='} {low:g}"
    if math.isinf(low):
        return f"{'<' if high_open else '<='} {high:g}"
    return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def check_number(
    name: str,
    value: Any,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float in the interval ``[low, high]`` (ends open when asked).

    Raises
    ------
    ConfigError
        Not a number, not finite, or out of range; the message names ``name`` and the range.
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    inside = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not (math.isfinite(v) and inside):
        raise ConfigError(f"{name} must be {_interval(low, high, low_open, high_open)}, got {value!r}")
    return v


def check_int(name: str, value: Any, *, low: int = 1) -> int:
    """``value`` as an int ``>= low`` (a float with an integral value is accepted), else :class:`ConfigError`."""
    try:
        ok = int(value) == value and int(value) >= low
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)
