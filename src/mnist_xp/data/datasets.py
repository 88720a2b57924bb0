"""Where MNIST comes from: a directory of IDX files, the cache, a download, or the
10,000/10,000 subset bundled inside the package."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import gzip
import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.request
import zlib
from importlib import resources
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Mapping, Sequence

import numpy as np

from mnist_xp.fileio.writing import atomic_write
from mnist_xp.data.idx import read_idx
from mnist_xp.errors import DataError, DownloadError

__all__ = [
    "MNIST",
    "FILE_NAMES",
    "MIRRORS",
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

# Checksums of the decompressed content, so a file re-compressed by a mirror (or by
# hand) still verifies as long as the IDX bytes are the official ones.
FULL_SHA256 = {
    "train-images-idx3-ubyte.gz": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte.gz": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte.gz": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte.gz": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

_SOURCES = ("auto", "full", "bundled")
_CHUNK = 1 << 20

# A download larger than this is refused (Content-Length) or cut off (streamed): the
# largest MNIST file is under 10 MB, so a mirror sending more is broken or hostile,
# and the cache's disk must not fill up with it.
_MAX_DOWNLOAD = 256 << 20

# The cache lock (see _cache_lock): how long to wait for another process that is
# downloading the same file, how often to look, and -- for the portable lock-file
# fallback only -- after how long without a sign of life a lock file is stale.
_LOCK_WAIT = 600.0
_LOCK_POLL = 0.05
_STALE_LOCK = 120.0


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
    (``NAME``); when both exist the ``.gz`` one is used.

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
        ``$MNIST_XP_DATA`` if set and non-empty; otherwise the platform's user cache
        directory plus ``mnist_xp``: ``$XDG_CACHE_HOME/mnist_xp`` or
        ``~/.cache/mnist_xp`` on Linux, ``~/Library/Caches/mnist_xp`` on macOS,
        ``%LOCALAPPDATA%\\mnist_xp\\Cache`` on Windows. The directory may not exist.
    """
    override = os.environ.get("MNIST_XP_DATA")
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        base = Path(local) if local else Path.home() / "AppData" / "Local"
        return base / "mnist_xp" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "mnist_xp"
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says to ignore relative paths in these variables.
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "mnist_xp"


