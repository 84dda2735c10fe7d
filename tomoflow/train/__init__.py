"""tomoflow.train: the trainers of the two networks (layer 3: they write weights, model cards, checkpoints
and ONNX exports through the output policy, :mod:`tomoflow.io.output`).

- :mod:`~tomoflow.train.aligner`: :func:`~tomoflow.train.aligner.train_aligner` (simulated pairs, the jitter
  ResNet), :func:`~tomoflow.train.aligner.install_weights` (into :mod:`tomoflow.weights`).
- :mod:`~tomoflow.train.recovery`: :func:`~tomoflow.train.recovery.train_recovery` (the per-sample
  resolution-recovery U-Net).
- :mod:`~tomoflow.train.onnx_export`: :func:`~tomoflow.train.onnx_export.export_onnx`,
  :func:`~tomoflow.train.onnx_export.check_onnx`.
- :mod:`~tomoflow.train.files`: weights, cards and the resumable checkpoint of both.

Importing this package imports neither torch nor the trainers' dependencies.
"""
