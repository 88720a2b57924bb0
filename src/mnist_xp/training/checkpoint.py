"""Resumable training checkpoints: the whole state of a run between two epochs.

A checkpoint holds what the next epoch needs to continue exactly as an uninterrupted
run would: the parameters, the optimizer's buffers, the fast path's own arrays (so that
on the same backend the continuation is bit for bit), the random generator's state
before the next epoch's shuffle, the epochs done with their records, the best
validation epoch so far, and the settings and a fingerprint of the training data.

The file is an ``.npz`` of plain arrays plus one JSON string (no pickle), written
atomically (a temporary file in the same directory, renamed into place): killing the
process at any moment leaves the previous checkpoint or the new one, never a broken
one.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..fileio.archive import read_npz
from ..fileio.writing import atomic_write
from ..errors import ModelFileError, exception_line

__all__ = ["TrainState", "save_state", "load_state", "data_fingerprint", "FORMAT"]

FORMAT = "mnist_xp.training_state"
FORMAT_VERSION = 1

# Engine names as checkpoints written before the engines had names recorded them.
_ENGINE_NAMES = {"NumpyEpochRunner": "numpy", "CudaEpochRunner": "cuda",
                 "GenericEpochs": "generic"}


@dataclass
class TrainState:
    """Everything a run needs to continue after epoch `epoch`.

    Attributes
    ----------
    epoch : int
        Epochs completed.
    history : list of dict
        Their records.
    rng_state : dict
        ``numpy.random.Generator.bit_generator.state`` before the next epoch's draws.
    params : dict of numpy.ndarray
        ``W1, b1, W2, b2`` (the generic layout).
    optimizer : dict of numpy.ndarray
        The optimizer's buffers in the generic layout (``velocity/W1``, or ``m/W1``,
        ``v/W1`` and ``t`` for Adam).
    engine : str
        The name of the engine that produced the state (``numpy``, ``cuda``, ``generic``).
    engine_arrays : dict of numpy.ndarray
        That engine's own arrays, restored exactly when the same engine resumes.
    best : tuple (epoch, accuracy, params) or None
        The best validation epoch so far, with its parameters.
    """

    epoch: int
    history: list
    rng_state: dict
    params: dict
    optimizer: dict = field(default_factory=dict)
    engine: str = ""
    engine_arrays: dict = field(default_factory=dict)
    best: tuple | None = None


def data_fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    """A short hash of the training data's shape, labels and pixels (a sample of rows)."""
    h = hashlib.sha256()
    h.update(repr((x.shape, str(x.dtype))).encode())
    h.update(np.ascontiguousarray(y).tobytes())
    step = max(1, x.shape[0] // 997)  # a spread of rows: cheap on 60,000 images
    h.update(np.ascontiguousarray(x[::step]).tobytes())
    return h.hexdigest()[:32]


def save_state(path: str | os.PathLike, state: TrainState, *, settings: dict, classes,
               fingerprint: str, metadata: dict | None = None) -> Path:
    """Write `state` to `path` atomically; return the path.

    Parameters
    ----------
    path : str or path-like
    state : TrainState
    settings : dict
        The estimator's JSON-able settings (`MLPClassifier.get_params`).
    classes : array_like
        The class labels of the run.
    fingerprint : str
        `data_fingerprint` of the training data.
    metadata : dict, optional
        Extra JSON facts (the command line's data source...).
    """
    arrays = {f"params/{k}": np.asarray(v) for k, v in state.params.items()}
    arrays.update({f"optimizer/{k}": np.asarray(v) for k, v in state.optimizer.items()})
    # The file keeps the names of format 1 ("runner_kind", "runner/..."): files from
    # before the engines were named still resume.
    arrays.update({f"runner/{k}": np.asarray(v) for k, v in state.engine_arrays.items()})
    best = None
    if state.best is not None:
        epoch, accuracy, params = state.best
        best = {"epoch": epoch, "accuracy": accuracy}
        arrays.update({f"best/{k}": np.asarray(v) for k, v in params.items()})
    classes = np.asarray(classes)
    if classes.dtype.kind not in "biuU":
        raise ValueError(f"only integer or string class labels can be saved, got {classes.dtype}")
    arrays["classes"] = classes
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "epoch": state.epoch,
            "history": state.history, "rng_state": state.rng_state, "runner_kind": state.engine,
            "best": best, "settings": settings, "data_fingerprint": fingerprint,
            "extra": metadata or {}}
    arrays["metadata"] = np.array(json.dumps(meta))
    path = Path(path)
    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def load_state(path: str | os.PathLike) -> tuple[TrainState, dict]:
    """Read a checkpoint written by `save_state`.

    Returns
    -------
    state : TrainState
    info : dict
        ``settings``, ``classes`` (numpy array), ``data_fingerprint`` and ``extra``.

    Raises
    ------
    ModelFileError
        The file is missing, unreadable, not such a checkpoint, from a newer version,
        or damaged; the message names the file.
    """
    path = Path(path)
    # The shared archive reader: a regular file only (a named pipe would block for
    # ever), every member's header checked before its data is allocated, no pickle,
    # and every failure of the zip, zlib and NumPy layers one line naming the file.
    arrays = read_npz(path, ModelFileError, "checkpoint file",
                      bare="not an mnist_xp training checkpoint (a .npy array); resume "
                           "needs a file from --checkpoint")
    if "metadata" not in arrays:
        raise ModelFileError(f"{path}: not an mnist_xp training checkpoint (no metadata); "
                             "resume needs a file from --checkpoint")
    try:
        meta = json.loads(str(arrays.pop("metadata")))
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ModelFileError(f"{path}: not an mnist_xp training checkpoint "
                                 "(a model file? resume needs a file from --checkpoint)")
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise ModelFileError(f"{path}: written by a newer mnist_xp (checkpoint format "
                                 f"{meta['format_version']}); upgrade mnist-xp")
        groups: dict[str, dict] = {"params": {}, "optimizer": {}, "runner": {}, "best": {}}
        for key, value in arrays.items():
            head, _, name = key.partition("/")
            if head in groups:
                groups[head][name] = value
        if set(groups["params"]) != {"W1", "b1", "W2", "b2"}:
            raise ModelFileError(f"{path}: checkpoint lacks parameter arrays")
        classes = arrays["classes"]
        _check_params(path, groups["params"], classes)
        for name, value in {**groups["params"], **groups["optimizer"]}.items():
            if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
                raise ModelFileError(f"{path}: checkpoint array {name} holds NaN or infinity")
        best = None
        if meta["best"] is not None:
            best = (int(meta["best"]["epoch"]), float(meta["best"]["accuracy"]), groups["best"])
        # The generator state is set when training resumes; a bad one is refused here.
        np.random.default_rng().bit_generator.state = meta["rng_state"]
        settings = meta["settings"]
        if not isinstance(settings, dict) or not isinstance(meta["history"], list):
            raise TypeError("settings must be an object and history a list")
        state = TrainState(epoch=int(meta["epoch"]), history=list(meta["history"]),
                           rng_state=meta["rng_state"], params=groups["params"],
                           optimizer=groups["optimizer"],
                           engine=_ENGINE_NAMES.get(meta["runner_kind"], meta["runner_kind"]),
                           engine_arrays=groups["runner"], best=best)
        info = {"settings": settings, "classes": classes,
                "data_fingerprint": meta["data_fingerprint"], "extra": meta.get("extra", {})}
    except ModelFileError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError,
            RecursionError) as exc:  # RecursionError: absurdly deep JSON nesting
        raise ModelFileError(f"{path}: damaged checkpoint metadata "
                             f"({exception_line(exc, with_type=True)})") from None
    return state, info


def _check_params(path: Path, params: dict, classes: np.ndarray) -> None:
    """The parameters must be float arrays of one network's shapes, with a label per output."""
    w1, b1, w2, b2 = (params[k] for k in ("W1", "b1", "W2", "b2"))
    shapes_fit = (w1.ndim == 2 and w2.ndim == 2 and b1.shape == (w1.shape[1],)
                  and w2.shape[0] == w1.shape[1] and b2.shape == (w2.shape[1],))
    if not shapes_fit or any(a.dtype.kind != "f" for a in (w1, b1, w2, b2)):
        raise ModelFileError(
            f"{path}: checkpoint parameters are not one network's (W1 {w1.dtype}{list(w1.shape)}, "
            f"b1 {b1.dtype}{list(b1.shape)}, W2 {w2.dtype}{list(w2.shape)}, "
            f"b2 {b2.dtype}{list(b2.shape)})")
    if classes.shape != (w2.shape[1],) or classes.dtype.kind not in "biuU":
        raise ModelFileError(f"{path}: checkpoint classes should be {w2.shape[1]} labels, "
                             f"got {classes.dtype}{list(classes.shape)}")
