"""Where MNIST comes from: a directory of IDX files, the cache, a download, or the
10,000/10,000 subset bundled inside the package.

Downloads go through pooch (hashed, cached, atomic), the cache entry lock is
filelock's, and the cache location is platformdirs'. The three are imported only
when needed: with requests, pooch alone costs about 0.1 s of start-up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import BinaryIO, Callable, Mapping, Sequence

import numpy as np

from mnist_xp.data.idx import idx_header, read_idx
from mnist_xp.errors import DataError, DownloadError

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

FILE_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]

# MD5 of the official compressed files as the mirrors serve them (torchvision checks
# the same ones; the t10k ones match the bundled files): pooch verifies each download
# against it, and fetches a cached .gz again when it does not match.
FULL_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

# SHA-256 of the decompressed content: every cached file is checked against it each
# time it is loaded as the full MNIST, so a file re-compressed (or decompressed) by
# hand still counts as long as its IDX bytes are the official ones.
FULL_SHA256 = {
    "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

_SOURCES = ("auto", "full", "bundled")

# requests' chunk size for downloads; pooch's default of 1 KiB means 10,000 Python
# iterations (each with a flush) for the largest file.
_CHUNK = 1 << 16

# A download larger than this is refused (Content-Length) or cut off (streamed): the
# largest MNIST file is under 10 MB, so a mirror sending more is broken or hostile,
# and the cache's disk must not fill up with it.
_MAX_DOWNLOAD = 256 << 20

# How long to wait for another process that holds a cache entry's lock (downloading).
_LOCK_WAIT = 600.0


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
    (``NAME``); when both exist the ``.gz`` one is used. The content is checked for
    shape, dtype and labels, not against the official MNIST: any such dataset loads,
    and its ``source`` says "IDX files in DIRECTORY", never "MNIST".

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
        is invalid IDX, has the wrong shape or dtype, holds labels outside 0..9, or
        holds a different number of labels than its images.
    """
    directory = Path(directory)
    if not directory.exists():
        raise DataError(f"{directory}: no such directory; {_expected_files()}")
    if not directory.is_dir():
        raise DataError(f"{directory}: not a directory; {_expected_files()}")
    found, missing = _locate(directory)
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


def default_cache_dir() -> Path:
    """Directory where the full MNIST is cached.

    Returns
    -------
    pathlib.Path
        ``$MNIST_XP_DATA`` if set and non-empty; otherwise the user cache directory
        that `platformdirs` gives for ``mnist_xp``: ``$XDG_CACHE_HOME/mnist_xp`` or
        ``~/.cache/mnist_xp`` on Linux, ``~/Library/Caches/mnist_xp`` on macOS,
        ``%LOCALAPPDATA%\\mnist_xp\\Cache`` on Windows. The directory may not exist.
    """
    override = os.environ.get("MNIST_XP_DATA")
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("mnist_xp", appauthor=False))


