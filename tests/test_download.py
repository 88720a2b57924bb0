"""Downloads and the cache against a local HTTP server: pooch's verified, atomic
downloads with per-mirror fallback, filelock's per-entry lock, and the check of every
cached file against the official content each time it is loaded."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import types
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

import numpy as np
import pytest
from helpers_data import gunzip_sha256, synthetic_mnist, write_mnist_dir

from mnist_xp.data import FILE_NAMES, datasets, download_mnist, load_mnist, read_idx
from mnist_xp.data import cache as cache_module
from mnist_xp.errors import DataError, DownloadError

GZ_NAMES = [f"{name}.gz" for name in FILE_NAMES.values()]
TIMEOUT = 120  # seconds; a safety net against a hung child process, never asserted on


class FakeMirrors:
    """What the local server serves, and the request paths it has seen."""

    def __init__(self):
        self.files: dict[str, bytes] = {}  # URL path -> body
        self.overstated: set[str] = set()  # paths whose Content-Length exceeds the body
        self.slow: set[str] = set()  # paths that answer only after the test ends
        self.stall_midway: set[str] = set()  # paths that send half the body, then stall
        self.no_length: set[str] = set()  # paths answered without Content-Length
        self.delay = 0.0  # seconds each answer waits before its first byte
        self.requests: list[str] = []
        self.release = threading.Event()
        self.base = ""

    def add(self, prefix: str, files: dict[str, bytes]) -> str:
        """Serve `files` under /prefix/; return that mirror's base URL."""
        for name, body in files.items():
            self.files[f"/{prefix}/{name}"] = body
        return f"{self.base}/{prefix}/"


def handler_for(mirrors: FakeMirrors) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0 (the default): the server closes the connection after each answer,
        # which is what makes an overstated Content-Length a truncated download.
        def do_GET(self):
            mirrors.requests.append(self.path)
            if self.path in mirrors.slow:
                mirrors.release.wait(10)
                return
            if mirrors.delay:
                mirrors.release.wait(mirrors.delay)
            body = mirrors.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            extra = 1000 if self.path in mirrors.overstated else 0
            self.send_response(200)
            if self.path not in mirrors.no_length:
                self.send_header("Content-Length", str(len(body) + extra))
            self.end_headers()
            if self.path in mirrors.stall_midway:
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                mirrors.release.wait(10)
                return
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    return Handler


@pytest.fixture
def server(request, monkeypatch):
    # A proxy configured in the environment must not intercept 127.0.0.1.
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    mirrors = FakeMirrors()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(mirrors))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()

    def stop():
        mirrors.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join()

    request.addfinalizer(stop)
    mirrors.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    return mirrors


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


class Dataset:
    """Synthetic MNIST-style files with their two kinds of known hashes."""

    def __init__(self, directory):
        self.arrays = synthetic_mnist(n_train=6, n_test=4)
        write_mnist_dir(directory, self.arrays)
        self.files = {name: (directory / name).read_bytes() for name in GZ_NAMES}
        self.sha256 = {name: gunzip_sha256(body) for name, body in self.files.items()}
        self.md5 = {name: md5(body) for name, body in self.files.items()}

    def fetch(self, cache, mirrors, **kwargs):
        """download_mnist with this dataset's hashes as the known ones."""
        return download_mnist(cache, mirrors=mirrors, checksums=self.sha256,
                              known_md5=self.md5, **kwargs)


@pytest.fixture
def dataset(tmp_path):
    return Dataset(tmp_path / "source")


def cache_listing(cache) -> list[str]:
    """The cache's files, less filelock's empty ``NAME.lock`` files (left in place)."""
    return sorted(name for name in os.listdir(cache) if not name.endswith(".lock"))


def test_good_mirror_fills_the_cache_and_loads(server, dataset, tmp_path, monkeypatch):
    mirror = server.add("good", dataset.files)
    cache = tmp_path / "cache" / "nested"
    lines = []
    assert dataset.fetch(cache, [mirror], log=lines.append) == cache
    assert cache_listing(cache) == sorted(GZ_NAMES)
    umask = os.umask(0)
    os.umask(umask)
    for name in GZ_NAMES:
        assert (cache / name).read_bytes() == dataset.files[name]
        if os.name == "posix":  # the user's umask, not tempfile's private 0600
            assert (cache / name).stat().st_mode & 0o777 == 0o666 & ~umask
    assert len(lines) == 4
    assert all(name in line and "\n" not in line for name, line in zip(GZ_NAMES, lines))
    # Loaded as the full MNIST only where these are the official hashes.
    monkeypatch.setattr(cache_module, "FULL_SHA256", dataset.sha256)
    mnist = load_mnist(source="full", cache_dir=cache, download=False)
    assert mnist.x_train.tolist() == dataset.arrays["train_images"].tolist()
    assert mnist.y_test.tolist() == dataset.arrays["test_labels"].tolist()
    assert mnist.source == f"full MNIST from {cache} (6 / 4)"


