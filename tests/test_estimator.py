"""MLPClassifier: scikit-learn conventions, devices, input and output libraries."""

from __future__ import annotations

import copy
import pickle
import warnings

import numpy as np
import pytest

import mnist_xp.backend as backend_module
from mnist_xp import MLPClassifier, PRESETS, get_backend, load_mnist
from mnist_xp.errors import DeviceFallbackWarning, MnistXPError, NotFittedError

from helpers_backend import assert_close


def blobs(n=240, n_features=16, n_classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, size=(n_classes, n_features))
    y = rng.integers(0, n_classes, n)
    x = (centres[y] + rng.normal(0, 1, size=(n, n_features))).astype(np.float64)
    return x, y


def small(**kw):
    """A fast estimator for small tabular data (no image shifts)."""
    settings = dict(n_hidden=16, epochs=5, batch_size=32, shift=0, device="cpu", random_state=0)
    settings.update(kw)
    return MLPClassifier(**settings)


def test_constructor_only_stores_its_arguments():
    clf = MLPClassifier(n_hidden=-5, activation="nonsense", device="gpu")
    assert clf.get_params()["n_hidden"] == -5 and clf.device == "gpu"
    assert not hasattr(clf, "classes_")
    with pytest.raises((ValueError, MnistXPError)):
        clf.fit(*blobs())


def test_get_and_set_params_round_trip():
    clf = MLPClassifier()
    params = clf.get_params()
    assert params["n_hidden"] == 100 and params["activation"] == "relu"
    assert clf.set_params(n_hidden=7, epochs=2) is clf
    assert clf.n_hidden == 7 and clf.epochs == 2
    with pytest.raises(ValueError, match="invalid parameter 'hiden'"):
        clf.set_params(hiden=3)
    assert repr(MLPClassifier(n_hidden=50)) == "MLPClassifier(n_hidden=50)"


def test_defaults_are_the_default_preset_without_image_shifts_or_min_steps():
    # the estimator's epochs are exactly what it trains (scikit-learn's max_iter is too);
    # the preset's min_steps keeps MNIST's length of training on smaller data
    clf = MLPClassifier()
    for name, value in PRESETS["default"].items():
        assert getattr(clf, name) == (0 if name in ("shift", "min_steps") else value), name
    assert MLPClassifier.from_preset("default").shift == 1
    classic = MLPClassifier.from_preset("classic", epochs=3)
    assert (classic.activation, classic.loss, classic.momentum, classic.epochs) == (
        "sigmoid", "squared_error", 0.0, 3)
    with pytest.raises(ValueError, match="unknown preset"):
        MLPClassifier.from_preset("fancy")


def test_fit_predict_score_on_arbitrary_labels():
    x, y = blobs()
    labels = np.array(["cat", "dog", "eel"])[y]
    clf = small().fit(x, labels)
    np.testing.assert_array_equal(clf.classes_, ["cat", "dog", "eel"])
    assert clf.n_features_in_ == 16
    assert clf.params_["W1"].shape == (16, 16) and clf.params_["W2"].shape == (16, 3)
    pred = clf.predict(x)
    assert pred.dtype == labels.dtype and set(pred) <= {"cat", "dog", "eel"}
    assert clf.score(x, labels) > 0.95
    assert clf.score(x, labels) == np.mean(pred == labels)
    proba = clf.predict_proba(x)
    assert proba.shape == (240, 3) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], pred)
    assert len(clf.history_) == 5


def test_unfitted_model_says_so():
    with pytest.raises(NotFittedError, match="not fitted"):
        MLPClassifier().predict(np.zeros((1, 4)))
    # scikit-learn's NotFittedError has the same two bases
    assert issubclass(NotFittedError, AttributeError) and issubclass(NotFittedError, ValueError)


def test_defaults_suit_tabular_data_whose_width_is_a_perfect_square():
    # 4 features would be a "2x2 image": the default must not shift them around.
    x, y = blobs(n_features=4)
    assert MLPClassifier(n_hidden=16, device="cpu", random_state=0).fit(x, y).score(x, y) > 0.95


def test_a_failed_fit_leaves_the_estimator_as_it_was():
    x, y = blobs()
    clf = small()
    with pytest.raises(ValueError, match="not seen in fit"):
        clf.fit(x, y, eval_set=(x, y + 10))
    assert not hasattr(clf, "params_") and not hasattr(clf, "classes_")
    clf.fit(x, y)
    before = clf.predict_proba(x)
    with pytest.raises(ValueError, match="holds 1 class"):
        clf.fit(x, np.zeros(len(x)))
    np.testing.assert_array_equal(clf.classes_, [0, 1, 2])
    np.testing.assert_array_equal(clf.predict_proba(x), before)


