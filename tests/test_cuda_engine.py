"""The CUDA fast path, checked without a GPU.

The kernel sources are rendered for every variant and compiled with NVRTC where it is
installed; and the runner itself (buffers, per-epoch uploads, graph capture and
replay) runs against a stand-in for CuPy whose kernels are the real CUDA C compiled
for the CPU (tests/helpers_cuda_emu.py). Its results must match the generic path.
The same comparisons on a real GPU are in tests/test_cuda.py (marked ``gpu``).
"""

from __future__ import annotations

import dataclasses
import itertools
import re
import types

import numpy as np
import pytest
from helpers_cuda_emu import EmulatedModule, compiler_available
from helpers_data import blobs
from helpers_nvrtc import compile_ptx, find_nvrtc, find_ptxas, resource_usage

from mnist_xp.backend import get_backend
from mnist_xp.model import Architecture, init_params
from mnist_xp.training import TrainConfig, train
from mnist_xp.training.engines import FAST_ENGINES
from mnist_xp.training.engines import cuda_kernels as kern
from mnist_xp.training.engines.cuda_engine import CudaEngine

CPU = get_backend("cpu")

VARIANTS = list(itertools.product(("relu", "sigmoid"), ("cross_entropy", "squared_error"),
                                  (np.float32, np.float64), ("pixels", "floats")))


@pytest.mark.parametrize("activation, loss, dtype, inputs", VARIANTS)
def test_kernel_source_compiles_with_nvrtc(activation, loss, dtype, inputs):
    path = find_nvrtc()
    if path is None:
        pytest.skip("NVRTC not found (pip install nvidia-cuda-nvrtc-cu12 to run this check)")
    arch = Architecture(activation=activation, loss=loss)
    source = kern.kernel_source(arch, dtype, np.uint8 if inputs == "pixels" else dtype,
                                side=28 if inputs == "pixels" else 0,
                                warp=inputs == "floats")
    ok, log, ptx = compile_ptx(source, path)
    assert ok, log
    assert "warning" not in log.lower(), log
    for name in kern.KERNEL_NAMES:
        assert re.search(rf"\.entry\s+{name}\b", ptx), name
    # register arrays indexed only by unrolled loops: nothing spills to local memory
    assert ".local" not in ptx


