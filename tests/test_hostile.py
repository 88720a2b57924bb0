"""Hostile inputs through the command line: one table, every case held to one rule.

The rule (README, "Reliability"): every bad input -- data file, data directory, model
file, predict input, flag -- ends with

- exit status 2,
- exactly one non-empty line on stderr, naming the file or flag and the problem,
- no traceback, nothing on stdout,
- nothing written, overwritten or even created in the case's directory (its files'
  names, bytes and mtimes, and its directories' mtimes, are the same afterwards; the
  command runs there and any --save/--metrics target in it already exists),
- no hang (named pipes are among the inputs) and no large allocation: every case runs
  under an address-space limit of `MEMORY_LIMIT` (1 GiB), so a header claiming 10^9
  images that were allocated before being checked would fail the case.

`CASES` is the table: (id, builder). A builder makes the bad input in the case's own
directory and returns the argv and the fragments the error line must contain (the
first names the file or flag). All cases run side by side in subprocesses, once per
session; each is then its own test.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import stat
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from helpers_data import synthetic_mnist, write_mnist_dir

from mnist_xp import MLPClassifier, save
from mnist_xp.data import FILE_NAMES, write_idx

TIMEOUT = 120  # seconds; a safety net against a hung process, never asserted on
MEMORY_LIMIT = 1 << 30  # RLIMIT_AS for every case that computes on the CPU
N_TRAIN, N_TEST = 60, 20
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
HAS_FIFO = hasattr(os, "mkfifo")

# Runs `python -m mnist_xp ARGS` after lowering the address-space limit: a launcher
# rather than preexec_fn, which is unsafe in a process with threads (run_all uses a
# thread pool). argv: LIMIT ARGS...; LIMIT 0 means no limit.
LAUNCHER = """
import runpy, sys
limit = int(sys.argv[1])
if limit:
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
sys.argv = ["mnist-xp", *sys.argv[2:]]
runpy.run_module("mnist_xp", run_name="__main__", alter_sys=True)
"""


def run_cli(args, *, cwd: Path, limit: bool) -> subprocess.CompletedProcess:
    """``python -m mnist_xp ARGS`` in `cwd`, under MEMORY_LIMIT if `limit`."""
    env = dict(os.environ)
    # Never the user's cache, and never a download: a path that cannot be created.
    env["MNIST_XP_DATA"] = os.path.join(os.devnull, "mnist_xp_test_cache")
    env["PYTHONIOENCODING"] = "utf-8"  # the cases quote non-ASCII arguments
    use_limit = limit and sys.platform != "win32"
    if use_limit:
        # One BLAS/OpenMP thread: their per-thread buffers would otherwise count
        # against the address-space limit on many-core machines.
        env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    argv = [sys.executable, "-c", LAUNCHER, str(MEMORY_LIMIT if use_limit else 0),
            *map(str, args)]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, check=False,
                          encoding="utf-8", errors="replace", timeout=TIMEOUT)


def run_all(jobs: dict) -> dict:
    """``{key: (args, run_cli keywords)}`` run concurrently; ``{key: CompletedProcess}``."""
    workers = max(2, min(8, os.cpu_count() or 2))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {key: pool.submit(run_cli, args, **kwargs)
                   for key, (args, kwargs) in jobs.items()}
        return {key: future.result() for key, future in futures.items()}


def snapshot(root: Path) -> dict:
    """Everything under `root`: {relative path: (kind, size, mtime_ns, bytes or None)}.

    Only lstat for anything but readable regular files (a FIFO is never opened).
    """
    entries = {}
    for directory, dirs, files in os.walk(root):
        for name in [*dirs, *files, "."] if directory == str(root) else [*dirs, *files]:
            path = Path(directory) / name
            st = path.lstat()
            content = None
            if stat.S_ISREG(st.st_mode) and os.access(path, os.R_OK):
                content = path.read_bytes()
            key = str(path.relative_to(root))
            entries[key] = (stat.S_IFMT(st.st_mode), st.st_size, st.st_mtime_ns, content)
    return entries


# -- shared inputs ------------------------------------------------------------------------

class _Trap:
    """Unpickling this creates the file at `path`: proof that something unpickled."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@dataclass
class Context:
    """What builders share: a good 784-input model and its contents."""

    model: Path
    arrays: dict  # the model's arrays, metadata excluded
    meta: dict  # the model's metadata


