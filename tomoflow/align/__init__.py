"""Jitter alignment (Fu et al. 2021 and classical baselines): kernels on arrays, no Dask, no files.

Sign convention (docs/architecture.md): a jitter ``(dy, dx)`` is how far a measured projection is displaced
from where a perfect stage would have put it (rows, columns; ``+dx`` = content moved to larger column
index). Alignment estimates it; correction moves the raw projection by ``(-dy, -dx)``, once
(:func:`apply_shifts`).

Methods of :func:`estimate_shifts`:

``"hybrid"`` (default)
    The ResNet's estimate, refined by consistency iterations (2x2-binned, then full resolution; OSEM
    references) to sub-pixel accuracy.
``"resnet"``
    MLEM + reprojection, then the network reads each (projection, reprojection) pair.
``"phase"``
    MLEM + reprojection, then upsampled phase correlation of each pair (the classical one-pass
    baseline the network replaces).
``"consistency"``
    Iterative reprojection alignment to convergence (TomoPy ``align_joint`` / PSI style baseline).

Modules: :mod:`~tomoflow.align.phase` (batched phase correlation), :mod:`~tomoflow.align.gauge`
(common-shift gauge), :mod:`~tomoflow.align.reproject`, :mod:`~tomoflow.align.consistency`,
:mod:`~tomoflow.align.resnet` (network, loading its weights), :mod:`~tomoflow.align.training_data`
(simulator of training pairs; the trainer is :mod:`tomoflow.train.aligner`), :mod:`~tomoflow.align.hybrid`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np
import numpy.typing as npt

from tomoflow._typing import Array, ArrayLike

if TYPE_CHECKING:  # estimate_shifts imports the methods when it runs; here only the result type
    from tomoflow.align.consistency import AlignResult

__all__ = ["estimate_shifts", "apply_shifts", "METHODS"]

METHODS = ("hybrid", "resnet", "phase", "consistency")


@overload
def estimate_shifts(
    projections: Array,
    angles_deg: ArrayLike,
    *,
    method: str = ...,
    center: str | float | None = ...,
    return_result: Literal[False] = ...,
    **options: Any,
) -> np.ndarray: ...
@overload
def estimate_shifts(
    projections: Array,
    angles_deg: ArrayLike,
    *,
    method: str = ...,
    center: str | float | None = ...,
    return_result: Literal[True],
    **options: Any,
) -> AlignResult: ...
@overload
def estimate_shifts(
    projections: Array,
    angles_deg: ArrayLike,
    *,
    method: str = ...,
    center: str | float | None = ...,
    return_result: bool,
    **options: Any,
) -> np.ndarray | AlignResult: ...


def estimate_shifts(
    projections: Array,
    angles_deg: ArrayLike,
    *,
    method: str = "hybrid",
    center: str | float | None = "auto",
    return_result: bool = False,
    **options: Any,
) -> np.ndarray | AlignResult:
    """Jitter ``(dy, dx)`` of every projection, in pixels.

    Parameters
    ----------
    projections
        ``(angle, row, col)`` line integrals (flat/dark-normalised, ``-log``), NumPy or CuPy.
    angles_deg
        ``(angle,)`` rotation angles in degrees.
    method
        ``"hybrid"``, ``"resnet"``, ``"phase"`` or ``"consistency"`` (module docstring).
    center
        Rotation-axis column (px) to start from; ``"auto"`` estimates it; None = detector centre. The
        methods refine it: a common horizontal shift of all projections is a centre change.
    return_result
        Return the full :class:`~tomoflow.align.consistency.AlignResult` (shifts, refined centre,
        per-projection quality, convergence log) instead of the shifts alone.
    **options
        Options of the method's function (:func:`~tomoflow.align.hybrid.align_hybrid`,
        :func:`~tomoflow.align.hybrid.align_resnet`, :func:`~tomoflow.align.consistency.align_phase`,
        :func:`~tomoflow.align.consistency.align_consistency`).

    Returns
    -------
    numpy.ndarray
        ``(n_angles, 2)`` float64 ``(dy, dx)``, gauge-fixed (mean ``dy`` 0; the common ``dx`` is in
        the refined centre, see ``return_result``). Correct with :func:`apply_shifts`.

    Examples
    --------
    >>> import numpy as np
    >>> from tomoflow.align import estimate_shifts
    >>> from tomoflow.align.gauge import fix_gauge
    >>> from tomoflow.recon import project
    >>> from tomoflow.sim import apply_jitter, cathode_particle, random_jitter
    >>> angles = np.linspace(0, 180, 91)
    >>> ideal = project(cathode_particle((16, 64, 64), seed=1), angles)
    >>> truth = random_jitter(91, 3.0, seed=2)
    >>> shifts = estimate_shifts(apply_jitter(ideal, truth), angles, method="consistency")
    >>> residual = shifts - fix_gauge(truth, angles_deg=angles).shifts  # compare in the same gauge
    >>> bool(np.sqrt(np.mean(residual ** 2)) < 0.5)
    True
    """
    from tomoflow._checks import check_choice
    from tomoflow.align.consistency import align_consistency, align_phase
    from tomoflow.align.hybrid import align_hybrid, align_resnet

    method = check_choice("alignment method", str(method).lower(), METHODS)
    fn: Callable[..., Any] = {
        "hybrid": align_hybrid,
        "resnet": align_resnet,
        "phase": align_phase,  # type: ignore[assignment]  # mypy joins the four functions to `function`
        "consistency": align_consistency,
    }[method]
    result = fn(projections, angles_deg, center=center, **options)
    return result if return_result else result.shifts


def apply_shifts(projections: Array, shifts: npt.ArrayLike) -> Array:
    """Correct projections for their jitter: move each by ``-shifts`` (sub-pixel, Fourier), once.

    Parameters
    ----------
    projections
        ``(angle, row, col)`` raw or normalised projections, NumPy or CuPy.
    shifts
        ``(angle, 2)`` jitter ``(dy, dx)`` in pixels, as :func:`estimate_shifts` returns it.

    Returns
    -------
    array
        The corrected stack, same shape and namespace (float32).
    """
    from tomoflow.recon import shift_images

    return shift_images(projections, -np.asarray(shifts, dtype=np.float64))