def download_mnist(
    cache_dir: str | os.PathLike | None = None,
    *,
    mirrors: Sequence[str] = MIRRORS,
    checksums: Mapping[str, str] = FULL_SHA256,
    timeout: float = 10.0,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Download the full MNIST into the cache, verifying every file.

    Files already in the cache (``.gz`` or raw) are left alone. Each missing file is
    tried on each mirror in turn, streamed into a temporary file in the cache
    directory, and renamed into place only if the SHA-256 of its decompressed
    content matches; a failed or mismatching download is deleted, never cached.

    Several processes may fill the same cache at once: each file is downloaded under
    an exclusive lock on ``.NAME.lock`` beside it (removed afterwards; see
    `_cache_lock`), and a process
    that waited finds the file there and skips it, so each file is fetched once. The
    lock is ``fcntl.flock`` on POSIX (released by the kernel if its holder dies) and
    otherwise an ``O_CREAT | O_EXCL`` lock file, broken when its holder has not
    touched it for two minutes. The cache is correct even without the lock: files
    appear only by atomic rename, after verification.

    Parameters
    ----------
    cache_dir : str or os.PathLike, optional
        Destination, created if needed; defaults to `default_cache_dir()`.
    mirrors : sequence of str
        Base URLs; the file name is appended to each.
    checksums : mapping of str to str
        ``.gz`` file name -> hex SHA-256 of its decompressed content. Its keys are
        the files to fetch.
    timeout : float
        Seconds to wait on each network operation.
    log : callable, optional
        Called with one short line per file downloaded.

    Returns
    -------
    pathlib.Path
        The cache directory.

    Raises
    ------
    DownloadError
        If the cache directory cannot be created, every mirror fails for a file (the
        message lists each mirror's reason), or another process holds a file's lock
        for more than ten minutes.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(
            f"{cache_dir}: cannot create the cache directory ({e.strerror}); "
            "set MNIST_XP_DATA to a writable directory"
        ) from e
    for name, sha256 in checksums.items():
        target = cache_dir / name
        if _is_cached(cache_dir, name):
            continue
        with _cache_lock(target) as keep_alive:
            # Another process may have filled this entry while we waited for the lock.
            if _is_cached(cache_dir, name):
                continue
            mirror, size = _download_from_any(name, sha256, target, mirrors, timeout,
                                              keep_alive)
        if log is not None:
            log(f"downloaded {name} ({size:,} bytes) from {mirror}")
    return cache_dir


def _is_cached(cache_dir: Path, name: str) -> bool:
    """Whether the cache holds `name` (``.gz``) or its raw form."""
    return (cache_dir / name).exists() or (cache_dir / name.removesuffix(".gz")).exists()


def find_full_mnist(cache_dir: str | os.PathLike) -> Path | None:
    """The cache directory if it holds all four MNIST files (``.gz`` or raw), else None.

    Parameters
    ----------
    cache_dir : str or os.PathLike
        Directory to look in.

    Returns
    -------
    pathlib.Path or None
    """
    cache_dir = Path(cache_dir)
    return None if _locate(cache_dir)[1] else cache_dir


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

    Parameters
    ----------
    source : {"auto", "full", "bundled"}
        ``"bundled"``: the 10,000/10,000 subset inside the package. ``"full"``: the
        full MNIST from the cache, downloaded first if missing and `download` is
        true. ``"auto"``: like ``"full"``, but if the full set cannot be had, the
        bundled subset, with one line to `log` saying why and how to supply the
        full set. Ignored when `data_dir` is given.
    data_dir : str or os.PathLike, optional
        Load the four IDX files from this directory instead (see `load_idx_dir`).
    cache_dir : str or os.PathLike, optional
        Where the full MNIST is cached; defaults to `default_cache_dir()`.
    download : bool
        Whether the full MNIST may be downloaded when it is not in the cache.
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
        If `data_dir` or a cached file is invalid, or (``"full"``) the full MNIST is
        not cached and `download` is false.
    DownloadError
        If (``"full"``) the download fails.
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
    except (DataError, DownloadError) as e:
        if source == "full":
            raise type(e)(f"{e}; {_how_to_supply(cache_dir)}") from None
        reason = e
    bundled = load_bundled()
    log(f"full MNIST unavailable ({reason}); using the {bundled.source}; for the full set "
        f"pass --data-dir DIR, or put its four files in {cache_dir} or set MNIST_XP_DATA")
    return bundled


def _load_full(
    cache_dir: Path, download: bool, timeout: float, log: Callable[[str], None]
) -> MNIST:
    """The full MNIST from `cache_dir`, downloading the missing files if allowed."""
    if find_full_mnist(cache_dir) is None:
        if not download:
            missing = ", ".join(_locate(cache_dir)[1])
            raise DataError(
                f"{cache_dir}: the full MNIST is not there (missing {missing}) and "
                "downloading is off"
            )
        download_mnist(cache_dir, timeout=timeout, log=log)
    mnist = load_idx_dir(cache_dir)
    return dataclasses.replace(
        mnist,
        source=f"full MNIST from {cache_dir} ({len(mnist.y_train):,} / {len(mnist.y_test):,})",
    )


def _locate(directory: Path) -> tuple[dict[str, Path], list[str]]:
    """Map each role to its file in `directory` (.gz preferred); list the missing names."""
    found, missing = {}, []
    for role, name in FILE_NAMES.items():
        candidates = [directory / f"{name}.gz", directory / name]
        existing = [p for p in candidates if p.exists()]
        if existing:
            found[role] = existing[0]
        else:
            missing.append(name)
    return found, missing


def _read_split(paths: Mapping[str, Path]) -> tuple[np.ndarray, ...]:
    """Read and validate the four files; return (x_train, y_train, x_test, y_test)."""
    arrays = []
    for split in ("train", "test"):
        images_path, labels_path = paths[f"{split}_images"], paths[f"{split}_labels"]
        images, labels = read_idx(images_path), read_idx(labels_path)
        _check_images(images_path, images)
        _check_labels(labels_path, labels)
        if len(labels) != len(images):
            raise DataError(
                f"{labels_path}: holds {len(labels):,} labels but {images_path} holds "
                f"{len(images):,} images; the two files must belong together"
            )
        arrays += [images, labels]
    return tuple(arrays)


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


class _BadDownload(Exception):
    """A response arrived but is not the file: cut short or failing its checksum."""


def _download_from_any(
    name: str, sha256: str, target: Path, mirrors: Sequence[str], timeout: float,
    keep_alive: Callable[[], None] = lambda: None,
) -> tuple[str, int]:
    """Fetch `name` from the first mirror that delivers it intact; return (url, bytes)."""
    reasons = []
    for mirror in mirrors:
        url = f"{mirror.rstrip('/')}/{name}"
        try:
            return url, _download_verified(url, target, sha256, timeout, keep_alive)
        except (
            OSError,  # URLError, HTTPError, timeouts, resets, bad gzip
            http.client.HTTPException,  # bad status line, broken chunked reply
            EOFError,  # gzip stream cut short
            zlib.error,
            ValueError,  # malformed URL or Content-Length
            _BadDownload,
        ) as e:
            reasons.append(f"{mirror}: {_reason(e)}")
    raise DownloadError(f"{target}: every mirror failed ({'; '.join(reasons)})")


def _download_verified(
    url: str, target: Path, sha256: str, timeout: float,
    keep_alive: Callable[[], None] = lambda: None,
) -> int:
    """Stream `url` into a temp file beside `target`; keep it only if it verifies."""
    with atomic_write(target, "w+b") as out:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared is not None and int(declared) > _MAX_DOWNLOAD:
                raise _BadDownload(f"{int(declared):,} bytes announced, more than any "
                                   f"MNIST file ({_MAX_DOWNLOAD:,} at most)")
            size = _copy(response, out, keep_alive)
            # read(n) returns b"" when the server closes early instead of raising.
            if declared is not None and size < int(declared):
                raise _BadDownload(
                    f"connection closed after {size:,} of {int(declared):,} bytes"
                )
        out.seek(0)
        actual = _gunzip_sha256(out)
        if actual != sha256:
            raise _BadDownload(
                f"checksum mismatch: decompressed sha256 is {actual}, expected {sha256}"
            )
    return size


def _copy(
    source: BinaryIO, destination: BinaryIO, keep_alive: Callable[[], None] = lambda: None
) -> int:
    """Copy one stream to another in chunks; return the number of bytes copied.

    Refuses to copy more than `_MAX_DOWNLOAD` bytes; calls `keep_alive` after each
    chunk (it keeps a fallback cache lock fresh).
    """
    total = 0
    while chunk := source.read(_CHUNK):
        total += len(chunk)
        if total > _MAX_DOWNLOAD:
            raise _BadDownload(f"more than {_MAX_DOWNLOAD:,} bytes sent, more than any "
                               "MNIST file")
        destination.write(chunk)
        keep_alive()
    return total


def _gunzip_sha256(compressed: BinaryIO) -> str:
    """Hex SHA-256 of the decompressed content of a gzip stream, read in chunks."""
    digest = hashlib.sha256()
    with gzip.GzipFile(fileobj=compressed, mode="rb") as gz:
        while chunk := gz.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _reason(error: BaseException) -> str:
    """One line saying why a download attempt failed."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        if not isinstance(error.reason, BaseException):
            return str(error.reason)
        error = error.reason
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, http.client.IncompleteRead):
        return "connection closed before the end of the file"
    if isinstance(error, (gzip.BadGzipFile, EOFError, zlib.error)):
        return f"not valid gzip data ({error})"
    return " ".join(str(error).split()) or type(error).__name__


# -- the cache lock ---------------------------------------------------------------------

@contextlib.contextmanager
def _cache_lock(target: Path) -> Iterator[Callable[[], None]]:
    """Hold an exclusive lock on the cache entry `target` while the block runs.

    The lock is the file ``.NAME.lock`` beside `target` (``.NAME.lock-excl`` for
    the fallback below); it is removed on release.
    Yields a `keep_alive` function for long work under the lock (it refreshes the
    fallback lock file's mtime; with flock it does nothing).

    POSIX: ``fcntl.flock`` on that file. The kernel releases the lock when its holder
    exits, however it exits, so a crashed download never blocks the next one. Because
    the holder deletes the file on release, a waiter that then gets the lock checks
    that its descriptor is still the file at that path, and starts over if not.

    Elsewhere (no ``fcntl``), or where the file system refuses flock: the lock file is
    created with ``O_CREAT | O_EXCL``, and one not touched for `_STALE_LOCK` seconds
    (its holder died) is removed. Breaking a stale lock is best effort: in a race two
    processes may download the same file, which costs time but never correctness,
    since files enter the cache only by atomic rename after their checksum matched.

    Raises DownloadError after `_LOCK_WAIT` seconds of waiting, or if the lock file
    cannot be created.
    """
    lock = target.parent / f".{target.name}.lock"
    deadline = time.monotonic() + _LOCK_WAIT
    try:
        fd = _flock(lock, deadline)
    except _NoFlock:
        # Only a probe: with flock unsupported on this file system, nobody holds it.
        with contextlib.suppress(OSError):
            os.unlink(lock)
        # A name of its own, so that removing a probe never removes a live lock file.
        lock, fd = lock.with_name(f"{lock.name}-excl"), None
    if fd is not None:
        try:
            yield lambda: None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(lock)  # while still holding it; see above
            os.close(fd)  # releases the flock
        return
    _create_lock_file(lock, deadline)
    try:
        yield lambda: _touch(lock)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)


class _NoFlock(Exception):
    """fcntl.flock is unavailable here, or the file system does not support it."""


def _flock(lock: Path, deadline: float) -> int:
    """Open `lock` and flock it exclusively; the descriptor. _NoFlock if impossible."""
    try:
        import fcntl
    except ImportError:
        raise _NoFlock() from None
    while True:
        fd = _open_lock(lock, os.O_RDWR | os.O_CREAT)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    _wait_or_give_up(lock, deadline)
                except OSError as e:
                    if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                        raise _NoFlock() from None
                    raise DownloadError(
                        f"{lock}: cannot lock the cache entry ({e.strerror or e})") from None
            # The previous holder deletes the file on release: if this descriptor's
            # file is no longer the one at `lock`, another process may be locking a
            # new file there, so start over.
            try:
                if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                    return fd
            except FileNotFoundError:
                pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _create_lock_file(lock: Path, deadline: float) -> None:
    """The portable fallback: create `lock` exclusively, breaking a stale one."""
    while True:
        try:
            fd = _open_lock(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            try:
                age = time.time() - os.stat(lock).st_mtime
            except FileNotFoundError:
                continue  # released just now: try again at once
            if age > _STALE_LOCK:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(lock)
                continue
            _wait_or_give_up(lock, deadline)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")  # for a person wondering who holds it
        return


def _open_lock(lock: Path, flags: int) -> int:
    """os.open for the lock file; DownloadError for anything but FileExistsError."""
    try:
        return os.open(lock, flags | getattr(os, "O_BINARY", 0), 0o666)
    except FileExistsError:
        raise
    except OSError as e:
        raise DownloadError(
            f"{lock}: cannot create the cache lock file ({e.strerror or e}); "
            "set MNIST_XP_DATA to a writable directory") from None


def _wait_or_give_up(lock: Path, deadline: float) -> None:
    """Sleep a little, or raise DownloadError once `deadline` has passed."""
    if time.monotonic() >= deadline:
        raise DownloadError(
            f"{lock}: another process has been downloading this file for over "
            f"{_LOCK_WAIT:g} s; wait for it to finish, or remove the lock file if no "
            "mnist-xp is running")
    time.sleep(_LOCK_POLL)


def _touch(lock: Path) -> None:
    """Refresh the fallback lock file's mtime: its holder is alive."""
    with contextlib.suppress(OSError):
        os.utime(lock)


def _print_to_stderr(line: str) -> None:
    """Default `log` of load_mnist: the line on stderr."""
    print(line, file=sys.stderr)
