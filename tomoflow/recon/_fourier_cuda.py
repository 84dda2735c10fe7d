"""CUDA kernel of the Fourier-gridding FBP (GPU path of :mod:`tomoflow.recon.fourier`).

The spreading of polar samples onto the Cartesian frequency grid is a fixed sparse matrix (CSR, one
row per grid point). Applying it is a gather: one thread per (grid point, slice pair) sums its row's
entries, so there are no atomic adds; a block covers ``TR`` consecutive grid points of all ``P`` pairs,
reads ``P`` consecutive samples per matrix entry (coalesced), and writes the grid transposed to
``(pair, grid point)`` through shared memory, so the inverse 2-D FFTs run on contiguous planes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tomoflow.recon._cuda import cuda_kernel

_SOURCE = r"""
extern "C" __global__ void tf_spread_gather(
    const int* __restrict__ indptr, const int* __restrict__ indices, const float* __restrict__ data,
    const float2* __restrict__ x, float2* __restrict__ y, const int nrows)
{
    extern __shared__ float2 tile[];
    const int P = blockDim.x, TR = blockDim.y;
    const int s = threadIdx.x, rl = threadIdx.y;
    const long long r = (long long)blockIdx.x * TR + rl;
    float2 acc = make_float2(0.f, 0.f);
    if (r < nrows) {
        const int j1 = indptr[r + 1];
        for (int j = indptr[r]; j < j1; ++j) {
            const float w = data[j];
            const float2 v = x[(long long)indices[j] * P + s];
            acc.x = fmaf(w, v.x, acc.x);
            acc.y = fmaf(w, v.y, acc.y);
        }
    }
    tile[s * (TR + 1) + rl] = acc;
    __syncthreads();
    const int t = threadIdx.y * P + threadIdx.x;
    const int s2 = t / TR, rl2 = t % TR;
    const long long r2 = (long long)blockIdx.x * TR + rl2;
    if (r2 < nrows) y[(long long)s2 * nrows + r2] = tile[s2 * (TR + 1) + rl2];
}
"""


def spread(matrix: tuple[Any, Any, Any], samples: Any, m_grid: int) -> Any:
    """``(pairs, M, M)`` complex64 grid = CSR ``matrix`` (``(indptr, indices, data)``, ``M^2`` rows) times
    ``samples`` ``(n_samples, pairs)`` complex64, ``pairs <= 32``."""
    import cupy

    indptr, indices, data = matrix
    pairs = int(samples.shape[1])
    if not 1 <= pairs <= 32:
        raise ValueError(f"spread: 1..32 slice pairs per call, got {pairs}")
    nrows = m_grid * m_grid
    rows_per_block = max(1, 512 // pairs)
    out = cupy.empty((pairs, m_grid, m_grid), dtype=cupy.complex64)
    x = cupy.ascontiguousarray(samples, dtype=cupy.complex64)
    grid = (-(-nrows // rows_per_block),)
    shared = pairs * (rows_per_block + 1) * 8
    cuda_kernel(_SOURCE, "tf_spread_gather")(
        grid, (pairs, rows_per_block), (indptr, indices, data, x, out, np.int32(nrows)), shared_mem=shared
    )
    return out