def idx_bytes(code: int, dims: tuple[int, ...], payload: bytes = b"") -> bytes:
    """An IDX file built by hand."""
    return struct.pack(f">2xBB{len(dims)}I", code, len(dims), *dims) + payload


def npy_header(shape: tuple[int, ...], descr: str) -> bytes:
    """The bytes of a version 1.0 .npy header (magic included)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def npy_bytes(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=allow_pickle)
    return buf.getvalue()


_BOMB_MEMBER: list[bytes] = []


def gzip_bomb(head: bytes, gib: int = 16) -> bytes:
    """`head` gzipped, then `gib` GiB of zeros as further gzip members (~1 MB per GiB).

    gzip readers treat concatenated members as one stream, so this inflates to the
    head plus `gib` GiB of trailing data.
    """
    if not _BOMB_MEMBER:
        compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
        zeros = bytes(1 << 20)
        member = b"".join(compressor.compress(zeros) for _ in range(64)) + compressor.flush()
        _BOMB_MEMBER.append(member)  # 64 MiB of zeros, ~64 KiB
    return gzip.compress(head, mtime=0) + _BOMB_MEMBER[0] * (16 * gib)


def data_dir(d: Path, gz: bool = False) -> dict[str, Path]:
    """A valid small MNIST-layout directory d/data; {role: path}."""
    directory = write_mnist_dir(d / "data", synthetic_mnist(N_TRAIN, N_TEST, seed=3), gz=gz)
    suffix = ".gz" if gz else ""
    return {role: directory / (name + suffix) for role, name in FILE_NAMES.items()}


def train_argv(d: Path, directory: Path, *extra) -> list:
    """`train` on `directory`, with --save and --metrics targets that already exist."""
    (d / "model.npz").write_bytes(b"the user's previous model: must survive\n")
    (d / "metrics.jsonl").write_bytes(b'{"note": "previous metrics"}\n')
    return ["train", "--data-dir", directory, "--device", "cpu", "--epochs", 1,
            "--save", d / "model.npz", "--metrics", d / "metrics.jsonl", *extra]


def evaluate_argv(model: Path) -> list:
    return ["evaluate", "--model", model, "--data", "bundled", "--no-download",
            "--device", "cpu"]


def predict_argv(model: Path, *inputs) -> list:
    return ["predict", "--model", model, "--device", "cpu", *inputs]


# -- builders: IDX through train --data-dir -------------------------------------------------

def bad_train_images(content: bytes | Callable[[], bytes], *fragments: str, gz_name=False):
    """A builder: the training images file of a valid dir replaced by `content`."""
    def build(d: Path, ctx: Context):
        paths = data_dir(d)
        target = paths["train_images"]
        if gz_name:  # the .gz name is used in preference to the raw one
            target = target.with_name(target.name + ".gz")
        target.write_bytes(content() if callable(content) else content)
        return train_argv(d, d / "data"), (str(target), *fragments)
    return build


def bad_array(role: str, array: np.ndarray, *fragments: str):
    """A builder: the `role` file of a valid dir replaced by a valid IDX of `array`."""
    def build(d: Path, ctx: Context):
        paths = data_dir(d)
        write_idx(paths[role], array)
        return train_argv(d, d / "data"), (str(paths[role]), *fragments)
    return build


def _gz_valid_images() -> bytes:
    """A valid gzipped image file of random pixels (so that it compresses little)."""
    pixels = np.random.default_rng(0).integers(0, 256, N_TRAIN * 784, dtype=np.uint8)
    return gzip.compress(idx_bytes(0x08, (N_TRAIN, 28, 28), pixels.tobytes()), mtime=0)


def _gz_bad_crc() -> bytes:
    data = _gz_valid_images()
    return data[:-8] + bytes(b ^ 0xFF for b in data[-8:-4]) + data[-4:]


def _count_mismatch(d, ctx):
    paths = data_dir(d)
    write_idx(paths["test_labels"], np.zeros(N_TEST - 1, np.uint8))
    return train_argv(d, d / "data"), (str(paths["test_labels"]), str(paths["test_images"]),
                                       "must belong together")


def _file_missing(d, ctx):
    paths = data_dir(d)
    paths["test_labels"].unlink()
    return train_argv(d, d / "data"), (str(d / "data"), FILE_NAMES["test_labels"], "missing")


def _directory_for_file(d, ctx):
    paths = data_dir(d)
    paths["train_labels"].unlink()
    paths["train_labels"].mkdir()
    (paths["train_labels"] / "keep.txt").write_text("mine")
    return train_argv(d, d / "data"), (str(paths["train_labels"]), "is a directory")


def _fifo_for_file(d, ctx):
    paths = data_dir(d)
    paths["train_images"].unlink()
    os.mkfifo(paths["train_images"])
    return train_argv(d, d / "data"), (str(paths["train_images"]), "named pipe")


def _unreadable_file(d, ctx):
    paths = data_dir(d)
    paths["train_labels"].chmod(0)
    return train_argv(d, d / "data"), (str(paths["train_labels"]), "permission denied")


def _data_dir_missing(d, ctx):
    return train_argv(d, d / "no-such-dir"), (str(d / "no-such-dir"), "no such directory")


def _data_dir_is_file(d, ctx):
    (d / "a-file").write_text("not a directory\n")
    return train_argv(d, d / "a-file"), (str(d / "a-file"), "not a directory")


def _newline_in_path(d, ctx):
    missing = d / "two\nlines"
    return train_argv(d, missing), (str(missing).replace("\n", "\\x0a"), "no such directory")


def _batch_larger_than_data(d, ctx):
    paths = data_dir(d, gz=True)
    return (train_argv(d, paths["train_images"].parent, "--batch-size", N_TRAIN + 1),
            ("--batch-size", str(N_TRAIN + 1), f"at most {N_TRAIN}"))


# -- builders: predict inputs --------------------------------------------------------------

def bad_predict_input(name: str, content: bytes | Callable[[], bytes] | None, *fragments):
    """A builder: `predict` on the file `name` holding `content` (None: no file)."""
    def build(d: Path, ctx: Context):
        path = d / name
        if content is not None:
            path.write_bytes(content() if callable(content) else content)
        return predict_argv(ctx.model, path), (str(path), *fragments)
    return build


def _predict_fifo(d, ctx):
    path = d / "pipe.idx"
    os.mkfifo(path)
    return predict_argv(ctx.model, path), (str(path), "not a regular file")


def _predict_empty_dir(d, ctx):
    (d / "empty").mkdir()
    return predict_argv(ctx.model, d / "empty"), (str(d / "empty"), "holds no image")


def _predict_pickle_trap(d, ctx):
    path = d / "trap.npy"
    path.write_bytes(npy_bytes(np.array([_Trap(d / "UNPICKLED")], dtype=object), True))
    return predict_argv(ctx.model, path), (str(path), "pickled objects, which are never loaded")


def _predict_unreadable(d, ctx):
    path = d / "x.npy"
    path.write_bytes(npy_bytes(np.zeros((1, 28, 28), np.uint8)))
    path.chmod(0)
    return predict_argv(ctx.model, path), (str(path), "permission denied")


# -- builders: model files -------------------------------------------------------------------

def bad_model(change: Callable[[dict, dict], None] | None, *fragments, command="evaluate",
              raw: Callable[[Path, Context], None] | None = None):
    """A builder: a model file made from the good one by `change(arrays, meta)` (saved
    with np.savez), or written by `raw(path, ctx)`, then given to `command`."""
    def build(d: Path, ctx: Context):
        path = d / "bad.npz"
        if raw is not None:
            raw(path, ctx)
        else:
            arrays = {k: v.copy() for k, v in ctx.arrays.items()}
            meta = json.loads(json.dumps(ctx.meta))
            change(arrays, meta)
            if "metadata" not in arrays:
                arrays["metadata"] = np.array(json.dumps(meta))
            np.savez(path, **arrays, allow_pickle=True)
        if command == "evaluate":
            argv = evaluate_argv(path)
        else:
            image = d / "x.npy"
            image.write_bytes(npy_bytes(np.zeros((1, 28, 28), np.uint8)))
            argv = predict_argv(path, image)
        return argv, (str(path), *fragments)
    return build


def _set_meta(key, value):
    def change(arrays, meta):
        meta[key] = value
    return change


def _model_with_trap(command: str):
    def build(d: Path, ctx: Context):
        def change(arrays, meta):
            arrays["W1"] = np.array([_Trap(d / "UNPICKLED")], dtype=object)
        return bad_model(change, "pickled objects, which are never loaded",
                         command=command)(d, ctx)
    return build


def _zip_of(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        for name, blob in members.items():
            z.writestr(name, blob)


def _members(ctx: Context, **replace: bytes) -> dict[str, bytes]:
    """The good model's members as .npy bytes, some replaced."""
    members = {f"{k}.npy": npy_bytes(v) for k, v in ctx.arrays.items()}
    members["metadata.npy"] = npy_bytes(np.array(json.dumps(ctx.meta)))
    members.update({f"{k}.npy": v for k, v in replace.items()})
    return members


