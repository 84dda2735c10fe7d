"""The 9-degree-of-freedom transform of multiscale registration, in physical coordinates.

Convention (binding for the whole package): physical coordinates are ``(z, y, x)`` in micrometres; a
volume's frame has its origin at the centre of its first voxel, so voxel ``(i, j, k)`` sits at
``(i dz, j dy, k dx)``. A registration result is the 4 x 4 homogeneous matrix ``M`` (column vectors,
``p_lfov = M @ [z, y, x, 1]``) that maps HR physical coordinates to LFOV physical coordinates.

Parametrisation (:class:`Affine9`): rotation ``R`` (rotation vector, radians: axis times angle, in
``(z, y, x)`` components), per-axis scale ``S = diag(s)`` applied first in the HR frame, and a
translation, all about a fixed point ``c`` (the HR volume's centre):

    ``M(p) = R S (p - c) + c + t``

so rotating or scaling leaves the ROI centre where the translation put it and the nine parameters do not
trade off against each other (about a corner, a small rotation would also move the centre). The
composition is R·S, a true rotation of a scaled frame (SimpleITK's ``ScaleVersor3DTransform`` is
``R + S - I``, which is not).

Kernels only: NumPy (and torch for the differentiable form), no files. :func:`check_affine` is the
one check of a matrix before it is used (registration priors, resampling).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt

from tomoflow.errors import ConfigError, InputError

__all__ = [
    "Affine9",
    "rotation_from_rotvec",
    "rotation_vector",
    "voxel_to_physical",
    "compose",
    "torch_matrix",
    "prior_from_stage",
    "check_affine",
    "MAX_CONDITION",
    "SCALE_RANGE",
]

MAX_CONDITION = 1e3
"""Largest condition number (largest / smallest singular value) of a matrix's linear part. Both frames
are micrometres, so a registration or a grid change is a rotation with scales near 1 (condition near
1); a linear part that stretches one direction a thousand times more than another squeezes the grid
onto a plane or a line of the source: singular for every practical purpose."""

SCALE_RANGE = (1e-3, 1e3)
"""Smallest and largest singular value of a matrix's linear part (micrometres per micrometre): beyond
them the matrix maps the grid to a point or the source to a point (a zero matrix, a unit mistake)."""


def rotation_from_rotvec(rotvec: Any) -> np.ndarray:
    """3 x 3 rotation matrix of a rotation vector ``(z, y, x)`` (radians; Rodrigues' formula)."""
    v = np.asarray(rotvec, dtype=np.float64).reshape(3)
    theta = float(np.linalg.norm(v))
    if theta < 1e-15:
        return np.eye(3)
    k = v / theta
    kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + np.sin(theta) * kx + (1.0 - np.cos(theta)) * (kx @ kx)


def rotation_vector(rot: Any) -> np.ndarray:
    """Rotation vector ``(z, y, x)`` (radians) of a 3 x 3 rotation matrix (inverse of
    :func:`rotation_from_rotvec` for angles below 180 degrees)."""
    r = np.asarray(rot, dtype=np.float64)
    cos = np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)
    theta = float(np.arccos(cos))
    w = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    if theta < 1e-12:
        return w / 2.0
    return w * theta / (2.0 * np.sin(theta))


def voxel_to_physical(spacing_um: Any) -> np.ndarray:
    """4 x 4 matrix from voxel indices ``(i, j, k, 1)`` to physical micrometres of a volume's frame."""
    m = np.eye(4)
    m[:3, :3] = np.diag(np.broadcast_to(np.asarray(spacing_um, dtype=np.float64), (3,)))
    return m