def test_pooch_logs_nothing_of_its_own(server, dataset, tmp_path, capfd):
    dataset.fetch(tmp_path / "cache", [server.add("good", dataset.files)])
    assert capfd.readouterr() == ("", "")


def _wrong_checksum(server, dataset):
    dataset.md5["train-labels-idx1-ubyte.gz"] = "0" * 32
    return f"checksum mismatch: the file's MD5 is not the official {'0' * 32}"


def _truncated_response(server, dataset):
    server.overstated.add("/bad/train-labels-idx1-ubyte.gz")
    return "connection closed before the end of the file"


def _timeout(server, dataset):
    server.slow.add("/bad/train-labels-idx1-ubyte.gz")
    return "timed out"


def _stalls_midway(server, dataset):
    server.stall_midway.add("/bad/train-labels-idx1-ubyte.gz")
    return "timed out"


def _oversized(server, dataset):
    dataset.files["train-labels-idx1-ubyte.gz"] += bytes(cache_module._MAX_DOWNLOAD)
    return f"{len(dataset.files['train-labels-idx1-ubyte.gz']):,} bytes announced, more than any"


def _oversized_stream(server, dataset):
    server.no_length.add("/bad/train-labels-idx1-ubyte.gz")
    dataset.files["train-labels-idx1-ubyte.gz"] += bytes(cache_module._MAX_DOWNLOAD)
    return f"more than {cache_module._MAX_DOWNLOAD:,} bytes sent"


@pytest.fixture
def small_download_limit(monkeypatch):
    """A 64 KiB download limit (the test files are ~5 KB), so that the oversized
    cases need no large bodies."""
    monkeypatch.setattr(cache_module, "_MAX_DOWNLOAD", 64 << 10)


@pytest.mark.usefixtures("small_download_limit")
@pytest.mark.parametrize(
    "spoil", [_wrong_checksum, _truncated_response, _timeout, _stalls_midway,
              _oversized, _oversized_stream], ids=lambda f: f.__name__[1:]
)
def test_bad_download_is_never_cached(server, dataset, tmp_path, spoil):
    reason = spoil(server, dataset)
    mirror = server.add("bad", dataset.files)
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError) as info:
        dataset.fetch(cache, [mirror], timeout=0.5)
    message = str(info.value)
    assert message.startswith(f"{cache / 'train-labels-idx1-ubyte.gz'}: every mirror failed (")
    assert "\n" not in message
    assert f"{mirror}: {reason}" in message
    # Files before the bad one stay (they verified); the bad one and its temp file do not.
    assert cache_listing(cache) == ["train-images-idx3-ubyte.gz"]


def test_download_passing_md5_but_not_the_content_check_is_an_error(server, dataset,
                                                                    tmp_path):
    dataset.sha256["t10k-images-idx3-ubyte.gz"] = "0" * 64  # the two tables disagree
    with pytest.raises(DownloadError) as info:
        dataset.fetch(tmp_path / "cache", [server.add("good", dataset.files)])
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'cache' / 't10k-images-idx3-ubyte.gz'}: "
                              "downloaded with the expected MD5, but its content's SHA-256")
    assert "\n" not in message


def test_second_mirror_is_used_when_the_first_fails(server, dataset, tmp_path):
    server.add("empty", {})
    good = server.add("good", dataset.files)
    with socket.socket() as s:  # a port nothing listens on: connection refused
        s.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{s.getsockname()[1]}/mnist/"
    cache = dataset.fetch(tmp_path / "cache", [refused, f"{server.base}/empty/", good])
    assert cache_listing(cache) == sorted(GZ_NAMES)
    for name in GZ_NAMES:
        assert server.requests.count(f"/empty/{name}") == 1
        assert server.requests.count(f"/good/{name}") == 1


