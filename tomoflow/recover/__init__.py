"""tomoflow.recover: resolution recovery (Andrew et al.) — the 3D U-Net, its exact tiled inference and
pore metrics.

- :mod:`~tomoflow.recover.unet`: :func:`build_unet` (no per-tile statistics), :func:`receptive_field`,
  :func:`save_unet` / :func:`load_unet` (safetensors + model card, never unpickled).
- :mod:`~tomoflow.recover.tiling`: :func:`predict_tiled` (halo >= receptive field, pooling-aligned input
  boxes: equal to :func:`predict_volume` to float rounding, for any block size).
- :mod:`~tomoflow.recover.training`: :func:`train_recovery` per sample on the registered overlap (patches,
  flips/permutations and intensity augmentation, held-out spatial blocks, early stopping, one global
  normalisation and an output calibration (:func:`fit_calibration`: HR's pore fraction at the pore
  threshold) stored in the card; :func:`with_normalisation` wraps a loaded network for inference).
- :mod:`~tomoflow.recover.pores`: :func:`pore_metrics` with one fixed protocol
  (:func:`threshold_from_reference`); :mod:`~tomoflow.recover.recall`: :func:`pore_recall` (which of
  the HR's pores a volume finds, by size); :mod:`~tomoflow.recover.pore_blocks`: exact blockwise merging
  (:func:`block_pores`, :func:`merge_block_pores`); :mod:`~tomoflow.recover.pore_plot`:
  :func:`pore_size_figure` (saved as a PNG by :func:`tomoflow.pipeline.pores.plot_pore_sizes`).
- :mod:`~tomoflow.recover.onnx_network`: :func:`load_onnx`, the ONNX export run by onnxruntime (tiled
  inference and the ``recover`` stage accept it in place of the torch network).
"""

from tomoflow.recover.onnx_network import OnnxNetwork, load_onnx
from tomoflow.recover.pore_blocks import BlockPores, block_pores, merge_block_pores
from tomoflow.recover.pore_plot import pore_size_figure
from tomoflow.recover.pores import PoreMetrics, pore_metrics, threshold_from_reference
from tomoflow.recover.recall import PoreRecall, pore_recall
from tomoflow.recover.tiling import Tile, plan_tiles, predict_tiled, predict_volume
from tomoflow.recover.training import TrainResult, fit_calibration, train_recovery, with_normalisation
from tomoflow.recover.unet import UNetConfig, build_unet, load_unet, receptive_field, save_unet

__all__ = [
    "pore_metrics", "PoreMetrics", "pore_recall", "PoreRecall", "threshold_from_reference", "block_pores",
    "BlockPores", "merge_block_pores",
    "pore_size_figure", "predict_tiled", "predict_volume", "plan_tiles", "Tile", "build_unet", "UNetConfig",
    "receptive_field", "save_unet", "load_unet", "train_recovery", "TrainResult", "with_normalisation",
    "fit_calibration", "load_onnx", "OnnxNetwork",
]
