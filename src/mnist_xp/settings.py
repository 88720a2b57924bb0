"""The one table of training settings: name, type, default, unit, range, CLI flag, help, presets.

Every setting a user can give -- ``MLPClassifier(learning_rate=...)``, ``mnist-xp train
--learning-rate ...`` or a preset -- is one `Setting` in `SETTINGS`. From it are built:

- the estimator's constructor, docstring and parameter checks (`check_settings`, in the
  spirit of scikit-learn's ``_parameter_constraints``);
- `mnist_xp.training.config.TrainConfig`, the settings of one training run;
- the ``mnist-xp train`` flags (`mnist_xp.cli.parser`) and the values they override;
- `PRESETS`, from each setting's ``presets`` column.

The rules that tie settings together (a warm-up no longer than the run, shifts or
distortions but not both...) are written once, in `RULES`, and those that need the data
(square images, room for a validation set) in `check_against_data`; both name the
settings they involve as the caller knows them: ``--warmup 20`` on the command line,
``warmup=20`` from Python.

Adding a setting means adding one entry here and the code that uses it.
"""

from __future__ import annotations

import math
import numbers
import textwrap
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from .backend import parse_device
from .errors import DeviceError, SettingError
from .model import ACTIVATIONS, LOSSES, MAX_HIDDEN_LAYERS
from .optim import OPTIMIZERS

__all__ = [
    "Setting",
    "Interval",
    "SETTINGS",
    "BY_NAME",
    "PRESETS",
    "PRESET_NAMES",
    "SCHEDULES",
    "DTYPES",
    "RULES",
    "TRAINING_SETTINGS",
    "AUGMENT_FIELDS",
    "check_value",
    "check_settings",
    "check_against_data",
    "validation_size",
    "run_epochs",
    "MNIST_STEPS_PER_EPOCH",
    "augment_active",
    "preset_settings",
    "preset_overrides",
    "python_name",
    "flag_name",
    "parameters_doc",
]

#: Learning-rate schedules (`mnist_xp.training.schedule.learning_rate_at`).
SCHEDULES = ("constant", "cosine", "onecycle", "step")
#: Floating types of parameters and arithmetic.
DTYPES = ("float32", "float64")
#: The presets, in the order ``--help`` lists them.
PRESET_NAMES = ("default", "best", "classic")

# 65,536 hidden units are ~200 MB of float32 weights (x4 with gradients and momentum):
# far more than MNIST can use; a typo such as 1000000000 (5.7 TiB) is refused up front.
MAX_HIDDEN = 1 << 16

INF = math.inf

#: Steps of one epoch of MNIST's 60,000 training images at batch 128: the presets' epochs
#: are MNIST's, and their ``min_steps`` keeps that length of training on smaller data.
MNIST_STEPS_PER_EPOCH = 469
# A thousand MNIST runs of best: far beyond any use, and a typo's 10**20 is refused.
MAX_MIN_STEPS = 10**8


@dataclass(frozen=True)
class Interval:
    """The valid range of a number: ``[low, high]``, each end open or closed."""

    low: float = -INF
    high: float = INF
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        lo = "(" if self.low_open or self.low == -INF else "["
        hi = ")" if self.high_open or self.high == INF else "]"
        return f"{lo}{self.low:g}, {self.high:g}{hi}"

    def describe(self) -> str:
        """The range in words: ``at least 1 and at most 65536``, ``greater than 0``."""
        parts = []
        if self.low > -INF:
            parts.append(f"{'greater than' if self.low_open else 'at least'} {self.low:g}")
        if self.high < INF:
            parts.append(f"{'less than' if self.high_open else 'at most'} {self.high:g}")
        return " and ".join(parts) or "any number"


