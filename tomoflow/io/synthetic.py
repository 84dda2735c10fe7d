"""Write a simulated scan (:class:`tomoflow.sim.SyntheticScan`) to disk, with its ground truth.

Two targets:

``format="zarr"``
    A tomoflow scan store (:func:`tomoflow.io.scan_store.write_scan`, ``values = "intensity"``,
    ``source.format = "synthetic"``, ``rotation_center`` set). The true jitter goes into an extra
    zarr array ``true_shifts`` of shape ``(angle, 2)``, float64, dimensions ``("angle", "yx")``,
    pixels, columns ``(dy, dx)`` (``+dx``: content moved to larger column index). The simulation
    parameters go into the group attributes under ``instrument["synthetic"]``.
``format="dxchange"``
    A Data Exchange HDF5 file (:func:`tomoflow.io.dxchange.write_dxchange`) plus a dataset
    ``/exchange/jitter_truth`` ``(angle, 2)`` float64 with the same meaning, and the simulation
    parameters as JSON in its ``synthetic_params`` attribute.

If the ground truth cannot be added, the scan store is marked incomplete (and the HDF5 file is
removed), so a file without its truth is never left looking valid.

A simulated multiscale pair (:class:`tomoflow.sim.multiscale.MultiscalePair`) is written by
:func:`write_multiscale_pair` as two OME-Zarr volume stores (readable with
:func:`tomoflow.io.open_volume`), with stage positions and, under :data:`SIMULATION_TRUTH`, the true
HR -> LFOV transform in their extra metadata.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from tomoflow.errors import ConfigError
from tomoflow.io.lock import writes_outputs as _writes_outputs
from tomoflow.io.metadata import SourceFile
from tomoflow.io.scan_store import write_scan

if TYPE_CHECKING:  # the storage layer may import kernels, but only needs the type here
    from tomoflow.sim.multiscale import MultiscalePair
    from tomoflow.sim.scan import ScanSimulator, SyntheticScan

__all__ = ["write_synthetic_scan", "TRUE_SHIFTS", "DX_JITTER_TRUTH", "write_multiscale_pair", "SIMULATION_TRUTH"]

TRUE_SHIFTS = "true_shifts"
"""Name of the zarr array holding the true jitter in a synthetic scan store."""
DX_JITTER_TRUTH = "/exchange/jitter_truth"
"""HDF5 dataset holding the true jitter in a synthetic Data Exchange file."""

_SHIFT_ATTRS = {
    "units": "pixel",
    "long_name": "true stage jitter (dy, dx)",
    "components": ["dy", "dx"],
    "convention": "displacement of the measured projection from the perfect-stage one; +dx moves "
    "content to larger column index; correct by shifting with -shifts",
}


def write_synthetic_scan(
    path: str | os.PathLike,
    scan: SyntheticScan | ScanSimulator,
    format: Literal["zarr", "dxchange"] = "zarr",
    overwrite: bool = False,
    *,
    pixel_size_um: float | None = None,
    energy_kev: float | None = None,
    progress: Callable[[int], Any] | None = None,
) -> Path:
    """Write a simulated raw scan and its true jitter to a scan store or a DXchange file.

    Parameters
    ----------
    path
        Scan store directory (``*.zarr``) or HDF5 file (``*.h5``).
    scan
        The simulated scan (raw ``(angle, row, col)`` projections, flats, darks, angles in degrees,
        true shifts ``(angle, 2)``), or a :class:`tomoflow.sim.scan.ScanSimulator`, whose projections
        are then simulated block by block as they are written (memory: one block).
    format
        ``"zarr"`` (tomoflow scan store) or ``"dxchange"`` (Data Exchange HDF5).
    overwrite
        Replace an existing store / file.
    pixel_size_um, energy_kev
        Optional metadata for the scan store (micrometre, keV); ignored for DXchange.
    progress
        Called with the number of projections written after each block.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    path = Path(path)
    projections = scan.raw if hasattr(scan, "raw") else scan.projections
    shifts = np.asarray(scan.shifts, dtype=np.float64)
    if shifts.shape != (projections.shape[0], 2):
        raise ConfigError(f"scan.shifts must be (n_angles, 2), got {shifts.shape}")
    params = dict(scan.params)
    if format == "zarr":
        return _write_zarr(path, scan, projections, shifts, params, overwrite, pixel_size_um, energy_kev, progress)
    if format == "dxchange":
        return _write_dxchange(path, scan, projections, shifts, params, overwrite, progress)
    raise ConfigError(f"format must be 'zarr' or 'dxchange', got {format!r}")


