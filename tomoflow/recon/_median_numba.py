"""numba kernel of the 3 x 3 median filter (CPU path of :mod:`tomoflow.recon.outliers`).

``scipy.ndimage.median_filter`` sorts every window in a generic loop (about 1 s for 181 x 256 x 256);
this kernel selects the median of nine with a fixed exchange network, one image row per task,
edges replicated (``mode="nearest"``). Compiled once and cached on disk.
"""

import os

import numba
import numpy as np

if "NUMBA_THREADING_LAYER" not in os.environ:  # concurrent use from Dask worker threads
    numba.config.THREADING_LAYER = "threadsafe"


@numba.njit(inline="always")
def _sort2(a, b):  # pragma: no cover - compiled
    return (a, b) if a <= b else (b, a)


@numba.njit(fastmath=False, nogil=True, cache=True)
def _median9(p0, p1, p2, p3, p4, p5, p6, p7, p8):  # pragma: no cover - compiled
    # exchange network of Paeth / Devillard (19 compare-exchanges); p4 ends as the median
    p1, p2 = _sort2(p1, p2)
    p4, p5 = _sort2(p4, p5)
    p7, p8 = _sort2(p7, p8)
    p0, p1 = _sort2(p0, p1)
    p3, p4 = _sort2(p3, p4)
    p6, p7 = _sort2(p6, p7)
    p1, p2 = _sort2(p1, p2)
    p4, p5 = _sort2(p4, p5)
    p7, p8 = _sort2(p7, p8)
    p0, p3 = _sort2(p0, p3)
    p5, p8 = _sort2(p5, p8)
    p4, p7 = _sort2(p4, p7)
    p3, p6 = _sort2(p3, p6)
    p1, p4 = _sort2(p1, p4)
    p2, p5 = _sort2(p2, p5)
    p4, p7 = _sort2(p4, p7)
    p4, p2 = _sort2(p4, p2)
    p6, p4 = _sort2(p6, p4)
    p4, p2 = _sort2(p4, p2)
    return p4


@numba.njit(parallel=True, nogil=True, cache=True)
def median3x3(src):  # pragma: no cover - compiled
    # src (n, ny, nx) float32 -> 3 x 3 median of every image, edges replicated
    n, ny, nx = src.shape
    out = np.empty_like(src)
    for job in numba.prange(n * ny):
        k = job // ny
        y = job % ny
        ya = max(y - 1, 0)
        yb = min(y + 1, ny - 1)
        for x in range(nx):
            xa = max(x - 1, 0)
            xb = min(x + 1, nx - 1)
            out[k, y, x] = _median9(
                src[k, ya, xa],
                src[k, ya, x],
                src[k, ya, xb],
                src[k, y, xa],
                src[k, y, x],
                src[k, y, xb],
                src[k, yb, xa],
                src[k, yb, x],
                src[k, yb, xb],
            )
    return out


@numba.njit(parallel=True, nogil=True, cache=True)
def fill_invalid(src, bad, fallback, half):  # pragma: no cover - compiled
    # every bad pixel -> mean of the valid pixels of its (2 half + 1)^2 window, else fallback
    n, ny, nx = src.shape
    out = src.copy()
    for job in numba.prange(n * ny):
        k = job // ny
        y = job % ny
        for x in range(nx):
            if not bad[k, y, x]:
                continue
            acc = 0.0
            cnt = 0
            for yy in range(max(y - half, 0), min(y + half + 1, ny)):
                for xx in range(max(x - half, 0), min(x + half + 1, nx)):
                    if not bad[k, yy, xx]:
                        acc += src[k, yy, xx]
                        cnt += 1
            out[k, y, x] = acc / cnt if cnt > 0 else fallback[k, y, x]
    return out
