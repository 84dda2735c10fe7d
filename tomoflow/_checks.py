"""Argument checks shared by every layer: one implementation of each check, one error type per cause.

Bad *data* (arrays, angle lists, frame stacks) raises :class:`~tomoflow.errors.InputError`, naming the
file and dataset when there is one; bad *parameters* (unknown option names, out-of-range numbers)
raise :class:`~tomoflow.errors.ConfigError`. Kernels (NumPy or CuPy arrays) and readers (files) use
the same functions, so a check and its message exist once.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tomoflow.backend import get_namespace, to_numpy
from tomoflow.errors import ConfigError, InputError, StoreError

__all__ = [
    "validate_angles",
    "validate_scan_geometry",
    "projection_directions",
    "ScanNeed",
    "SCAN_NEEDS",
    "ANGLE_TOLERANCE_DEG",
    "MAX_ANGLE_SPAN_DEG",
    "MAX_ABS_ANGLE_DEG",
    "MIN_MEASURED_FRACTION",
    "MAX_NONFINITE_FRACTION",
    "MeasuredCheck",
    "check_frames",
    "as_stack",
    "check_finite",
    "check_choice",
    "check_number",
    "check_int",
    "check_seed",
    "random_generator",
    "MAX_SEED",
    "format_bytes",
    "check_planned_output",
    "check_planned_memory",
    "MAX_PLANNED_BYTES",
    "MAX_CHUNKS",
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


# ----------------------------------------------------------------------------- scan physics (InputError)
#: Two angles closer than this modulo 180 degrees see the sample along the same direction (a
#: thousandth of a degree moves the edge of a 4096-pixel detector by 0.04 pixel).
ANGLE_TOLERANCE_DEG = 1e-3
#: Largest span (max - min) of the angles of one scan: ten full turns. A rotation stage does not turn
#: further in one scan; a larger span means angles in another unit (encoder counts, millidegrees).
MAX_ANGLE_SPAN_DEG = 3600.0
#: Largest magnitude of an angle (degrees): beyond it a float64 angle no longer resolves
#: :data:`ANGLE_TOLERANCE_DEG` comfortably, and no stage reports such positions.
MAX_ABS_ANGLE_DEG = 1e6
#: Fewest pixels of the projections (as a fraction) that must give a finite line integral (counts
#: finite and above the dark level; line integrals finite). Where counts do not exceed the dark
#: level no X-ray was measured: ``-log`` has nothing to take, and normalisation can only clip.
MIN_MEASURED_FRACTION = 0.5
#: Largest fraction of NaN/Inf values in the projections of a scan: what reconstruction accepts in a
#: slab (:data:`tomoflow.pipeline.reconstruct.MAX_NONFINITE_FRACTION`); a scan with more cannot be used.
MAX_NONFINITE_FRACTION = 1e-3


@dataclass(frozen=True)
class ScanNeed:
    """What a consumer of a scan needs from its angles.

    Attributes
    ----------
    what
        The consumer, in words (named in errors).
    min_directions
        Fewest distinct projection directions (angles modulo 180 degrees, :data:`ANGLE_TOLERANCE_DEG`
        apart).
    max_gap_deg
        Largest gap between neighbouring directions around the half turn (None: any coverage).
    pair_tolerance_deg
        When set, two angles must lie 180 degrees apart within this tolerance (a mirrored pair).
    min_columns
        Fewest detector columns.
    """

    what: str
    min_directions: int
    max_gap_deg: float | None = None
    pair_tolerance_deg: float | None = None
    min_columns: int = 2


#: The needs of every consumer of a scan store, by stage/method name. Why these minima:
#:
#: * ``scan`` (ingest; every stage opening a store): 2 directions. One direction (a single
#:   projection, or every angle equal modulo 180 degrees) is a radiograph: nothing tomographic can be
#:   computed from it.
#: * reconstructions (``fbp``, ``sirt``, ``mlem``) and the Fourier-metric centre (``center-vo``):
#:   4 directions, no gap over 90 degrees. ``n`` directions over the half turn sample, free of angular
#:   aliasing, a disc of about ``2 n / pi`` pixels (Crowther's criterion): with fewer than 4 that disc
#:   is under 2.5 pixels, too small to hold a feature next to its background, so the slice shows
#:   streaks only (2 directions: the sum of two smears). The Fourier metric needs angular harmonics
#:   beyond its 2-harmonic mask, i.e. 3 projections at the very least. Directions leaving a gap over 90
#:   degrees cover less than half of the half turn: most of every slice's Fourier space is missing (a
#:   common cause: angles in radians read as degrees, 0..3.14).
#: * ``align``: 8 directions (:data:`tomoflow.align.consistency.MIN_ANGLES`: the shifts are estimated
#:   against reprojections of a reference reconstruction, which needs a disc of 5 pixels to register
#:   against), no gap over 90 degrees.
#: * ``center-pair``: 2 directions and a pair of angles 180 degrees apart within 0.6 degree (the
#:   method correlates a projection with the mirror image of its opposite).
#:
#: Detector columns: a scan needs 2 (one column sees only lines through the axis: one line integral
#: per angle); the reconstructions and centre estimates need 4 (the same 2-pixel feature beside its
#: background; the pair correlation refines over +-1.5 px); alignment 8.
SCAN_NEEDS: dict[str, ScanNeed] = {
    "scan": ScanNeed("a tomography scan", 2),
    "fbp": ScanNeed("FBP reconstruction", 4, 90.0, min_columns=4),
    "sirt": ScanNeed("SIRT reconstruction", 4, 90.0, min_columns=4),
    "mlem": ScanNeed("MLEM reconstruction", 4, 90.0, min_columns=4),
    "center-vo": ScanNeed("the rotation-centre estimate (method vo)", 4, 90.0, min_columns=4),
    "center-pair": ScanNeed("the rotation-centre estimate (method pair)", 2, None, 0.6, min_columns=4),
    "align": ScanNeed("jitter alignment", 8, 90.0, min_columns=8),
}


def projection_directions(angles_deg: Any, tolerance_deg: float = ANGLE_TOLERANCE_DEG) -> np.ndarray:
    """The distinct projection directions of a set of angles, in degrees in ``[0, 180)``, sorted.

    A parallel-beam projection at ``theta + 180`` sees the same lines as the one at ``theta``
    (mirrored), so angles are folded modulo 180 degrees; directions closer than ``tolerance_deg``
    (also across 0/180) count once.

    >>> projection_directions([0, 90, 180, 270, 360, 45.0000001]).tolist()
    [0.0, 45.0000001, 90.0]
    """
    folded = np.sort(np.mod(np.asarray(to_numpy(angles_deg), dtype=np.float64).reshape(-1), 180.0))
    if folded.size == 0:
        return folded
    keep = np.concatenate([[True], np.diff(folded) > tolerance_deg])
    dirs = folded[keep]
    if dirs.size > 1 and dirs[0] + 180.0 - dirs[-1] <= tolerance_deg:
        dirs = dirs[:-1]  # the last direction is the first one seen from the other side
    return dirs


def _largest_gap(dirs: np.ndarray) -> float:
    """Largest angular gap (degrees) between neighbouring directions around the half turn."""
    if dirs.size < 2:
        return 180.0
    return float(np.max(np.diff(np.concatenate([dirs, [dirs[0] + 180.0]]))))


def validate_scan_geometry(
    angles_deg: Any,
    n_angles: int | None = None,
    *,
    need: str = "scan",
    path: PathLike = None,
    dataset: str | None = "angles",
    n_columns: int | None = None,
) -> np.ndarray:
    """Rotation angles checked to describe a tomography scan that ``need`` can use (the one home of
    this policy: ingest checks ``"scan"`` before a store is created, and each stage checks its own
    need when it opens a store).

    Checks, in order: numbers, count, finite (:func:`validate_angles`); every angle within
    :data:`MAX_ABS_ANGLE_DEG` and a span of at most :data:`MAX_ANGLE_SPAN_DEG` (ten turns); at least
    ``SCAN_NEEDS[need].min_directions`` distinct projection directions
    (:func:`projection_directions`); and, where the need says so, no gap between neighbouring
    directions wider than ``max_gap_deg``.

    Parameters
    ----------
    angles_deg
        Angles in degrees (array-like, NumPy or CuPy).
    n_angles
        Expected number of angles (projections), or None.
    need
        A key of :data:`SCAN_NEEDS` (``"scan"``, ``"fbp"``, ``"sirt"``, ``"mlem"``, ``"center-vo"``,
        ``"center-pair"``, ``"align"``).
    path, dataset
        File or store, and dataset, named in errors.
    n_columns
        Detector columns of the projections, checked against the need's ``min_columns`` (None: not
        checked).

    Returns
    -------
    numpy.ndarray
        ``(angle,)`` float64 degrees.

    Raises
    ------
    InputError
        The angles (or the detector) do not describe such a scan; the message names the rule and the
        minimum.
    ConfigError
        Unknown ``need``.
    """
    spec = SCAN_NEEDS.get(need)
    if spec is None:
        raise ConfigError(f"unknown scan need {need!r}; choose one of {', '.join(map(repr, SCAN_NEEDS))}")
    angles = validate_angles(angles_deg, n_angles, path, dataset)
    if n_columns is not None and int(n_columns) < spec.min_columns:
        raise InputError(
            f"{spec.what} needs a detector of at least {spec.min_columns} columns; these projections "
            f"have {int(n_columns)}",
            path,
            "projections",
        )
    lo, hi = float(angles.min()), float(angles.max())
    span = hi - lo
    if span > MAX_ANGLE_SPAN_DEG:
        raise InputError(
            f"angles span {span:g} degrees (from {lo:g} to {hi:g}); a scan turns at most "
            f"{MAX_ANGLE_SPAN_DEG / 360:g} turns ({MAX_ANGLE_SPAN_DEG:g} degrees): angles in another unit "
            "(encoder counts, millidegrees)?",
            path,
            dataset,
        )
    worst = lo if abs(lo) > abs(hi) else hi
    if abs(worst) > MAX_ABS_ANGLE_DEG:
        raise InputError(
            f"angle {worst:g} degrees is beyond +-{MAX_ABS_ANGLE_DEG:g} degrees: not a rotation stage "
            "position (angles in another unit, or a corrupt angle list?)",
            path,
            dataset,
        )
    dirs = projection_directions(angles)
    if dirs.size < spec.min_directions:
        why = (
            " (every angle is the same modulo 180 degrees)"
            if dirs.size == 1 and angles.size > 1
            else " (a single projection)"
            if angles.size == 1
            else ""
        )
        raise InputError(
            f"{spec.what} needs at least {spec.min_directions} distinct projection directions "
            f"(angles differing modulo 180 degrees by more than {ANGLE_TOLERANCE_DEG:g} degree); these "
            f"{angles.size} angles give {dirs.size}{why}",
            path,
            dataset,
        )
    if spec.max_gap_deg is not None:
        gap = _largest_gap(dirs)
        if gap > spec.max_gap_deg:
            hint = (
                "; are they in radians? tomoflow takes degrees"
                if 3.0 <= span <= 2 * math.pi + 1e-6 and angles.size > 2
                else ""
            )  # pi or 2 pi
            raise InputError(
                f"{spec.what} needs projection directions around the half turn with no gap over "
                f"{spec.max_gap_deg:g} degrees; these angles ({lo:g} to {hi:g}) leave a gap of "
                f"{gap:.1f} degrees{hint}",
                path,
                dataset,
            )
    if spec.pair_tolerance_deg is not None:
        s = np.sort(angles)
        j = np.clip(np.searchsorted(s, s + 180.0), 1, s.size - 1)
        seps = np.stack([np.abs(s[j] - s), np.abs(s[j - 1] - s)])  # the two neighbours of s + 180
        k = np.unravel_index(int(np.argmin(np.abs(seps - 180.0))), seps.shape)
        if abs(seps[k] - 180.0) > spec.pair_tolerance_deg:
            raise InputError(
                f"{spec.what} needs two angles 180 degrees apart (within {spec.pair_tolerance_deg:g} "
                f"degree); the pair closest to that is {float(seps[k]):.2f} degrees apart; use method "
                "'vo'",
                path,
                dataset,
            )
    return angles


class MeasuredCheck:
    """Streamed check that projections carry measurements: finite line integrals.

    Feed it every block of projections as they stream (:meth:`update`); each projection must hold at
    least one pixel with a finite line integral, and at the end (:meth:`finish`) at least
    :data:`MIN_MEASURED_FRACTION` of all pixels must, and at most :data:`MAX_NONFINITE_FRACTION` of
    all values may be NaN/Inf (more is a corrupt file, and reconstruction refuses it). A pixel of raw
    counts (``values="intensity"``) has a finite line integral when it is finite and above the dark
    level (the mean dark frame, or 0 without darks): otherwise the transmission ``(p - dark) / (flat - dark)`` is
    not positive and
    ``-log`` is undefined. A pixel of line integrals needs to be finite.

    Parameters
    ----------
    values
        ``"intensity"`` or ``"line-integral"``.
    darks
        ``(frame, row, col)`` dark frames (or None / zero frames) of raw counts.
    path, dataset
        File and dataset named in errors.
    """

    def __init__(self, values: str, darks: Any = None, path: PathLike = None, dataset: str | None = "projections"):
        self.values = values
        self.path, self.dataset = path, dataset
        self.dark: np.ndarray | None = None
        if values == "intensity" and darks is not None and getattr(darks, "shape", (0,))[0]:
            d = np.asarray(darks, dtype=np.float64)
            finite = np.isfinite(d)
            count = finite.sum(axis=0)
            mean = np.where(finite, d, 0.0).sum(axis=0) / np.maximum(count, 1)
            self.dark = np.where(count > 0, mean, 0.0).astype(np.float32)
        self.measured = 0
        self.nonfinite = 0
        self.total = 0

    def update(self, start: int, block: Any) -> None:
        """Check projections ``start .. start + len(block) - 1`` (a ``(angle, row, col)`` block)."""
        b = np.asarray(block)
        finite = np.isfinite(b) if b.dtype.kind == "f" else np.ones(b.shape, bool)
        ok = finite if self.values != "intensity" else finite & (b > (0 if self.dark is None else self.dark))
        per = ok.reshape(b.shape[0], -1).sum(axis=1)
        if b.shape[0] and per.min() == 0:
            k = int(np.argmin(per))
            if not finite[k].any():
                problem = "contains no finite value (all NaN/Inf)"
            else:
                level = "0" if self.dark is None else f"the dark level (mean {float(self.dark.mean()):.4g})"
                top = float(np.max(np.where(finite[k], b[k], -np.inf)))
                problem = (
                    f"has no pixel above {level}, its largest value being {top:.4g}: its counts give no "
                    "finite line integral (transmission <= 0 everywhere)"
                )
            raise InputError(f"projection {start + k} {problem}", self.path, self.dataset)
        self.measured += int(per.sum())
        self.nonfinite += int(b.size - np.count_nonzero(finite))
        self.total += int(b.size)

    def finish(self) -> float:
        """The fraction of pixels with a finite line integral; :class:`InputError` below the minimum."""
        frac = self.measured / self.total if self.total else 0.0
        bad = self.nonfinite / self.total if self.total else 0.0
        if bad > MAX_NONFINITE_FRACTION:
            raise InputError(
                f"{self.nonfinite} projection values are NaN/Inf ({100 * bad:.2g} %); at most "
                f"{100 * MAX_NONFINITE_FRACTION:g} % may be (a corrupt or partly written file?)",
                self.path,
                self.dataset,
            )
        if frac < MIN_MEASURED_FRACTION:
            what = "finite counts above the dark level" if self.values == "intensity" else "finite values"
            raise InputError(
                f"only {100 * frac:.1f} % of the projection pixels give a finite line integral ({what}); "
                f"at least {100 * MIN_MEASURED_FRACTION:g} % must (wrong dark frames, or values "
                "that are not raw counts?)",
                self.path,
                self.dataset,
            )
        return frac


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
def box_of_slices(key: Any, shape: Sequence[int], what: str) -> tuple[tuple[int, int], ...]:
    """The ``(start, stop)`` per axis that a basic-slicing ``key`` reads of a ``shape`` array: ``...``, or
    up to ``len(shape)`` slices of step 1 (missing trailing axes whole). What the array-likes that compute
    a box on read (a resampled grid, a chunk cache, one side of a training pair) accept.

    Raises
    ------
    TypeError
        Any other key (integers, arrays, steps), naming ``what`` is read.

    Examples
    --------
    >>> box_of_slices((slice(2, 5), slice(None)), (10, 4, 6), "a volume")
    ((2, 5), (0, 4), (0, 6))
    """
    keys = () if key is Ellipsis else key if isinstance(key, tuple) else (key,)
    if len(keys) > len(shape) or not all(isinstance(k, slice) for k in keys):
        raise TypeError(f"{what} is read by up to {len(shape)} slices, got {key!r}")
    keys = keys + (slice(None),) * (len(shape) - len(keys))
    ranges = [k.indices(int(n)) for k, n in zip(keys, shape)]
    if any(step != 1 for _, _, step in ranges):
        raise TypeError(f"{what} is read by slices of step 1, got {key!r}")
    return tuple((a, max(a, b)) for a, b, _ in ranges)


def check_choice(name: str, value: Any, choices: Iterable[str | None]) -> str:
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


#: Largest seed accepted (every random generator tomoflow uses takes a 63-bit non-negative integer).
MAX_SEED = 2**63 - 1


def check_seed(name: str, value: Any) -> int:
    """A random seed: an integer in ``[0, 2**63 - 1]``, else :class:`ConfigError` naming ``name``.

    NumPy refuses negative seeds and torch refuses seeds beyond 64 bits; the check says so up front.
    """
    try:
        ok = not isinstance(value, bool) and int(value) == value and 0 <= int(value) <= MAX_SEED
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ConfigError(f"{name} must be an integer from 0 to 2**63 - 1, got {value!r}")
    return int(value)


def random_generator(seed: Any, name: str = "seed") -> np.random.Generator:
    """:func:`numpy.random.default_rng` of ``seed`` (None, an integer, a SeedSequence, a Generator ...),
    with a bad seed (negative, not a number) a :class:`ConfigError` naming ``name``, not NumPy's error."""
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return np.random.default_rng(check_seed(name, seed))
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{name} must be an integer from 0 to 2**63 - 1 (or a NumPy seed sequence), got {seed!r} ({exc})"
        ) from None