@pytest.mark.parametrize("bad, message", [
    (lambda x, y: (np.where(x > 2, np.nan, x), y), "NaN or infinite"),
    (lambda x, y: (np.where(x > 2, np.inf, x), y), "NaN or infinite"),
    (lambda x, y: (x, y + 0.5), "non-integral"),
    (lambda x, y: (x.astype(str), y), "not compatible with arrays of bytes/strings"),
])
def test_fit_refuses_unusable_values(bad, message):
    with pytest.raises(ValueError, match=message):
        small().fit(*bad(*blobs()))


def test_integral_float_labels_are_classes():
    x, y = blobs()
    clf = small().fit(x, y.astype(np.float64))
    np.testing.assert_array_equal(clf.classes_, [0.0, 1.0, 2.0])


def test_score_checks_the_shape_of_y():
    x, y = blobs()
    clf = small().fit(x, y)
    with pytest.raises(ValueError, match="y must have shape"):
        clf.score(x, y[:-1])
    # a column of labels is flattened, with scikit-learn's warning where it is installed
    assert clf.score(x, y[:, None]) == clf.score(x, y)


def test_score_weighs_samples():
    x, y = blobs()
    clf = small().fit(x, y)
    right = clf.predict(x) == y
    assert clf.score(x, y, sample_weight=right.astype(float)) == 1.0
    if not right.all():
        assert clf.score(x, y, sample_weight=(~right).astype(float)) == 0.0


@pytest.mark.parametrize("bad_x", [np.zeros((5,)), np.zeros((0, 4)), np.zeros((2, 3, 4))])
def test_fit_rejects_badly_shaped_inputs(bad_x):
    with pytest.raises(ValueError):
        small().fit(bad_x, np.zeros(len(bad_x)))


def test_predict_checks_the_feature_count_and_fit_the_label_count():
    x, y = blobs()
    clf = small().fit(x, y)
    with pytest.raises(ValueError, match="is expecting 16 features as input"):
        clf.predict(x[:, :5])
    with pytest.raises(ValueError, match="y must have shape"):
        small().fit(x, y[:-1])
    with pytest.raises(ValueError, match="holds 1 class"):
        small().fit(x, np.zeros(len(x)))


def test_float64_dtype_is_used_throughout():
    x, y = blobs()
    clf = small(dtype="float64").fit(x, y)
    assert all(v.dtype == np.float64 for v in clf.params_.values())
    assert clf.predict_proba(x).dtype == np.float64


def test_same_random_state_same_model():
    x, y = blobs()
    a, b = small().fit(x, y), small().fit(x, y)
    np.testing.assert_array_equal(a.params_["W1"], b.params_["W1"])
    c = small(random_state=1).fit(x, y)
    assert not np.array_equal(a.params_["W1"], c.params_["W1"])


def test_every_backend_gives_the_same_model_and_answers_in_the_callers_library(backend):
    x, y = blobs()
    ref = small().fit(x, y)
    clf = small(device=backend).fit(backend.asarray(x), backend.asarray(y))
    for k, v in ref.params_.items():
        assert_close(clf.params_[k], v, backend, rtol=1e-4, atol=1e-5)
    x_dev = backend.asarray(x)
    assert_close(clf.predict_proba(x_dev), ref.predict_proba(x), backend, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(backend.to_numpy(clf.predict(x_dev)), ref.predict(x))
    # NumPy in, NumPy out, wherever the model lives
    assert isinstance(clf.predict(x), np.ndarray)
    assert isinstance(clf.predict_proba(x), np.ndarray)


def test_unusable_cuda_device_falls_back_with_a_warning(monkeypatch):
    def missing():
        raise ModuleNotFoundError("No module named 'cupy'", name="cupy")

    monkeypatch.setattr(backend_module, "_import_cupy", missing)
    x, y = blobs()
    with pytest.warns(DeviceFallbackWarning, match="CuPy is not installed"):
        clf = small(device="cuda").fit(x, y)
    assert clf.backend_.name == "numpy"


def test_pickle_round_trip_keeps_predictions_and_backend(backend):
    x, y = blobs()
    clf = small(device=backend).fit(x, y)
    clone = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(clone.predict_proba(x), clf.predict_proba(x))
    assert clone.backend_ == clf.backend_
    assert clone.device == backend  # a Backend given as device survives too
    assert copy.deepcopy(clf).backend_ == clf.backend_


def test_eval_set_fills_test_accuracy_and_on_epoch_sees_every_record():
    x, y = blobs()
    seen = []
    clf = small().fit(x[:200], y[:200], eval_set=(x[200:], y[200:]), on_epoch=seen.append)
    assert seen == clf.history_
    assert all(r["test_accuracy"] is not None for r in seen)
    assert seen[-1]["test_accuracy"] == clf.score(x[200:], y[200:])


def test_verbose_prints_one_line_per_epoch(capsys):
    small(verbose=True, epochs=3).fit(*blobs())
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in out] == [["epoch", "1"], ["epoch", "2"], ["epoch", "3"]]


