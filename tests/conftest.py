"""Fixtures shared by the whole suite: the real measured data in ../shared/data, a normalised tooth
scan, damaged copies of real files, small NeXus files written on the fly, and an in-process Dask
cluster; and the one rule that skips GPU tests.

GPU tests: mark them ``@pytest.mark.gpu`` (or ``pytestmark = pytest.mark.gpu`` for a whole file). They
run where CuPy sees a CUDA device and are skipped otherwise, with the reason. A test that needs more
names it: ``@pytest.mark.gpu("torch")`` (torch built with CUDA), ``@pytest.mark.gpu("dask_cuda")``.
On a GPU machine ``pytest -m gpu`` runs only them.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest


def _register_codeblocks() -> None:
    """Make ``tests/_codeblocks.py`` (the runner of the README's and the docs' code blocks) importable as
    ``tomoflow_tests_codeblocks``: ``tests/`` is not a package and not on ``sys.path``."""
    name = "tomoflow_tests_codeblocks"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("_codeblocks.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)


_register_codeblocks()


@pytest.fixture(autouse=True)
def _torch_on_one_thread(request):
    """torch on one thread in the recovery and training tests (small networks; the machine is shared);
    nothing elsewhere or when torch is absent (the pore tests need none)."""
    if request.node.path.parent.name not in ("recover", "train") or importlib.util.find_spec("torch") is None:
        yield
        return
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# what a ``gpu`` marker may name beyond CuPy and a CUDA device
_GPU_NEEDS = ("torch", "dask_cuda")


@functools.cache
def _gpu_missing(needs: tuple[str, ...]) -> str | None:
    """Why GPU tests needing ``needs`` cannot run here, or None when they can."""
    if importlib.util.find_spec("cupy") is None:
        return "gpu: needs CuPy and a CUDA device (CuPy is not installed: pip install 'tomoflow[gpu]')"
    from tomoflow.backend import has_cuda

    if not has_cuda():
        return "gpu: needs a CUDA device (CuPy sees none)"
    for need in needs:
        if need == "torch":
            if importlib.util.find_spec("torch") is None:
                return "gpu: needs torch (not installed)"
            import torch

            if not torch.cuda.is_available():
                return "gpu: needs torch built with CUDA (this torch sees no CUDA device)"
        elif importlib.util.find_spec(need) is None:
            return f"gpu: needs {need} (pip install 'tomoflow[gpu]')"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip, with the reason, every test marked ``gpu`` that cannot run on this machine."""
    for item in items:
        needs: set[str] = set()
        marked = False
        for mark in item.iter_markers("gpu"):
            marked = True
            unknown = set(mark.args) - set(_GPU_NEEDS)
            if unknown or mark.kwargs:
                raise pytest.UsageError(
                    f"{item.nodeid}: @pytest.mark.gpu takes only {_GPU_NEEDS}, not {sorted(unknown) or mark.kwargs}"
                )
            needs.update(mark.args)
        if marked and (why := _gpu_missing(tuple(sorted(needs)))):
            item.add_marker(pytest.mark.skip(reason=why))


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


@pytest.fixture
def truncate(tmp_path: Path) -> Callable[[Path, float], Path]:
    """Copy the first ``fraction`` of a file's bytes into tmp_path (a truncated download)."""

    def make(src: Path, fraction: float = 0.5) -> Path:
        data = src.read_bytes()
        out = tmp_path / f"truncated_{src.name}"
        out.write_bytes(data[: int(len(data) * fraction)])
        return out

    return make


@pytest.fixture
def make_nxtomo(tmp_path: Path) -> Callable[..., tuple[Path, dict[str, Any]]]:
    """Write a small NXtomo file with h5py; returns ``(path, truth)``.

    Frame order: 2 darks, 3 flats, projections with one invalid frame (image_key 3) in the middle,
    2 flats at the end. ``truth`` holds the projections, flats, darks and projection angles (deg).
    """

    def make(
        name: str = "scan.nxs",
        *,
        n_proj: int = 10,
        shape: tuple[int, int] = (4, 6),
        angle_units: str | None = "degree",
        data_at: str = "instrument/detector/data",
        with_angles: bool = True,
        entry: str = "entry",
        extra_entry: str | None = None,
        definition: str = "NXtomo",
        seed: int = 0,
    ) -> tuple[Path, dict[str, Any]]:
        import h5py

        rng = np.random.default_rng(seed)
        darks = rng.uniform(90, 110, (2, *shape)).astype(np.uint16)
        flats = rng.uniform(900, 1100, (5, *shape)).astype(np.uint16)
        proj = rng.uniform(300, 800, (n_proj, *shape)).astype(np.uint16)
        invalid = np.full((1, *shape), 7, np.uint16)
        half = n_proj // 2
        frames = np.concatenate([darks, flats[:3], proj[:half], invalid, proj[half:], flats[3:]])
        keys = np.array([2] * 2 + [1] * 3 + [0] * half + [3] + [0] * (n_proj - half) + [1] * 2, np.int32)
        proj_angles = np.linspace(0.0, 180.0, n_proj, endpoint=False)
        angles = np.concatenate([[0, 0, 0, 0, 0], proj_angles[:half], [99.0], proj_angles[half:], [180, 180]])
        path = tmp_path / name
        with h5py.File(path, "w") as f:
            for ename in [entry] + ([extra_entry] if extra_entry else []):
                e = f.create_group(ename)
                e.attrs["NX_class"] = "NXentry"
                e.create_dataset("definition", data=definition)
                e.create_dataset("title", data="synthetic nxtomo")
                inst = e.create_group("instrument")
                inst.attrs["NX_class"] = "NXinstrument"
                det = inst.create_group("detector")
                det.attrs["NX_class"] = "NXdetector"
                d = e.create_group("data")
                d.attrs["NX_class"] = "NXdata"
                target = det if data_at == "instrument/detector/data" else d
                target.create_dataset("data", data=frames, chunks=(1, *shape))
                target.create_dataset("image_key", data=keys)
                px = det.create_dataset("x_pixel_size", data=6.5e-7)
                px.attrs["units"] = "m"
                src = inst.create_group("source")
                en = src.create_dataset("energy", data=25.0)
                en.attrs["units"] = "keV"
                s = e.create_group("sample")
                s.attrs["NX_class"] = "NXsample"
                if with_angles:
                    vals = np.deg2rad(angles) if angle_units in ("rad", "radians") else angles
                    ra = s.create_dataset("rotation_angle", data=vals)
                    if angle_units is not None:
                        ra.attrs["units"] = angle_units
                for i, ax in enumerate("xyz"):
                    t = s.create_dataset(f"{ax}_translation", data=np.full(frames.shape[0], (i + 1) * 1e-3))
                    t.attrs["units"] = "mm" if ax == "z" else "m"
        return path, {"projections": proj, "flats": flats, "darks": darks, "angles": proj_angles}

    return make


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


@pytest.fixture
def readonly_dir(tmp_path) -> Path:
    """A folder nothing can be created in: a chmod 0o555 folder, or ``/sys`` when running as root (root
    ignores permission bits, but sysfs refuses new entries to everyone)."""
    if os.geteuid() == 0:
        probe = Path("/sys/tomoflow-write-probe")
        try:
            probe.mkdir()
        except OSError:
            yield Path("/sys")
            return
        probe.rmdir()
        pytest.skip("running as root and /sys accepts new folders: no read-only folder to test with")
    d = tmp_path / "read-only"
    d.mkdir()
    d.chmod(0o555)
    yield d
    d.chmod(0o755)