# ----------------------------------------------------------------------------- planned outputs
#: Largest output one command may plan (bytes), whatever the free space: 1 PiB. Beyond it a size
#: parameter is surely mistyped.
MAX_PLANNED_BYTES = 2**50
#: Most chunks (files) one planned array may have: beyond it the file system, not the data, is the work.
MAX_CHUNKS = 10_000_000


def format_bytes(n: float) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def _existing_folder(path: str | os.PathLike) -> Path:
    p = Path(os.path.abspath(os.fspath(path)))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p if p.is_dir() else p.parent


def check_planned_output(
    what: str, nbytes: float, path: str | os.PathLike | None = None, *, n_chunks: float | None = None
) -> None:
    """Refuse, before anything is created, an output whose planned size cannot be right.

    Parameters
    ----------
    what
        The output and what sets its size, in words (``"simulate --size 100000: the scan"``).
    nbytes
        Planned bytes (uncompressed: the most it can take).
    path
        Where it will be written: its file system must have ``nbytes`` free.
    n_chunks
        Planned number of chunks (files), at most :data:`MAX_CHUNKS`.

    Raises
    ------
    ConfigError
        More than :data:`MAX_PLANNED_BYTES` or :data:`MAX_CHUNKS`.
    StoreError
        More than the free space where it is written.
    """
    if not math.isfinite(nbytes) or nbytes > MAX_PLANNED_BYTES:
        raise ConfigError(
            f"{what} would take {format_bytes(nbytes)}, over the {format_bytes(MAX_PLANNED_BYTES)} "
            "that one command may plan; check the sizes"
        )
    if n_chunks is not None and n_chunks > MAX_CHUNKS:
        raise ConfigError(
            f"{what} would be split into {n_chunks:,.0f} chunks (files), over {MAX_CHUNKS:,}; "
            "use larger chunks or a smaller size"
        )
    if path is not None:
        folder = _existing_folder(path)
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            return  # an unreadable location is reported when it is written
        if nbytes > free:
            raise StoreError(
                f"{path}: {what} would take up to {format_bytes(nbytes)} (uncompressed) and {folder} has "
                f"{format_bytes(free)} free; free some space or write elsewhere"
            )


