"""Datasets: the bundled subset, IDX directories, the cache location and load_mnist."""

from __future__ import annotations

import gzip
import hashlib
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from helpers_data import synthetic_mnist, write_mnist_dir

from mnist_xp.data import (
    FILE_NAMES,
    MNIST,
    default_cache_dir,
    load_bundled,
    load_idx_dir,
    load_mnist,
    write_idx,
)
from mnist_xp.data import datasets
from mnist_xp.data import cache as cache_module
from mnist_xp.errors import DataError

ROLES_TO_FIELDS = {
    "train_images": "x_train",
    "train_labels": "y_train",
    "test_images": "x_test",
    "test_labels": "y_test",
}


def assert_same_data(mnist: MNIST, arrays: dict[str, np.ndarray]) -> None:
    for role, field in ROLES_TO_FIELDS.items():
        actual = getattr(mnist, field)
        assert actual.dtype == np.uint8
        np.testing.assert_array_equal(actual, arrays[role])


def assert_one_line_error(error_info, starts_with: Path, *fragments: str) -> str:
    message = str(error_info.value)
    assert message.startswith(f"{starts_with}: "), message
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


# The bundled subset -----------------------------------------------------------------


def test_bundled_subset_shapes_dtypes_and_labels():
    mnist = load_bundled()
    assert mnist.x_train.shape == (10_000, 28, 28)
    assert mnist.x_test.shape == (10_000, 28, 28)
    assert mnist.y_train.shape == (10_000,)
    assert mnist.y_test.shape == (10_000,)
    for array in (mnist.x_train, mnist.y_train, mnist.x_test, mnist.y_test):
        assert array.dtype == np.uint8
    for labels in (mnist.y_train, mnist.y_test):
        assert set(np.unique(labels)) == set(range(10))
    # The official training and test sets start with these digits.
    np.testing.assert_array_equal(mnist.y_train[:8], [5, 0, 4, 1, 9, 2, 1, 3])
    np.testing.assert_array_equal(mnist.y_test[:8], [7, 2, 1, 0, 4, 1, 4, 9])
    assert mnist.x_train.max() == 255
    assert mnist.source == "bundled MNIST subset (10,000 training / 10,000 test images)"


def test_bundled_files_match_their_sha256sums():
    bundled = resources.files("mnist_xp.data") / "bundled"
    sums = {}
    for line in (bundled / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        sums[name] = digest
    assert set(sums) == {f"{name}.gz" for name in FILE_NAMES.values()}
    for name, digest in sums.items():
        assert hashlib.sha256((bundled / name).read_bytes()).hexdigest() == digest, name


def test_mnist_repr_shows_the_source_not_the_arrays():
    mnist = MNIST(*(np.zeros((1, 28, 28), np.uint8), np.zeros(1, np.uint8)) * 2, source="s")
    assert repr(mnist) == "MNIST(source='s')"


# load_idx_dir -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "gz",
    [True, False, {"train_images": True, "train_labels": False, "test_images": False, "test_labels": True}],
    ids=["gz", "raw", "mixed"],
)
def test_load_idx_dir_reads_raw_and_gz(tmp_path, gz):
    arrays = synthetic_mnist(n_train=6, n_test=4)
    mnist = load_idx_dir(write_mnist_dir(tmp_path, arrays, gz=gz))
    assert_same_data(mnist, arrays)
    assert mnist.source == f"IDX files in {tmp_path} (6 / 4)"


def test_load_idx_dir_prefers_gz_over_raw(tmp_path):
    gz_arrays = synthetic_mnist(seed=1)
    write_mnist_dir(tmp_path, synthetic_mnist(seed=2), gz=False)
    write_mnist_dir(tmp_path, gz_arrays, gz=True)
    assert_same_data(load_idx_dir(str(tmp_path)), gz_arrays)


def test_load_idx_dir_missing_directory(tmp_path):
    with pytest.raises(DataError) as info:
        load_idx_dir(tmp_path / "absent")
    assert_one_line_error(info, tmp_path / "absent", "no such directory", "train-images-idx3-ubyte")


