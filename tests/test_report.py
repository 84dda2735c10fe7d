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


def test_registration_png_from_the_central_planes_is_the_same_picture(tmp_path):
    """``tomoflow register --png`` draws from the three central planes only (never the volumes):
    the same pixels as from the whole volumes."""
    import matplotlib.image as mpimg

    from tomoflow.pipeline.registration import central_planes
    from tomoflow.report import registration_png

    rng = np.random.default_rng(1)
    hr = rng.random((14, 17, 20), dtype=np.float32)
    lf = hr * 0.5 + rng.random(hr.shape, dtype=np.float32) * 0.1
    a = registration_png(tmp_path / "volumes.png", hr, lf, title="t")
    b = registration_png(tmp_path / "planes.png", central_planes(hr), central_planes(lf), title="t")
    np.testing.assert_array_equal(mpimg.imread(a), mpimg.imread(b))
    with pytest.raises(ValueError, match="3 central planes"):
        registration_png(tmp_path / "bad.png", central_planes(hr)[:2], lf)
