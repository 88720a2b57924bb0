"""`mnist_xp.tune` and `mnist-xp tune`: a recipe chosen on a validation split with Optuna."""

from __future__ import annotations

import builtins
import json
import sys

import numpy as np
import pytest
from helpers_data import synthetic_mnist, write_mnist_dir

from mnist_xp.cli import main
from mnist_xp.cli.parser import build_parser
from mnist_xp.cli.tune import train_flags
from mnist_xp.errors import MnistXPError, SettingError
from mnist_xp.settings import preset_settings
from mnist_xp.tuning import TUNED_SETTINGS, tune

pytest.importorskip("optuna", reason="tuning needs Optuna (pip install 'mnist-xp[tune]')")


@pytest.fixture(autouse=True)
def short_trials(monkeypatch):
    """Trials as long as their epochs: min_steps of 15 MNIST epochs would make every trial
    on these few hundred images thousands of epochs long."""
    import mnist_xp.tuning

    monkeypatch.setattr(mnist_xp.tuning, "MNIST_STEPS_PER_EPOCH", 1)


@pytest.fixture(scope="module")
def digits():
    """600 bundled training digits and 300 test digits, (n, 784) uint8."""
    from mnist_xp.data import load_bundled

    data = load_bundled()
    return (data.x_train[:600].reshape(600, -1), data.y_train[:600],
            data.x_test[:300].reshape(300, -1), data.y_test[:300])


def test_tune_tries_the_presets_first_and_keeps_the_best_trial(digits):
    x, y, x_test, y_test = digits
    seen = []
    result = tune(x, y, n_trials=4, random_state=0, device="cpu", on_trial=seen.append)
    assert [t["number"] for t in seen] == [0, 1, 2, 3]
    # The first two trials are the presets, as the settings say.
    for trial, name in zip(seen, ("default", "best")):
        preset = preset_settings(name)
        assert {k: trial["settings"][k] for k in ("learning_rate", "epochs", "shift", "deskew")} == \
            {k: preset[k] for k in ("learning_rate", "epochs", "shift", "deskew")}
        assert bool(trial["settings"]["augment"]) == bool(preset["augment"])
    assert set(result.preset_val_accuracy) == {"default", "best"}
    # Never worse than a preset on the validation split: they are trials too.
    assert result.val_accuracy >= max(result.preset_val_accuracy.values())
    complete = [t["val_accuracy"] for t in seen if t["state"] == "COMPLETE"]
    assert result.val_accuracy == max(complete)
    assert set(result.settings) == set(TUNED_SETTINGS)
    # Trained again on all the rows, with the chosen recipe.
    assert result.model.epochs == result.settings["epochs"]
    assert result.model.validation_fraction == 0.0
    assert result.model.score(x_test, y_test) > 0.7
    assert len(result.study.trials) == 4


def test_tune_refuses_too_few_trials_and_a_bad_split(digits):
    x, y, _, _ = digits
    with pytest.raises(SettingError, match="n_trials=1: give at least 2"):
        tune(x, y, n_trials=1)
    with pytest.raises(SettingError, match=r"validation_fraction=0: give a fraction in \(0, 1\)"):
        tune(x, y, validation_fraction=0)


def test_tune_without_optuna_says_how_to_install_it(monkeypatch, digits):
    real = builtins.__import__

    def no_optuna(name, *args, **kwargs):
        if name == "optuna":
            raise ImportError("no optuna")
        return real(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "optuna")
    monkeypatch.setattr(builtins, "__import__", no_optuna)
    with pytest.raises(MnistXPError, match=r"pip install 'mnist-xp\[tune\]'"):
        tune(*digits[:2], n_trials=2)


