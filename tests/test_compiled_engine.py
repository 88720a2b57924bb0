"""The compiled engine computes what the generic engine computes, and steps aside cleanly.

Where the extension is not built (no compiler at install time, scipy-openblas32
missing), the tests that need it skip with the loader's reason, and the fallback tests
still run: the NumPy engine trains and the engine line says why.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
from helpers_data import blobs
from helpers_engines import LAYERED_DECLINES

from mnist_xp import _cengine
from mnist_xp.backend import get_backend
from mnist_xp.model import Architecture, init_params
from mnist_xp.training import TrainConfig, train
from mnist_xp.training.engines import (
    CompiledEngine,
    EngineSetup,
    EpochInputs,
    NumpyEngine,
    choose_engine,
)
from mnist_xp.optim import make_optimizer

CPU = get_backend("cpu")
EXT, WHY_NOT = _cengine.load()
needs_ext = pytest.mark.skipif(EXT is None, reason=f"compiled engine absent: {WHY_NOT}")


@pytest.fixture(autouse=True)
def no_engine_override(monkeypatch):
    """Each test sees the default engine choice and thread count unless it sets them."""
    monkeypatch.delenv("MNIST_XP_ENGINE", raising=False)
    monkeypatch.delenv("MNIST_XP_THREADS", raising=False)


def data(n=90, side=6, n_classes=4, pixels=True, seed=0):
    """Separable images and labels (`helpers_data.blobs`)."""
    return blobs(n, side, n_classes, seed, pixels)


def trained(fast, x, y, arch, config, dtype=np.float32, seed=3, sample_weight=None):
    """Parameters and history of one run; `fast` lets the chooser pick the engine."""
    rng = np.random.default_rng(seed)
    params = init_params(arch, dtype, rng)
    params["b1"] += dtype(0.01)  # non-zero biases exercise their path too
    history = train(params, x, y, arch=arch, config=config, backend=CPU, rng=rng, fast=fast,
                    sample_weight=sample_weight)
    return params, history


def assert_matches(fast, slow, fast_history, slow_history, tol=2e-5):
    for k in slow:
        assert fast[k].dtype == np.float32 and fast[k].shape == slow[k].shape
        np.testing.assert_allclose(fast[k], slow[k], rtol=tol, atol=tol, err_msg=k)
    for a, b in zip(fast_history, slow_history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=tol)
        assert a["train_accuracy"] == b["train_accuracy"]


LEARNING_RATES = {"sgd": 0.05, "momentum": 0.05, "nesterov": 0.05, "adam": 0.01, "adamw": 0.01}
CASES = list(itertools.product(("relu", "sigmoid"), ("cross_entropy", "squared_error"),
                               tuple(LEARNING_RATES), (0.0, 1e-3)))


def config_for(optimizer, loss="cross_entropy", **kw):
    """A two-epoch cosine schedule; momentum 0 for plain SGD."""
    lr = LEARNING_RATES[optimizer] * (10 if loss == "squared_error" else 1)
    name = "sgd" if optimizer == "momentum" else optimizer
    momentum = 0.0 if optimizer == "sgd" else 0.9
    settings = dict(epochs=2, batch_size=16, learning_rate=lr, optimizer=name,
                    momentum=momentum, schedule="cosine")
    settings.update(kw)
    return TrainConfig(**settings)


@needs_ext
@pytest.mark.parametrize("activation, loss, optimizer, weight_decay", CASES)
def test_compiled_engine_matches_the_generic_path(activation, loss, optimizer, weight_decay):
    x, y = data()
    arch = Architecture(36, 7, 4, activation, loss)
    # batch 16 does not divide 90: the last, smaller batch is exercised too
    config = config_for(optimizer, loss, weight_decay=weight_decay)
    fast, fast_history = trained(True, x, y, arch, config)
    slow, slow_history = trained(False, x, y, arch, config)
    assert {r["engine"] for r in fast_history} == {"compiled"}
    assert {r["engine"] for r in slow_history} == {"generic"}
    assert_matches(fast, slow, fast_history, slow_history)
    assert not np.allclose(slow["W1"], init_params(arch, np.float32, np.random.default_rng(3))["W1"])


AUGMENT = {
    "shift": dict(shift=1),
    "warp": dict(augment={"rotate": 15, "zoom": 0.1, "elastic": 2}),
    "label smoothing": dict(label_smoothing=0.1),
}


@needs_ext
@pytest.mark.parametrize("optimizer", ["momentum", "adamw"])
@pytest.mark.parametrize("extra", AUGMENT)
def test_augmentation_and_smoothing_match_the_generic_path(extra, optimizer):
    x, y = data()
    arch = Architecture(36, 7, 4)
    config = config_for(optimizer, **AUGMENT[extra])
    fast, fh = trained(True, x, y, arch, config)
    slow, sh = trained(False, x, y, arch, config)
    assert fh[0]["engine"] == "compiled"
    assert_matches(fast, slow, fh, sh)


@needs_ext
@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_smoothed_squared_error_matches_the_generic_path(activation):
    x, y = data()
    arch = Architecture(36, 7, 4, activation, "squared_error")
    config = config_for("adam", "squared_error", label_smoothing=0.2, weight_decay=1e-3)
    fast, fh = trained(True, x, y, arch, config)
    slow, sh = trained(False, x, y, arch, config)
    assert fh[0]["engine"] == "compiled"
    assert_matches(fast, slow, fh, sh)


@needs_ext
@pytest.mark.parametrize("loss", ["cross_entropy", "squared_error"])
def test_sample_weights_match_the_generic_path(loss):
    x, y = data()
    weights = np.random.default_rng(1).uniform(0, 3, len(y)).astype(np.float32)
    weights[:20] = 0  # whole zero-weight batches move nothing in either path
    arch = Architecture(36, 7, 4, loss=loss)
    config = config_for("nesterov", loss)
    fast, fh = trained(True, x, y, arch, config, sample_weight=weights)
    slow, sh = trained(False, x, y, arch, config, sample_weight=weights)
    assert fh[0]["engine"] == "compiled"
    assert_matches(fast, slow, fh, sh)


@needs_ext
def test_float32_inputs_are_not_rescaled():
    x, y = data(pixels=False)
    arch = Architecture(36, 7, 4)
    config = config_for("adam", shift=1)
    fast, fh = trained(True, x, y, arch, config)
    slow, sh = trained(False, x, y, arch, config)
    assert fh[0]["engine"] == "compiled"
    assert_matches(fast, slow, fh, sh)


@needs_ext
@pytest.mark.parametrize("threads", ["1", "3"])
@pytest.mark.parametrize("shape", [
    dict(n_hidden=1, n=40, batch_size=16),          # one hidden unit
    dict(n_hidden=7, n=40, batch_size=64),          # a batch larger than the data
    dict(n_hidden=7, n=90, batch_size=1),           # single-sample batches: idle threads
])
def test_edge_sizes_and_thread_counts_match(shape, threads, monkeypatch):
    monkeypatch.setenv("MNIST_XP_THREADS", threads)
    x, y = data(n=shape["n"])
    arch = Architecture(36, shape["n_hidden"], 4)
    config = config_for("momentum", batch_size=shape["batch_size"], shift=1)
    fast, fh = trained(True, x, y, arch, config)
    slow, sh = trained(False, x, y, arch, config)
    assert fh[0]["engine"] == "compiled"
    assert_matches(fast, slow, fh, sh)


@needs_ext
@pytest.mark.parametrize("optimizer", ["momentum", "nesterov", "adam", "adamw"])
def test_several_gradient_blocks_per_thread_match_the_generic_path(optimizer, monkeypatch):
    # 100 inputs on 2 threads: 50 rows of W1 each, a whole gradient block of 32 and a
    # partial one, and the forward pass split by inputs; 13 hidden units fill no vector
    monkeypatch.setenv("MNIST_XP_THREADS", "2")
    x, y = data(side=10)
    arch = Architecture(100, 13, 4)
    config = config_for(optimizer, weight_decay=1e-3)
    fast, fh = trained(True, x, y, arch, config)
    slow, sh = trained(False, x, y, arch, config)
    assert fh[0]["engine"] == "compiled"
    assert_matches(fast, slow, fh, sh)


def setup_for(dtype=np.float32, optimizer="sgd"):
    x, y = data()
    arch = Architecture(36, 7, 4)
    params = init_params(arch, dtype, np.random.default_rng(0))
    return EngineSetup(params, arch, make_optimizer(optimizer, 0.1), x, y, CPU)


@needs_ext
@pytest.mark.parametrize("optimizer", ["sgd", "nesterov", "adam", "adamw"])
def test_the_chooser_takes_the_compiled_engine_and_names_its_threads(optimizer, monkeypatch):
    monkeypatch.setenv("MNIST_XP_THREADS", "3")
    engine, choice = choose_engine(setup_for(optimizer=optimizer))
    assert isinstance(engine, CompiledEngine)
    assert (choice.name, choice.reason, str(choice)) == ("compiled", "", "compiled engine, 3 threads")


def test_the_thread_count_follows_the_machine_by_default():
    assert _cengine.default_threads() >= 1


def test_engine_env_forces_the_numpy_engine_and_says_so(monkeypatch):
    monkeypatch.setenv("MNIST_XP_ENGINE", "numpy")
    engine, choice = choose_engine(setup_for())
    assert isinstance(engine, NumpyEngine)
    assert (choice.name, choice.reason) == ("numpy", "MNIST_XP_ENGINE=numpy")
    # what neither fast engine covers runs generic, with both reasons
    _, choice = choose_engine(setup_for(optimizer="adam"))
    assert (choice.name, choice.reason) == (
        "generic", f"MNIST_XP_ENGINE=numpy; adam has no NumPy fast path yet; {LAYERED_DECLINES}")


def test_without_the_extension_the_numpy_engine_trains_and_says_why(monkeypatch):
    monkeypatch.setattr(_cengine, "_LOADED", (None, "the compiled engine is not built (test)"))
    x, y = data()
    arch = Architecture(36, 7, 4)
    _, history = trained(True, x, y, arch, config_for("momentum", epochs=1))
    assert (history[0]["engine"], history[0]["engine_reason"]) == (
        "numpy", "the compiled engine is not built (test)")


def test_a_failed_import_becomes_a_reason(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def refuse(name, *args, **kw):
        if name == "scipy_openblas32":
            raise ImportError("No module named 'scipy_openblas32'")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", refuse)
    assert _cengine._import() == (
        None, "scipy-openblas32 is not importable (No module named 'scipy_openblas32')")


def test_an_unbuilt_extension_is_named_as_such(monkeypatch):
    import sys
    import types

    # the BLAS wheel "importable", the extension not found
    monkeypatch.setitem(sys.modules, "scipy_openblas32", types.ModuleType("scipy_openblas32"))
    real_find_spec = _cengine.importlib.util.find_spec
    monkeypatch.setattr(_cengine.importlib.util, "find_spec", lambda name, *a: (
        None if name == "mnist_xp._cengine._epoch" else real_find_spec(name, *a)))
    module, why = _cengine._import()
    assert module is None and why.startswith("the compiled engine is not built")
    monkeypatch.setattr(_cengine, "_LOADED", (module, why))
    from mnist_xp.training.engines import engine_summary

    assert f"[absent: {why}]" in engine_summary("numpy")


@needs_ext
def test_float64_falls_back_with_a_reason_and_bad_environment_settings_are_errors(monkeypatch):
    from mnist_xp.errors import SettingError

    engine, choice = choose_engine(setup_for(np.float64))
    assert isinstance(engine, NumpyEngine)
    assert choice.reason == "float64 has no compiled engine (float32 only)"
    # A typo must not quietly train 10-20x slower, nor pass for the default.
    monkeypatch.setenv("MNIST_XP_THREADS", "two")
    with pytest.raises(SettingError, match="MNIST_XP_THREADS must be a positive integer, got "
                                           "'two'; unset it to use every core"):
        choose_engine(setup_for())
    monkeypatch.delenv("MNIST_XP_THREADS")
    monkeypatch.setenv("MNIST_XP_ENGINE", "fast")
    with pytest.raises(SettingError, match="MNIST_XP_ENGINE='fast' is not a choice; set it to "
                                           "numpy to force the NumPy engine, or unset it"):
        choose_engine(setup_for())


@needs_ext
def test_numpys_blas_runs_one_thread_during_compiled_epochs_and_is_restored():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    x, y = data(n=600)
    setup = setup_for()
    setup = EngineSetup(setup.params, setup.arch, setup.optimizer, x, y, CPU)
    engine = CompiledEngine(setup)
    numpy_blas = [p for p in threadpoolctl.threadpool_info()
                  if p["user_api"] == "blas" and "numpy" in p["filepath"]]
    if not numpy_blas:
        pytest.skip("NumPy's BLAS is not visible to threadpoolctl")
    seen = []

    def on_batch(i):
        seen.append({p["num_threads"] for p in threadpoolctl.threadpool_info()
                     if p["filepath"] == numpy_blas[0]["filepath"]})

    engine.run_epoch(EpochInputs(np.arange(600), 8, [0.1] * 75), on_batch=on_batch)
    assert seen and all(s == {1} for s in seen)
    after = {p["num_threads"] for p in threadpoolctl.threadpool_info()
             if p["filepath"] == numpy_blas[0]["filepath"]}
    assert after == {numpy_blas[0]["num_threads"]}


@needs_ext
def test_scoring_between_compiled_epochs_runs_numpys_blas_on_one_thread(monkeypatch):
    """Held-out scoring keeps NumPy's BLAS threads from spinning into the next epoch."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from mnist_xp.training import loop

    numpy_blas = [p for p in threadpoolctl.threadpool_info()
                  if p["user_api"] == "blas" and "numpy" in p["filepath"]]
    if not numpy_blas:
        pytest.skip("NumPy's BLAS is not visible to threadpoolctl")
    seen, count_correct = [], loop.count_correct

    def watched(*args, **kw):
        seen.append({p["num_threads"] for p in threadpoolctl.threadpool_info()
                     if p["filepath"] == numpy_blas[0]["filepath"]})
        return count_correct(*args, **kw)

    monkeypatch.setattr(loop, "count_correct", watched)
    x, y = data(n=120)
    arch = Architecture(x.shape[1], 8, 4)
    rng = np.random.default_rng(0)
    history = train(init_params(arch, np.float32, rng), x, y, arch=arch,
                    config=TrainConfig(epochs=2, batch_size=16), backend=CPU, rng=rng,
                    eval_set=(x, y))
    assert history[0]["engine"] == "compiled"
    assert len(seen) == 2 and all(s == {1} for s in seen)