@pytest.mark.parametrize("warp", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernels_fit_in_registers_on_hopper(dtype, warp):
    # a spill (seen once: 832 bytes in hidden_partial after a full unroll) made the
    # kernel slower than the loop it replaced; ptxas reports it without a GPU
    path, ptxas = find_nvrtc(), find_ptxas()
    if path is None or ptxas is None:
        pytest.skip("needs NVRTC and ptxas (the CUDA toolkit) to assemble the kernels")
    source = kern.kernel_source(Architecture(), dtype, np.uint8, 0 if warp else 28, warp=warp)
    ok, log, ptx = compile_ptx(source, path)
    assert ok, log
    usage = resource_usage(ptx, ptxas)
    assert set(usage) == set(kern.KERNEL_NAMES)
    for name, u in usage.items():
        assert u["spill_bytes"] == 0, (name, u)
        assert u["registers"] <= 128, (name, u)


def test_kernel_source_is_specialised_by_defines():
    arch = Architecture(36, 7, 4, "sigmoid", "squared_error")
    src = kern.kernel_source(arch, np.float64, np.uint8, side=6)
    for line in ("typedef double real;", "typedef unsigned char in_t;", "#define N_IN 36",
                 "#define N_HID 7", "#define N_OUT 4", "#define SIDE 6", "#define ACT_RELU 0",
                 "#define LOSS_CE 0"):
        assert line in src
    for name in kern.KERNEL_NAMES:
        assert f"{name}(" in src


@pytest.mark.parametrize("arch, dtype, pixels, side, reason", [
    (Architecture(), np.float32, np.uint8, 28, None),
    (Architecture(), np.float64, np.float64, 0, None),
    (Architecture(), np.float16, np.uint8, 0, "float16"),
    (Architecture(), np.float32, np.float64, 0, "inputs of dtype float64"),
    (Architecture(n_outputs=65), np.float32, np.uint8, 0, "65 outputs"),
    (Architecture(n_inputs=30), np.float32, np.uint8, 5, "shifts of 5x5"),
])
def test_unsupported_setups_name_the_reason(arch, dtype, pixels, side, reason):
    got = kern.unsupported_reason(arch, dtype, pixels, side)
    assert got is None if reason is None else reason in got


def test_launch_shapes_cover_every_row_and_parameter():
    arch = Architecture()
    shapes = kern.launch_shapes(arch, 128)
    assert shapes["hidden_partial"] == (16, 14)  # 8 rows per block, 14 slices of 56 inputs
    assert shapes["output_backward"] == (32,)  # one warp per sample, 4 per block
    # 25 x 4 tiles of W1, then 101 warps (100 rows of W2 with b1, and b2) at 8 per block
    assert shapes["grads_update"] == (100 + 13,)
    assert kern.launch_shapes(arch, 96)["hidden_partial"] == (12, 14)
    assert kern.launch_shapes(arch, 1)["output_backward"] == (1,)


# -- the runner on a CPU stand-in for CuPy ---------------------------------------------

needs_compiler = pytest.mark.skipif(compiler_available() is None, reason="no g++ to emulate kernels")


class _Stream:
    """A stream whose capture records launches, and whose graphs replay them."""

    def __init__(self):
        self.recording = None
        self.ptr = 1234

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def begin_capture(self):
        assert self.recording is None, "capture started twice"
        self.recording = []

    def end_capture(self):
        calls, self.recording = self.recording, None
        fake.captures += 1
        return types.SimpleNamespace(launch=lambda stream=None: [c() for c in calls])


class _Function:
    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, grid, block, args, stream=None):
        assert stream is not None and isinstance(stream, _Stream)
        call = lambda: self.module.launch(self.name, grid, block, args)
        if stream.recording is not None:
            stream.recording.append(call)
        else:
            fake.eager_launches += 1
            call()


class _RawModule:
    def __init__(self, code, options=()):
        self.module = EmulatedModule(code)

    def get_function(self, name):
        return _Function(self.module, name)


fake = types.SimpleNamespace(
    uint8=np.uint8, int32=np.int32, int64=np.int64, uint64=np.uint64, float64=np.float64,
    zeros=np.zeros, zeros_like=np.zeros_like, copyto=np.copyto, RawModule=_RawModule,
    asnumpy=np.array, asarray=np.asarray,  # asnumpy copies, as CuPy's device -> host copy does
    cuda=types.SimpleNamespace(Stream=_Stream), captures=0, eager_launches=0)


class EmulatedCudaEngine(CudaEngine):
    """The CUDA engine on the stand-in: CuPy replaced by `fake`, kernels compiled by g++."""

    def __init__(self, setup):
        super().__init__(dataclasses.replace(
            setup, backend=types.SimpleNamespace(xp=fake, asarray=np.asarray)))

    def _upload(self, dst, host):
        np.copyto(dst, host)


def trained(x, y, arch, config, dtype, graphs=None, monkeypatch=None, seed=3, **kw):
    """Train on the generic engine, or (`graphs` True/False) on the emulated CUDA engine."""
    rng = np.random.default_rng(seed)
    params = init_params(arch, dtype, rng)
    params["b1"] += dtype(0.01)  # non-zero biases exercise their path too
    if graphs is not None:
        monkeypatch.setitem(FAST_ENGINES, "numpy", (EmulatedCudaEngine,))
    history = train(params, x, y, arch=arch, config=config, backend=CPU, rng=rng,
                    fast=graphs is not None, cuda_graphs=bool(graphs), **kw)
    assert history[-1]["engine"] == ("generic" if graphs is None else "cuda")
    monkeypatch.undo() if graphs is not None else None
    return params, history


EMU_CASES = [
    # activation, loss, momentum, nesterov, weight decay, shift, dtype, pixels, graphs
    ("relu", "cross_entropy", 0.9, False, 1e-3, 1, np.float32, True, True),
    ("relu", "cross_entropy", 0.9, True, 0.0, 0, np.float32, True, False),
    ("sigmoid", "squared_error", 0.0, False, 0.0, 0, np.float32, False, True),
    ("sigmoid", "cross_entropy", 0.5, False, 1e-3, 1, np.float64, True, True),
    ("relu", "squared_error", 0.9, False, 0.0, 2, np.float64, False, False),
]


