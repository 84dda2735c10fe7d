"""Fixtures of the tomoflow.cluster tests: the deployment folder and dashboard checks."""

from __future__ import annotations

import urllib.error
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tomoflow.testing import assert_dashboard_page, http_get

CLUSTER_DIR = Path(__file__).resolve().parents[2] / "cluster"


@pytest.fixture(autouse=True)
def _tls_files_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """SLURM / PBS clusters built here write their workers' temporary TLS files to a temporary folder,
    not to ``~/.tomoflow/tls`` (a test that checks that default unsets this)."""
    import importlib.util

    import dask

    if importlib.util.find_spec("dask_jobqueue") is not None:
        # its configuration defaults first: leaving dask.config.set would drop a `jobqueue.slurm`
        # section that it created (and the defaults merged into it meanwhile)
        import dask_jobqueue  # noqa: F401  (imported to check it is installed)

    folder = tmp_path_factory.getbasetemp() / "tls"
    folder.mkdir(mode=0o700, exist_ok=True)
    with dask.config.set({f"jobqueue.{kind}.shared-temp-directory": str(folder) for kind in ("slurm", "pbs")}):
        yield


@pytest.fixture(scope="session")
def cluster_dir() -> Path:
    """The top-level ``cluster/`` deployment folder of the repository."""
    return CLUSTER_DIR


@pytest.fixture(scope="session")
def small() -> dict[str, object]:
    """Settings of a small in-process cluster: starts in well under a second."""
    return {"n_workers": 2, "threads_per_worker": 1, "processes": False, "dashboard_address": "127.0.0.1:0"}


def _assert_real_dashboard(url: str) -> None:
    """The /status page is the bokeh dashboard, not the 'Dask needs bokeh' stand-in (also HTTP 200)."""
    assert url.startswith("http://127.0.0.1:"), url
    assert url.endswith("/status"), url
    body = assert_dashboard_page(url)
    assert "<title>Dask Diagnostic UI</title>" in body
    # the BokehJS bundle the page refers to is really served
    js = body.split('src="static/js/bokeh.min.js', 1)[1].split('"', 1)[0]
    status, script = http_get(url.rsplit("/", 1)[0] + "/static/js/bokeh.min.js" + js)
    assert status == 200 and "Bokeh" in script


def _assert_nothing_listens(url: str) -> None:
    with pytest.raises(urllib.error.URLError):
        http_get(url)


@pytest.fixture(scope="session")
def assert_real_dashboard() -> Callable[[str], None]:
    """Check that a URL serves the real bokeh dashboard."""
    return _assert_real_dashboard


@pytest.fixture(scope="session")
def assert_nothing_listens() -> Callable[[str], None]:
    """Check that nothing answers at a URL any more."""
    return _assert_nothing_listens
