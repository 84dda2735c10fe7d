"""Registration on each torch device: the same simulated pair registered on the CPU and on CUDA recovers the true
mapping, and the two devices agree (``@pytest.mark.gpu("torch")`` runs the CUDA variant on a GPU machine)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from tomoflow.register import register
from tomoflow.sim import simulate_multiscale_pair

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu("torch"))]


@pytest.fixture(scope="module")
def pair():
    """48³ HR ROI (1 um) in a 40³ LFOV (2 um), a known 9-DOF misregistration and a stage prior off."""
    return simulate_multiscale_pair(hr_shape=(48,) * 3, lfov_shape=(40,) * 3, lfov_spacing_um=2.0, seed=3)


@pytest.fixture(scope="module")
def on_cpu(pair):
    return _register(pair, "cpu")


def _register(pair, device):
    return register(
        pair.hr,
        pair.lfov,
        hr_spacing_um=pair.hr_spacing_um,
        lfov_spacing_um=pair.lfov_spacing_um,
        prior=pair.prior_matrix,
        device=device,
    )


def _max_gap_hr_vox(m_a, m_b, n=48):
    """Largest distance (HR voxels of 1 um) between two HR -> LFOV mappings over the ROI's corners and centre."""
    pts = np.array(
        [[z, y, x, 1.0] for z in (0, n - 1) for y in (0, n - 1) for x in (0, n - 1)] + [[(n - 1) / 2] * 3 + [1]]
    )
    return float(np.linalg.norm((pts @ (np.asarray(m_a) - np.asarray(m_b)).T)[:, :3], axis=1).max())


@pytest.mark.parametrize("device", DEVICES)
def test_register_on_device_recovers_the_truth_and_agrees_with_cpu(pair, on_cpu, device):
    res = on_cpu if device == "cpu" else _register(pair, device)
    assert res.matrix.dtype == np.float64 and np.all(np.isfinite(res.matrix))
    assert _max_gap_hr_vox(pair.prior_matrix, pair.true_matrix) > 1.0  # the prior is off
    assert _max_gap_hr_vox(res.matrix, pair.true_matrix) < 0.5
    assert res.ncc > res.ncc_prior
    # float32 sampling on either device, float64 parameters: the devices agree well within the accuracy
    assert _max_gap_hr_vox(res.matrix, on_cpu.matrix) < 0.05
    assert [s["name"] for s in res.stages] == [s["name"] for s in on_cpu.stages]
