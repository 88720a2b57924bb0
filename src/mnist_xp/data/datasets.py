"""Where MNIST comes from: a directory of IDX files, the cache, or the 10,000/10,000
subset bundled inside the package. The cache itself (hashes, checks, downloads) is
`mnist_xp.data.cache`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from mnist_xp.data import cache
from mnist_xp.data.cache import (
    FILE_NAMES,
    FULL_MD5,
    FULL_SHA256,
    MIRRORS,
    default_cache_dir,
    download_mnist,
    find_full_mnist,
    locate_all,
)
from mnist_xp.data.idx import read_idx
from mnist_xp.errors import DataError, DownloadError
from mnist_xp.pixels import IMAGE_SIDE

__all__ = [
    "MNIST",
    "FILE_NAMES",
    "MIRRORS",
    "FULL_MD5",
    "FULL_SHA256",
    "load_idx_dir",
    "load_bundled",
    "default_cache_dir",
    "download_mnist",
    "find_full_mnist",
    "load_mnist",
]

_SOURCES = ("auto", "full", "bundled")


@dataclasses.dataclass(frozen=True, eq=False)
class MNIST:
    """An MNIST-style dataset held as host arrays.

    Attributes
    ----------
    x_train : numpy.ndarray, shape (n, 28, 28), dtype uint8
        Training images, pixel values 0..255.
    y_train : numpy.ndarray, shape (n,), dtype uint8
        Training labels, 0..9.
    x_test : numpy.ndarray, shape (m, 28, 28), dtype uint8
        Test images.
    y_test : numpy.ndarray, shape (m,), dtype uint8
        Test labels, 0..9.
    source : str
        One human-readable line saying where the data came from.
    """

    # eq=False and repr=False: comparing or printing 70,000 images is never wanted.
    x_train: np.ndarray = dataclasses.field(repr=False)
    y_train: np.ndarray = dataclasses.field(repr=False)
    x_test: np.ndarray = dataclasses.field(repr=False)
    y_test: np.ndarray = dataclasses.field(repr=False)
    source: str


def load_idx_dir(directory: str | os.PathLike) -> MNIST:
    """Load a dataset laid out like MNIST from a directory of IDX files.

    Each of the four files (see `FILE_NAMES`) may be gzipped (``NAME.gz``) or raw
    (``NAME``), and named with ``.idx`` for ``-idx`` (``train-images.idx3-ubyte``);
    the first that exists of ``NAME.gz``, ``NAME``, then the dotted ones, is used.
    Images of any IDX type and labels of any integer type are read (see `_as_pixels`
    and `_as_labels`) and stored as uint8. The content is checked for shape, range and
    labels, not against the official MNIST: any such dataset loads, and its
    ``source`` says "IDX files in DIRECTORY", never "MNIST".

    Parameters
    ----------
    directory : str or os.PathLike
        Directory holding the four files.

    Returns
    -------
    MNIST
        Images of shape (n, 28, 28) / (m, 28, 28) and labels of shape (n,) / (m,),
        all uint8, labels in 0..9.

    Raises
    ------
    DataError
        If the directory is missing or not a directory, files are missing, or a file
        is invalid IDX, has the wrong shape, holds pixels outside 0..255 (or [0, 1]) or
        labels outside 0..9, or holds a different number of labels than its images.
    """
    directory = Path(directory)
    if not directory.exists():
        raise DataError(f"{directory}: no such directory; {_expected_files()}")
    if not directory.is_dir():
        raise DataError(f"{directory}: not a directory; {_expected_files()}")
    found, missing = locate_all(directory)
    if missing:
        raise DataError(
            f"{directory}: missing {', '.join(missing)}; {_expected_files()}"
        )
    x_train, y_train, x_test, y_test = _read_split(found)
    return MNIST(
        x_train, y_train, x_test, y_test,
        source=f"IDX files in {directory} ({len(y_train):,} / {len(y_test):,})",
    )


def load_bundled() -> MNIST:
    """Load the MNIST subset shipped inside the package.

    Returns
    -------
    MNIST
        The first 10,000 official training images and the 10,000 official test
        images, shapes (10000, 28, 28) and (10000,), uint8.
    """
    bundled = resources.files("mnist_xp.data") / "bundled"
    # as_file gives real paths even when the package is installed as a zip.
    with contextlib.ExitStack() as stack:
        paths = {
            role: stack.enter_context(resources.as_file(bundled / f"{name}.gz"))
            for role, name in FILE_NAMES.items()
        }
        x_train, y_train, x_test, y_test = _read_split(paths)
    return MNIST(
        x_train, y_train, x_test, y_test,
        source=(
            f"bundled MNIST subset ({len(y_train):,} training / "
            f"{len(y_test):,} test images)"
        ),
    )


def load_mnist(
    source: str = "auto",
    *,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    timeout: float = 10.0,
    log: Callable[[str], None] | None = None,
) -> MNIST:
    """Load MNIST from a directory, the cache, a download, or the bundled subset.

    The full MNIST is loaded from the cache only after each file's decompressed
    content has been checked against the official SHA-256 (`FULL_SHA256`); see
    `mnist_xp.data.cache.read_cache` for what that costs. A cached file that does
    not match (another dataset under MNIST's names, a modified or truncated file) is
    fetched again if `download` is true; if it cannot be, loading stops with an
    error, even for ``"auto"``: a broken cache is reported, never bypassed.

    Parameters
    ----------
    source : {"auto", "full", "bundled"}
        ``"bundled"``: the 10,000/10,000 subset inside the package. ``"full"``: the
        full MNIST from the cache, its missing or wrong files downloaded first if
        `download` is true. ``"auto"``: like ``"full"``, but if files are missing
        and cannot be downloaded, the bundled subset, with one line to `log` saying
        why and how to supply the full set. Ignored when `data_dir` is given.
    data_dir : str or os.PathLike, optional
        Load the four IDX files from this directory instead (see `load_idx_dir`);
        any MNIST-shaped data, not checked against the official files.
    cache_dir : str or os.PathLike, optional
        Where the full MNIST is cached; defaults to `default_cache_dir()`.
    download : bool
        Whether files missing from the cache, or not matching the official ones,
        may be downloaded. If false, the network is never touched.
    timeout : float
        Seconds to wait on each network operation.
    log : callable, optional
        Receives one-line progress and fallback messages; defaults to printing
        them on ``sys.stderr``.

    Returns
    -------
    MNIST
        Images (n, 28, 28) and labels (n,), uint8; ``source`` says where from.

    Raises
    ------
    ValueError
        If `source` is not one of the three above.
    DataError
        If `data_dir` is invalid; if a cached file does not hold the official MNIST
        content and cannot be fetched again (any `source` but ``"bundled"``; the
        message names the file); or (``"full"``) the full MNIST is not cached and
        `download` is false.
    DownloadError
        If (``"full"``) a missing file cannot be downloaded.
    """
    if data_dir is not None:
        return load_idx_dir(data_dir)
    if source not in _SOURCES:
        raise ValueError(
            f"unknown MNIST source {source!r}; expected one of {', '.join(_SOURCES)}"
        )
    if source == "bundled":
        return load_bundled()
    log = log if log is not None else _print_to_stderr
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        return _load_full(cache_dir, download, timeout, log)
    except _NotOfficial as e:
        # Its message already says what to do; the bundled subset is no remedy.
        raise DataError(str(e)) from None
    except (DataError, DownloadError) as e:
        if source == "full":
            raise type(e)(f"{e}; {_how_to_supply(cache_dir)}") from None
        reason = e
    bundled = load_bundled()
    log(f"full MNIST unavailable ({reason}); using the {bundled.source}; for the full set "
        f"pass --data-dir DIR, or put its four files in {cache_dir} or set MNIST_XP_DATA")
    return bundled


class _NotOfficial(DataError):
    """A cached file is there but is not the official MNIST file, and stays so."""


def _load_full(
    cache_dir: Path, download: bool, timeout: float, log: Callable[[str], None]
) -> MNIST:
    """The full MNIST from `cache_dir`, verified; missing or wrong files fetched if allowed."""
    names = cache.gz_names()
    good, bad, missing = cache.read_cache(cache_dir, names, cache.FULL_SHA256)
    if bad and not download:
        path, why = bad[cache.first_of(names, bad)]
        raise _NotOfficial(
            f"{path}: does not match the official MNIST content ({why}) and downloading "
            "is off; run without --no-download to fetch it again, or replace it with "
            "the official file"
        )
    if missing and not download:
        raise DataError(
            f"{cache_dir}: the full MNIST is not there (missing "
            f"{', '.join(n.removesuffix('.gz') for n in missing)}) and downloading is off"
        )
    if bad or missing:
        cache.make_cache_dir(cache_dir)
        # Broken files first: failing to repair one is an error, while failing to
        # fetch a missing one lets "auto" fall back to the bundled subset.
        for name in [n for n in names if n in bad] + missing:
            try:
                cache.fetch(cache_dir, name, cache.FULL_MD5[name], cache.FULL_SHA256[name],
                            cache.MIRRORS, timeout, log)
            except DownloadError as e:
                if name not in bad:
                    raise
                path, why = bad[name]
                raise _NotOfficial(
                    f"{path}: does not match the official MNIST content ({why}), and "
                    f"fetching it again failed ({e}); check the network, or replace it "
                    "with the official file"
                ) from None
            if name in bad:
                log(f"{bad[name][0]} did not match the official MNIST content "
                    f"({bad[name][1]}); fetched it again")
        fetched, still_bad, still_missing = cache.read_cache(
            cache_dir, [n for n in names if n in bad or n in missing], cache.FULL_SHA256)
        for name in still_missing:  # removed by someone else since; say so
            still_bad[name] = (cache_dir / name, "it vanished after being downloaded")
        if still_bad:
            path, why = still_bad[cache.first_of(names, still_bad)]
            raise _NotOfficial(
                f"{path}: does not match the official MNIST content ({why}) even after "
                "fetching it again; replace it with the official file"
            )
        good.update(fetched)
    paths = {role: good[f"{name}.gz"][0] for role, name in FILE_NAMES.items()}
    arrays = {role: good[f"{name}.gz"][1] for role, name in FILE_NAMES.items()}
    x_train, y_train, x_test, y_test = _check_split(paths, arrays)
    return MNIST(
        x_train, y_train, x_test, y_test,
        source=f"full MNIST from {cache_dir} ({len(y_train):,} / {len(y_test):,})",
    )


def _read_split(paths: Mapping[str, Path]) -> tuple[np.ndarray, ...]:
    """Read and validate the four files; return (x_train, y_train, x_test, y_test)."""
    return _check_split(paths, {role: read_idx(path) for role, path in paths.items()})


def _check_split(
    paths: Mapping[str, Path], arrays: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, ...]:
    """Validate the four arrays read from `paths`; return (x_train, y_train, x_test, y_test)."""
    result = []
    for split in ("train", "test"):
        images_path, labels_path = paths[f"{split}_images"], paths[f"{split}_labels"]
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        images, labels = _as_pixels(images_path, images), _as_labels(labels_path, labels)
        if len(labels) != len(images):
            raise DataError(
                f"{labels_path}: holds {len(labels):,} labels but {images_path} holds "
                f"{len(images):,} images; the two files must belong together"
            )
        result += [images, labels]
    return tuple(result)


def _as_pixels(path: Path, images: np.ndarray) -> np.ndarray:
    """`images` (n, 28, 28) as uint8 pixels; DataError for any other shape or range.

    Any type IDX allows is taken: integers must lie in 0..255; floats are read as
    [0, 1] when none exceeds 1.5 (a little over 1 is rounding, clipped to 1), else as
    0..255, and are rounded to the nearest level.
    """
    side = IMAGE_SIDE
    if images.ndim != 3 or images.shape[1:] != (side, side):
        raise DataError(f"{path}: expected images of shape (n, {side}, {side}), found "
                        f"{images.dtype} of shape {images.shape}; is this an image file?")
    if images.shape[0] == 0:
        raise DataError(f"{path}: holds no images")
    if images.dtype == np.uint8:
        return images
    if images.dtype.kind == "f" and not np.all(np.isfinite(images)):
        raise DataError(f"{path}: holds NaN or infinite pixel values")
    low, high = images.min(), images.max()
    if low < 0 or high > 255:
        raise DataError(f"{path}: pixel values must lie in 0..255 (or [0, 1] as floats), "
                        f"found {low:g}..{high:g}")
    if images.dtype.kind == "f":
        images = np.rint(np.minimum(images, 1.0) * 255.0 if high <= 1.5 else images)
    return images.astype(np.uint8)


def _as_labels(path: Path, labels: np.ndarray) -> np.ndarray:
    """`labels` (n,) as uint8 digits; any integer type IDX allows, values 0..9."""
    if labels.dtype.kind not in "iu" or labels.ndim != 1:
        raise DataError(
            f"{path}: expected integer labels of shape (n,), found {labels.dtype} "
            f"of shape {labels.shape}; is this a label file?"
        )
    bad = np.flatnonzero((labels < 0) | (labels > 9))
    if bad.size:
        raise DataError(
            f"{path}: labels must be digits 0..9, found {labels[bad[0]]} at index "
            f"{bad[0]} ({bad.size:,} such labels)"
        )
    return labels.astype(np.uint8, copy=False)


def _expected_files() -> str:
    """The sentence saying which files a data directory must hold."""
    names = ", ".join(FILE_NAMES.values())
    return (f"a data directory must hold {names} (each raw or .gz; train-images.idx3-ubyte "
            "and the like are found too)")


def _how_to_supply(cache_dir: Path) -> str:
    """The sentence saying how a user can provide the full MNIST."""
    return (
        "to use the full MNIST, pass --data-dir DIR (a directory with the four IDX "
        f"files), or put the four files (.gz or raw) in {cache_dir}, or set "
        "MNIST_XP_DATA to a directory holding them"
    )


def _print_to_stderr(line: str) -> None:
    """Default `log` of load_mnist: the line on stderr."""
    print(line, file=sys.stderr)
