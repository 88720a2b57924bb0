"""A recipe fitted to the data at hand: learning rate and augmentation chosen by Optuna.

``--preset best`` is tuned for handwritten digits: its rotations, shears and elastic
warps are what make MNIST's digits vary. On other 28×28 data (clothing, letters,
another script) they may help or hurt, and nothing says which. `tune` chooses the
learning rate, the augmentation (none, whole-batch shifts, or per-image distortions
with their strengths), deskewing, label smoothing and the number of epochs by their accuracy on
a validation split held out from the training data, never the test set, with Optuna's
TPE sampler (Bergstra, Bardenet, Bengio & Kégl, "Algorithms for hyper-parameter
optimization", NeurIPS 2011) and its median pruner stopping trials that fall behind
(Akiba, Sano, Yanase, Ohta & Koyama, "Optuna: a next-generation hyperparameter
optimization framework", KDD 2019). The ``default`` and ``best`` presets are the first
two trials, so the recipe chosen is never worse than either on the validation split.
The model is then trained again, with the recipe, on all the training data::

    result = mnist_xp.tune(x_train, y_train, n_trials=20, random_state=0)
    result.settings          # {"learning_rate": 0.07, "shift": 1, ...}
    result.model.score(x_test, y_test)

``mnist-xp tune`` does the same from the command line. Needs Optuna
(``pip install 'mnist-xp[tune]'``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from .errors import MnistXPError, SettingError
from .estimator import MLPClassifier
from .settings import MNIST_STEPS_PER_EPOCH, preset_settings

__all__ = ["TuneResult", "tune", "TUNED_SETTINGS"]

#: The settings `tune` chooses; every other setting is the ``default`` preset's.
TUNED_SETTINGS = ("learning_rate", "epochs", "min_steps", "shift", "augment",
                  "label_smoothing", "deskew")


@dataclass
class TuneResult:
    """What `tune` found.

    Attributes
    ----------
    settings : dict
        The chosen values of `TUNED_SETTINGS` (``augment`` a dict or None).
    val_accuracy : float
        The best trial's accuracy on the validation split, in [0, 1].
    preset_val_accuracy : dict
        ``{"default": ..., "best": ...}``: the presets' accuracy on the same split.
    model : MLPClassifier or None
        Trained with `settings` on all the training data (None with ``refit=False``).
    study : optuna.Study
        Every trial, for Optuna's own analysis and plots.
    """

    settings: dict
    val_accuracy: float
    preset_val_accuracy: dict
    model: MLPClassifier | None
    study: Any


def _optuna():
    """Optuna, or an MnistXPError saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise MnistXPError("tuning needs Optuna: pip install 'mnist-xp[tune]'") from None
    return optuna


def _check_data(X, y, base: dict) -> int:
    """`X`'s n_features, once `X` and `y` pass the checks `fit` makes (its errors if not)."""
    import numpy as np

    from .backend import get_backend
    from .estimator import _encode_labels, _to_device

    x = _to_device(X, get_backend("cpu"), np.dtype(base["dtype"]))
    _encode_labels(y, x.shape[0])
    return int(x.shape[1])


def _preset_trial(name: str, square: bool = True) -> dict:
    """A preset as the trial parameters `_suggest` would draw for it (no moves if not `square`)."""
    s = preset_settings(name)
    params = {"learning_rate": s["learning_rate"], "epochs": s["epochs"],
              "label_smoothing": s["label_smoothing"]}  # min_steps follows epochs
    params["deskew"] = bool(s["deskew"]) and square
    if not square:
        params["augmentation"] = "none"
    elif s["augment"]:
        params["augmentation"] = "distort"
        params.update({k: float(s["augment"][k]) for k in
                       ("rotate", "zoom", "shear", "translate", "elastic")})
    elif s["shift"]:
        params.update(augmentation="shift", shift=s["shift"])
    else:
        params["augmentation"] = "none"
    return params


