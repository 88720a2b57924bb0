"""The network's math: shapes, dtypes, gradients, and agreement between backends."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mnist_xp.model import Architecture, forward, init_params, loss_and_grads, probabilities
from mnist_xp.optim import SGD

from helpers_backend import assert_close

COMBOS = list(itertools.product(("relu", "sigmoid"), ("cross_entropy", "squared_error")))


def small_problem(activation="relu", loss="cross_entropy", dtype=np.float64, seed=0, n=7):
    """A tiny network and batch: (arch, host params, x, y)."""
    arch = Architecture(6, 5, 4, activation, loss)
    rng = np.random.default_rng(seed)
    params = init_params(arch, dtype, rng)
    params["b1"] = rng.normal(size=5).astype(dtype)  # non-zero biases exercise their gradients
    params["b2"] = rng.normal(size=4).astype(dtype)
    x = rng.random((n, 6)).astype(dtype)
    y = rng.integers(0, 4, n).astype(np.int64)
    return arch, params, x, y


def test_the_classic_network_has_79510_parameters():
    assert Architecture().n_parameters == 79_510
    assert Architecture(n_hidden=30).n_parameters == 784 * 30 + 30 + 30 * 10 + 10


@pytest.mark.parametrize("bad", [dict(n_hidden=0), dict(activation="tanh"), dict(loss="hinge"),
                                 dict(n_inputs=-1)])
def test_architecture_rejects_bad_settings(bad):
    with pytest.raises(ValueError):
        Architecture(**bad)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_init_is_seeded_and_typed(dtype):
    a = init_params(Architecture(), dtype, np.random.default_rng(1))
    b = init_params(Architecture(), dtype, np.random.default_rng(1))
    c = init_params(Architecture(), dtype, np.random.default_rng(2))
    for k, shape in Architecture().shapes.items():
        assert a[k].shape == shape and a[k].dtype == dtype
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(a["W1"], c["W1"])
    assert not a["b1"].any() and not a["b2"].any()
    # He initialisation for ReLU: std sqrt(2/784) within sampling error
    assert abs(a["W1"].std() - np.sqrt(2 / 784)) < 0.002


@pytest.mark.parametrize("activation, loss", COMBOS)
def test_gradients_match_finite_differences(activation, loss):
    arch, params, x, y = small_problem(activation, loss)
    _, _, grads = loss_and_grads(params, x, y, arch, np)
    eps = 1e-6

    def mean_loss(p):
        return float(loss_and_grads(p, x, y, arch, np)[0]) / x.shape[0]

    for name, value in params.items():
        numeric = np.zeros_like(value)
        for i in np.ndindex(value.shape):
            plus = {k: v.copy() for k, v in params.items()}
            minus = {k: v.copy() for k, v in params.items()}
            plus[name][i] += eps
            minus[name][i] -= eps
            numeric[i] = (mean_loss(plus) - mean_loss(minus)) / (2 * eps)
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-6, atol=1e-9, err_msg=name)


@pytest.mark.parametrize("activation, loss", COMBOS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_backend_computes_the_same_loss_and_gradients(backend, activation, loss, dtype):
    arch, params, x, y = small_problem(activation, loss, dtype)
    ref_loss, ref_correct, ref_grads = loss_and_grads(params, x, y, arch, np)
    dev = {k: backend.asarray(v) for k, v in params.items()}
    with backend.activate():
        got_loss, got_correct, got_grads = loss_and_grads(
            dev, backend.asarray(x), backend.asarray(y), arch, backend.xp)
    assert_close(got_loss, np.asarray(ref_loss, dtype=dtype), backend)
    assert int(backend.to_numpy(got_correct)) == int(ref_correct)
    for k in params:
        assert_close(got_grads[k], ref_grads[k], backend)


@pytest.mark.parametrize("activation, loss", COMBOS)
def test_forward_shapes_dtypes_and_probabilities(backend, activation, loss):
    arch, params, x, _ = small_problem(activation, loss, np.float32)
    dev = {k: backend.asarray(v) for k, v in params.items()}
    xp = backend.xp
    with backend.activate():
        h, z = forward(dev, backend.asarray(x), arch, xp)
        p = probabilities(z, arch, xp)
    assert_close(z, forward(params, x, arch, np)[1], backend)
    assert backend.to_numpy(h).shape == (7, 5)
    p = backend.to_numpy(p)
    assert p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)
    assert (p > 0).all()
    np.testing.assert_array_equal(p.argmax(axis=1), backend.to_numpy(z).argmax(axis=1))


def test_loss_is_finite_for_extreme_scores():
    # Large logits overflow a naive softmax or sigmoid; the RuntimeWarning filter in
    # pyproject.toml turns any overflow warning into a failure here.
    for activation, loss in COMBOS:
        arch, params, x, y = small_problem(activation, loss, np.float32)
        params["W2"] = params["W2"] * np.float32(1e4)
        params["W1"] = params["W1"] * np.float32(1e3)
        total, _, grads = loss_and_grads(params, x * np.float32(100), y, arch, np)
        assert np.isfinite(total)
        assert all(np.isfinite(g).all() for g in grads.values())


def test_correct_count_counts_argmax_hits():
    arch, params, x, y = small_problem()
    _, z = forward(params, x, arch, np)
    _, correct, _ = loss_and_grads(params, x, y, arch, np)
    assert int(correct) == int((z.argmax(axis=1) == y).sum())
    _, all_right, _ = loss_and_grads(params, x, z.argmax(axis=1), arch, np)
    assert int(all_right) == x.shape[0]


# -- optimizer ------------------------------------------------------------------------------

def test_sgd_momentum_follows_its_formula(backend):
    p = {"W": backend.asarray(np.array([[1.0, 2.0]], dtype=np.float32)),
         "b": backend.asarray(np.array([0.5], dtype=np.float32))}
    g = {"W": backend.asarray(np.array([[0.5, -1.0]], dtype=np.float32)),
         "b": backend.asarray(np.array([1.0], dtype=np.float32))}
    opt = SGD(0.1, momentum=0.9, weight_decay=0.01)
    state = opt.init_state(p, backend.xp)
    with backend.activate():
        opt.step(p, g, state)
        opt.step(p, g, state, learning_rate=0.2)
    # weight decay on the matrix only: g_W = g + 0.01 * W (W changes between steps)
    w = np.array([[1.0, 2.0]])
    v = np.zeros_like(w)
    for lr in (0.1, 0.2):
        v = 0.9 * v - lr * (np.array([[0.5, -1.0]]) + 0.01 * w)
        w = w + v
    vb = 0.9 * (-0.1 * 1.0) - 0.2 * 1.0
    assert_close(p["W"], w.astype(np.float32), backend, rtol=1e-6)
    assert_close(p["b"], np.array([0.5 - 0.1 + vb], dtype=np.float32), backend, rtol=1e-6)


def test_nesterov_and_plain_sgd():
    p = {"w": np.array([1.0])}
    SGD(0.5).step(p, {"w": np.array([2.0])}, {})
    assert p["w"][0] == 0.0
    p = {"w": np.array([1.0])}
    opt = SGD(0.1, momentum=0.5, nesterov=True)
    state = opt.init_state(p, np)
    opt.step(p, {"w": np.array([1.0])}, state)
    # v = -0.1; p += 0.5 * v - 0.1 * g = -0.15
    np.testing.assert_allclose(p["w"], [0.85])


@pytest.mark.parametrize("bad", [dict(learning_rate=0), dict(learning_rate=0.1, momentum=1.0),
                                 dict(learning_rate=0.1, momentum=-0.1),
                                 dict(learning_rate=0.1, nesterov=True),
                                 dict(learning_rate=0.1, weight_decay=-1)])
def test_sgd_rejects_bad_settings(bad):
    with pytest.raises(ValueError):
        SGD(**bad)