@needs_ext
def test_progress_and_stop_run_between_calls(monkeypatch):
    from mnist_xp.errors import StopEpoch
    from mnist_xp.training.engines import compiled_engine

    monkeypatch.setattr(compiled_engine, "CHUNK_SAMPLES", 32)  # 4 steps of 8 a call
    x, y = data(n=100)
    setup = setup_for()
    engine = CompiledEngine(EngineSetup(setup.params, setup.arch, setup.optimizer, x, y, CPU))
    seen = []
    epoch = EpochInputs(np.arange(100), 8, [0.1] * 13)
    engine.run_epoch(epoch, on_batch=seen.append)
    assert seen == [4, 8, 12, 13]
    with pytest.raises(StopEpoch) as info:
        engine.run_epoch(epoch, should_stop=lambda: True)
    assert info.value.steps_done == 4


@needs_ext
def test_a_non_finite_loss_names_its_step():
    x, y = data()
    setup = setup_for()
    engine = CompiledEngine(setup)
    setup.params["W2"][0, 0] = np.inf
    loss, _ = engine.run_epoch(EpochInputs(np.arange(90), 16, [0.1] * 6))
    assert not np.isfinite(loss) and engine.first_bad_step() == 0


@needs_ext
def test_optimizer_state_round_trips_exactly():
    setup = setup_for(optimizer="adam")
    engine = CompiledEngine(setup)
    engine.run_epoch(EpochInputs(np.arange(90), 16, [0.01] * 6))
    state = engine.optimizer_state()
    assert int(state["t"]) == 6 and set(state) == {"t"} | {
        f"{g}/{k}" for g in "mv" for k in ("W1", "b1", "W2", "b2")}
    other = CompiledEngine(setup_for(optimizer="adam"))
    other.load_optimizer_state(state)
    for k, v in other.optimizer_state().items():
        np.testing.assert_array_equal(v, state[k], err_msg=k)


