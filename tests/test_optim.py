"""Optimizers, learning-rate schedules and label smoothing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from helpers_backend import assert_close
from mnist_xp.model import Architecture, init_params, loss_and_grads
from mnist_xp.optim import OPTIMIZERS, SGD, Adam, make_optimizer
from mnist_xp.training import TrainConfig, learning_rate_at


def adam_reference(p, grads, lr, b1, b2, eps, wd, decoupled, is_matrix):
    """Adam/AdamW written out step by step in float64, textbook form."""
    p, m, v = p.astype(np.float64), np.zeros_like(p, np.float64), np.zeros_like(p, np.float64)
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64)
        if wd and is_matrix:
            if decoupled:
                p = p - lr * wd * p
            else:
                g = g + wd * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


@pytest.mark.parametrize("decoupled", [False, True])
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_adam_matches_the_textbook_update_on_every_backend(backend, decoupled, wd):
    rng = np.random.default_rng(0)
    params = {"W": rng.normal(size=(3, 4)), "b": rng.normal(size=4)}
    steps = [{k: rng.normal(size=v.shape) for k, v in params.items()} for _ in range(5)]
    opt = Adam(0.01, 0.8, 0.95, 1e-6, weight_decay=wd, decoupled=decoupled)
    with backend.activate():
        dev = {k: backend.asarray(v.copy()) for k, v in params.items()}
        state = opt.init_state(dev, backend.xp)
        for g in steps:
            opt.step(dev, {k: backend.asarray(v) for k, v in g.items()}, state)
    for k in params:
        want = adam_reference(params[k], [g[k] for g in steps], 0.01, 0.8, 0.95, 1e-6, wd,
                              decoupled, params[k].ndim == 2)
        assert_close(dev[k], want, backend, rtol=1e-10, atol=1e-12)


def test_adam_moves_each_weight_by_about_the_learning_rate_at_first():
    # the first bias-corrected step is lr * sign(g) (for |g| >> eps)
    p = {"w": np.array([1.0, -2.0, 3.0])}
    opt = Adam(0.05)
    opt.step(p, {"w": np.array([10.0, -0.5, 1e-3])}, opt.init_state(p, np))
    np.testing.assert_allclose(p["w"], [0.95, -1.95, 2.95], rtol=1e-4)


@pytest.mark.parametrize("bad", [dict(learning_rate=0), dict(learning_rate=0.1, beta1=1.0),
                                 dict(learning_rate=0.1, beta2=-0.1), dict(learning_rate=0.1, eps=0),
                                 dict(learning_rate=0.1, weight_decay=-1)])
def test_adam_rejects_bad_settings(bad):
    with pytest.raises(ValueError):
        Adam(**bad)


def test_make_optimizer_names():
    assert make_optimizer("sgd", 0.1, momentum=0.5) == SGD(0.1, 0.5)
    assert make_optimizer("nesterov", 0.1) == SGD(0.1, 0.9, nesterov=True)
    assert make_optimizer("adam", 0.1, weight_decay=0.1) == Adam(0.1, weight_decay=0.1)
    assert make_optimizer("adamw", 0.1).decoupled
    assert set(OPTIMIZERS) == {"sgd", "nesterov", "adam", "adamw"}
    with pytest.raises(ValueError, match="optimizer must be one of"):
        make_optimizer("lbfgs", 0.1)


def test_onecycle_warms_up_to_the_peak_then_anneals():
    config = TrainConfig(epochs=10, learning_rate=0.3, schedule="onecycle")
    rates = [learning_rate_at(config, i, 1000) for i in range(1000)]
    assert rates[0] == pytest.approx(0.3 / 25)
    assert max(rates) == pytest.approx(0.3, rel=1e-3) and int(np.argmax(rates)) == 300
    assert rates[-1] < 0.3 / 1e3
    assert all(a <= b for a, b in zip(rates[:300], rates[1:301]))
    assert all(a >= b for a, b in zip(rates[300:], rates[301:]))


def test_step_schedule_divides_by_ten_at_half_and_three_quarters():
    config = TrainConfig(epochs=4, learning_rate=1.0, schedule="step")
    assert [learning_rate_at(config, i, 100) for i in (0, 49, 50, 74, 75, 99)] == \
        [1.0, 1.0, pytest.approx(0.1), pytest.approx(0.1), pytest.approx(0.01), pytest.approx(0.01)]


@pytest.mark.parametrize("schedule", ["constant", "cosine", "step"])
def test_warmup_ramps_linearly_over_its_epochs(schedule):
    config = TrainConfig(epochs=10, learning_rate=0.5, schedule=schedule, warmup=2)
    no_warmup = TrainConfig(epochs=10, learning_rate=0.5, schedule=schedule)
    # 10 steps per epoch: the first 20 steps ramp, then the schedule goes on unchanged
    for i in range(20):
        assert learning_rate_at(config, i, 100, 10) == pytest.approx(
            learning_rate_at(no_warmup, i, 100, 10) * (i + 1) / 20)
    for i in range(20, 100):
        assert learning_rate_at(config, i, 100, 10) == learning_rate_at(no_warmup, i, 100, 10)


@pytest.mark.parametrize("loss", ["cross_entropy", "squared_error"])
def test_label_smoothing_gradients_match_finite_differences(loss):
    rng = np.random.default_rng(1)
    arch = Architecture(6, 5, 3, "relu", loss)
    params = {k: v.astype(np.float64) for k, v in init_params(arch, np.float64, rng).items()}
    params["b1"] += 0.05
    x = rng.uniform(0, 1, (7, 6))
    y = rng.integers(0, 3, 7)
    _, _, grads = loss_and_grads(params, x, y, arch, np, 0.2)
    eps = 1e-6
    for name, value in params.items():
        numeric = np.zeros_like(value)
        for i in np.ndindex(value.shape):
            hi = {k: v.copy() for k, v in params.items()}
            lo = {k: v.copy() for k, v in params.items()}
            hi[name][i] += eps
            lo[name][i] -= eps
            numeric[i] = (float(loss_and_grads(hi, x, y, arch, np, 0.2)[0])
                          - float(loss_and_grads(lo, x, y, arch, np, 0.2)[0])) / (2 * eps * 7)
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-6, atol=1e-9, err_msg=name)


def test_label_smoothing_raises_the_loss_of_a_confident_right_answer():
    arch = Architecture(2, 3, 4)
    params = {"W1": np.eye(2, 3), "b1": np.zeros(3), "W2": np.zeros((3, 4)), "b2": np.zeros(4)}
    params["b2"][1] = 20.0  # always predicts class 1, very confidently
    x, y = np.ones((1, 2)), np.array([1])
    plain = float(loss_and_grads(params, x, y, arch, np)[0])
    smooth = float(loss_and_grads(params, x, y, arch, np, 0.1)[0])
    assert plain < 1e-6
    # the smoothed target puts 0.1/4 on each class: -sum(t log p) ~ 0.075 * 20
    assert smooth == pytest.approx(0.075 * 20, rel=0.01)
    assert math.isfinite(smooth)
