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


def test_recon_import_time_is_small() -> None:
    """``import tomoflow.recon`` used to take about 1.2 s (it pulled in Dask, distributed and zarr)."""
    res = _run(
        "import json, time\n"
        "t = time.perf_counter()\n"
        "import tomoflow.recon\n"
        "print(json.dumps(time.perf_counter() - t))\n"
    )
    print(f"import tomoflow.recon: {res:.3f} s (was about 1.2 s)")
