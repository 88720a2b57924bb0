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

from ..errors import ModelFileError, SettingError, exception_line
from ..fileio.archive import read_npz
from ..fileio.writing import atomic_write
from ..model import Architecture, check_network
from ..settings import BY_NAME, ESTIMATOR_SETTINGS, check_settings

__all__ = ["TrainState", "save_state", "load_state", "data_fingerprint", "network_of", "FORMAT"]

FORMAT = "mnist_xp.training_state"
FORMAT_VERSION = 1

# Engine names as checkpoints written before the engines had names recorded them.
_ENGINE_NAMES = {"NumpyEpochRunner": "numpy", "CudaEpochRunner": "cuda",
                 "GenericEpochs": "generic"}
# Engines that came after the old names: their checkpoints record the name itself.
_NEWER_ENGINES = {"compiled", "numpy-layers"}


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
    """Read a checkpoint written by `save_state`, checking everything it returns.

    The metadata is read first and checked: the settings as the estimator checks a
    user's (`mnist_xp.settings.check_settings`), the epoch, history, best epoch,
    generator state and engine name. Then every member's header (shape, dtype) is
    checked against them -- the parameters against the network the settings describe,
    the optimizer's and engine's buffers against the parameters -- before any array
    data is read, so a damaged or hostile file is refused before it allocates, and
    resuming never meets a value it cannot use.

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
    checked = {}

    def expect(first, headers):
        checked["meta"] = _check_metadata(path, first.get("metadata"))
        _check_layout(path, checked["meta"], headers)

    # The shared archive reader: a regular file only (a named pipe would block for
    # ever), every member's header checked before its data is allocated, no pickle,
    # and every failure of the zip, zlib and NumPy layers one line naming the file.
    arrays = read_npz(path, ModelFileError, "checkpoint file",
                      bare="not an mnist_xp training checkpoint (a .npy array); resume "
                           "needs a file from --checkpoint", first=("metadata",), expect=expect)
    meta = checked["meta"]
    groups = _groups(arrays)
    classes = arrays["classes"]
    settings = meta["settings"]
    arch, dtype = network_of(settings, groups["params"]["W1"], classes.shape, groups["params"])
    for group in ("params", "best"):
        if groups[group]:
            _network_or_refuse(path, groups[group], classes, arch, dtype)
    for name, value in {**groups["optimizer"], **groups["runner"]}.items():
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            raise ModelFileError(f"{path}: checkpoint array {name} holds NaN or infinity")
    best = None
    if meta["best"] is not None:
        best = (meta["best"]["epoch"], float(meta["best"]["accuracy"]), groups["best"])
    state = TrainState(epoch=meta["epoch"], history=[dict(r) for r in meta["history"]],
                       rng_state=meta["rng_state"], params=groups["params"],
                       optimizer=groups["optimizer"],
                       engine=_ENGINE_NAMES.get(meta["runner_kind"], meta["runner_kind"]),
                       engine_arrays=groups["runner"], best=best)
    info = {"settings": settings, "classes": classes,
            "data_fingerprint": meta["data_fingerprint"], "extra": meta["extra"]}
    return state, info


def network_of(settings: dict, w1, classes_shape: tuple, params: dict | None = None):
    """The (Architecture, dtype) a checkpoint's settings describe, inputs from W1's rows.

    Shared by `load_state` and the model reader (``--model`` given a checkpoint), so
    both judge a checkpoint's network alike. The width and dtype the settings lack
    (`save_state` called from Python with partial settings) are W1's own; the
    activation and loss take the defaults.

    Parameters
    ----------
    settings : dict
        The checkpoint's settings, already checked.
    w1 : numpy.ndarray or Header
        ``W1`` (its shape and dtype).
    classes_shape : tuple
        The shape of the class labels.
    params : dict, optional
        Every parameter (or its header): where the settings lack ``n_hidden``, the
        hidden widths are those of ``W1 ... W{L-1}``.

    Returns
    -------
    (Architecture or None, str)
        None where the shapes cannot be a network's (the check then says why).
    """
    full = {s.name: s.default for s in ESTIMATOR_SETTINGS}
    w1_shape = tuple(w1.shape)
    full.update(n_hidden=w1_shape[1] if len(w1_shape) == 2 else 0, dtype=str(w1.dtype))
    n_weights = sum(1 for k in (params or {}) if k.startswith("W"))
    if n_weights > 2 and all(len(params.get(f"W{i}", ()).shape) == 2
                             for i in range(1, n_weights)):
        full["n_hidden"] = tuple(int(params[f"W{i}"].shape[1]) for i in range(1, n_weights))
    full.update(settings)
    try:
        arch = Architecture(int(w1_shape[0]), full["n_hidden"], int(classes_shape[0]),
                            full["activation"], full["loss"])
    except (IndexError, ValueError):
        arch = None
    return arch, full["dtype"]


def _network_or_refuse(path: Path, arrays: dict, classes, arch, dtype: str) -> None:
    """`check_network`, as one ModelFileError line naming the checkpoint."""
    if arch is None:
        w1 = arrays["W1"]
        raise ModelFileError(f"{path}: checkpoint parameters are not one network's "
                             f"(W1 {w1.dtype}{list(w1.shape)}, classes {list(classes.shape)})")
    try:
        check_network(arrays, classes, arch, dtype)
    except ValueError as exc:
        raise ModelFileError(f"{path}: checkpoint {exc}") from None


def _groups(arrays: dict) -> dict[str, dict]:
    """The members by group: ``params/W1`` is ``W1`` of ``params``."""
    groups: dict[str, dict] = {"params": {}, "optimizer": {}, "runner": {}, "best": {}}
    for key, value in arrays.items():
        head, _, name = key.partition("/")
        if head in groups:
            groups[head][name] = value
    return groups


def _is_int(value) -> bool:
    """Whether `value` is a JSON whole number (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _check_metadata(path: Path, text) -> dict:
    """The checkpoint's metadata JSON, every field `load_state` returns checked."""
    if text is None:
        raise ModelFileError(f"{path}: not an mnist_xp training checkpoint (no metadata); "
                             "resume needs a file from --checkpoint")

    def damaged(why):
        return ModelFileError(f"{path}: damaged checkpoint metadata ({why})")

    try:
        meta = json.loads(str(text)) if text.dtype.kind == "U" and text.shape == () else None
    except (ValueError, RecursionError):  # RecursionError: absurdly deep JSON nesting
        raise damaged("not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not an mnist_xp training checkpoint "
                             "(a model file? resume needs a file from --checkpoint)")
    version = meta.get("format_version")
    if not _is_int(version) or version < 1:
        raise damaged(f"format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{path}: written by a newer mnist_xp (checkpoint format "
                             f"{version}); upgrade mnist-xp")
    missing = [k for k in ("epoch", "history", "rng_state", "runner_kind", "best", "settings",
                           "data_fingerprint") if k not in meta]
    if missing:
        raise damaged(f"no {', '.join(missing)}")
    settings = meta["settings"]
    if not isinstance(settings, dict):
        raise damaged("settings is not an object")
    known = {k: v for k, v in settings.items() if k in BY_NAME and k != "device"}
    try:
        check_settings(known)
    except SettingError as exc:
        raise damaged(f"settings: {exc}") from None
    epochs = known.get("epochs", BY_NAME["epochs"].default)
    # min_steps lengthens a run on small data: at most one epoch per step
    epochs = max(epochs, known.get("min_steps") or 0)
    epoch = meta["epoch"]
    if not _is_int(epoch) or not 1 <= epoch <= epochs:
        raise damaged(f"epoch {epoch!r} is not a whole number from 1 to the run's {epochs}")
    history = meta["history"]
    if (not isinstance(history, list) or len(history) != epoch
            or not all(isinstance(r, dict) and r.get("epoch") == i + 1
                       and all(isinstance(v, (int, float, str, type(None))) for v in r.values())
                       for i, r in enumerate(history))):
        raise damaged(f"history is not the records of epochs 1 to {epoch}")
    best = meta["best"]
    if best is not None and not (
            isinstance(best, dict) and _is_int(best.get("epoch"))
            and 1 <= best["epoch"] <= epoch and isinstance(best.get("accuracy"), (int, float))
            and not isinstance(best["accuracy"], bool) and 0 <= best["accuracy"] <= 1):
        raise damaged("best is not an epoch and an accuracy")
    try:
        # The generator state is set when training resumes; a bad one is refused here.
        np.random.default_rng().bit_generator.state = meta["rng_state"]
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise damaged(f"rng_state: {exception_line(exc)}") from None
    if meta["runner_kind"] not in {*_ENGINE_NAMES, *_ENGINE_NAMES.values(), *_NEWER_ENGINES, ""}:
        raise damaged(f"unknown engine {meta['runner_kind']!r}")
    if not isinstance(meta["data_fingerprint"], str):
        raise damaged("data_fingerprint is not a string")
    meta.setdefault("extra", {})
    if not isinstance(meta["extra"], dict):
        raise damaged("extra is not an object")
    return meta


def _check_layout(path: Path, meta: dict, headers: dict) -> None:
    """Every member's header against the metadata, before any array data is read."""
    groups = _groups(headers)
    if "W1" not in groups["params"] or "classes" not in headers:
        raise ModelFileError(f"{path}: checkpoint lacks parameter arrays")
    unknown = sorted(k for k in headers if k != "classes" and k != "metadata"
                     and k.partition("/")[0] not in groups)
    if unknown:
        raise ModelFileError(f"{path}: checkpoint has members mnist_xp does not write "
                             f"({', '.join(unknown)})")
    classes = headers["classes"]
    arch, dtype = network_of(meta["settings"], groups["params"]["W1"], classes.shape,
                             groups["params"])
    _network_or_refuse(path, groups["params"], classes, arch, dtype)
    if (meta["best"] is not None) != bool(groups["best"]):
        raise ModelFileError(f"{path}: checkpoint's best epoch and its arrays disagree")
    if groups["best"]:
        _network_or_refuse(path, groups["best"], classes, arch, dtype)
    full = {s.name: s.default for s in ESTIMATOR_SETTINGS}
    # Settings a Python caller left out of save_state: the layout present says them.
    present = groups["optimizer"]
    full.update(optimizer="adam" if "t" in present else "sgd",
                momentum=0.9 if present or groups["runner"].get("v0") else 0.0)
    full.update(meta["settings"])
    shapes = arch.shapes
    expected = {}
    if full["optimizer"] in ("adam", "adamw"):
        expected = {f"{m}/{k}": (s, dtype) for m in ("m", "v") for k, s in shapes.items()}
        expected["t"] = ((), "int64")
    elif full["momentum"]:
        expected = {f"velocity/{k}": (s, dtype) for k, s in shapes.items()}
    _check_group(path, "optimizer", groups["optimizer"], expected)
    engine = _ENGINE_NAMES.get(meta["runner_kind"], meta["runner_kind"])
    expected = {}
    if engine == "numpy" and groups["runner"] and arch.n_layers == 2:
        n_in, n_h, n_out = arch.n_inputs, arch.n_hidden, arch.n_outputs
        own = {"w1": (n_in + 1, n_h), "w2t": (n_out, n_h), "b2": (n_out, 1)}
        expected = {k: (s, dtype) for k, s in own.items()}
        if full["optimizer"] not in ("adam", "adamw") and full["momentum"]:
            expected.update({f"v{i}": (s, dtype) for i, s in enumerate(own.values())})
    _check_group(path, "runner", groups["runner"], expected)


def _check_group(path: Path, group: str, headers: dict, expected: dict) -> None:
    """The members of `group` must be exactly `expected` (name -> (shape, dtype))."""
    if set(headers) != set(expected):
        raise ModelFileError(
            f"{path}: checkpoint {group} arrays are {sorted(headers) or 'none'}, the settings "
            f"need {sorted(expected) or 'none'}")
    for name, (shape, dtype) in expected.items():
        h = headers[name]
        if tuple(h.shape) != shape or h.dtype != np.dtype(dtype):
            raise ModelFileError(f"{path}: checkpoint array {group}/{name} is "
                                 f"{h.dtype}{list(h.shape)}, the settings need "
                                 f"{dtype}{list(shape)}")
