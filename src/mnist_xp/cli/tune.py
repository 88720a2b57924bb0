"""``mnist-xp tune``: choose a recipe for the data on a validation split, then train it."""

from __future__ import annotations

import json

import numpy as np

from ..model_files import save
from ..tuning import _optuna, tune
from .common import backend_from, check_writable, data_from, flatten, say

__all__ = ["cmd_tune", "train_flags"]


def train_flags(settings: dict) -> str:
    """The ``mnist-xp train`` flags that give a tuned recipe (`mnist_xp.tuning.TUNED_SETTINGS`)."""
    # repr: the shortest text that reads back as the same float, so the flags repeat
    # the chosen recipe exactly
    flags = [f"--learning-rate {float(settings['learning_rate'])!r}",
             f"--epochs {settings['epochs']}",
             f"--min-steps {settings.get('min_steps', 0)}", f"--shift {settings['shift']}"]
    flags.append("--deskew" if settings.get("deskew") else "--no-deskew")
    if settings["label_smoothing"]:
        flags.append(f"--label-smoothing {float(settings['label_smoothing'])!r}")
    augment = settings["augment"]
    if augment:
        flags += [f"--{k} {float(augment[k])!r}" for k in ("rotate", "zoom", "shear", "translate",
                                                             "elastic")]
        flags.append(f"--elastic-sigma {float(augment.get('sigma', 4.0))!r}")
    else:
        flags.append("--no-augment")
    return " ".join(flags)


def cmd_tune(args) -> int:
    """Tune on a split of the training images, retrain, report the test accuracy."""
    check_writable(args.save, "--save")
    _optuna()  # before the data: say at once that Optuna is missing
    data = data_from(args)
    backend = backend_from(args)
    x, y = flatten(data.x_train), data.y_train

    def on_trial(t):
        if args.json:
            return
        done = "" if t["state"] == "COMPLETE" else f", stopped after epoch {t['epochs_run']}"
        acc = "-" if t["val_accuracy"] is None else f"{t['val_accuracy']:.2%}"
        say(f"trial {t['number'] + 1}/{args.trials}: validation accuracy {acc}{done}")

    result = tune(x, y, n_trials=args.trials, timeout=args.timeout,
                  validation_fraction=args.validation, random_state=args.seed,
                  device=backend, on_trial=on_trial)
    model = result.model
    test = float(np.mean(np.asarray(model.predict(flatten(data.x_test))) == data.y_test))
    flags = train_flags(result.settings)
    # The run repeated exactly: the same data and seed as well as the recipe.
    data_flags = (f"--data-dir {args.data_dir} " if args.data_dir is not None
                  else f"--data {args.data} " if args.data != "auto" else "")
    flags = f"{data_flags}{flags} --seed {args.seed}"
    out = {"data": data.source, "settings": result.settings, "train_flags": flags,
           "val_accuracy": result.val_accuracy, "preset_val_accuracy": result.preset_val_accuracy,
           "trials": len(result.study.trials), "test_accuracy": test}
    if args.save is not None:
        save(model, args.save, metadata={"data": data.source, "test_accuracy": test,
                                         "seed": args.seed, "tuned": result.settings})
    if args.json:
        print(json.dumps(out))
        return 0
    presets = ", ".join(f"{k} {v:.2%}" for k, v in result.preset_val_accuracy.items())
    print(f"chosen: mnist-xp train {flags}")
    print(f"validation accuracy {result.val_accuracy:.2%} (presets: {presets}; "
          f"{len(result.study.trials)} trials)")
    print(f"test accuracy: {test:.2%} on {data.source}, trained again on all training images")
    if args.save is not None:
        print(f"saved model to {args.save}")
    return 0
