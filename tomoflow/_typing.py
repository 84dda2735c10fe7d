"""Type aliases for the package's annotations.

``Array`` is what the kernels take and return: a NumPy array, or a CuPy array on a GPU (the result
lives where the input does; see :mod:`tomoflow.backend`). ``ArrayLike`` is what they also accept
where they convert their input first (lists, tuples, scalars, NumPy or CuPy arrays).

CuPy is imported only by type checkers, never at run time: ``import tomoflow.recon`` works, and stays
fast, without it. At run time both names are plain NumPy types, so ``typing.get_type_hints`` resolves
them too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

import numpy as np
import numpy.typing as npt

__all__ = ["Array", "ArrayLike"]

if TYPE_CHECKING:
    import cupy

    Array: TypeAlias = np.ndarray | cupy.ndarray
    ArrayLike: TypeAlias = npt.ArrayLike | cupy.ndarray
else:
    Array: TypeAlias = np.ndarray
    ArrayLike: TypeAlias = npt.ArrayLike