def _suggest(trial, square: bool = True) -> dict:
    """One trial's recipe (values of `TUNED_SETTINGS`); shifts and warps only for `square` images."""
    settings = {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.5, log=True),
        "epochs": trial.suggest_categorical("epochs", [15, 30]),
        "label_smoothing": trial.suggest_float("label_smoothing", 0.0, 0.15),
        "shift": 0, "augment": None}
    # as the presets: that many MNIST epochs' steps, on data of any size
    settings["min_steps"] = settings["epochs"] * MNIST_STEPS_PER_EPOCH
    settings["deskew"] = trial.suggest_categorical("deskew", [False, True]) if square else False
    kinds = ["none", "shift", "distort"] if square else ["none"]
    kind = trial.suggest_categorical("augmentation", kinds)
    if kind == "shift":
        settings["shift"] = trial.suggest_int("shift", 1, 2)
    elif kind == "distort":
        settings["augment"] = {
            "rotate": trial.suggest_float("rotate", 0.0, 15.0),
            "zoom": trial.suggest_float("zoom", 0.0, 0.15),
            "shear": trial.suggest_float("shear", 0.0, 15.0),
            "translate": trial.suggest_float("translate", 0.0, 2.0),
            "elastic": trial.suggest_float("elastic", 0.0, 30.0), "sigma": 4.0}
    return settings


def tune(X, y, *, n_trials: int = 20, timeout: float | None = None,
         validation_fraction: float = 0.1, random_state: int = 0, device="auto",
         refit: bool = True, on_trial: Callable[[dict], None] | None = None) -> TuneResult:
    """Choose a training recipe for `X`, `y` on a held-out validation split.

    Parameters
    ----------
    X : array, shape (n_samples, n_features)
        Training images: uint8 pixels or floats in [0, 1]. Shifts and distortions are
        tried only for square images (n_features a square, e.g. 784); other data is
        tuned without them.
    y : array, shape (n_samples,)
        Class labels.
    n_trials : int, default 20
        Trials at most, the two presets included (at least 2).
    timeout : float, optional
        Seconds after which no new trial starts.
    validation_fraction : float, default 0.1
        Share of `X` held out to score the trials (the same rows for every trial).
    random_state : int, default 0
        Seeds the split, the sampler and every trial's training.
    device : str or Backend, default "auto"
        Where the trials and the final model train.
    refit : bool, default True
        Train the chosen recipe on all of `X` (``result.model``).
    on_trial : callable, optional
        Called after each trial with ``{"number", "state", "val_accuracy", "epochs_run",
        "settings"}`` (state "COMPLETE" or "PRUNED").

    Returns
    -------
    TuneResult

    Raises
    ------
    MnistXPError
        If Optuna is not installed.
    SettingError
        If `n_trials` < 2, or `validation_fraction` is not in (0, 1) or leaves too
        few rows on either side.
    """
    optuna = _optuna()
    if n_trials < 2:
        raise SettingError(f"n_trials={n_trials}: give at least 2 (the presets are the first "
                           "two)", "n_trials")
    if not 0 < validation_fraction < 1:
        raise SettingError(f"validation_fraction={validation_fraction}: give a fraction in "
                           "(0, 1)", "validation_fraction")
    base = {**preset_settings("default"), "device": device, "random_state": random_state,
            "validation_fraction": validation_fraction, "verbose": False}
    # The data checked once, before any trial: a mistake in it is one error, not a
    # failed trial with Optuna's traceback.
    n_features = _check_data(X, y, base)
    square = math.isqrt(n_features) ** 2 == n_features

    def objective(trial):
        settings = _suggest(trial, square)
        clf = MLPClassifier(**{**base, **settings})
        trial.set_user_attr("settings", settings)

        def report(record):
            epoch = record["epoch"]
            trial.report(record["val_accuracy"], epoch)
            trial.set_user_attr("epochs_run", epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        clf.fit(X, y, on_epoch=report)
        return max(r["val_accuracy"] for r in clf.history_)

    def tell(study, trial):
        if on_trial is not None:
            on_trial({"number": trial.number, "state": trial.state.name,
                      "val_accuracy": trial.value if trial.value is not None else
                      max(trial.intermediate_values.values(), default=None),
                      "epochs_run": trial.user_attrs.get("epochs_run"),
                      "settings": trial.user_attrs.get("settings")})

    # Optuna's own lines off while it runs (a failed trial's error is raised, once):
    # `on_trial` reports progress.
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.TPESampler(seed=random_state),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=3))
        for name in ("default", "best"):
            study.enqueue_trial(_preset_trial(name, square), user_attrs={"preset": name})
        study.optimize(objective, n_trials=n_trials, timeout=timeout, callbacks=[tell],
                       catch=())
    finally:
        optuna.logging.set_verbosity(verbosity)
    presets = {t.user_attrs["preset"]: t.value for t in study.trials
               if "preset" in t.user_attrs and t.value is not None}
    best = study.best_trial
    settings = best.user_attrs["settings"]
    model = None
    if refit:
        model = MLPClassifier(**{**base, **settings, "validation_fraction": 0.0}).fit(X, y)
    return TuneResult(settings, float(best.value), presets, model, study)
