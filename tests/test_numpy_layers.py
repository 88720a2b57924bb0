"""The layered NumPy engine computes what the generic engine computes, and resumes exactly."""

from __future__ import annotations

import numpy as np
import pytest
from helpers_data import blobs
from helpers_engines import CPU_FAST_ENGINE, assert_same_training

from mnist_xp.backend import get_backend
from mnist_xp.model import Architecture, init_params
from mnist_xp.optim import make_optimizer
from mnist_xp.training import TrainConfig, TrainingHooks, train
from mnist_xp.training.engines import EngineSetup, NumpyLayersEngine, choose_engine
from mnist_xp.training.teacher import Teacher

CPU = get_backend("cpu")
DEEP = (9, 7)


def data(n=90, pixels=True, seed=0):
    """Separable 6x6 images of 4 classes (`helpers_data.blobs`)."""
    return blobs(n, 6, 4, seed, pixels)


def teacher_for(dtype, temperature=3.0, weight=0.6):
    """A small fixed teacher network (random weights are enough to be distilled from)."""
    arch = Architecture(36, 11, 4)
    params = init_params(arch, dtype, np.random.default_rng(42))
    return Teacher(((params, arch),), temperature, weight)


def run(fast, x, y, arch, config, dtype, seed=3, teacher=None, sample_weight=None,
        hooks=None, resume=None):
    """Train from the same initial weights; (parameters, history, engine names seen)."""
    rng = np.random.default_rng(seed)
    params = init_params(arch, dtype, rng)
    for k in params:
        if k.startswith("b"):
            params[k] += dtype(0.01)  # non-zero biases exercise their path too
    if x.dtype != np.uint8:
        x = x.astype(dtype)
    history = train(params, x, y, arch=arch, config=config, backend=CPU, rng=rng, fast=fast,
                    teacher=teacher, sample_weight=sample_weight, hooks=hooks, resume=resume)
    return params, history


CASES = {
    "relu, cross-entropy": ({}, {}),
    "sigmoid, squared error": (dict(activation="sigmoid", loss="squared_error"),
                               dict(learning_rate=0.5)),
    "dropout": ({}, dict(dropout=0.3)),
    "sigmoid, dropout": (dict(activation="sigmoid"), dict(dropout=0.3, learning_rate=0.3)),
    "teacher": ({}, dict(teacher=True)),
    "teacher, dropout, one hidden layer": (dict(hidden=8), dict(teacher=True, dropout=0.2)),
    "nesterov, decay": ({}, dict(optimizer="nesterov", weight_decay=1e-3)),
    "plain sgd": ({}, dict(momentum=0.0)),
    "momentum, decay, sigmoid": (dict(activation="sigmoid"), dict(weight_decay=1e-2,
                                                                  learning_rate=0.3)),
    "smoothing, weights": ({}, dict(label_smoothing=0.1, weights=True)),
    "warps": ({}, dict(augment={"rotate": 10, "elastic": 2})),
    "shifts, dropout": ({}, dict(shift=1, dropout=0.2)),
    "adam": ({}, dict(optimizer="adam", learning_rate=0.01)),
    "adamw, decay": ({}, dict(optimizer="adamw", learning_rate=0.01, weight_decay=1e-2)),
    "three hidden layers": (dict(hidden=(8, 6, 5)), {}),
}


def case_run(fast, name, dtype, pixels=True):
    """Run case `name` on the fast (layered) or the generic engine."""
    arch_kw, kw = CASES[name]
    kw = dict(kw)
    x, y = data(pixels=pixels)
    arch = Architecture(36, arch_kw.get("hidden", DEEP), 4, arch_kw.get("activation", "relu"),
                        arch_kw.get("loss", "cross_entropy"))
    teacher = teacher_for(dtype) if kw.pop("teacher", False) else None
    weights = None
    if kw.pop("weights", False):
        weights = np.random.default_rng(1).uniform(0.0, 3.0, x.shape[0]).astype(dtype)
    # batch 16 does not divide 90: the last, smaller batch is exercised too
    config = TrainConfig(**{**dict(epochs=2, batch_size=16, learning_rate=0.05, momentum=0.9,
                                   schedule="cosine"), **kw})
    return run(fast, x, y, arch, config, dtype, teacher=teacher, sample_weight=weights)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", CASES)
def test_layered_engine_matches_the_generic_engine(name, dtype):
    fast, fast_history = case_run(True, name, dtype)
    slow, slow_history = case_run(False, name, dtype)
    assert {r["engine"] for r in fast_history} == {"numpy-layers"}
    assert {r["engine"] for r in slow_history} == {"generic"}
    tol = 2e-5 if dtype == np.float32 else 1e-10
    assert_same_training(fast, slow, fast_history, slow_history, dtype, tol)
    start, _ = run(False, *data(), Architecture(36, CASES[name][0].get("hidden", DEEP), 4),
                   TrainConfig(epochs=1, batch_size=16, learning_rate=1e-12), dtype)
    assert not np.allclose(slow["W1"], start["W1"], atol=1e-6)  # it did train


def test_float_inputs_match_the_generic_engine():
    fast, _ = case_run(True, "dropout", np.float32, pixels=False)
    slow, _ = case_run(False, "dropout", np.float32, pixels=False)
    for k in slow:
        np.testing.assert_allclose(fast[k], slow[k], rtol=2e-5, atol=2e-5, err_msg=k)


