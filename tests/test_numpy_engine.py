"""The NumPy engine computes what the generic engine computes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from helpers_data import blobs
from helpers_engines import assert_same_training

from mnist_xp.backend import get_backend
from mnist_xp.model import Architecture, init_params
from mnist_xp.optim import SGD
from mnist_xp.training import TrainConfig, train
from mnist_xp.training.engines import EngineSetup, EpochInputs, NumpyEngine

CPU = get_backend("cpu")


@pytest.fixture(autouse=True)
def _numpy_engine(numpy_engine):
    """These tests are the NumPy engine's: the compiled engine steps aside."""


def data(n=90, side=6, n_classes=4, pixels=True, seed=0):
    """Separable images and labels (`helpers_data.blobs`)."""
    return blobs(n, side, n_classes, seed, pixels)


def trained(fast, x, y, arch, config, dtype, seed=3):
    rng = np.random.default_rng(seed)
    params = init_params(arch, dtype, rng)
    params["b1"] += dtype(0.01)  # non-zero biases exercise their path too
    if x.dtype != np.uint8:
        x = x.astype(dtype)
    history = train(params, x, y, arch=arch, config=config, backend=CPU, rng=rng, fast=fast)
    return params, history


CASES = list(itertools.product(
    ("relu", "sigmoid"), ("cross_entropy", "squared_error"), (0.0, 0.9), (0.0, 1e-3), (0, 1)))


@pytest.mark.parametrize("activation, loss, momentum, weight_decay, shift", CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_path_matches_the_generic_path(activation, loss, momentum, weight_decay, shift, dtype):
    x, y = data()
    arch = Architecture(36, 7, 4, activation, loss)
    # batch 16 does not divide 90: the last, smaller batch is exercised too
    config = TrainConfig(epochs=2, batch_size=16, learning_rate=0.05 if loss == "cross_entropy" else 0.5,
                         momentum=momentum, weight_decay=weight_decay, schedule="cosine", shift=shift)
    fast, fast_history = trained(True, x, y, arch, config, dtype)
    slow, slow_history = trained(False, x, y, arch, config, dtype)
    tol = 2e-5 if dtype == np.float32 else 1e-11
    assert_same_training(fast, slow, fast_history, slow_history, dtype, tol)
    assert not np.allclose(slow["W1"], init_params(arch, dtype, np.random.default_rng(3))["W1"])


def test_float_inputs_take_the_fast_path_unscaled():
    x, y = data(pixels=False)
    arch = Architecture(36, 7, 4)
    config = TrainConfig(epochs=2, batch_size=32, learning_rate=0.1)
    fast, _ = trained(True, x, y, arch, config, np.float32)
    slow, _ = trained(False, x, y, arch, config, np.float32)
    for k in slow:
        np.testing.assert_allclose(fast[k], slow[k], rtol=2e-5, atol=2e-6, err_msg=k)


def engine(params, arch, optimizer, x, y):
    """The NumPy engine for a run on the CPU."""
    return NumpyEngine(EngineSetup(params, arch, optimizer, x, y, CPU))


def test_write_back_round_trips_the_parameters():
    x, y = data()
    arch = Architecture(36, 7, 4)
    params = init_params(arch, np.float32, np.random.default_rng(0))
    params["b1"][:] = 0.25
    before = {k: v.copy() for k, v in params.items()}
    runner = engine(params, arch, SGD(0.1), x, y)
    for v in params.values():
        v[...] = 0
    runner.write_back(params)
    for k in before:
        np.testing.assert_allclose(params[k], before[k], rtol=1e-6, atol=1e-7, err_msg=k)


@pytest.mark.parametrize("batch_size, expect_one", [(32, True), (512, False)])
def test_small_batches_run_the_blas_on_one_thread(batch_size, expect_one):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    x, y = data(n=600)
    arch = Architecture(36, 7, 4)
    params = init_params(arch, np.float32, np.random.default_rng(0))
    runner = engine(params, arch, SGD(0.1), x, y)
    seen = []

    def on_batch(i):
        seen.append({p["num_threads"] for p in threadpoolctl.threadpool_info()
                     if p["user_api"] == "blas"})

    outside = {p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"}
    runner.run_epoch(EpochInputs(np.arange(600), batch_size, [0.1] * -(-600 // batch_size)),
                     on_batch=on_batch)
    assert seen and all(s == ({1} if expect_one else outside) for s in seen)
    after = {p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"}
    assert after == outside  # restored


def test_ties_count_like_argmax_in_both_paths():
    # Blank images with zero biases give every class the same score: a tie that
    # argmax resolves to class 0, so only the samples labelled 0 are hits.
    x, y = data()
    x[:30] = 0
    arch = Architecture(36, 7, 4)
    config = TrainConfig(epochs=1, batch_size=90, learning_rate=0.1)
    results = []
    for fast in (True, False):
        rng = np.random.default_rng(3)
        params = init_params(arch, np.float32, rng)
        history = train(params, x, y, arch=arch, config=config, backend=CPU, rng=rng, fast=fast)
        results.append(history[0]["train_accuracy"])
    assert results[0] == results[1]


@pytest.mark.parametrize("shape", [
    dict(n_hidden=1, n=40, batch_size=16),          # one hidden unit
    dict(n_hidden=7, n=40, batch_size=64),          # a batch larger than the data
    dict(n_hidden=7, n=90, batch_size=1),           # single-sample batches
])
def test_fast_path_matches_at_edge_sizes(shape):
    x, y = data(n=shape["n"])
    arch = Architecture(36, shape["n_hidden"], 4)
    config = TrainConfig(epochs=2, batch_size=shape["batch_size"], learning_rate=0.05,
                         momentum=0.9, shift=1)
    fast, fh = trained(True, x, y, arch, config, np.float64)
    slow, sh = trained(False, x, y, arch, config, np.float64)
    for k in slow:
        np.testing.assert_allclose(fast[k], slow[k], rtol=1e-11, atol=1e-11, err_msg=k)
    assert [r["train_accuracy"] for r in fh] == [r["train_accuracy"] for r in sh]


@pytest.mark.parametrize("input_dtype", [np.float32, np.float64])
def test_float_inputs_with_shift_momentum_and_decay(input_dtype):
    x, y = data(pixels=False)
    x = x.astype(input_dtype)
    arch = Architecture(36, 7, 4)
    config = TrainConfig(epochs=2, batch_size=16, learning_rate=0.1, momentum=0.9,
                         weight_decay=1e-3, shift=1)
    results = []
    for fast in (True, False):
        rng = np.random.default_rng(3)
        params = init_params(arch, np.float32, rng)
        # the data keep their own float dtype; the parameters stay float32
        train(params, x.astype(np.float32), y, arch=arch, config=config, backend=CPU, rng=rng,
              fast=fast)
        results.append(params)
    for k in results[1]:
        np.testing.assert_allclose(results[0][k], results[1][k], rtol=2e-5, atol=2e-6, err_msg=k)
