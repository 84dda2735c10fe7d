"""Registration of two volume stores: an HR region-of-interest volume into the LFOV volume of the same
sample (:func:`tomoflow.register.register`), from the stage positions recorded in their metadata.

Used by ``tomoflow register``, ``tomoflow train-recovery``, the demo and the batch runner: one place that
turns stores into the registration document (the HR -> LFOV matrix, NCC, stages, timing) that
``tomoflow resample`` and ``tomoflow train-recovery --registration`` read back.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from tomoflow.errors import ConfigError

__all__ = ["volume_voxel_um", "registration_prior", "register_volumes"]


def volume_voxel_um(store: Any, path: str | os.PathLike) -> float:
    """The voxel size of a volume store in micrometres; ConfigError when it is unknown."""
    vs = store.attrs.voxel_size
    if vs is None:
        raise ConfigError(
            f"{path}: the voxel size is unknown (the scan had no pixel size); registration and "
            "recovery need micrometres"
        )
    return float(vs.value)


def _stage_um(store: Any) -> list[float] | None:
    pos = store.extra.get("stage_position_um")
    return None if pos is None else [float(v) for v in pos]


def registration_prior(h: Any, lf: Any, hr_um: float, lf_um: float) -> tuple[Any, str]:
    """The registration prior of two open volume stores: from their stage positions
    (``stage_position_um`` in the extra metadata), else None (the ROI assumed centred in the LFOV
    field); with a description."""
    from tomoflow.register.transform import prior_from_stage

    hs, ls = _stage_um(h), _stage_um(lf)
    if hs is not None and ls is not None:
        return prior_from_stage(h.shape, hr_um, hs, lf.shape, lf_um, ls), "stage positions"
    return None, "none recorded: ROI assumed centred in the LFOV field"


def register_volumes(
    hr_path: str | os.PathLike,
    lfov_path: str | os.PathLike,
    *,
    dof: int = 9,
    device: str | None = None,
    max_rotation_deg: float = 10.0,
    hr_volume: Any = None,
) -> dict[str, Any]:
    """Register the HR volume store into the LFOV volume store from the stage prior.

    Parameters
    ----------
    hr_path, lfov_path
        Volume stores (complete, voxel sizes known; HR voxels smaller than LFOV voxels). The LFOV is
        read only around the ROI.
    dof, device, max_rotation_deg
        As for :func:`tomoflow.register.register` (``device`` None: the configured device,
        ``tomoflow.config.get().device``).
    hr_volume
        The HR volume's level 0 when the caller has already read it (``(z, y, x)`` float32).

    Returns
    -------
    dict
        ``hr``, ``lfov`` (paths), ``hr_voxel_um``, ``lfov_voxel_um``, ``prior_source``, ``seconds``
        and the result's :meth:`~tomoflow.register.Registration.as_dict` (``matrix``: HR physical ->
        LFOV physical micrometres, ``ncc_prior``, ``ncc``, ``transform``, ``stages``).
    """
    from tomoflow.io.volume_store import VolumeStore
    from tomoflow.register import register

    t0 = time.perf_counter()
    h, lf = VolumeStore.open(hr_path), VolumeStore.open(lfov_path)
    hr_um, lf_um = volume_voxel_um(h, hr_path), volume_voxel_um(lf, lfov_path)
    if not hr_um < lf_um:
        raise ConfigError(
            f"HR voxels ({hr_um:g} um, {hr_path}) must be smaller than LFOV voxels ({lf_um:g} um, "
            f"{lfov_path}); are HR and LFOV swapped?"
        )
    prior, source = registration_prior(h, lf, hr_um, lf_um)
    hr_vol = np.asarray(h.level(0)[...] if hr_volume is None else hr_volume, dtype=np.float32)
    res = register(
        hr_vol,
        lf.level(0),
        hr_spacing_um=hr_um,
        lfov_spacing_um=lf_um,
        prior=prior,
        dof=dof,
        device=device,
        max_rotation_deg=max_rotation_deg,
    )
    return {
        "hr": str(hr_path),
        "lfov": str(lfov_path),
        "hr_voxel_um": hr_um,
        "lfov_voxel_um": lf_um,
        "prior_source": source,
        "seconds": time.perf_counter() - t0,
        **res.as_dict(),
    }
