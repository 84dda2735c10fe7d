"""Pictures people would rather look at than read: PNG overviews of scans and volumes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["overview_png", "sweep_png", "sweep_plans", "alignment_png", "registration_png", "recovery_png"]


def _picture_plan(target: Any, overwrite: bool, inputs: Any) -> Any:
    """``target`` as a checked :class:`~tomoflow.io.output.FilePlan` of a PNG picture (before any work)."""
    from tomoflow.io.output import as_file_plan

    return as_file_plan(target, kind="picture", overwrite=overwrite, inputs=[i for i in inputs if i is not None])


def save_figure(fig: Any, plan: Any, dpi: int) -> Path:
    from tomoflow.io.output import save_figure as _save

    return _save(fig, plan, dpi=dpi)


def _robust_limits(img: np.ndarray) -> tuple[float, float]:
    finite = img[np.isfinite(img)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [0.5, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1)


def _plain(text: str) -> str:
    """``text`` shown literally by matplotlib (a ``$`` in a path would otherwise start mathtext)."""
    return str(text).replace("$", r"\$")


def _show(
    ax: Any,
    img: np.ndarray,
    title: str,
    xlabel: str,
    ylabel: str,
    aspect: Any = "equal",
    limits: tuple[float, float] | None = None,
) -> None:
    lo, hi = _robust_limits(img) if limits is None else limits
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest")
    ax.set_title(_plain(title), fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)


def overview_png(
    path: Any,
    scan_path: str | Path,
    volume_path: str | Path | None = None,
    *,
    title: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a PNG overview: a projection and a sinogram of the scan, and the volume's central
    z, y and x slices when a volume store is given.

    ``path`` is a PNG file or a :class:`~tomoflow.io.output.FilePlan` of one: like every file tomoflow
    writes it never lands in a store, never replaces an input or a file tomoflow did not write, and
    replaces a picture tomoflow wrote only with ``overwrite``.

    Returns the PNG path.
    """
    plan = _picture_plan(path, overwrite, [scan_path] + ([volume_path] if volume_path is not None else []))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tomoflow.io.scan_store import ScanStore
    from tomoflow.io.volume_store import VolumeStore
    from tomoflow.pipeline.reconstruct import read_line_integrals

    scan = ScanStore.open(scan_path)
    na, nr, nc = scan.shape
    ang = scan.angles_deg
    proj = read_line_integrals(scan, 0, nr, angles=slice(0, 1))[0]
    sino = read_line_integrals(scan, nr // 2, nr // 2 + 1)[:, 0, :]
    ncols = 5 if volume_path is not None else 2
    fig, axes = plt.subplots(1, ncols, figsize=(3.4 * ncols, 3.6), constrained_layout=True)
    _show(axes[0], proj, f"projection {ang[0]:.1f} deg", "col (px)", "row (px)")
    _show(axes[1], sino, f"sinogram row {nr // 2}", "col (px)", "angle index", aspect="auto")
    if volume_path is not None:
        vol = VolumeStore.open(volume_path)
        a = vol.level(0)
        nz, ny, nx = a.shape
        va = vol.attrs
        voxel = f"voxel {va.voxel_size.value:g} um" if va.voxel_size is not None else "voxel size unknown"
        centre = f"centre {va.rotation_center:.2f} px" if va.rotation_center is not None else "centre unknown"
        _show(axes[2], np.asarray(a[nz // 2]), f"slice z={nz // 2}", "x (voxel)", "y (voxel)")
        _show(axes[3], np.asarray(a[:, ny // 2, :]), f"slice y={ny // 2}", "x (voxel)", "z (voxel)", aspect="auto")
        _show(axes[4], np.asarray(a[:, :, nx // 2]), f"slice x={nx // 2}", "y (voxel)", "z (voxel)", aspect="auto")
        axes[2].text(0.02, 0.02, f"{voxel}, {centre}", transform=axes[2].transAxes, color="yellow", fontsize=7)
    fig.suptitle(_plain(title or Path(scan_path).name), fontsize=10)
    return save_figure(fig, plan, dpi=110)


def sweep_plans(
    directory: str | Path, centers: Any, *, inputs: Any = (), overwrite: bool = False, fingerprint: str | None = None
) -> list[Any]:
    """Plan (before any work) the files of :func:`sweep_png`: ``center_<value>.png`` per centre and
    ``sweep_metric.png`` in ``directory``, each through the file policy.

    ``fingerprint`` (of the scan and the sweep's parameters) lets a rerun of the same sweep keep the
    pictures it already wrote.
    """
    from tomoflow.io.output import fingerprint as digest
    from tomoflow.io.output import plan_file, plan_folder

    d = plan_folder(directory, inputs=inputs, option="--try", what="PNG pictures")
    names = [f"center_{c:08.2f}.png" for c in np.asarray(centers, dtype=np.float64)] + ["sweep_metric.png"]
    return [
        plan_file(
            d / n,
            kind="picture",
            inputs=inputs,
            overwrite=overwrite,
            fingerprint=None
            if fingerprint is None
            else digest("sweep-png", inputs={"sweep": fingerprint}, params={"name": n}),
        )
        for n in names
    ]


def sweep_png(
    directory: Any, slices: np.ndarray, centers: np.ndarray, metric: np.ndarray, *, overwrite: bool = False
) -> list[Path]:
    """Write one PNG per centre of a sweep (``center_<value>.png``) and ``sweep_metric.png``.

    ``directory`` is a folder, or the plans of :func:`sweep_plans` made before the work.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tomoflow.io.output import save_image

    plans = directory if isinstance(directory, list) else sweep_plans(directory, centers, overwrite=overwrite)
    out = []
    lo, hi = _robust_limits(np.asarray(slices))
    for s, plan in zip(slices, plans[:-1]):
        out.append(save_image(np.clip((s - lo) / (hi - lo), 0, 1), plan))
    fig, ax = plt.subplots(figsize=(5, 3), constrained_layout=True)
    ax.plot(centers, metric, "o-")
    best = centers[int(np.argmax(metric))]
    ax.axvline(best, color="r", ls="--", label=f"sharpest {best:.2f} px")
    ax.set_xlabel("rotation centre (px)")
    ax.set_ylabel("sharpness (-TV)")
    ax.legend(fontsize=8)
    out.append(save_figure(fig, plans[-1], dpi=110))
    return out


def alignment_png(
    path: Any, scan_path: str | Path, aligned_path: str | Path, *, title: str | None = None, overwrite: bool = False
) -> Path:
    """Write the jitter-correction report: estimated shifts per angle (low-confidence projections
    marked), the central sinogram and an FBP slice before and after correction, and the convergence
    curve of the refinement (max and RMS update per iteration).

    ``path``: a PNG file or a :class:`~tomoflow.io.output.FilePlan` (see :func:`overview_png`).

    Returns the PNG path.
    """
    plan = _picture_plan(path, overwrite, [scan_path, aligned_path])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tomoflow.io.scan_store import ScanStore
    from tomoflow.pipeline.reconstruct import estimate_center, read_line_integrals
    from tomoflow.recon import fbp

    raw = ScanStore.open(scan_path)
    al = ScanStore.open(aligned_path)
    na, nr, nc = raw.shape
    ang = raw.angles_deg
    shifts = np.asarray(al.group["shifts"][:])
    quality = np.asarray(al.group["quality"][:])
    log = list(al.group["shifts"].attrs.get("convergence", []) or [])
    mid = nr // 2
    before = read_line_integrals(raw, mid, mid + 1)
    after = read_line_integrals(al, mid, mid + 1)
    c_before = raw.attrs.rotation_center if raw.attrs.rotation_center is not None else estimate_center(raw)
    c_after = al.attrs.rotation_center if al.attrs.rotation_center is not None else (nc - 1) / 2
    s_before = fbp(before, ang, center=c_before, mask=True)[0]
    s_after = fbp(after, ang, center=c_after, mask=True)[0]

    fig, axes = plt.subplots(2, 3, figsize=(11, 7), constrained_layout=True)
    ax = axes[0, 0]
    ax.plot(ang, shifts[:, 1], lw=1, label="dx")
    ax.plot(ang, shifts[:, 0], lw=1, label="dy")
    weak = np.isfinite(quality) & (quality < 0.5)
    if weak.any():
        ax.plot(ang[weak], shifts[weak, 1], "rx", ms=5, label="low confidence")
    ax.set_xlabel("angle (deg)", fontsize=8)
    ax.set_ylabel("estimated jitter (px)", fontsize=8)
    ax.set_title("shifts per projection", fontsize=9)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    _show(axes[0, 1], before[:, 0, :], f"sinogram row {mid}, before", "col (px)", "angle index", aspect="auto")
    _show(axes[0, 2], after[:, 0, :], f"sinogram row {mid}, after", "col (px)", "angle index", aspect="auto")
    ax = axes[1, 0]
    if log:
        it = [e.get("iteration", i + 1) for i, e in enumerate(log)]
        for key, label in (("max_update_px", "max update"), ("rms_update_px", "RMS update")):
            vals = [e.get(key) for e in log]
            if any(v is not None for v in vals):
                ax.semilogy(it, [v if v else np.nan for v in vals], "o-", ms=3, label=label)
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no refinement iterations", ha="center", va="center", fontsize=8, transform=ax.transAxes)
    ax.set_xlabel("iteration", fontsize=8)
    ax.set_ylabel("shift update (px)", fontsize=8)
    ax.set_title("convergence", fontsize=9)
    ax.tick_params(labelsize=7)
    _show(axes[1, 1], s_before, f"FBP row {mid} before (centre {c_before:.2f} px)", "x (px)", "y (px)")
    _show(axes[1, 2], s_after, f"FBP row {mid} after (centre {c_after:.2f} px)", "x (px)", "y (px)")
    method = al.stage("align").info.get("method", "?")
    fig.suptitle(_plain(title or f"jitter correction ({method}): {Path(scan_path).name}"), fontsize=10)
    return save_figure(fig, plan, dpi=100)


def registration_png(
    path: Any,
    hr: np.ndarray | Sequence[np.ndarray],
    resampled: np.ndarray | Sequence[np.ndarray],
    *,
    title: str = "",
    tiles: int = 8,
    overwrite: bool = False,
) -> Path:
    """QC of a registration: for the central z, y and x planes of the HR ROI, the HR volume, the LFOV
    resampled onto it, and a checkerboard of both (each normalised to its 1-99 % range): edges that
    continue across the squares mean the volumes line up.

    Parameters
    ----------
    path
        PNG to write, or a :class:`~tomoflow.io.output.FilePlan` (see :func:`overview_png`).
    hr, resampled
        ``(z, y, x)`` volumes of one shape: the HR ROI and the LFOV on its grid
        (:func:`tomoflow.register.resample.resample_to_grid`); or, for volumes too large to hold, a
        list of their three central planes each (z, y, x: ``v[nz // 2]``, ``v[:, ny // 2]``,
        ``v[:, :, nx // 2]``; :func:`tomoflow.pipeline.registration.central_planes` and
        ``resample_to_grid(..., box=...)`` compute them alone). The picture is the same.
    title
        Figure title (e.g. the NCC and the transform).
    tiles
        Checkerboard squares per side.
    """
    plan = _picture_plan(path, overwrite, [])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def norm(img: np.ndarray) -> np.ndarray:
        lo, hi = np.percentile(img, [1, 99])
        return np.clip((img - lo) / max(hi - lo, 1e-12), 0, 1)

    def central(v: Any) -> list[Any]:
        if isinstance(v, (list, tuple)):
            if len(v) != 3:
                raise ValueError(f"expected a (z, y, x) volume or its 3 central planes, got {len(v)} planes")
            return list(v)
        return [v[v.shape[0] // 2], v[:, v.shape[1] // 2], v[:, :, v.shape[2] // 2]]

    fig, axes = plt.subplots(3, 3, figsize=(10, 10))
    for row, (axis, p, q) in enumerate(zip("zyx", central(hr), central(resampled))):
        a, b = norm(np.asarray(p, np.float64)), norm(np.asarray(q, np.float64))
        iy = (np.arange(a.shape[0]) * tiles // a.shape[0])[:, None]
        ix = (np.arange(a.shape[1]) * tiles // a.shape[1])[None, :]
        check = np.where((iy + ix) % 2 == 0, a, b)
        for col, (img, name) in enumerate([(a, "HR"), (b, "LFOV on the HR grid"), (check, "checkerboard")]):
            ax = axes[row, col]
            ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{name}, central {axis} plane", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(_plain(title), fontsize=10)
    fig.tight_layout()
    return save_figure(fig, plan, dpi=80)


def recovery_png(
    path: Any,
    lfov_field: np.ndarray,
    recovered_field: np.ndarray,
    lfov_roi: np.ndarray,
    recovered_roi: np.ndarray,
    hr: np.ndarray,
    *,
    title: str = "",
    overwrite: bool = False,
) -> Path:
    """Before/after of a resolution recovery: the central z slice of the whole LFOV field and of its
    recovery (top row), and of the HR region of interest: the LFOV on the HR grid, its recovery and the
    HR volume itself (bottom row).

    All panels share one grey scale, the robust (0.5-99.5 %) limits of the HR slice, so that grey
    values compare across panels.

    Parameters
    ----------
    path
        PNG to write (folders are created), or a :class:`~tomoflow.io.output.FilePlan` (see
        :func:`overview_png`).
    lfov_field, recovered_field
        ``(z, y, x)`` volumes of one shape: the whole LFOV field resampled at the HR voxel size
        (:func:`tomoflow.pipeline.resample.field_grid`) and the network's output on it.
    lfov_roi, recovered_roi, hr
        ``(z, y, x)`` volumes of one shape: the LFOV resampled onto the HR ROI's grid (through the
        registration), the network's output on it, and the HR ROI volume.
    title
        Figure title (e.g. the sample and the voxel sizes).

    Returns
    -------
    Path
        The PNG path.

    Raises
    ------
    ValueError
        A volume that is not 3-D, or shapes that differ within a row.
    """
    plan = _picture_plan(path, overwrite, [])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    field = [np.asarray(v) for v in (lfov_field, recovered_field)]
    roi = [np.asarray(v) for v in (lfov_roi, recovered_roi, hr)]
    for row, what in ((field, "lfov_field and recovered_field"), (roi, "lfov_roi, recovered_roi and hr")):
        if any(v.ndim != 3 for v in row) or len({v.shape for v in row}) != 1:
            raise ValueError(f"{what} must be (z, y, x) volumes of one shape, got shapes {[v.shape for v in row]}")
    zf, zr = field[0].shape[0] // 2, roi[0].shape[0] // 2
    limits = _robust_limits(roi[2][zr].astype(np.float64))
    fig = plt.figure(figsize=(10.5, 8.5), constrained_layout=True)
    grid = fig.add_gridspec(2, 6, height_ratios=[1.35, 1])
    for i, (vol, name) in enumerate(zip(field, ("whole LFOV field (HR voxel size)", "recovered field"))):
        _show(
            fig.add_subplot(grid[0, 3 * i : 3 * i + 3]),
            vol[zf],
            f"{name}, slice z={zf}",
            "x (voxel)",
            "y (voxel)",
            limits=limits,
        )
    for i, (vol, name) in enumerate(zip(roi, ("ROI: LFOV on the HR grid", "ROI: recovered", "ROI: HR"))):
        _show(
            fig.add_subplot(grid[1, 2 * i : 2 * i + 2]),
            vol[zr],
            f"{name}, slice z={zr}",
            "x (voxel)",
            "y (voxel)",
            limits=limits,
        )
    fig.suptitle(_plain(title or "resolution recovery: before and after"), fontsize=10)
    return save_figure(fig, plan, dpi=100)