# -- scikit-learn interoperability -------------------------------------------------------------

sklearn = pytest.importorskip("sklearn", reason="scikit-learn is not installed")


def test_sklearn_clone_pipeline_and_cross_validation():
    from sklearn.base import clone, is_classifier
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = blobs()
    clf = small(device=get_backend("cpu"))
    assert is_classifier(clf)
    twin = clone(clf)
    assert twin is not clf and twin.get_params() == clf.get_params()
    pipe = make_pipeline(StandardScaler(), small()).fit(x, y)
    assert pipe.score(x, y) > 0.95
    scores = cross_val_score(small(), x, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.9
    search = GridSearchCV(small(), {"n_hidden": [4, 16]}, cv=2).fit(x, y)
    assert search.best_params_["n_hidden"] in (4, 16)


def test_sklearn_check_is_fitted():
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    with pytest.raises(NotFittedError):
        check_is_fitted(small())
    check_is_fitted(small().fit(*blobs()))


# -- the real thing ---------------------------------------------------------------------------

@pytest.mark.slow
def test_default_settings_reach_96_percent_on_the_bundled_subset():
    data = load_mnist("bundled")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf = MLPClassifier.from_preset("default", device="cpu", random_state=0)
        clf.fit(data.x_train.reshape(-1, 784), data.y_train)
    assert clf.score(data.x_test.reshape(-1, 784), data.y_test) >= 0.96


def test_validation_fraction_holds_out_data_and_keeps_the_best_epoch():
    x, y = blobs()
    clf = small(epochs=6, validation_fraction=0.25).fit(x, y)
    h = clf.history_
    assert all(r["val_accuracy"] is not None for r in h)
    best = max(r["val_accuracy"] for r in h)
    assert h[clf.best_epoch_ - 1]["val_accuracy"] == best
    assert [r["epoch"] for r in h if r.get("best")] == [clf.best_epoch_]
    # the same seed holds out the same rows, so refitting gives the same model
    again = small(epochs=6, validation_fraction=0.25).fit(x, y)
    np.testing.assert_array_equal(clf.params_["W1"], again.params_["W1"])


def test_without_validation_the_last_epoch_is_kept():
    clf = small(epochs=3).fit(*blobs())
    assert clf.best_epoch_ == 3 and clf.history_[-1]["val_accuracy"] is None


@pytest.mark.parametrize("kw, match", [
    (dict(validation_fraction=1.0), r"validation_fraction=1\.0: must be at least 0 and less than 1"),
    (dict(validation_fraction=0.0001), "at least one of each"),
    (dict(augment={"spin": 1}), "unknown distortion settings"),
    (dict(optimizer="rmsprop"), "optimizer='rmsprop': must be one of sgd, nesterov, adam, adamw"),
    (dict(epochs=0), "epochs=0: must be at least 1"),
    (dict(learning_rate=float("nan")), "learning_rate=nan: must be a finite number"),
    (dict(augment={"rotate": 200}), "rotate=200: must be at least 0 and at most 180"),
    (dict(warmup=20), "warmup=20 is longer than the run"),
])
def test_bad_training_settings_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        small(**kw).fit(*blobs())


def test_best_preset_distorts_images():
    assert PRESETS["best"]["augment"]["elastic"] > 0 and PRESETS["best"]["shift"] == 0
    clf = MLPClassifier.from_preset("best", epochs=4, device="cpu", random_state=0)
    d = load_mnist("bundled")
    clf.fit(d.x_train[:2000].reshape(2000, -1), d.y_train[:2000])
    assert clf.score(d.x_test[:500].reshape(500, -1), d.y_test[:500]) > 0.8


def pixel_blobs():
    """Separable uint8 'images' of 36 pixels, with int64 labels."""
    from helpers_data import blobs as image_blobs

    return image_blobs()


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64, np.int16])
def test_pixels_in_another_dtype_than_uint8_are_warned_about_in_fit_and_predict(dtype):
    from mnist_xp.errors import PixelScaleWarning

    x, y = pixel_blobs()
    with pytest.warns(PixelScaleWarning, match=r"divide by 255"):
        clf = small(epochs=1).fit(x.astype(dtype), y)
    with pytest.warns(PixelScaleWarning, match=r"pass uint8"):
        clf.predict(x.astype(dtype))


@pytest.mark.parametrize("make", [lambda x: x, lambda x: x / 255.0,
                                  lambda x: (x.astype(np.float64) - 128) / 50])
