"""The GPU slab conveyor (:mod:`tomoflow.pipeline.gpu`) and GPU reconstruction of a scan store.

Skipped without a CUDA device; run on a GPU machine with ``pytest -m gpu``.
"""

import threading
import time

import numpy as np
import pytest

import tomoflow
from tomoflow.io import write_scan
from tomoflow.pipeline.reconstruct import reconstruct_scan
from tomoflow.recon import project
from tomoflow.recon.fbp import fbp
from tomoflow.testing import disk_phantom

pytestmark = pytest.mark.gpu

N_ROWS, N = 24, 64
ANGLES = np.linspace(0, 180, 90, endpoint=False)
CENTER = 32.6


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpu") / "scan.zarr"
    line = project(disk_phantom((N_ROWS, N, N)) * 0.05, ANGLES, center=CENTER)
    raw = np.round(30000 * np.exp(-line) + 100).astype(np.uint16)
    flats = np.full((2, N_ROWS, N), 30100, np.uint16)
    darks = np.full((2, N_ROWS, N), 100, np.uint16)
    with tomoflow.config.set(scan_chunk_rows=8):
        write_scan(path, raw, ANGLES, flats=flats, darks=darks, pixel_size_um=1.0)
    return path, line


@pytest.mark.parametrize("method", ["direct", "fourier"])
def test_gpu_pipeline_equals_cpu_kernels(scan, tmp_path, method):
    path, line = scan
    with tomoflow.config.set(device="cuda", scan_chunk_rows=8):
        v = reconstruct_scan(path, tmp_path / f"{method}.zarr", center=CENTER, fbp_method=method)
    ref = fbp(line, ANGLES, center=CENTER, mask=True, method=method)
    got = np.asarray(v.level(0)[:])
    assert np.abs(got - ref).max() < 2e-3 * np.abs(ref).max()