def _truncated_model(path, ctx):
    data = ctx.model.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _corrupt_deflate(path, ctx):
    _zip_of(path, _members(ctx), zipfile.ZIP_DEFLATED)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("W1.npy")
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for i in range(start + 40, start + 80):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _model_fifo(path, ctx):
    os.mkfifo(path)


# -- the table ---------------------------------------------------------------------------------

HUGE = (10**9, 28, 28)  # 784 GB of uint8 images
CASES: list = [
    # IDX files through `train --data-dir` (raw unless named .gz)
    ("idx/empty-file", bad_train_images(b"", "empty file")),
    ("idx/truncated-header", bad_train_images(b"\0\0\x08", "too short for an IDX header")),
    ("idx/truncated-dimensions", bad_train_images(b"\0\0\x08\x03\0\0\0\x01\0\0",
                                                  "truncated header")),
    ("idx/wrong-magic", bad_train_images(b"\x01\x02\x08\x03" + bytes(12), "bad magic number")),
    ("idx/unknown-type-code", bad_train_images(idx_bytes(0x0A, (1,), b"\0"),
                                               "unknown IDX type code 0x0a")),
    ("idx/zero-dimensions", bad_train_images(b"\0\0\x08\x00", "0 dimensions")),
    ("idx/little-endian-dimensions", bad_train_images(
        struct.pack("<2xBB3I", 0x08, 3, N_TRAIN, 28, 28) + bytes(N_TRAIN * 784),
        "wrong byte order", f"{N_TRAIN}x28x28")),
    ("idx/wrong-number-of-dimensions", bad_array("train_images",
                                                 np.zeros((N_TRAIN, 784), np.uint8),
                                                 "shape (n, 28, 28)", f"({N_TRAIN}, 784)")),
    ("idx/payload-shorter-than-dimensions",
     bad_train_images(idx_bytes(0x08, (N_TRAIN, 28, 28), bytes(N_TRAIN * 784 - 1)),
                      "truncated")),
    ("idx/payload-longer-than-dimensions",
     bad_train_images(idx_bytes(0x08, (N_TRAIN, 28, 28), bytes(N_TRAIN * 784 + 7)),
                      "7 bytes of trailing data")),
    # 20 bytes claiming 10^9 images: refused before allocating (see MEMORY_LIMIT).
    ("idx/20-bytes-claiming-1e9-images", bad_train_images(idx_bytes(0x08, HUGE, bytes(4)),
                                                          "truncated", "784,000,000,000")),
    ("idx/gz-claiming-1e9-images", bad_train_images(
        lambda: gzip.compress(idx_bytes(0x08, HUGE, bytes(4))), "more than a", gz_name=True)),
    ("idx/claiming-2^32-1-per-dimension", bad_train_images(
        idx_bytes(0x0E, (2**32 - 1,) * 3, bytes(64)), "truncated")),
    ("idx/gz-bad-crc", bad_train_images(_gz_bad_crc, "corrupt gzip data", gz_name=True)),
    ("idx/gz-truncated", bad_train_images(lambda: _gz_valid_images()[:-300],
                                          "corrupt gzip data", gz_name=True)),
    ("idx/gz-garbage-after-magic", bad_train_images(b"\x1f\x8bnot gzip at all",
                                                    "corrupt gzip data", gz_name=True)),
    # ~16 MB inflating to 16 GiB past the declared size: refused after reading 64 MiB.
    ("idx/gz-bomb", bad_train_images(
        lambda: gzip_bomb(idx_bytes(0x08, (N_TRAIN, 28, 28), bytes(N_TRAIN * 784))),
        "more than 67,108,864 bytes of trailing data", gz_name=True)),
    ("idx/images-not-28x28", bad_array("train_images", np.zeros((N_TRAIN, 27, 27), np.uint8),
                                       "shape (n, 28, 28)", "(60, 27, 27)")),
    ("idx/images-float32-nan", bad_array("test_images",
                                         np.full((N_TEST, 28, 28), np.nan, np.float32), "NaN")),
    ("idx/images-float32-over-255", bad_array("test_images",
                                              np.full((N_TEST, 28, 28), 300, np.float32),
                                              "0..255")),
    ("idx/labels-float", bad_array("test_labels", np.zeros(N_TEST, np.float32),
                                   "expected integer labels")),
    ("idx/no-images", bad_array("train_images", np.zeros((0, 28, 28), np.uint8),
                                "holds no images")),
    ("idx/label-10", bad_array("train_labels", np.r_[np.zeros(N_TRAIN - 1), 10].astype(np.uint8),
                               "0..9", "found 10")),
    ("idx/label-255", bad_array("test_labels", np.full(N_TEST, 255, np.uint8), "0..9")),
    ("idx/labels-2d", bad_array("train_labels", np.zeros((N_TRAIN, 1), np.uint8),
                                "expected integer labels")),
    ("idx/image-and-label-counts-differ", _count_mismatch),
    ("idx/file-missing", _file_missing),
    ("idx/directory-instead-of-file", _directory_for_file),
    pytest.param("idx/fifo-instead-of-file", _fifo_for_file,
                 marks=pytest.mark.skipif(not HAS_FIFO, reason="no os.mkfifo here")),
    pytest.param("idx/unreadable-file", _unreadable_file,
                 marks=pytest.mark.skipif(IS_ROOT or not hasattr(os, "geteuid"),
                                          reason="root reads any file; needs POSIX "
                                                 "permissions and a non-root user")),
    ("idx/data-dir-missing", _data_dir_missing),
    ("idx/data-dir-is-a-file", _data_dir_is_file),
    ("idx/newline-in-path", _newline_in_path),

    # IDX and .npy inputs through `predict FILE`
    ("predict/idx-empty", bad_predict_input("x.idx", b"", "empty file")),
    ("predict/idx-truncated", bad_predict_input(
        "x.idx", idx_bytes(0x08, (3, 28, 28), bytes(100)), "truncated")),
    ("predict/idx-claiming-1e9-images", bad_predict_input(
        "x.idx", idx_bytes(0x08, HUGE, bytes(4)), "truncated")),
    ("predict/idx-gz-bomb", bad_predict_input(
        "x.idx.gz", lambda: gzip_bomb(idx_bytes(0x08, (1, 28, 28), bytes(784)), gib=4),
        "more than 67,108,864 bytes of trailing data")),
    # Zero images, but sides whose product NumPy cannot index (found by hypothesis).
    ("predict/idx-sides-beyond-numpy", bad_predict_input(
        "x.idx", idx_bytes(0x08, (0, 2, 2**31, 2**31)), "too large for any array")),
    ("predict/idx-not-28x28", bad_predict_input(
        "x.idx", idx_bytes(0x08, (2, 27, 27), bytes(2 * 27 * 27)), "shape (2, 27, 27)")),
    ("predict/idx-int32-values", bad_predict_input(
        "x.idx", idx_bytes(0x0C, (1, 28, 28), bytes(4 * 784)), "holds int32 values")),
    ("predict/missing-file", bad_predict_input("nope.idx", None, "no such IDX file")),
    pytest.param("predict/fifo", _predict_fifo,
                 marks=pytest.mark.skipif(not HAS_FIFO, reason="no os.mkfifo here")),
    ("predict/empty-directory", _predict_empty_dir),
    ("predict/npy-claiming-1e9-images", bad_predict_input(
        "x.npy", npy_header(HUGE, "|u1") + bytes(16), "header declares 784,000,000,000 bytes")),
    ("predict/npy-truncated", bad_predict_input(
        "x.npy", lambda: npy_bytes(np.zeros((5, 28, 28), np.uint8))[:-100], "header declares")),
    ("predict/npy-negative-dimension", bad_predict_input(
        "x.npy", npy_header((-1, 28, 28), "|u1") + bytes(784), "negative dimension")),
    ("predict/npy-pickle-trap", _predict_pickle_trap),
    ("predict/npy-not-npy", bad_predict_input("x.npy", b"PK\x03\x04 a zip?", "an .npz archive")),
    pytest.param("predict/unreadable-file", _predict_unreadable,
                 marks=pytest.mark.skipif(IS_ROOT or not hasattr(os, "geteuid"),
                                          reason="root reads any file; needs POSIX "
                                                 "permissions and a non-root user")),

    # model files through `evaluate --model` (and `predict --model` where marked)
    ("model/truncated", bad_model(None, "not a readable .npz model file", raw=_truncated_model)),
    ("model/empty", bad_model(None, "not a readable .npz", raw=lambda p, c: p.write_bytes(b""))),
    ("model/text-file", bad_model(None, "not a zip archive",
                                  raw=lambda p, c: p.write_text("not a model\n"))),
    ("model/foreign-npz", bad_model(None, "not an mnist_xp model (missing",
                                    raw=lambda p, c: np.savez(p, weights=np.zeros(3)))),
    ("model/W1-wrong-shape", bad_model(lambda a, m: a.update(W1=a["W1"][:, :4]),
                                       "array W1 is float32[784, 4]")),
    ("model/b2-wrong-dtype", bad_model(lambda a, m: a.update(b2=a["b2"].astype(np.float64)),
                                       "array b2 is float64[10]")),
    ("model/W2-integer-dtype", bad_model(lambda a, m: a.update(W2=a["W2"].astype(np.int32)),
                                         "array W2 is int32")),
    ("model/classes-wrong", bad_model(lambda a, m: a.update(classes=a["classes"][:3]),
                                      "classes should be 10 labels")),
    ("model/NaN-weights", bad_model(lambda a, m: a.update(b1=np.full_like(a["b1"], np.nan)),
                                    "array b1 holds NaN")),
    ("model/newer-format-version", bad_model(_set_meta("format_version", 2),
                                             "format version 2 is newer")),
    ("model/other-format", bad_model(_set_meta("format", "other.tool"),
                                     "not an mnist_xp model (format is 'other.tool')")),
    ("model/metadata-disagrees-with-arrays", bad_model(
        lambda a, m: m["architecture"].update(n_hidden=50), "metadata says float32[784, 50]")),
    ("model/metadata-bad-activation", bad_model(
        lambda a, m: m["architecture"].update(activation="tanh"), "bad architecture")),
    ("model/metadata-dtype-float16", bad_model(_set_meta("dtype", "float16"),
                                               "unsupported dtype 'float16'")),
    ("model/metadata-not-json", bad_model(lambda a, m: a.update(metadata=np.array("{nope")),
                                          "metadata is not valid JSON")),
    ("model/metadata-nested-100000-deep", bad_model(
        lambda a, m: a.update(metadata=np.array("[" * 100_000 + "]" * 100_000)),
        "metadata is not valid JSON")),
    ("model/metadata-not-a-string", bad_model(lambda a, m: a.update(metadata=np.arange(3)),
                                              "metadata is not a JSON string")),
    ("model/estimator-params-not-an-object", bad_model(_set_meta("estimator_params", "abc"),
                                                       "estimator_params is not a JSON object")),
    ("model/pickle-trap", _model_with_trap("evaluate")),
    ("model/pickle-trap-predict", _model_with_trap("predict")),
    ("model/member-not-npy", bad_model(None, "member metadata.npy: not .npy data", raw=lambda p, c:
                                       _zip_of(p, _members(c, metadata=b'{"format": 1}')))),
    ("model/member-claiming-4TB", bad_model(None, "header declares 4,000,000,000,000 bytes",
                                            raw=lambda p, c: _zip_of(p, _members(
                                                c, W1=npy_header((10**6, 10**6), "<f4")
                                                + bytes(64))))),
    ("model/corrupt-deflate-data", bad_model(None, "not a readable .npz model file",
                                             raw=_corrupt_deflate)),
    ("model/unsupported-compression", bad_model(None, "unsupported compression method",
                                                raw=lambda p, c: _zip_of(
                                                    p, _members(c), zipfile.ZIP_BZIP2))),
    ("model/directory", bad_model(None, "is a directory", raw=lambda p, c: p.mkdir())),
    ("model/missing", bad_model(None, "no such model file", raw=lambda p, c: None)),
    ("model/missing-predict", bad_model(None, "no such model file", raw=lambda p, c: None,
                                        command="predict")),
    pytest.param("model/fifo", bad_model(None, "named pipe", raw=_model_fifo),
                 marks=pytest.mark.skipif(not HAS_FIFO, reason="no os.mkfifo here")),

    # flags and values
    ("flag/unknown-flag", lambda d, c: (["train", "--frobnicate"], ("--frobnicate",))),
    ("flag/unknown-command", lambda d, c: (["frobnicate"], ("frobnicate", "invalid choice"))),
    ("flag/unknown-optimizer", lambda d, c: (["train", "--optimizer", "rmsprop"],
                                             ("--optimizer", "rmsprop"))),
    ("flag/newline-in-unknown-flag", lambda d, c: (["train", "--bad\nflag"],
                                                   ("--bad\\x0aflag",))),
    ("flag/epochs-0", lambda d, c: (train_argv(d, d, "--epochs", 0), ("--epochs", "0"))),
    ("flag/epochs-negative", lambda d, c: (train_argv(d, d, "--epochs", -3), ("--epochs", "-3"))),
    ("flag/epochs-not-a-number", lambda d, c: (train_argv(d, d, "--epochs", "ten"),
                                               ("--epochs", "'ten'"))),
    ("flag/batch-size-0", lambda d, c: (train_argv(d, d, "--batch-size", 0), ("--batch-size",))),
    ("flag/batch-size-negative", lambda d, c: (train_argv(d, d, "--batch-size", -1),
                                               ("--batch-size", "-1"))),
    ("flag/batch-size-larger-than-dataset", _batch_larger_than_data),
    ("flag/learning-rate-0", lambda d, c: (train_argv(d, d, "--learning-rate", 0),
                                           ("--learning-rate", "0"))),
    ("flag/learning-rate-negative", lambda d, c: (train_argv(d, d, "--lr", -0.1),
                                                  ("--learning-rate", "-0.1"))),
    ("flag/learning-rate-nan", lambda d, c: (train_argv(d, d, "--lr", "nan"),
                                             ("--learning-rate", "nan"))),
    ("flag/hidden-1e9", lambda d, c: (train_argv(d, d, "--hidden", 10**9),
                                      ("--hidden", "at most 65536"))),
    ("flag/device-cuda:x", lambda d, c: (train_argv(d, d, "--device", "cuda:x"),
                                         ("--device", "'cuda:x'"))),
    ("flag/device-gpu", lambda d, c: (train_argv(d, d, "--device", "gpu"),
                                      ("--device", "'gpu'"))),
    ("flag/device-cuda:", lambda d, c: (train_argv(d, d, "--device", "cuda:"),
                                        ("--device", "'cuda:'"))),
    ("flag/device-cuda:-1", lambda d, c: (train_argv(d, d, "--device", "cuda:-1"),
                                          ("--device", "'cuda:-1'"))),
    ("flag/device-arabic-indic-digit", lambda d, c: (train_argv(d, d, "--device", "cuda:\u0663"),
                                                     ("--device", "'cuda:\u0663'"))),
    ("flag/device-cpu:0", lambda d, c: (predict_argv(c.model, "x.npy") + ["--device", "cpu:0"],
                                        ("--device", "'cpu:0'"))),
    # No machine has 100 GPUs: refused whether or not CUDA works here.
    ("flag/require-cuda:99-train", lambda d, c: (
        train_argv(d, data_dir(d)["train_images"].parent, "--device", "cuda:99",
                   "--require-device"), ("'cuda:99'", "cannot be used"))),
    ("flag/require-cuda:99-predict", lambda d, c: (
        predict_argv(c.model, "x.npy") + ["--device", "cuda:99", "--require-device"],
        ("'cuda:99'", "cannot be used"))),
    ("flag/model-without-a-value", lambda d, c: (["evaluate", "--data", "bundled", "--model"],
                                                  ("--model",))),
    ("flag/top-k-0", lambda d, c: (predict_argv(c.model, "x.npy") + ["--top-k", 0],
                                   ("--top-k", "0"))),
]