def test_load_idx_dir_not_a_directory(tmp_path):
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(DataError) as info:
        load_idx_dir(tmp_path / "file")
    assert_one_line_error(info, tmp_path / "file", "not a directory", "t10k-labels-idx1-ubyte")


def test_load_idx_dir_lists_missing_files(tmp_path):
    write_mnist_dir(tmp_path, synthetic_mnist())
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError) as info:
        load_idx_dir(tmp_path)
    message = assert_one_line_error(info, tmp_path)
    missing_part, expected_part = message.split(";", 1)
    assert missing_part == f"{tmp_path}: missing train-labels-idx1-ubyte, t10k-images-idx3-ubyte"
    assert "raw or .gz" in expected_part


def _replace(arrays, role, value):
    return {**arrays, role: np.asarray(value)}


BASE = synthetic_mnist(n_train=5, n_test=3)
DATASET_ERRORS = {
    "images 2-D": ("train_images", BASE["train_images"].reshape(5, 784), "shape (n, 28, 28)"),
    "images int16 < 0": ("test_images", BASE["test_images"].astype(np.int16) - 1,
                         "pixel values must lie in 0..255"),
    "images float > 255": ("test_images", BASE["test_images"].astype(np.float32) * 2,
                           "found 0..510"),
    "images NaN": ("train_images", np.full((5, 28, 28), np.nan, np.float32), "NaN"),
    "images 28x27": ("train_images", BASE["train_images"][:, :, :27], "of shape (5, 28, 27)"),
    "labels 2-D": ("train_labels", BASE["train_labels"].reshape(5, 1), "labels of shape (n,)"),
    "labels float": ("test_labels", BASE["test_labels"].astype(np.float32),
                     "expected integer labels"),
    "labels negative": ("test_labels", np.array([3, -1, 2], np.int16), "found -1 at index 1"),
    "label 10": ("test_labels", np.array([3, 10, 2], np.uint8), "found 10 at index 1"),
    "count mismatch": ("train_labels", BASE["train_labels"][:4], "holds 4 labels but"),
}


@pytest.mark.parametrize("case", DATASET_ERRORS)
def test_load_idx_dir_refuses_bad_dataset(tmp_path, case):
    role, value, fragment = DATASET_ERRORS[case]
    write_mnist_dir(tmp_path, _replace(BASE, role, value))
    with pytest.raises(DataError) as info:
        load_idx_dir(tmp_path)
    assert_one_line_error(info, tmp_path / f"{FILE_NAMES[role]}.gz", fragment)


@pytest.mark.parametrize("role, value", [
    ("test_labels", BASE["test_labels"].astype(np.int32)),
    ("train_labels", BASE["train_labels"].astype(np.int16)),
    ("test_images", BASE["test_images"].astype(np.int16)),
    ("test_images", BASE["test_images"].astype(np.float32)),  # 0..255
    ("train_images", BASE["train_images"].astype(np.float64) / 255),  # [0, 1]
    ("train_images", BASE["train_images"].astype(np.float32) / 255 * 1.0001),  # rounding
])
def test_any_idx_type_of_pixels_and_labels_is_read_as_uint8(tmp_path, role, value):
    write_mnist_dir(tmp_path, _replace(BASE, role, value))
    data = load_idx_dir(tmp_path)
    got = {"train_images": data.x_train, "train_labels": data.y_train,
           "test_images": data.x_test, "test_labels": data.y_test}
    for r, want in BASE.items():
        assert got[r].dtype == np.uint8
        np.testing.assert_array_equal(got[r], want, err_msg=r)


def test_dot_named_files_are_found(tmp_path):
    # as many archives (Kaggle's among them) extract: train-images.idx3-ubyte ...
    for role, array in BASE.items():
        write_idx(tmp_path / FILE_NAMES[role].replace("-idx", ".idx"), array)
    data = load_idx_dir(tmp_path)
    np.testing.assert_array_equal(data.x_train, BASE["train_images"])
    np.testing.assert_array_equal(data.y_test, BASE["test_labels"])


