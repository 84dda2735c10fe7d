"""The normalization and the output calibration of the recovery network: round trips, what the card says,
refusals; the torch path is the NumPy one."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tomoflow.errors import InputError  # noqa: E402
from tomoflow.recover.calibration import apply_calibration, calibration_of, fit_calibration  # noqa: E402
from tomoflow.recover.normalization import (  # noqa: E402
    apply_normalization,
    normalization_from,
    normalization_of,
    undo_normalization,
    with_normalization,
)
from tomoflow.recover.unet import UNetConfig, build_unet  # noqa: E402

TINY = UNetConfig(channels=(4, 8))


def test_calibration_fit_and_its_refusals():
    rng = np.random.default_rng(0)
    target = np.where(rng.random((20, 20, 20)) < 0.1, 0.1, 1.0).astype(np.float32)
    pred = (0.7 * target + 0.3 + 0.05 * rng.standard_normal(target.shape)).astype(np.float32)  # pores too bright
    cal = fit_calibration(pred, target, threshold=0.5)
    assert cal["pore_level"] == pytest.approx(0.1) and cal["solid_level"] == pytest.approx(1.0)
    after = apply_calibration(pred, calibration_of({"calibration": cal}))
    assert np.mean(after < 0.5) == pytest.approx(np.mean(target < 0.5), abs=1e-3)
    t = torch.from_numpy(pred)  # the torch path (what the network wrapper and ONNX run) is the same map
    np.testing.assert_allclose(apply_calibration(t, calibration_of({"calibration": cal})).numpy(), after, atol=1e-6)
    assert fit_calibration(pred, np.ones_like(target), threshold=0.5) is None  # no pores: nothing to fit
    assert calibration_of({}) is None and calibration_of({"calibration": None}) is None
    with pytest.raises(InputError, match="calibration"):
        calibration_of({"calibration": {"pore_level": 1.0, "from": 0.5, "threshold": 0.5, "solid_level": 0.0}})
    with pytest.raises(InputError, match="calibration"):
        calibration_of({"calibration": {"pore_level": 0.0}})
    with pytest.raises(InputError, match="shapes differ"):
        fit_calibration(pred, target[:-1])


def test_normalization_round_trips_and_is_what_the_card_says():
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(20, 20, 20)) * 3e-3 + 2e-2).astype(np.float32)  # small attenuation values
    norm = normalization_from(x)
    lo, hi = np.percentile(x, (0.5, 99.5))
    assert norm["scale"] == pytest.approx(hi - lo, rel=1e-5)
    card = {"normalisation": norm}
    xn = apply_normalization(x, card)
    assert abs(float(xn.mean())) < 0.01 and 0.15 < float(xn.std()) < 0.2
    np.testing.assert_allclose(undo_normalization(xn, card), x, rtol=1e-5, atol=1e-7)
    t = torch.from_numpy(x)
    torch.testing.assert_close(undo_normalization(apply_normalization(t, card), card), t, rtol=1e-5, atol=1e-7)
    assert normalization_of({}) == (0.0, 1.0)  # a card without normalisation: the identity
    with pytest.raises(InputError, match="positive scale"):
        normalization_of({"normalisation": {"offset": 0.0, "scale": 0.0}})
    with pytest.raises(InputError, match="constant"):
        normalization_from(np.ones((8, 8, 8), np.float32))
    # the wrapper is the same composition, and keeps the network's geometry
    torch.manual_seed(0)
    net = build_unet(config=TINY).eval()
    wrapped = with_normalization(net, card)
    assert wrapped.config == TINY
    v = torch.from_numpy(x[None, None, :16, :16, :16].copy())
    with torch.no_grad():
        torch.testing.assert_close(wrapped(v), undo_normalization(net(apply_normalization(v, card)), card))
