"""Several trained models as one: the average of their class probabilities.

Averaging the probabilities of independently trained networks is the simplest way to a
stronger classifier of the same kind (Hansen & Salamon, "Neural network ensembles",
IEEE PAMI 12(10), 1990), and the usual teacher for distillation (Hinton, Vinyals &
Dean, "Distilling the knowledge in a neural network", 2015)::

    import mnist_xp
    teacher = mnist_xp.Ensemble(["a.npz", "b.npz"])   # or fitted MLPClassifiers
    teacher.score(x_test, y_test)

``mnist-xp evaluate --model a.npz --model b.npz`` scores the same average.
"""

from __future__ import annotations

import os

import numpy as np

from .backend import to_numpy

__all__ = ["Ensemble"]


class Ensemble:
    """Fitted classifiers whose class probabilities are averaged, each weighing the same.

    Parameters
    ----------
    models : sequence of fitted classifiers or model files
        Each a classifier with ``predict_proba``, ``classes_`` and ``n_features_in_``,
        such as `mnist_xp.MLPClassifier`, or the path of a model file (loaded with
        `mnist_xp.load` on `device`); they may differ in architecture and device, but
        must agree on the classes and the input size.
    device : str or Backend, default "auto"
        Where model files are loaded (classifiers stay where they are).

    Attributes
    ----------
    models : list
    classes_ : numpy.ndarray, shape (n_classes,)
    n_features_in_ : int

    Raises
    ------
    ValueError
        If `models` is empty, or the models disagree on their classes or input size
        (the message names the first that differs: its file, or its position counted
        from 1).
    ModelFileError
        If a model file cannot be loaded.
    """

    def __init__(self, models, device="auto"):
        from .model_files import load

        items = list(models)
        if not items:
            raise ValueError("an ensemble needs at least one model")
        names = [os.fspath(m) if isinstance(m, (str, os.PathLike)) else f"model {k}"
                 for k, m in enumerate(items, start=1)]
        self.models = [load(m, device=device) if isinstance(m, (str, os.PathLike)) else m
                       for m in items]
        first = self.models[0]
        self.classes_ = to_numpy(first.classes_)
        self.n_features_in_ = int(first.n_features_in_)
        for name, model in zip(names[1:], self.models[1:]):
            if int(model.n_features_in_) != self.n_features_in_:
                raise ValueError(
                    f"{name} expects {model.n_features_in_} pixels per image, {names[0]} "
                    f"{self.n_features_in_}; an ensemble's models must read the same images")
            classes = to_numpy(model.classes_)
            if classes.shape != self.classes_.shape or not np.array_equal(classes, self.classes_):
                raise ValueError(
                    f"{name} has classes {classes.tolist()}, {names[0]} "
                    f"{self.classes_.tolist()}; an ensemble's models must share their classes")

    def predict_proba(self, X) -> np.ndarray:
        """The mean of the models' class probabilities.

        Parameters
        ----------
        X : array_like, shape (n, n_features_in_)
            As each model's ``predict_proba`` takes it (uint8 pixels or floats in [0, 1]).

        Returns
        -------
        numpy.ndarray, shape (n, n_classes), float64
            Rows sum to 1; columns in the order of ``classes_``.
        """
        total = None
        for model in self.models:
            proba = to_numpy(model.predict_proba(X)).astype(np.float64)
            total = proba if total is None else total + proba
        return total / len(self.models)

    def predict(self, X) -> np.ndarray:
        """The class of highest mean probability for each row: shape (n,), ``classes_``' dtype."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def score(self, X, y) -> float:
        """Mean accuracy of `predict` on `X` against the labels `y` (shape (n,))."""
        return float(np.mean(self.predict(X) == to_numpy(y)))
