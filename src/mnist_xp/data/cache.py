"""The full MNIST in the cache: the official files, their hashes, checking and fetching.

Every cached file is checked against the SHA-256 of the official content each time it
is loaded (`read_cache`), so a modified, truncated or foreign file is never taken for
MNIST. Missing or wrong files are fetched with pooch (hashed, atomic downloads) from
the mirrors, one process at a time per file under a filelock lock; the cache's place
is platformdirs'. The three are imported only when needed: with requests, pooch alone
costs about 0.1 s of start-up.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, Callable, Mapping, Sequence

import numpy as np

from mnist_xp.data.idx import idx_header, read_idx
from mnist_xp.errors import DataError, DownloadError

__all__ = [
    "FILE_NAMES",
    "MIRRORS",
    "FULL_MD5",
    "FULL_SHA256",
    "default_cache_dir",
    "download_mnist",
    "find_full_mnist",
    "gz_names",
    "locate",
    "locate_all",
    "first_of",
    "read_cache",
    "make_cache_dir",
    "fetch",
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

# requests' chunk size for downloads; pooch's default of 1 KiB means 10,000 Python
# iterations (each with a flush) for the largest file.
_CHUNK = 1 << 16

# A download larger than this is refused (Content-Length) or cut off (streamed): the
# largest MNIST file is under 10 MB, so a mirror sending more is broken or hostile,
# and the cache's disk must not fill up with it.
_MAX_DOWNLOAD = 256 << 20

# How long to wait for another process that holds a cache entry's lock (downloading).
_LOCK_WAIT = 600.0


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
    terminal.

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
    make_cache_dir(cache_dir)
    for name, sha256 in checksums.items():
        if _problem(cache_dir, name, sha256) is None:
            continue
        fetch(cache_dir, name, known_md5[name], sha256, mirrors, timeout, log)
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
        content (`FULL_SHA256`), which reads them all (about 0.15 s); if false, the
        files only have to exist.

    Returns
    -------
    pathlib.Path or None
    """
    cache_dir = Path(cache_dir)
    if not verify:
        return None if locate_all(cache_dir)[1] else cache_dir
    _, bad, missing = read_cache(cache_dir, gz_names(), FULL_SHA256)
    return None if bad or missing else cache_dir


def gz_names() -> list[str]:
    """The four official ``.gz`` file names, in FILE_NAMES order."""
    return [f"{name}.gz" for name in FILE_NAMES.values()]


def first_of(order: Sequence[str], subset: Mapping[str, object]) -> str:
    """The first name of `order` that is in `subset`."""
    return next(name for name in order if name in subset)


def read_cache(
    cache_dir: Path, names: Sequence[str], checksums: Mapping[str, str]
) -> tuple[dict[str, tuple[Path, np.ndarray]], dict[str, tuple[Path, str]], list[str]]:
    """Read the cached files `names` (.gz names; .gz or raw on disk) and check each.

    Returns ``{name: (path, array)}`` for the files whose decompressed content has
    the SHA-256 in `checksums`, ``{name: (path, why not)}`` for the other files
    present, and the list of names missing.
    """
    good, bad, missing, hashing = {}, {}, [], {}
    # Each file is hashed on a second thread while the next one is decompressed
    # (hashlib and zlib both release the GIL): with a second core free, the check adds
    # 8 ms to the 139 ms read of the full set, against 31 ms hashing in line
    # (benchmarks/cache_check.py, 2-core VM).
    with ThreadPoolExecutor(max_workers=1) as pool:
        for name in names:
            path = locate(cache_dir, name.removesuffix(".gz"))
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
    _, bad, missing = read_cache(cache_dir, [name], {name: sha256})
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


def locate(directory: Path, name: str) -> Path | None:
    """The file for `name` in `directory`, or None: ``NAME.gz``, ``NAME``, or the same
    with ``.idx`` for ``-idx`` (``train-images.idx3-ubyte``, as many archives extract)."""
    dotted = name.replace("-idx", ".idx")
    for stem in dict.fromkeys((name, dotted)):
        for path in (directory / f"{stem}.gz", directory / stem):
            if path.exists():
                return path
    return None


def locate_all(directory: Path) -> tuple[dict[str, Path], list[str]]:
    """Map each role to its file in `directory` (.gz preferred); list the missing names."""
    found, missing = {}, []
    for role, name in FILE_NAMES.items():
        path = locate(directory, name)
        if path is None:
            missing.append(name)
        else:
            found[role] = path
    return found, missing


# -- fetching: filelock around pooch ----------------------------------------------------

def make_cache_dir(cache_dir: Path) -> None:
    """Create the cache directory; DownloadError with what to do if that fails."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DownloadError(
            f"{cache_dir}: cannot create the cache directory ({e.strerror or e}); "
            "set MNIST_XP_DATA to a writable directory"
        ) from e


def fetch(
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
    """Whether to draw pooch's progress bar (with tqdm): stderr is a terminal and tqdm imports."""
    try:
        if sys.stderr is None or not sys.stderr.isatty():
            return False
    except (AttributeError, ValueError):  # replaced by an object without isatty, closed
        return False
    try:
        import tqdm  # noqa: F401 -- a dependency, but a broken install must not stop a download
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
