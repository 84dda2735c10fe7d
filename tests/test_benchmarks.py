"""The benchmark scripts still run (smoke mode, tiny sizes). They measure; nothing here is timed."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each runs a benchmark script in a fresh interpreter

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize(
    "script, args",
    [
        ("bench_recon.py", []),
        ("bench_pipeline.py", []),
        ("bench_align.py", []),
        ("bench_recover.py", ["--parts", "c", "--no-peer"]),
        ("bench_batch.py", []),
        ("bench_safety.py", []),
        ("bench_scale.py", []),
    ],
)
def test_benchmark_smoke_run(script, args, tmp_path):
    if script in ("bench_recover.py", "bench_scale.py"):
        pytest.importorskip("torch")
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick", *args, "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )  # generous: a shared 2-core machine
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["machine"]["python"]
    if script == "bench_scale.py":  # every command ran as its own process and was measured
        (size,) = doc["sizes"]
        for name in ("register", "train", "fused_recover"):
            assert size[name]["returncode"] == 0, size[name]["tail"]
            assert size[name]["peak_rss_largest_process"] > 0
        assert size["register"]["error"]["mean_hr_vox"] < 0.5
        assert size["fused_recover"]["output_voxels"] == 64**3  # the HR grid
        assert size["two_step"]["intermediate_bytes"] > 0
    if script == "bench_recover.py":
        recall = doc["training_and_pores"]["recall_by_size"]
        assert len(recall["HR"]) == len(recall["recovered"]) == len(recall["bins_um3"]) - 1  # edges, last open


def _error_paths(node, path=""):
    """JSON paths of every ``error`` entry in a benchmark result."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "error":
                yield path or "/"
            else:
                yield from _error_paths(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _error_paths(v, f"{path}/{i}")


def test_bench_gpu_quick(tmp_path):
    """bench_gpu.py --quick runs its four parts (NumPy on a machine without a GPU) with no errors; the GPU
    peer (httomolibgpu's LPRec) may only be skipped, saying why; tomoflow's FBP needs no flip."""
    out = tmp_path / "x.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bench_gpu.py"), "--quick", "--output", str(out), "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=BENCH.parent,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["machine"]["python"] and doc["complete"]
    res = doc["results"]
    assert set(res) == {"fbp", "mlem", "e2e", "kernels"}
    lprec = res["fbp"]["methods"].pop("lprec")
    if doc["gpu"]["device"] == "cpu":
        assert lprec.get("skipped"), lprec
    else:
        assert lprec.get("skipped") or (lprec["by_rows"] and "error" not in lprec), lprec
    errors = list(_error_paths(res))
    assert not errors, [(p, proc.stdout[-3000:]) for p in errors]
    for key in ("tomoflow_direct", "tomoflow_fourier"):
        assert res["fbp"]["methods"][key]["quality"]["orientation"] == "identity"
    assert res["kernels"]["adjoint_identity"]["relative_difference"] < 1e-4
    assert not Path(res["e2e"]["workdir"]).exists()  # its temporary stores are removed