def test_load_idx_dir_passes_on_idx_errors(tmp_path):
    write_mnist_dir(tmp_path, synthetic_mnist())
    broken = tmp_path / "t10k-labels-idx1-ubyte.gz"
    broken.write_bytes(broken.read_bytes()[:-5])
    with pytest.raises(DataError) as info:
        load_idx_dir(tmp_path)
    assert_one_line_error(info, broken, "corrupt gzip data")


# default_cache_dir ------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("MNIST_XP_DATA", "XDG_CACHE_HOME", "LOCALAPPDATA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


def test_default_cache_dir_honours_mnist_xp_data(clean_env, tmp_path):
    clean_env.setenv("MNIST_XP_DATA", str(tmp_path / "data"))
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "data"


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="Linux layout")
def test_default_cache_dir_honours_xdg_cache_home(clean_env, tmp_path):
    clean_env.setenv("MNIST_XP_DATA", "")  # empty means unset
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "mnist_xp"


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="Linux layout")
@pytest.mark.parametrize("xdg", [None, "relative/cache"])
def test_default_cache_dir_linux_falls_back_to_home_cache(clean_env, tmp_path, xdg):
    if xdg is not None:
        clean_env.setenv("XDG_CACHE_HOME", xdg)
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "mnist_xp"


@pytest.mark.skipif(sys.platform != "darwin", reason="macOS layout")
def test_default_cache_dir_macos(clean_env, tmp_path):
    assert default_cache_dir() == tmp_path / "home" / "Library" / "Caches" / "mnist_xp"


@pytest.mark.skipif(sys.platform != "win32", reason="Windows layout")
def test_default_cache_dir_windows(clean_env, tmp_path):
    clean_env.setenv("LOCALAPPDATA", str(tmp_path / "local"))
    assert default_cache_dir() == tmp_path / "local" / "mnist_xp" / "Cache"


def test_default_cache_dir_is_platformdirs_user_cache_dir(clean_env):
    platformdirs = pytest.importorskip("platformdirs")
    expected = platformdirs.user_cache_dir("mnist_xp", appauthor=False)
    assert default_cache_dir() == Path(expected)
    assert default_cache_dir().name in ("mnist_xp", "Cache")


# load_mnist -------------------------------------------------------------------------


@pytest.fixture
def no_download(monkeypatch):
    """Make any download attempt fail the test: these tests must stay offline."""

    def forbidden(*args, **kwargs):
        raise AssertionError("load_mnist tried to download")

    monkeypatch.setattr(cache_module, "_retrieve", forbidden)


def make_official(monkeypatch, directory: Path) -> None:
    """Make the four files in `directory` the known official ones, as far as the
    cache check goes: their content hashes replace FULL_SHA256."""
    hashes = {}
    for name in FILE_NAMES.values():
        path = directory / f"{name}.gz"
        if path.exists():
            data = gzip.decompress(path.read_bytes())
        else:
            data = (directory / name).read_bytes()
        hashes[f"{name}.gz"] = hashlib.sha256(data).hexdigest()
    monkeypatch.setattr(cache_module, "FULL_SHA256", hashes)


def test_auto_without_full_set_falls_back_to_bundled_with_one_line(tmp_path, no_download):
    lines = []
    mnist = load_mnist("auto", cache_dir=tmp_path, download=False, log=lines.append)
    assert mnist.x_train.shape == (10_000, 28, 28)
    assert mnist.source.startswith("bundled MNIST subset")
    assert len(lines) == 1
    (line,) = lines
    assert "\n" not in line
    for fragment in ("bundled MNIST subset", "downloading is off", str(tmp_path), "--data-dir", "MNIST_XP_DATA"):
        assert fragment in line, line


def test_auto_fallback_logs_to_stderr_by_default(tmp_path, capsys, no_download):
    load_mnist(cache_dir=tmp_path, download=False)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("full MNIST unavailable (")
    assert "using the bundled MNIST subset" in captured.err


