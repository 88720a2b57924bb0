"""Deeper networks and dropout: layers, gradients on every backend, masks, files."""

from __future__ import annotations

import numpy as np
import pytest

import mnist_xp
from mnist_xp.model import (
    Architecture,
    dropout_mask,
    forward,
    init_params,
    loss_and_grads,
)

from helpers_data import blobs


def deep_problem(activation="relu", loss="cross_entropy", dtype=np.float64, seed=0, n=7,
                 hidden=(5, 4)):
    """A tiny deep network and batch, with non-zero biases: (arch, params, x, y)."""
    arch = Architecture(6, hidden, 3, activation, loss)
    rng = np.random.default_rng(seed)
    params = init_params(arch, dtype, rng)
    for k, shape in arch.shapes.items():
        if k.startswith("b"):
            params[k] = rng.normal(size=shape).astype(dtype)
    x = rng.random((n, 6)).astype(dtype)
    y = rng.integers(0, 3, n).astype(np.int64)
    return arch, params, x, y


def numeric_gradients(loss_fn, params, xp, to_host, eps=1e-6):
    """Central finite differences of `loss_fn(params)` for every parameter element."""
    out = {}
    for name, value in params.items():
        host = to_host(value)
        numeric = np.zeros_like(host)
        for i in np.ndindex(host.shape):
            shifted = []
            for sign in (1, -1):
                h = host.copy()
                h[i] += sign * eps
                p = dict(params)
                p[name] = xp.asarray(h)
                shifted.append(loss_fn(p))
            numeric[i] = (shifted[0] - shifted[1]) / (2 * eps)
        out[name] = numeric
    return out


def test_layer_sizes_names_and_parameter_count():
    arch = Architecture(784, (800, 800), 10)
    assert arch.layer_sizes == (784, 800, 800, 10) and arch.label == "784-800-800-10"
    assert arch.param_names == ("W1", "b1", "W2", "b2", "W3", "b3")
    assert arch.n_parameters == 784 * 800 + 800 + 800 * 800 + 800 + 800 * 10 + 10
    # one width given as a sequence is the one-hidden-layer network
    assert Architecture(784, [100], 10) == Architecture()
    assert Architecture(784, [100], 10).n_hidden == 100
    with pytest.raises(ValueError, match="positive integer"):
        Architecture(784, (800, 0), 10)
    with pytest.raises(ValueError, match="at most 8 hidden layers"):
        Architecture(784, (4,) * 9, 10)


def test_a_one_hidden_layer_network_starts_from_the_same_weights_as_before():
    # the draw order of the one-hidden-layer network is unchanged by the deep code
    rng = np.random.default_rng(3)
    w1 = rng.standard_normal((784, 100)) * (np.sqrt(2.0) / np.sqrt(784))
    w2 = rng.standard_normal((100, 10)) * (1.0 / np.sqrt(100))
    got = init_params(Architecture(), np.float32, np.random.default_rng(3))
    np.testing.assert_array_equal(got["W1"], w1.astype(np.float32))
    np.testing.assert_array_equal(got["W2"], w2.astype(np.float32))


@pytest.mark.parametrize("activation, loss", [("relu", "cross_entropy"),
                                              ("sigmoid", "squared_error"),
                                              ("sigmoid", "cross_entropy")])
@pytest.mark.parametrize("with_dropout", [False, True])
def test_deep_gradients_match_finite_differences_on_every_backend(backend, activation, loss,
                                                                  with_dropout):
    arch, params, x, y = deep_problem(activation, loss, hidden=(5, 4, 3))
    xp = backend.xp
    masks = None
    with backend.activate():
        dev = {k: backend.asarray(v) for k, v in params.items()}
        xd, yd = backend.asarray(x), backend.asarray(y)
        if with_dropout:
            masks = [dropout_mask(7, 2, i + 1, (7, w), 0.4, xp)
                     for i, w in enumerate(arch.hidden_sizes)]
        _, _, grads = loss_and_grads(dev, xd, yd, arch, xp, masks=masks)

        def mean_loss(p):
            total = loss_and_grads(p, xd, yd, arch, xp, masks=masks)[0]
            return float(backend.to_numpy(total)) / x.shape[0]

        numeric = numeric_gradients(mean_loss, dev, backend, backend.to_numpy)
    for name in arch.param_names:
        np.testing.assert_allclose(backend.to_numpy(grads[name]), numeric[name], rtol=1e-6,
                                   atol=1e-9, err_msg=name)


def test_dropout_masks_are_the_same_on_every_backend_and_differ_by_step_layer_and_key(backend):
    xp = backend.xp
    with backend.activate():
        got = backend.to_numpy(dropout_mask(123, 4, 1, (64, 50), 0.25, xp))
    ref = dropout_mask(123, 4, 1, (64, 50), 0.25, np)
    np.testing.assert_array_equal(got, ref)
    assert set(np.unique(ref)) == {0.0, np.float32(1 / 0.75)}
    assert abs((ref == 0).mean() - 0.25) < 0.03  # 3,200 draws: a few standard errors
    for other in (dropout_mask(124, 4, 1, (64, 50), 0.25, np),
                  dropout_mask(123, 5, 1, (64, 50), 0.25, np),
                  dropout_mask(123, 4, 2, (64, 50), 0.25, np)):
        assert 0.5 < (other == ref).mean() < 0.8  # independent draws agree ~62.5% of the time


def test_dropout_is_off_at_evaluation_and_changes_training():
    x, y = blobs(n=120)
    plain = mnist_xp.MLPClassifier((16, 8), epochs=3, batch_size=16, device="cpu",
                                   random_state=0).fit(x, y)
    dropped = mnist_xp.MLPClassifier((16, 8), epochs=3, batch_size=16, device="cpu",
                                     random_state=0, dropout=0.5).fit(x, y)
    assert not np.allclose(plain.params_["W1"], dropped.params_["W1"])
    # evaluation uses every unit: predict_proba is the plain forward pass
    arch = dropped._arch()
    z = forward({k: np.asarray(v) for k, v in dropped.params_.items()},
                x.astype(np.float32) / 255, arch, np)[1]
    e = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(dropped.predict_proba(x), e / e.sum(axis=1, keepdims=True),
                               rtol=1e-5)


def test_a_deep_model_file_round_trips_and_records_its_layers(tmp_path):
    x, y = blobs(n=120)
    clf = mnist_xp.MLPClassifier((12, 7), epochs=2, batch_size=16, device="cpu",
                                 random_state=0, dropout=0.2).fit(x, y)
    path = mnist_xp.save(clf, tmp_path / "deep.npz")
    back = mnist_xp.load(path, device="cpu")
    assert back.n_hidden in ((12, 7), [12, 7])
    assert back._arch().label == "36-12-7-4"
    assert mnist_xp.read_metadata(path)["architecture"]["n_hidden"] == [12, 7]
    np.testing.assert_array_equal(back.predict_proba(x), clf.predict_proba(x))


def test_a_model_file_missing_a_layer_is_refused_with_its_name(tmp_path):
    x, y = blobs(n=120)
    clf = mnist_xp.MLPClassifier((12, 7), epochs=1, batch_size=16, device="cpu",
                                 random_state=0).fit(x, y)
    path = mnist_xp.save(clf, tmp_path / "deep.npz")
    with np.load(path) as f:
        members = {k: f[k] for k in f.files if k != "W3"}
    np.savez(tmp_path / "cut.npz", **members)
    with pytest.raises(mnist_xp.ModelFileError, match="W3 is missing"):
        mnist_xp.load(tmp_path / "cut.npz")
