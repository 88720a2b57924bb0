"""Fuzz harness: the model and checkpoint loaders (``--model``, ``train --resume``).

The first byte chooses what the rest becomes, so that mutations reach past the zip
layer's checksums:

- 0: the whole file, as is;
- 1: one member of a good model, replaced (the next byte picks which);
- 2: the metadata JSON text of a good model;
- 3: one member of a good training checkpoint, replaced;
- 4: the metadata JSON text of a good checkpoint.

Both `mnist_xp.load` and `mnist_xp.training.load_state` read every file. Invariants:
every failure is a `ModelFileError` naming the file on one line; a model that loads
predicts probabilities for a row of pixels; a state that loads goes on as ``train
--resume`` takes it: its settings pass the data checks or fail with a `SettingError`,
the ``model:`` line prints, and (when it is cheap: a few small epochs left) training
continues from it to the end.
"""

from __future__ import annotations

import functools
import io
import json
import zipfile

import numpy as np

from mnist_xp import MLPClassifier, load
from mnist_xp.errors import ModelFileError, SettingError, TrainingDiverged
from mnist_xp.training import load_state

from ._support import check_message, quiet_stderr, scratch


@functools.lru_cache(maxsize=1)
def _data() -> tuple[np.ndarray, np.ndarray]:
    """The 40 random images and labels the good model and checkpoint were trained on."""
    x = np.random.default_rng(0).integers(0, 256, (40, 784)).astype(np.uint8)
    return x, np.arange(40) % 10


@functools.lru_cache(maxsize=1)
def _good() -> tuple[dict, dict]:
    """The members (name -> .npy bytes) of a tiny model and of a checkpoint of its run."""
    x, y = _data()
    states = []
    clf = MLPClassifier(n_hidden=3, epochs=2, batch_size=20, device="cpu", random_state=0)
    clf.fit(x, y, on_checkpoint=states.append)
    from mnist_xp import save
    from mnist_xp.training import data_fingerprint, save_state

    model_file = scratch(b"", "good_model.npz")
    save(clf, model_file)
    state_file = scratch(b"", "good_state.npz")
    save_state(state_file, states[0], settings=clf.get_params() | {"device": None},
               classes=np.arange(10), fingerprint=data_fingerprint(x, y))
    members = []
    for path in (model_file, state_file):
        with zipfile.ZipFile(path) as z:
            members.append({n: z.read(n) for n in z.namelist()})
    return members[0], members[1]


def _zip(members: dict[str, bytes]) -> bytes:
    """`members` stored in a zip archive."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, blob in members.items():
            z.writestr(name, blob)
    return out.getvalue()


def _metadata_npy(text: str) -> bytes:
    """`text` as the .npy of a 0-d unicode array, as models store their metadata."""
    f = io.BytesIO()
    np.lib.format.write_array(f, np.array(text), allow_pickle=False)
    return f.getvalue()


def _file(data: bytes) -> bytes:
    """The file the harness reads for `data` (see the module docstring)."""
    if not data:
        return data
    mode, rest = data[0] % 5, data[1:]
    if mode == 0:
        return rest
    members = dict(_good()[0 if mode in (1, 2) else 1])
    if mode in (2, 4):
        members["metadata.npy"] = _metadata_npy(rest.decode("utf-8", "replace"))
    elif rest:
        names = sorted(members)
        members[names[rest[0] % len(names)]] = rest[1:]
    return _zip(members)


def one_input(data: bytes) -> None:
    """Load the file `data` describes as a model and as a checkpoint; raise only on a bug."""
    path = scratch(_file(data), "input.npz")
    try:
        with quiet_stderr():
            model = load(path, device="cpu")
    except ModelFileError as exc:
        check_message(exc, path)
    else:
        proba = np.asarray(model.predict_proba(np.zeros((1, model.n_features_in_), np.uint8)))
        assert proba.shape == (1, len(model.classes_))
    try:
        with quiet_stderr():
            state, info = load_state(path)
    except ModelFileError as exc:
        check_message(exc, path)
    else:
        _resume(state, info)


def _resume(state, info) -> None:
    """What ``train --resume`` does with a loaded state (cli/train.py), on the tiny data."""
    from mnist_xp.cli.train import _summary
    from mnist_xp.model import Architecture
    from mnist_xp.settings import ESTIMATOR_SETTINGS, check_against_data, run_epochs

    x, y = _data()
    known = {s.name for s in ESTIMATOR_SETTINGS}
    settings = {k: v for k, v in info["settings"].items() if k in known and k != "device"}
    try:
        check_against_data(settings, *x.shape, clip_batch=False)
    except SettingError:
        return  # the CLI's one-line usage error
    model = MLPClassifier(**{**settings, "verbose": False}, device="cpu")
    if not np.array_equal(info["classes"], np.arange(10)):
        return  # the CLI refuses other data before going on
    arch = Architecture(x.shape[1], model.n_hidden, 10, model.activation, model.loss)
    epochs = run_epochs(settings, x.shape[0])
    _summary(arch, model, epochs)
    if (state.epoch >= epochs or epochs - state.epoch > 2 or max(arch.hidden_sizes) > 64
            or model.teacher is not None):
        return  # finished (a usage error), or too long to train here
    try:
        with quiet_stderr():
            model.fit(x, y, resume=state)
    except TrainingDiverged:
        pass  # a fuzzed learning rate may diverge; the CLI reports it in one line
    assert len(model.history_) == model.epochs, (len(model.history_), model.epochs)


def seeds() -> list[bytes]:
    """The good model and checkpoint, whole and member by member, and near misses."""
    model, state = _good()
    out = [b"\0" + _zip(model), b"\0" + _zip(state)]
    for mode, members in ((1, model), (3, state)):
        names = sorted(members)
        for i, name in enumerate(names):
            if name.startswith(("W1", "params/W1", "runner/", "optimizer/")):
                continue  # the large ones; their headers are seeded by the others
            out.append(bytes([mode, i]) + members[name])
    for mode, members in ((2, model), (4, state)):
        text = str(np.load(io.BytesIO(members["metadata.npy"]), allow_pickle=False))
        out.append(bytes([mode]) + text.encode())
    # issue 18's tokenerror_model.npz: a member header that is not a Python literal
    header = members["metadata.npy"][:10]
    out.append(bytes([1, 0]) + header + b"{'descr': '<f4', 'fortran_order': False, 'shape': (")
    out.append(b"\0" + json.dumps({"not": "a zip"}).encode())
    return out