def _write_zarr(
    path: Path,
    scan: Any,
    projections: Any,
    shifts: np.ndarray,
    params: dict,
    overwrite: bool,
    pixel_size_um: float | None,
    energy_kev: float | None,
    progress: Any,
) -> Path:
    write_scan(
        path,
        projections,
        scan.angles_deg,
        flats=scan.flats,
        darks=scan.darks,
        overwrite=overwrite,
        progress=progress,
        values="intensity",
        rotation_center=float(scan.center),
        pixel_size_um=pixel_size_um,
        energy_kev=energy_kev,
        instrument={
            "synthetic": {**params, "true_shifts": f"zarr array '{TRUE_SHIFTS}' (angle, yx), pixels, (dy, dx)"}
        },
        source=SourceFile(path=str(path), format="synthetic"),
        extra_arrays={TRUE_SHIFTS: (("angle", "yx"), np.asarray(shifts, dtype=np.float64), _SHIFT_ATTRS)},
    )
    return path


def _write_dxchange(
    path: Path, scan: Any, projections: Any, shifts: np.ndarray, params: dict, overwrite: bool, progress: Any
) -> Path:
    import h5py

    from tomoflow.io.dxchange import write_dxchange

    write_dxchange(
        path, projections, scan.angles_deg, flats=scan.flats, darks=scan.darks, overwrite=overwrite, progress=progress
    )
    try:
        with h5py.File(path, "a") as f:
            ds = f.create_dataset(DX_JITTER_TRUTH, data=shifts)
            for key, value in _SHIFT_ATTRS.items():
                ds.attrs[key] = value if not isinstance(value, list) else ",".join(value)
            ds.attrs["synthetic_params"] = json.dumps(params)
            ds.attrs["rotation_center"] = float(scan.center)
    except BaseException:
        path.unlink(missing_ok=True)  # the file we just wrote, without its truth
        raise
    return path


# ----------------------------------------------------------------------------- multiscale pairs
SIMULATION_TRUTH = "simulation_truth"
"""Key, in a simulated volume store's extra metadata, of the simulation's ground truth (tests and
benchmarks only: real data has no such key, and no algorithm may read it)."""

_MATRIX_CONVENTION = (
    "p_lfov = M @ [z, y, x, 1] (column vectors); physical coordinates in micrometres, origin at the centre "
    "of voxel (0, 0, 0) of each volume, voxel (i, j, k) at (i*dz, j*dy, k*dx); "
    "M = T(translation_um) @ R @ diag(scale) @ T(-c_hr), R = R_z @ R_y @ R_x, c_hr = (n_hr - 1) / 2 * spacing_hr"
)
_PRIOR_FORMULA = (
    "prior_matrix = identity with [:3, 3] = hr_stage_position_um - lfov_stage_position_um + "
    "c_lfov - c_hr, where c = (n - 1) / 2 * spacing (stage positions: stage coordinates of each "
    "volume's centre, axes z, y, x)"
)


def _isotropic(name: str, spacing: Any) -> float:
    sp = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if sp.size == 0 or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise ConfigError(f"{name} must be positive, got {spacing!r}")
    if not np.allclose(sp, sp[0], rtol=1e-9, atol=0.0):
        raise ConfigError(
            f"{name} {tuple(sp.tolist())} is anisotropic; volume stores record one isotropic voxel "
            "size, so only isotropic pairs can be written"
        )
    return float(sp[0])


