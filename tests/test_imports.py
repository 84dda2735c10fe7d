"""Importing tomoflow and its kernels is light: no Dask, distributed, zarr or xarray until needed.

Each check runs in a fresh interpreter, since this test process has imported everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("dask", "distributed", "zarr", "xarray")


def _run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_kernels_import_no_dask_zarr_or_xarray() -> None:
    res = _run(
        "import json, sys\n"
        "import tomoflow, tomoflow.recon, tomoflow.sim\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    assert res == [], f"importing tomoflow / tomoflow.recon / tomoflow.sim loaded {res}"


def test_public_names_resolve_lazily() -> None:
    res = _run(
        "import json, sys\n"
        "import tomoflow\n"
        "before = 'tomoflow.pipeline' in sys.modules\n"
        "names = {n: callable(getattr(tomoflow, n)) for n in "
        "('connect', 'dashboard_url', 'reconstruct_scan', 'open_volume', 'open_scan', 'ingest', 'write_scan')}\n"
        "mods = {n: type(getattr(tomoflow, n)).__name__ for n in ('config', 'recon', 'sim')}\n"
        "print(json.dumps({'before': before, 'names': names, 'mods': mods, 'all': sorted(tomoflow.__all__),\n"
        "                  'dir': sorted(set(tomoflow.__all__) - set(dir(tomoflow)))}))\n"
    )
    assert res["before"] is False
    assert all(res["names"].values()), res["names"]
    assert set(res["mods"].values()) == {"module"}
    assert res["dir"] == []
    import tomoflow

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tomoflow.nope  # noqa: B018  (the attribute access is the test)


# layer 0 of tests/test_layers.py: what any module of the package may import
BASE = ("errors", "_checks", "backend", "geometry", "config", "_hashing", "_version", "_typing", "weights")


def _loaded_by(statement: str) -> dict:
    """The tomoflow modules and the third-party top-level packages that ``statement`` loads."""
    return _run(
        "import json, sys\n"
        "before = set(sys.modules)\n"
        f"{statement}\n"
        "new = set(sys.modules) - before\n"
        "print(json.dumps({'tomoflow': sorted(m for m in new if m.startswith('tomoflow')),\n"
        "                  'other': sorted({m.split('.')[0] for m in new} - set(sys.stdlib_module_names)\n"
        "                                  - {'tomoflow'} - {m for m in new if m.startswith('_')})}))\n"
    )


def test_recon_loads_only_the_base_and_numpy() -> None:
    """``import tomoflow.recon`` used to take about 1.2 s (it pulled in Dask, distributed and zarr): it loads
    only the base modules, its own, and NumPy (numba, SciPy and the rest when a kernel first needs them)."""
    res = _loaded_by("import tomoflow.recon")
    allowed = {"tomoflow", "tomoflow.recon"} | {f"tomoflow.{m}" for m in BASE}
    extra = [m for m in res["tomoflow"] if m not in allowed and not m.startswith("tomoflow.recon.")]
    assert extra == [], f"import tomoflow.recon loaded {extra}"
    assert "tomoflow.recon.fbp" in res["tomoflow"]  # the check sees what it loads
    assert res["other"] == ["numpy"], f"import tomoflow.recon loaded {res['other']}"


ABOVE_IO = ("pipeline", "train", "batch", "report", "cli", "recover", "register", "align")


def test_io_loads_no_module_above_it_or_of_another_kernel() -> None:
    """The storage layer (layer 2) never loads the stages, batch runs, reports, the command line, or the
    alignment / registration / recovery kernels, not even lazily at import."""
    res = _loaded_by("import tomoflow.io")
    assert "tomoflow.io.scan_store" in res["tomoflow"]  # the check sees what it loads
    bad = [m for m in res["tomoflow"] if m.partition(".")[2].split(".")[0] in ABOVE_IO]
    assert bad == [], f"import tomoflow.io loaded {bad}"