def download_mnist(
    cache_dir: str | os.PathLike | None = None,
    *,
    mirrors: Sequence[str] | None = None,
    checksums: Mapping[str, str] | None = None,
    known_md5: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Download into the cache every MNIST file it lacks or holds in a wrong version.

    A cached file (``.gz`` or raw) whose decompressed content has the SHA-256 in
    `checksums` is kept. Any other is fetched with ``pooch.retrieve``, trying each
    mirror in turn: pooch streams it into a temporary file in the cache directory,
    checks its MD5 against `known_md5`, and only then renames it into place, so a
    failed or mismatching download is never cached. A download announcing or sending
    more than 256 MiB is cut off. pooch's progress bar is drawn when stderr is a
    terminal and tqdm is installed.

    Several processes may fill the same cache at once: each file is fetched under
    ``filelock.FileLock`` on ``NAME.lock`` beside it (an empty file, left in place;
    the lock itself is released by the OS when its holder dies), and a process that
    waited finds the file there, verified, and skips it, so each file is fetched
    once.

    Parameters
    ----------
    cache_dir : str or os.PathLike, optional
        Destination, created if needed; defaults to `default_cache_dir()`.
    mirrors : sequence of str, optional
        Base URLs, tried in order; the file name is appended to each. Defaults to
        `MIRRORS`.
    checksums : mapping of str to str, optional
        ``.gz`` file name -> hex SHA-256 of its decompressed content; its keys are
        the files to fetch. Defaults to `FULL_SHA256`.
    known_md5 : mapping of str to str, optional
        ``.gz`` file name -> hex MD5 of the compressed file as served, for pooch;
        must cover the keys of `checksums`. Defaults to `FULL_MD5`.
    timeout : float
        Seconds to wait on each network operation.
    log : callable, optional
        Called with one short line per file downloaded (and when waiting for
        another process's download).

    Returns
    -------
    pathlib.Path
        The cache directory.

    Raises
    ------
    DownloadError
        If the cache directory or a lock file cannot be created, every mirror fails
        for a file (the message lists each mirror's reason), another process holds a
        file's lock for more than ten minutes, or a downloaded file passes its MD5
        but not its content check (the two tables disagree).
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    mirrors = MIRRORS if mirrors is None else mirrors
    checksums = FULL_SHA256 if checksums is None else checksums
    known_md5 = FULL_MD5 if known_md5 is None else known_md5
    _make_cache_dir(cache_dir)
    for name, sha256 in checksums.items():
        if _problem(cache_dir, name, sha256) is None:
            continue
        _fetch(cache_dir, name, known_md5[name], sha256, mirrors, timeout, log)
        problem = _problem(cache_dir, name, sha256)
        if problem is not None:
            raise DownloadError(
                f"{cache_dir / name}: downloaded with the expected MD5, but {problem}; "
                "the known checksums disagree, report this"
            )
    return cache_dir


def find_full_mnist(cache_dir: str | os.PathLike, *, verify: bool = True) -> Path | None:
    """The cache directory if it holds the full MNIST, else None.

    Parameters
    ----------
    cache_dir : str or os.PathLike
        Directory to look in.
    verify : bool
        Whether each of the four files (``.gz`` or raw) must also hold the official
        content (`FULL_SHA256`), which reads them all (about 0.2 s); if false, the
        files only have to exist.

    Returns
    -------
    pathlib.Path or None
    """
    cache_dir = Path(cache_dir)
    if not verify:
        return None if _locate(cache_dir)[1] else cache_dir
    _, bad, missing = _read_cache(cache_dir, _gz_names(), FULL_SHA256)
    return None if bad or missing else cache_dir


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
    content has been checked against the official SHA-256 (`FULL_SHA256`); this adds
    10 to 30 ms to the ~140 ms the four files take to read (10 when a second core is
    free to hash beside the decompression). A cached file that does
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
    names = _gz_names()
    good, bad, missing = _read_cache(cache_dir, names, FULL_SHA256)
    if bad and not download:
        path, why = bad[_first(names, bad)]
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
        _make_cache_dir(cache_dir)
        # Broken files first: failing to repair one is an error, while failing to
        # fetch a missing one lets "auto" fall back to the bundled subset.
        for name in [n for n in names if n in bad] + missing:
            try:
                _fetch(cache_dir, name, FULL_MD5[name], FULL_SHA256[name], MIRRORS,
                       timeout, log)
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
        fetched, still_bad, still_missing = _read_cache(
            cache_dir, [n for n in names if n in bad or n in missing], FULL_SHA256)
        for name in still_missing:  # removed by someone else since; say so
            still_bad[name] = (cache_dir / name, "it vanished after being downloaded")
        if still_bad:
            path, why = still_bad[_first(names, still_bad)]
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


def _gz_names() -> list[str]:
    """The four official ``.gz`` file names, in FILE_NAMES order."""
    return [f"{name}.gz" for name in FILE_NAMES.values()]


def _first(order: Sequence[str], subset: Mapping[str, object]) -> str:
    """The first name of `order` that is in `subset`."""
    return next(name for name in order if name in subset)


def _read_cache(
    cache_dir: Path, names: Sequence[str], checksums: Mapping[str, str]
) -> tuple[dict[str, tuple[Path, np.ndarray]], dict[str, tuple[Path, str]], list[str]]:
    """Read the cached files `names` (.gz names; .gz or raw on disk) and check each.

    Returns ``{name: (path, array)}`` for the files whose decompressed content has
    the SHA-256 in `checksums`, ``{name: (path, why not)}`` for the other files
    present, and the list of names missing.
    """
    good, bad, missing, hashing = {}, {}, [], {}
    # Each file is hashed on a second thread while the next one is decompressed
    # (hashlib and zlib both release the GIL): with a second core free, the check
    # costs ~10 ms on the full set instead of ~30 ms in line
    # (benchmarks/cache_check.py).
    with ThreadPoolExecutor(max_workers=1) as pool:
        for name in names:
            path = _locate_one(cache_dir, name.removesuffix(".gz"))
            if path is None:
                missing.append(name)
                continue
            try:
                array = read_idx(path)
            except DataError as e:
                bad[name] = (path, str(e).removeprefix(f"{path}: "))
                continue
            hashing[name] = (path, array, pool.submit(_content_sha256, array))
    for name, (path, array, digest) in hashing.items():
        actual, expected = digest.result(), checksums[name]
        if actual == expected:
            good[name] = (path, array)
        else:
            bad[name] = (path, f"its content's SHA-256 is {actual[:12]}..., "
                               f"not the official {expected[:12]}...")
    return good, bad, missing


def _problem(cache_dir: Path, name: str, sha256: str) -> str | None:
    """Why the cache does not hold `name` with the official content; None if it does."""
    _, bad, missing = _read_cache(cache_dir, [name], {name: sha256})
    if missing:
        return "missing"
    return bad[name][1] if bad else None


def _content_sha256(array: np.ndarray) -> str:
    """Hex SHA-256 of the IDX bytes `array` was read from (header + big-endian values).

    read_idx refuses any file whose size differs from its header's, so these bytes
    are exactly the decompressed file.
    """
    digest = hashlib.sha256(idx_header(array))
    digest.update(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder(">")).data)
    return digest.hexdigest()


def _locate_one(directory: Path, name: str) -> Path | None:
    """``directory/NAME.gz`` if it exists, else ``directory/NAME`` if it does, else None."""
    for path in (directory / f"{name}.gz", directory / name):
        if path.exists():
            return path
    return None


def _locate(directory: Path) -> tuple[dict[str, Path], list[str]]:
    """Map each role to its file in `directory` (.gz preferred); list the missing names."""
    found, missing = {}, []
    for role, name in FILE_NAMES.items():
        path = _locate_one(directory, name)
        if path is None:
            missing.append(name)
        else:
            found[role] = path
    return found, missing


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
        _check_images(images_path, images)
        _check_labels(labels_path, labels)
        if len(labels) != len(images):
            raise DataError(
                f"{labels_path}: holds {len(labels):,} labels but {images_path} holds "
                f"{len(images):,} images; the two files must belong together"
            )
        result += [images, labels]
    return tuple(result)


def _check_images(path: Path, images: np.ndarray) -> None:
    """DataError unless `images` is uint8 of shape (n, 28, 28)."""
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(
            f"{path}: expected uint8 images of shape (n, 28, 28), found {images.dtype} "
            f"of shape {images.shape}; is this an image file?"
        )
    if images.shape[0] == 0:
        raise DataError(f"{path}: holds no images")


def _check_labels(path: Path, labels: np.ndarray) -> None:
    """DataError unless `labels` is 1-D uint8 with values 0..9."""
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(
            f"{path}: expected uint8 labels of shape (n,), found {labels.dtype} "
            f"of shape {labels.shape}; is this a label file?"
        )
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        raise DataError(
            f"{path}: labels must be digits 0..9, found {labels[bad[0]]} at index "
            f"{bad[0]} ({bad.size:,} such labels)"
        )


def _expected_files() -> str:
    """The sentence saying which files a data directory must hold."""
    names = ", ".join(FILE_NAMES.values())
    return f"a data directory must hold {names} (each raw or .gz)"


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


# -- fetching: filelock around pooch ----------------------------------------------------

def _make_cache_dir(cache_dir: Path) -> None:
    """Create the cache directory; DownloadError with what to do if that fails."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(
            f"{cache_dir}: cannot create the cache directory ({e.strerror or e}); "
            "set MNIST_XP_DATA to a writable directory"
        ) from e


def _fetch(
    cache_dir: Path, name: str, md5: str, sha256: str, mirrors: Sequence[str],
    timeout: float, log: Callable[[str], None] | None,
) -> None:
    """Fetch `name` into the cache under its lock, unless another process just did."""
    from filelock import FileLock, Timeout

    lock_path = cache_dir / f"{name}.lock"
    lock = FileLock(lock_path, timeout=_LOCK_WAIT)
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if log is not None:
                log(f"waiting for another process to finish downloading {name}")
            lock.acquire()
    except Timeout:  # a TimeoutError, so before OSError
        raise DownloadError(
            f"{lock_path}: another process has been downloading {name} for over "
            f"{_LOCK_WAIT:g} s; wait for it to finish, or stop it"
        ) from None
    except OSError as e:
        raise DownloadError(
            f"{lock_path}: cannot create the cache lock file ({e.strerror or e}); "
            "set MNIST_XP_DATA to a writable directory"
        ) from None
    try:
        if _problem(cache_dir, name, sha256) is None:
            return  # fetched by the process we waited for
        url, size = _retrieve(cache_dir, name, md5, mirrors, timeout)
    finally:
        lock.release()
    if log is not None and size is not None:
        log(f"downloaded {name} ({size:,} bytes) from {url}")


def _retrieve(
    cache_dir: Path, name: str, md5: str, mirrors: Sequence[str], timeout: float
) -> tuple[str, int | None]:
    """pooch.retrieve `name` from the first mirror that delivers it; (url, bytes).

    The byte count is None if pooch found the cached file already matching `md5`.
    """
    pooch = _pooch()
    reasons = []
    for mirror in mirrors:
        url = f"{mirror.rstrip('/')}/{name}"
        downloader = _CappedDownloader(timeout, progressbar=_show_progress())
        try:
            pooch.retrieve(url, known_hash=f"md5:{md5}", fname=name, path=cache_dir,
                           downloader=downloader)
        except (
            OSError,  # requests' errors, a full disk
            ValueError,  # pooch's checksum mismatch, a malformed URL
            http.client.HTTPException,
            _TooLarge,
        ) as e:
            reasons.append(f"{mirror}: {_reason(e, downloader, md5)}")
            continue
        return url, downloader.size
    raise DownloadError(f"{cache_dir / name}: every mirror failed ({'; '.join(reasons)})")


def _pooch():
    """The pooch module, its logger quieted: our `log` lines report downloads."""
    import pooch

    pooch.get_logger().setLevel(logging.WARNING)
    return pooch


def _show_progress() -> bool:
    """Whether to draw pooch's progress bar: stderr is a terminal and tqdm imports."""
    try:
        if sys.stderr is None or not sys.stderr.isatty():
            return False
    except (AttributeError, ValueError):  # replaced by an object without isatty, closed
        return False
    try:
        import tqdm  # noqa: F401 -- optional; pooch draws the bar with it
    except ImportError:
        return False
    return True


class _TooLarge(Exception):
    """A mirror announced or sent more bytes than any MNIST file has."""


class _CappedWriter:
    """File wrapper that refuses to grow past `_MAX_DOWNLOAD` bytes."""

    def __init__(self, file: BinaryIO):
        self._file = file
        self.size = 0

    def write(self, chunk: bytes) -> int:
        self.size += len(chunk)
        if self.size > _MAX_DOWNLOAD:
            raise _TooLarge(f"more than {_MAX_DOWNLOAD:,} bytes sent, more than any "
                            "MNIST file")
        return self._file.write(chunk)

    def flush(self) -> None:
        self._file.flush()


class _CappedDownloader:
    """pooch downloader: pooch.HTTPDownloader writing through a `_CappedWriter`."""

    def __init__(self, timeout: float, progressbar: bool):
        import pooch

        self._http = pooch.HTTPDownloader(
            progressbar=progressbar, chunk_size=_CHUNK, timeout=timeout,
            hooks={"response": _refuse_announced_oversize})
        self.size: int | None = None  # bytes written, once a download completes
        self.completed = False

    def __call__(self, url, output_file, pooch, check_only=False):
        # pooch's temporary file is private (0600, from tempfile); created afresh it
        # gets the user's umask, like any file they make, so a shared cache stays
        # readable ("x": never a file someone slipped in meanwhile).
        os.unlink(output_file)
        with open(output_file, "xb") as f:
            writer = _CappedWriter(f)
            self._http(url, writer, pooch)
        self.size, self.completed = writer.size, True


def _refuse_announced_oversize(response, *args, **kwargs):
    """requests response hook: refuse a body announced larger than `_MAX_DOWNLOAD`."""
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > _MAX_DOWNLOAD:
        response.close()
        raise _TooLarge(f"{int(declared):,} bytes announced, more than any MNIST file "
                        f"({_MAX_DOWNLOAD:,} at most)")
    return response


def _reason(error: BaseException, downloader: _CappedDownloader, md5: str) -> str:
    """One line saying why a download attempt failed."""
    import requests
    import urllib3

    if isinstance(error, _TooLarge):
        return str(error)
    if isinstance(error, requests.HTTPError) and error.response is not None:
        return f"HTTP {error.response.status_code} {error.response.reason}"
    if isinstance(error, ValueError) and downloader.completed:
        return f"checksum mismatch: the file's MD5 is not the official {md5}"
    causes = list(_causes(error))
    # The OS's own words first ("Connection refused", a DNS failure): urllib3 makes a
    # failed connection a subclass of its connect-timeout error.
    for cause in causes:
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
    if any(isinstance(c, (requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError))
           for c in causes):
        return "timed out"
    if any(isinstance(c, (requests.exceptions.ChunkedEncodingError,
                          urllib3.exceptions.ProtocolError, http.client.IncompleteRead))
           for c in causes):
        return "connection closed before the end of the file"
    return " ".join(str(error).split()) or type(error).__name__


def _causes(error: BaseException):
    """`error` and the exceptions it wraps (args, .reason, __cause__, __context__)."""
    seen, todo = set(), [error]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        inner = [*e.args, getattr(e, "reason", None), e.__cause__, e.__context__]
        todo += [x for x in inner if isinstance(x, BaseException)]
