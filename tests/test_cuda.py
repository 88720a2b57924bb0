"""The CUDA path on a real GPU: parity with NumPy, graphs, no syncs (all marked ``gpu``).

Skipped with the reason where CuPy or a CUDA device is missing; the same runner is
checked on the CPU through an emulation in tests/test_cuda_engine.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers_data import blobs

from mnist_xp.backend import get_backend
from mnist_xp.model import Architecture, init_params
from mnist_xp.optim import SGD
from mnist_xp.inference import count_correct
from mnist_xp.training import TrainConfig, TrainingHooks, train
from mnist_xp.training.engines import CudaEngine, EngineSetup, EpochInputs

pytestmark = pytest.mark.gpu
CPU = get_backend("cpu")


@pytest.fixture
def gpu(cuda_backend):
    return cuda_backend


def run(backend, x, y, arch, config, dtype=np.float32, seed=3, should_stop=None, **kw):
    """Train from seed-`seed` weights on `backend`; return host params and the history."""
    kw["hooks"] = TrainingHooks(should_stop=should_stop)
    rng = np.random.default_rng(seed)
    host = init_params(arch, dtype, rng)
    host["b1"] += dtype(0.01)
    with backend.activate():
        params = {k: backend.asarray(v) for k, v in host.items()}
        xd = backend.asarray(x if x.dtype == np.uint8 else x.astype(dtype))
        if kw.get("sample_weight") is not None:
            kw["sample_weight"] = backend.asarray(kw["sample_weight"].astype(dtype))
        history = train(params, xd, backend.asarray(y), arch=arch, config=config,
                        backend=backend, rng=rng, **kw)
        return {k: backend.to_numpy(v) for k, v in params.items()}, history


CASES = [
    # activation, loss, momentum, weight decay, shift, dtype
    ("relu", "cross_entropy", 0.9, 1e-3, 1, np.float32),
    ("relu", "cross_entropy", 0.0, 0.0, 0, np.float32),
    ("sigmoid", "squared_error", 0.0, 0.0, 0, np.float32),
    ("sigmoid", "cross_entropy", 0.9, 0.0, 2, np.float64),
    ("relu", "squared_error", 0.5, 1e-3, 0, np.float64),
]


@pytest.mark.parametrize("mode", ["graphs", "eager", "generic"])
@pytest.mark.parametrize("activation, loss, momentum, wd, shift, dtype", CASES)
def test_one_step_matches_numpy(gpu, mode, activation, loss, momentum, wd, shift, dtype):
    x, y = blobs(n=64)
    arch = Architecture(36, 40, 4, activation, loss)
    config = TrainConfig(epochs=1, batch_size=64, momentum=momentum, weight_decay=wd,
                         learning_rate=0.05 if loss == "cross_entropy" else 0.5, shift=shift)
    want, want_history = run(CPU, x, y, arch, config, dtype, fast=False)
    got, got_history = run(gpu, x, y, arch, config, dtype, fast=mode != "generic",
                           cuda_graphs=mode == "graphs")
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for k in want:
        assert got[k].dtype == dtype
        np.testing.assert_allclose(got[k], want[k], rtol=tol, atol=tol, err_msg=k)
    assert got_history[0]["train_loss"] == pytest.approx(want_history[0]["train_loss"], rel=tol)
    assert got_history[0]["train_accuracy"] == want_history[0]["train_accuracy"]


@pytest.mark.parametrize("activation, loss, momentum, wd, shift, dtype", CASES)
def test_epochs_with_a_partial_batch_match_numpy(gpu, activation, loss, momentum, wd, shift, dtype):
    x, y = blobs(n=300)
    arch = Architecture(36, 40, 4, activation, loss)
    config = TrainConfig(epochs=3, batch_size=64, momentum=momentum, weight_decay=wd,
                         learning_rate=0.05 if loss == "cross_entropy" else 0.5,
                         schedule="cosine", shift=shift)
    want, _ = run(CPU, x, y, arch, config, dtype, fast=False)
    got, _ = run(gpu, x, y, arch, config, dtype)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=tol, atol=tol, err_msg=k)


OPTION_CASES = [
    # optimizer, weight decay, label smoothing, sample weights
    ("adam", 0.0, 0.0, False),
    ("adam", 1e-2, 0.0, True),
    ("adamw", 1e-2, 0.1, False),
    ("sgd", 1e-3, 0.1, True),
    ("nesterov", 0.0, 0.0, True),
]


@pytest.mark.parametrize("graphs", [True, False])
@pytest.mark.parametrize("optimizer, wd, smoothing, weighted", OPTION_CASES)
def test_every_optimizer_and_loss_option_is_fused_and_matches_numpy(gpu, graphs, optimizer, wd,
                                                                     smoothing, weighted):
    x, y = blobs(n=300)
    arch = Architecture(36, 40, 4)
    lr = 0.01 if optimizer.startswith("adam") else 0.05
    config = TrainConfig(epochs=2, batch_size=64, learning_rate=lr, weight_decay=wd,
                         label_smoothing=smoothing, optimizer=optimizer, schedule="cosine")
    w = np.random.default_rng(5).uniform(0, 3, len(y)) if weighted else None
    want, want_h = run(CPU, x, y, arch, config, fast=False, sample_weight=w)
    got, got_h = run(gpu, x, y, arch, config, cuda_graphs=graphs, sample_weight=w)
    assert {r["engine"] for r in got_h} == {"cuda"}
    # Adam moves a parameter whose gradient is nearly zero by up to ~lr on either path
    atol = lr * 1e-2 if optimizer.startswith("adam") else 1e-4
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=atol, err_msg=k)
    assert got_h[-1]["train_loss"] == pytest.approx(want_h[-1]["train_loss"], rel=1e-4)


def test_graph_replay_equals_step_by_step_launches_bit_for_bit(gpu):
    x, y = blobs(n=1000, side=28, n_classes=10)
    arch = Architecture()
    config = TrainConfig(epochs=3, batch_size=128, momentum=0.9, schedule="cosine", shift=1)
    graphed, h1 = run(gpu, x, y, arch, config, cuda_graphs=True)
    eager, h2 = run(gpu, x, y, arch, config, cuda_graphs=False)
    for k in graphed:
        np.testing.assert_array_equal(graphed[k], eager[k], err_msg=k)
    assert [r["train_accuracy"] for r in h1] == [r["train_accuracy"] for r in h2]


def epoch(n, batch_size, lr, order):
    """An epoch of `n` samples in `order` at a constant learning rate."""
    return EpochInputs(order, batch_size, [lr] * -(-n // batch_size))


def _runner(gpu, graphs, n=500, momentum=0.9, optimizer=None):
    x, y = blobs(n=n, side=28, n_classes=10)
    arch = Architecture()
    with gpu.activate():
        params = {k: gpu.asarray(v) for k, v in
                  init_params(arch, np.float32, np.random.default_rng(0)).items()}
        opt = optimizer or SGD(0.1, momentum)
        runner = CudaEngine(EngineSetup(params, arch, opt, gpu.asarray(x),
                                        gpu.asarray(y), gpu, cuda_graphs=graphs))
    return runner, params, n


@pytest.mark.parametrize("adam", [False, True])
@pytest.mark.parametrize("graphs", [True, False])
def test_epoch_queues_without_waiting_for_the_device(gpu, graphs, adam):
    # cupyx.allow_synchronize(False) makes any device -> host sync raise; the first
    # epoch includes the graph capture, during which a sync would fail anyway. Adam's
    # bias corrections come from the host's step count, never from the device.
    import cupyx

    from mnist_xp.optim import Adam

    runner, params, n = _runner(gpu, graphs, optimizer=Adam(0.01, decoupled=True,
                                                             weight_decay=1e-2) if adam else None)
    assert isinstance(runner, CudaEngine)
    with gpu.activate():
        order = gpu.asarray(np.random.default_rng(1).permutation(n))
        gpu.synchronize()
        for _ in range(2):
            with cupyx.allow_synchronize(False):
                loss, hits = runner.run_epoch(epoch(n, 128, 0.1, order))
        assert np.isfinite(float(gpu.to_numpy(loss)))
        assert 0 <= int(gpu.to_numpy(hits)) <= n


def test_changing_the_batch_size_makes_a_new_plan(gpu):
    runner, params, n = _runner(gpu, True, momentum=0.0)  # lr 0 then means no change
    with gpu.activate():
        order = gpu.asarray(np.arange(n))
        runner.run_epoch(epoch(n, 128, 0.1, order))
        first = runner._plan
        runner.run_epoch(epoch(n, 100, 0.1, order))
        assert runner._plan is not first and runner._plan.batch_size == 100
        _, hits = runner.run_epoch(epoch(n, 100, 0.0, order))  # lr 0: counts only
        gpu.synchronize()
        # with a zero learning rate the epoch's hits equal a fresh count of the same weights
        # (cuBLAS sums in another order: allow one near-tie to fall the other way)
        x, y = runner.x, runner.y
        want = count_correct(params, x, y, Architecture(), params["W1"].dtype, gpu)
        assert abs(int(gpu.to_numpy(hits)) - int(gpu.to_numpy(want))) <= 1


def test_short_run_on_the_bundled_subset_reaches_numpy_accuracy(gpu):
    from mnist_xp.data import load_bundled

    data = load_bundled()
    x = data.x_train.reshape(len(data.x_train), -1)
    xt = data.x_test.reshape(len(data.x_test), -1)
    y, yt = data.y_train.astype(np.int64), data.y_test.astype(np.int64)
    arch = Architecture()
    config = TrainConfig(epochs=3, batch_size=128, learning_rate=0.1, momentum=0.9,
                         schedule="cosine", shift=1)
    acc = {}
    for name, backend in (("cpu", CPU), ("cuda", gpu)):
        with backend.activate():
            _, history = run(backend, x, y, arch, config,
                             eval_set=(backend.asarray(xt), backend.asarray(yt)))
        acc[name] = history[-1]["test_accuracy"]
    assert acc["cpu"] > 0.9, acc
    assert abs(acc["cuda"] - acc["cpu"]) <= 0.003, acc


@pytest.mark.parametrize("graphs", [True, False])
def test_warped_epochs_match_numpy(gpu, graphs):
    x, y = blobs(n=300, side=28, n_classes=10)
    arch = Architecture()
    config = TrainConfig(epochs=2, batch_size=64, momentum=0.9, schedule="cosine",
                         augment=dict(rotate=8, zoom=0.08, shear=8, translate=1.5,
                                      elastic=20, sigma=4), warp_bank=32)
    want, want_h = run(CPU, x, y, arch, config, fast=False)
    got, got_h = run(gpu, x, y, arch, config, cuda_graphs=graphs)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-4, err_msg=k)
    assert got_h[-1]["train_accuracy"] == pytest.approx(want_h[-1]["train_accuracy"], abs=0.01)


@pytest.mark.parametrize("graphs", [True, False])
def test_interrupted_and_resumed_cuda_run_equals_the_uninterrupted_one(gpu, graphs):
    from mnist_xp.errors import TrainingInterrupted

    x, y = blobs(n=300, side=28, n_classes=10)
    arch = Architecture()
    config = TrainConfig(epochs=4, batch_size=64, momentum=0.9, schedule="cosine", shift=1)
    whole, whole_h = run(gpu, x, y, arch, config, cuda_graphs=graphs)
    calls = {"n": 0}

    def stop():
        # step by step it is asked after every step (7: in epoch 2); a graph runs whole
        # epochs, and the loop asks after each (2: at the end of epoch 2)
        calls["n"] += 1
        return calls["n"] >= (2 if graphs else 7)

    with pytest.raises(TrainingInterrupted) as info:
        run(gpu, x, y, arch, config, cuda_graphs=graphs, should_stop=stop)
    state = info.value.state
    assert state is not None and state.epoch >= 1
    resumed, resumed_h = run(gpu, x, y, arch, config, cuda_graphs=graphs, resume=state)
    for k in whole:
        np.testing.assert_array_equal(resumed[k], whole[k], err_msg=k)
    assert [r["train_accuracy"] for r in resumed_h] == [r["train_accuracy"] for r in whole_h]


def test_cuda_out_of_memory_is_a_memory_error(gpu):
    # the command line turns MemoryError into one line suggesting a smaller batch or the CPU
    with pytest.raises(MemoryError):
        gpu.xp.empty(1 << 50, dtype=gpu.xp.uint8)