def setup_for(hidden=DEEP, dropout=0.0, teacher=None, optimizer="sgd", dtype=np.float32):
    x, y = data()
    arch = Architecture(36, hidden, 4)
    params = init_params(arch, dtype, np.random.default_rng(0))
    return EngineSetup(params, arch, make_optimizer(optimizer, 0.1), x, y, CPU,
                       dropout=dropout, teacher=teacher)


@pytest.mark.parametrize("engine_env", [None, "numpy"])
def test_the_chooser_takes_the_layered_engine_for_what_the_others_decline(engine_env,
                                                                          monkeypatch):
    if engine_env is None:
        monkeypatch.delenv("MNIST_XP_ENGINE", raising=False)
    else:
        monkeypatch.setenv("MNIST_XP_ENGINE", engine_env)
    for setup in (setup_for(), setup_for(hidden=8, dropout=0.3),
                  setup_for(hidden=8, teacher=teacher_for(np.float32)),
                  setup_for(optimizer="adam", dtype=np.float64)):
        engine, choice = choose_engine(setup)
        assert isinstance(engine, NumpyLayersEngine) and choice.name == "numpy-layers"
        assert str(choice).startswith("layered NumPy path")
    # the plain one-hidden-layer run stays on the one-layer engines
    engine, choice = choose_engine(setup_for(hidden=8))
    expected = "numpy" if engine_env == "numpy" else CPU_FAST_ENGINE
    assert choice.name == expected
    reason = NumpyLayersEngine.unsupported_reason(setup_for(hidden=8))
    assert reason == "the layered NumPy path takes only deep networks, dropout or teachers"


def test_the_layered_engine_declines_what_it_cannot_train():
    setup = setup_for()
    x16 = EngineSetup(setup.params, setup.arch, setup.optimizer, setup.x.astype(np.int16),
                      setup.y, CPU)
    assert NumpyLayersEngine.unsupported_reason(x16) == "int16 inputs have no layered NumPy path"
    half = {k: v.astype(np.float16) for k, v in setup.params.items()}
    f16 = EngineSetup(half, setup.arch, setup.optimizer, setup.x, setup.y, CPU)
    assert NumpyLayersEngine.unsupported_reason(f16) == "float16 has no layered NumPy path"


@pytest.mark.parametrize("kw", [
    dict(dropout=0.3, teacher=True),
    dict(dropout=0.2, teacher=True, optimizer="nesterov", augment={"rotate": 10}),
    dict(dropout=0.2, optimizer="adam", learning_rate=0.01, shift=1),
])
def test_a_resumed_run_is_bit_for_bit_the_uninterrupted_one(kw):
    kw = dict(kw)
    teacher = teacher_for(np.float32) if kw.pop("teacher", False) else None
    x, y = data()
    arch = Architecture(36, DEEP, 4)

    def config(epochs):
        return TrainConfig(**{**dict(epochs=epochs, batch_size=16, learning_rate=0.05,
                                     momentum=0.9, schedule="constant"), **kw})

    whole, whole_history = run(True, x, y, arch, config(4), np.float32, teacher=teacher)
    states = []
    run(True, x, y, arch, config(2), np.float32, teacher=teacher,
        hooks=TrainingHooks(on_checkpoint=states.append))
    state = states[-1]
    assert state.epoch == 2 and state.engine == "numpy-layers" and state.engine_arrays == {}
    resumed, resumed_history = run(True, x, y, arch, config(4), np.float32, teacher=teacher,
                                   resume=state)
    assert [r["engine"] for r in resumed_history] == ["numpy-layers"] * 4
    for k in whole:
        assert np.array_equal(resumed[k], whole[k]), k
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(resumed_history) == strip(whole_history)


def test_its_checkpoints_are_read_back(tmp_path):
    from mnist_xp.training.checkpoint import data_fingerprint, load_state, save_state

    x, y = data()
    states = []
    run(True, x, y, Architecture(36, DEEP, 4),
        TrainConfig(epochs=1, batch_size=16, learning_rate=0.05, dropout=0.2), np.float32,
        hooks=TrainingHooks(on_checkpoint=states.append))
    save_state(tmp_path / "ck.npz", states[-1], settings={"n_hidden": list(DEEP), "dropout": 0.2},
               classes=np.arange(4), fingerprint=data_fingerprint(x, y))
    loaded, _ = load_state(tmp_path / "ck.npz")
    assert loaded.engine == "numpy-layers"
    for k, v in states[-1].params.items():
        np.testing.assert_array_equal(loaded.params[k], v)


@pytest.mark.parametrize("augment", [None, {"rotate": 10, "elastic": 2}])
def test_an_interrupted_estimator_run_resumes_bit_for_bit(augment):
    from mnist_xp import MLPClassifier
    from mnist_xp.errors import TrainingInterrupted

    x, y = data()

    def fit(resume=None, stop_after=None):
        calls = {"n": 0}

        def should_stop():
            calls["n"] += 1
            return stop_after is not None and calls["n"] >= stop_after

        clf = MLPClassifier(n_hidden=DEEP, epochs=3, batch_size=16, dropout=0.2,
                            augment=augment, device="cpu", random_state=5)
        return clf.fit(x, y, resume=resume, should_stop=should_stop)

    whole = fit()
    assert whole.engine_.name == "numpy-layers"
    with pytest.raises(TrainingInterrupted) as info:
        fit(stop_after=9)  # mid-epoch, in the second one
    resumed = fit(resume=info.value.state)
    for k in whole.params_:
        assert np.array_equal(resumed.params_[k], whole.params_[k]), k
