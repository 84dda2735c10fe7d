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