@_writes_outputs
def write_multiscale_pair(
    pair: MultiscalePair,
    hr_path: str | os.PathLike,
    lfov_path: str | os.PathLike,
    *,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Write a simulated multiscale pair as two OME-Zarr volume stores, with metadata and ground truth.

    Each store is a complete tomoflow volume store (level 0 plus the usual 2x block-mean pyramid,
    ``recon`` stage record complete, ``algorithm = "synthetic"``), readable with
    :func:`tomoflow.io.open_volume`. Its extra metadata (:attr:`tomoflow.io.VolumeStore.extra`, also
    the ``attrs`` of the DataArray that ``open_volume`` returns) holds:

    ``voxel_size_um``
        ``[dz, dy, dx]`` (equal: stores are isotropic; the OME-Zarr scale says the same).
    ``stage_position_um``
        ``[z, y, x]`` stage coordinates of the volume's centre (what a real scan records); the prior
        HR -> LFOV matrix follows from both stores' positions (see ``prior_formula``).
    ``synthetic``
        ``{"kind": "multiscale-pair", "role": "hr" | "lfov", "counterpart": <other path>, "params": ...}``.
    ``simulation_truth`` (:data:`SIMULATION_TRUTH`, in both stores; for tests and benchmarks only)
        ``hr_to_lfov_matrix`` (4x4 nested lists), ``convention``, ``prior_matrix``, ``prior_formula``,
        ``rotation_deg``, ``scale``, ``translation_um``, ``prior_error_um``, ``phase_fractions`` (HR ROI).

    Parameters
    ----------
    pair
        The output of :func:`tomoflow.sim.multiscale.simulate_multiscale_pair`.
    hr_path, lfov_path
        The two store directories (``*.zarr``); distinct, neither inside the other.
    overwrite
        Replace existing tomoflow *volume* stores holding something else. Anything that is not a
        tomoflow volume store is never replaced; a store already holding exactly this volume and
        metadata is left as it is.

    Returns
    -------
    (pathlib.Path, pathlib.Path)
        ``(hr_path, lfov_path)``.

    Raises
    ------
    ConfigError
        The two paths are the same or nested, or a spacing is anisotropic.
    StoreError
        An output path may not be written (not a tomoflow volume store, or another volume and no
        ``overwrite``), or cannot be created.
    """
    import hashlib
    import time

    from tomoflow import config as _config
    from tomoflow.io.lock import claim_output
    from tomoflow.io.metadata import VOLUME_FORMAT
    from tomoflow.io.output import OutputPlan, fingerprint, prepare_output, resolved_path
    from tomoflow.io.stages import StageLog
    from tomoflow.io.volume_store import VolumeStore, block_mean_2x, level_shape, pyramid_levels

    hr_path, lfov_path = Path(hr_path), Path(lfov_path)
    r_hr, r_lf = resolved_path(hr_path), resolved_path(lfov_path)
    if r_hr == r_lf or r_hr in r_lf.parents or r_lf in r_hr.parents:
        raise ConfigError(
            f"hr_path ({hr_path}) and lfov_path ({lfov_path}) must be two separate stores, neither inside the other"
        )
    hr_sp = _isotropic("hr_spacing_um", pair.hr_spacing_um)
    lf_sp = _isotropic("lfov_spacing_um", pair.lfov_spacing_um)

    def floats(a: Any) -> Any:
        return np.asarray(a, dtype=np.float64).tolist()

    truth = {
        "note": "ground truth of a simulation, for tests and benchmarks only (absent from real data)",
        "hr_to_lfov_matrix": floats(pair.true_matrix),
        "convention": _MATRIX_CONVENTION,
        "prior_matrix": floats(pair.prior_matrix),
        "prior_formula": _PRIOR_FORMULA,
        "rotation_deg": floats(pair.rotation_deg),
        "scale": floats(pair.scale),
        "translation_um": floats(pair.translation_um),
        "prior_error_um": floats(pair.prior_error_um),
        "phase_fractions": {k: float(v) for k, v in pair.phase_fractions.items()},
    }
    jobs = []
    for role, path, other, vol, spacing, stage in (
        ("hr", hr_path, lfov_path, pair.hr, hr_sp, pair.hr_stage_position_um),
        ("lfov", lfov_path, hr_path, pair.lfov, lf_sp, pair.lfov_stage_position_um),
    ):
        vol = np.ascontiguousarray(vol, dtype=np.float32)
        if vol.ndim != 3 or 0 in vol.shape:
            raise ConfigError(f"the {role} volume must be a non-empty 3-D array, got shape {vol.shape}")
        extra = {
            "voxel_size_um": [spacing] * 3,
            "stage_position_um": floats(stage),
            "synthetic": {
                "kind": "multiscale-pair",
                "role": role,
                "counterpart": str(other),
                "params": dict(pair.params),
            },
            SIMULATION_TRUTH: truth,
        }
        digest = hashlib.sha256(vol.tobytes())
        digest.update(repr(vol.shape).encode())
        digest.update(json.dumps(extra, sort_keys=True, default=str).encode())
        params = {"synthetic": "multiscale-pair", "role": role, "content_sha256": digest.hexdigest()}
        fp = fingerprint("recon", inputs={}, params=params)
        plan = claim_output(
            lambda p=path, f=fp, q=params: prepare_output(  # type: ignore[misc]  # a lambda with defaults, called once; locked until the function returns
                p, kind=VOLUME_FORMAT, stage="recon", fingerprint=f, params=q, overwrite=overwrite
            ),
            path,
            what="simulated volume",
        )
        jobs.append((plan, vol, spacing, extra, fp, params))

    cfg = _config.get()
    for plan, vol, spacing, extra, fp, params in jobs:  # both outputs were allowed before writing either
        if plan.action == "complete":
            continue
        if plan.action == "resume":  # our own interrupted write of the same data: redo it
            plan = OutputPlan("replace", plan.path)
        t0 = time.perf_counter()
        shape: Any = tuple(int(s) for s in vol.shape)
        chunks = tuple(min(cfg.volume_chunk, s) for s in shape)
        n_levels = pyramid_levels(shape)
        store = VolumeStore.create(
            plan,
            shape,
            spacing,
            chunks=chunks,
            n_levels=n_levels,
            algorithm="synthetic",
            inputs=[SourceFile(path=str(plan.path), format="synthetic")],
            extra=extra,
        )
        n_units = {
            k: int(np.prod([-(-s // c) for s, c in zip(level_shape(shape, k), store.level(k).chunks)]))
            for k in range(n_levels)
        }
        n_units[0] = -(-shape[0] // chunks[0])  # level 0: one marker per z-chunk row
        log = StageLog.begin(
            plan.path, "recon", fingerprint=fp, params=params, steps={f"level-{k}": n for k, n in n_units.items()}
        )
        level = vol
        for k in range(n_levels):
            if k:
                level = block_mean_2x(level)
            store.level(k)[:] = level
            log.mark_done(f"level-{k}", range(n_units[k]))
        log.finish(output_id=fp, seconds=time.perf_counter() - t0, synthetic="multiscale-pair")
    return hr_path, lfov_path
