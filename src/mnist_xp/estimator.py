"""`MLPClassifier`: the network behind a scikit-learn-style estimator.

scikit-learn is not a dependency: the estimator protocol (``get_params``,
``set_params``, ``fit``/``predict``/``score``, fitted attributes ending in ``_``) is
implemented here, and the scikit-learn tags are built only when scikit-learn asks.
The constructor, its parameter documentation and the parameter checks come from the
settings table (`mnist_xp.settings`), as scikit-learn's ``_parameter_constraints`` do.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import warnings

import numpy as np

from .backend import Backend, as_array_of, get_backend, numpy_dtype, to_numpy
from .deskew import deskew
from .errors import PixelScaleWarning
from .inference import predict_scores
from .model import Architecture, init_params, probabilities
from .reporting.progress import EpochProgress, format_epoch
from .settings import (
    ESTIMATOR_SETTINGS,
    PRESETS,
    TRAINING_SETTINGS,
    check_against_data,
    check_settings,
    parameters_doc,
    preset_overrides,
    run_epochs,
    validation_size,
)
from .training import TrainConfig, TrainingHooks, train
from .training.teacher import resolve_teacher
from .validation import check_X, check_y, not_fitted

__all__ = ["MLPClassifier", "PRESETS"]


def _make_init():
    """The estimator's ``__init__``, generated from the settings table.

    Written out as source (as `dataclasses` does) so that `inspect.signature` -- which
    scikit-learn's ``get_params`` and ``clone`` read -- sees every parameter with its
    default: the first positional, the rest keyword-only.
    """
    names = [s.name for s in ESTIMATOR_SETTINGS]
    args = [f"{names[0]}=_defaults[{names[0]!r}]", "*"]
    args += [f"{n}=_defaults[{n!r}]" for n in names[1:]]
    body = "\n".join(f"    self.{n} = {n}" for n in names)
    namespace = {"_defaults": {s.name: s.default for s in ESTIMATOR_SETTINGS}}
    exec(f"def __init__(self, {', '.join(args)}):\n{body}\n", namespace)  # noqa: S102
    init = namespace["__init__"]
    init.__doc__ = "Store the settings as given; `fit` checks them (scikit-learn's convention)."
    return init


class MLPClassifier:
    __doc__ = """A multilayer perceptron classifier on NumPy or CuPy (one hidden layer by default).

    The constructor only stores its arguments (scikit-learn's convention); `fit` checks
    them against the settings table (`mnist_xp.settings`), which is also where the CLI's
    flags and the presets come from.

    Parameters
    ----------
{parameters}

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, sorted.
    n_features_in_ : int
        Number of input features seen in `fit`.
    params_ : dict of arrays
        ``W1 (n_features_in_, n_hidden)``, ``b1 (n_hidden,)``,
        ``W2 (n_hidden, n_classes)``, ``b2 (n_classes,)`` on the backend's device; a
        deeper network has ``W3, b3``... for each further layer.
    backend_ : Backend
        Where the parameters live and the math runs.
    engine_ : EngineChoice
        The engine that trained the model and, when it is not the backend's fast one,
        why (``str(clf.engine_)``: e.g. ``"generic array-API path (adam has no fused
        CUDA kernel yet)"``). None for a loaded model.
    history_ : list of dict
        Per-epoch ``train_loss``, ``train_accuracy``, ``val_accuracy``,
        ``test_accuracy``, ``seconds``, ``device``, ``engine``, ``engine_reason``.
    best_epoch_ : int
        The epoch whose weights were kept (the last one without a validation set).
    partial_state_ : TrainState
        The state after the last epoch (weights, optimizer buffers, generator) that
        `partial_fit` continues from; it makes a pickled model a few times larger than
        its model file (`mnist_xp.save` keeps only the weights).

    Notes
    -----
    Inputs: uint8 arrays are read as pixel intensities in [0, 255] and scaled by
    1/255 on the device; arrays of any other numeric dtype (other integers
    included) are converted to `dtype` and used as given, so scale them yourself. NumPy,
    CuPy and array_api_strict arrays are accepted; `predict` and `predict_proba` return
    arrays of the same library as their input.
    """.format(parameters="\n".join("    " + line for line in parameters_doc().splitlines()))

    _estimator_type = "classifier"  # for scikit-learn < 1.6

    __init__ = _make_init()

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "MLPClassifier":
        """An estimator with the settings of preset `name` (see `PRESETS`), then `overrides`.

        An ``epochs`` override without ``min_steps`` turns the preset's ``min_steps`` off:
        the run is then exactly that many epochs.

        Raises
        ------
        ValueError
            Unknown preset.
        """
        return cls(**preset_overrides(name, overrides))

    # -- scikit-learn estimator protocol -------------------------------------------

    @classmethod
    def _get_param_names(cls) -> list[str]:
        return sorted(s.name for s in ESTIMATOR_SETTINGS)

    def get_params(self, deep: bool = True) -> dict:
        """The constructor arguments, as a dict (scikit-learn protocol)."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params) -> "MLPClassifier":
        """Set constructor arguments by name; returns self (scikit-learn protocol).

        As in `from_preset`, ``epochs`` set without ``min_steps`` turns ``min_steps`` off,
        so a grid search over ``epochs`` trains the epochs it names.
        """
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for MLPClassifier; valid: {valid}")
            setattr(self, name, value)
        if "epochs" in params and "min_steps" not in params:
            self.min_steps = 0
        return self

    def __sklearn_clone__(self) -> "MLPClassifier":
        """scikit-learn's ``clone``: unfitted copies of the settings, but the same teacher.

        A teacher is a fitted model the student only reads; ``clone`` would otherwise make
        it an unfitted copy, and every fit of a cross-validation or grid search would fail.
        """
        from sklearn.base import clone

        params = self.get_params()
        teacher = params.pop("teacher")
        return type(self)(**{k: clone(v, safe=False) for k, v in params.items()},
                          teacher=teacher)

    def __sklearn_tags__(self):
        from sklearn.utils import ClassifierTags, InputTags, Tags, TargetTags

        return Tags(estimator_type="classifier", target_tags=TargetTags(required=True),
                    classifier_tags=ClassifierTags(), input_tags=InputTags())

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "params_")

    def __repr__(self) -> str:
        defaults = {k: v.default for k, v in inspect.signature(type(self).__init__).parameters.items()}
        changed = [f"{k}={v!r}" for k, v in self.get_params().items()
                   if k in defaults and not _same(v, defaults[k])]
        return f"{type(self).__name__}({', '.join(changed)})"

    def __getstate__(self):
        # Parameters travel as NumPy arrays; the Backend pickles as its device string.
        state = dict(self.__dict__)
        if "params_" in state:
            state["params_"] = {k: to_numpy(v) for k, v in state["params_"].items()}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if "params_" in state:
            self._place(state["backend_"], state["params_"])

    # -- fitting --------------------------------------------------------------------

    def _architecture(self, n_features: int, n_classes: int) -> Architecture:
        return Architecture(n_features, self.n_hidden, n_classes, self.activation, self.loss)

    def _train_config(self, n_samples: int) -> TrainConfig:
        """The run's settings; the batch is clipped to the data."""
        values = {s.name: getattr(self, s.name) for s in TRAINING_SETTINGS}
        values["batch_size"] = min(self.batch_size, n_samples)
        values["epochs"] = run_epochs(values, n_samples)
        return TrainConfig(**values)

    def _validation_split(self, n_samples: int):
        """(training rows, validation rows) as host index arrays; (None, None) when off."""
        frac = self.validation_fraction
        if not frac:
            return None, None
        n_val = validation_size(frac, n_samples)
        # a generator of its own, so that turning validation on does not change the
        # initial weights or the shuffles drawn from random_state
        seed = self.random_state  # a Generator is drawn from, and so moves on
        if seed is not None and not isinstance(seed, np.random.Generator):
            seed = [seed, 1]
        perm = np.random.default_rng(seed).permutation(n_samples)
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])

    def _place(self, backend: Backend, host_params: dict) -> None:
        """Move host parameters onto `backend` and remember both."""
        self.backend_ = backend
        self.params_ = {k: backend.asarray(v) for k, v in host_params.items()}

    def fit(self, X, y, sample_weight=None, *, eval_set=None, test_set=None, on_epoch=None,
            progress=None, resume=None, on_checkpoint=None, checkpoint_every=1,
            should_stop=None, on_engine=None) -> "MLPClassifier":
        """Train from scratch on `X`, `y`.

        The fitted attributes are set together once training has finished, so a
        failed or interrupted `fit` leaves the estimator as it was.

        Parameters
        ----------
        X : array, shape (n_samples, n_features)
            uint8 pixels or numbers (NumPy, or CuPy on a CUDA backend); no NaN or inf.
        y : array, shape (n_samples,)
            Class labels: integers, strings, or floats with integral values.
        sample_weight : array, shape (n_samples,), optional
            Each sample's weight in the loss, finite and >= 0 (times ``class_weight``);
            a step's mean loss is over its total weight, so a weight of k counts a
            sample as k copies. Every engine takes weights (the fused CUDA kernels
            too).
        eval_set : tuple (X_eval, y_eval), optional
            Scored after every epoch into ``history_[i]["test_accuracy"]``; labels
            must be among those of `y`. With ``n_iter_no_change`` and no
            ``validation_fraction`` it is the validation set instead: it drives early
            stopping and the choice of the kept epoch, and is reported as
            ``val_accuracy``.
        test_set : tuple (X_test, y_test), optional
            Scored after every epoch into ``test_accuracy`` and never used to choose
            anything (what ``mnist-xp train`` passes); it takes the place of
            `eval_set` in ``test_accuracy``.
        on_epoch : callable, optional
            Called with each epoch's record (a dict) as soon as it is known.
        progress : EpochProgress, optional
            Live display; by default one is drawn when ``verbose`` is true.
        resume, on_checkpoint, checkpoint_every, should_stop
            Resumable training; see `mnist_xp.training.train` and `TrainingHooks`.
            `resume` is a `mnist_xp.training.TrainState` of a run with these settings
            on this data.
        on_engine : callable, optional
            Called with the `EngineChoice` before the first epoch (``engine_`` holds it
            after `fit`).

        Returns
        -------
        self

        Raises
        ------
        SettingError
            A setting out of range or at odds with another or with the data (a
            `ValueError`).
        """
        settings = self.get_params()
        check_settings(settings)
        backend = get_backend(self.device)
        dtype = np.dtype(self.dtype)
        x_dev = _to_device(X, backend, dtype)
        n_samples, n_features = x_dev.shape
        classes, y_index = _encode_labels(y, n_samples)
        check_against_data(settings, n_samples, n_features)
        x_dev = self._prepared(x_dev, backend)
        weights = _sample_weights(sample_weight, self.class_weight, classes, y_index)
        arch = self._architecture(n_features, len(classes))
        held_out = [None if s is None else self._held_out(s, backend, dtype, classes, n_features)
                    for s in (eval_set, test_set)]
        train_rows, val_rows = self._validation_split(n_samples)
        val_dev = None
        if train_rows is not None:
            with backend.activate():
                rows, vrows = backend.asarray(train_rows), backend.asarray(val_rows)
                val_dev = (backend.xp.take(x_dev, vrows, axis=0),
                           backend.asarray(y_index[val_rows]))
                x_dev, y_index = backend.xp.take(x_dev, rows, axis=0), y_index[train_rows]
            weights = None if weights is None else weights[train_rows]
            n_samples = len(train_rows)
            if weights is not None and not weights.sum() > 0:
                raise ValueError("the sample weights left for training after the "
                                 "validation split are all zero; give some a weight above zero")
        config = self._train_config(n_samples)
        eval_dev, test_dev = held_out
        if eval_dev is not None and self.n_iter_no_change is not None and val_dev is None:
            # early stopping watches the given set: it is the validation set now
            val_dev, eval_dev = eval_dev, None
        eval_dev = test_dev if test_dev is not None else eval_dev
        if progress is None and self.verbose:
            progress = EpochProgress(config.epochs)
        if on_epoch is None and self.verbose:
            on_epoch = _print_epoch
        chosen = []

        def engine_chosen(choice):
            chosen.append(choice)
            if on_engine is not None:
                on_engine(choice)

        finished = []
        hooks = TrainingHooks(on_engine=engine_chosen, on_epoch=on_epoch, progress=progress,
                              on_checkpoint=on_checkpoint, checkpoint_every=checkpoint_every,
                              should_stop=should_stop, on_finish=finished.append)
        rng = np.random.default_rng(self.random_state)
        params = {k: backend.asarray(v) for k, v in
                  self._initial_params(arch, dtype, rng, classes).items()}
        history = train(params, x_dev, backend.asarray(y_index), arch=arch, config=config,
                        backend=backend, rng=rng, eval_set=eval_dev, val_set=val_dev,
                        hooks=hooks, resume=resume,
                        sample_weight=None if weights is None else backend.asarray(weights, dtype),
                        teacher=self._teacher(classes, n_features, dtype, backend))
        self._fitted(classes, n_features, history, backend, params, chosen[0])
        self.partial_state_ = finished[0]  # what partial_fit continues from
        self.partial_settings_ = _layout_settings(settings)
        return self

    def _teacher(self, classes, n_features: int, dtype, backend: Backend):
        """The `teacher` setting loaded and checked against the data, or None."""
        if self.teacher is None:
            return None
        return resolve_teacher(self.teacher, classes=classes, n_features=n_features,
                               dtype=dtype, backend=backend, temperature=self.temperature,
                               weight=self.distill_weight, deskew=self.deskew)

    def _held_out(self, pair, backend: Backend, dtype, classes, n_features: int):
        """An (X, y) pair scored after every epoch, on the device; labels among `classes`."""
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2) or isinstance(pair[0], tuple):
            raise ValueError("eval_set and test_set must each be one (X, y) pair")
        x, y = pair
        x_dev = _to_device(x, backend, dtype, n_features)
        labels = check_y(y, x_dev.shape[0])
        return self._prepared(x_dev, backend), backend.asarray(_class_indices(classes, labels))

    def _prepared(self, x_dev, backend: Backend):
        """The images as the network reads them: deskewed on the device with ``deskew``.

        Raises ValueError for negative values with ``deskew``: the moments weigh pixels
        by their values, so standardized features or other signed data have no ink
        to straighten.
        """
        if not self.deskew:
            return x_dev
        xp = backend.xp
        with backend.activate():
            # sync point: one device read per fit/predict call, for float input only
            if x_dev.dtype != xp.uint8 and x_dev.shape[0] and float(xp.min(x_dev)) < 0:
                raise ValueError("deskew=True needs pixel intensities >= 0 (uint8 0..255, "
                                 "or floats such as 0..1); X holds negative values. Give "
                                 "the images unscaled, or deskew=False for other data")
            return deskew(x_dev, xp)

    def _initial_params(self, arch: Architecture, dtype, rng, classes) -> dict:
        """New random weights, or with ``warm_start`` the fitted ones (host arrays)."""
        if not (self.warm_start and hasattr(self, "params_")):
            return init_params(arch, dtype, rng)
        if self.n_features_in_ != arch.n_inputs or not np.array_equal(self.classes_, classes):
            raise ValueError("warm_start needs the features and classes of the previous fit "
                             f"({self.n_features_in_} features, classes {self.classes_.tolist()})")
        params = {k: np.array(to_numpy(v), dtype=dtype) for k, v in self.params_.items()}
        if {k: v.shape for k, v in params.items()} != arch.shapes:
            raise ValueError(f"warm_start needs the layers of the previous fit "
                             f"({Architecture(arch.n_inputs, _hidden_of(params), arch.n_outputs).label})")
        return params

    def _fitted(self, classes, n_features, history, backend, params, engine) -> None:
        """Set the fitted attributes together, once training has finished."""
        best = [r["epoch"] for r in history if r.get("best")]
        self.classes_, self.n_features_in_, self.history_ = classes, n_features, history
        self.best_epoch_ = best[0] if best else history[-1]["epoch"]
        self.backend_, self.params_, self.engine_ = backend, params, engine

    def partial_fit(self, X, y, classes=None, sample_weight=None) -> "MLPClassifier":
        """Train one more epoch on `X`, `y`, continuing the previous calls.

        The weights, the optimizer's buffers and the random generator carry over from
        call to call (and from a `fit` before), so calls on the same data in turn equal
        ``fit`` with that many epochs, bit for bit, when ``schedule="constant"``:
        partial_fit always steps at ``learning_rate`` (the length of the run is not
        known), without warm-up, validation split or early stopping. After a `fit` with
        a validation set it continues from that run's last epoch, not its kept one.

        Parameters
        ----------
        X : array, shape (n_samples, n_features)
        y : array, shape (n_samples,)
            Labels among `classes`.
        classes : array, shape (n_classes,), optional
            Every label the model will ever see; needed on the first call (and only
            then), as scikit-learn's ``partial_fit`` needs it.
        sample_weight : array, shape (n_samples,), optional
            As for `fit`.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            No `classes` on the first call, labels outside them, or other features.
        """
        settings = self.get_params()
        check_settings(settings)
        if self.class_weight == "balanced":
            raise ValueError("class_weight='balanced' needs all the data at once; partial_fit "
                             "sees it a part at a time: give class_weight as a dict")
        state = getattr(self, "partial_state_", None)
        fitted = hasattr(self, "params_")  # by fit, partial_fit or mnist_xp.load
        if state is not None:
            self._check_unchanged(state, settings)
            # no held-out set here: nothing to choose by, and the last weights go on
            state = dataclasses.replace(state, best=None)
        if fitted:
            if classes is not None and not np.array_equal(np.unique(to_numpy(classes)),
                                                          self.classes_):
                raise ValueError(f"classes= differs from the model's {self.classes_.tolist()}")
            classes = self.classes_
        elif classes is None:
            raise ValueError("the first call to partial_fit needs classes=, every label "
                             "the model will see")
        else:
            classes, _ = _encode_labels(to_numpy(classes), len(to_numpy(classes)))
        backend = self.backend_ if fitted else get_backend(self.device)
        dtype = np.dtype(self.dtype)
        x_dev = _to_device(X, backend, dtype, self.n_features_in_ if fitted else None)
        n_samples, n_features = x_dev.shape
        y_index = _class_indices(classes, check_y(y, n_samples))
        check_against_data({**settings, "n_iter_no_change": None, "validation_fraction": 0.0},
                           n_samples, n_features)
        x_dev = self._prepared(x_dev, backend)
        weights = _sample_weights(sample_weight, self.class_weight, classes, y_index)
        arch = self._architecture(n_features, len(classes))
        values = {s.name: getattr(self, s.name) for s in TRAINING_SETTINGS}
        values.update(epochs=1 if state is None else state.epoch + 1, schedule="constant",
                      warmup=0.0, validation_fraction=0.0, n_iter_no_change=None,
                      batch_size=min(self.batch_size, n_samples))
        rng = np.random.default_rng(self.random_state)
        if fitted:  # a loaded model has no state: its weights, with a fresh optimizer
            host = {k: np.array(to_numpy(v), dtype=dtype) for k, v in self.params_.items()}
        else:
            host = init_params(arch, dtype, rng)
        params = {k: backend.asarray(v) for k, v in host.items()}
        states, chosen = [], []
        hooks = TrainingHooks(on_engine=chosen.append, on_checkpoint=states.append)
        history = train(params, x_dev, backend.asarray(y_index), arch=arch,
                        config=TrainConfig(**values), backend=backend, rng=rng, hooks=hooks,
                        resume=state,
                        sample_weight=None if weights is None else backend.asarray(weights, dtype),
                        teacher=self._teacher(classes, n_features, dtype, backend))
        self._fitted(classes, n_features, history, backend, params, chosen[0])
        self.partial_state_ = states[-1]
        self.partial_settings_ = _layout_settings(settings)
        return self

    def _check_unchanged(self, state, settings: dict) -> None:
        """Refuse to continue a run whose optimizer or network has changed since."""
        before = getattr(self, "partial_settings_", None)
        if before is None:
            return
        now = _layout_settings(settings)
        changed = [k for k in now if now[k] != before.get(k)]
        if changed:
            raise ValueError(f"{changed[0]} changed from {before.get(changed[0])!r} to "
                             f"{now[changed[0]]!r} since the last fit or partial_fit, whose "
                             "optimizer state partial_fit continues; call fit to start over")

    # -- prediction -----------------------------------------------------------------

    def _check_fitted(self):
        if not hasattr(self, "params_"):
            raise not_fitted(type(self).__name__)

    def _arch(self) -> Architecture:
        return self._architecture(self.n_features_in_, len(self.classes_))

    def _scores(self, X):
        """Output scores on the device for X, shape (n_samples, n_classes)."""
        self._check_fitted()
        backend = self.backend_
        with backend.activate():
            x_dev = self._prepared(_to_device(X, backend, self.params_["W1"].dtype,
                                              self.n_features_in_), backend)
            return predict_scores(self.params_, x_dev, self._arch(), self.params_["W1"].dtype, backend)

    def predict_proba(self, X):
        """Class probabilities.

        Parameters
        ----------
        X : array, shape (n_samples, n_features)

        Returns
        -------
        array, shape (n_samples, n_classes), the model's dtype, of X's array library
            Column ``j`` is the probability of ``classes_[j]``.
        """
        self._check_fitted()
        with self.backend_.activate():
            proba = probabilities(self._scores(X), self._arch(), self.backend_.xp)
        return as_array_of(proba, X)

    def predict(self, X):
        """Predicted class labels.

        Parameters
        ----------
        X : array, shape (n_samples, n_features)

        Returns
        -------
        array, shape (n_samples,), dtype of ``classes_``
            Of X's array library when the labels are numbers, else NumPy.
        """
        self._check_fitted()
        with self.backend_.activate():
            index = self.backend_.xp.argmax(self._scores(X), axis=1)
        labels = self.classes_[to_numpy(index)]  # sync point: labels are mapped on the host
        return as_array_of(labels, X) if labels.dtype.kind in "biuf" else labels

    def score(self, X, y, sample_weight=None) -> float:
        """Mean accuracy of ``predict(X)`` against `y`, weighted by `sample_weight`.

        Parameters
        ----------
        X : array, shape (n_samples, n_features)
        y : array, shape (n_samples,)
        sample_weight : array, shape (n_samples,), optional

        Returns
        -------
        float
        """
        predicted = to_numpy(self.predict(X))
        y = check_y(y, predicted.shape[0])
        if sample_weight is None:
            return float(np.mean(predicted == y))
        weights = check_y(sample_weight, predicted.shape[0], "sample_weight").astype(np.float64)
        if not (np.all(np.isfinite(weights)) and np.all(weights >= 0) and weights.sum() > 0):
            raise ValueError("sample_weight must be finite, >= 0 and not all zero")
        return float(np.average(predicted == y, weights=weights))