def test_every_mirror_failing_lists_each_reason(server, dataset, tmp_path):
    first, second = server.add("a", {}), server.add("b", {})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{s.getsockname()[1]}/mnist/"
    with pytest.raises(DownloadError) as info:
        dataset.fetch(tmp_path / "cache", [first, second, refused])
    message = str(info.value)
    name = GZ_NAMES[0]
    assert message == (
        f"{tmp_path / 'cache' / name}: every mirror failed ({first}: HTTP 404 Not Found; "
        f"{second}: HTTP 404 Not Found; {refused}: Connection refused)")
    assert cache_listing(tmp_path / "cache") == []


def test_cached_files_are_checked_kept_or_fetched_again(server, dataset, tmp_path):
    mirror = server.add("good", dataset.files)
    cache = tmp_path / "cache"
    cache.mkdir()
    arrays = dataset.arrays
    # The official content raw, and re-compressed (other .gz bytes, other MD5): kept.
    write_mnist_dir(cache, {"train_images": arrays["train_images"]}, gz=False)
    (cache / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(gzip.decompress(dataset.files["t10k-labels-idx1-ubyte.gz"]),
                      compresslevel=1, mtime=12345))
    # Other content under an official name: fetched again, replaced.
    write_mnist_dir(cache, {"test_images": arrays["test_images"][::-1]})
    lines = []
    dataset.fetch(cache, [mirror], log=lines.append)
    assert sorted(server.requests) == ["/good/t10k-images-idx3-ubyte.gz",
                                       "/good/train-labels-idx1-ubyte.gz"]
    assert (cache / "t10k-images-idx3-ubyte.gz").read_bytes() == dataset.files[
        "t10k-images-idx3-ubyte.gz"]
    assert len(lines) == 2
    dataset.fetch(cache, [mirror], log=lines.append)
    assert len(server.requests) == 2
    assert len(lines) == 2


def test_progress_bar_only_on_a_terminal_with_tqdm(monkeypatch):
    class Terminal:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

    monkeypatch.setitem(sys.modules, "tqdm", types.ModuleType("tqdm"))
    monkeypatch.setattr(sys, "stderr", Terminal(True))
    assert cache_module._show_progress()
    monkeypatch.setattr(sys, "stderr", Terminal(False))
    assert not cache_module._show_progress()
    monkeypatch.setattr(sys, "stderr", None)
    assert not cache_module._show_progress()
    monkeypatch.setattr(sys, "stderr", Terminal(True))
    monkeypatch.setitem(sys.modules, "tqdm", None)  # import tqdm raises ImportError
    assert not cache_module._show_progress()


# -- the lock: two processes filling one cache, stale and held locks --------------------

# A child process: imports, says "ready", waits for a line on stdin, then downloads.
CHILD = """
import json, sys
from mnist_xp.data import download_mnist
cache, mirror, sha256, md5 = sys.argv[1], sys.argv[2], *map(json.loads, sys.argv[3:])
print("ready", flush=True)
sys.stdin.readline()
download_mnist(cache, mirrors=[mirror], checksums=sha256, known_md5=md5, timeout=30)
"""


def test_two_processes_filling_one_cache_download_each_file_once(server, dataset, tmp_path):
    server.delay = 0.4  # each file takes a while, so the two processes overlap
    mirror = server.add("slow", dataset.files)
    cache = tmp_path / "cache"
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(cache), mirror,
                                  json.dumps(dataset.sha256), json.dumps(dataset.md5)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for child in children:  # both imported and waiting
            assert child.stdout.readline() == "ready\n", child.stderr.read()
        for child in children:  # ...then started together
            child.stdin.write("go\n")
            child.stdin.flush()
        for child in children:
            _, err = child.communicate(timeout=TIMEOUT)
            assert child.returncode == 0, err
            assert "Traceback" not in err
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    for name in GZ_NAMES:
        assert server.requests.count(f"/slow/{name}") == 1, server.requests
        assert (cache / name).read_bytes() == dataset.files[name]
    assert cache_listing(cache) == sorted(GZ_NAMES)  # no temporary files left


def test_two_threads_filling_one_cache_download_each_file_once(server, dataset, tmp_path):
    server.delay = 0.1
    mirror = server.add("slow", dataset.files)
    cache = tmp_path / "cache"
    with ThreadPoolExecutor(2) as pool:
        for result in [pool.submit(dataset.fetch, cache, [mirror]) for _ in range(2)]:
            result.result()
    for name in GZ_NAMES:
        assert server.requests.count(f"/slow/{name}") == 1, server.requests
    assert cache_listing(cache) == sorted(GZ_NAMES)


