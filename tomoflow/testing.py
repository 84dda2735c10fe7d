"""Reusable testing helpers (like ``zarr.testing``): skips for optional dependencies and small
phantoms with known answers. Imported by tomoflow's own tests; usable by downstream projects."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

__all__ = [
    "has_module",
    "write_random_unet",
    "disk_phantom",
    "ellipse_slice",
    "small_scan_counts",
    "write_small_dxchange",
    "write_volume_store",
    "http_get",
    "assert_dashboard_page",
    "write_manifest_yaml",
]


def has_module(name: str) -> bool:
    """True when ``name`` is importable (checked without importing it)."""
    return importlib.util.find_spec(name) is not None


def ellipse_slice(n: int) -> np.ndarray:
    """A ``(n, n)`` float32 slice with a few ellipses inside the reconstruction circle (values 0-1)."""
    yy, xx = np.mgrid[:n, :n].astype(np.float64)
    c = (n - 1) / 2.0
    u, v = (xx - c) / (n / 2.0), (yy - c) / (n / 2.0)
    img = np.zeros((n, n), np.float32)
    img[(u / 0.7) ** 2 + (v / 0.85) ** 2 <= 1] = 0.5
    img[((u - 0.2) / 0.25) ** 2 + ((v + 0.3) / 0.15) ** 2 <= 1] = 1.0
    img[((u + 0.3) / 0.12) ** 2 + ((v - 0.35) / 0.2) ** 2 <= 1] = 0.1
    img[((u + 0.05) / 0.08) ** 2 + ((v - 0.0) / 0.08) ** 2 <= 1] = 0.9
    return img


def disk_phantom(shape: tuple[int, int, int]) -> np.ndarray:
    """A ``(z, y, x)`` stack of :func:`ellipse_slice` whose contrast changes slowly with z."""
    nz, ny, nx = shape
    sl = ellipse_slice(nx)[:ny]
    scale = np.linspace(0.8, 1.2, nz, dtype=np.float32)[:, None, None]
    return (sl[None] * scale).astype(np.float32)


def small_scan_counts(seed: int, angles_deg: Any, rows: int = 16, cols: int = 32) -> np.ndarray:
    """Raw counts ``(angle, row, col)`` of :func:`disk_phantom` rolled ``seed`` columns sideways, its axis
    at column ``(cols - 1) / 2 + 0.25 * seed`` (a little off centre); 1000 counts of open beam."""
    from tomoflow.recon import project

    vol = np.roll(disk_phantom((rows, cols, cols)), seed, axis=2) * 0.05
    line = project(vol, np.asarray(angles_deg, dtype=np.float64), center=(cols - 1) / 2.0 + 0.25 * seed)
    return (1000.0 * np.exp(-line)).astype(np.float32)


def write_small_dxchange(
    path: Any, seed: int = 0, *, angles_deg: Any = None, rows: int = 16, cols: int = 32, counts: Any = None
) -> Any:
    """A small DXchange file of :func:`small_scan_counts` (or ``counts``), with 2 flats (1000) and a dark
    (0), as a beamline writes it: a test archive's scan. ``angles_deg`` default 32 over 180 degrees."""
    from tomoflow.io.dxchange import write_dxchange

    angles = np.linspace(0, 180, 32, endpoint=False) if angles_deg is None else np.asarray(angles_deg)
    raw = small_scan_counts(seed, angles, rows, cols) if counts is None else np.asarray(counts, np.float32)
    rows, cols = raw.shape[1:]
    write_dxchange(
        path, raw, angles, flats=np.full((2, rows, cols), 1000, np.float32), darks=np.zeros((1, rows, cols), np.float32)
    )
    return path