def _to_device(X, backend: Backend, dtype, n_features: int | None = None):
    """Check X and move it to the device, once: uint8 stays uint8 (pixels), the rest `dtype`."""
    X = check_X(X, n_features)
    if not backend.owns(X):
        X = to_numpy(X)  # a host (or cross-device) copy, once
    if numpy_dtype(X.dtype) == np.uint8:
        return backend.asarray(X)
    x = backend.asarray(X, dtype=dtype)
    xp = backend.xp
    # sync point: one device read per fit/predict call, never inside the batch loop
    finite, low, high, whole = (float(v) for v in backend.to_numpy(xp.stack([
        xp.astype(xp.all(xp.isfinite(x)), x.dtype), xp.min(x), xp.max(x),
        xp.astype(xp.all(x == xp.round(x)), x.dtype)])))
    if not finite:
        raise ValueError("X holds NaN or infinite values")
    # the upper half of the byte range in use: small counts or codes are not pixels
    if whole and low >= 0 and 127 < high <= 255:
        warnings.warn(
            f"X holds whole numbers from {low:g} to {high:g} in {X.dtype}, like pixel "
            "intensities 0..255, and they are used as given; a network trains badly on "
            "them. For pixels pass uint8 (scaled by 1/255 on the device) or divide by 255; "
            "for other data, scale it yourself", PixelScaleWarning, stacklevel=_caller_level())
    return x