# Cases that may import CuPy run without the address-space limit (a CUDA context
# reserves far more address space than 1 GiB).
UNLIMITED = {"flag/require-cuda:99-train", "flag/require-cuda:99-predict"}


def _case_parts(case):
    """(id, builder, marks) of a table entry, plain tuple or pytest.param."""
    if hasattr(case, "values"):
        return case.values[0], case.values[1], case.marks
    return case[0], case[1], ()


def _skipped(marks) -> bool:
    return any(m.name == "skipif" and m.args and m.args[0] for m in marks)


@pytest.fixture(scope="session")
def context(tmp_path_factory) -> Context:
    """A good 784-input, ten-class model, trained in-process in a fraction of a second."""
    directory = tmp_path_factory.mktemp("hostile-model")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (100, 784)).astype(np.uint8)
    y = np.arange(100) % 10
    clf = MLPClassifier(n_hidden=8, epochs=1, batch_size=20, device="cpu", random_state=0)
    path = save(clf.fit(x, y), directory / "good.npz")
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(str(arrays.pop("metadata")))
    return Context(model=path, arrays=arrays, meta=meta)


@pytest.fixture(scope="session")
def battery(tmp_path_factory, context) -> dict:
    """Build every runnable case, snapshot it, run all at once, snapshot again.

    {id: (result, fragments, snapshot before, snapshot after, case dir)}
    """
    root = tmp_path_factory.mktemp("hostile")
    built, jobs = {}, {}
    for i, case in enumerate(CASES):
        name, build, marks = _case_parts(case)
        if _skipped(marks):
            continue
        d = root / f"{i:03d}"
        d.mkdir()
        argv, fragments = build(d, context)
        built[name] = (d, tuple(fragments))
        jobs[name] = (argv, {"cwd": d, "limit": name not in UNLIMITED})
    before = {name: snapshot(d) for name, (d, _) in built.items()}
    results = run_all(jobs)
    out = {}
    for name, (d, fragments) in built.items():
        after = snapshot(d)
        for p in d.rglob("*"):  # let pytest clean up the unreadable cases
            if not p.is_symlink() and stat.S_ISREG(p.lstat().st_mode):
                p.chmod(0o644)
        out[name] = (results[name], fragments, before[name], after, d)
    return out