@dataclass(frozen=True)
class Setting:
    """One training setting.

    Attributes
    ----------
    name : str
        The estimator's parameter (and `TrainConfig` field) name.
    kind : {"int", "float", "str", "bool", "seed", "device", "augment", "class_weight", \
"hidden", "teacher"}
        Its type; ``seed`` is a whole number or a NumPy Generator, ``device`` a device
        string or `Backend`, ``augment`` the dict of `AUGMENT_FIELDS`, ``hidden`` a
        width or a sequence of widths, ``teacher`` models to distil from.
    default : object
        The estimator's default (``MLPClassifier()``).
    help : str
        One sentence for ``--help`` and the docstring.
    unit : str
        What the number counts (``"epochs"``, ``"pixels"``...), empty for none.
    interval : Interval or None
        Valid range of a number.
    choices : tuple of str or None
        Valid values of a string.
    optional : bool
        Whether None is valid (and means "off").
    flag : str or None
        The ``mnist-xp train`` flag; None where the CLI has none.
    aliases : tuple of str
        Other spellings of the flag.
    metavar : str or None
        The flag's placeholder in ``--help``.
    cli_default : object
        The flag's default where it differs from `default` (the CLI's seed is 0).
    presets : dict
        The value each preset sets, where it differs from `default`.
    scope : {"model", "training", "run"}
        What it shapes: the network, the training run, or where and how it runs.
    group : str or None
        For the fields of a dict setting: that setting's name (``"augment"``).
    key : str or None
        The field's key in that dict, where it differs from `name`.
    """

    name: str
    kind: str
    default: Any
    help: str
    unit: str = ""
    interval: Interval | None = None
    choices: tuple[str, ...] | None = None
    optional: bool = False
    flag: str | None = None
    aliases: tuple[str, ...] = ()
    metavar: str | None = None
    cli_default: Any = None
    presets: Mapping[str, Any] = field(default_factory=dict)
    scope: str = "training"
    group: str | None = None
    key: str | None = None

    @property
    def dest(self) -> str:
        """The argparse attribute of the flag (``--elastic-sigma`` -> ``elastic_sigma``)."""
        return self.flag.lstrip("-").replace("-", "_") if self.flag else self.name

    @property
    def field_key(self) -> str:
        """The key of a group field in its dict."""
        return self.key or self.name


def _closed(low=-INF, high=INF) -> Interval:
    return Interval(low, high)


_POSITIVE_INT = _closed(1)
_NON_NEGATIVE = _closed(0)
_POSITIVE = Interval(0, INF, low_open=True)
_FRACTION = Interval(0, 1, high_open=True)  # [0, 1)

_DISTORTIONS = {
    "best": dict(rotate=8, zoom=0.08, shear=8, translate=1.5, elastic=20, sigma=4),
}