@needs_compiler
@pytest.mark.parametrize("activation, loss, momentum, nesterov, wd, shift, dtype, pixels, graphs",
                         EMU_CASES)
def test_emulated_cuda_runner_matches_the_generic_path(monkeypatch, activation, loss, momentum,
                                                       nesterov, wd, shift, dtype, pixels,
                                                       graphs):
    x, y = blobs()
    if not pixels:
        x = (x / 255).astype(dtype)
    # 40 hidden units: two warps' worth of lanes and two W1 tiles; 36 inputs: two tiles
    arch = Architecture(36, 40, 4, activation, loss)
    config = TrainConfig(epochs=2, batch_size=40, momentum=momentum, weight_decay=wd,
                         learning_rate=0.05 if loss == "cross_entropy" else 0.5,
                         schedule="cosine", shift=shift,
                         optimizer="nesterov" if nesterov else "sgd")
    fake.captures = fake.eager_launches = 0
    slow, slow_history = trained(x, y, arch, config, dtype)
    fast, fast_history = trained(x, y, arch, config, dtype, graphs, monkeypatch)
    # two epochs of 3 batches (40, 40, 10 rows), 3 kernels each: captured once if graphed
    assert (fake.captures, fake.eager_launches) == ((1, 0) if graphs else (0, 18))
    tol = 2e-5 if dtype == np.float32 else 1e-11
    for k in slow:
        assert fast[k].dtype == dtype
        np.testing.assert_allclose(fast[k], slow[k], rtol=tol, atol=tol, err_msg=k)
    for a, b in zip(fast_history, slow_history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=tol)
        assert a["train_accuracy"] == b["train_accuracy"]
    assert not np.allclose(slow["W1"], init_params(arch, dtype, np.random.default_rng(3))["W1"])


@needs_compiler
def test_emulated_step_at_mnist_size_matches_the_generic_step(monkeypatch):
    # the real shapes: 784 inputs in 14 full slices, 100 hidden units (4 per lane),
    # 25 x 4 W1 tiles; one batch of 20 samples
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (20, 784), dtype=np.uint8)
    y = rng.integers(0, 10, 20).astype(np.int64)
    arch = Architecture()
    config = TrainConfig(epochs=1, batch_size=20, learning_rate=0.1, momentum=0.9, shift=1)
    slow, slow_history = trained(x, y, arch, config, np.float32)
    fast, fast_history = trained(x, y, arch, config, np.float32, True, monkeypatch)
    for k in slow:
        np.testing.assert_allclose(fast[k], slow[k], rtol=2e-5, atol=2e-6, err_msg=k)
    assert fast_history[0]["train_loss"] == pytest.approx(slow_history[0]["train_loss"], rel=1e-5)


@needs_compiler
@pytest.mark.parametrize("graphs", [True, False])
def test_emulated_cuda_runner_with_per_image_warps_matches_the_generic_path(monkeypatch, graphs):
    x, y = blobs()
    arch = Architecture(36, 40, 4)
    config = TrainConfig(epochs=2, batch_size=40, learning_rate=0.05, momentum=0.9,
                         augment=dict(rotate=20, zoom=0.1, translate=1, elastic=2, sigma=2),
                         warp_bank=16)
    slow, slow_history = trained(x, y, arch, config, np.float32)
    fast, fast_history = trained(x, y, arch, config, np.float32, graphs, monkeypatch)
    for k in slow:
        np.testing.assert_allclose(fast[k], slow[k], rtol=2e-5, atol=2e-5, err_msg=k)
    assert [r["train_accuracy"] for r in fast_history] == \
        [r["train_accuracy"] for r in slow_history]


