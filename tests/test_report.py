"""The PNG reports of :mod:`tomoflow.report` made from arrays: the resolution-recovery before/after."""

import numpy as np
import pytest

from tomoflow.report import recovery_png


def test_recovery_png_writes_the_before_after_figure(tmp_path):
    import matplotlib.pyplot as plt

    open_before = set(plt.get_fignums())
    rng = np.random.default_rng(0)
    field = rng.random((20, 24, 28), dtype=np.float32)
    roi = rng.random((12, 12, 12), dtype=np.float32)
    out = recovery_png(
        tmp_path / "sub" / "recovery $x.png", field, field * 0.5, roi, roi * 0.5, roi, title="pair $a$ [b]"
    )
    assert out == tmp_path / "sub" / "recovery $x.png"
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert set(plt.get_fignums()) == open_before  # its figure is closed


@pytest.mark.parametrize("shapes", [((8, 8, 8), (8, 8, 9), (4, 4, 4)), ((8, 8, 8), (8, 8, 8), (8, 8))])
def test_recovery_png_refuses_mismatched_volumes(tmp_path, shapes):
    f, g, r = (np.zeros(s, np.float32) for s in shapes)
    with pytest.raises(ValueError, match="one shape"):
        recovery_png(tmp_path / "r.png", f, g, r, r, r)
    assert not (tmp_path / "r.png").exists()
