"""Jitter alignment kernels (Fu et al. 2021 and classical baselines): no Dask, no files.

Sign convention (ARCHITECTURE.md): a jitter ``(dy, dx)`` is how far a measured projection is displaced
from where a perfect stage would have put it (rows, columns; ``+dx`` = content moved to larger column
index). Alignment estimates it; correction moves the raw projection by ``(-dy, -dx)``, once.
"""