@needs_compiler
def test_emulated_cuda_runner_names_the_step_where_the_loss_diverged(monkeypatch):
    from mnist_xp.errors import TrainingDiverged

    x, y = blobs()
    arch = Architecture(36, 40, 4)
    config = TrainConfig(epochs=2, batch_size=40, learning_rate=1e30, momentum=0.9,
                         schedule="constant")
    monkeypatch.setitem(FAST_ENGINES, "numpy", (EmulatedCudaEngine,))
    rng = np.random.default_rng(3)
    with pytest.raises(TrainingDiverged, match=r"epoch 1, step [23] of 3"):
        train(init_params(arch, np.float32, rng), x, y, arch=arch, config=config, backend=CPU,
              rng=rng)


OPTION_CASES = [
    # optimizer, weight decay, label smoothing, sample weights, loss, dtype, graphs
    ("adam", 0.0, 0.0, False, "cross_entropy", np.float32, True),
    ("adam", 1e-2, 0.0, False, "cross_entropy", np.float32, False),  # L2 in the gradient
    ("adamw", 1e-2, 0.0, False, "cross_entropy", np.float32, True),  # decoupled decay
    ("adamw", 1e-2, 0.1, True, "squared_error", np.float64, True),
    ("adam", 0.0, 0.0, True, "cross_entropy", np.float32, False),
    ("sgd", 1e-3, 0.1, False, "cross_entropy", np.float32, True),
    ("sgd", 0.0, 0.2, False, "squared_error", np.float32, False),
    ("nesterov", 0.0, 0.0, True, "cross_entropy", np.float32, True),
    ("sgd", 0.0, 0.1, True, "cross_entropy", np.float64, False),
]


@needs_compiler
@pytest.mark.parametrize("optimizer, wd, smoothing, weighted, loss, dtype, graphs", OPTION_CASES)
def test_emulated_cuda_runner_matches_the_generic_path_for_every_option(
        monkeypatch, optimizer, wd, smoothing, weighted, loss, dtype, graphs):
    # Adam and AdamW, label smoothing and sample weights, fused: 2 epochs of a cosine
    # schedule (a learning rate, and Adam's bias corrections, that change every step)
    x, y = blobs()
    arch = Architecture(36, 40, 4, "relu", loss)
    adam = optimizer.startswith("adam")
    lr = (0.01 if adam else 0.05) * (1 if loss == "cross_entropy" else 10)
    config = TrainConfig(epochs=2, batch_size=40, learning_rate=lr, weight_decay=wd,
                         label_smoothing=smoothing, schedule="cosine", optimizer=optimizer,
                         momentum=0.9)
    kw = {}
    if weighted:
        w = np.random.default_rng(5).uniform(0, 3, len(y)).astype(dtype)
        w[::7] = 0  # a zero weight leaves its sample out of the mean
        kw["sample_weight"] = w
    slow, slow_history = trained(x, y, arch, config, dtype, **kw)
    fast, fast_history = trained(x, y, arch, config, dtype, graphs, monkeypatch, **kw)
    tol = 2e-5 if dtype == np.float32 else 1e-11
    # Adam divides by the root of the squared gradient: a gradient that is nearly zero
    # (summed in another order here than by BLAS) can move its parameter by up to ~lr
    # on either path. Allow 1% of lr anywhere, and require the rest to match closely.
    ptol = tol if not adam else lr * 1e-2
    for k in slow:
        assert fast[k].dtype == dtype
        np.testing.assert_allclose(fast[k], slow[k], rtol=tol, atol=ptol, err_msg=k)
        close = np.isclose(fast[k], slow[k], rtol=tol, atol=tol)
        assert close.mean() > 0.99, (k, close.mean())
    for a, b in zip(fast_history, slow_history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=tol if not adam else 1e-4)
        assert a["train_accuracy"] == b["train_accuracy"]
    # the option did something: without it the run ends elsewhere
    plain = TrainConfig(epochs=2, batch_size=40, learning_rate=lr, schedule="cosine",
                        optimizer="sgd", momentum=0.0)
    other, _ = trained(x, y, arch, plain, dtype)
    assert not np.allclose(other["W1"], slow["W1"], rtol=tol, atol=tol)