SETTINGS: tuple[Setting, ...] = (
    # -- the network ---------------------------------------------------------------------
    Setting("n_hidden", "hidden", 100, "width of the hidden layer, or the widths of "
            "up to 8, input side first (800,800 on the command line, (800, 800) from "
            "Python)", unit="units", interval=_closed(1, MAX_HIDDEN), flag="--hidden",
            metavar="N[,N...]", scope="model"),
    Setting("deskew", "bool", False, "shear every image upright about its centre of ink "
            "before the network sees it, in training and in every prediction (LeCun et al. "
            "1998; square images only)", flag="--deskew", scope="model",
            presets={"best": True}),
    Setting("activation", "str", "relu", "hidden-layer non-linearity", choices=ACTIVATIONS,
            flag="--activation", presets={"classic": "sigmoid"}, scope="model"),
    Setting("loss", "str", "cross_entropy",
            "softmax outputs with cross-entropy, or sigmoid outputs with half the squared "
            "error to one-hot targets (the textbook network)", choices=LOSSES, flag="--loss",
            presets={"classic": "squared_error"}, scope="model"),
    Setting("dtype", "str", "float32", "floating type of parameters and arithmetic",
            choices=DTYPES, flag="--dtype", scope="model"),
    # -- the run -------------------------------------------------------------------------
    Setting("epochs", "int", 15, "passes over the training data", unit="epochs",
            interval=_POSITIVE_INT, flag="--epochs", presets={"best": 30, "classic": 30}),
    Setting("min_steps", "int", 0, "train at least this many steps: on data smaller than "
            "MNIST, more epochs than --epochs (the default and best presets set the steps "
            "their epochs take on MNIST's 60,000 images; giving --epochs alone turns it off); "
            "0 is off", unit="steps", interval=_closed(0, MAX_MIN_STEPS), flag="--min-steps",
            presets={"default": 15 * MNIST_STEPS_PER_EPOCH, "best": 30 * MNIST_STEPS_PER_EPOCH}),
    Setting("batch_size", "int", 128, "samples per step (at most the training set's)",
            unit="samples",
            interval=_POSITIVE_INT, flag="--batch-size", presets={"classic": 10}),
    Setting("learning_rate", "float", 0.1, "step size: the peak of the schedule",
            interval=_POSITIVE, flag="--learning-rate", aliases=("--lr",),
            presets={"classic": 3.0}),
    Setting("momentum", "float", 0.9, "SGD momentum; 0 is plain SGD (unused by Adam)",
            interval=_FRACTION, flag="--momentum", presets={"classic": 0.0}),
    Setting("optimizer", "str", "sgd", "SGD with momentum, SGD with Nesterov momentum, "
            "Adam, or Adam with decoupled weight decay", choices=OPTIMIZERS, flag="--optimizer"),
    Setting("schedule", "str", "cosine", "learning-rate schedule over the whole run "
            "(see mnist_xp.training.schedule)", choices=SCHEDULES, flag="--schedule",
            presets={"classic": "constant"}),
    Setting("warmup", "float", 0.0, "ramp the learning rate up linearly from 0 over this "
            "many epochs (not with onecycle, which has its own)", unit="epochs",
            interval=_NON_NEGATIVE, flag="--warmup", metavar="EPOCHS"),
    Setting("weight_decay", "float", 0.0, "L2 penalty on the weight matrices (decoupled "
            "with adamw)", interval=_NON_NEGATIVE, flag="--weight-decay"),
    Setting("label_smoothing", "float", 0.0, "targets are 1 - this on the true class plus "
            "this / n_classes everywhere", interval=_FRACTION, flag="--label-smoothing"),
    Setting("dropout", "float", 0.0, "probability of dropping each hidden unit at each "
            "training step (Srivastava et al. 2014); 0 is off", interval=_FRACTION,
            flag="--dropout", metavar="P"),
    Setting("temperature", "float", 2.0, "with a teacher: the softmax temperature of its "
            "soft targets and of the student's matching outputs (Hinton et al. 2015)",
            interval=_POSITIVE, flag="--temperature", metavar="T"),
    Setting("distill_weight", "float", 0.9, "with a teacher: the soft targets' share of "
            "the loss, the labels' being 1 - this (the loss shown is then (1 - this) x "
            "cross-entropy + this x T^2 x KL(teacher || student))", interval=_closed(0, 1),
            flag="--distill-weight", metavar="A"),
    Setting("shift", "int", 0, "random translation of whole batches by up to this many "
            "pixels each way; needs square images (0: off)", unit="pixels",
            interval=_NON_NEGATIVE, flag="--shift", presets={"default": 1}),
    Setting("augment", "augment", None, "per-image random affine and elastic distortions "
            "of square images: a dict of rotate, zoom, shear, translate, elastic and sigma "
            "(see mnist_xp.augment.Distortion); None or {} is off; not with shift",
            optional=True, presets=_DISTORTIONS),
    Setting("class_weight", "class_weight", None, "weights of the classes in the loss: a "
            "dict of label to weight (1 for labels it lacks), 'balanced' (n_samples / "
            "(n_classes * count of the class)), or None for 1 each; multiplies fit's "
            "sample_weight", optional=True),
    Setting("validation_fraction", "float", 0.0, "hold out this fraction of the training "
            "images, score it after every epoch and keep the best epoch's weights (the "
            "test set is only reported)", interval=_FRACTION, flag="--validation",
            metavar="FRACTION"),
    Setting("n_iter_no_change", "int", None, "stop after this many epochs without a better "
            "validation accuracy, or, without a held-out set, a lower training loss", unit="epochs",
            interval=_POSITIVE_INT, optional=True, flag="--patience", metavar="EPOCHS"),
    Setting("teacher", "teacher", None, "distil from these models: a fitted "
            "MLPClassifier or Ensemble, a model file, or a list of them (their "
            "probabilities averaged); their soft targets are computed on each augmented "
            "batch the student sees. None trains on the labels alone", optional=True,
            scope="run"),
    Setting("warm_start", "bool", False, "start fit from the weights of the previous fit "
            "(same features and classes) instead of new random ones", scope="run"),
    # -- the fields of `augment` (each a flag of its own) ----------------------------------
    Setting("rotate", "float", 0.0, "largest rotation", unit="degrees",
            interval=_closed(0, 180), flag="--rotate", metavar="DEG", group="augment"),
    Setting("zoom", "float", 0.0, "largest relative change of scale", interval=_FRACTION,
            flag="--zoom", metavar="FRAC", group="augment"),
    Setting("shear", "float", 0.0, "largest shear angle", unit="degrees",
            interval=Interval(0, 90, high_open=True), flag="--shear", metavar="DEG",
            group="augment"),
    Setting("translate", "float", 0.0, "largest translation along each axis",
            unit="pixels", interval=_NON_NEGATIVE, flag="--translate", metavar="PX",
            group="augment"),
    Setting("elastic", "float", 0.0, "strength (alpha) of the elastic distortion (Simard "
            "et al. 2003)", interval=_NON_NEGATIVE, flag="--elastic", metavar="ALPHA",
            group="augment"),
    Setting("elastic_sigma", "float", 4.0, "smoothness of the elastic distortion",
            unit="pixels", interval=_POSITIVE, flag="--elastic-sigma", metavar="PX",
            group="augment", key="sigma"),
    # -- where and how it runs -------------------------------------------------------------
    Setting("device", "device", "auto", "auto, cpu, cuda or cuda:N (see mnist_xp.get_backend); "
            "an unusable explicit CUDA device falls back to the CPU with a "
            "DeviceFallbackWarning", scope="run"),
    Setting("random_state", "seed", None, "seed of the initial weights, shuffles and "
            "augmentation", interval=_NON_NEGATIVE, optional=True, flag="--seed",
            cli_default=0, scope="run"),
    Setting("verbose", "bool", False, "draw a progress line on standard error (on a "
            "terminal) and print one line per epoch", scope="run"),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
#: The fields of the ``augment`` dict, by key (``sigma`` is ``--elastic-sigma``).
AUGMENT_FIELDS: dict[str, Setting] = {s.field_key: s for s in SETTINGS if s.group == "augment"}
#: The estimator's parameters, in constructor order.
ESTIMATOR_SETTINGS: tuple[Setting, ...] = tuple(s for s in SETTINGS if s.group is None)
TRAINING_SETTINGS = tuple(s for s in ESTIMATOR_SETTINGS if s.scope == "training")


def _preset(name: str) -> dict:
    """The model and training settings of preset `name`: its column, else the default."""
    return {s.name: s.presets.get(name, s.default) for s in ESTIMATOR_SETTINGS
            if s.scope != "run"}


#: Named recipes: every model and training setting of each preset (the table's
#: ``presets`` column, else the default). ``default`` is the quick recipe (the estimator's
#: defaults plus 1-pixel batch shifts and MNIST's number of steps as ``min_steps``, made
#: for MNIST); ``best`` the most accurate
#: (per-image affine and elastic distortions, twice the epochs); ``classic`` the textbook
#: network (sigmoid units, squared error, plain SGD, Nielsen's chapter 1 settings).
PRESETS: dict[str, dict] = {name: _preset(name) for name in PRESET_NAMES}


def preset_settings(name: str) -> dict:
    """Every estimator setting of preset `name` (a fresh dict): run settings at their defaults.

    Raises
    ------
    ValueError
        `name` is not one of `PRESET_NAMES`.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {list(PRESET_NAMES)}")
    values = {s.name: s.default for s in ESTIMATOR_SETTINGS}
    values.update({k: dict(v) if isinstance(v, dict) else v for k, v in PRESETS[name].items()})
    return values


# -- checking one value ----------------------------------------------------------------------

Show = Callable[[str, Any], str]


_BARE = object()  # show(name) without a value: the bare name or flag


def python_name(name: str, value: Any = _BARE) -> str:
    """How Python callers see a setting: ``warmup=20``, or ``warmup`` without a value."""
    return name if value is _BARE else f"{name}={value!r}"


def flag_name(name: str, value: Any = _BARE) -> str:
    """How CLI users see a setting: ``--warmup 20`` (the parameter name if it has no flag)."""
    setting = BY_NAME.get(name)
    if setting is None or setting.flag is None:
        return python_name(name, value)
    if value is _BARE:
        return setting.flag
    if isinstance(value, bool):  # a switch: --deskew or --no-deskew
        return setting.flag if value else "--no-" + setting.flag[2:]
    shown = f"{value:g}" if isinstance(value, float) else value
    return f"{setting.flag} {shown}"


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_value(setting: Setting, value, show: Show = python_name) -> None:
    """Raise `SettingError` unless `value` is valid for `setting` on its own.

    Parameters
    ----------
    setting : Setting
    value : object
    show : callable
        ``show(name, value)`` names the setting in the message (`python_name` or
        `flag_name`).

    Raises
    ------
    SettingError
        Wrong type, out of range, or not one of the choices.
    """
    if value is None and setting.optional:
        return
    where = show(setting.name, value)
    kind = setting.kind
    if kind == "augment":
        _check_augment(value, show)
        return
    if kind == "class_weight":
        ok = value == "balanced" or (isinstance(value, Mapping) and all(
            _is_real(w) and math.isfinite(w) and w >= 0 for w in value.values()))
        if not ok:
            raise SettingError(f"{where}: must be 'balanced', or a dict of label to a "
                               "finite weight >= 0", setting.name)
        return
    if kind == "hidden":
        if isinstance(value, np.ndarray) and value.ndim == 1:
            value = tuple(value.tolist())
        widths = value if isinstance(value, (tuple, list)) else (value,)
        if not widths or len(widths) > MAX_HIDDEN_LAYERS or not all(_is_int(w) for w in widths):
            raise SettingError(f"{where}: must be a whole number, or a sequence of 1 to "
                               f"{MAX_HIDDEN_LAYERS} whole numbers (one per hidden layer)",
                               setting.name)
        for w in widths:
            if w not in setting.interval:
                raise SettingError(f"{where}: each width must be "
                                   f"{setting.interval.describe()}", setting.name)
        return
    if kind == "teacher":
        _check_teacher(value, where, setting.name)
        return
    if kind == "device":
        if isinstance(value, str):  # a Backend object is already resolved
            try:
                parse_device(value)
            except DeviceError as exc:
                raise SettingError(f"{where}: {exc}", setting.name) from None
        return
    if kind == "seed":
        if isinstance(value, np.random.Generator):
            return
        kind = "int"
    if kind == "bool":
        if not (isinstance(value, (bool, np.bool_)) or (_is_int(value) and value in (0, 1))):
            raise SettingError(f"{where}: must be true or false", setting.name)
        return
    if kind == "str":
        if not isinstance(value, str) or (setting.choices and value not in setting.choices):
            raise SettingError(f"{where}: must be one of {', '.join(setting.choices or ())}",
                               setting.name)
        return
    if kind == "int" and not _is_int(value):
        raise SettingError(f"{where}: must be a whole number", setting.name)
    if kind == "float" and not (_is_real(value) and math.isfinite(value)):
        raise SettingError(f"{where}: must be a finite number", setting.name)
    if setting.interval is not None and value not in setting.interval:
        raise SettingError(f"{where}: must be {setting.interval.describe()}", setting.name)


def _check_teacher(value, where: str, name: str) -> None:
    """A teacher: a model file path, a fitted model (anything with ``predict_proba``), or a
    non-empty list of them; whether it fits the data is checked when it is loaded."""
    import os

    items = value if isinstance(value, (list, tuple)) else [value]
    ok = bool(items) and all(isinstance(t, (str, os.PathLike)) or hasattr(t, "predict_proba")
                             for t in items)
    if not ok:
        raise SettingError(f"{where}: must be a fitted MLPClassifier or Ensemble, a model "
                           "file, or a list of them", name)


def _check_augment(value, show: Show) -> None:
    """The ``augment`` dict: known keys, each value valid."""
    if not isinstance(value, Mapping):
        raise SettingError(f"{show('augment', value)}: must be a dict of "
                           f"{', '.join(AUGMENT_FIELDS)}, or None", "augment")
    unknown = sorted(set(value) - set(AUGMENT_FIELDS))
    if unknown:
        raise SettingError(f"{show('augment', dict(value))}: unknown distortion settings "
                           f"{unknown}; known: {list(AUGMENT_FIELDS)}", "augment")
    for key, v in value.items():
        check_value(AUGMENT_FIELDS[key], v, show)


# -- the rules that tie settings together ------------------------------------------------------

def augment_active(augment) -> bool:
    """Whether an ``augment`` dict turns any distortion on (sigma alone does not)."""
    return any(v for k, v in (augment or {}).items() if k != "sigma")


@dataclass(frozen=True)
class Rule:
    """A constraint between settings: `broken(values)` is True when it does not hold."""

    names: tuple[str, ...]
    broken: Callable[[Mapping[str, Any]], bool]
    message: Callable[[Mapping[str, Any], Show], str]


RULES: tuple[Rule, ...] = (
    Rule(("warmup", "epochs"),
         lambda v: v["warmup"] > v["epochs"],
         lambda v, show: f"{show('warmup', v['warmup'])} is longer than the run "
                         f"({_count(v['epochs'], 'epoch')})"),
    Rule(("warmup", "schedule"),
         lambda v: bool(v["warmup"]) and v["schedule"] == "onecycle",
         lambda v, show: f"{show('warmup', v['warmup'])} cannot be combined with "
                         f"{show('schedule', 'onecycle')}, which warms up on its own "
                         "(over its first 30% of steps); drop one of them"),
    Rule(("shift", "augment"),
         lambda v: bool(v["shift"]) and augment_active(v["augment"]),
         lambda v, show: f"{show('shift', v['shift'])} cannot be combined with per-image "
                         "distortions (set by the preset or given), whose translate setting "
                         "shifts too; drop one of them"),
    Rule(("teacher", "loss"),
         lambda v: v.get("teacher") is not None and v["loss"] != "cross_entropy",
         lambda v, show: f"a teacher's soft targets need {show('loss', 'cross_entropy')} "
                         f"(got {show('loss', v['loss'])})"),
    Rule(("optimizer", "momentum"),
         lambda v: v["optimizer"] == "nesterov" and not v["momentum"],
         lambda v, show: f"{show('optimizer', 'nesterov')} needs a momentum > 0 "
                         f"(got {show('momentum', v['momentum'])})"),
)


def check_settings(values: Mapping[str, Any], show: Show = python_name) -> None:
    """Check settings one by one, then the `RULES` between them.

    Parameters
    ----------
    values : mapping
        Setting name -> value; settings it lacks take their defaults for the rules.
    show : callable
        How messages name a setting (`python_name` or `flag_name`).

    Raises
    ------
    SettingError
        The first setting or rule that fails, in one line.
    """
    for name in values:
        if name in BY_NAME:
            check_value(BY_NAME[name], values[name], show)
    full = {s.name: s.default for s in ESTIMATOR_SETTINGS}
    full.update(values)
    for rule in RULES:
        if rule.broken(full):
            raise SettingError(rule.message(full, show), rule.names[0])


def check_against_data(values: Mapping[str, Any], n_samples: int, n_features: int,
                       show: Show = python_name, *, clip_batch: bool = True) -> None:
    """The rules that need the data: square images, room for a validation set and a batch.

    Parameters
    ----------
    values : mapping
        Setting name -> value (``shift``, ``augment``, ``validation_fraction``,
        ``batch_size``); missing ones take their defaults.
    n_samples, n_features : int
        The training data's shape.
    show : callable
        How messages name a setting (`python_name` or `flag_name`).
    clip_batch : bool
        Whether a batch larger than the data is clipped to it (the estimator) or
        refused (the CLI, where it is more likely a typo).

    Raises
    ------
    SettingError
    """
    v = {s.name: s.default for s in ESTIMATOR_SETTINGS}
    v.update(values)
    side = math.isqrt(n_features)
    square = side * side == n_features
    shift, augment = v["shift"], v["augment"]
    if shift and not square:
        raise SettingError(f"{show('shift', shift)}: shifts need square images; {n_features} "
                           "features are not", "shift")
    if shift and shift >= side:
        raise SettingError(f"{show('shift', shift)} must be less than the image side ({side})",
                           "shift")
    if v["deskew"] and not square:
        raise SettingError(f"{show('deskew', True)}: deskewing needs square images; "
                           f"{n_features} features are not", "deskew")
    if augment_active(augment) and not square:
        raise SettingError(f"distortions need square images; {n_features} features are not",
                           "augment")
    translate = (augment or {}).get("translate", 0)
    if augment_active(augment) and translate >= side:
        raise SettingError(f"{show('translate', translate)} must be less than the image side "
                           f"({side})", "augment")
    frac = v["validation_fraction"]
    n_val = validation_size(frac, n_samples)
    if frac and not 1 <= n_val < n_samples:
        raise SettingError(f"{show('validation_fraction', frac)} of {_count(n_samples, 'sample')} "
                           f"leaves {n_val} for validation; it needs at least one of each",
                           "validation_fraction")
    n_train = n_samples - n_val
    if not clip_batch and v["batch_size"] > n_train:
        left = f" that {show('validation_fraction', frac)} leaves" if frac else ""
        raise SettingError(f"{show('batch_size', v['batch_size'])} is larger than the training "
                           f"set{left} ({_count(n_train, 'image')}); use at most {n_train}",
                           "batch_size")


def run_epochs(values: Mapping[str, Any], n_train: int) -> int:
    """The epochs a run of `values` trains on `n_train` images: ``epochs``, or more where
    ``min_steps`` asks for more steps than that many epochs take.

    Parameters
    ----------
    values : mapping
        ``epochs``, ``batch_size`` and ``min_steps`` (missing ones take their defaults).
    n_train : int
        The training images, after any validation split.

    Returns
    -------
    int
    """
    v = {s.name: s.default for s in ESTIMATOR_SETTINGS}
    v.update(values)
    steps = -(-n_train // max(1, min(v["batch_size"], n_train)))
    return max(v["epochs"], -(-(v["min_steps"] or 0) // steps))


def preset_overrides(name: str, overrides: Mapping[str, Any]) -> dict:
    """Preset `name`'s settings with `overrides`; an ``epochs`` given without ``min_steps``
    turns the preset's ``min_steps`` off, so a length asked for is the length run."""
    values = preset_settings(name)
    values.update(overrides)
    if "epochs" in overrides and "min_steps" not in overrides:
        values["min_steps"] = 0
    return values


def validation_size(fraction: float, n_samples: int) -> int:
    """How many of `n_samples` a validation fraction holds out (0 when it is 0)."""
    return int(round(fraction * n_samples))


def _count(n: int, word: str) -> str:
    """'1 epoch', '2 epochs', '60,000 images'."""
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def parameters_doc() -> str:
    """The numpydoc "Parameters" entries of the estimator's settings, from the table."""
    lines = []
    for s in ESTIMATOR_SETTINGS:
        kind = {"augment": "dict or None", "device": "str or Backend",
                "class_weight": "dict, 'balanced' or None",
                "seed": "int, numpy.random.Generator", "hidden": "int or tuple of int",
                "teacher": "MLPClassifier, Ensemble, path, list of them, or None"}.get(s.kind, s.kind)
        if s.choices:
            kind = "{" + ", ".join(f'"{c}"' for c in s.choices) + "}"
        elif s.optional and s.kind not in ("augment", "class_weight", "teacher"):
            kind += " or None"
        lines.append(f"{s.name} : {kind}, default {s.default!r}")
        text = s.help[0].upper() + s.help[1:]
        extras = [f"unit: {s.unit}"] if s.unit else []
        if s.interval is not None:
            extras.append(f"range {s.interval}")
        if s.flag:
            extras.append(f"CLI {s.flag}")
        if s.presets:
            extras.append("presets: " + ", ".join(f"{k} {v!r}" for k, v in s.presets.items()))
        body = f"{text}." + (f" ({'; '.join(extras)})" if extras else "")
        lines += textwrap.wrap(body, width=84, initial_indent="    ", subsequent_indent="    ")
    return "\n".join(lines)
