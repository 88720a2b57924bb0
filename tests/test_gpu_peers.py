"""The peers of the GPU benchmark (benchmarks/gpu_peers.py), run as far as a CPU allows.

PyTorch's whole-epoch graph runs its epoch body eagerly here, ``torch.compile`` traces
with its ``eager`` backend, and JAX compiles its scanned epoch for the CPU with the
command-buffer option set both ways; each must train as the plain loop does. The CUDA
captures themselves are checked on a GPU (marked ``gpu``) and by the benchmark there.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCH))

import gpu_peers  # noqa: E402


def digits(n=240, seed=0):
    """`n` uint8 rows of 784 pixels whose class (0-9) is written in a band of pixels."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    band = (np.arange(784) // 40)[None, :] == y[:, None]
    x = np.clip(rng.integers(0, 60, (n, 784)) + band * 200, 0, 255).astype(np.uint8)
    return x, y


def epochs(peer, k=3):
    return [peer.epoch() for _ in range(k)]


def test_torch_epoch_graph_body_trains_as_the_eager_loop():
    pytest.importorskip("torch", reason="PyTorch is not installed (pip install mnist-xp[bench])")
    x, y = digits()
    eager = gpu_peers.TorchEager(x, y, 64, device="cpu")
    eager_runs = epochs(eager)
    whole = gpu_peers.TorchEpochGraph(x, y, 64, device="cpu")
    assert whole.capture is False
    # same seed, same device-drawn orders: the same steps in the same order, and the
    # warm-up steps the capture needs are undone
    assert epochs(whole) == eager_runs
    for a, b in zip(eager.model.parameters(), whole.model.parameters()):
        assert np.array_equal(a.detach().numpy(), b.detach().numpy())
    assert eager_runs[-1][0] < eager_runs[0][0]
    assert whole.test_accuracy(x, y) > 0.5


def test_torch_compiled_peer_traces_and_trains_as_the_eager_loop():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    torch._dynamo.reset()
    x, y = digits()
    eager_runs = epochs(gpu_peers.TorchEager(x, y, 64, device="cpu"), 2)
    compiled = gpu_peers.TorchCompiled(x, y, 64, device="cpu", mode="reduce-overhead",
                                       backend="eager")
    runs = epochs(compiled, 2)
    assert [h for _, h in runs] == [h for _, h in eager_runs]
    np.testing.assert_allclose([loss for loss, _ in runs], [loss for loss, _ in eager_runs],
                               rtol=1e-5)


def test_jax_scan_trains_with_and_without_command_buffers():
    pytest.importorskip("jax", reason="JAX is not installed (the GPU image has it)")
    x, y = digits()
    runs = {}
    for cb in (True, False):
        peer = gpu_peers.JaxScan(x, y, 64, device="cpu", command_buffers=cb)
        runs[cb] = epochs(peer)
        assert runs[cb][-1][0] < runs[cb][0][0]
        assert peer.test_accuracy(x, y) > 0.5
    # the option changes how XLA launches the loop, not what it computes
    assert runs[True] == runs[False]


def test_command_buffer_flag_asks_for_loops_or_nothing():
    assert "WHILE" in gpu_peers.command_buffer_flag(True).split(",")
    assert gpu_peers.command_buffer_flag(False) == ""


def test_benchmark_cpu_mode_runs_the_peers_and_writes_their_times(tmp_path, capsys):
    pytest.importorskip("torch", reason="PyTorch is not installed")
    import gpu_epoch_time

    assert gpu_epoch_time.main(["--device", "cpu", "--rounds", "1", "--batches", "256",
                                "--limit", "1500", "--out", str(tmp_path)]) == 0
    (path,) = tmp_path.glob("gpu_epoch_time-*.json")
    result = json.loads(path.read_text())
    rows = result["batches"]["256"]
    for name in ("torch eager", "torch epoch graph", "torch.compile max-autotune"):
        assert rows[name]["median_s"] > 0, name
        assert len(rows[name]["test_accuracy"]) == 3  # 2 warm-up epochs and 1 timed
        assert set(rows[name]["reached"]) == {"0.980", "0.988"}
    if importlib.util.find_spec("jax") is None:
        assert "No module named 'jax'" in result["errors"]["jax scan, command buffers @ 256"]
    else:
        assert "jax scan, no command buffers" in rows
    assert "torch epoch graph" in capsys.readouterr().out


@pytest.mark.gpu
def test_torch_whole_epoch_graph_replays_as_the_eager_loop_on_cuda():
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch sees no CUDA device")
    x, y = digits(1000)
    graphed = gpu_peers.TorchEpochGraph(x, y, 128)
    assert graphed.capture
    replayed = epochs(graphed)
    eager = gpu_peers.TorchEpochGraph(x, y, 128, capture=False)  # seeds the same orders
    for (l1, h1), (l2, h2) in zip(replayed, epochs(eager)):
        assert h1 == h2 and l1 == pytest.approx(l2, rel=1e-5)
