"""Sample and class weights: the weighted loss is the loss of duplicated samples, on
every engine (the CUDA kernels' weighting is checked in tests/test_cuda_engine.py)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers_backend import assert_close
from helpers_engines import CPU_ENGINES, use_engine
from helpers_data import blobs
from test_engines import cuda_standin, setup_for

import mnist_xp
from mnist_xp.backend import Backend, get_backend
from mnist_xp.model import Architecture, init_params, loss_and_grads
from mnist_xp.training import TrainConfig, TrainingHooks, train
from mnist_xp.training.engines import CudaEngine

CPU = get_backend("cpu")


@pytest.mark.parametrize("loss", ["cross_entropy", "squared_error"])
def test_integer_weights_give_the_loss_and_gradients_of_duplicated_samples(backend, loss):
    x, y = blobs(n=12)
    x = (x / 255).astype(np.float64)
    arch = Architecture(36, 5, 4, "relu", loss)
    params = init_params(arch, np.float64, np.random.default_rng(0))
    w = np.array([1, 2, 0, 3, 1, 1, 2, 1, 0, 1, 4, 1], np.float64)
    rows = np.repeat(np.arange(12), w.astype(int))  # each sample k times
    dev = {k: backend.asarray(v) for k, v in params.items()}
    xp = backend.xp
    weighted = loss_and_grads(dev, backend.asarray(x), backend.asarray(y), arch, xp,
                              weights=backend.asarray(w))
    copies = loss_and_grads(dev, backend.asarray(x[rows]), backend.asarray(y[rows]), arch, xp)
    assert_close(weighted[0], backend.to_numpy(copies[0]), backend)
    for k in params:
        assert_close(weighted[2][k], backend.to_numpy(copies[2][k]), backend)


def run(x, y, weights, fast, **config):
    arch = Architecture(36, 7, 4)
    rng = np.random.default_rng(3)
    params = init_params(arch, np.float32, rng)
    seen = []
    history = train(params, x, y, arch=arch, config=TrainConfig(**config), backend=CPU, rng=rng,
                    fast=fast, sample_weight=weights, hooks=TrainingHooks(on_engine=seen.append))
    return params, history, seen[0]


@pytest.mark.parametrize("config", [
    dict(epochs=2, batch_size=16, learning_rate=0.05, momentum=0.9),
    dict(epochs=2, batch_size=16, learning_rate=0.05, momentum=0.0, weight_decay=1e-3, shift=1),
    dict(epochs=2, batch_size=16, learning_rate=0.05, augment=dict(rotate=10), warp_bank=8),
])
@pytest.mark.parametrize("engine", CPU_ENGINES)
def test_each_cpu_engine_weighs_samples_as_the_generic_engine_does(config, engine, monkeypatch):
    use_engine(monkeypatch, engine)
    x, y = blobs()
    w = np.random.default_rng(0).uniform(0, 3, len(y)).astype(np.float32)
    fast, fast_h, fast_choice = run(x, y, w, True, **config)
    slow, slow_h, slow_choice = run(x, y, w, False, **config)
    assert (fast_choice.name, slow_choice.name) == (engine, "generic")
    for k in slow:
        np.testing.assert_allclose(fast[k], slow[k], rtol=2e-5, atol=2e-6, err_msg=k)
    for a, b in zip(fast_h, slow_h):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=2e-5)
    unweighted, _, _ = run(x, y, None, True, **config)
    assert not np.allclose(unweighted["W1"], fast["W1"])  # the weights did something


def test_the_cuda_kernels_take_weighted_runs():
    gpu = Backend("cupy", cuda_standin(), "cuda:0")
    setup = setup_for(gpu)
    import dataclasses

    weighted = dataclasses.replace(setup, sample_weight=gpu.asarray(np.ones(len(setup.y))))
    assert CudaEngine.unsupported_reason(weighted) is None


def small(**kw):
    return mnist_xp.MLPClassifier(8, epochs=2, batch_size=16, device="cpu", random_state=0, **kw)


def test_balanced_class_weight_is_the_same_as_its_sample_weights():
    x, y = blobs()
    y = np.where(y == 3, 2, y)  # unbalanced: class 2 has twice the samples
    counts = np.bincount(y)
    balanced = len(y) / (3 * counts)
    a = small(class_weight="balanced").fit(x, y)
    b = small().fit(x, y, sample_weight=balanced[y])
    for k in a.params_:
        np.testing.assert_array_equal(a.params_[k], b.params_[k], err_msg=k)
    c = small(class_weight={0: 1.0, 1: 1.0, 2: 0.5}).fit(x, y, sample_weight=np.full(len(y), 2.0))
    d = small().fit(x, y, sample_weight=np.where(y == 2, 1.0, 2.0))
    for k in c.params_:
        np.testing.assert_array_equal(c.params_[k], d.params_[k], err_msg=k)


def test_weights_of_one_train_like_no_weights():
    x, y = blobs()
    a = small().fit(x, y)
    b = small().fit(x, y, sample_weight=np.ones(len(y)))
    for k in a.params_:
        np.testing.assert_allclose(a.params_[k], b.params_[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kw, message", [
    (dict(sample_weight=np.ones(3)), r"sample_weight must have shape \(90,\)"),
    (dict(sample_weight=-np.ones(90)), "finite and >= 0"),
    (dict(sample_weight=np.zeros(90)), "sample weights are all zero"),
])
def test_bad_sample_weights_are_refused(kw, message):
    x, y = blobs()
    with pytest.raises(ValueError, match=message):
        small().fit(x, y, **kw)


@pytest.mark.parametrize("class_weight, message", [
    ({7: 2.0}, r"class_weight names labels that y lacks: \[7\]"),
    ("even", "must be 'balanced', or a dict"),
    ({0: -1.0}, "must be 'balanced', or a dict"),
])
def test_bad_class_weights_are_refused(class_weight, message):
    x, y = blobs()
    with pytest.raises(ValueError, match=message):
        small(class_weight=class_weight).fit(x, y)


def test_a_class_weight_dict_survives_saving(tmp_path):
    x, y = blobs()
    clf = small(class_weight={1: 2.0, np.int64(3): 0.5}).fit(x, y)
    loaded = mnist_xp.load(mnist_xp.save(clf, tmp_path / "m.npz"), device="cpu")
    assert loaded.class_weight == {1: 2.0, 3: 0.5}
    assert all(type(k) is int for k in loaded.class_weight)
