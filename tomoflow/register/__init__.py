"""tomoflow.register: an HR region-of-interest volume placed in an LFOV volume of the same sample.

:func:`register` (stage prior -> coarse translation -> translation -> 9 DOF, NCC at LFOV voxels,
L-BFGS in torch) returns a :class:`Registration` whose ``matrix`` maps HR physical ``(z, y, x)``
micrometres to LFOV physical micrometres (:mod:`tomoflow.register.transform` states the convention).
The HR volume is an array or a :class:`~tomoflow.register.moving.MovingImage` (it smoothed and sampled
every few HR voxels, computed by whoever holds the data: the pipeline does it chunk by chunk).
"""

from tomoflow.errors import RegistrationError
from tomoflow.register.registration import DOFS, Registration, register
from tomoflow.register.transform import Affine9

__all__ = ["register", "Registration", "RegistrationError", "Affine9", "DOFS"]
