"""Fused CUDA kernels of the pixel-driven projector (GPU path of :mod:`tomoflow.recon.projector`).

Imported lazily by the projector for CuPy inputs. Each operator is ONE kernel launch per slab:

* backprojection: one thread per (pixel, 4 slices), every angle looped inside the thread;
* forward projection: one thread per (angle, detector column, 4 slices), gathering along the ray the
  pixels whose triangle footprint covers that column (the transpose of the pixel-driven scatter, so
  the pair stays exactly adjoint and no atomic adds are needed).

Arrays are z-innermost and padded to a multiple of 4 slices (``(ny, nx, nzq)`` / ``(na, ncol, nzq)``
of ``float4``), so a warp reads whole 16-byte groups of neighbouring slices (coalesced), and the
interpolation weights of a (pixel, angle) pair are computed once for 4 slices. Detector positions are
computed in float64 (a 2048-column detector leaves float32 only 2e-4 px), the sums in float32. The
angle tables are staged through shared memory in chunks. Same weights as the numba CPU kernels
(see :mod:`tomoflow.recon._projector_numba`); a GPU test checks the two agree to 1e-4.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tomoflow.recon._cuda import cuda_kernel

_THREADS = 256

_SOURCE = r"""
#define CHUNK 256

__device__ __forceinline__ void axpy4(float4 &acc, float w, const float4 v) {
    acc.x = fmaf(w, v.x, acc.x); acc.y = fmaf(w, v.y, acc.y);
    acc.z = fmaf(w, v.z, acc.z); acc.w = fmaf(w, v.w, acc.w);
}

extern "C" __global__ void tf_backproject(
    const float4* __restrict__ sino, const double* __restrict__ cosv, const double* __restrict__ sinv,
    const float* __restrict__ qv, float4* __restrict__ out,
    const int na, const int ncol, const int nzq, const int ny, const int nx,
    const double cx, const double cy, const double center)
{
    __shared__ double sc[CHUNK];
    __shared__ double ss[CHUNK];
    __shared__ float sq[CHUNK];
    const long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long total = (long long)ny * nx * nzq;
    const bool active = g < total;
    const int zq = active ? (int)(g % nzq) : 0;
    const long long pix = active ? g / nzq : 0;
    const double u = (double)(pix % nx) - cx;
    const double v = (double)(pix / nx) - cy;
    const long long rowstride = (long long)nzq;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    for (int a0 = 0; a0 < na; a0 += CHUNK) {
        const int n = min(CHUNK, na - a0);
        __syncthreads();
        for (int k = threadIdx.x; k < n; k += blockDim.x) {
            sc[k] = cosv[a0 + k]; ss[k] = sinv[a0 + k]; sq[k] = qv[a0 + k];
        }
        __syncthreads();
        if (!active) continue;
        for (int k = 0; k < n; ++k) {
            const double t = u * sc[k] + v * ss[k] + center;
            const double fi = floor(t);
            const int i = (int)fi;
            const float f = (float)(t - fi);
            const float q = sq[k];
            const float w0 = fmaxf(0.f, 1.f - f * q) * q;
            const float w1 = fmaxf(0.f, 1.f - (1.f - f) * q) * q;
            const float4* line = sino + (long long)(a0 + k) * ncol * rowstride + zq;
            if (i >= 0 && i < ncol - 1) {
                axpy4(acc, w0, line[i * rowstride]);
                axpy4(acc, w1, line[(i + 1) * rowstride]);
            } else if (i == -1) {
                axpy4(acc, w1, line[0]);
            } else if (i == ncol - 1) {
                axpy4(acc, w0, line[i * rowstride]);
            }
        }
    }
    if (active) out[g] = acc;
}