def check_planned_memory(what: str, nbytes: float, *, fraction: float = 0.8) -> None:
    """Refuse, before any work, a computation that must hold ``nbytes`` in memory at once when that
    is more than ``fraction`` of the memory available now (or more than :data:`MAX_PLANNED_BYTES`).

    Raises
    ------
    ConfigError
        Naming ``what``, the bytes needed and those available.
    """
    if not math.isfinite(nbytes) or nbytes > MAX_PLANNED_BYTES:
        raise ConfigError(f"{what} would hold {format_bytes(nbytes)} in memory; check the sizes")
    try:
        import psutil

        available = float(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - psutil missing or unusable: only the cap applies
        return
    if nbytes > fraction * available:
        raise ConfigError(
            f"{what} would hold {format_bytes(nbytes)} in memory at once and "
            f"{format_bytes(available)} is available; choose smaller sizes"
        )


def check_flats_brighter(flat: Any, dark: Any, path: PathLike = None, *, max_bad_fraction: float = 0.5) -> None:
    """Refuse flat fields that cannot normalise a scan: all zero, or not brighter than the darks.

    Parameters
    ----------
    flat, dark
        ``(row, col)`` mean flat and mean dark (counts; ``dark`` None: zero), or sampled rows of them.
    path
        The file or store named in the error.
    max_bad_fraction
        Largest fraction of pixels allowed a flat <= dark or a non-finite flat.

    Raises
    ------
    InputError
        Naming the file and the ``flats`` dataset, with the fraction of bad pixels.
    """
    flat = np.asarray(flat, dtype=np.float64)
    dark = np.zeros_like(flat) if dark is None else np.asarray(dark, dtype=np.float64)
    bad = ~np.isfinite(flat) | (flat <= np.nan_to_num(dark, nan=0.0))
    if bad.size and bad.mean() > max_bad_fraction:
        what = (
            "all zero"
            if np.all(np.nan_to_num(flat) == 0)
            else f"not brighter than the darks in {100 * bad.mean():.0f} % of pixels"
        )
        raise InputError(
            f"the flat fields are {what}; the scan cannot be normalised (re-ingest it with "
            "correct flats, or without flats if the projections are already normalised)",
            path,
            "flats",
        )