def test_the_table_has_unique_readable_ids():
    ids = [_case_parts(c)[0] for c in CASES]
    assert len(ids) == len(set(ids))
    assert all(" " not in i and i.split("/")[0] in ("idx", "predict", "model", "flag")
               for i in ids)


@pytest.mark.parametrize("name", [pytest.param(n, marks=m, id=n)
                                  for n, _, m in map(_case_parts, CASES)])
def test_hostile_input(battery, name):
    result, fragments, before, after, d = battery[name]
    report = (f"{name}: rc={result.returncode}\nstdout:\n{result.stdout}\n"
              f"stderr:\n{result.stderr}")
    assert "Traceback" not in result.stderr, report
    assert result.returncode == 2, report
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), report
    assert result.stderr.endswith("\n"), report
    assert lines[0].startswith("mnist-xp"), report
    assert fragments, name
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in the line\n{report}"
    assert result.stdout == "", report
    assert after == before, f"{name}: the case directory changed\n{report}"
    assert not (d / "UNPICKLED").exists()


def inked(n: int) -> np.ndarray:
    """`n` 28x28 uint8 images holding a stroke: not blank, so predict answers them."""
    images = np.zeros((n, 28, 28), np.uint8)
    images[:, 4:24, 13:15] = 255
    return images


def test_the_memory_limit_lets_a_good_run_through(context, tmp_path):
    """The control: under the same limit a valid predict succeeds, so the limited
    cases above fail because of their input, not because of the limit."""
    image = tmp_path / "x.npy"
    image.write_bytes(npy_bytes(inked(3)))
    result = run_cli(predict_argv(context.model, image), cwd=tmp_path, limit=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert len(result.stdout.splitlines()) == 3


def test_unusable_cuda_99_falls_back_to_cpu_with_one_line(context, tmp_path):
    image = tmp_path / "x.npy"
    image.write_bytes(npy_bytes(inked(2)))
    result = run_cli(predict_argv(context.model, image) + ["--device", "cuda:99"],
                     cwd=tmp_path, limit=False)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "cuda:99 unavailable" in lines[0] and "using cpu" in lines[0]
    assert "Traceback" not in result.stderr
    assert len(result.stdout.splitlines()) == 2
