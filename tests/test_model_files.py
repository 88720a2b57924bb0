"""Model files: round trips on every backend, metadata, atomic writes, refusal of bad files."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import mnist_xp.model_files as checkpoint
from mnist_xp import MLPClassifier, load, read_metadata, save
from mnist_xp.errors import ModelFileError

from helpers_backend import assert_close


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(120, 36)).astype(np.uint8)
    y = rng.integers(0, 3, 120)
    clf = MLPClassifier(n_hidden=8, epochs=2, batch_size=16, device="cpu", random_state=0).fit(x, y)
    return clf, x


def test_round_trip_on_every_backend_gives_the_same_predictions(fitted, backend, tmp_path):
    clf, x = fitted
    path = save(clf, tmp_path / "m.npz", metadata={"test_accuracy": 0.5})
    loaded = load(path, device=backend)
    assert loaded.backend_.name == backend.name
    for k, v in clf.params_.items():
        assert_close(loaded.params_[k], v, backend, rtol=0, atol=0)
    np.testing.assert_array_equal(loaded.classes_, clf.classes_)
    assert loaded.n_features_in_ == 36
    assert loaded.get_params()["n_hidden"] == 8 and loaded.shift == clf.shift
    np.testing.assert_allclose(backend.to_numpy(loaded.predict_proba(backend.asarray(x))),
                               clf.predict_proba(x), rtol=1e-5, atol=1e-6)


def test_metadata_records_the_format_architecture_and_extras(fitted, tmp_path):
    clf, _ = fitted
    path = save(clf, tmp_path / "m.npz", metadata={"test_accuracy": 0.75, "data": "x"})
    meta = read_metadata(path)
    assert meta["format"] == "mnist_xp.model" and meta["format_version"] == 1
    assert meta["architecture"] == {"n_inputs": 36, "n_hidden": 8, "n_outputs": 3,
                                    "activation": "relu", "loss": "cross_entropy"}
    assert meta["dtype"] == "float32"
    assert meta["extra"] == {"test_accuracy": 0.75, "data": "x"}
    assert "device" not in meta["estimator_params"]


def test_file_is_a_plain_npz_without_pickles(fitted, tmp_path):
    clf, _ = fitted
    path = save(clf, tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as npz:
        assert sorted(npz.files) == ["W1", "W2", "b1", "b2", "classes", "metadata"]
        assert npz["W1"].dtype == np.float32


def test_saving_replaces_the_old_file_only_when_complete(fitted, tmp_path, monkeypatch):
    clf, _ = fitted
    path = tmp_path / "m.npz"
    path.write_bytes(b"previous model")

    def broken_savez(f, **arrays):
        f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        save(clf, path)
    assert path.read_bytes() == b"previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]


def test_unfitted_model_cannot_be_saved(tmp_path):
    with pytest.raises(AttributeError, match="not fitted"):
        save(MLPClassifier(), tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()


# -- bad files ----------------------------------------------------------------------------------

def _rewrite(src, dst, change):
    """Copy model file `src` to `dst`, with `change(arrays, meta)` applied."""
    with np.load(src, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(str(arrays.pop("metadata")))
    change(arrays, meta)
    np.savez(dst, **arrays, metadata=np.array(json.dumps(meta)))
    return dst


def _set_meta(key, value):
    def change(arrays, meta):
        meta[key] = value
    return change


@pytest.mark.parametrize(
    "change, message",
    [
        (_set_meta("format_version", 2), "format version 2 is newer than this mnist_xp reads"),
        (_set_meta("format", "other.tool"), "not an mnist_xp model (format is 'other.tool')"),
        (_set_meta("dtype", "float16"), "unsupported dtype 'float16'"),
        (lambda a, m: a.update(W1=a["W1"][:, :4]), "array W1 is float32[36, 4], metadata says float32[36, 8]"),
        (lambda a, m: a.update(b2=a["b2"].astype(np.float64)), "array b2 is float64[3]"),
        (lambda a, m: a.update(W2=np.full_like(a["W2"], np.nan)), "array W2 holds NaN"),
        (lambda a, m: a.pop("b1"), "missing b1"),
        (lambda a, m: m["architecture"].update(activation="tanh"), "bad architecture"),
        (lambda a, m: a.update(classes=a["classes"][:2]), "classes should be 3 labels"),
    ],
)
def test_inconsistent_files_are_refused_naming_the_problem(fitted, tmp_path, change, message):
    clf, _ = fitted
    good = save(clf, tmp_path / "good.npz")
    bad = _rewrite(good, tmp_path / "bad.npz", change)
    with pytest.raises(ModelFileError) as info:
        load(bad, device="cpu")
    assert str(info.value).startswith(f"{bad}: ")
    assert message in str(info.value)


def test_pickled_objects_are_never_loaded(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, W1=np.array([{"x": 1}], dtype=object), b1=np.zeros(1), W2=np.zeros(1),
             b2=np.zeros(1), classes=np.arange(1), metadata=np.array("{}"))
    with pytest.raises(ModelFileError, match="pickled objects, which are never loaded"):
        load(path, device="cpu")


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda p: None, "no such model file"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_bytes(b"not a zip at all"), "not a readable .npz model file"),
        (lambda p: p.write_bytes(b""), "not a readable .npz model file"),
        (lambda p: np.savez(p, a=np.zeros(3)), "not an mnist_xp model (missing"),
    ],
)
def test_unreadable_or_foreign_files_are_refused(tmp_path, write, message):
    path = tmp_path / "m.npz"
    write(path)
    with pytest.raises(ModelFileError) as info:
        load(path, device="cpu")
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)


def test_truncated_file_is_refused(fitted, tmp_path):
    clf, _ = fitted
    path = save(clf, tmp_path / "m.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="not a readable .npz model file"):
        load(path, device="cpu")


def test_corrupt_member_is_refused(fitted, tmp_path):
    clf, _ = fitted
    path = save(clf, tmp_path / "m.npz")
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members["W1.npy"] = members["W1.npy"][:200]
    with zipfile.ZipFile(path, "w") as z:
        for name, blob in members.items():
            z.writestr(name, blob)
    with pytest.raises(ModelFileError):
        load(path, device="cpu")


def test_numpy_scalars_in_metadata_are_stored_as_numbers(fitted, tmp_path):
    clf, _ = fitted
    path = save(clf, tmp_path / "m.npz", metadata={"acc": np.float32(0.5), "n": np.int64(3)})
    assert read_metadata(path)["extra"] == {"acc": 0.5, "n": 3}
    with pytest.raises(ValueError, match="JSON-serialisable"):
        save(clf, tmp_path / "other.npz", metadata={"bad": object()})
    assert not (tmp_path / "other.npz").exists()


def test_installed_model_is_the_best_preset_and_scores_as_recorded():
    from mnist_xp import load_mnist
    from mnist_xp.model_files import default_model_path

    path = default_model_path()
    meta = read_metadata(path)
    assert meta["extra"]["preset"] == "best" and meta["estimator_params"]["augment"]
    model = load(path, device="cpu")
    data = load_mnist("bundled")  # its test set is the official 10,000
    accuracy = model.score(data.x_test.reshape(len(data.x_test), -1), data.y_test)
    assert accuracy == pytest.approx(meta["extra"]["test_accuracy"], abs=1e-9)
    assert accuracy >= 0.988
    assert path.stat().st_size < 1_000_000


def test_distortion_settings_survive_a_round_trip(tmp_path):
    from mnist_xp import MLPClassifier

    x = np.random.default_rng(0).integers(0, 256, (40, 36), dtype=np.uint8)
    y = np.arange(40) % 3
    model = MLPClassifier(8, epochs=1, augment={"rotate": 5, "elastic": 2.5}, device="cpu",
                          random_state=0).fit(x, y)
    save(model, tmp_path / "m.npz")
    assert load(tmp_path / "m.npz", device="cpu").augment == {"rotate": 5, "elastic": 2.5}


# -- hostile archives: refused from the headers alone, before any data is allocated -----

def _zip_members(path, members: dict, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for name, blob in members.items():
            z.writestr(name, blob)
    return path


def _npy(array) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _good_members(good):
    with zipfile.ZipFile(good) as z:
        return {n: z.read(n) for n in z.namelist()}


def _huge_header(shape, descr="<f4") -> bytes:
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False,
                                               "shape": shape})
    return buf.getvalue() + bytes(64)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda m: m.update({"W1.npy": _huge_header((10**6, 10**6))}),
         "member W1.npy: header declares 4,000,000,000,000 bytes"),
        (lambda m: m.update({"metadata.npy": _huge_header((10**9,), "<U1")}),
         "member metadata.npy: header declares 4,000,000,000 bytes"),
        (lambda m: m.update({"metadata.npy": b'{"format": "mnist_xp.model"}'}),
         "member metadata.npy: not .npy data"),
        (lambda m: m.update({"b1.npy": _npy(np.array([object()], dtype=object))}),
         "pickled objects, which are never loaded"),
    ],
    ids=["4TB-array", "4GB-metadata-string", "member-not-npy", "object-array"],
)
def test_hostile_members_are_refused_before_allocating(fitted, tmp_path, damage, message):
    import tracemalloc

    clf, _ = fitted
    members = _good_members(save(clf, tmp_path / "good.npz"))
    damage(members)
    bad = _zip_members(tmp_path / "bad.npz", members)
    tracemalloc.start()
    try:
        with pytest.raises(ModelFileError) as info:
            load(bad, device="cpu")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(info.value).startswith(f"{bad}: ") and message in str(info.value)
    assert peak < 16 << 20


def test_only_the_npy_members_are_read(fitted, tmp_path):
    # np.load would hand back a same-named member without .npy, inflating it whole.
    clf, _ = fitted
    members = _good_members(save(clf, tmp_path / "good.npz"))
    members["W1"] = b"\0" * (8 << 20)  # deflates to a few KB; never read
    path = _zip_members(tmp_path / "m.npz", members, zipfile.ZIP_DEFLATED)
    np.testing.assert_array_equal(load(path, device="cpu").params_["W1"], clf.params_["W1"])


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.update(estimator_params="abc"), "estimator_params is not a JSON object"),
        (lambda m: m.update(format_version=True), "bad format_version True"),
    ],
)
def test_odd_metadata_values_are_refused(fitted, tmp_path, change, message):
    clf, _ = fitted
    good = save(clf, tmp_path / "good.npz")
    bad = _rewrite(good, tmp_path / "bad.npz", lambda a, m: change(m))
    with pytest.raises(ModelFileError, match=message):
        load(bad, device="cpu")


def test_absurdly_nested_metadata_is_invalid_json(fitted, tmp_path):
    clf, _ = fitted
    good = save(clf, tmp_path / "good.npz")
    with np.load(good, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["metadata"] = np.array("[" * 100_000 + "]" * 100_000)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ModelFileError, match="metadata is not valid JSON"):
        load(tmp_path / "bad.npz", device="cpu")


# -- a training checkpoint is a model too ---------------------------------------------

def checkpoint_of(x, y, path, **settings):
    """Fit with every epoch checkpointed to `path`; the fitted estimator."""
    from mnist_xp.model_files import jsonable_settings
    from mnist_xp.training import data_fingerprint, save_state

    clf = MLPClassifier(n_hidden=8, epochs=3, batch_size=16, device="cpu", random_state=0,
                        **settings)
    states = []
    clf.fit(x, y, on_checkpoint=states.append)
    save_state(path, states[-1], settings=jsonable_settings(clf), classes=clf.classes_,
               fingerprint=data_fingerprint(x, y), metadata={"data": "test"})
    return clf


def test_a_checkpoint_loads_as_the_model_it_holds(fitted, tmp_path):
    _, x = fitted
    y = np.random.default_rng(1).integers(0, 3, len(x))
    clf = checkpoint_of(x, y, tmp_path / "ck.npz")
    loaded = load(tmp_path / "ck.npz", device="cpu")
    for k, v in clf.params_.items():
        np.testing.assert_array_equal(loaded.params_[k], v, err_msg=k)
    np.testing.assert_array_equal(loaded.predict(x), clf.predict(x))
    meta = read_metadata(tmp_path / "ck.npz")
    assert meta["weights"] == "epoch 3" and meta["checkpoint_epoch"] == 3
    assert meta["extra"] == {"data": "test"} and meta["estimator_params"]["n_hidden"] == 8


def test_a_checkpoint_with_a_validation_set_gives_its_best_epoch(fitted, tmp_path):
    _, x = fitted
    y = np.random.default_rng(1).integers(0, 3, len(x))
    clf = checkpoint_of(x, y, tmp_path / "ck.npz", validation_fraction=0.25, learning_rate=2.0)
    loaded = load(tmp_path / "ck.npz", device="cpu")
    for k, v in clf.params_.items():  # fit restored the best epoch's weights too
        np.testing.assert_array_equal(loaded.params_[k], v, err_msg=k)
    assert read_metadata(tmp_path / "ck.npz")["weights"] == \
        f"best validation epoch {clf.best_epoch_}"


def test_a_checkpoint_whose_settings_contradict_its_arrays_is_one_line(fitted, tmp_path):
    from mnist_xp.training import load_state, save_state

    _, x = fitted
    y = np.random.default_rng(1).integers(0, 3, len(x))
    checkpoint_of(x, y, tmp_path / "ck.npz")
    state, info = load_state(tmp_path / "ck.npz")
    save_state(tmp_path / "bad.npz", state, settings={**info["settings"], "n_hidden": 9},
               classes=info["classes"], fingerprint=info["data_fingerprint"])
    with pytest.raises(ModelFileError, match=r"bad\.npz: array W1 is float32\[36, 8\], "
                                             r"metadata says float32\[36, 9\]"):
        load(tmp_path / "bad.npz")


def test_a_checkpoint_is_read_as_safely_as_a_model(fitted, tmp_path):
    # only the parameter, class and metadata members are touched, each header checked
    import io
    import struct  # noqa: F401

    _, x = fitted
    y = np.random.default_rng(1).integers(0, 3, len(x))
    checkpoint_of(x, y, tmp_path / "ck.npz")

    def npy_header(shape, descr="<f8"):
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            buf, {"descr": descr, "fortran_order": False, "shape": shape})
        return buf.getvalue()

    # a huge member the model does not need is never read
    with zipfile.ZipFile(tmp_path / "ck.npz") as src, \
            zipfile.ZipFile(tmp_path / "extra.npz", "w") as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item))
        dst.writestr("optimizer/zzz.npy", npy_header((10**9,)))
    assert load(tmp_path / "extra.npz").n_features_in_ == 36
    # a parameter member declaring more than the archive holds is refused before reading
    with zipfile.ZipFile(tmp_path / "ck.npz") as src, \
            zipfile.ZipFile(tmp_path / "lies.npz", "w") as dst:
        for item in src.infolist():
            data = npy_header((10**9, 8), "<f4") if item.filename == "params/W1.npy" else \
                src.read(item)
            dst.writestr(item, data)
    with pytest.raises(ModelFileError, match=r"lies\.npz: member params/W1\.npy: header declares"):
        load(tmp_path / "lies.npz")
