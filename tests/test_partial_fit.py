"""partial_fit continues a run call by call; warm_start starts fit from the last fit."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from helpers_data import blobs

import mnist_xp


def small(**kw):
    settings = dict(n_hidden=8, batch_size=16, schedule="constant", device="cpu", random_state=0)
    return mnist_xp.MLPClassifier(**{**settings, **kw})


@pytest.mark.parametrize("settings", [dict(), dict(optimizer="adam", learning_rate=0.01),
                                      dict(shift=1), dict(augment={"rotate": 10})])
def test_partial_fit_call_by_call_equals_fit_epoch_by_epoch(settings):
    x, y = blobs()
    whole = small(epochs=3, **settings).fit(x, y)
    parts = small(**settings)
    for _ in range(3):
        parts.partial_fit(x, y, classes=np.arange(4))
    for k in whole.params_:
        np.testing.assert_array_equal(parts.params_[k], whole.params_[k], err_msg=k)
    assert [r["train_loss"] for r in parts.history_] == [r["train_loss"] for r in whole.history_]
    assert str(parts.engine_) == str(whole.engine_)


def test_partial_fit_takes_other_data_each_call_and_survives_pickling():
    x, y = blobs(n=120)
    clf = small().partial_fit(x[:60], y[:60], classes=[0, 1, 2, 3])
    clf = pickle.loads(pickle.dumps(clf))
    clf.partial_fit(x[60:], y[60:])
    assert len(clf.history_) == 2 and clf.score(x, y) > 0.5
    assert clf.classes_.tolist() == [0, 1, 2, 3]


def test_partial_fit_mistakes_are_refused():
    x, y = blobs()
    with pytest.raises(ValueError, match="first call to partial_fit needs classes="):
        small().partial_fit(x, y)
    clf = small().partial_fit(x, y, classes=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="classes not seen"):
        clf.partial_fit(x, np.full(len(y), 7))
    with pytest.raises(ValueError, match="features"):
        clf.partial_fit(x[:, :20], y)


def test_fit_starts_partial_fit_afresh():
    x, y = blobs()
    clf = small().partial_fit(x, y, classes=[0, 1, 2, 3])
    clf.fit(x, y)
    clf.partial_fit(x, y)
    assert len(clf.history_) == clf.epochs + 1


def test_warm_start_continues_from_the_fitted_weights():
    x, y = blobs()
    first = small(epochs=2, warm_start=True).fit(x, y)
    before = {k: v.copy() for k, v in first.params_.items()}
    second = first.set_params(epochs=1).fit(x, y)
    cold = small(epochs=1).fit(x, y)
    assert second.history_[0]["train_loss"] < cold.history_[0]["train_loss"]
    assert not np.array_equal(second.params_["W1"], before["W1"])
    with pytest.raises(ValueError, match="warm_start needs the features and classes"):
        second.fit(x[:, :20], y)


def test_partial_fit_continues_a_loaded_model(tmp_path):
    x, y = blobs()
    path = mnist_xp.save(small(epochs=2).fit(x, y), tmp_path / "m.npz")
    loaded = mnist_xp.load(path, device="cpu")
    before = loaded.score(x, y)
    loaded.partial_fit(x, y)
    assert loaded.score(x, y) >= before - 0.05 and len(loaded.history_) == 1
    with pytest.raises(ValueError, match="classes= differs"):
        loaded.partial_fit(x, y, classes=[0, 1])


def test_partial_fit_after_a_fit_with_a_validation_set_moves_on():
    x, y = blobs()
    clf = small(epochs=3, validation_fraction=0.25).fit(x, y)
    before = clf.params_["W1"].copy()
    clf.partial_fit(x, y)
    assert not np.array_equal(clf.params_["W1"], before)


@pytest.mark.parametrize("change, name", [(dict(optimizer="adam"), "optimizer"),
                                          (dict(n_hidden=9), "n_hidden"),
                                          (dict(momentum=0.0), "momentum")])
def test_partial_fit_refuses_a_changed_optimizer_or_network(change, name):
    x, y = blobs()
    clf = small().partial_fit(x, y, classes=[0, 1, 2, 3])
    clf.set_params(**change)
    with pytest.raises(ValueError, match=f"{name} changed from .* call fit to start over"):
        clf.partial_fit(x, y)
    clf.set_params(learning_rate=0.01, **{k: small().get_params()[k] for k in change})
    clf.partial_fit(x, y)  # the rate may change between calls


def test_partial_fit_refuses_balanced_class_weights_and_a_single_class():
    x, y = blobs()
    with pytest.raises(ValueError, match="'balanced' needs all the data at once"):
        small(class_weight="balanced").partial_fit(x, y, classes=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="holds 1 class"):
        small().partial_fit(x, np.zeros(len(y), int), classes=[0])
