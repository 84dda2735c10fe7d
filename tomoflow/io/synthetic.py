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
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from tomoflow.errors import ConfigError
from tomoflow.io.models import SourceFile
from tomoflow.io.scan_store import write_scan

if TYPE_CHECKING:  # the storage layer may import kernels, but only needs the type here
    from tomoflow.sim.scan import ScanSimulator, SyntheticScan

__all__ = ["write_synthetic_scan", "TRUE_SHIFTS", "DX_JITTER_TRUTH"]

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
    scan: "SyntheticScan | ScanSimulator",
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


def _write_zarr(path: Path, scan: Any, projections: Any, shifts: np.ndarray, params: dict, overwrite: bool,
                pixel_size_um: float | None, energy_kev: float | None, progress: Any) -> Path:
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
        instrument={"synthetic": {**params, "true_shifts": f"zarr array '{TRUE_SHIFTS}' (angle, yx), pixels, (dy, dx)"}},
        source=SourceFile(path=str(path), format="synthetic"),
        extra_arrays={TRUE_SHIFTS: (("angle", "yx"), np.asarray(shifts, dtype=np.float64), _SHIFT_ATTRS)},
    )
    return path


def _write_dxchange(path: Path, scan: Any, projections: Any, shifts: np.ndarray, params: dict, overwrite: bool,
                    progress: Any) -> Path:
    import h5py

    from tomoflow.io.dxchange import write_dxchange

    write_dxchange(path, projections, scan.angles_deg, flats=scan.flats, darks=scan.darks, overwrite=overwrite,
                   progress=progress)
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
