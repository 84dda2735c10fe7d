"""Multiscale registration: an HR region-of-interest volume placed in an LFOV volume, to 9 DOF.

Stages (each starts from the previous one's transform; :func:`register`):

1. **Prior** — the stage positions' placement (a 4 x 4 HR -> LFOV matrix, usually a translation).
2. **Coarse translation** — the HR volume, smoothed to the LFOV's resolution, is sampled on the LFOV
   grid at the prior placement and cross-correlated (normalised, over the HR footprint) with the LFOV
   around it at every whole-voxel offset within ``search_um`` (by FFT, O(region log region)), with a
   parabolic sub-voxel peak; on the LFOV binned so that the footprint spans at most
   :data:`COARSE_MAX_EXTENT` voxels per axis (large ROIs).
3. **Translation** — normalised cross-correlation (NCC) maximised over the 3 translations.
4. **Rigid / 9 DOF** — then over rotation, per-axis scale and translation (``dof`` = 6 or 9): on the
   LFOV binned 2x first (when the ROI spans at least :data:`MIN_BINNED_FOOTPRINT` binned voxels per
   axis), then the HR smoothing that best matches the LFOV's (unknown) blur is chosen (highest NCC over
   :data:`SMOOTHING_TRIALS`), then at full LFOV resolution with it.

The similarity is always evaluated *at LFOV voxels*: the fixed image is the LFOV crop around the ROI
(tens of thousands of voxels for a 160³ HR ROI in a 4x coarser LFOV; at most :data:`MAX_FIXED_POINTS`,
a fixed random subset beyond), the moving image is the HR volume smoothed by a Gaussian of
``smoothing`` HR voxels (chosen as above by default: what an LFOV voxel averages plus its blur) and
sampled with trilinear interpolation at each LFOV voxel centre mapped into the HR frame. Since only
the smoothed HR is compared, it is held *sampled every ``step`` HR voxels*
(:mod:`tomoflow.register.moving`: HR index ``step k``, centres exact), ``step`` the smallest that keeps
the grid within :data:`MAX_MOVING_VOXELS` (1 up to a 256³ ROI, 2 for 384³, 3 for 768³; smoothing trials
below :data:`MIN_SIGMA_PER_STEP` steps, which would alias, are skipped). Interpolating this grid, a few
HR voxels fine, not the coarse LFOV, keeps the interpolation error far below the accuracy asked for (a
few hundredths of an HR voxel). Both images
are the same modality (X-ray attenuation), so NCC is the metric: it ignores gain and offset
differences between the scans and has a sharp, smooth optimum. The optimiser is L-BFGS (torch, strong
Wolfe line search) on parameters scaled to "LFOV voxels of displacement at the ROI's edge", so a unit
step in a rotation, a scale or a translation moves the ROI about equally (ITK's optimisers leave the
parameter scales to the user: a radian and a micrometre would otherwise weigh the same).

What is read and what memory depends on: only the LFOV region around the prior placement of the ROI
(plus the search margin) is read (``lfov[box]``), so ``lfov`` can be a lazily sliced zarr array of any
size. The HR volume is read through a :class:`~tomoflow.register.moving.MovingImage`: an in-memory
array is smoothed where it is; the pipeline's (:class:`tomoflow.pipeline.registration.StoreMoving`)
computes each smoothed, sampled image chunk by chunk from the volume store, so the HR level 0 is
never in memory. Memory is then bounded by the budgets, not by the volumes: at most two moving images
of :data:`MAX_MOVING_VOXELS` float32 samples at once (each computed when its stage needs it and dropped
after), at most :data:`MAX_FIXED_POINTS` fixed points, and the LFOV region (float32). Results that are
not plausible — a scale outside ``scale_range``, a rotation beyond ``max_rotation_deg``, a similarity no
better than the prior's — raise :class:`RegistrationError` instead of returning a transform.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from tomoflow import config as _config
from tomoflow._checks import check_choice, check_int, check_number
from tomoflow.errors import ConfigError, InputError, RegistrationError
from tomoflow.register.moving import ArrayMoving, MovingImage, moving_step, sampled_shape
from tomoflow.register.transform import Affine9, check_affine, torch_matrix

__all__ = ["register", "Registration", "DOFS"]

log = logging.getLogger(__name__)

DOFS = (3, 6, 9)
"""Degrees of freedom: translation, rigid (+ rotation), 9 (+ per-axis scale)."""

MIN_BINNED_FOOTPRINT = 16
"""Fewest 2x-binned LFOV voxels per axis across the ROI for the binned level to run."""

#: L-BFGS stopping: largest gradient component (1 - NCC per unit step, a unit step moving the ROI edge by
#: one LFOV voxel) and smallest change of 1 - NCC between iterations.
GRAD_TOL = 1e-7
LOSS_TOL = 1e-10

#: HR smoothing sigmas tried after the translation stage, as fractions of the voxel-size ratio.
SMOOTHING_TRIALS = (0.35, 0.5, 0.65, 0.8, 1.0)

MAX_MOVING_VOXELS = 256**3
"""Most samples of a moving image (the HR volume smoothed and sampled every ``step`` HR voxels; 64 MB of
float32): ``step`` is the smallest that keeps within it."""

SIGMA_PER_STEP = 1.0
"""The coarse stages' moving images (sigma ``s`` HR voxels) are sampled every ``max(budget step,
floor(s / SIGMA_PER_STEP))`` HR voxels: coarser where the Gaussian spans a whole step (nearly alias-free);
the fine stages' (whose NCCs are compared across sigmas) all every budget step."""

