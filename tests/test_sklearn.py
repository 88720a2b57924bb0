"""MLPClassifier in scikit-learn's own test suite and machinery (scikit-learn is a test
dependency; the package itself does not need it)."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest
from helpers_data import blobs
from helpers_engines import CPU_FAST_ENGINE

sklearn = pytest.importorskip("sklearn", reason="scikit-learn is not installed")

from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import FunctionTransformer  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import mnist_xp  # noqa: E402

# Declared as scikit-learn declares its own estimators' expected failures
# (sklearn/utils/_test_common/instance_generator.py lists the same for SGDClassifier).
EXPECTED_FAILED_CHECKS = {
    # Minibatch SGD sees each sample once per epoch, in random batches: a sample of
    # weight 2 is one sample counted twice in its batch, not two samples in two batches,
    # so the fitted model differs from one trained on repeated rows. The weighted loss
    # itself equals the loss of duplicated samples (tests/test_weights.py).
    "check_sample_weight_equivalence_on_dense_data":
        "sample_weight is not equivalent to removing/repeating samples.",
}


# scikit-learn warns that MLPClassifier does not inherit its BaseEstimator: on purpose,
# since inheriting would import scikit-learn (0.7 s) into every mnist-xp command; the
# protocol is implemented instead, and these checks hold it to scikit-learn's rules.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Estimator MLPClassifier does not inherit")
    every_check = parametrize_with_checks(
        [mnist_xp.MLPClassifier(epochs=3, device="cpu")],
        expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)


@pytest.mark.filterwarnings("ignore:Estimator MLPClassifier does not inherit")
@every_check
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def small(**kw):
    settings = dict(n_hidden=8, epochs=2, batch_size=16, device="cpu", random_state=0)
    return mnist_xp.MLPClassifier(**{**settings, **kw})


def test_an_unfitted_model_raises_scikit_learns_not_fitted_error():
    x, _ = blobs()
    with pytest.raises(NotFittedError):
        small().predict(x)
    with pytest.raises(mnist_xp.NotFittedError):  # and still our own
        small().predict_proba(x)


def test_grid_search_in_two_processes_over_weighted_fits():
    x, y = blobs(n=120)
    weights = np.where(y == 0, 2.0, 1.0)
    search = GridSearchCV(small(epochs=15), {"n_hidden": [4, 8], "class_weight": [None, "balanced"]},
                          cv=2, n_jobs=2).fit(x, y, sample_weight=weights)
    assert search.best_score_ > 0.5
    assert set(search.best_params_) == {"n_hidden", "class_weight"}
    assert search.best_estimator_.engine_.name == CPU_FAST_ENGINE


def test_pipeline_clone_and_pickle_keep_the_model():
    x, y = blobs()
    pipe = make_pipeline(FunctionTransformer(lambda a: a / 255.0), small()).fit(
        x, y, mlpclassifier__sample_weight=np.ones(len(y)))
    copy = pickle.loads(pickle.dumps(pipe.steps[-1][1]))
    np.testing.assert_array_equal(copy.predict(x / 255.0), pipe.predict(x))
    fresh = clone(pipe.steps[-1][1])
    assert not hasattr(fresh, "params_") and fresh.get_params() == small().get_params()
