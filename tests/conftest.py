"""Fixtures shared by the whole suite: the real measured data in ../shared/data, a normalised tooth
scan, and an in-process Dask cluster."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real test data (``../shared/data`` from the repository root)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data folder {SHARED_DATA} is absent (expected ../shared/data from the repo root)")
    return SHARED_DATA


def _need(shared_data: Path, name: str) -> Path:
    p = shared_data / name
    if not p.is_file():
        pytest.skip(f"real test file {p} is absent")
    return p


@pytest.fixture(scope="session")
def tooth_h5(shared_data: Path) -> Path:
    """APS tooth scan, Data Exchange layout (181 x 2 x 640, 10 flats, 10 darks)."""
    return _need(shared_data, "tooth.h5")


@pytest.fixture(scope="session")
def txrm_file(shared_data: Path) -> Path:
    """ZEISS Xradia TXRM of a chip (7 images of 256 x 256)."""
    return _need(shared_data, "txrm_test_chip_tomo.txrm")


@pytest.fixture(scope="session")
def tooth_line_integrals(tooth_h5: Path) -> tuple[np.ndarray, np.ndarray]:
    """The tooth scan flat/dark-normalised and -log-ed: ``(projections (181, 2, 640), angles_deg)``."""
    import h5py

    from tomoflow.recon.normalize import normalize_log

    with h5py.File(tooth_h5, "r") as f:
        data = f["/exchange/data"][:].astype(np.float32)
        flats = f["/exchange/data_white"][:]
        darks = f["/exchange/data_dark"][:]
        theta = f["/exchange/theta"][:].astype(np.float64)
    return normalize_log(data, flats, darks), theta


@pytest.fixture(scope="module")
def dask_client():
    """An in-process LocalCluster (threads) client, closed after the module."""
    from tomoflow.cluster import connect

    with connect("local", processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as client:
        yield client