def prior_from_stage(
    hr_shape: Any, hr_spacing_um: Any, hr_stage_um: Any, lfov_shape: Any, lfov_spacing_um: Any, lfov_stage_um: Any
) -> np.ndarray:
    """The stage prior: a translation-only HR -> LFOV matrix from where the stage put each volume.

    A stage position is the stage coordinate ``(z, y, x)`` (micrometres) of the volume's centre, as the
    microscope records it for each scan. In the LFOV frame the HR centre then sits at
    ``c_lfov + (hr_stage - lfov_stage)``, so ``t = hr_stage - lfov_stage + c_lfov - c_hr`` with
    ``c = (n - 1) / 2 * spacing`` (rotation and scale unknown: identity).
    """

    def centre(shape: Any, sp: Any) -> np.ndarray:
        return (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0 * np.broadcast_to(np.asarray(sp, np.float64), (3,))

    m = np.eye(4)
    m[:3, 3] = (
        np.asarray(hr_stage_um, np.float64)
        - np.asarray(lfov_stage_um, np.float64)
        + centre(lfov_shape, lfov_spacing_um)
        - centre(hr_shape, hr_spacing_um)
    )
    return m


def check_affine(matrix: Any, what: str = "matrix", path: str | os.PathLike | None = None) -> np.ndarray:
    """A 4 x 4 HR -> LFOV (output -> source) matrix checked before it is used: the one home of this rule.

    Checks: numbers of shape 4 x 4, all finite, last row ``0 0 0 1``, and an invertible, well
    conditioned linear part (singular values within :data:`SCALE_RANGE`, condition number at most
    :data:`MAX_CONDITION`; a reflection is allowed).

    Parameters
    ----------
    matrix
        The matrix (array-like).
    what
        Its name in the message (``"matrix"``, ``"prior"``, ``'"matrix" of the registration'``).
    path
        The file it was read from: the error is then an :class:`~tomoflow.errors.InputError` naming
        it; without, a :class:`~tomoflow.errors.ConfigError` (a bad parameter).

    Returns
    -------
    numpy.ndarray
        ``(4, 4)`` float64.

    Raises
    ------
    InputError, ConfigError
        Naming ``what`` and the rule it breaks.
    """

    def fail(problem: str) -> NoReturn:
        if path is not None:
            raise InputError(f"{what} {problem}", path=path)
        raise ConfigError(f"{what} {problem}")

    try:
        m = np.array(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        fail("is not a 4 x 4 matrix of numbers")
    if m.shape != (4, 4):
        fail(f"must be a 4 x 4 affine matrix, got shape {m.shape}")
    if not np.all(np.isfinite(m)):
        fail("holds NaN or Inf")
    if not np.array_equal(m[3], [0.0, 0.0, 0.0, 1.0]) and not np.allclose(m[3], [0, 0, 0, 1], rtol=0, atol=1e-9):
        fail(f"must be affine: its last row is {m[3].tolist()}, not [0, 0, 0, 1]")
    sv = np.linalg.svd(m[:3, :3], compute_uv=False)
    lo, hi = SCALE_RANGE
    if sv[-1] <= 0.0 or sv[-1] < lo:
        fail(
            f"is singular (smallest singular value of its linear part {sv[-1]:.3g}, below {lo:g}): it maps the "
            "grid onto a plane, a line or a point"
        )
    if sv[0] > hi:
        fail(
            f"scales by {sv[0]:.3g} (largest singular value of its linear part, above {hi:g}): not a "
            "micrometre-to-micrometre map"
        )
    cond = float(sv[0] / sv[-1])
    if cond > MAX_CONDITION:
        fail(
            f"is ill-conditioned (condition number {cond:.3g} of its linear part, above {MAX_CONDITION:g}): it "
            "squeezes the grid onto nearly a plane or a line"
        )
    m[3] = (0.0, 0.0, 0.0, 1.0)
    return m


def compose(*matrices: Any) -> np.ndarray:
    """Product of 4 x 4 matrices, applied right to left (``compose(A, B) @ p == A @ (B @ p)``)."""
    out = np.eye(4)
    for m in matrices:
        out = out @ np.asarray(m, dtype=np.float64)
    return out


@dataclass(frozen=True)
class Affine9:
    """Rotation, per-axis scale and translation about a fixed point (module docstring).

    Attributes
    ----------
    rotation
        Rotation vector ``(z, y, x)``, radians.
    scale
        Per-axis scales ``(sz, sy, sx)`` of the HR frame (1 = none).
    translation
        ``(tz, ty, tx)`` micrometres: where the fixed point lands in the LFOV frame, minus ``center``.
    center
        The fixed point ``c`` in HR physical micrometres (the HR volume's centre).
    """

    rotation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def matrix(self) -> np.ndarray:
        """The 4 x 4 HR-physical -> LFOV-physical matrix."""
        a = rotation_from_rotvec(self.rotation) @ np.diag(np.asarray(self.scale, dtype=np.float64))
        c = np.asarray(self.center, dtype=np.float64)
        m = np.eye(4)
        m[:3, :3] = a
        m[:3, 3] = c + np.asarray(self.translation, dtype=np.float64) - a @ c
        return m

    @classmethod
    def from_matrix(cls, matrix: npt.ArrayLike, center: npt.ArrayLike) -> Affine9:
        """Decompose a 4 x 4 matrix whose linear part is ``R S`` (rotation times a positive diagonal
        scale) about ``center``; the inverse of :attr:`matrix` for such matrices. A linear part that is
        not of that form (shear) is projected onto it: ``S`` from the column norms, ``R`` the nearest
        rotation of ``A S^-1`` (SVD)."""
        m = np.asarray(matrix, dtype=np.float64)
        a = m[:3, :3]
        s = np.linalg.norm(a, axis=0)
        u, _, vt = np.linalg.svd(a / s)
        r = u @ vt
        if np.linalg.det(r) < 0:
            raise ValueError("the linear part of the matrix is a reflection, not a rotation")
        c = np.asarray(center, dtype=np.float64)
        t = m[:3, 3] - c + a @ c
        parts: Any = [tuple(float(v) for v in x) for x in (rotation_vector(r), s, t, c)]  # three components each
        return cls(*parts)

    @property
    def rotation_deg(self) -> float:
        """Rotation angle, degrees."""
        return float(np.degrees(np.linalg.norm(self.rotation)))

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable parameters (radians, scales, micrometres) plus the matrix."""
        return {
            "rotation_vector_rad": [float(v) for v in self.rotation],
            "rotation_deg": self.rotation_deg,
            "scale": [float(v) for v in self.scale],
            "translation_um": [float(v) for v in self.translation],
            "center_um": [float(v) for v in self.center],
            "matrix": self.matrix.tolist(),
        }


def torch_matrix(params: Any, center: Any) -> Any:
    """Differentiable 3 x 4 matrix ``[R S | c + t - R S c]`` of ``params`` = torch ``(9,)`` tensor
    ``(rotation vector rad (3), scale (3), translation um (3))``; ``center`` a ``(3,)`` tensor."""
    import torch

    v, s, t = params[:3], params[3:6], params[6:9]
    th2 = torch.sum(v * v)
    small = th2 < 1e-8
    th = torch.sqrt(torch.where(small, torch.ones_like(th2), th2))
    # Rodrigues with sin(t)/t and (1 - cos t)/t^2 by their series near 0 (smooth gradients at v = 0)
    fa = torch.where(small, 1.0 - th2 / 6.0, torch.sin(th) / th)
    fb = torch.where(small, 0.5 - th2 / 24.0, (1.0 - torch.cos(th)) / (th * th))
    zero = torch.zeros((), dtype=params.dtype, device=params.device)
    vx = torch.stack(
        [torch.stack([zero, -v[2], v[1]]), torch.stack([v[2], zero, -v[0]]), torch.stack([-v[1], v[0], zero])]
    )
    eye = torch.eye(3, dtype=params.dtype, device=params.device)
    r = eye + fa * vx + fb * (vx @ vx)
    a = r * s[None, :]
    b = center + t - a @ center
    return torch.cat([a, b[:, None]], dim=1)