@needs_compiler
@pytest.mark.parametrize("graphs", [True, False])
def test_emulated_adam_run_resumes_exactly_from_its_checkpoint(monkeypatch, graphs):
    # the moments and the step count go through the checkpoint (`optimizer_state`):
    # an interrupted and resumed run equals the uninterrupted one bit for bit
    from mnist_xp.errors import TrainingInterrupted
    from mnist_xp.training import TrainingHooks

    x, y = blobs()
    arch = Architecture(36, 40, 4)
    config = TrainConfig(epochs=3, batch_size=40, learning_rate=0.01, optimizer="adamw",
                         weight_decay=1e-2, schedule="cosine")
    whole, whole_h = trained(x, y, arch, config, np.float32, graphs, monkeypatch)
    calls = {"n": 0}

    def stop():
        # step by step it is asked after every step (5: in epoch 2, of 3 steps each);
        # a graph runs whole epochs and the loop asks after each (2: after epoch 2)
        calls["n"] += 1
        return calls["n"] >= (2 if graphs else 5)

    with pytest.raises(TrainingInterrupted) as info:
        trained(x, y, arch, config, np.float32, graphs, monkeypatch,
                hooks=TrainingHooks(should_stop=stop))
    state = info.value.state
    assert state is not None and state.epoch >= 1
    assert int(state.optimizer["t"]) == 3 * state.epoch
    assert {"m/W1", "v/W1", "m/b2", "v/b2"} <= set(state.optimizer)
    assert np.any(state.optimizer["v/W2"] > 0)
    resumed, resumed_h = trained(x, y, arch, config, np.float32, graphs, monkeypatch,
                                 resume=state)
    for k in whole:
        np.testing.assert_array_equal(resumed[k], whole[k], err_msg=k)
    assert [r["train_accuracy"] for r in resumed_h] == [r["train_accuracy"] for r in whole_h]


@needs_compiler
def test_emulated_adam_state_loads_from_a_generic_checkpoint(monkeypatch):
    # a checkpoint of the generic engine (moments in its layout) resumes on the kernels
    # as it resumes on the generic engine
    from mnist_xp.errors import TrainingInterrupted
    from mnist_xp.training import TrainingHooks

    x, y = blobs()
    arch = Architecture(36, 40, 4)
    config = TrainConfig(epochs=3, batch_size=40, learning_rate=0.01, optimizer="adam",
                         schedule="cosine")
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] >= 5  # in epoch 2

    with pytest.raises(TrainingInterrupted) as info:
        trained(x, y, arch, config, np.float32, hooks=TrainingHooks(should_stop=stop))
    state = info.value.state
    assert state.engine == "generic" and int(state.optimizer["t"]) == 3
    slow, _ = trained(x, y, arch, config, np.float32, resume=state)
    fast, _ = trained(x, y, arch, config, np.float32, True, monkeypatch, resume=state)
    for k in slow:
        np.testing.assert_allclose(fast[k], slow[k], rtol=2e-5, atol=2e-5, err_msg=k)


@needs_compiler
def test_emulated_batches_of_zero_total_weight_match_the_generic_path(monkeypatch):
    # one sample weighs 1, the rest 0: every batch but one has a total weight of zero,
    # which both paths clamp away from zero, so nothing divides by zero and those
    # batches move nothing (SGD without momentum: only the weighted batch's step)
    x, y = blobs()
    arch = Architecture(36, 40, 4)
    config = TrainConfig(epochs=1, batch_size=40, learning_rate=0.05, momentum=0.0)
    w = np.zeros(len(y), np.float32)
    w[0] = 1
    slow, slow_history = trained(x, y, arch, config, np.float32, sample_weight=w)
    fast, fast_history = trained(x, y, arch, config, np.float32, True, monkeypatch,
                                 sample_weight=w)
    start = init_params(arch, np.float32, np.random.default_rng(3))
    start["b1"] += np.float32(0.01)
    for k in slow:
        assert np.all(np.isfinite(fast[k])), k
        np.testing.assert_allclose(fast[k], slow[k], rtol=2e-5, atol=2e-6, err_msg=k)
    assert not np.array_equal(fast["b2"], start["b2"])  # the one weighted sample moved it
    assert fast_history[0]["train_loss"] == pytest.approx(slow_history[0]["train_loss"],
                                                          rel=2e-5)
