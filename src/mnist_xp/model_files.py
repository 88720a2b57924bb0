"""Model files: saving and loading trained models as ``.npz`` arrays plus JSON metadata, no pickle.

(Resumable training state, which ``train --checkpoint`` writes, is another format:
`mnist_xp.training.checkpoint`.)


A model file is an ordinary NumPy ``.npz`` archive holding the four parameter arrays
``W1, b1, W2, b2``, the class labels ``classes`` and ``metadata``: a 0-d unicode array
holding a JSON object (format name and version, architecture, dtype, the estimator's
settings, and whatever the caller adds, such as the test accuracy). It is written
atomically and read with ``allow_pickle=False``, so loading never runs code.
"""

from __future__ import annotations

import json
import os
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import __version__
from .backend import get_backend, to_numpy
from .errors import ModelFileError
from .fileio.archive import read_npz
from .fileio.reading import open_user_file
from .fileio.writing import atomic_write
from .estimator import MLPClassifier
from .errors import SettingError
from .model import ALL_PARAM_NAMES, PARAM_NAMES, Architecture, check_network
from .settings import BY_NAME, check_settings
from .training.checkpoint import network_of

__all__ = ["save", "load", "read_metadata", "default_model_path", "FORMAT", "FORMAT_VERSION"]

FORMAT = "mnist_xp.model"
FORMAT_VERSION = 1

# The archive members a model file must hold (each NAME.npy) and the only ones read.
_MEMBERS = (*PARAM_NAMES, "classes", "metadata")
# The layers of deeper networks (``W3``...), read when present; the metadata's
# architecture says which a file must have.
_DEEP_MEMBERS = tuple(k for k in ALL_PARAM_NAMES if k not in PARAM_NAMES)


def default_model_path() -> Path:
    """The pretrained model shipped inside the package (``--preset best --epochs 200``, full MNIST)."""
    return Path(__file__).resolve().parent / "models" / "default.npz"


def save(model: MLPClassifier, path: str | os.PathLike, *, metadata: dict | None = None) -> Path:
    """Write a fitted model to `path` (an ``.npz`` file), atomically.

    Parameters
    ----------
    model : MLPClassifier
        A fitted estimator; its parameters may live on any device.
    path : str or path-like
        Destination; written exactly as given (no suffix is added). An existing file
        is replaced only once the new one is complete.
    metadata : dict, optional
        Extra JSON-serialisable facts to store under ``"extra"`` (e.g. test accuracy,
        data source).

    Returns
    -------
    pathlib.Path
        `path`.
    """
    model._check_fitted()
    classes = np.asarray(model.classes_)
    if classes.dtype.kind not in "biuU":
        raise ValueError(f"only integer or string class labels can be saved, got {classes.dtype}")
    arrays = {k: to_numpy(v) for k, v in model.params_.items()}
    arch = model._arch()
    params = jsonable_settings(model)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mnist_xp_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "architecture": {
            "n_inputs": arch.n_inputs, "n_hidden": arch.n_hidden, "n_outputs": arch.n_outputs,
            "activation": arch.activation, "loss": arch.loss,
        },
        "dtype": str(arrays["W1"].dtype),
        "estimator_params": params,
        "trained_on_device": model.backend_.device,
        "extra": metadata or {},
    }
    try:
        text = json.dumps(meta, default=_json_scalar)
    except TypeError as exc:
        raise ValueError(f"metadata must be JSON-serialisable: {exc}") from None
    path = Path(path)
    with atomic_write(path) as f:
        np.savez(f, **arrays, classes=classes, metadata=np.array(text))
    return path


def jsonable_settings(model: MLPClassifier) -> dict:
    """The estimator's settings as JSON values (``device`` left out).

    Settings that JSON cannot hold (a Generator as random_state, a teacher given as a
    fitted model rather than a file) become null; layer widths and teacher files are
    lists; the
    distortion settings are a flat dict of numbers; a ``class_weight`` dict is kept with
    its labels as strings (`load` maps them back onto the model's classes).
    """
    settings = model.get_params()
    if isinstance(settings.get("class_weight"), dict):
        settings["class_weight"] = {str(_plain(k)): float(w)
                                    for k, w in settings["class_weight"].items()}
    if isinstance(settings.get("n_hidden"), (tuple, list)):
        settings["n_hidden"] = [int(w) for w in settings["n_hidden"]]
    teacher = settings.get("teacher")
    if teacher is not None:
        # files are kept by path; a fitted model given in memory cannot be written here
        items = teacher if isinstance(teacher, (list, tuple)) else [teacher]
        paths = [os.fspath(t) for t in items if isinstance(t, (str, os.PathLike))]
        settings["teacher"] = paths if len(paths) == len(items) else None
    return {k: v if isinstance(v, (bool, int, float, str, type(None))) or _flat_numbers(v)
            or _plain_list(v) else None for k, v in settings.items() if k != "device"}


