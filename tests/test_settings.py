"""The one table of settings: what is built from it, and its rules in both voices."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest
from helpers_data import blobs
from test_cli import assert_user_error, run_many

import mnist_xp
from mnist_xp.cli.parser import build_parser
from mnist_xp.errors import SettingError
from mnist_xp.settings import (
    BY_NAME,
    ESTIMATOR_SETTINGS,
    PRESET_NAMES,
    PRESETS,
    SETTINGS,
    TRAINING_SETTINGS,
    check_against_data,
    check_settings,
    flag_name,
    preset_overrides,
    preset_settings,
    run_epochs,
)
from mnist_xp.training import TrainConfig


def test_the_estimator_constructor_is_the_table():
    params = inspect.signature(mnist_xp.MLPClassifier).parameters
    assert list(params) == [s.name for s in ESTIMATOR_SETTINGS]
    assert {k: p.default for k, p in params.items()} == {s.name: s.default for s in ESTIMATOR_SETTINGS}
    assert params["n_hidden"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for k, p in params.items() if k != "n_hidden")
    doc = mnist_xp.MLPClassifier.__doc__
    for s in ESTIMATOR_SETTINGS:
        assert f"    {s.name} : " in doc, s.name


def test_train_config_fields_are_the_training_settings():
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    assert fields == [s.name for s in TRAINING_SETTINGS] + ["warp_bank"]
    config = TrainConfig()
    for s in TRAINING_SETTINGS:
        assert getattr(config, s.name) == s.default, s.name


def test_every_flag_of_the_table_is_a_train_flag_with_its_range_in_the_help():
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    options = {o: a for a in train._actions for o in a.option_strings}
    for s in SETTINGS:
        if s.flag is None:
            continue
        assert s.flag in options, s.flag
        assert options[s.flag].dest == s.dest
        if s.interval is not None:
            assert s.interval.describe() in options[s.flag].help, s.flag


def test_presets_come_from_the_table_column():
    assert set(PRESETS) == set(PRESET_NAMES)
    assert PRESETS["classic"]["learning_rate"] == BY_NAME["learning_rate"].presets["classic"]
    assert PRESETS["default"]["shift"] == 1 and PRESETS["best"]["shift"] == 0
    assert PRESETS["best"]["augment"]["elastic"] > 0 and PRESETS["default"]["augment"] is None
    for name in PRESET_NAMES:  # every preset passes its own checks
        check_settings(PRESETS[name])
        clf = mnist_xp.MLPClassifier.from_preset(name)
        assert clf.epochs == PRESETS[name]["epochs"]


@pytest.mark.parametrize("values, python, cli", [
    (dict(warmup=20, epochs=15), "warmup=20 is longer than the run (15 epochs)",
     "--warmup 20 is longer than the run (15 epochs)"),
    (dict(warmup=2, epochs=1), "(1 epoch)", "(1 epoch)"),
    (dict(warmup=1.0, schedule="onecycle"), "warmup=1.0 cannot be combined with "
     "schedule='onecycle'", "--warmup 1 cannot be combined with --schedule onecycle"),
    (dict(shift=1, augment={"rotate": 5}), "shift=1 cannot be combined with per-image",
     "--shift 1 cannot be combined with per-image"),
    (dict(optimizer="nesterov", momentum=0.0), "optimizer='nesterov' needs a momentum > 0",
     "--optimizer nesterov needs a momentum > 0"),
    (dict(momentum=1.0), "momentum=1.0: must be at least 0 and less than 1",
     "--momentum 1: must be at least 0 and less than 1"),
    (dict(device="gpu"), "device='gpu': device 'gpu' is not understood", None),
    (dict(verbose=2), "verbose=2: must be true or false", None),
])
def test_rules_name_parameters_in_python_and_flags_on_the_command_line(values, python, cli):
    with pytest.raises(SettingError, match=None) as info:
        check_settings(values)
    assert python in str(info.value)
    if cli is not None:
        with pytest.raises(SettingError) as info:
            check_settings(values, flag_name)
        assert cli in str(info.value)


@pytest.mark.parametrize("values, n, message", [
    (dict(shift=1), (50, 10), "shift=1: shifts need square images; 10 features are not"),
    (dict(shift=6), (50, 36), "shift=6 must be less than the image side (6)"),
    (dict(augment={"translate": 6}), (50, 36), "translate=6 must be less than the image side"),
    (dict(augment={"rotate": 5}), (50, 35), "distortions need square images"),
    (dict(validation_fraction=0.001), (50, 36), "leaves 0 for validation"),
])
def test_rules_against_the_data(values, n, message):
    with pytest.raises(SettingError) as info:
        check_against_data(values, *n)
    assert message in str(info.value)


def test_the_batch_rule_says_when_the_validation_split_left_too_little():
    with pytest.raises(SettingError) as info:
        check_against_data(dict(batch_size=128, validation_fraction=0.9), 100, 36, flag_name,
                           clip_batch=False)
    assert str(info.value) == ("--batch-size 128 is larger than the training set that "
                               "--validation 0.9 leaves (10 images); use at most 10")
    check_against_data(dict(batch_size=128), 100, 36)  # the estimator clips instead


def test_the_estimator_refuses_what_the_table_refuses():
    x, y = blobs()
    for bad in (dict(schedule="onecycle", warmup=1.0), dict(augment={"translate": 6}),
                dict(device="gpu"), dict(epochs=np.int64(0))):
        with pytest.raises(SettingError):
            mnist_xp.MLPClassifier(8, **bad).fit(x, y)
    # numpy scalars are numbers like any other
    clf = mnist_xp.MLPClassifier(np.int64(8), epochs=np.int64(1), learning_rate=np.float32(0.1),
                                 verbose=np.bool_(False), device="cpu").fit(x, y)
    assert len(clf.history_) == 1


def test_cli_rules_are_one_line_naming_the_flag(tmp_path):
    base = ["train", "--data", "bundled", "--no-download", "--device", "cpu", "--epochs", "1"]
    cases = {
        "onecycle": (base + ["--schedule", "onecycle", "--warmup", "1"],
                     ("--warmup 1 cannot be combined with --schedule onecycle",)),
        "translate": (base + ["--translate", "30"],
                      ("--translate 30 must be less than the image side (28)",)),
        "validation": (base + ["--validation", "0.9999"],
                       ("--batch-size 128", "--validation 0.9999 leaves (1 image)")),
    }
    results = run_many({k: (args, {"cwd": tmp_path}) for k, (args, _) in cases.items()})
    for key, (_, fragments) in cases.items():
        assert_user_error(results[key], *fragments)


def test_min_steps_lengthens_a_preset_run_on_small_data_only():
    default = preset_settings("default")
    assert default["min_steps"] == 15 * 469 and preset_settings("best")["min_steps"] == 30 * 469
    assert preset_settings("classic")["min_steps"] == 0
    assert run_epochs(default, 60_000) == 15  # MNIST: the preset's own epochs
    assert run_epochs(default, 10_000) == 90  # 79 steps an epoch: ceil(7035 / 79)
    assert run_epochs(default, 1_437) == 587
    assert run_epochs(default, 50) == 7035  # one step an epoch
    # a length asked for is the length run
    assert run_epochs(preset_overrides("default", {"epochs": 5}), 1_437) == 5
    assert run_epochs(preset_overrides("default", {"epochs": 5, "min_steps": 120}), 1_437) == 10
    clf = mnist_xp.MLPClassifier.from_preset("best", epochs=2)
    assert clf.min_steps == 0 and mnist_xp.MLPClassifier.from_preset("best").min_steps == 14070


def test_the_estimator_trains_the_epochs_min_steps_asks_for():
    x, y = blobs(n=64)
    clf = mnist_xp.MLPClassifier(epochs=2, batch_size=16, min_steps=20, device="cpu",
                                 random_state=0).fit(x, y)
    assert len(clf.history_) == 5  # 4 steps an epoch
