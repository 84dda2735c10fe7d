"""tomoflow.recover: resolution recovery (Andrew et al.) — the 3D U-Net, its exact tiled inference and
pore metrics (kernels: no files written; the trainer and the ONNX export are :mod:`tomoflow.train`).

- :mod:`~tomoflow.recover.unet`: :func:`build_unet` (no per-tile statistics), :func:`receptive_field`,
  :func:`load_unet` (safetensors + model card, never unpickled; :func:`tomoflow.train.files.save_unet` writes them).
- :mod:`~tomoflow.recover.tiling`: :func:`predict_tiled` (halo >= receptive field, pooling-aligned input
  boxes: equal to :func:`predict_volume` to float rounding, for any block size).
- :mod:`~tomoflow.recover.normalization`: one global normalization stored in the card;
  :func:`with_normalization` wraps a loaded network for inference.
- :mod:`~tomoflow.recover.calibration`: the output calibration (:func:`fit_calibration`: HR's pore fraction
  at the pore threshold) stored in the card.
- :mod:`~tomoflow.recover.splits`, :mod:`~tomoflow.recover.augment`, :mod:`~tomoflow.recover.metrics`: the
  held-out spatial blocks, the patch augmentation (flips/permutations and intensity) and the held-out
  metrics of per-sample training (:func:`tomoflow.train.recovery.train_recovery`).
- :mod:`~tomoflow.recover.pores`: :func:`pore_metrics` with one fixed protocol
  (:func:`threshold_from_reference`); :mod:`~tomoflow.recover.recall`: :func:`pore_recall` (which of
  the HR's pores a volume finds, by size); :mod:`~tomoflow.recover.pore_blocks`: exact blockwise merging
  (:func:`block_pores`, :func:`merge_block_pores`); :mod:`~tomoflow.recover.pore_plot`:
  :func:`pore_size_figure` (saved as a PNG by :func:`tomoflow.pipeline.pores.plot_pore_sizes`).
- :mod:`~tomoflow.recover.onnx_network`: :func:`load_onnx`, the ONNX export run by onnxruntime (tiled
  inference and the ``recover`` stage accept it in place of the torch network).
"""

from tomoflow.recover.calibration import fit_calibration
from tomoflow.recover.normalization import with_normalization
from tomoflow.recover.onnx_network import OnnxNetwork, load_onnx
from tomoflow.recover.pore_blocks import BlockPores, block_pores, merge_block_pores
from tomoflow.recover.pore_plot import pore_size_figure
from tomoflow.recover.pores import PoreMetrics, pore_metrics, threshold_from_reference
from tomoflow.recover.recall import PoreRecall, pore_recall
from tomoflow.recover.tiling import Tile, plan_tiles, predict_tiled, predict_volume
from tomoflow.recover.unet import UNetConfig, build_unet, load_unet, receptive_field

__all__ = [
    "pore_metrics",
    "PoreMetrics",
    "pore_recall",
    "PoreRecall",
    "threshold_from_reference",
    "block_pores",
    "BlockPores",
    "merge_block_pores",
    "pore_size_figure",
    "predict_tiled",
    "predict_volume",
    "plan_tiles",
    "Tile",
    "build_unet",
    "UNetConfig",
    "receptive_field",
    "load_unet",
    "with_normalization",
    "fit_calibration",
    "load_onnx",
    "OnnxNetwork",
]