def _plain_list(value) -> bool:
    """Whether `value` is a list of whole numbers or of strings (layer widths, teacher files)."""
    return isinstance(value, list) and bool(value) and (
        all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        or all(isinstance(v, str) for v in value))


def _plain(value):
    """A NumPy scalar as the Python value it holds (labels print alike then)."""
    return value.item() if isinstance(value, np.generic) else value


def _flat_numbers(value) -> bool:
    """Whether `value` is a dict of str to plain numbers (the `augment` setting)."""
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
        for k, v in value.items())


def _json_scalar(value):
    """NumPy scalars as Python numbers for JSON; anything else is refused."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata dict of the model file (or training checkpoint) at `path`, checked as
    `load` checks it."""
    return _read_any(Path(path))[2]


def load(path: str | os.PathLike, device="auto") -> MLPClassifier:
    """Load a model saved by `save`, or the model in a training checkpoint.

    A checkpoint (``mnist-xp train --checkpoint``) holds a model: its weights are those
    of the best validation epoch so far when the run had a validation set (what the
    finished run would keep), else those of its last finished epoch. The metadata then
    says which (``"weights"``) and the checkpoint's epoch (``"checkpoint_epoch"``).

    Parameters
    ----------
    path : str or path-like
    device : str or Backend, default "auto"
        Where to put the parameters; a model trained on either device loads on
        either.

    Returns
    -------
    MLPClassifier
        Fitted; its constructor settings are those it was trained with (``device``
        is the one given here).

    Raises
    ------
    ModelFileError
        Missing, unreadable, corrupt, foreign or newer-format file, or arrays that do
        not match the metadata. The message starts with the path.
    """
    path = Path(path)
    arrays, classes, meta = _read_any(path)
    params = dict(meta.get("estimator_params") or {})
    arch = meta["architecture"]
    # The architecture record, checked against the arrays, wins over the settings.
    params.update(n_hidden=arch["n_hidden"], activation=arch["activation"], loss=arch["loss"],
                  dtype=meta["dtype"], device=device)
    if isinstance(params.get("class_weight"), dict):  # JSON made its labels strings
        by_text = {str(_plain(c)): _plain(c) for c in classes}
        params["class_weight"] = {by_text.get(k, k): w for k, w in params["class_weight"].items()}
    try:
        model = MLPClassifier(**params)
    except TypeError as exc:
        raise ModelFileError(f"{path}: metadata has settings this version does not know ({exc})") from None
    model.classes_ = classes
    model.n_features_in_ = arrays["W1"].shape[0]
    model._place(get_backend(device), arrays)
    model.history_ = []
    model.engine_ = None  # loaded, not trained here
    return model


def _read_any(path: Path):
    """(arrays, classes, metadata) of a model file or a training checkpoint."""
    return _read_checkpoint(path) if _is_checkpoint(path) else _read(path)


def _is_checkpoint(path: Path) -> bool:
    """Whether `path` is a zip archive laid out as a training checkpoint (``params/W1``)."""
    try:
        with open_user_file(path, ModelFileError, "model file") as f:
            if not zipfile.is_zipfile(f):
                return False
            with zipfile.ZipFile(f) as archive:
                return "params/W1.npy" in archive.namelist()
    except Exception:  # noqa: BLE001 - any damage at all: _read says what it is
        return False


def _read_checkpoint(path: Path):
    """A training checkpoint's model: the kept weights, classes and a model's metadata.

    Read through the same member-by-member checks as model files: only the parameter,
    class and metadata members are touched (never the optimizer's or the engine's).
    The settings are checked and the network judged (`network_of`, `check_network`)
    as `mnist_xp.training.load_state` does, from the headers before the data is read,
    so ``--model`` and ``--resume`` accept and refuse the same files.
    """
    params = [f"params/{k}" for k in PARAM_NAMES]

    def expect(first, headers):  # the network's shapes, before any parameter is read
        settings = _checkpoint_settings(path, first["metadata"])
        arch, dtype = network_of(settings, headers["params/W1"], headers["classes"].shape,
                                 {k[7:]: h for k, h in headers.items() if k.startswith("params/")})
        for group in ("params", "best"):
            part = {k: headers[f"{group}/{k}"] for k in ALL_PARAM_NAMES
                    if f"{group}/{k}" in headers}
            if group == "params" or part:
                _check_network(path, part, headers["classes"], arch, dtype)

    loaded = _read_archive(path, [*params, "classes", "metadata"],
                           optional=[f"params/{k}" for k in _DEEP_MEMBERS]
                           + [f"best/{k}" for k in ALL_PARAM_NAMES], expect=expect)
    state = _checkpoint_state(path, loaded["metadata"])
    settings = state["settings"]
    best_info = state.get("best")
    best = isinstance(best_info, dict) and "best/W1" in loaded
    group = "best" if best else "params"
    arrays = {k: loaded[f"{group}/{k}"] for k in ALL_PARAM_NAMES if f"{group}/{k}" in loaded}
    classes = loaded["classes"]
    w1 = arrays["W1"]
    arch, dtype = network_of(settings, w1, classes.shape, arrays)
    meta = {
        "format": "mnist_xp.training_state",
        "estimator_params": settings,
        "architecture": {
            "n_inputs": int(w1.shape[0]) if w1.ndim == 2 else 0,
            "n_hidden": arch.n_hidden if arch else 0,
            "n_outputs": int(classes.shape[0]) if classes.ndim == 1 else 0,
            "activation": arch.activation if arch else "relu",
            "loss": arch.loss if arch else "cross_entropy",
        },
        "dtype": dtype,
        "checkpoint_epoch": state.get("epoch"),
        "weights": f"best validation epoch {best_info.get('epoch')}" if best
                   else f"epoch {state.get('epoch')}",
        "extra": state.get("extra", {}),
    }
    _check_arrays(path, arrays, classes, meta)
    return arrays, classes, meta