extern "C" __global__ void tf_project(
    const float4* __restrict__ vol, const double* __restrict__ cosv, const double* __restrict__ sinv,
    float4* __restrict__ out,
    const int na, const int ncol, const int nzq, const int ny, const int nx,
    const double cx, const double cy, const double center)
{
    const long long g = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    const long long total = (long long)na * ncol * nzq;
    if (g >= total) return;
    const int zq = (int)(g % nzq);
    const long long r = g / nzq;
    const int i = (int)(r % ncol);
    const int a = (int)(r / ncol);
    const double c = cosv[a], s = sinv[a];
    const double d = (double)i - center;  // detector position relative to the axis
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    if (fabs(c) >= fabs(s)) {
        // footprint half-width |c|: pixels x with |x - xs| < 1 on each row y, weight (1 - |x - xs|) / |c|
        const float q = (float)(1.0 / fabs(c));
        const double b = -s / c, a0 = cx + (d + cy * s) / c;  // xs(y) = a0 + y b: no division per step
        for (int y = 0; y < ny; ++y) {
            const double xs = fma((double)y, b, a0);
            const double fx = floor(xs);
            const int x0 = (int)fx;
            const float f = (float)(xs - fx);
            const float4* row = vol + (long long)y * nx * nzq + zq;
            if (x0 >= 0 && x0 < nx) axpy4(acc, (1.f - f) * q, row[(long long)x0 * nzq]);
            if (x0 + 1 >= 0 && x0 + 1 < nx && f > 0.f) axpy4(acc, f * q, row[(long long)(x0 + 1) * nzq]);
        }
    } else {
        const float q = (float)(1.0 / fabs(s));
        const double b = -c / s, a0 = cy + (d + cx * c) / s;
        for (int x = 0; x < nx; ++x) {
            const double ys = fma((double)x, b, a0);
            const double fy = floor(ys);
            const int y0 = (int)fy;
            const float f = (float)(ys - fy);
            const float4* col = vol + (long long)x * nzq + zq;
            if (y0 >= 0 && y0 < ny) axpy4(acc, (1.f - f) * q, col[(long long)y0 * nx * nzq]);
            if (y0 + 1 >= 0 && y0 + 1 < ny && f > 0.f) axpy4(acc, f * q, col[(long long)(y0 + 1) * nx * nzq]);
        }
    }
    out[g] = acc;
}
"""


def _kernel(name: str) -> Any:
    return cuda_kernel(_SOURCE, name)


def _zq(nz: int) -> int:
    return -(-nz // 4)


def _z_innermost(xp: Any, a: Any, z_axis: int) -> Any:
    """``a`` with its z axis moved last and zero-padded to a multiple of 4 (float32, contiguous)."""
    moved = xp.moveaxis(a, z_axis, -1).astype(xp.float32, copy=False)
    nz = moved.shape[-1]
    out = xp.zeros((*moved.shape[:-1], 4 * _zq(nz)), dtype=xp.float32)
    out[..., :nz] = moved
    return out


def _launch(
    name: str, total: int, arrays: tuple[Any, ...], na: int, ncol: int, nzq: int, ny: int, nx: int, center: float
) -> None:
    """Launch kernel ``name`` over ``total`` threads with its arrays and the shared geometry arguments."""
    if total:
        geometry = (
            np.int32(na),
            np.int32(ncol),
            np.int32(nzq),
            np.int32(ny),
            np.int32(nx),
            np.float64((nx - 1) / 2.0),
            np.float64((ny - 1) / 2.0),
            np.float64(center),
        )
        _kernel(name)((int(-(-total // _THREADS)),), (_THREADS,), (*arrays, *geometry))


def forward(volume: Any, cos: np.ndarray, sin: np.ndarray, center: float, ncol: int) -> Any:
    """``(nz, ny, nx)`` CuPy volume -> ``(na, nz, ncol)`` projections (one kernel launch)."""
    import cupy as cp

    nz, ny, nx = volume.shape
    na, nzq = int(cos.size), _zq(nz)
    vol = _z_innermost(cp, volume, 0)  # (ny, nx, nzq*4)
    out = cp.empty((na, ncol, 4 * nzq), dtype=cp.float32)
    _launch(
        "tf_project",
        na * ncol * nzq,
        (vol, cp.asarray(cos, dtype=cp.float64), cp.asarray(sin, dtype=cp.float64), out),
        na,
        ncol,
        nzq,
        ny,
        nx,
        center,
    )
    return cp.ascontiguousarray(cp.moveaxis(out[..., :nz], -1, 1))


def backward(sino: Any, cos: np.ndarray, sin: np.ndarray, inv_hw: np.ndarray, center: float, ny: int, nx: int) -> Any:
    """``(na, nz, ncol)`` CuPy projections -> ``(nz, ny, nx)`` backprojection (one kernel launch)."""
    import cupy as cp

    na, nz, ncol = sino.shape
    nzq = _zq(nz)
    s = _z_innermost(cp, sino, 1)  # (na, ncol, nzq*4)
    out = cp.empty((ny, nx, 4 * nzq), dtype=cp.float32)
    _launch(
        "tf_backproject",
        ny * nx * nzq,
        (
            s,
            cp.asarray(cos, dtype=cp.float64),
            cp.asarray(sin, dtype=cp.float64),
            cp.asarray(inv_hw, dtype=cp.float32),
            out,
        ),
        na,
        ncol,
        nzq,
        ny,
        nx,
        center,
    )
    return cp.ascontiguousarray(cp.moveaxis(out[..., :nz], -1, 0))
