"""benchmarks/bench_gpu_align.py still runs (``--quick``: tiny sizes, the CPU without a GPU) and writes a
complete, well-formed result. It measures; nothing here is timed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the benchmark in a fresh interpreter, and the CLI runs it starts

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
ALIGN_GROUPS = {"flat-field-correct", "align-mlem", "align-reproject", "align-resnet", "align-shift", "recon-fbp"}


@pytest.fixture(scope="module")
def result(tmp_path_factory) -> dict:
    pytest.importorskip("torch")
    tmp = tmp_path_factory.mktemp("bench_gpu_align")
    out = tmp / "result.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bench_gpu_align.py"), "--quick", "--output", str(out), "--workdir", str(tmp)],
        capture_output=True,
        text=True,
        timeout=900,  # generous: a shared 2-core machine
        cwd=BENCH.parent,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert '"traceback"' not in text, text[text.find('"traceback"') - 2000 :][:3000]  # no part or run failed
    return json.loads(text)


def test_the_run_is_complete_and_says_on_which_device(result):
    assert result["quick"] and result["complete"] and result["machine"]["python"]
    assert result["parts_requested"] == ["align", "chain"]
    assert result["device"] in ("cpu", "cuda")
    gpu_cluster = result["clusters"]["gpu"]
    if result["device"] == "cpu":  # no GPU here: the GPU side ran on the CPU cluster, and says so
        assert gpu_cluster == result["clusters"]["cpu"] and "local-cuda ->" in result["clusters"]["cluster_replaced"]
    else:
        assert gpu_cluster == "local-cuda" and result["clusters"]["cluster_replaced"] is None
    assert {"align_status": "ok", "chain_status": "ok"}.items() <= result["summary"].items()


def test_inference_on_both_devices_agrees(result):
    inf = result["results"]["align"]["inference"]
    for side in ("gpu", "cpu"):
        r = inf[side]
        assert r["pairs"] == result["config"]["align"]["pairs"] and r["input"][1:] == [160, 160]
        for flips in ("flips_false", "flips_true"):
            assert r[flips]["repeats"] == result["config"]["align"]["repeats"] and r[flips]["median_s"] > 0
    assert inf["cpu"]["device"] == "cpu" and inf["gpu"]["device"].startswith(result["device"])
    assert max(inf["max_abs_diff_px"].values()) < 0.05  # the same network on both devices
    assert (inf["target_met"] is None) == (result["device"] == "cpu")


def test_correct_runs_record_tasks_stages_and_accuracy(result):
    corr = result["results"]["align"]["correct"]
    on_gpu = result["device"] == "cuda"
    for m in result["config"]["align"]["methods"]:
        for side in ("gpu", "cpu_reduced"):
            r = corr[side][m]
            assert r["returncode"] == 0 and r["stopped_at_time_cap"] is None, r.get("log_tail")
            assert ALIGN_GROUPS <= set(r["task_groups"]) and r["tasks"] >= len(ALIGN_GROUPS)
            assert (m == "hybrid") == ("align-register" in r["task_groups"])
            assert r["align_resnet_gpu_resource"] is (on_gpu and side == "gpu")
            assert r["task_groups"]["align-resnet"]["tasks"] == 2  # two network passes
            rep = r["pipeline_report"]
            assert rep["method"] == m and rep["recon_stage_s"] > 0
            assert {"binned", "estimate", "shift"} <= set(rep["align_timings"])
            assert rep["rmse_dx_px"] < 1.0 and rep["rmse_dy_px"] < 1.0  # the jitter was found
            assert r["dashboard"]["answered"] is True and "/status" in r["dashboard"]["bokeh_pages"]
            assert r["tasks_span_s"] <= r["wall_s"] and r["cluster_start_s"] < r["wall_s"]
        assert "central" in corr["cpu_reduced"][m]["label"]
        full = corr["cpu_full"][m]
        assert "full size" in full["label"] and ("skipped" in full or full["returncode"] == 0)
    assert corr["gpu"]["resnet"]["pipeline_report"]["rows"] == result["config"]["align"]["size"]
    assert corr["cpu_reduced"]["resnet"]["pipeline_report"]["rows"] == result["config"]["align"]["cpu_rows"]


def test_chain_runs_every_stage_of_every_scan(result):
    chain = result["results"]["chain"]
    r = chain["gpu"]
    assert r["returncode"] == 0, r.get("log_tail")
    assert set(r["scan_status"].values()) == {"complete"} and "pair" in r["scan_status"]
    assert set(r["stage_seconds"]) == {"ingest", "align", "recon", "recover"}
    assert r["stage_seconds"]["align"]["scans"] == result["config"]["chain"]["scans"]
    assert {"ingest", "align-resnet", "recon", "resample-recover-unet"} <= set(r["task_groups"])
    assert r["dashboard"]["answered"] is True
    busy = r["gpu_utilization"]["gpu_busy_fraction"]
    assert (busy is None) if result["device"] == "cpu" else (0.0 <= busy <= 1.0)
    assert bool(r["gpu_tasks"]) == (result["device"] == "cuda")
    if result["device"] == "cpu":  # quick without a GPU: only the local run
        assert chain["cpu"]["same_run_as"] == "gpu"
    else:
        assert chain["cpu"]["device"] == "cpu" and not chain["cpu"]["gpu_tasks"]