def _checkpoint_state(path: Path, text: np.ndarray) -> dict:
    """A checkpoint's metadata member parsed; anything but mnist_xp's JSON state is damaged."""
    try:
        state = json.loads(str(text)) if text.dtype.kind == "U" and text.shape == () else None
    except (ValueError, RecursionError):
        state = None
    if not isinstance(state, dict) or state.get("format") != "mnist_xp.training_state":
        raise ModelFileError(f"{path}: damaged training checkpoint metadata")
    return state


def _checkpoint_settings(path: Path, text: np.ndarray) -> dict:
    """A checkpoint's settings from its metadata, checked as `load_state` checks them."""
    state = _checkpoint_state(path, text)
    settings = state.get("settings")
    known = {k: v for k, v in settings.items() if k in BY_NAME and k != "device"} \
        if isinstance(settings, dict) else None
    try:
        if known is None:
            raise SettingError("settings is not an object", "settings")
        check_settings(known)
    except SettingError as exc:
        raise ModelFileError(f"{path}: damaged training checkpoint metadata "
                             f"(settings: {exc})") from None
    return known


def _read(path: Path):
    """Open, validate and return (arrays, classes, metadata) of a model file.

    The archive is read member by member with `numpy.lib.format`, not `np.load`, so
    that only the six expected ``NAME.npy`` members are ever touched (np.load would
    also hand back a non-.npy member, or a same-named one without ``.npy``, as raw
    bytes, inflating it whole), and every member's header is checked -- no object
    dtype (which would need unpickling), no more data than the archive can hold --
    before any array is allocated.
    """
    def expect(first, headers):  # the shapes the metadata allows, before any data is read
        meta = _parse_metadata(path, first["metadata"])
        _check_arrays(path, {k: h for k, h in headers.items() if k in ALL_PARAM_NAMES},
                      headers["classes"], meta)

    loaded = _read_archive(path, _MEMBERS, optional=_DEEP_MEMBERS, expect=expect)
    arrays = {k: loaded[k] for k in ALL_PARAM_NAMES if k in loaded}
    classes, text = loaded["classes"], loaded["metadata"]
    meta = _parse_metadata(path, text)
    _check_arrays(path, arrays, classes, meta)
    return arrays, classes, meta


def _read_archive(path: Path, members, optional=(), expect=None) -> dict:
    """The arrays `members` (and those of `optional` present) of the model archive at
    `path`, each header checked (by `expect` too) before any array is read (see
    `read_npz`)."""
    return read_npz(path, ModelFileError, "model file", members, optional,
                    missing="not an mnist_xp model (missing {})", first=("metadata",),
                    expect=expect)


def _parse_metadata(path: Path, text: np.ndarray) -> dict:
    """Decode and check the format fields of the metadata JSON."""
    if text.dtype.kind != "U" or text.shape != ():
        raise ModelFileError(f"{path}: metadata is not a JSON string")
    try:
        meta = json.loads(str(text))
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise ModelFileError(f"{path}: metadata is not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not an mnist_xp model (format is {meta.get('format')!r})"
                             if isinstance(meta, dict) else f"{path}: metadata is not a JSON object")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFileError(f"{path}: bad format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model format version {version} is newer than this mnist_xp reads "
            f"({FORMAT_VERSION}); upgrade mnist-xp")
    if not isinstance(meta.get("estimator_params") or {}, dict):
        raise ModelFileError(f"{path}: metadata estimator_params is not a JSON object")
    return meta


def _check_arrays(path: Path, arrays: dict, classes: np.ndarray, meta: dict) -> None:
    """The arrays must have the architecture's shapes and the recorded float dtype."""
    try:
        arch = Architecture(**meta["architecture"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: bad architecture in metadata ({exc})") from None
    _check_network(path, arrays, classes, arch, meta.get("dtype"))


def _check_network(path: Path, arrays: dict, classes, arch: Architecture, dtype) -> None:
    """`check_network` (arrays or headers), as one ModelFileError line naming the file."""
    try:
        check_network(arrays, classes, arch, dtype)
    except ValueError as exc:
        raise ModelFileError(f"{path}: {exc}") from None