# Settings that shape the optimizer's state and the engine's arrays: partial_fit
# refuses to continue a run when one of them has changed.
_LAYOUT = ("n_hidden", "activation", "loss", "dtype", "optimizer", "momentum", "shift",
           "augment", "label_smoothing", "dropout", "deskew")


def _layout_settings(settings: dict) -> dict:
    """The `_LAYOUT` settings of `settings` (momentum as whether there is any)."""
    out = {k: settings[k] for k in _LAYOUT}
    out["momentum"] = bool(out["momentum"])  # velocity buffers exist or not
    return out


def _caller_level() -> int:
    """The warnings stacklevel of the first frame outside this module (the user's call)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame, level = frame.f_back, level + 1
    return level


def _encode_labels(y, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted class labels and each sample's class index (int64), from labels `y`."""
    y = check_y(y, n_samples)
    if y.dtype.kind == "f" and not (np.all(np.isfinite(y)) and np.all(y == np.round(y))):
        raise ValueError("y holds non-integral numbers; MLPClassifier needs class labels, "
                         "not continuous targets")
    classes, index = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"y holds 1 class ({classes[0].item()!r}); a classifier needs at "
                         "least 2")
    return classes, index.astype(np.int64)


def _sample_weights(sample_weight, class_weight, classes: np.ndarray,
                    y_index: np.ndarray) -> np.ndarray | None:
    """Each sample's weight (float64, host): `sample_weight` times its class's weight."""
    n = len(y_index)
    weights = None
    if sample_weight is not None:
        weights = np.asarray(to_numpy(sample_weight), dtype=np.float64)
        if weights.shape != (n,):
            raise ValueError(f"sample_weight must have shape ({n},), got {weights.shape}")
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ValueError("sample_weight must be finite and >= 0")
    if class_weight is not None:
        if class_weight == "balanced":
            per_class = n / (len(classes) * np.bincount(y_index, minlength=len(classes)))
        else:
            unknown = [k for k in class_weight if k not in set(classes.tolist())]
            if unknown:
                raise ValueError(f"class_weight names labels that y lacks: {unknown}")
            per_class = np.array([float(class_weight.get(c, 1.0)) for c in classes.tolist()])
        by_class = per_class[y_index]
        weights = by_class if weights is None else weights * by_class
    if weights is not None and not weights.sum() > 0:
        raise ValueError("the sample weights are all zero (sample_weight times class_weight); "
                         "give some sample a weight above zero")
    return weights


def _class_indices(classes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Positions of `labels` in sorted `classes` (int64); unknown labels are an error."""
    index = np.clip(np.searchsorted(classes, labels), 0, len(classes) - 1)
    if not np.array_equal(classes[index], labels):
        raise ValueError("labels contain classes not seen in fit")
    return index.astype(np.int64)


def _hidden_of(params: dict):
    """The hidden widths of a parameter dict (``W1 ... W{L}``)."""
    widths = [params[f"W{i}"].shape[1] for i in range(1, len(params) // 2)]
    return widths[0] if len(widths) == 1 else tuple(widths)


def _same(a, b) -> bool:
    try:
        return bool(a == b) and type(a) is type(b)
    except Exception:
        return a is b


def _print_epoch(record: dict) -> None:
    """Print one epoch's summary line to standard output."""
    print(format_epoch(record), flush=True)
