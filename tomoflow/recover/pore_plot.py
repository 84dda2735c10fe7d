"""The pore-size histograms of several volumes, overlaid in one figure (no files: the pipeline saves it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tomoflow.errors import ConfigError
from tomoflow.recover.pores import PoreMetrics, _bin_edges

__all__ = ["pore_size_figure"]


def _plain(text: str) -> str:
    return str(text).replace("$", r"\$")


def pore_size_figure(metrics: Mapping[str, PoreMetrics], *, bins: int = 30, title: str | None = None) -> Any:
    """The equivalent-diameter histograms of several volumes, overlaid in one matplotlib figure.

    Parameters
    ----------
    metrics
        ``{name: PoreMetrics}``, e.g. ``{"LFOV": ..., "HR": ..., "recovered": ...}``, all measured
        with the same threshold and connectivity.
    bins
        Number of log-spaced bins shared by all volumes.
    title
        Figure title; the protocol (threshold, connectivity, minimum size) is appended.

    Returns
    -------
    matplotlib.figure.Figure
        The figure (Agg backend), open: save it through the file policy
        (:func:`tomoflow.pipeline.pores.plot_pore_sizes`) or close it.

    Raises
    ------
    ConfigError
        No metrics, or metrics of different thresholds or connectivities.
    """
    if not metrics:
        raise ConfigError("the pore-size plot needs at least one {name: PoreMetrics}")
    ms = list(metrics.values())
    protocols = {(m.threshold, m.connectivity) for m in ms}
    if len(protocols) != 1:
        raise ConfigError(
            f"pore metrics from different protocols (threshold, connectivity) {sorted(protocols)}: "
            "apply one threshold and connectivity to every volume"
        )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = _bin_edges(ms, bins, True)
    fig, ax = plt.subplots(figsize=(6.0, 4.0), constrained_layout=True)
    for key, m in metrics.items():
        counts, _ = m.histogram(edges)
        ax.stairs(
            counts, edges, linewidth=1.6, label=_plain(f"{key}: porosity {100 * m.porosity:.2f} %, {m.count} pores")
        )
    ax.set_xscale("log")
    from matplotlib.ticker import LogFormatter

    # plain numbers at 1-2-5 steps, so that the few ticks of a short log range do not overlap as "3 x 10^0"
    ax.xaxis.set_major_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax.xaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    ax.set_xlabel("equivalent diameter (um)")
    ax.set_ylabel("pores per bin")
    ax.legend(fontsize=8)
    mins = sorted({m.min_voxels for m in ms})
    protocol = f"threshold {ms[0].threshold:g}, {ms[0].connectivity}-connected, min {'/'.join(map(str, mins))} voxels"
    ax.set_title(_plain(f"{title}\n{protocol}" if title else protocol), fontsize=9)
    return fig
