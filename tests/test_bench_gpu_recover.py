"""benchmarks/bench_gpu_recover.py in smoke mode (``--quick``): every part runs (on the CPU without a GPU, recorded)
and writes a JSON of the documented structure with sane values. Nothing here is timed."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # runs the benchmark in a fresh interpreter

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def doc(tmp_path_factory):
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("bench-gpu-recover") / "result.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bench_gpu_recover.py"), "--quick", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=900,  # generous: a shared 2-core machine
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_header_and_device_are_recorded(doc):
    assert doc["benchmark"] == "bench_gpu_recover_quick" and doc["quick"] is True and doc["complete"] is True
    assert doc["parts_requested"] == ["train", "infer", "register"]
    dev = doc["device"]
    assert dev["device"] in ("cpu", "cuda") and dev["torch"]
    assert ("why_cpu" in dev) == (dev["device"] == "cpu")
    for part in ("train", "infer", "register"):
        r = doc["results"][part]
        assert "error" not in r, r.get("traceback")
        assert r["part_seconds"] > 0 and doc["summary"][f"{part}_status"] == "ok"


def test_train_against_the_stored_cpu_run(doc):
    r = doc["results"]["train"]
    stored = json.loads((BENCH / "results" / "bench_recover_c_defaults.json").read_text())
    assert r["target_val_l1"] == stored["training_and_pores"]["training"]["held_out"]["val_l1"]  # read, not copied
    assert r["target_comparable"] is False and "not the stored run's" in r["target_note"]  # quick: another pair
    run = r["device_run"]
    assert run["device"].startswith(doc["device"]["device"]) and run["epochs_run"] >= 1
    assert 0 < run["val_l1"] <= run["val_l1_input"] * 1.05
    curve = run["curve_s_epoch_val_l1"]
    assert curve and all(len(p) == 3 and p[0] >= 0 for p in curve)
    assert run["target_reached"] is (run["time_to_target_s"] is not None)
    cpu = r["cpu"]
    assert cpu["time_limit_s"] <= r["config"]["cpu_max_s"]
    assert "skipped" in cpu or (cpu["device"] == "cpu" and cpu["val_l1"] > 0)
    pores = r["pores"]
    assert len(pores["samples"]) == len(r["config"]["test_seeds"])
    s = pores["summary"]
    assert 0 <= s["recovered_recall"] <= 1 and 0 <= s["LFOV_recall"] <= 1
    assert math.isfinite(s["recovered_abs_porosity_error_pp"]) and s["recovered_count_fraction_of_hr"] >= 0
    assert len(pores["recall_by_size"]["HR"]) == len(pores["recall_by_size"]["recovered"])


def test_infer_exactness_memory_and_cpu_figure(doc):
    r = doc["results"]["infer"]
    tol = 1e-4 if doc["device"]["device"] == "cpu" else 2e-2  # CUDA: TF32 convolutions (recorded)
    mb = r["memory_bound"]
    tomoflow_peaks = [v for k, v in mb.items() if k.startswith("tomoflow")]  # MONAI holds the volume on the GPU
    assert "note" in mb if doc["device"]["device"] == "cpu" else all(v["bounded"] for v in tomoflow_peaks)
    ran = [s for s in r["sizes"] if "methods" in s]
    assert ran and ran[0]["n"] == r["config"]["sizes"][0]
    for s in ran:
        for name in ("tomoflow_budget_block", "tomoflow_largest_block"):
            m = s["methods"][name]
            assert m["wall_s"] > 0 and m["host_peak_rss_bytes"] > 0 and m["tiles"] >= 1
            assert m["region_rel"] <= tol and m.get("whole_rel", 0.0) <= tol
            assert ("gpu_peak_bytes" in m) == (doc["device"]["device"] == "cuda")
        mo = s["methods"].get("monai")
        if mo is not None and "wall_s" in mo:
            assert mo["roi"] == s["methods"]["tomoflow_budget_block"]["input_box"] and mo["region_rel"] >= 0
        else:
            assert mo is not None or str(r["monai"]).startswith("skipped")
    cpu = r["cpu"]
    assert "skipped" in cpu or (cpu["wall_s"] > 0 and cpu["device_vs_cpu_max_rel_diff"] <= tol)


def test_register_accuracy_on_both_devices(doc):
    r = doc["results"]["register"]
    assert len(r["cases"]) == 1 + len(r["config"]["sizes"])
    for c in r["cases"]:
        if "skipped" in c:
            continue
        assert c["simulate_s"] > 0 and c["prior_error_hr_vox"] > 0
        for d, v in c["devices"].items():
            assert d in ("cpu", "cuda")
            if "seconds" in v:
                assert v["seconds"] > 0 and v["mean_error_hr_vox"] < 0.5 and v["max_error_hr_vox"] < 1.0
        if len(c["devices"]) == 2 and "device_vs_cpu_max_hr_vox" in c:
            assert c["device_vs_cpu_max_hr_vox"] < 0.1