MIN_SIGMA_PER_STEP = 0.7
"""Smoothing trials below this many (budget) steps are skipped: their strided samples would alias."""

MAX_FIXED_POINTS = 1_500_000
"""Most LFOV voxels at which NCC is evaluated (a fixed random subset of the region beyond it)."""

COARSE_MAX_EXTENT = 128
"""The coarse translation search runs on the LFOV binned so that the ROI's footprint spans at most this
many binned voxels per axis."""


@dataclass
class Registration:
    """Result of :func:`register`.

    Attributes
    ----------
    matrix
        4 x 4 float64: HR physical ``(z, y, x)`` micrometres (origin at the HR volume's first voxel
        centre) -> LFOV physical micrometres (same convention).
    transform
        The same as :class:`~tomoflow.register.transform.Affine9` parameters about the HR centre.
    dof
        Degrees of freedom of the last stage.
    prior
        The starting matrix.
    ncc_prior, ncc
        Normalised cross-correlation at the prior and at the result (full LFOV resolution).
    stages
        One dict per stage: ``name``, ``seconds``, ``ncc``, ``matrix``.
    lfov_box
        ``((z0, z1), (y0, y1), (x0, x1))`` LFOV voxel region that was read.
    """

    matrix: np.ndarray
    transform: Affine9
    dof: int
    prior: np.ndarray
    ncc_prior: float
    ncc: float
    stages: list[dict[str, Any]] = field(default_factory=list)
    lfov_box: tuple[tuple[int, int], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (goes in the volume store's attributes)."""
        return {
            "matrix": self.matrix.tolist(),
            "transform": self.transform.as_dict(),
            "dof": self.dof,
            "prior": self.prior.tolist(),
            "ncc_prior": self.ncc_prior,
            "ncc": self.ncc,
            "stages": [
                {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in s.items()} for s in self.stages
            ],
            "lfov_box": [list(b) for b in self.lfov_box],
        }


# ----------------------------------------------------------------------------- checks
def _spacing(name: str, value: Any) -> np.ndarray:
    try:
        s = np.broadcast_to(np.asarray(value, dtype=np.float64), (3,)).copy()
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be a voxel size in micrometres or 3 of them (z, y, x), got {value!r}") from exc
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ConfigError(f"{name} must be positive micrometres, got {value!r}")
    return s


def _volume_shape(name: str, vol: Any) -> tuple[int, int, int]:
    shape = tuple(int(n) for n in getattr(vol, "shape", ()))
    if len(shape) != 3:
        raise InputError(f"expected a (z, y, x) volume, got shape {shape}", dataset=name)
    if min(shape) < 4:
        raise InputError(f"volume of shape {shape} is too small to register (at least 4 voxels per axis)", dataset=name)
    return shape


def _finite(name: str, a: np.ndarray) -> None:
    bad = int(a.size - np.count_nonzero(np.isfinite(a)))
    if bad:
        raise InputError(f"{bad} NaN/Inf voxels in the region used for registration", dataset=name)
    if float(a.std()) == 0.0:
        raise InputError("the region used for registration is constant (no structure to register)", dataset=name)


def _prior_matrix(
    prior: Any, hr_shape: tuple[int, ...], lfov_shape: tuple[int, ...], hr_sp: np.ndarray, lf_sp: np.ndarray
) -> np.ndarray:
    """The prior as a 4 x 4 matrix; None = the HR centre on the LFOV centre, axes aligned."""
    if prior is None:
        m = np.eye(4)
        m[:3, 3] = (np.asarray(lfov_shape) - 1) / 2.0 * lf_sp - (np.asarray(hr_shape) - 1) / 2.0 * hr_sp
        return m
    m = np.asarray(prior, dtype=np.float64)
    if m.shape == (3,):  # a translation
        t, m = m, np.eye(4)
        m[:3, 3] = t
    if m.shape != (4, 4):
        raise ConfigError(
            f"prior must be a 4 x 4 affine matrix (last row 0 0 0 1) or a translation (3,), got {prior!r}"
        )
    return check_affine(m, "prior")  # finite, affine, invertible and well conditioned


# ----------------------------------------------------------------------------- similarity
class _Problem:
    """The fixed LFOV points, the moving image (HR smoothed and sampled every ``mstep`` HR voxels) and the
    NCC between them, in torch (float64 coordinates, float32 samples).

    ``fixed`` is an LFOV region (binned by ``step``) whose first voxel is LFOV voxel ``origin_vox``; at
    most ``max_points`` of its voxels (a fixed random subset when there are more) are the fixed points.
    """

    def __init__(
        self,
        moving: np.ndarray,
        mstep: int,
        hr_shape: tuple[int, ...],
        hr_sp: np.ndarray,
        fixed: np.ndarray,
        origin_vox: np.ndarray,
        step: int,
        lf_sp: np.ndarray,
        margin_vox: float,
        device: Any,
        max_points: int | None = None,
    ) -> None:
        import torch

        self.torch = torch
        self.dev = device
        self.hr_shape = np.asarray(hr_shape)
        self.hr_sp = hr_sp
        self.lf_sp = lf_sp
        self.grid_shape = np.asarray(moving.shape)
        self.mstep = int(mstep)
        # float32 samples (interpolation weights from float64 coordinates): half the memory traffic
        self.moving: Any = torch.from_numpy(np.ascontiguousarray(moving, dtype=np.float32))[None, None].to(device)
        n = int(fixed.size)
        sel = None
        if max_points is not None and n > max_points:  # a fixed random subset: memory independent of the ROI
            sel = np.sort(np.random.default_rng(0).choice(n, size=int(max_points), replace=False))
        ijk = np.indices(fixed.shape).reshape(3, -1) if sel is None else np.stack(np.unravel_index(sel, fixed.shape))
        # LFOV voxel centres (binned by ``step``) in LFOV micrometres
        q = (origin_vox[:, None] + step * ijk + (step - 1) / 2.0).T * lf_sp
        self.q = torch.from_numpy(np.ascontiguousarray(q)).to(device)
        vals = np.asarray(fixed, dtype=np.float64).reshape(-1)
        self.f = torch.from_numpy(vals if sel is None else vals[sel]).to(device)
        self.margin = margin_vox
        self.mask = torch.ones_like(self.f, dtype=torch.bool)
        self.center = torch.from_numpy((self.hr_shape - 1) / 2.0 * hr_sp).to(device)

    def with_moving(self, moving: np.ndarray, mstep: int) -> _Problem:
        """The same fixed points with another moving image (sampled every ``mstep`` HR voxels)."""
        p = copy.copy(self)
        p.moving = self.torch.from_numpy(np.ascontiguousarray(moving, dtype=np.float32))[None, None].to(self.dev)
        p.grid_shape, p.mstep = np.asarray(moving.shape), int(mstep)
        p.mask = self.torch.ones_like(self.f, dtype=self.torch.bool)
        return p

    def without_moving(self) -> _Problem:
        """The same fixed points without a moving image (for :meth:`with_moving`; holds no image)."""
        p = copy.copy(self)
        p.moving = None
        return p

    def with_fixed(self, fixed: np.ndarray, origin_vox: np.ndarray, step: int) -> _Problem:
        """The same moving image with other fixed points (all of ``fixed``'s voxels)."""
        moving = self.moving[0, 0].cpu().numpy()
        return _Problem(
            moving,
            self.mstep,
            tuple(self.hr_shape),
            self.hr_sp,
            fixed,
            origin_vox,
            step,
            self.lf_sp,
            self.margin,
            self.dev,
        )

    def hr_index(self, m34: Any) -> Any:
        """HR voxel indices ``(n, 3)`` of the fixed points under the HR -> LFOV matrix ``m34`` (3 x 4)."""
        torch = self.torch
        a, b = m34[:, :3], m34[:, 3]
        p = torch.linalg.solve(a, (self.q - b).T).T  # HR micrometres
        return p / torch.from_numpy(self.hr_sp).to(self.dev)

    def set_mask(self, m34: Any) -> int:
        """Keep the fixed points that fall inside the HR volume (less the smoothing margin) and inside
        the moving image's last samples."""
        with self.torch.no_grad():
            i = self.hr_index(m34)
            last = np.minimum(self.hr_shape - 1 - self.margin, self.mstep * (self.grid_shape - 1))
            hi = self.torch.from_numpy(last.astype(np.float64)).to(self.dev)
            self.mask = ((i >= self.margin) & (i <= hi)).all(dim=1)
        return int(self.mask.sum())

    def sample(self, m34: Any) -> Any:
        torch = self.torch
        i = self.hr_index(m34)[self.mask]
        n = torch.from_numpy(self.mstep * (self.grid_shape - 1.0)).to(self.dev)  # HR index of the last sample
        g = (2.0 * i / n - 1.0).flip(-1)  # grid_sample wants (x, y, z) in [-1, 1]
        out = torch.nn.functional.grid_sample(
            self.moving,
            g[None, None, None].to(torch.float32),
            mode="bilinear",
            padding_mode="border",
            align_corners=True,
        )
        return out.reshape(-1).to(torch.float64)

    def ncc(self, m34: Any) -> Any:
        g = self.sample(m34)
        f = self.f[self.mask]
        fc, gc = f - f.mean(), g - g.mean()
        return (fc * gc).sum() / self.torch.sqrt((fc * fc).sum() * (gc * gc).sum() + 1e-30)


def _bin(a: np.ndarray, b: int) -> np.ndarray:
    if b == 1:
        return a
    n = [s // b for s in a.shape]
    a = a[: n[0] * b, : n[1] * b, : n[2] * b]
    return a.reshape(n[0], b, n[1], b, n[2], b).mean(axis=(1, 3, 5))


# ----------------------------------------------------------------------------- stages
def _correlate_valid(region: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``out[s] = sum_x region[s + x] kernel[x]`` for every shift ``s`` that keeps ``kernel`` inside
    ``region`` (by FFT: O(region log region) time and memory, whatever the kernel's size)."""
    from scipy import fft

    size = [fft.next_fast_len(int(n), real=True) for n in region.shape]
    spec = fft.rfftn(region, size, workers=-1)
    spec *= fft.rfftn(kernel[::-1, ::-1, ::-1], size, workers=-1)
    full = fft.irfftn(spec, size, workers=-1)
    del spec
    k = kernel.shape
    return np.ascontiguousarray(full[tuple(slice(k[a] - 1, region.shape[a]) for a in range(3))])


def _coarse_translation(
    problem: _Problem, region: np.ndarray, shape: tuple[int, ...], m: np.ndarray, before: np.ndarray
) -> np.ndarray:
    """Whole-voxel NCC search of the template (HR sampled at ``problem``'s LFOV voxels, of ``shape``,
    at the placement ``m``) over ``region``, which extends the template's box by ``before`` voxels at
    the low end of each axis (and some at the high end); sub-voxel by a parabola per axis. Returns the
    displacement of the HR content from ``m``, in voxels of ``region`` ``(3,)``."""
    torch = problem.torch
    m34 = torch.from_numpy(m[:3]).to(problem.dev)
    problem.set_mask(m34)
    with torch.no_grad():
        vals = torch.zeros_like(problem.f)
        vals[problem.mask] = problem.sample(m34)
    t = vals.cpu().numpy().reshape(shape)
    w = problem.mask.cpu().numpy().reshape(shape).astype(np.float64)
    nw = w.sum()
    t0 = (t - (t * w).sum() / nw) * w
    reg = np.asarray(region, dtype=np.float64)
    num = _correlate_valid(reg, t0)
    s1 = _correlate_valid(reg, w)
    s2 = _correlate_valid(reg * reg, w)
    var = np.maximum(s2 - s1 * s1 / nw, 1e-30)
    ncc = num / np.sqrt(var * (t0 * t0).sum())
    peak = np.array(np.unravel_index(int(np.argmax(ncc)), ncc.shape))
    sub = np.zeros(3)
    for a in range(3):
        if 0 < peak[a] < ncc.shape[a] - 1:
            lo, hi = peak.copy(), peak.copy()
            lo[a] -= 1
            hi[a] += 1
            y0, y1, y2 = ncc[tuple(lo)], ncc[tuple(peak)], ncc[tuple(hi)]
            den = y0 - 2 * y1 + y2
            sub[a] = 0.5 * (y0 - y2) / den if den < 0 else 0.0
    return peak + sub - before


def _optimise(
    problem: _Problem, m: np.ndarray, dof: int, scale_um: float, lf_step_um: float, max_iter: int
) -> np.ndarray:
    """Maximise NCC over ``dof`` parameters from the 4 x 4 ``m``; returns the new 4 x 4 matrix."""
    torch = problem.torch
    start = Affine9.from_matrix(m, problem.center.cpu().numpy())
    base = torch.tensor([*start.rotation, *start.scale, *start.translation], dtype=torch.float64, device=problem.dev)
    # unit of each parameter: one LFOV voxel of displacement at the ROI's edge
    unit = torch.tensor([lf_step_um / scale_um] * 6 + [lf_step_um] * 3, dtype=torch.float64, device=problem.dev)
    active = torch.zeros(9, dtype=torch.bool, device=problem.dev)
    active[6:] = True
    if dof >= 6:
        active[:3] = True
    if dof == 9:
        active[3:6] = True
    u = torch.zeros(int(active.sum()), dtype=torch.float64, device=problem.dev, requires_grad=True)

    def params() -> Any:
        full = torch.zeros(9, dtype=torch.float64, device=problem.dev)
        full = full.masked_scatter(active, u)
        return base + full * unit

    problem.set_mask(torch_matrix(base, problem.center))
    opt = torch.optim.LBFGS(
        [u],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=GRAD_TOL,
        tolerance_change=LOSS_TOL,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Any:
        opt.zero_grad()
        loss = 1.0 - problem.ncc(torch_matrix(params(), problem.center))
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        p = params().cpu().numpy()
    c = problem.center.cpu().numpy()
    return Affine9(tuple(p[:3]), tuple(p[3:6]), tuple(p[6:9]), tuple(c)).matrix


def register(
    hr: np.ndarray | MovingImage,
    lfov: Any,
    *,
    hr_spacing_um: npt.ArrayLike,
    lfov_spacing_um: npt.ArrayLike,
    prior: npt.ArrayLike | None = None,
    dof: int = 9,
    search_um: float | None = None,
    smoothing: float | None = None,
    max_rotation_deg: float = 10.0,
    scale_range: tuple[float, float] = (0.9, 1.1),
    max_iter: int = 100,
    device: str | None = None,
) -> Registration:
    """Register an HR region-of-interest volume into an LFOV volume of the same sample (module docstring).

    Parameters
    ----------
    hr
        ``(z, y, x)`` HR volume (NumPy array; read whole), or a
        :class:`~tomoflow.register.moving.MovingImage` that gives it smoothed and sampled every
        ``step`` HR voxels (the pipeline's computes it chunk by chunk from a volume store; memory then
        does not depend on the HR volume's size).
    lfov
        ``(z, y, x)`` LFOV volume: a NumPy or zarr array (only the region around the ROI is read).
    hr_spacing_um, lfov_spacing_um
        Voxel sizes in micrometres (one number, or ``(dz, dy, dx)``). HR voxels must be smaller.
    prior
        Starting placement: 4 x 4 HR-physical -> LFOV-physical matrix, or a translation ``(3,)`` um
        (from the stage positions); None = the ROI centred in the LFOV field.
    dof
        3 (translation), 6 (rigid) or 9 (rigid + per-axis scale).
    search_um
        Half-width of the coarse translation search, micrometres; default 4 LFOV voxels.
    smoothing
        Gaussian sigma (HR voxels) applied to the HR volume before it is compared with the LFOV.
        Default: half the voxel-size ratio up to the translation stage, then the sigma among
        :data:`SMOOTHING_TRIALS` x ratio whose NCC is highest (the LFOV's blur is not known).
    max_rotation_deg, scale_range
        Plausibility limits of the result.
    max_iter
        Most L-BFGS iterations per stage and level.
    device
        torch device: ``"cpu"``, ``"cuda"`` or ``"auto"``; None: the configured device
        (``tomoflow.config.get().device``).

    Returns
    -------
    Registration

    Raises
    ------
    InputError
        Not 3-D, too small, NaN/Inf or constant data, or the prior places the ROI outside the LFOV.
    ConfigError
        Spacings not positive, HR voxels not smaller than LFOV voxels, bad ``dof`` or limits.
    RegistrationError
        The result is implausible (scale outside ``scale_range``, rotation above
        ``max_rotation_deg``) or its similarity is no better than the prior's.
    """
    from tomoflow.nn import resolve_device

    t_all = time.perf_counter()
    source = hr if isinstance(hr, MovingImage) else None
    hr_shape = _volume_shape("HR", hr)
    lf_shape = _volume_shape("LFOV", lfov)
    hr_sp = _spacing("hr_spacing_um", hr_spacing_um)
    lf_sp = _spacing("lfov_spacing_um", lfov_spacing_um)
    if np.any(hr_sp >= lf_sp):
        raise ConfigError(
            f"HR voxels ({hr_sp.tolist()} um) must be smaller than LFOV voxels "
            f"({lf_sp.tolist()} um): are the volumes or the spacings swapped?"
        )
    if dof not in DOFS:
        raise ConfigError(f"dof must be one of {DOFS}, got {dof!r}")
    lo_s, hi_s = (float(v) for v in scale_range)
    if not 0 < lo_s < 1 < hi_s:
        raise ConfigError(f"scale_range must be (low < 1 < high), got {scale_range!r}")
    max_rotation_deg = check_number("max_rotation_deg", max_rotation_deg, low=0.0, low_open=True, high=90.0)
    max_iter = check_int("max_iter", max_iter, low=1)
    device = _config.get().device if device is None else device
    dev = resolve_device(check_choice("device", device, ("cpu", "cuda", "auto")))
    ratio = float(np.mean(lf_sp / hr_sp))
    sigma = 0.5 * ratio if smoothing is None else check_number("smoothing (HR voxels)", smoothing, low=0.0)
    search = (
        4
        if search_um is None
        else max(1, int(math.ceil(check_number("search_um", search_um, low=0.0, low_open=True) / float(lf_sp.min()))))
    )
    m_prior = _prior_matrix(prior, hr_shape, lf_shape, hr_sp, lf_sp)

    # the LFOV region: the ROI's footprint at the prior, grown by the search margin (+1 for binning)
    corners = (
        np.array(
            [[z, y, x, 1.0] for z in (0, hr_shape[0] - 1) for y in (0, hr_shape[1] - 1) for x in (0, hr_shape[2] - 1)]
        )
        * np.r_[hr_sp, 1.0]
    )
    foot = (m_prior @ corners.T).T[:, :3] / lf_sp
    lo_i, hi_i = np.floor(foot.min(axis=0)).astype(int), np.ceil(foot.max(axis=0)).astype(int) + 1
    inside = np.clip(hi_i, 0, lf_shape) - np.clip(lo_i, 0, lf_shape)
    if np.any(inside <= 0) or np.prod(inside) < 0.5 * np.prod(hi_i - lo_i):
        raise InputError(
            f"the prior places the HR ROI (LFOV voxels {lo_i.tolist()} to {hi_i.tolist()}) mostly "
            f"outside the LFOV volume of shape {list(lf_shape)}: the volumes do not overlap",
            dataset="prior",
        )
    box_lo = np.maximum(lo_i - search - 2, 0)
    box_hi = np.minimum(hi_i + search + 2, lf_shape)
    region = np.asarray(lfov[tuple(slice(a, b) for a, b in zip(box_lo, box_hi))], dtype=np.float32)
    _finite("LFOV", region)
    if source is None:
        hr_arr = np.asarray(hr, dtype=np.float32)
        _finite("HR", hr_arr)
        source = ArrayMoving(hr_arr)
    margin = 2.0 * ratio  # HR voxels kept clear of the ROI's faces (smoothing support)
    scale_um = 0.5 * float(np.mean((np.asarray(hr_shape) - 1) * hr_sp))  # ROI half-size
    budget_step = moving_step(hr_shape, 0.0, MAX_MOVING_VOXELS, 0.0)

    stages: list[dict[str, Any]] = []
    import torch

    kept: dict[tuple[float, int], np.ndarray] = {}  # the coarse search's image, until the binned level

    def moving(s: float, coarse: bool = False, keep: bool = False) -> tuple[np.ndarray, int]:
        """The HR volume smoothed by ``s`` HR voxels, sampled every ``budget_step`` HR voxels (the
        coarse stages: coarser where ``s`` allows); ``keep``: for a later call with the same ``s``."""
        step = moving_step(hr_shape, s, MAX_MOVING_VOXELS, SIGMA_PER_STEP) if coarse else budget_step
        if (s, step) in kept:
            return kept.pop((s, step)), step
        img = source.sample(s, step)
        if tuple(img.shape) != sampled_shape(hr_shape, step):
            raise InputError(
                f"the moving image of sigma {s:g} and step {step} has shape {tuple(img.shape)}, expected "
                f"{sampled_shape(hr_shape, step)}",
                dataset="HR",
            )
        _finite("HR", img)
        if keep:
            kept[(s, step)] = img
        return img, step

    fine = _Problem(
        *moving(sigma), hr_shape, hr_sp, region, box_lo.astype(float), 1, lf_sp, margin, dev, MAX_FIXED_POINTS
    )

    def ncc_at(mat: np.ndarray, problem: _Problem | None = None) -> float:
        problem = fine if problem is None else problem
        m34 = torch.from_numpy(mat[:3]).to(dev)
        problem.set_mask(m34)
        with torch.no_grad():
            return float(problem.ncc(m34))

    ncc_prior = ncc_at(m_prior)
    stages.append({"name": "prior", "seconds": 0.0, "ncc": ncc_prior, "matrix": m_prior.copy()})

    # coarse translation: template = the ROI footprint inside the region (binned by cb when it is large),
    # shifts +- search LFOV voxels
    t0 = time.perf_counter()
    cb = max(1, int(math.ceil(float(np.max(hi_i - lo_i)) / COARSE_MAX_EXTENT)))
    inner_lo = np.clip(lo_i, box_lo, box_hi) - box_lo
    inner_hi = np.clip(hi_i, box_lo, box_hi) - box_lo
    tb = (inner_hi - inner_lo) // cb  # template size, binned voxels
    sb = -(-search // cb)
    pad_lo = np.minimum(inner_lo // cb, sb)
    pad_hi = np.minimum((np.asarray(region.shape) - inner_lo) // cb - tb, sb)
    sub = _bin(
        region[
            tuple(slice(int(a - cb * p), int(a + cb * (t + q))) for a, t, p, q in zip(inner_lo, tb, pad_lo, pad_hi))
        ],
        cb,
    )
    fixed_t = sub[tuple(slice(int(p), int(p + t)) for p, t in zip(pad_lo, tb))]
    binned_level = dof > 3 and bool(np.all((hi_i - lo_i) // 2 >= MIN_BINNED_FOOTPRINT))  # enough voxels for 9 DOF
    if cb == 1:
        template = fine.with_fixed(fixed_t, (box_lo + inner_lo).astype(float), 1)
    else:
        template = _Problem(
            *moving(math.hypot(sigma, 0.5 * cb * ratio), coarse=True, keep=binned_level and cb == 2),
            hr_shape,
            hr_sp,
            fixed_t,
            (box_lo + inner_lo).astype(float),
            cb,
            lf_sp,
            margin,
            dev,
        )
    d = cb * _coarse_translation(template, sub, tuple(int(t) for t in tb), m_prior, pad_lo)
    del template, sub, fixed_t
    m = m_prior.copy()
    m[:3, 3] += d * lf_sp
    stages.append(
        {
            "name": "coarse-translation",
            "seconds": time.perf_counter() - t0,
            "ncc": ncc_at(m),
            "matrix": m.copy(),
            "shift_lfov_vox": d.tolist(),
        }
    )

    # translation, then rigid / 9 DOF (2x-binned level first)
    t0 = time.perf_counter()
    m = _optimise(fine, m, 3, scale_um, float(lf_sp.mean()), min(max_iter, 20))
    stages.append({"name": "translation", "seconds": time.perf_counter() - t0, "ncc": ncc_at(m), "matrix": m.copy()})
    if binned_level:
        t0 = time.perf_counter()
        coarse = _Problem(
            *moving(math.hypot(sigma, ratio), coarse=True),
            hr_shape,
            hr_sp,
            _bin(region, 2),
            box_lo.astype(float),
            2,
            lf_sp,
            margin,
            dev,
            MAX_FIXED_POINTS,
        )
        m = _optimise(coarse, m, dof, scale_um, 2.0 * float(lf_sp.mean()), max_iter)
        del coarse
        stages.append(
            {"name": f"binned-{dof}", "seconds": time.perf_counter() - t0, "ncc": ncc_at(m), "matrix": m.copy()}
        )
    kept.clear()
    if smoothing is None and dof > 3:  # the LFOV blur is unknown: the HR smoothing that matches it best
        t0 = time.perf_counter()
        # sigmas the moving grid resolves (strided samples nearly alias-free): at least MIN_SIGMA_PER_STEP steps
        least = MIN_SIGMA_PER_STEP * budget_step
        sigmas = [float(f * ratio) for f in SMOOTHING_TRIALS if f * ratio >= least - 1e-9] or [least]
        scores: dict[float, float] = {}
        # one moving image at a time beside the best so far: the translation's first (it is one of them)
        # or dropped, so that at most two are held
        trial: _Problem | None = fine if sigma in sigmas else None
        base = fine.without_moving()
        del fine
        best: _Problem | None = None
        for s in sorted(sigmas, key=lambda v: v != sigma):
            trial = trial if s == sigma and trial is not None else base.with_moving(*moving(s))
            scores[s] = ncc_at(m, trial)
            if best is None or scores[s] > max(v for k, v in scores.items() if k != s):
                best = trial
            trial = None
        sigma = max(scores, key=scores.__getitem__)
        assert best is not None
        fine = best
        del best
        stages.append(
            {
                "name": "smoothing",
                "seconds": time.perf_counter() - t0,
                "ncc": scores[sigma],
                "matrix": m.copy(),
                "sigma_hr_vox": sigma,
                "trials": scores,
            }
        )
    if dof > 3:
        t0 = time.perf_counter()
        m = _optimise(fine, m, dof, scale_um, float(lf_sp.mean()), max_iter)
        stages.append({"name": f"dof-{dof}", "seconds": time.perf_counter() - t0, "ncc": ncc_at(m), "matrix": m.copy()})
    ncc, ncc_prior = ncc_at(m), ncc_at(m_prior)  # both with the final smoothing
    transform = Affine9.from_matrix(m, (np.asarray(hr_shape) - 1) / 2.0 * hr_sp)
    log.info(
        "registration: NCC %.4f -> %.4f in %.1f s, rotation %.3f deg, scale %s",
        ncc_prior,
        ncc,
        time.perf_counter() - t_all,
        transform.rotation_deg,
        np.round(transform.scale, 4).tolist(),
    )
    result = Registration(
        matrix=m,
        transform=transform,
        dof=dof,
        prior=m_prior,
        ncc_prior=ncc_prior,
        ncc=ncc,
        stages=stages,
        lfov_box=tuple((int(a), int(b)) for a, b in zip(box_lo, box_hi)),
    )
    _check_plausible(result, max_rotation_deg, (lo_s, hi_s))
    return result


def _check_plausible(result: Registration, max_rotation_deg: float, scale_range: tuple[float, float]) -> None:
    tr = result.transform
    if tr.rotation_deg > max_rotation_deg:
        raise RegistrationError(
            f"implausible registration: rotation {tr.rotation_deg:.2f} deg exceeds "
            f"{max_rotation_deg:g} deg (NCC {result.ncc_prior:.3f} -> {result.ncc:.3f})"
        )
    s = np.asarray(tr.scale)
    if np.any(s < scale_range[0]) or np.any(s > scale_range[1]):
        raise RegistrationError(
            f"implausible registration: scale {np.round(s, 4).tolist()} outside "
            f"[{scale_range[0]:g}, {scale_range[1]:g}] (wrong voxel sizes?)"
        )
    if not result.ncc > result.ncc_prior:
        raise RegistrationError(
            f"registration did not improve on the prior (NCC {result.ncc_prior:.4f} -> "
            f"{result.ncc:.4f}): the volumes may not show the same region"
        )
