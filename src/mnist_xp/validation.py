"""Input validation for the estimator: plain arrays here, everything else through scikit-learn.

A 2-D numeric NumPy (or CuPy, or array_api_strict) array with samples and features --
what the CLI and most callers pass -- is checked here in a few lines. Anything else
(lists, pandas frames, sparse matrices, object or complex arrays, 1-D or empty input, a
2-D column of labels, None) goes through scikit-learn's own ``check_array`` and
``column_or_1d`` when scikit-learn is installed, so the messages and conversions are
scikit-learn's; without it, such input gets our one-line errors. scikit-learn is
imported only then: its import takes about 0.7 s, five times the CLI's start-up.
"""

from __future__ import annotations

import functools
import importlib.util
import sys

import numpy as np

from .backend import backend_name_of, numpy_dtype, to_numpy
from .errors import NotFittedError

__all__ = ["check_X", "check_y", "not_fitted"]


def _sklearn_validation():
    """scikit-learn's validation module, or None where scikit-learn is not installed."""
    if "sklearn" not in sys.modules and importlib.util.find_spec("sklearn") is None:
        return None
    from sklearn.utils import validation

    return validation


def _plain(X) -> bool:
    """Whether `X` is a 2-D array of real numbers with samples and features."""
    if backend_name_of(X) is None or isinstance(X, np.generic):
        return False
    return (len(X.shape) == 2 and X.shape[0] > 0 and X.shape[1] > 0
            and numpy_dtype(X.dtype).kind in "biuf")


def check_X(X, n_features: int | None = None, name: str = "MLPClassifier"):
    """`X` as a 2-D numeric array of its own library (a host copy for anything else).

    Parameters
    ----------
    X : array-like, shape (n_samples, n_features)
    n_features : int, optional
        The width the model was fitted with.
    name : str
        The estimator's name, for messages.

    Returns
    -------
    array
        `X` itself when it is a plain array; else a NumPy array (scikit-learn's
        ``check_array`` conversion where it is installed).

    Raises
    ------
    ValueError
        Not 2-D, empty, not numeric, or of another width than `n_features`.
    TypeError
        Sparse input (scikit-learn's message: dense data is required).
    """
    if not _plain(X):
        validation = _sklearn_validation()
        if validation is not None:
            X = validation.check_array(X, accept_sparse=False, dtype="numeric",
                                       ensure_all_finite=False, ensure_2d=True,
                                       ensure_min_samples=1, ensure_min_features=1)
        else:
            X = np.asarray(X)
            if X.ndim != 2:
                raise ValueError(f"X must be 2-D (n_samples, n_features), got shape "
                                 f"{X.shape}; reshape your data")
            if X.shape[0] == 0 or X.shape[1] == 0:
                raise ValueError(f"X has shape {X.shape}: it needs at least 1 sample and "
                                 "1 feature")
            if X.dtype.kind not in "biuf":
                raise ValueError(f"X must hold real numbers, got dtype {X.dtype}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"X has {X.shape[1]} features, but {name} is expecting "
                         f"{n_features} features as input")
    return X


def check_y(y, n_samples: int, what: str = "y") -> np.ndarray:
    """`y` (labels, or per-sample values) as a 1-D host array of `n_samples`; a column is
    flattened, with scikit-learn's warning where it is installed.

    Raises
    ------
    ValueError
        None, or another shape.
    """
    if y is None:
        raise ValueError(f"MLPClassifier requires {what} to be passed, but the target {what} "
                         "is None")
    if not (isinstance(y, np.ndarray) and y.ndim == 1) and backend_name_of(y) != "cupy":
        validation = _sklearn_validation()
        if validation is not None:
            y = validation.column_or_1d(y, warn=True)  # a (n, 1) column: DataConversionWarning
    y = to_numpy(y)
    if y.shape != (n_samples,):
        raise ValueError(f"{what} must have shape ({n_samples},), got {y.shape}")
    return y


def not_fitted(name: str = "MLPClassifier") -> NotFittedError:
    """The error for a model used before `fit`: scikit-learn's class too when it is installed.

    ``except sklearn.exceptions.NotFittedError`` then catches it, as it catches
    scikit-learn's own estimators' (`check_estimator` requires it).
    """
    message = (f"This {name} instance is not fitted yet; call 'fit' first (or mnist_xp.load "
               "a saved model).")
    if _sklearn_validation() is None:
        return NotFittedError(message)
    return _with_sklearn_base()(message)


@functools.cache
def _with_sklearn_base() -> type:
    """A NotFittedError that is mnist_xp's and scikit-learn's at once.

    Made on first use (scikit-learn is optional) under a name of this module that
    `__getattr__` gives back, so that pickle finds the class, in any process.
    """
    from sklearn.exceptions import NotFittedError as SklearnNotFittedError

    return type("SklearnNotFittedError", (NotFittedError, SklearnNotFittedError),
                {"__module__": __name__, "__doc__": NotFittedError.__doc__})


def __getattr__(name: str):
    if name == "SklearnNotFittedError":
        return _with_sklearn_base()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
