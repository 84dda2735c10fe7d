"""numba kernels of the pixel-driven projector (CPU path of :mod:`tomoflow.recon.projector`).

Imported lazily by the projector; compiled once and cached on disk (``cache=True``). Arrays are
z-innermost (``(ny, nx, nz)`` volumes, ``(na, ncol, nz)`` sinograms) so the inner loop is a
contiguous SIMD loop over slices, and pixels are processed in tiles for cache reuse.

Pixel ``(y, x)`` projected to detector position ``t`` (fraction ``f`` past column ``floor(t)``)
meets columns ``floor(t)`` and ``floor(t) + 1`` with triangle weights of half-width ``h`` and area 1:
``w0 = max(0, 1 - f / h) / h``, ``w1 = max(0, 1 - (1 - f) / h) / h``; the kernels take ``1 / h`` per
angle (``inv_hw``). ``h = 1`` is linear interpolation.
"""

import math
import os

import numba
import numpy as np

# Dask runs several kernels at once from worker threads; numba's default "workqueue" layer aborts on
# concurrent use, so ask for a thread-safe layer (OpenMP or TBB) unless the user chose one.
if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "threadsafe"


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def forward_kernel(vol, cos, sin, inv_hw, cx, cy, center, ncol, tile, ngroups):  # pragma: no cover
    # vol (ny, nx, nz) float32 -> out (na, ncol, nz) float32
    ny, nx, nz = vol.shape
    na = cos.shape[0]
    out = np.zeros((na, ncol, nz), dtype=np.float32)
    ngroups = min(na, max(1, ngroups))
    tiles_y = (ny + tile - 1) // tile
    tiles_x = (nx + tile - 1) // tile
    for g in numba.prange(ngroups):
        a0 = (g * na) // ngroups
        a1 = ((g + 1) * na) // ngroups
        for ty in range(tiles_y):
            for tx in range(tiles_x):
                for a in range(a0, a1):
                    c = cos[a]
                    s = sin[a]
                    q = inv_hw[a]
                    for y in range(ty * tile, min(ny, (ty + 1) * tile)):
                        base = (y - cy) * s + center - cx * c
                        for x in range(tx * tile, min(nx, (tx + 1) * tile)):
                            t = base + x * c
                            fi = math.floor(t)
                            i = int(fi)
                            f = t - fi
                            w0 = np.float32(max(0.0, 1.0 - f * q) * q)
                            w1 = np.float32(max(0.0, 1.0 - (1.0 - f) * q) * q)
                            if i >= 0 and i < ncol - 1:
                                for z in range(nz):
                                    v = vol[y, x, z]
                                    out[a, i, z] += w0 * v
                                    out[a, i + 1, z] += w1 * v
                            elif i == -1:
                                for z in range(nz):
                                    out[a, 0, z] += w1 * vol[y, x, z]
                            elif i == ncol - 1:
                                for z in range(nz):
                                    out[a, i, z] += w0 * vol[y, x, z]
    return out


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def back_kernel(sino, cos, sin, inv_hw, cx, cy, center, ny, nx, tile):  # pragma: no cover
    # sino (na, ncol, nz) float32 -> out (ny, nx, nz) float32
    na, ncol, nz = sino.shape
    out = np.zeros((ny, nx, nz), dtype=np.float32)
    tiles_y = (ny + tile - 1) // tile
    tiles_x = (nx + tile - 1) // tile
    for k in numba.prange(tiles_y * tiles_x):
        ty = k // tiles_x
        tx = k % tiles_x
        y0 = ty * tile
        x0 = tx * tile
        y1 = min(ny, y0 + tile)
        x1 = min(nx, x0 + tile)
        acc = np.zeros((y1 - y0, x1 - x0, nz), dtype=np.float32)
        for a in range(na):
            c = cos[a]
            s = sin[a]
            q = inv_hw[a]
            for y in range(y0, y1):
                base = (y - cy) * s + center - cx * c
                for x in range(x0, x1):
                    t = base + x * c
                    fi = math.floor(t)
                    i = int(fi)
                    f = t - fi
                    w0 = np.float32(max(0.0, 1.0 - f * q) * q)
                    w1 = np.float32(max(0.0, 1.0 - (1.0 - f) * q) * q)
                    if i >= 0 and i < ncol - 1:
                        for z in range(nz):
                            acc[y - y0, x - x0, z] += w0 * sino[a, i, z] + w1 * sino[a, i + 1, z]
                    elif i == -1:
                        for z in range(nz):
                            acc[y - y0, x - x0, z] += w1 * sino[a, 0, z]
                    elif i == ncol - 1:
                        for z in range(nz):
                            acc[y - y0, x - x0, z] += w0 * sino[a, i, z]
        out[y0:y1, x0:x1, :] = acc
    return out