def write_manifest_yaml(
    path: Any,
    output: str,
    scans: list[str],
    *,
    pipeline: str = "[ingest, {stage: align, method: phase}, recon]",
    **settings: Any,
) -> Any:
    """A batch manifest written as a person would (YAML flow mappings, one line per scan): ``scans`` are
    the scan entries' inner text (``"name: a, path: raw/a.h5"``), ``settings`` more top-level keys
    (``cluster: none`` by default). Returns ``path``."""
    from pathlib import Path

    top = {"cluster": "none", **settings}
    lines = [
        "version: 1",
        f"output: {output}",
        *(f"{k}: {v}" for k, v in top.items()),
        f"pipeline: {pipeline}",
        "scans:",
        *(f"  - {{{entry}}}" for entry in scans),
    ]
    Path(path).write_text("\n".join(lines) + "\n")
    return path


def write_volume_store(
    path: Any, data: Any, *, voxel_size_um: float | None = 2.0, chunks: tuple[int, int, int] = (8, 16, 16)
) -> Any:
    """A complete one-level tomoflow volume store holding ``data`` (tests and benchmarks: an input volume
    without running a reconstruction). Returns the opened :class:`tomoflow.io.volume_store.VolumeStore`."""
    import numpy as np

    from tomoflow.io.output import prepare_output
    from tomoflow.io.stages import StageLog
    from tomoflow.io.volume_store import VolumeStore

    arr = np.asarray(data, dtype=np.float32)
    plan = prepare_output(
        path, kind="tomoflow-volume", stage="recon", fingerprint="testing-volume", params={}, inputs=[]
    )
    v = VolumeStore.create(plan, arr.shape, voxel_size_um, chunks=chunks, n_levels=1, algorithm="synthetic")
    v.level(0)[...] = arr
    StageLog.begin(path, "recon", fingerprint="testing-volume", params={}, steps={"level-0": 1})
    StageLog(path, "recon").mark_done("level-0", [0])
    StageLog(path, "recon").finish(output_id="testing-volume", seconds=0.0)
    return VolumeStore.open(path)


def http_get(url: str, timeout: float = 20.0) -> tuple[int, str]:
    """``(status, body)`` of a GET (an HTTP error status is returned, not raised; no server raises
    ``urllib.error.URLError``)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def assert_dashboard_page(url: str) -> str:
    """Assert that ``url`` serves a real Bokeh page of the Dask dashboard (not the 'Dask needs bokeh'
    stand-in, which also answers 200); its body."""
    status, body = http_get(url)
    assert status == 200, (url, status)
    assert "Dask needs" not in body and "bokeh.min.js" in body and "Bokeh.embed" in body, (url, body[:500])
    return body


def store_checksums(store: Any) -> dict[str, str]:
    """sha256 of every array of a zarr store, by path inside it (data only: attributes hold times and
    paths): two runs made the same result when these are equal."""
    import hashlib

    import zarr

    out: dict[str, str] = {}

    def walk(group: Any, prefix: str = "") -> None:
        for name, arr in group.arrays():
            out[prefix + name] = hashlib.sha256(np.ascontiguousarray(arr[...]).tobytes()).hexdigest()
        for name, sub in group.groups():
            walk(sub, f"{prefix}{name}/")

    walk(zarr.open_group(str(store), mode="r"))
    return out


def tree_snapshot(folder: Any) -> dict[str, str]:
    """Everything under ``folder`` by relative path: a file's sha256, a link's target, ``"dir"``. Two
    snapshots are equal when nothing was created, removed, renamed or changed (the inputs and a user's
    files after a refused command)."""
    import hashlib
    import os
    from pathlib import Path

    out: dict[str, str] = {}
    for p in sorted(Path(folder).rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


def write_random_unet(path: Any, *, channels: tuple[int, ...] = (4, 8), seed: int = 0) -> Any:
    """Save an untrained U-Net (random weights from ``seed``, ``channels`` per level) with its model card
    at ``path`` (``.safetensors``); returns the network. For tests of inference and tiling, where the
    network's quality does not matter."""
    import torch

    from tomoflow.recover.unet import UNetConfig, build_unet
    from tomoflow.train.files import save_unet

    torch.manual_seed(seed)
    cfg = UNetConfig(channels=tuple(channels))
    model = build_unet(config=cfg)
    save_unet(model, cfg, path, card={"name": "test-unet"})
    return model