def _engine_in_child(_):
    """The engine a forked child trains with (run in a multiprocessing worker)."""
    x, y = data()
    _, history = trained(True, x, y, Architecture(36, 7, 4), config_for("momentum", epochs=1))
    return history[0]["engine"], history[0]["engine_reason"]


@needs_ext
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork() on this platform")
def test_a_child_forked_after_the_engine_ran_trains_on_the_numpy_engine():
    # GNU OpenMP's thread pool does not survive fork(): the child would hang in its
    # first parallel region, so the compiled engine steps aside there with the reason
    import multiprocessing

    x, y = data()
    trained(True, x, y, Architecture(36, 7, 4), config_for("momentum", epochs=1))
    with multiprocessing.get_context("fork").Pool(1) as pool:
        [(engine, reason)] = pool.map_async(_engine_in_child, [0]).get(timeout=120)  # safety net
    assert engine == "numpy"
    assert reason == "forked after the compiled engine ran: OpenMP threads do not survive fork"


@needs_ext
def test_loading_leaves_the_environment_as_it_was(monkeypatch):
    # the spin count is set only while the extension (and GNU OpenMP) loads
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert _cengine._import()[0] is not None
    assert "GOMP_SPINCOUNT" not in os.environ
    monkeypatch.setenv("GOMP_SPINCOUNT", "5")
    assert _cengine._import()[0] is not None
    assert os.environ["GOMP_SPINCOUNT"] == "5"
