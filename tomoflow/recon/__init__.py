"""Reconstruction kernels: projector, FBP, MLEM/SIRT, centre finding (NumPy on CPU, CuPy on GPU)."""

from tomoflow.recon.projector import backproject, project
from tomoflow.recon.shift import shift_images

__all__ = ["project", "backproject", "shift_images"]
