"""What a trained model gets right and wrong, as plain numbers: NumPy only.

`evaluation_report` turns a model's class probabilities on a labelled test set into a
JSON-serialisable dict (accuracy, confusion matrix, per-class precision / recall / F1,
the most confident mistakes); `read_metrics` reads the per-epoch training log that
``mnist-xp train --metrics`` writes. The figures drawn from both are in
`mnist_xp.reporting.figures`, which needs matplotlib; this module does not.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import ReportError
from ..fileio.reading import open_user_file

__all__ = ["METRIC_KEYS", "check_output_dir", "evaluation_report", "read_metrics"]

#: Keys every record of a ``--metrics`` log must have, and what each must hold.
METRIC_KEYS = ("epoch", "train_loss", "train_accuracy")


def evaluation_report(y_true, proba, classes, *, n_mistakes: int = 25, y_pred=None) -> dict:
    """Accuracy, confusion matrix, per-class scores and the most confident mistakes.

    Parameters
    ----------
    y_true : array-like, shape (n_samples,)
        True labels; each must be one of `classes`. Any dtype `classes` has (integers
        or strings).
    proba : array-like, shape (n_samples, n_classes), float
        Class probabilities (or any scores whose row-wise maximum is the prediction);
        column ``j`` belongs to ``classes[j]``, as `MLPClassifier.predict_proba` gives.
    classes : array-like, shape (n_classes,)
        The model's class labels (``MLPClassifier.classes_``), in column order.
    n_mistakes : int, default 25
        How many of the most confident mistakes to list (at most the number of
        mistakes); 0 lists none.
    y_pred : array-like, shape (n_samples,), optional
        The predicted labels, when already known. By default the argmax of `proba`;
        pass ``model.predict(X)`` to score exactly what the model predicts, since an
        argmax over rounded probabilities can break an exact tie differently from
        one over the raw scores.

    Returns
    -------
    dict
        Plain Python types only (``json.dumps`` takes it as is):

        ``n_samples``, ``n_errors`` : int
        ``accuracy`` : float, the fraction of correct predictions.
        ``classes`` : list of the labels, in the order of the rows and columns below.
        ``confusion_matrix`` : list of lists of int, ``[i][j]`` counts the samples of
            true class ``classes[i]`` predicted as ``classes[j]`` (rows true, columns
            predicted).
        ``per_class`` : list of dicts, one per class: ``class``, ``precision``,
            ``recall``, ``f1`` (floats) and ``support`` (int, the number of true
            samples of the class).
        ``macro`` : dict of ``precision``, ``recall``, ``f1``, the unweighted means
            over the classes that occur in `y_true` or in the predictions (as
            scikit-learn's ``average="macro"`` does); classes that occur in neither
            would only add zeros.
        ``mistakes`` : list of dicts ``index`` (position in `y_true`), ``true``,
            ``predicted``, ``probability`` (of the predicted class) and
            ``true_probability`` (of the true class), most confident first; equal
            confidences keep test-set order.

    Raises
    ------
    ValueError
        Mismatched shapes, an empty test set, or a true label that is not in
        `classes`.

    Notes
    -----
    A ratio whose denominator is zero is 0.0, not NaN: the precision of a class the
    model never predicts, the recall of a class absent from `y_true`, and the F1 of
    a class whose precision and recall are both 0 (scikit-learn's
    ``zero_division=0``).
    """
    classes = np.asarray(classes)
    proba = np.asarray(proba)
    y_true = np.asarray(y_true)
    if classes.ndim != 1 or classes.size == 0:
        raise ValueError(f"classes must be a non-empty 1-D array, got shape {classes.shape}")
    k = classes.size
    if proba.ndim != 2 or proba.shape[1] != k:
        raise ValueError(f"proba must have shape (n_samples, {k}), got {proba.shape}")
    n = proba.shape[0]
    if n == 0:
        raise ValueError("the test set is empty")
    if y_true.shape != (n,):
        raise ValueError(f"y_true must have shape ({n},), got {y_true.shape}")
    if n_mistakes < 0:
        raise ValueError(f"n_mistakes must be >= 0, got {n_mistakes}")
    true_idx = _positions(classes, y_true, "y_true")
    if y_pred is None:
        pred_idx = np.argmax(proba, axis=1)
    else:
        y_pred = np.asarray(y_pred)
        if y_pred.shape != (n,):
            raise ValueError(f"y_pred must have shape ({n},), got {y_pred.shape}")
        pred_idx = _positions(classes, y_pred, "y_pred")

    # One bincount over (true, predicted) pairs instead of a Python loop over samples.
    cm = np.bincount(true_idx * k + pred_idx, minlength=k * k).reshape(k, k)
    hits = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _ratio(hits, predicted)
    recall = _ratio(hits, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    present = (support > 0) | (predicted > 0)

    wrong = np.flatnonzero(pred_idx != true_idx)
    confidence = proba[wrong, pred_idx[wrong]]
    # A stable sort on the negated confidence: most confident first, ties in test-set order.
    order = wrong[np.argsort(-confidence, kind="stable")][:n_mistakes]

    def label(j):
        return classes[j].item()

    n_errors = int(wrong.size)
    return {
        "n_samples": int(n),
        "n_errors": n_errors,
        "accuracy": (n - n_errors) / n,
        "classes": [label(j) for j in range(k)],
        "confusion_matrix": cm.tolist(),
        "per_class": [
            {"class": label(j), "precision": float(precision[j]), "recall": float(recall[j]),
             "f1": float(f1[j]), "support": int(support[j])}
            for j in range(k)
        ],
        "macro": {
            "precision": float(np.mean(precision[present])),
            "recall": float(np.mean(recall[present])),
            "f1": float(np.mean(f1[present])),
        },
        "mistakes": [
            {"index": int(i), "true": label(true_idx[i]), "predicted": label(pred_idx[i]),
             "probability": float(proba[i, pred_idx[i]]),
             "true_probability": float(proba[i, true_idx[i]])}
            for i in order
        ],
    }


def _positions(classes: np.ndarray, labels: np.ndarray, name: str) -> np.ndarray:
    """Column index of each label in `classes`; a label not in `classes` is a ValueError."""
    # classes need not be sorted here (a caller may pass any column order).
    sorter = np.argsort(classes, kind="stable")
    found = np.clip(np.searchsorted(classes, labels, sorter=sorter), 0, classes.size - 1)
    index = sorter[found]
    unknown = classes[index] != labels
    if np.any(unknown):
        bad = np.unique(labels[unknown])[:5]
        raise ValueError(f"{name} holds labels that are not among the classes: "
                         f"{', '.join(map(str, bad.tolist()))}")
    return index.astype(np.int64)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den as float64, with 0.0 wherever den is 0."""
    out = np.zeros(np.shape(num), dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Read a training log written by ``mnist-xp train --metrics FILE``.

    Parameters
    ----------
    path : str or path-like
        A JSON Lines file: one JSON object per epoch with at least ``epoch`` (int),
        ``train_loss`` and ``train_accuracy`` (numbers); ``test_accuracy`` and
        ``val_accuracy``, when present, are numbers or null. Blank lines are
        ignored.

    Returns
    -------
    list of dict
        The records, in file order.

    Raises
    ------
    ReportError
        The file is missing, a directory, unreadable, not UTF-8, holds no records,
        or has a line that is not such a record. The message is one line that
        starts with the path (and the line number, for a bad line).
    """
    path = Path(path)
    try:
        with open_user_file(path, ReportError, "metrics file") as f:
            text = f.read().decode("utf-8")
    except UnicodeDecodeError:
        raise ReportError(f"{path}: not a metrics file (not UTF-8 text); give the JSON Lines "
                          "file that 'mnist-xp train --metrics' writes") from None
    except OSError as exc:
        raise ReportError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        records.append(_metric_record(path, number, line))
    if not records:
        raise ReportError(f"{path}: holds no epoch records (the file is empty); give the file "
                          "that 'mnist-xp train --metrics' writes")
    return records


def _metric_record(path: Path, number: int, line: str) -> dict:
    """One parsed and checked line of a metrics log."""
    where = f"{path}, line {number}"
    try:
        record = json.loads(line)
    except ValueError as exc:
        raise ReportError(f"{where}: not valid JSON ({exc.msg}); the file may be truncated "
                          "or not a metrics log") from None
    if not isinstance(record, dict):
        raise ReportError(f"{where}: not a JSON object; each line must be one epoch's record")
    for key in METRIC_KEYS:
        if key not in record:
            raise ReportError(f"{where}: no {key!r}; each line needs "
                              f"{', '.join(map(repr, METRIC_KEYS))}")
    if not _is_int(record["epoch"]):
        raise ReportError(f"{where}: 'epoch' is {record['epoch']!r}, not a whole number")
    for key in ("train_loss", "train_accuracy"):
        if not _is_number(record[key]):
            raise ReportError(f"{where}: {key!r} is {record[key]!r}, not a number")
    for key in ("test_accuracy", "val_accuracy"):
        if record.get(key) is not None and not _is_number(record[key]):
            raise ReportError(f"{where}: {key!r} is {record[key]!r}, not a number or null")
    return record


def _is_int(value) -> bool:
    """A JSON integer (bool is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    """A JSON number (bool is not one); NaN and Infinity pass, as a diverged run logs them."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_output_dir(directory: str | os.PathLike) -> Path:
    """Check that `directory` is, or can be created as, a writable directory.

    Parameters
    ----------
    directory : str or path-like
        An existing directory, or a new one whose parent exists.

    Returns
    -------
    pathlib.Path
        `directory`.

    Raises
    ------
    ReportError
        It is an existing file, its parent does not exist or is not a directory, or
        the place it is (or would be) in is not writable. One line, starting with
        the path.
    """
    directory = Path(directory)
    if directory.exists():
        if not directory.is_dir():
            raise ReportError(f"{directory}: is a file, not a directory; give a directory "
                              "(it is created if missing)")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise ReportError(f"{directory}: directory is not writable")
        return directory
    parent = directory.parent if str(directory.parent) else Path(".")
    if not parent.exists():
        raise ReportError(f"{directory}: directory {parent} does not exist; create it first "
                          "(only the last part of the path is created)")
    if not parent.is_dir():
        raise ReportError(f"{directory}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ReportError(f"{directory}: directory {parent} is not writable")
    return directory
