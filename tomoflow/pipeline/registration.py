"""Registration of two volume stores: an HR region-of-interest volume into the LFOV volume of the same
sample (:func:`tomoflow.register.register`), from the stage positions recorded in their metadata.

Used by ``tomoflow register``, ``tomoflow train-recovery``, the demo and the batch runner: one place that
turns stores into the registration document (the HR -> LFOV matrix, NCC, stages, timing) that
``tomoflow resample`` and ``tomoflow train-recovery --registration`` read back.

What is read: the LFOV only around the ROI (one slice of its level 0); the HR level 0 chunk by chunk,
once per smoothed image the registration asks for (:class:`StoreMoving`: a Dask graph of one task per
store chunk, threaded local scheduler), never whole; for the QC picture, the three central HR planes
(:func:`central_planes`). Memory does not grow with the HR volume: the smoothed, sampled images are
bounded by :data:`tomoflow.register.registration.MAX_MOVING_VOXELS`, the NCC points by
:data:`~tomoflow.register.registration.MAX_FIXED_POINTS`, and a task holds one store chunk (measured:
1.19 GB peak for a 384³ HR, 1.22 GB for 768³, with 256³ chunks).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from tomoflow.errors import ConfigError

__all__ = ["volume_voxel_um", "registration_prior", "register_volumes", "StoreMoving", "central_planes"]

#: Largest block edge (HR voxels) of the smoothing graph: blocks follow the store's chunks, split to this.
BLOCK_EDGE = 128


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


def _edges(n: int, chunk: int, block: int) -> list[int]:
    """Block boundaries along an axis of ``n`` voxels: the store's chunk boundaries, each chunk split
    into pieces of at most ``block`` voxels."""
    out = [0]
    for c0 in range(0, n, chunk):
        c1 = min(c0 + chunk, n)
        k = -(-(c1 - c0) // block)
        out += [c0 + (c1 - c0) * (i + 1) // k for i in range(k)]
    return out


def _reflect(p: np.ndarray, n: int) -> np.ndarray:
    """Index of the volume voxel seen at position ``p`` when the volume is reflected at its faces
    (scipy's ``reflect``, numpy's ``symmetric``: period ``2 n``)."""
    q = np.mod(p, 2 * n)
    return np.where(q < n, q, 2 * n - 1 - q)


def _axis_plan(o: int, b: int, n: int, r: int, step: int) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Along one axis, what the block ``[o, o + b)`` of a volume of ``n`` voxels contributes to the
    samples at ``step * k``: the first sample ``k0``, their count, and for the positions of their
    windows (``step * k0 - r`` on) the block index each reads and whether it lies in the block."""
    pos = np.arange(-r, n + r)
    src = _reflect(pos, n)
    hit = pos[(src >= o) & (src < o + b)]  # positions whose (reflected) voxel is in the block
    k0 = -(-max(int(hit.min()) - r, 0) // step)
    k1 = min(int(hit.max()) + r, n - 1) // step + 1
    win = np.arange(step * k0 - r, step * (k1 - 1) + r + 1)
    s = _reflect(win, n)
    inside = (s >= o) & (s < o + b)
    return k0, k1 - k0, np.clip(s - o, 0, b - 1), inside


class StoreMoving:
    """The HR level 0 of a volume store as registration's moving image
    (:class:`tomoflow.register.moving.MovingImage`), computed chunk by chunk.

    ``sample(sigma, step)`` runs a Dask graph (threaded local scheduler) of one task per chunk of the
    store: each task reads its chunk once (an aligned slice: one chunk decoded) and, in sub-blocks of
    at most :data:`BLOCK_EDGE` voxels per axis, adds the sub-block's contribution to the smoothed,
    sampled volume (the sub-block zero-extended, reflected where it touches the volume's faces, then
    :func:`tomoflow.register.moving.filter_sample`): the Gaussian is linear, so the contributions sum
    to the volume's (equal to :func:`~tomoflow.register.moving.smooth_sample` of the whole volume to
    float32 rounding) without halos read twice. Memory: the result (``(n / step)^3`` float32) plus one
    chunk and one sub-block per thread, never the level 0 (unless the level 0 is a single chunk: then it
    is decoded once and kept for the next ``sample``).

    Parameters
    ----------
    array
        ``(z, y, x)`` array read by slicing (a zarr array; anything with ``shape``, and ``chunks``
        when it has them).
    num_workers
        Threads of the local scheduler (None: Dask's default).
    """

    def __init__(self, array: Any, num_workers: int | None = None) -> None:
        self.array = array
        self.num_workers = num_workers
        self._only_chunk: np.ndarray | None = None  # a volume of one chunk, decoded once for every sigma

    @property
    def shape(self) -> tuple[int, ...]:
        """The HR volume's shape ``(z, y, x)``."""
        return tuple(int(n) for n in self.array.shape)

    def sample(self, sigma: float, step: int) -> np.ndarray:
        """The volume smoothed by ``sigma`` HR voxels, sampled every ``step`` HR voxels (float32)."""
        import threading

        import dask

        from tomoflow.register.moving import filter_sample, gaussian_radius, sampled_shape

        shape = self.shape
        chunks = tuple(int(c) for c in getattr(self.array, "chunks", None) or shape)
        r = gaussian_radius(sigma) if sigma > 0 else 0
        out = np.zeros(sampled_shape(shape, step), dtype=np.float32)
        lock = threading.Lock()
        source = self.array

        one_chunk = all(c >= n for c, n in zip(chunks, shape))

        def chunk_task(c0: tuple[int, ...]) -> int:
            c1 = tuple(min(a + c, n) for a, c, n in zip(c0, chunks, shape))
            if one_chunk and self._only_chunk is not None:
                data = self._only_chunk
            else:
                data = np.asarray(source[tuple(slice(a, b) for a, b in zip(c0, c1))], dtype=np.float32)
                if one_chunk:  # memory of one chunk, as any task holds; read once instead of once per sigma
                    self._only_chunk = data
            edges = [_edges(b - a, b - a, BLOCK_EDGE) for a, b in zip(c0, c1)]
            for i0, i1 in zip(edges[0][:-1], edges[0][1:]):
                for j0, j1 in zip(edges[1][:-1], edges[1][1:]):
                    for l0, l1 in zip(edges[2][:-1], edges[2][1:]):
                        lo, hi = (i0, j0, l0), (i1, j1, l1)
                        plans = [_axis_plan(c0[a] + lo[a], hi[a] - lo[a], shape[a], r, step) for a in range(3)]
                        sub = data[i0:i1, j0:j1, l0:l1]
                        padded = sub[np.ix_(*(p[2] for p in plans))]
                        padded *= plans[0][3][:, None, None] & plans[1][3][None, :, None] & plans[2][3][None, None, :]
                        part = filter_sample(padded, sigma, step, (r, r, r), tuple(p[1] for p in plans))
                        with lock:
                            out[tuple(slice(p[0], p[0] + p[1]) for p in plans)] += part
            return 1

        starts = [range(0, n, c) for n, c in zip(shape, chunks)]
        tasks = [
            dask.delayed(chunk_task, pure=False)((a, b, c), dask_key_name=f"register-smooth-{a}-{b}-{c}-{id(out)}")
            for a in starts[0]
            for b in starts[1]
            for c in starts[2]
        ]
        dask.compute(*tasks, scheduler="threads", num_workers=self.num_workers)
        return out


def central_planes(array: Any) -> list[np.ndarray]:
    """The central z, y and x planes of a ``(z, y, x)`` array (``a[nz // 2]``, ``a[:, ny // 2]``,
    ``a[:, :, nx // 2]``, float32), read one chunk at a time (a zarr array: one chunk decoded per read,
    never the volume)."""
    shape = tuple(int(n) for n in array.shape)
    chunks = tuple(int(c) for c in getattr(array, "chunks", None) or shape)
    planes = []
    for axis in range(3):
        c = shape[axis] // 2
        others = [a for a in range(3) if a != axis]
        plane = np.empty([shape[a] for a in others], dtype=np.float32)
        for u in range(0, shape[others[0]], chunks[others[0]]):
            for v in range(0, shape[others[1]], chunks[others[1]]):
                key: list[Any] = [slice(None)] * 3
                key[axis] = c
                key[others[0]] = slice(u, u + chunks[others[0]])
                key[others[1]] = slice(v, v + chunks[others[1]])
                plane[u : u + chunks[others[0]], v : v + chunks[others[1]]] = np.asarray(array[tuple(key)])
        planes.append(plane)
    return planes


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
        The HR volume's level 0 when the caller has already read it (``(z, y, x)`` float32; the same
        result as without). Without it the HR level 0 is never read whole: registration reads it
        smoothed and sampled, chunk by chunk (:class:`StoreMoving`).

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
    moving = StoreMoving(h.level(0)) if hr_volume is None else np.asarray(hr_volume, dtype=np.float32)
    res = register(
        moving,
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
