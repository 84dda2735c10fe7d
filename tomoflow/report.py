"""Pictures people would rather look at than read: PNG overviews of scans and volumes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["overview_png", "sweep_png"]


def _robust_limits(img: np.ndarray) -> tuple[float, float]:
    finite = img[np.isfinite(img)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [0.5, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1)


def _plain(text: str) -> str:
    """``text`` shown literally by matplotlib (a ``$`` in a path would otherwise start mathtext)."""
    return str(text).replace("$", r"\$")


def _show(ax: Any, img: np.ndarray, title: str, xlabel: str, ylabel: str, aspect: Any = "equal") -> None:
    lo, hi = _robust_limits(img)
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest")
    ax.set_title(_plain(title), fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)


def overview_png(path: str | Path, scan_path: str | Path, volume_path: str | Path | None = None,
                 *, title: str | None = None) -> Path:
    """Write a PNG overview: a projection and a sinogram of the scan, and the volume's central
    z, y and x slices when a volume store is given.

    Returns the PNG path.
    """
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
        axes[2].text(0.02, 0.02, f"{voxel}, {centre}",
                     transform=axes[2].transAxes, color="yellow", fontsize=7)
    fig.suptitle(_plain(title or Path(scan_path).name), fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def sweep_png(directory: str | Path, slices: np.ndarray, centers: np.ndarray, metric: np.ndarray) -> list[Path]:
    """Write one PNG per centre of a sweep (``center_<value>.png``) and ``sweep_metric.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    out = []
    lo, hi = _robust_limits(np.asarray(slices))
    for s, c in zip(slices, centers):
        p = d / f"center_{c:08.2f}.png"
        plt.imsave(p, np.clip((s - lo) / (hi - lo), 0, 1), cmap="gray")
        out.append(p)
    fig, ax = plt.subplots(figsize=(5, 3), constrained_layout=True)
    ax.plot(centers, metric, "o-")
    best = centers[int(np.argmax(metric))]
    ax.axvline(best, color="r", ls="--", label=f"sharpest {best:.2f} px")
    ax.set_xlabel("rotation centre (px)")
    ax.set_ylabel("sharpness (-TV)")
    ax.legend(fontsize=8)
    p = d / "sweep_metric.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    out.append(p)
    return out
