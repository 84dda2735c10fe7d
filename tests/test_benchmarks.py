"""The benchmark scripts still run (smoke mode, tiny sizes). They measure; nothing here is timed."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script, args", [("bench_recon.py", []), ("bench_pipeline.py", []), ("bench_align.py", []),
                                          ("bench_recover.py", ["--parts", "c", "--no-peer"]), ("bench_batch.py", [])])
def test_benchmark_smoke_run(script, args, tmp_path):
    if script == "bench_recover.py":
        pytest.importorskip("torch")
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, str(BENCH / script), "--quick", *args, "--output", str(out)],
                          capture_output=True, text=True, timeout=900)  # generous: a shared 2-core machine
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["machine"]["python"]
    if script == "bench_recover.py":
        recall = doc["training_and_pores"]["recall_by_size"]
        assert len(recall["HR"]) == len(recall["recovered"]) == len(recall["bins_um3"]) - 1  # edges, last open


def test_recall_by_size_counts_found_pores_per_size_bin():
    np = pytest.importorskip("numpy")
    pytest.importorskip("scipy")
    sys.path.insert(0, str(BENCH))
    try:
        import bench_recover
    finally:
        sys.path.remove(str(BENCH))
    hr = np.ones((24, 24, 24), dtype=np.float32)
    hr[2:4, 2:4, 2:4] = 0.0  # 8 voxels: first bin
    hr[10:14, 10:14, 10:14] = 0.0  # 64 voxels
    hr[18:22, 2:6, 2:10] = 0.0  # 128 voxels
    hr[20, 20, 20] = 0.0  # 1 voxel: below the protocol's minimum, not counted
    half = hr.copy()
    half[10:14, 10:14, 10:14] = 1.0  # misses the 64-voxel pore
    half[18:22, 2:6, 2:3] = 1.0  # keeps 7/8 of the 128-voxel pore: found
    got = bench_recover.recall_by_size(hr, {"same": hr, "half": half, "none": np.ones_like(hr)}, threshold=0.5)
    bins = bench_recover.RECALL_BINS_UM3
    expect = np.zeros(len(bins) - 1, dtype=int)
    for v in (8, 64, 128):
        expect[np.searchsorted(bins, v, side="right") - 1] += 1
    assert got["HR"].tolist() == expect.tolist()
    assert got["same"].tolist() == expect.tolist()
    assert got["none"].sum() == 0
    assert got["half"].sum() == 2 and got["half"][np.searchsorted(bins, 64, side="right") - 1] == 0
