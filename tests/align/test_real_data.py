"""Alignment on real measured projections: the APS tooth scan (DXchange, 181 angles, 2 rows x 640)."""

from __future__ import annotations

import numpy as np
import pytest

from tomoflow.align import apply_shifts, estimate_shifts
from tomoflow.align.gauge import fix_gauge
from tomoflow.errors import InputError


@pytest.mark.slow
@pytest.mark.parametrize("method", ["phase", "consistency"])
def test_horizontal_jitter_added_to_the_tooth_is_recovered(tooth_line_integrals, method):
    """±8 px of horizontal jitter added to the real projections (off-centre axis, ~296 px; 2 detector
    rows, so only horizontally: vertical=False) is found again to a fraction of a pixel."""
    p, angles = tooth_line_integrals
    truth = np.zeros((len(angles), 2))
    truth[:, 1] = np.random.default_rng(4).uniform(-8, 8, len(angles))
    jittered = apply_shifts(p, -truth)  # displace each projection by +truth
    opts = {"n_iter": 8, "tol": 0.05} if method == "consistency" else {}
    res = estimate_shifts(jittered, angles, method=method, vertical=False, return_result=True, **opts)
    err = np.asarray(res.shifts)[:, 1] - fix_gauge(truth, angles_deg=angles).shifts[:, 1]
    rmse = float(np.sqrt(np.mean(err**2)))
    assert rmse < (0.35 if method == "consistency" else 1.0), rmse
    assert np.all(np.asarray(res.shifts)[:, 0] == 0)
    assert abs(res.center - 295.9) < 3.0  # the tooth's axis is ~24 px left of the detector centre


def test_thin_detector_needs_horizontal_alignment(tooth_line_integrals):
    p, angles = tooth_line_integrals
    with pytest.raises(InputError, match="vertical=False"):
        estimate_shifts(p, angles, method="phase")