@pytest.mark.parametrize("source", ["full", "auto"])
def test_broken_cached_file_is_an_error_even_in_auto(tmp_path, no_download, source):
    write_mnist_dir(tmp_path, synthetic_mnist())
    broken = tmp_path / "train-images-idx3-ubyte.gz"
    broken.write_bytes(b"\x1f\x8b junk")
    with pytest.raises(DataError) as info:
        load_mnist(source, cache_dir=tmp_path, download=False, log=pytest.fail)
    assert_one_line_error(info, broken,
                          "does not match the official MNIST content (corrupt gzip data",
                          "downloading is off")


def test_full_without_full_set_raises_helpfully(tmp_path, no_download):
    with pytest.raises(DataError) as info:
        load_mnist("full", cache_dir=tmp_path / "cache", download=False, log=pytest.fail)
    assert_one_line_error(
        info,
        tmp_path / "cache",
        "missing train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte",
        "--data-dir DIR",
        "MNIST_XP_DATA",
    )


@pytest.mark.parametrize("source", ["full", "auto"])
def test_full_set_in_cache_is_loaded_without_downloading(tmp_path, source, no_download,
                                                         monkeypatch):
    arrays = synthetic_mnist(n_train=7, n_test=2)
    write_mnist_dir(tmp_path, arrays, gz=False)
    make_official(monkeypatch, tmp_path)
    mnist = load_mnist(source, cache_dir=tmp_path, log=pytest.fail)
    assert_same_data(mnist, arrays)
    assert mnist.source == f"full MNIST from {tmp_path} (7 / 2)"


@pytest.mark.parametrize("source", ["full", "auto"])
def test_other_data_in_the_cache_is_never_called_mnist(tmp_path, source, no_download):
    write_mnist_dir(tmp_path, synthetic_mnist(n_train=7, n_test=2), gz=False)
    with pytest.raises(DataError) as info:
        load_mnist(source, cache_dir=tmp_path, download=False, log=pytest.fail)
    assert_one_line_error(info, tmp_path / "train-images-idx3-ubyte",
                          "does not match the official MNIST content (its content's SHA-256 is ")


def test_cache_dir_defaults_to_mnist_xp_data(tmp_path, monkeypatch, no_download):
    arrays = synthetic_mnist()
    monkeypatch.setenv("MNIST_XP_DATA", str(write_mnist_dir(tmp_path, arrays)))
    make_official(monkeypatch, tmp_path)
    assert_same_data(load_mnist("full"), arrays)


def test_data_dir_wins_over_source(tmp_path, no_download):
    arrays = synthetic_mnist()
    mnist = load_mnist("bundled", data_dir=write_mnist_dir(tmp_path, arrays))
    assert_same_data(mnist, arrays)


def test_bundled_source_ignores_the_cache(tmp_path, no_download):
    write_mnist_dir(tmp_path, synthetic_mnist())
    assert load_mnist("bundled", cache_dir=tmp_path).y_train.shape == (10_000,)


def test_unknown_source_is_a_value_error():
    with pytest.raises(ValueError, match="'nope'.*auto, full, bundled"):
        load_mnist("nope")


def test_find_full_mnist(tmp_path, monkeypatch):
    assert datasets.find_full_mnist(tmp_path / "absent") is None
    write_mnist_dir(tmp_path, synthetic_mnist(), gz={"train_images": True, "train_labels": False, "test_images": True, "test_labels": False})
    # Present but not the official content: found only when not verified.
    assert datasets.find_full_mnist(tmp_path, verify=False) == tmp_path
    assert datasets.find_full_mnist(tmp_path) is None
    make_official(monkeypatch, tmp_path)
    assert datasets.find_full_mnist(tmp_path) == tmp_path
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    assert datasets.find_full_mnist(tmp_path) is None
    assert datasets.find_full_mnist(tmp_path, verify=False) is None
