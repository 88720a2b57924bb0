"""download_mnist against a local HTTP server: verified, atomic, per-mirror fallback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from helpers_data import gunzip_sha256, synthetic_mnist, write_mnist_dir

from mnist_xp.data import FILE_NAMES, datasets, download_mnist, load_mnist
from mnist_xp.errors import DownloadError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

GZ_NAMES = [f"{name}.gz" for name in FILE_NAMES.values()]


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


@pytest.fixture
def dataset(tmp_path):
    """(arrays, {gz name: file bytes}, {gz name: sha256 of decompressed content})."""
    arrays = synthetic_mnist(n_train=6, n_test=4)
    directory = write_mnist_dir(tmp_path / "source", arrays)
    files = {name: (directory / name).read_bytes() for name in GZ_NAMES}
    checksums = {name: gunzip_sha256(body) for name, body in files.items()}
    return arrays, files, checksums


def cache_listing(cache) -> list[str]:
    return sorted(os.listdir(cache))


def test_good_mirror_fills_the_cache_and_loads(server, dataset, tmp_path):
    arrays, files, checksums = dataset
    mirror = server.add("good", files)
    cache = tmp_path / "cache" / "nested"
    lines = []
    result = download_mnist(cache, mirrors=[mirror], checksums=checksums, log=lines.append)
    assert result == cache
    assert cache_listing(cache) == sorted(GZ_NAMES)
    for name in GZ_NAMES:
        assert (cache / name).read_bytes() == files[name]
    assert len(lines) == 4
    assert all(name in line and "\n" not in line for name, line in zip(GZ_NAMES, lines))
    mnist = load_mnist(source="full", cache_dir=cache, download=False)
    assert mnist.x_train.tolist() == arrays["train_images"].tolist()
    assert mnist.y_test.tolist() == arrays["test_labels"].tolist()
    assert mnist.source == f"full MNIST from {cache} (6 / 4)"


def _wrong_checksum(server, files, checksums):
    checksums["train-labels-idx1-ubyte.gz"] = "0" * 64
    return "checksum mismatch"


def _truncated_response(server, files, checksums):
    server.overstated.add("/bad/train-labels-idx1-ubyte.gz")
    return "connection closed after"


def _not_gzip(server, files, checksums):
    files["train-labels-idx1-ubyte.gz"] = b"\0\0\x08\x01\0\0\0\x01\x07"
    return "not valid gzip data"


def _timeout(server, files, checksums):
    server.slow.add("/bad/train-labels-idx1-ubyte.gz")
    return "timed out"


def _stalls_midway(server, files, checksums):
    server.stall_midway.add("/bad/train-labels-idx1-ubyte.gz")
    return "timed out"


def _oversized(server, files, checksums):
    files["train-labels-idx1-ubyte.gz"] += bytes(datasets._MAX_DOWNLOAD)
    return f"{len(files['train-labels-idx1-ubyte.gz']):,} bytes announced, more than any"


def _oversized_stream(server, files, checksums):
    server.no_length.add("/bad/train-labels-idx1-ubyte.gz")
    files["train-labels-idx1-ubyte.gz"] += bytes(datasets._MAX_DOWNLOAD)
    return f"more than {datasets._MAX_DOWNLOAD:,} bytes sent"


@pytest.fixture
def small_download_limit(monkeypatch):
    """A 64 KiB download limit (the test files are ~5 KB), so that the oversized
    cases need no large bodies."""
    monkeypatch.setattr(datasets, "_MAX_DOWNLOAD", 64 << 10)


@pytest.mark.usefixtures("small_download_limit")
@pytest.mark.parametrize(
    "spoil", [_wrong_checksum, _truncated_response, _not_gzip, _timeout, _stalls_midway,
              _oversized, _oversized_stream], ids=lambda f: f.__name__[1:]
)
def test_bad_download_is_never_cached(server, dataset, tmp_path, spoil):
    _, files, checksums = dataset
    reason = spoil(server, files, checksums)
    mirror = server.add("bad", files)
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError) as info:
        download_mnist(cache, mirrors=[mirror], checksums=checksums, timeout=0.5)
    message = str(info.value)
    assert message.startswith(f"{cache / 'train-labels-idx1-ubyte.gz'}: ")
    assert "\n" not in message
    assert f"{mirror}: {reason}" in message
    # Files before the bad one stay (they verified); the bad one and its temp file do not.
    assert cache_listing(cache) == ["train-images-idx3-ubyte.gz"]


def test_second_mirror_is_used_when_the_first_fails(server, dataset, tmp_path):
    _, files, checksums = dataset
    server.add("empty", {})
    good = server.add("good", files)
    with socket.socket() as s:  # a port nothing listens on: connection refused
        s.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{s.getsockname()[1]}/mnist/"
    cache = download_mnist(
        tmp_path / "cache",
        mirrors=[refused, f"{server.base}/empty/", good],
        checksums=checksums,
    )
    assert cache_listing(cache) == sorted(GZ_NAMES)
    for name in GZ_NAMES:
        assert server.requests.count(f"/empty/{name}") == 1
        assert server.requests.count(f"/good/{name}") == 1


def test_every_mirror_failing_lists_each_reason(server, dataset, tmp_path):
    _, files, checksums = dataset
    first, second = server.add("a", {}), server.add("b", {})
    with pytest.raises(DownloadError) as info:
        download_mnist(tmp_path / "cache", mirrors=[first, second], checksums=checksums)
    message = str(info.value)
    name = GZ_NAMES[0]
    assert message.startswith(f"{tmp_path / 'cache' / name}: every mirror failed (")
    assert f"{first}: HTTP 404 Not Found; {second}: HTTP 404 Not Found" in message
    assert "\n" not in message
    assert cache_listing(tmp_path / "cache") == []


def test_cached_files_are_not_downloaded_again(server, dataset, tmp_path):
    arrays, files, checksums = dataset
    mirror = server.add("good", files)
    cache = tmp_path / "cache"
    # One file already cached raw, one gzipped: both count as present.
    write_mnist_dir(cache, {"train_images": arrays["train_images"]}, gz=False)
    write_mnist_dir(cache, {"test_labels": arrays["test_labels"]}, gz=True)
    lines = []
    download_mnist(cache, mirrors=[mirror], checksums=checksums, log=lines.append)
    assert sorted(server.requests) == ["/good/t10k-images-idx3-ubyte.gz", "/good/train-labels-idx1-ubyte.gz"]
    assert len(lines) == 2
    download_mnist(cache, mirrors=[mirror], checksums=checksums, log=lines.append)
    assert len(server.requests) == 2
    assert len(lines) == 2


# -- two processes filling one cache ------------------------------------------------------

# A child process: imports, says "ready", waits for a line on stdin, then downloads.
CHILD = """
import json, sys
from mnist_xp.data import download_mnist
cache, mirror, checksums = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()
download_mnist(cache, mirrors=[mirror], checksums=checksums, timeout=30)
"""


def test_two_processes_filling_one_cache_download_each_file_once(server, dataset, tmp_path):
    _, files, checksums = dataset
    server.delay = 0.4  # each file takes a while, so the two processes overlap
    mirror = server.add("slow", files)
    cache = tmp_path / "cache"
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(cache), mirror,
                                  json.dumps(checksums)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for child in children:  # both imported and waiting
            assert child.stdout.readline() == "ready\n", child.stderr.read()
        for child in children:  # ...then started together
            child.stdin.write("go\n")
            child.stdin.flush()
        for child in children:
            _, err = child.communicate(timeout=120)
            assert child.returncode == 0, err
            assert "Traceback" not in err
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    for name in GZ_NAMES:
        assert server.requests.count(f"/slow/{name}") == 1, server.requests
        assert (cache / name).read_bytes() == files[name]
    assert cache_listing(cache) == sorted(GZ_NAMES)  # no lock or temporary files left


@pytest.fixture
def fallback_lock(monkeypatch):
    """Force the portable O_CREAT|O_EXCL lock file, as where flock is unavailable."""
    def no_flock(lock, deadline):
        raise datasets._NoFlock()

    monkeypatch.setattr(datasets, "_flock", no_flock)


@pytest.mark.usefixtures("fallback_lock")
def test_fallback_lock_file_also_downloads_each_file_once(server, dataset, tmp_path):
    _, files, checksums = dataset
    server.delay = 0.2
    mirror = server.add("slow", files)
    cache = tmp_path / "cache"
    errors = []

    def fill():
        try:
            download_mnist(cache, mirrors=[mirror], checksums=checksums)
        except Exception as exc:  # noqa: BLE001 -- reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=fill) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for name in GZ_NAMES:
        assert server.requests.count(f"/slow/{name}") == 1, server.requests
    assert cache_listing(cache) == sorted(GZ_NAMES)


@pytest.mark.usefixtures("fallback_lock")
def test_fallback_lock_left_by_a_dead_process_is_broken(server, dataset, tmp_path):
    _, files, checksums = dataset
    mirror = server.add("good", files)
    cache = tmp_path / "cache"
    cache.mkdir()
    stale = cache / f".{GZ_NAMES[0]}.lock-excl"
    stale.write_text("12345\n")
    old = stale.stat().st_mtime - datasets._STALE_LOCK - 60
    os.utime(stale, (old, old))
    download_mnist(cache, mirrors=[mirror], checksums=checksums)
    assert cache_listing(cache) == sorted(GZ_NAMES)


@pytest.mark.usefixtures("fallback_lock")
def test_fallback_lock_held_too_long_is_a_one_line_error(server, dataset, tmp_path,
                                                          monkeypatch):
    _, files, checksums = dataset
    monkeypatch.setattr(datasets, "_LOCK_WAIT", 0.3)
    mirror = server.add("good", files)
    cache = tmp_path / "cache"
    cache.mkdir()
    held = cache / f".{GZ_NAMES[0]}.lock-excl"
    held.write_text("12345\n")  # fresh: its holder is alive
    with pytest.raises(DownloadError) as info:
        download_mnist(cache, mirrors=[mirror], checksums=checksums)
    message = str(info.value)
    assert message.startswith(f"{held}: another process") and "\n" not in message
    assert server.requests == []
    assert cache_listing(cache) == [held.name]  # someone else's lock is not ours to remove


@pytest.mark.skipif(fcntl is None, reason="fcntl.flock is POSIX only")
def test_flock_held_by_another_is_waited_for_then_a_one_line_error(server, dataset, tmp_path,
                                                                    monkeypatch):
    _, files, checksums = dataset
    monkeypatch.setattr(datasets, "_LOCK_WAIT", 0.3)
    mirror = server.add("good", files)
    cache = tmp_path / "cache"
    cache.mkdir()
    lock = cache / f".{GZ_NAMES[0]}.lock"
    with open(lock, "w") as holder:  # another open file: flock conflicts even in-process
        fcntl.flock(holder, fcntl.LOCK_EX)
        with pytest.raises(DownloadError) as info:
            download_mnist(cache, mirrors=[mirror], checksums=checksums)
    message = str(info.value)
    assert message.startswith(f"{lock}: another process") and "\n" not in message
    assert server.requests == []
    # Released: the next call downloads, and removes the lock file when done.
    download_mnist(cache, mirrors=[mirror], checksums=checksums)
    assert cache_listing(cache) == sorted(GZ_NAMES)