@pytest.mark.parametrize("settings", [
    {"learning_rate": 0.0123456789012345, "epochs": 30, "shift": 0,
     "label_smoothing": 0.02150299311135696,
     "augment": {"rotate": 6.842254983248228, "zoom": 0.1, "shear": 3.25, "translate": 1.5,
                 "elastic": 12.0, "sigma": 4.0}, "deskew": True},
    {"learning_rate": 0.2, "epochs": 15, "min_steps": 7035, "shift": 2, "label_smoothing": 0.0,
     "augment": None, "deskew": False},
])
def test_the_printed_train_flags_give_the_chosen_recipe(settings):
    args = build_parser().parse_args(["train", *train_flags(settings).split()])
    assert args.learning_rate == settings["learning_rate"]  # exactly: the recipe repeats
    assert args.epochs == settings["epochs"] and args.shift == settings["shift"]
    assert (args.min_steps or 0) == settings.get("min_steps", 0)
    assert (args.label_smoothing or 0.0) == settings["label_smoothing"]
    assert args.deskew is settings["deskew"]
    if settings["augment"] is None:
        assert args.no_augment
    else:
        for k in ("rotate", "zoom", "shear", "translate", "elastic"):
            assert getattr(args, k) == settings["augment"][k]
        assert args.elastic_sigma == settings["augment"]["sigma"]


def test_the_tune_command_reports_the_recipe_and_the_test_accuracy(tmp_path, capsys):
    data = write_mnist_dir(tmp_path / "data", synthetic_mnist(400, 100, seed=3))
    model = tmp_path / "tuned.npz"
    assert main(["tune", "--data-dir", str(data), "--device", "cpu", "--trials", "2",
                 "--save", str(model), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["trials"] == 2
    assert set(out["preset_val_accuracy"]) == {"default", "best"}
    assert out["train_flags"] == f"--data-dir {data} {train_flags(out['settings'])} --seed 0"
    assert 0 <= out["test_accuracy"] <= 1
    assert model.is_file()
    assert main(["evaluate", "--data-dir", str(data), "--model", str(model), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == out["test_accuracy"]


@pytest.mark.parametrize("flags,fragment", [
    (["--trials", "1"], "argument --trials: must be at least 2"),
    (["--validation", "1"], "argument --validation: give a fraction between 0 and 1"),
])
def test_the_tune_command_refuses_bad_flags_in_one_line(capsys, flags, fragment):
    with pytest.raises(SystemExit) as info:
        main(["tune", *flags])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and "\n" not in err


def test_the_tune_command_refuses_an_unwritable_save_before_any_work(tmp_path, capsys):
    assert main(["tune", "--data", "bundled", "--save", str(tmp_path / "no" / "m.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"mnist-xp: error: --save {tmp_path / 'no' / 'm.npz'}: directory " \
                  f"{tmp_path / 'no'} does not exist"


def test_with_two_trials_the_recipe_is_a_preset(digits):
    # With two trials only the presets run: the recipe is one of them, exactly.
    x, y, _, _ = digits
    result = tune(x, y, n_trials=2, random_state=1, device="cpu", refit=False)
    assert result.model is None
    chosen = [n for n in ("default", "best")
              if result.preset_val_accuracy[n] == result.val_accuracy]
    assert chosen
    preset = preset_settings(chosen[0])
    assert result.settings["learning_rate"] == preset["learning_rate"]
    assert np.isclose(result.settings["label_smoothing"], preset["label_smoothing"])


def test_tune_takes_data_that_is_not_square_images_without_moving_it():
    # 20 features: no shifts or warps can be tried (they need square images); the
    # presets' shifts are left out, and the labels may be strings.
    from helpers_data import blobs

    x, y = blobs(n=300, side=1, n_classes=3)
    x = np.hstack([x] * 20)
    labels = np.array(["ant", "bee", "cat"])[y]
    seen = []
    result = tune(x.astype(np.float32) / 255, labels, n_trials=3, device="cpu",
                  on_trial=seen.append)
    assert all(t["settings"]["shift"] == 0 and t["settings"]["augment"] is None for t in seen)
    assert set(result.model.classes_) == {"ant", "bee", "cat"}


def test_tune_checks_the_data_before_any_trial(digits, capfd):
    x, y, _, _ = digits
    bad = x.astype(np.float32) / 255
    bad[3, 5] = np.nan
    seen = []
    with pytest.raises(ValueError, match="NaN"):
        tune(bad, y, n_trials=2, on_trial=seen.append)
    with pytest.raises(ValueError):
        tune(x, y[:-1], n_trials=2, on_trial=seen.append)
    assert seen == []  # no trial ran
    assert "Trial" not in capfd.readouterr().err  # no Optuna traceback
