"""Ensembles: several models' probabilities averaged, in the library and `evaluate`."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mnist_xp
from mnist_xp.cli import main
from mnist_xp.data import load_bundled


@pytest.fixture(scope="module")
def bundled():
    return load_bundled()


@pytest.fixture(scope="module")
def two_models(bundled, tmp_path_factory):
    """Two one-epoch models on 2,000 bundled images, differently seeded, saved."""
    x = bundled.x_train[:2000].reshape(2000, -1)
    y = bundled.y_train[:2000]
    directory = tmp_path_factory.mktemp("ensemble")
    models, paths = [], []
    for seed in (1, 2):
        clf = mnist_xp.MLPClassifier(epochs=1, random_state=seed, device="cpu").fit(x, y)
        path = directory / f"m{seed}.npz"
        mnist_xp.save(clf, path)
        models.append(clf)
        paths.append(path)
    return models, paths


def test_an_ensemble_averages_its_models_probabilities(two_models, bundled):
    models, _ = two_models
    x = bundled.x_test[:500].reshape(500, -1)
    y = bundled.y_test[:500]
    ensemble = mnist_xp.Ensemble(models)
    expected = (models[0].predict_proba(x) + models[1].predict_proba(x)) / 2
    proba = ensemble.predict_proba(x)
    assert proba.shape == (500, 10)
    np.testing.assert_allclose(proba, expected, rtol=1e-6)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)
    assert np.array_equal(ensemble.predict(x), models[0].classes_[expected.argmax(axis=1)])
    assert ensemble.score(x, y) == np.mean(ensemble.predict(x) == y)
    # The two models disagree somewhere, so the average is not just one of them.
    assert not np.array_equal(models[0].predict(x), models[1].predict(x))


def test_an_ensemble_refuses_models_that_do_not_match(two_models, bundled):
    models, _ = two_models
    with pytest.raises(ValueError, match="at least one model"):
        mnist_xp.Ensemble([])
    x = bundled.x_train[:300].reshape(300, -1)
    y = bundled.y_train[:300]
    letters = mnist_xp.MLPClassifier(epochs=1, device="cpu").fit(x, np.array(list("abcdefghij"))[y])
    with pytest.raises(ValueError, match=r"model 2 has classes \['a'"):
        mnist_xp.Ensemble([models[0], letters])
    small = mnist_xp.MLPClassifier(epochs=1, device="cpu").fit(x[:, :100], y)
    with pytest.raises(ValueError, match="model 2 expects 100 pixels per image, model 1 784"):
        mnist_xp.Ensemble([models[0], small])


def test_an_ensemble_loads_model_files(two_models, bundled):
    models, paths = two_models
    x = bundled.x_test[:200].reshape(200, -1)
    from_files = mnist_xp.Ensemble([str(paths[0]), paths[1]], device="cpu")
    np.testing.assert_allclose(from_files.predict_proba(x),
                               mnist_xp.Ensemble(models).predict_proba(x), rtol=1e-6)


def test_evaluate_scores_the_ensemble_of_its_models(two_models, bundled, capsys):
    models, paths = two_models
    args = ["evaluate", "--model", str(paths[0]), "--model", str(paths[1]), "--data",
            "bundled", "--device", "cpu"]
    assert main(args + ["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    x = bundled.x_test.reshape(len(bundled.x_test), -1)
    assert report["model"] == [str(p) for p in paths]
    assert report["correct"] == int(np.sum(mnist_xp.Ensemble(models).predict(x) == bundled.y_test))
    assert main(args) == 0
    assert "test accuracy (mean of 2 models' probabilities): " in capsys.readouterr().out


def test_evaluate_refuses_models_that_do_not_match_in_one_line(two_models, bundled, tmp_path,
                                                              capsys):
    _, paths = two_models
    x = bundled.x_train[:300].reshape(300, -1)
    other = mnist_xp.MLPClassifier(epochs=1, device="cpu").fit(x, bundled.y_train[:300] % 5)
    mnist_xp.save(other, tmp_path / "five.npz")
    assert main(["evaluate", "--model", str(paths[0]), "--model", str(tmp_path / "five.npz"),
                 "--data", "bundled", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"mnist-xp: error: --model {tmp_path / 'five.npz'} has classes "
                          f"[0, 1, 2, 3, 4], {paths[0]} ")
    assert "\n" not in err


@pytest.mark.parametrize("command", ["predict", "preprocess", "serve"])
def test_commands_that_read_with_one_model_refuse_two(two_models, command, capsys):
    _, paths = two_models
    with pytest.raises(SystemExit) as info:
        main([command, "--model", str(paths[0]), "--model", str(paths[1]), "x.png"][
            :None if command != "serve" else -1])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"mnist-xp {command}: error: argument --model: given more than once")
    assert "evaluate --model A --model B scores an ensemble" in err