def test_pixels_as_uint8_scaled_floats_or_other_data_are_not_warned_about(make):
    import warnings

    from mnist_xp.errors import PixelScaleWarning

    x, y = pixel_blobs()
    with warnings.catch_warnings():
        warnings.simplefilter("error", PixelScaleWarning)
        small(epochs=1).fit(make(x), y).predict(make(x))


def test_an_eval_set_drives_early_stopping_when_there_is_no_validation_fraction():
    x, y = blobs(n=400)
    xv, yv = blobs(n=200, seed=1)
    clf = small(epochs=40, learning_rate=0.5, n_iter_no_change=2).fit(x, y, eval_set=(xv, yv))
    history = clf.history_
    assert len(history) < 40  # it stopped early
    accs = [r["val_accuracy"] for r in history]
    assert all(r["test_accuracy"] is None for r in history)
    assert clf.best_epoch_ == int(np.argmax(accs)) + 1
    assert len(history) == clf.best_epoch_ + 2
    # the kept weights are the best epoch's: scoring the eval set again gives its accuracy
    assert clf.score(xv, yv) == pytest.approx(accs[clf.best_epoch_ - 1])


def test_with_a_validation_fraction_the_eval_set_is_only_reported():
    x, y = blobs(n=400)
    xv, yv = blobs(n=200, seed=1)
    clf = small(epochs=6, n_iter_no_change=2, validation_fraction=0.25).fit(
        x, y, eval_set=(xv, yv))
    assert all(r["test_accuracy"] is not None and r["val_accuracy"] is not None
               for r in clf.history_)


def test_without_scikit_learn_other_inputs_get_our_own_checks(monkeypatch):
    from mnist_xp import validation
    from mnist_xp.errors import NotFittedError

    monkeypatch.setattr(validation, "_sklearn_validation", lambda: None)
    x, y = blobs()
    clf = small().fit(x.tolist(), y.tolist())  # lists still work, through np.asarray
    assert clf.score(x, y) > 0.9
    for bad, message in ((x[:, 0], "reshape your data"), (x[:0], "at least 1 sample"),
                         (x.astype(str), "must hold real numbers")):
        with pytest.raises(ValueError, match=message):
            small().fit(bad, y[:len(bad)])
    with pytest.raises(NotFittedError) as info:
        small().predict(x)
    assert type(info.value) is NotFittedError


def test_eval_and_test_sets_check_their_labels():
    x, y = blobs(n=200)
    xv, yv = blobs(n=100, seed=1)
    clf = small(epochs=1).fit(x, y, eval_set=(xv, yv[:, None]))  # a column: flattened
    assert 0 <= clf.history_[0]["test_accuracy"] <= 1
    with pytest.raises(ValueError, match=r"y must have shape \(100,\)"):
        small(epochs=1).fit(x, y, eval_set=(xv, yv[:10]))
    with pytest.raises(ValueError, match="one \\(X, y\\) pair"):
        small(epochs=1).fit(x, y, eval_set=[(xv, yv), (xv, yv)])


def test_a_test_set_is_only_reported_even_with_patience():
    x, y = blobs(n=200)
    xt, yt = blobs(n=100, seed=1)
    clf = small(epochs=6, n_iter_no_change=2).fit(x, y, test_set=(xt, yt))
    assert all(r["val_accuracy"] is None and r["test_accuracy"] is not None
               for r in clf.history_)


def test_unfitted_errors_pickle():
    import pickle

    with pytest.raises(Exception) as info:
        small().predict(np.zeros((1, 16)))
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is type(info.value) and str(again) == str(info.value)


def test_weights_left_all_zero_by_the_validation_split_are_refused():
    x, y = blobs(n=100)
    weights = np.zeros(100)
    weights[0] = 1.0
    clf = small(epochs=1, validation_fraction=0.5, random_state=0)
    rows, _ = clf._validation_split(100)
    if 0 in rows:  # make the one weighted sample a validation sample
        weights = np.zeros(100)
        weights[np.setdiff1d(np.arange(100), rows)[0]] = 1.0
    with pytest.raises(ValueError, match="left for training after the validation split"):
        clf.fit(x, y, sample_weight=weights)


def test_a_generator_seed_works_with_a_validation_split():
    x, y = blobs(n=100)
    clf = small(epochs=1, validation_fraction=0.2,
                random_state=np.random.default_rng(0)).fit(x, y)
    assert clf.history_[0]["val_accuracy"] is not None


def test_score_checks_its_weights():
    x, y = blobs()
    clf = small(epochs=1).fit(x, y)
    for bad in (np.ones(3), np.full(len(y), np.nan), np.zeros(len(y))):
        with pytest.raises(ValueError, match="sample_weight"):
            clf.score(x, y, sample_weight=bad)