def test_gpu_sections_are_bounded_and_use_their_own_streams():
    import cupy

    from tomoflow.pipeline.gpu import gpu_section, gpu_slots, set_gpu_slots

    set_gpu_slots(2)
    active, peak, streams = [0], [0], set()
    lock = threading.Lock()

    def task():
        with gpu_section() as stream:
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
                streams.add(stream.ptr)
            assert cupy.cuda.get_current_stream() == stream
            cupy.arange(10**6).sum()
            time.sleep(0.05)
            with lock:
                active[0] -= 1

    threads = [threading.Thread(target=task) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak[0] == gpu_slots() == 2
    assert len(streams) == 6 and 0 not in streams  # one non-default stream per thread


def test_to_host_through_pinned_memory():
    import cupy

    from tomoflow.pipeline.gpu import device_rows, to_host

    a = cupy.arange(24, dtype=cupy.float32).reshape(2, 3, 4)
    out = np.zeros((2, 3, 4), np.float32)
    assert to_host(a, out) is out
    np.testing.assert_array_equal(out, np.arange(24).reshape(2, 3, 4))
    np.testing.assert_array_equal(to_host(a), out)
    assert 1 <= device_rows(10**6, 500) <= 500
    assert device_rows(10**15, 500) == 1


def record_restrictions(client) -> dict:
    """``{task key: its resource restrictions}``, filled as the scheduler of ``client``'s in-process
    cluster sends each task to a worker."""
    from distributed.diagnostics.plugin import SchedulerPlugin

    scheduler = client.cluster.scheduler
    seen: dict = {}

    class Restrictions(SchedulerPlugin):
        def transition(self, key, start, finish, *args, **kwargs):
            ts = scheduler.tasks.get(key)
            if ts is not None and finish == "processing":
                seen[key] = dict(ts.resource_restrictions or {})

    scheduler.add_plugin(Restrictions())
    return seen


@pytest.mark.gpu("dask_cuda")
def test_recon_on_a_local_cuda_cluster_with_a_live_dashboard(scan, tmp_path):
    """`tomoflow.connect("local-cuda")`: slab tasks carry their share of the GPU resource, the result
    equals the kernels', and the dashboard serves its page while the reconstruction runs."""
    from dask.utils import key_split

    import tomoflow.cluster as tc
    from tomoflow.pipeline.reconstruct import CONVEYOR_TASKS
    from tomoflow.testing import http_get

    path, line = scan
    pages = []
    stop = threading.Event()
    with tc.connect("local-cuda", n_workers=1, dashboard_address="127.0.0.1:0") as client:
        seen = record_restrictions(client)
        url = tc.dashboard_url(client)

        def poll():
            while not stop.is_set():
                pages.append(http_get(url, timeout=5))
                time.sleep(0.1)

        poller = threading.Thread(target=poll)
        poller.start()
        try:
            with tomoflow.config.set(device="cuda", scan_chunk_rows=8):
                v = reconstruct_scan(path, tmp_path / "local-cuda.zarr", center=CENTER, client=client)
        finally:
            stop.set()
            poller.join()
    recon = [r for k, r in seen.items() if key_split(k) == "recon-fbp"]
    assert recon and all(r == {"GPU": 1 / CONVEYOR_TASKS} for r in recon)
    assert v.stages()["recon"].params["fbp_method"] == "fourier"  # `auto` on GPU workers
    ref = fbp(line, ANGLES, center=CENTER, mask=True, method="fourier")
    assert np.abs(np.asarray(v.level(0)[:]) - ref).max() < 2e-3 * np.abs(ref).max()
    assert any(status == 200 and "Bokeh.embed" in body for status, body in pages), pages[-1:]


@pytest.mark.gpu("torch")
def test_torch_sections_share_the_gpu_slots_and_give_the_networks_result():
    """Threads running a U-Net in ``torch_gpu_section``: at most ``gpu_slots()`` at once, each on its own
    stream, every output equal to the one computed alone."""
    import torch

    from tomoflow.pipeline.gpu import gpu_slots, torch_gpu_section
    from tomoflow.recover.unet import build_unet

    torch.manual_seed(0)
    dev = torch.device("cuda")
    net = build_unet(channels=(4, 8)).to(dev).eval()
    boxes = [torch.rand(1, 1, 32, 32, 32) for _ in range(8)]
    with torch.inference_mode():
        want = [net(b.to(dev)).cpu() for b in boxes]
    inside, peak, got = [0], [0], [None] * len(boxes)
    lock = threading.Lock()

    def work(i):
        with torch_gpu_section(dev) as stream, torch.inference_mode():
            assert torch.cuda.current_stream(dev) == stream
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            got[i] = net(boxes[i].to(dev)).cpu()
            time.sleep(0.05)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(boxes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 1 <= peak[0] <= gpu_slots()
    with torch_gpu_section(dev) as first:
        pass
    with torch_gpu_section(torch.device("cuda", 0)) as second:
        pass
    assert first is second  # one stream per thread, however the device is named
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-3 * float(w.abs().max()))


@pytest.mark.gpu("dask_cuda")
def test_recover_on_a_local_cuda_cluster(tmp_path):
    """`tomoflow.connect("local-cuda")`: the recover stage's blocks carry their share of the GPU resource
    (several read while others compute) and the volume equals the whole-volume prediction."""
    from dask.utils import key_split

    import tomoflow.cluster as tc
    from tomoflow.pipeline.gpu import CONVEYOR_TASKS
    from tomoflow.pipeline.recover import recover_volume
    from tomoflow.recover import predict_volume
    from tomoflow.recover.unet import inference_bytes
    from tomoflow.testing import write_random_unet, write_volume_store

    model = write_random_unet(tmp_path / "unet.safetensors")
    data = np.random.default_rng(0).random((20, 37, 29)).astype(np.float32)
    src = write_volume_store(tmp_path / "lfov.zarr", data)
    with tc.connect("local-cuda", n_workers=1, dashboard_address="127.0.0.1:0") as client:
        seen = record_restrictions(client)
        with tomoflow.config.set(device="cuda"):
            out = recover_volume(
                src.path,
                tmp_path / "unet.safetensors",
                tmp_path / "rec.zarr",
                memory_budget=inference_bytes(model, (36, 36, 36)) + 1,
                client=client,
            )
    blocks = [r for k, r in seen.items() if key_split(k) == "recover-unet"]
    assert len(blocks) > 1 and all(r == {"GPU": 1 / CONVEYOR_TASKS} for r in blocks)
    assert out.stages()["recover"].info["device"] == "cuda"
    want = predict_volume(model, data, device="cpu")
    got = np.asarray(out.level(0)[...])
    assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max()  # TF32 convolutions on the GPU