# A child process that takes the lock of the first file, says so, and sleeps.
HOLDER = """
import sys, time
from filelock import FileLock
lock = FileLock(sys.argv[1])
lock.acquire()
print("locked", flush=True)
time.sleep(60)
"""


def hold_lock(lock_path) -> subprocess.Popen:
    """A child process holding `lock_path`, once it says it does."""
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_path)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "locked\n"
    return child


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_stale_locks_do_not_block(server, dataset, tmp_path):
    mirror = server.add("good", dataset.files)
    cache = tmp_path / "cache"
    cache.mkdir()
    # A lock file left behind (filelock never removes them), and one whose holder was
    # killed mid-download: neither is held, so neither is waited for.
    (cache / f"{GZ_NAMES[0]}.lock").write_text("")
    holder = hold_lock(cache / f"{GZ_NAMES[1]}.lock")
    holder.kill()
    holder.wait()
    holder.stdout.close()
    lines = []
    dataset.fetch(cache, [mirror], log=lines.append)
    assert cache_listing(cache) == sorted(GZ_NAMES)
    assert not any("waiting" in line for line in lines)


def test_lock_held_too_long_is_a_one_line_error(server, dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(cache_module, "_LOCK_WAIT", 0.3)
    mirror = server.add("good", dataset.files)
    cache = tmp_path / "cache"
    cache.mkdir()
    lock = cache / f"{GZ_NAMES[0]}.lock"
    holder = hold_lock(lock)
    lines = []
    try:
        with pytest.raises(DownloadError) as info:
            dataset.fetch(cache, [mirror], log=lines.append)
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    message = str(info.value)
    assert message.startswith(f"{lock}: another process has been downloading {GZ_NAMES[0]}")
    assert "\n" not in message
    assert lines == [f"waiting for another process to finish downloading {GZ_NAMES[0]}"]
    assert server.requests == []
    # Released (its holder is gone): the next call downloads.
    dataset.fetch(cache, [mirror])
    assert cache_listing(cache) == sorted(GZ_NAMES)


def test_unwritable_cache_is_a_one_line_error(dataset, tmp_path):
    cache = tmp_path / "file"
    cache.write_text("")
    with pytest.raises(DownloadError) as info:
        dataset.fetch(cache / "cache", ["http://127.0.0.1:9/"])
    message = str(info.value)
    assert message.startswith(f"{cache / 'cache'}: cannot create the cache directory")
    assert "MNIST_XP_DATA" in message and "\n" not in message


# -- a cache that does not hold the official content ------------------------------------
#
# The official files here: the bundled t10k files (the official ones byte for byte, so
# the real FULL_MD5 and FULL_SHA256 entries apply) and, since the official training
# files cannot be had offline, small synthetic training files whose hashes replace the
# two training entries of the tables.

BUNDLED = resources.files("mnist_xp.data") / "bundled"


def test_known_t10k_hashes_are_those_of_the_bundled_official_files():
    for name in GZ_NAMES[2:]:
        body = (BUNDLED / name).read_bytes()
        assert md5(body) == datasets.FULL_MD5[name]
        assert gunzip_sha256(body) == datasets.FULL_SHA256[name]


class Official:
    """The official files as this module knows them, and the arrays they hold."""

    def __init__(self, directory):
        train = synthetic_mnist(n_train=6, n_test=1, seed=3)
        write_mnist_dir(directory, {role: train[role] for role in ("train_images",
                                                                   "train_labels")})
        for name in GZ_NAMES[2:]:
            (directory / name).write_bytes((BUNDLED / name).read_bytes())
        self.files = {name: (directory / name).read_bytes() for name in GZ_NAMES}
        self.arrays = {role: read_idx(directory / f"{name}.gz")
                       for role, name in FILE_NAMES.items()}
        train_names = GZ_NAMES[:2]
        self.sha256 = {name: gunzip_sha256(self.files[name]) for name in train_names}
        self.md5 = {name: md5(self.files[name]) for name in train_names}

    def patch(self, monkeypatch):
        """Make the training files' hashes the known ones (the t10k ones already are)."""
        for name in self.sha256:
            monkeypatch.setitem(cache_module.FULL_SHA256, name, self.sha256[name])
            monkeypatch.setitem(cache_module.FULL_MD5, name, self.md5[name])

    def cache(self, directory, broken: dict[str, bytes]):
        """A cache of the official files with `broken` ones in their place."""
        directory.mkdir(parents=True, exist_ok=True)
        for name, body in {**self.files, **broken}.items():
            (directory / name).write_bytes(body)
        return directory


def idx_gz(array) -> bytes:
    """A uint8 array as the bytes of a gzipped IDX file."""
    header = struct.pack(f">2xBB{array.ndim}I", 0x08, array.ndim, *array.shape)
    return gzip.compress(header + np.ascontiguousarray(array, np.uint8).tobytes(),
                         compresslevel=1, mtime=0)


def _shifted_labels(official):
    """t10k labels with 3,000 of them shifted by one: same size, still digits 0..9."""
    labels = official.arrays["test_labels"].copy()
    labels[:3000] = (labels[:3000] + 1) % 10
    return {"t10k-labels-idx1-ubyte.gz": idx_gz(labels)}, ["t10k-labels-idx1-ubyte.gz"]


def _other_dataset(official):
    """Another dataset under MNIST's names: valid IDX of the right shapes."""
    other = synthetic_mnist(n_train=6, n_test=1, seed=4)
    broken = {
        "train-images-idx3-ubyte.gz": idx_gz(other["train_images"]),
        "train-labels-idx1-ubyte.gz": idx_gz(other["train_labels"]),
        "t10k-images-idx3-ubyte.gz": idx_gz(255 - official.arrays["test_images"]),
        "t10k-labels-idx1-ubyte.gz": idx_gz(official.arrays["test_labels"][::-1]),
    }
    return broken, GZ_NAMES


def _truncated(official):
    """A cached file cut short, as by an interrupted copy."""
    body = official.files["t10k-images-idx3-ubyte.gz"]
    return {"t10k-images-idx3-ubyte.gz": body[: len(body) // 2]}, ["t10k-images-idx3-ubyte.gz"]


BROKEN_CACHES = {"shifted_labels": _shifted_labels, "other_dataset": _other_dataset,
                 "truncated": _truncated}


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    return Official(tmp_path_factory.mktemp("official"))


@pytest.fixture(scope="module")
def broken_caches(official):
    """{case: (broken files, names of the bad files in FILE_NAMES order)}."""
    return {case: make(official) for case, make in BROKEN_CACHES.items()}


@pytest.mark.parametrize("source", ["full", "auto"])
@pytest.mark.parametrize("case", BROKEN_CACHES)
def test_broken_cache_is_fetched_again_and_loaded_as_official(server, official, broken_caches,
                                                              tmp_path, monkeypatch, case,
                                                              source):
    official.patch(monkeypatch)
    monkeypatch.setattr(cache_module, "MIRRORS", [server.add("mirror", official.files)])
    broken, bad_names = broken_caches[case]
    cache = official.cache(tmp_path / "cache", broken)
    lines = []
    mnist = load_mnist(source, cache_dir=cache, log=lines.append)
    assert sorted(server.requests) == sorted(f"/mirror/{name}" for name in bad_names)
    # Each download is reported, then which broken file it replaced.
    assert [line.split(" (")[0] for line in lines] == [
        line for name in bad_names
        for line in (f"downloaded {name}",
                     f"{cache / name} did not match the official MNIST content")]
    assert mnist.source == f"full MNIST from {cache} (6 / 10,000)"
    for role, field in [("train_images", "x_train"), ("train_labels", "y_train"),
                        ("test_images", "x_test"), ("test_labels", "y_test")]:
        np.testing.assert_array_equal(getattr(mnist, field), official.arrays[role])
    for name in GZ_NAMES:
        assert (cache / name).read_bytes() == official.files[name]


@pytest.mark.parametrize("source", ["full", "auto"])
@pytest.mark.parametrize("case", BROKEN_CACHES)
def test_broken_cache_without_downloading_is_refused(official, broken_caches, tmp_path,
                                                     monkeypatch, case, source):
    official.patch(monkeypatch)
    monkeypatch.setattr(cache_module, "_retrieve", pytest.fail)  # never the network
    broken, bad_names = broken_caches[case]
    cache = official.cache(tmp_path / "cache", broken)
    with pytest.raises(DataError) as info:
        load_mnist(source, cache_dir=cache, download=False, log=pytest.fail)
    message = str(info.value)
    assert message.startswith(f"{cache / bad_names[0]}: does not match the official MNIST "
                              "content (")
    assert "downloading is off" in message and "\n" not in message
    assert sorted(os.listdir(cache)) == sorted(GZ_NAMES)  # nothing written, no lock


def test_broken_cache_whose_mirrors_fail_is_refused_even_in_auto(server, official, tmp_path,
                                                                monkeypatch):
    official.patch(monkeypatch)
    monkeypatch.setattr(cache_module, "MIRRORS", [server.add("empty", {})])
    broken, (name,) = _shifted_labels(official)
    cache = official.cache(tmp_path / "cache", broken)
    with pytest.raises(DataError) as info:
        load_mnist("auto", cache_dir=cache, log=pytest.fail)
    message = str(info.value)
    assert message.startswith(f"{cache / name}: does not match the official MNIST content (")
    assert "fetching it again failed (" in message and "HTTP 404 Not Found" in message
    assert "\n" not in message
    assert (cache / name).read_bytes() == broken[name]  # left for the user to see


def test_raw_or_recompressed_official_files_load_without_a_download(official, tmp_path,
                                                                    monkeypatch):
    official.patch(monkeypatch)
    monkeypatch.setattr(cache_module, "_retrieve", pytest.fail)
    cache = official.cache(tmp_path / "cache", {})
    raw = gzip.decompress(official.files["t10k-images-idx3-ubyte.gz"])
    (cache / "t10k-images-idx3-ubyte.gz").unlink()
    (cache / "t10k-images-idx3-ubyte").write_bytes(raw)
    labels = gzip.decompress(official.files["t10k-labels-idx1-ubyte.gz"])
    (cache / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels, 9, mtime=1))
    mnist = load_mnist("full", cache_dir=cache, log=pytest.fail)
    assert mnist.source.startswith("full MNIST from")
    np.testing.assert_array_equal(mnist.y_test, official.arrays["test_labels"])


# The CLI in a subprocess, with the training files' hashes made the known ones (as
# Official.patch does in-process), then `python -m mnist_xp ARGS`.
LAUNCHER = """
import json, runpy, sys
from mnist_xp.data import datasets
datasets.FULL_SHA256.update(json.loads(sys.argv[1]))
datasets.FULL_MD5.update(json.loads(sys.argv[2]))
sys.argv = ["mnist-xp", *sys.argv[3:]]
runpy.run_module("mnist_xp", run_name="__main__", alter_sys=True)
"""

CLI_RUNS = [(case, data) for case in BROKEN_CACHES for data in ("full", "auto")]
CLI_RUNS.append((None, "full"))


@pytest.fixture(scope="module")
def cli_results(official, broken_caches, tmp_path_factory):
    """{(case, --data): (cache, CompletedProcess)} for `evaluate --no-download`, run
    side by side (most of each is interpreter start-up); case None is a good cache."""
    def run(case, data):
        broken = broken_caches[case][0] if case else {}
        cache = official.cache(tmp_path_factory.mktemp("cache"), broken)
        env = {**os.environ, "MNIST_XP_DATA": str(cache)}
        argv = [sys.executable, "-c", LAUNCHER, json.dumps(official.sha256),
                json.dumps(official.md5), "evaluate", "--data", data, "--no-download",
                "--device", "cpu"]
        return cache, subprocess.run(argv, env=env, capture_output=True, text=True,
                                     timeout=TIMEOUT)

    with ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 2))) as pool:
        futures = {key: pool.submit(run, *key) for key in CLI_RUNS}
        return {key: future.result() for key, future in futures.items()}


@pytest.mark.parametrize("data", ["full", "auto"])
@pytest.mark.parametrize("case", BROKEN_CACHES)
def test_cli_refuses_a_broken_cache_in_one_line(cli_results, broken_caches, case, data):
    cache, result = cli_results[case, data]
    report = f"rc={result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 2, report
    assert result.stdout == "", report  # no accuracy printed, on MNIST or anything else
    assert "Traceback" not in result.stderr, report
    (line,) = result.stderr.splitlines()
    bad = broken_caches[case][1][0]
    assert line.startswith(f"mnist-xp: error: {cache / bad}: does not match the official "
                           "MNIST content ("), report


def test_cli_evaluates_on_a_good_cache(cli_results):
    cache, result = cli_results[None, "full"]
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert f"on full MNIST from {cache} (6 / 10,000)" in result.stdout
