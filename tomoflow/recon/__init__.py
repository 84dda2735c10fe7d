"""Reconstruction kernels: projector, FBP, MLEM/SIRT, centre finding (NumPy on CPU, CuPy on GPU).

All take NumPy or CuPy arrays and return the same kind. Projections are ``(angle, row, col)``,
volumes ``(z, y, x)``, angles in degrees, the centre a detector column in pixels.
"""

from tomoflow.recon.center import center_sweep, find_center, find_center_pair, find_center_vo
from tomoflow.recon.fbp import fbp
from tomoflow.recon.iterative import mlem, sirt
from tomoflow.recon.normalize import minus_log, normalize, normalize_log
from tomoflow.recon.outliers import remove_outliers
from tomoflow.recon.projector import backproject, project
from tomoflow.recon.shift import shift_images

__all__ = [
    "project",
    "backproject",
    "fbp",
    "mlem",
    "sirt",
    "find_center",
    "find_center_vo",
    "find_center_pair",
    "center_sweep",
    "normalize",
    "minus_log",
    "normalize_log",
    "shift_images",
    "remove_outliers",
]
