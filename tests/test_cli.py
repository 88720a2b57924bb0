"""The ``mnist-xp`` command line, run as ``python -m mnist_xp`` in a subprocess.

The rule under test (DESIGN.md, "Errors and files"): a user's mistake ends with exactly
one line on stderr naming the file or flag and what is wrong, exit status 2, no
traceback, and nothing the user had is overwritten or left half-written.

No test touches the network: every command that loads data passes ``--data bundled``
or ``--data-dir DIR``, and ``MNIST_XP_DATA`` points at a directory that cannot exist.
A simulated unusable CUDA is a fake ``cupy`` package put first on ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from helpers_data import synthetic_mnist, write_mnist_dir
from helpers_engines import CPU_FAST_ENGINE, CPU_FAST_LINE, CPU_FAST_REASON

import mnist_xp
from mnist_xp.data import FILE_NAMES, load_bundled, write_idx

TIMEOUT = 120  # seconds; a safety net against a hung process, never asserted on

N_TRAIN, N_TEST = 300, 100  # the small synthetic dataset


# -- helpers ----------------------------------------------------------------------------

def run_cli(*args, cwd: Path | None = None, pythonpath: Path | None = None,
            stderr=subprocess.PIPE) -> subprocess.CompletedProcess:
    """Run ``python -m mnist_xp ARGS``; `pythonpath` goes first on PYTHONPATH."""
    env = dict(os.environ)
    # Were the data layer ever to look at the cache, it would find nothing and could
    # not create it (a path under /dev/null), so it could never download into it.
    env["MNIST_XP_DATA"] = os.path.join(os.devnull, "mnist_xp_test_cache")
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(pythonpath), env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "mnist_xp", *map(str, args)],
                          cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=stderr,
                          text=True, timeout=TIMEOUT)


def run_many(jobs: dict) -> dict:
    """Run ``{key: (args, run_cli keywords)}`` concurrently; ``{key: CompletedProcess}``.

    Most of a CLI call is interpreter and NumPy start-up, so the tables of error cases
    run side by side to keep this file fast; each case is still its own test.
    """
    workers = max(2, min(4, os.cpu_count() or 2))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {key: pool.submit(run_cli, *args, **kwargs)
                   for key, (args, kwargs) in jobs.items()}
        return {key: future.result() for key, future in futures.items()}


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit status 2 and exactly one non-empty stderr line containing every fragment."""
    report = f"rc={result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 2, report
    assert "Traceback" not in result.stderr, report
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), report
    assert result.stderr.endswith("\n"), report
    line = lines[0]
    for fragment in fragments:
        assert str(fragment) in line, report
    return line


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in (result.stderr or "")


def epoch_lines(stdout: str) -> list[str]:
    """The per-epoch result lines of `train`'s output."""
    return [line for line in stdout.splitlines() if re.match(r"epoch\s+\d+\s", line)]


def dot_files(directory: Path) -> list[str]:
    """Names in `directory` starting with '.' (where temporary files would be)."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def write_fake_cupy(root: Path, source: str) -> Path:
    """A package ``cupy`` under `root` with `source` as its ``__init__``; returns `root`."""
    package = root / "cupy"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent(source))
    return root


# A CuPy whose import fails as it does when the CUDA libraries are missing.
CUPY_IMPORT_FAILS = """
    raise ImportError("libcudart.so.12: cannot open shared object file")
"""

# A CuPy that imports but whose runtime answers as configured.
CUPY_RUNTIME = """
    __version__ = "99.0.0-fake"

    class CUDARuntimeError(RuntimeError):
        pass

    class ndarray:
        pass

    class _Device:
        def __init__(self, index=0):
            self.index = index
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            return False
        def synchronize(self):
            pass

    class _Runtime:
        @staticmethod
        def getDeviceCount():
            {count}
        @staticmethod
        def memGetInfo():
            return (1 << 30, 1 << 34)
        @staticmethod
        def runtimeGetVersion():
            return 12040
        @staticmethod
        def driverGetVersion():
            return 12050
        @staticmethod
        def getDeviceProperties(index):
            return {{"name": b"Fake GPU", "totalGlobalMem": 1 << 34}}

    class cuda:
        runtime = _Runtime
        Device = _Device
"""
NO_DEVICE_ERROR = "cudaErrorNoDevice: no CUDA-capable device is detected"
CUPY_NO_DEVICE = CUPY_RUNTIME.format(count=f"raise CUDARuntimeError({NO_DEVICE_ERROR!r})")
CUPY_ZERO_DEVICES = CUPY_RUNTIME.format(count="return 0")
CUPY_ONE_DEVICE = CUPY_RUNTIME.format(count="return 1")


class _Trap:
    """Unpickling this creates the file at `path`: proof that something unpickled."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


# -- fixtures ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One model trained on the bundled subset for one epoch, with its metrics file."""
    directory = tmp_path_factory.mktemp("trained")
    model, metrics = directory / "m.npz", directory / "m.jsonl"
    # --device cpu: on a machine with a GPU, "auto" would pick CUDA.
    result = run_cli("train", "--data", "bundled", "--device", "cpu", "--epochs", 1,
                     "--save", model, "--metrics", metrics, cwd=directory)
    assert_ok(result)
    return {"dir": directory, "model": model, "metrics": metrics, "result": result}


@pytest.fixture(scope="module")
def bundled_images():
    """The first ten bundled test images, uint8 (10, 28, 28)."""
    return load_bundled().x_test[:10].copy()


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    """A small synthetic MNIST-layout directory (gzipped files), shared read-only."""
    return write_mnist_dir(tmp_path_factory.mktemp("small") / "data",
                           synthetic_mnist(N_TRAIN, N_TEST, seed=1))


@pytest.fixture
def raw_dir(tmp_path):
    """A small synthetic MNIST-layout directory of raw (uncompressed) files to damage."""
    return write_mnist_dir(tmp_path / "raw", synthetic_mnist(N_TRAIN, N_TEST, seed=2), gz=False)


def small_train(data_dir: Path, *extra) -> list:
    return ["train", "--data-dir", data_dir, "--epochs", 1, "--device", "cpu", *extra]


# -- 1. train ---------------------------------------------------------------------------

@pytest.mark.slow
def test_train_names_data_and_device_and_writes_model_and_metrics(trained):
    out = trained["result"].stdout
    lines = out.splitlines()
    assert lines[0].startswith("data: bundled MNIST subset"), out
    assert lines[1].startswith("device: cpu"), out
    assert len(epoch_lines(out)) == 1, out
    assert re.search(r"^test accuracy: \d+\.\d\d% \(\d+/10000\) after 1 epoch", out, re.M), out
    assert f"saved model to {trained['model']}" in out
    assert trained["model"].is_file() and trained["model"].stat().st_size > 0

    records = [json.loads(line) for line in trained["metrics"].read_text().splitlines()]
    assert len(records) == 1
    assert set(records[0]) == {"epoch", "train_loss", "train_accuracy", "val_accuracy",
                               "test_accuracy", "seconds", "device", "engine", "engine_reason"}
    assert (records[0]["engine"], records[0]["engine_reason"]) == (CPU_FAST_ENGINE,
                                                                    CPU_FAST_REASON)
    assert any(line.startswith("engine: " + CPU_FAST_LINE) for line in lines)
    assert records[0]["epoch"] == 1 and records[0]["device"] == "cpu"
    assert 0.0 <= records[0]["train_accuracy"] <= 1.0
    assert 0.5 < records[0]["test_accuracy"] <= 1.0  # one epoch on 10,000 digits learns
    # The summary line agrees with the metrics file.
    correct = round(records[0]["test_accuracy"] * 10_000)
    assert f"({correct}/10000)" in out


@pytest.mark.slow
def test_train_on_a_pipe_draws_no_progress_bar_and_says_nothing_on_stderr(trained):
    assert "\r" not in trained["result"].stderr
    assert "\x1b" not in trained["result"].stderr
    assert trained["result"].stderr == ""


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_train_on_a_terminal_does_draw_the_progress_bar(small_dir, tmp_path):
    # The control for the test above: the bar exists, and only a terminal gets it.
    import pty

    master, slave = pty.openpty()
    try:
        result = run_cli(*small_train(small_dir), cwd=tmp_path, stderr=slave)
    finally:
        os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO once the terminal's other end is closed and drained
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert_ok(result)
    drawn = b"".join(chunks).decode(errors="replace")
    assert "\r" in drawn and "epoch 1/1 [" in drawn, repr(drawn)


def test_quiet_prints_no_epoch_lines_but_metrics_has_one_line_per_epoch(small_dir, tmp_path):
    metrics = tmp_path / "m.jsonl"
    quiet = run_cli(*small_train(small_dir, "--quiet", "--epochs", 2, "--metrics", metrics),
                    cwd=tmp_path)
    assert_ok(quiet)
    assert epoch_lines(quiet.stdout) == [], quiet.stdout
    assert "test accuracy:" in quiet.stdout
    assert quiet.stderr == ""
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]


# -- 2. evaluate ------------------------------------------------------------------------

@pytest.mark.slow
def test_evaluate_reports_exactly_the_last_epochs_test_accuracy(trained):
    last = json.loads(trained["metrics"].read_text().splitlines()[-1])
    result = run_cli("evaluate", "--model", trained["model"], "--data", "bundled",
                     "--device", "cpu", "--json", cwd=trained["dir"])
    assert_ok(result)
    report = json.loads(result.stdout)
    assert report["accuracy"] == last["test_accuracy"]
    assert report["total"] == 10_000
    assert report["correct"] == round(last["test_accuracy"] * 10_000)
    assert report["correct"] / report["total"] == report["accuracy"]
    assert "bundled MNIST subset" in report["data"]

    text = run_cli("evaluate", "--model", trained["model"], "--data", "bundled",
                   "--device", "cpu", cwd=trained["dir"])
    assert_ok(text)
    assert f"({report['correct']}/10000)" in text.stdout


# -- 3. predict -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def predict_inputs(tmp_path_factory, bundled_images):
    """Bundled test images as .npy (n, 28, 28), .npy (28, 28), raw IDX and gzipped IDX."""
    directory = tmp_path_factory.mktemp("inputs")
    files = {
        directory / "a.npy": bundled_images[:4],
        directory / "one.npy": bundled_images[4],
        directory / "b.idx": bundled_images[5:8],
        directory / "c.idx.gz": bundled_images[8:10],
    }
    for path, images in files.items():
        if path.suffix == ".npy":
            np.save(path, images)
        else:
            write_idx(path, images)
    return files


def expected_predictions(model_path: Path, files: dict) -> list[tuple[str, int, int]]:
    model = mnist_xp.load(model_path, device="cpu")
    rows = []
    for path, images in files.items():
        predicted = model.predict(images.reshape(-1, 784))
        rows += [(str(path), i, int(p)) for i, p in enumerate(predicted)]
    return rows


def printed_predictions(stdout: str) -> list[tuple[str, int, int]]:
    rows = []
    for line in stdout.splitlines():
        m = re.fullmatch(r"(.+)\[(\d+)\]: (\d) \((\d+\.\d)%\)", line)
        assert m, f"unexpected line {line!r}"
        rows.append((m.group(1), int(m.group(2)), int(m.group(3))))
    return rows


@pytest.mark.slow
def test_predict_matches_the_library_for_npy_and_idx_inputs(trained, predict_inputs):
    result = run_cli("predict", "--model", trained["model"], "--device", "cpu",
                     *predict_inputs, cwd=trained["dir"])
    assert_ok(result)
    assert result.stderr == ""
    expected = expected_predictions(trained["model"], predict_inputs)
    assert len(expected) == 10
    assert printed_predictions(result.stdout) == expected


@pytest.mark.slow
def test_predict_json_gives_ten_probabilities_summing_to_one(trained, predict_inputs):
    result = run_cli("predict", "--model", trained["model"], "--device", "cpu", "--json",
                     *predict_inputs, cwd=trained["dir"])
    assert_ok(result)
    rows = json.loads(result.stdout)
    expected = expected_predictions(trained["model"], predict_inputs)
    assert [(r["input"], r["index"], r["prediction"]) for r in rows] == expected
    model = mnist_xp.load(trained["model"], device="cpu")
    all_images = np.concatenate([im.reshape(-1, 784) for im in predict_inputs.values()])
    library_proba = model.predict_proba(all_images)
    for row, proba in zip(rows, library_proba):
        assert len(row["probabilities"]) == 10
        assert sum(row["probabilities"]) == pytest.approx(1.0, abs=1e-4)
        assert row["probability"] == max(row["probabilities"])
        np.testing.assert_allclose(row["probabilities"], proba, rtol=1e-5, atol=1e-7)


def _bad_input(kind: str, directory: Path) -> tuple[Path, str]:
    """A bad predict input of the given kind and a word its error line must contain."""
    if kind == "missing":
        return directory / "missing.npy", "no such .npy file"
    if kind == "wrong shape":
        path = directory / "wrong.npy"
        np.save(path, np.zeros((3, 27, 27), np.uint8))
        return path, "shape"
    if kind == "int64":
        path = directory / "ints.npy"
        np.save(path, np.zeros((2, 28, 28), np.int64))
        return path, "int64"
    if kind == "not idx":
        path = directory / "notes.idx"
        path.write_text("these are not pixels\n")
        return path, "not an IDX file"
    if kind == "text as npy":
        path = directory / "notes.npy"
        path.write_text("garbage\n")
        return path, "not a .npy file"
    if kind == "pickled npy":
        marker = directory / "unpickled"
        path = directory / "trap.npy"
        np.save(path, np.array([_Trap(marker)], dtype=object), allow_pickle=True)
        return path, "pickled objects, which are never loaded"
    raise AssertionError(kind)


@pytest.mark.slow
@pytest.mark.parametrize("kind, as_json", [
    ("missing", False), ("wrong shape", False), ("int64", False), ("not idx", False),
    ("pickled npy", False), ("text as npy", False), ("missing", True), ("wrong shape", True)])
def test_predict_reports_a_bad_input_and_still_prints_the_good_ones(
        trained, bundled_images, tmp_path, kind, as_json):
    first, last = tmp_path / "first.npy", tmp_path / "last.npy"
    np.save(first, bundled_images[:2])
    np.save(last, bundled_images[2:5])
    bad, word = _bad_input(kind, tmp_path)
    result = run_cli("predict", "--model", trained["model"], "--device", "cpu",
                     *(["--json"] if as_json else []), first, bad, last, cwd=tmp_path)
    assert_user_error(result, bad, word)
    if as_json:
        printed = [(r["input"], r["index"], r["prediction"]) for r in json.loads(result.stdout)]
    else:
        printed = printed_predictions(result.stdout)
    assert printed == expected_predictions(trained["model"],
                                           {first: bundled_images[:2], last: bundled_images[2:5]})
    assert not (tmp_path / "unpickled").exists()


@pytest.mark.slow
def test_predict_gives_one_error_line_per_bad_input(trained, bundled_images, tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, bundled_images[:1])
    missing, _ = _bad_input("missing", tmp_path)
    wrong, _ = _bad_input("wrong shape", tmp_path)
    result = run_cli("predict", "--model", trained["model"], "--device", "cpu",
                     missing, good, wrong, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and str(missing) in lines[0] and str(wrong) in lines[1], lines
    assert len(printed_predictions(result.stdout)) == 1


def test_predict_with_a_missing_model_is_one_line(tmp_path):
    image = tmp_path / "x.npy"
    np.save(image, np.zeros((28, 28), np.uint8))
    missing = tmp_path / "nope.npz"
    result = run_cli("predict", "--model", missing, image, cwd=tmp_path)
    assert_user_error(result, missing, "no such model file")
    assert result.stdout == ""


# Inputs that once crashed or were silently accepted.

@pytest.mark.slow
def test_predict_an_empty_image_array_is_a_user_error(trained, tmp_path):
    empty = tmp_path / "empty.npy"
    np.save(empty, np.zeros((0, 28, 28), np.uint8))
    result = run_cli("predict", "--model", trained["model"], "--device", "cpu", empty,
                     cwd=tmp_path)
    assert_user_error(result, empty)


@pytest.mark.slow
def test_predict_refuses_nan_pixels(trained, tmp_path):
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((1, 28, 28), np.nan, np.float32))
    result = run_cli("predict", "--model", trained["model"], "--device", "cpu", nan,
                     cwd=tmp_path)
    assert_user_error(result, nan)


@pytest.mark.slow
def test_predict_refuses_float_pixels_outside_0_1(trained, bundled_images, tmp_path):
    floats = tmp_path / "floats255.npy"
    np.save(floats, bundled_images[:3].astype(np.float32))  # 0..255, not scaled to [0, 1]
    result = run_cli("predict", "--model", trained["model"], "--device", "cpu", floats,
                     cwd=tmp_path)
    assert_user_error(result, floats)


# -- 4. info, --version, no arguments ---------------------------------------------------

def test_info_text_and_json(tmp_path):
    text = run_cli("info", cwd=tmp_path)
    assert_ok(text)
    assert text.stdout.startswith(f"mnist-xp {mnist_xp.__version__} ")
    assert f"numpy {np.__version__}" in text.stdout
    assert "cupy" in text.stdout

    result = run_cli("info", "--json", cwd=tmp_path)
    assert_ok(result)
    info = json.loads(result.stdout)
    assert {"mnist_xp", "numpy", "cupy"} <= set(info)
    assert info["mnist_xp"] == mnist_xp.__version__
    assert info["numpy"] == np.__version__
    assert info["cupy"] is None or isinstance(info["cupy"], str)


def test_info_json_gives_the_reason_cuda_is_unusable(tmp_path):
    fake = write_fake_cupy(tmp_path / "fake", CUPY_NO_DEVICE)
    result = run_cli("info", "--json", cwd=tmp_path, pythonpath=fake)
    assert_ok(result)
    info = json.loads(result.stdout)
    assert info["cupy"] is None and info["devices"] == []
    assert NO_DEVICE_ERROR in info["cuda_unavailable"]


def test_info_json_lists_the_devices_of_a_usable_cupy(tmp_path):
    fake = write_fake_cupy(tmp_path / "fake", CUPY_ONE_DEVICE)
    result = run_cli("info", "--json", cwd=tmp_path, pythonpath=fake)
    assert_ok(result)
    info = json.loads(result.stdout)
    assert info["cupy"] == "99.0.0-fake"
    assert info["cuda_unavailable"] is None
    assert info["devices"] == [{"device": "cuda:0", "name": "Fake GPU",
                                "memory_bytes": 1 << 34}]


def test_version(tmp_path):
    result = run_cli("--version", cwd=tmp_path)
    assert_ok(result)
    assert result.stdout.strip() == f"mnist-xp {mnist_xp.__version__}"


def test_help_exits_0(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert_ok(result)
    assert "train" in result.stdout and "predict" in result.stdout


def test_no_arguments_is_one_line_and_status_2(tmp_path):
    line = assert_user_error(run_cli(cwd=tmp_path), "train", "predict")
    assert line.startswith("mnist-xp")


def test_unknown_subcommand(tmp_path):
    assert_user_error(run_cli("frobnicate", cwd=tmp_path), "frobnicate")


@pytest.mark.parametrize("args", [["train", "--frobnicate"],
                                  ["evaluate", "--model", "m.npz", "--frobnicate"]])
def test_unknown_flag(tmp_path, args):
    result = run_cli(*args, cwd=tmp_path)
    assert_user_error(result, "--frobnicate")
    assert result.stdout == ""


# -- 5. device fallback -----------------------------------------------------------------

FALLBACKS = {  # id: (fake cupy, --device, the reason the fallback line must give)
    "import-fails": (CUPY_IMPORT_FAILS, "cuda", "CuPy failed to import: ImportError: "
                     "libcudart.so.12: cannot open shared object file"),
    "no-device": (CUPY_NO_DEVICE, "cuda",
                  f"CUDA is not usable: CUDARuntimeError: {NO_DEVICE_ERROR}"),
    "zero-devices": (CUPY_ZERO_DEVICES, "cuda:0", "no CUDA device found"),
    "no-such-index": (CUPY_ONE_DEVICE, "cuda:3",
                      "there is no CUDA device 3 (this machine has 1)"),
}
REQUIRED = {"import-fails": "libcudart.so.12", "no-device": NO_DEVICE_ERROR}


@pytest.fixture(scope="module")
def device_runs(small_dir, tmp_path_factory):
    """`train` under each fake CuPy: {(mode, id): (result, output dir)}.

    mode "fallback": --device as in FALLBACKS, --save; "auto": --device auto;
    "require": --device cuda --require-device, --save and --metrics.
    """
    root = tmp_path_factory.mktemp("devices")
    jobs, outs = {}, {}
    for mode, ids in (("fallback", FALLBACKS), ("auto", REQUIRED), ("require", REQUIRED)):
        for name in ids:
            source, device, _ = FALLBACKS[name]
            case = root / f"{mode}-{name}"
            out = case / "out"
            out.mkdir(parents=True)
            fake = write_fake_cupy(case / "fake", source)
            args = ["train", "--data-dir", small_dir, "--epochs", 1]
            if mode == "fallback":
                args += ["--device", device, "--save", out / "m.npz"]
            elif mode == "auto":
                args += ["--device", "auto"]
            else:
                args += ["--device", "cuda", "--require-device", "--save", out / "m.npz",
                         "--metrics", out / "m.jsonl"]
            jobs[mode, name] = (args, {"cwd": case, "pythonpath": fake})
            outs[mode, name] = out
    results = run_many(jobs)
    return {key: (results[key], outs[key]) for key in jobs}


@pytest.mark.parametrize("name", FALLBACKS)
def test_unusable_cuda_falls_back_to_cpu_with_one_line_and_the_reason(device_runs, name):
    _, device, reason = FALLBACKS[name]
    result, out = device_runs["fallback", name]
    assert_ok(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "using cpu" in lines[0] and reason in lines[0] and device in lines[0], lines[0]
    assert "\ndevice: cpu" in result.stdout
    assert (out / "m.npz").is_file()


@pytest.mark.parametrize("name", REQUIRED)
def test_auto_device_falls_back_quietly(device_runs, name):
    result, _ = device_runs["auto", name]
    assert_ok(result)
    assert result.stderr == ""
    assert "\ndevice: cpu" in result.stdout


@pytest.mark.parametrize("name", REQUIRED)
def test_require_device_is_one_line_status_2_and_saves_nothing(device_runs, name):
    result, out = device_runs["require", name]
    assert_user_error(result, "'cuda'", REQUIRED[name])
    assert epoch_lines(result.stdout) == []
    assert list(out.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_require_device_for_evaluate_and_predict(trained, bundled_images, tmp_path, command):
    fake = write_fake_cupy(tmp_path / "fake", CUPY_IMPORT_FAILS)
    image = tmp_path / "x.npy"
    np.save(image, bundled_images[:1])
    extra = ["--data", "bundled"] if command == "evaluate" else [image]
    result = run_cli(command, "--model", trained["model"], "--device", "cuda:0",
                     "--require-device", *extra, cwd=tmp_path, pythonpath=fake)
    assert_user_error(result, "'cuda:0'", "libcudart.so.12")
    assert result.stdout == ""


# -- 6. bad input -----------------------------------------------------------------------

def _damage(kind: str, directory: Path) -> tuple[str, ...]:
    """Damage the raw dataset in `directory`; return fragments the error must name."""
    path = {role: directory / name for role, name in FILE_NAMES.items()}
    if kind == "file missing":
        path["test_labels"].unlink()
        return str(directory), FILE_NAMES["test_labels"], "missing"
    if kind == "wrong magic":
        data = bytearray(path["train_images"].read_bytes())
        data[:2] = b"\x01\x02"
        path["train_images"].write_bytes(bytes(data))
        return str(path["train_images"]), "magic"
    if kind == "truncated images":
        data = path["train_images"].read_bytes()
        path["train_images"].write_bytes(data[:-1000])
        return str(path["train_images"]), "truncated"
    if kind == "truncated gzip":
        write_idx(directory / (FILE_NAMES["test_images"] + ".gz"),
                  synthetic_mnist(N_TRAIN, N_TEST)["test_images"])
        gz = directory / (FILE_NAMES["test_images"] + ".gz")  # used in preference to raw
        gz.write_bytes(gz.read_bytes()[:-200])
        return (str(gz),)
    if kind == "label 10":
        labels = np.zeros(N_TRAIN, np.uint8)
        labels[7] = 10
        write_idx(path["train_labels"], labels)
        return str(path["train_labels"]), "0..9"
    if kind == "count mismatch":
        write_idx(path["test_labels"], np.zeros(N_TEST - 1, np.uint8))
        return str(path["test_labels"]), str(path["test_images"])
    if kind == "labels as images":
        shutil.copy(path["train_labels"], path["train_images"])
        return (str(path["train_images"]),)
    if kind == "one training digit":
        write_idx(path["train_labels"], np.full(N_TRAIN, 3, np.uint8))
        return str(directory), "only the digit 3"
    if kind == "test digit never trained":
        labels = np.arange(N_TRAIN, dtype=np.uint8) % 9  # no 9 in training
        write_idx(path["train_labels"], labels)
        write_idx(path["test_labels"], np.full(N_TEST, 9, np.uint8))
        return str(directory), "training labels lack", "(9)"
    raise AssertionError(kind)


DAMAGES = ["file missing", "wrong magic", "truncated images", "truncated gzip", "label 10",
           "count mismatch", "labels as images", "one training digit", "test digit never trained"]


@pytest.fixture(scope="module")
def bad_data_runs(tmp_path_factory):
    """`train` on each kind of damaged data dir: {kind: (result, fragments, model path)}."""
    root = tmp_path_factory.mktemp("bad-data")
    cases, jobs = {}, {}
    for i, kind in enumerate(DAMAGES):
        case = root / str(i)
        data = write_mnist_dir(case / "data", synthetic_mnist(N_TRAIN, N_TEST, seed=2), gz=False)
        fragments = _damage(kind, data)
        model = case / "m.npz"
        cases[kind] = (fragments, model)
        jobs[kind] = (small_train(data, "--save", model), {"cwd": case})
    results = run_many(jobs)
    return {kind: (results[kind], *cases[kind]) for kind in DAMAGES}


@pytest.mark.parametrize("kind", DAMAGES)
def test_bad_data_dir_is_one_line_naming_the_file(bad_data_runs, kind):
    result, fragments, model = bad_data_runs[kind]
    assert_user_error(result, *fragments)
    assert epoch_lines(result.stdout) == []
    assert not model.exists()


@pytest.mark.slow
def test_bad_data_dir_for_evaluate(trained, raw_dir, tmp_path):
    fragments = _damage("label 10", raw_dir)
    result = run_cli("evaluate", "--model", trained["model"], "--data-dir", raw_dir,
                     "--device", "cpu", cwd=tmp_path)
    assert_user_error(result, *fragments)


def test_data_dir_that_does_not_exist(tmp_path):
    missing = tmp_path / "no-such-dir"
    result = run_cli(*small_train(missing), cwd=tmp_path)
    assert_user_error(result, missing, "no such directory")


def test_data_dir_that_is_a_file(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert_user_error(run_cli(*small_train(a_file), cwd=tmp_path), a_file, "not a directory")


BAD_FLAGS = [
    (["--device", "gpu"], "--device"),
    (["--device", "cuda:x"], "--device"),
    (["--device", "cuda:"], "--device"),
    (["--epochs", "0"], "--epochs"),
    (["--epochs", "-1"], "--epochs"),
    (["--epochs", "x"], "--epochs"),
    (["--batch-size", "0"], "--batch-size"),
    (["--learning-rate", "0"], "--learning-rate"),
    (["--learning-rate", "-1"], "--learning-rate"),
    (["--lr", "nan"], "--learning-rate"),
    (["--momentum", "1"], "--momentum"),
    (["--weight-decay", "inf"], "--weight-decay"),
    (["--preset", "fancy"], "--preset"),
    (["--shift", "28"], "--shift 28"),
    (["--shift", "-1"], "--shift"),
    (["--data-dir"], "--data-dir"),
    (["--optimizer", "rmsprop"], "--optimizer"),
    (["--schedule", "linear"], "--schedule"),
    (["--warmup", "-1"], "--warmup"),
    (["--warmup", "50"], "--warmup 50"),
    (["--label-smoothing", "1"], "--label-smoothing"),
    (["--rotate", "-5"], "--rotate"),
    (["--rotate", "200"], "--rotate"),
    (["--zoom", "1.5"], "--zoom"),
    (["--shear", "90"], "--shear"),
    (["--elastic-sigma", "0"], "--elastic-sigma"),
    (["--validation", "1"], "--validation"),
    (["--validation", "0.0001"], "--validation"),
    (["--patience", "0"], "--patience"),
    (["--no-augment", "--rotate", "5"], "--no-augment"),
    (["--shift", "1", "--rotate", "5"], "--shift 1"),
]


@pytest.fixture(scope="module")
def bad_flag_runs(small_dir, tmp_path_factory):
    """`train` with each bad flag of BAD_FLAGS: {index: (result, model path)}."""
    root = tmp_path_factory.mktemp("bad-flags")
    jobs, models = {}, {}
    for i, (args, _) in enumerate(BAD_FLAGS):
        case = root / str(i)
        case.mkdir()
        models[i] = case / "m.npz"
        jobs[i] = (["train", "--data-dir", small_dir, "--save", models[i], *args], {"cwd": case})
    results = run_many(jobs)
    return {i: (results[i], models[i]) for i in jobs}


@pytest.mark.parametrize("index", range(len(BAD_FLAGS)),
                         ids=[" ".join(args) for args, _ in BAD_FLAGS])
def test_bad_train_flag_is_one_line_naming_the_flag(bad_flag_runs, index):
    args, flag = BAD_FLAGS[index]
    result, model = bad_flag_runs[index]
    line = assert_user_error(result, flag)
    if len(args) == 2:
        assert args[1] in line  # and the value that was wrong
    assert result.stdout == ""
    assert not model.exists()


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_bad_device_for_evaluate_and_predict(tmp_path, command):
    extra = ["x.npy"] if command == "predict" else []
    result = run_cli(command, "--model", "m.npz", "--device", "gpu", *extra, cwd=tmp_path)
    assert_user_error(result, "--device", "'gpu'")


def test_batch_size_larger_than_the_training_set(small_dir, tmp_path):
    model = tmp_path / "m.npz"
    result = run_cli(*small_train(small_dir, "--batch-size", N_TRAIN + 1, "--save", model),
                     cwd=tmp_path)
    assert_user_error(result, "--batch-size", str(N_TRAIN + 1), str(N_TRAIN))
    assert epoch_lines(result.stdout) == []
    assert not model.exists()


def test_batch_size_equal_to_the_training_set_is_fine(small_dir, tmp_path):
    assert_ok(run_cli(*small_train(small_dir, "--batch-size", N_TRAIN), cwd=tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("flag", ["--save", "--metrics"])
def test_output_into_a_missing_directory_fails_before_training(tmp_path, flag):
    # The bundled data: a run that got as far as training would show it in its output.
    target = tmp_path / "no-such-dir" / "out"
    result = run_cli("train", "--data", "bundled", "--device", "cpu", "--epochs", 1,
                     flag, target, cwd=tmp_path)
    assert_user_error(result, flag, target, "does not exist")
    assert "epoch" not in result.stdout
    assert result.stdout == ""
    assert not target.parent.exists()


@pytest.mark.parametrize("flag", ["--save", "--metrics"])
def test_output_pointing_at_a_directory(small_dir, tmp_path, flag):
    directory = tmp_path / "a-directory"
    directory.mkdir()
    (directory / "keep.txt").write_text("mine")
    result = run_cli(*small_train(small_dir, flag, directory), cwd=tmp_path)
    assert_user_error(result, flag, directory, "directory")
    assert "epoch" not in result.stdout
    assert directory.is_dir() and [p.name for p in directory.iterdir()] == ["keep.txt"]
    assert (directory / "keep.txt").read_text() == "mine"


def _bad_model(kind: str, directory: Path, good_model: Path) -> tuple[Path, tuple[str, ...]]:
    """A bad model file of the given kind and fragments its error line must contain."""
    path = directory / f"{kind.replace(' ', '-')}.npz"
    if kind == "missing":
        return path, ("no such model file",)
    if kind == "truncated":
        data = good_model.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path, ()
    if kind == "not npz":
        path.write_text("this is a text file, not a model\n")
        return path, ()
    if kind == "empty":
        path.write_bytes(b"")
        return path, ()
    if kind == "object array":
        marker = directory / "unpickled"
        with np.load(good_model) as npz:
            arrays = dict(npz)
        arrays["W1"] = np.array([_Trap(marker)], dtype=object)
        np.savez(path, **arrays, allow_pickle=True)
        return path, ("pickle",)
    if kind == "foreign npz":
        np.savez(path, weights=np.zeros(3))
        return path, ("not an mnist_xp model",)
    if kind == "directory":
        path.mkdir()
        return path, ("directory",)
    raise AssertionError(kind)


BAD_MODELS = ["missing", "truncated", "not npz", "empty", "object array", "foreign npz",
              "directory"]


@pytest.fixture(scope="module")
def bad_model_runs(trained, tmp_path_factory):
    """`evaluate` on each kind of bad model file: {kind: (result, path, fragments, dir)}."""
    root = tmp_path_factory.mktemp("bad-models")
    cases, jobs = {}, {}
    for i, kind in enumerate(BAD_MODELS):
        case = root / str(i)
        case.mkdir()
        path, fragments = _bad_model(kind, case, trained["model"])
        cases[kind] = (path, fragments, case)
        jobs[kind] = (["evaluate", "--model", path, "--data", "bundled"], {"cwd": case})
    results = run_many(jobs)
    return {kind: (results[kind], *cases[kind]) for kind in BAD_MODELS}


@pytest.mark.slow
@pytest.mark.parametrize("kind", BAD_MODELS)
def test_evaluate_refuses_a_bad_model_file_in_one_line(bad_model_runs, kind):
    result, path, fragments, case = bad_model_runs[kind]
    assert_user_error(result, path, *fragments)
    assert result.stdout == ""
    assert not (case / "unpickled").exists()


@pytest.mark.slow
def test_evaluate_does_not_call_a_text_file_pickled(bad_model_runs):
    result, path, _, _ = bad_model_runs["not npz"]
    line = assert_user_error(result, path)
    assert "pickle" not in line and ".npz" in line


@pytest.mark.slow
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_data_dir_with_no_test_images_is_a_user_error(trained, tmp_path, command):
    data = write_mnist_dir(tmp_path / "d", synthetic_mnist(N_TRAIN, 0))
    if command == "train":
        result = run_cli(*small_train(data), cwd=tmp_path)
    else:
        result = run_cli("evaluate", "--model", trained["model"], "--data-dir", data,
                         "--device", "cpu", cwd=tmp_path)
    assert_user_error(result, data)


def test_data_dir_with_no_training_images_names_the_data(tmp_path):
    data = write_mnist_dir(tmp_path / "d", synthetic_mnist(0, N_TEST))
    line = assert_user_error(run_cli(*small_train(data), cwd=tmp_path), data)
    assert "at most 0" not in line


# -- 7. nothing overwritten on failure; no temporary files left -------------------------

OLD_MODEL = b"the user's previous model: must survive a failed run\n"
OLD_METRICS = b'{"epoch": 1, "note": "previous metrics"}\n'


@pytest.mark.parametrize("failure", ["require-device", "bad data dir", "batch too large"])
def test_a_failed_run_leaves_existing_files_untouched(small_dir, raw_dir, tmp_path, failure):
    out = tmp_path / "out"
    out.mkdir()
    model, metrics = out / "m.npz", out / "m.jsonl"
    model.write_bytes(OLD_MODEL)
    metrics.write_bytes(OLD_METRICS)
    common = ["--epochs", 1, "--save", model, "--metrics", metrics]
    pythonpath = None
    if failure == "require-device":
        pythonpath = write_fake_cupy(tmp_path / "fake", CUPY_IMPORT_FAILS)
        args = ["train", "--data-dir", small_dir, "--device", "cuda", "--require-device"]
    elif failure == "bad data dir":
        _damage("truncated images", raw_dir)
        args = ["train", "--data-dir", raw_dir, "--device", "cpu"]
    else:
        args = ["train", "--data-dir", small_dir, "--batch-size", N_TRAIN + 1]
    result = run_cli(*args, *common, cwd=tmp_path, pythonpath=pythonpath)
    assert_user_error(result)
    assert model.read_bytes() == OLD_MODEL
    assert metrics.read_bytes() == OLD_METRICS
    assert sorted(p.name for p in out.iterdir()) == ["m.jsonl", "m.npz"]


def test_a_successful_run_replaces_the_files_and_leaves_no_temporary_files(small_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    model, metrics = out / "m.npz", out / "m.jsonl"
    model.write_bytes(OLD_MODEL)
    metrics.write_bytes(OLD_METRICS)
    result = run_cli(*small_train(small_dir, "--epochs", 2, "--save", model,
                                  "--metrics", metrics), cwd=tmp_path)
    assert_ok(result)
    assert len(epoch_lines(result.stdout)) == 2, result.stdout  # the control for --quiet
    assert dot_files(out) == []
    assert sorted(p.name for p in out.iterdir()) == ["m.jsonl", "m.npz"]
    assert mnist_xp.load(model, device="cpu").n_features_in_ == 784
    assert [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()] == [1, 2]
    if os.name == "posix":
        # Written through a temporary file, but with the mode open() would have given.
        umask = os.umask(0)
        os.umask(umask)
        assert model.stat().st_mode & 0o777 == 0o666 & ~umask


def test_save_in_the_current_directory_by_a_bare_name(small_dir, tmp_path):
    result = run_cli(*small_train(small_dir, "--save", "m.npz"), cwd=tmp_path)
    assert_ok(result)
    assert (tmp_path / "m.npz").is_file()
    assert dot_files(tmp_path) == []


# -- 8. presets -------------------------------------------------------------------------

def test_preset_classic_header_shows_sigmoid_and_squared_error(small_dir, tmp_path):
    result = run_cli(*small_train(small_dir, "--preset", "classic", "--batch-size", 100),
                     cwd=tmp_path)
    assert_ok(result)
    header = next(line for line in result.stdout.splitlines() if line.startswith("model:"))
    assert "sigmoid" in header and "squared error" in header, header
    assert "batch 100" in header and "momentum 0," in header, header
    assert len(epoch_lines(result.stdout)) == 1


@pytest.mark.slow
def test_preset_default_header_shows_relu_and_cross_entropy(trained):
    # The control for the test above: the header does change with the preset.
    header = next(line for line in trained["result"].stdout.splitlines()
                  if line.startswith("model:"))
    assert "relu" in header and "cross entropy" in header and "sigmoid" not in header, header


def test_train_with_validation_and_distortions(small_dir, tmp_path):
    metrics = tmp_path / "m.jsonl"
    r = run_cli("train", "--data-dir", small_dir, "--epochs", "3", "--device", "cpu",
                "--validation", "0.25", "--rotate", "5", "--elastic", "2", "--optimizer",
                "nesterov", "--warmup", "1", "--metrics", metrics, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "distortions rotate 5, elastic 2" in r.stdout and "nesterov 0.9" in r.stdout
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert all(rec["val_accuracy"] is not None for rec in records)
    kept = [line for line in r.stdout.splitlines() if line.startswith("kept epoch")]
    best = max(rec["val_accuracy"] for rec in records)
    assert kept and kept[0].endswith(f"(validation accuracy {best:.2%})")


def test_out_of_gpu_memory_is_one_line_suggesting_a_smaller_batch_or_the_cpu(monkeypatch, capsys):
    # CuPy raises cupy.cuda.memory.OutOfMemoryError, a MemoryError; stand one in
    import mnist_xp.cli as cli_module

    class OutOfMemoryError(MemoryError):
        pass

    def boom(args):
        raise OutOfMemoryError("Out of memory allocating 51,200,000,000 bytes")

    monkeypatch.setitem(cli_module.COMMANDS, "train", boom)
    assert cli_module.main(["train"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "out of GPU memory" in err[0]
    assert "--batch-size" in err[0] and "--device cpu" in err[0]


def test_a_training_checkpoint_is_accepted_wherever_a_model_is(small_dir, tmp_path):
    # evaluate, predict (and serve, through the same loader) take what --checkpoint wrote
    assert_ok(run_cli(*small_train(small_dir, "--epochs", 2, "--checkpoint", "ck.npz",
                                   "--save", "m.npz"), cwd=tmp_path))
    images = tmp_path / "x.npy"
    np.save(images, synthetic_mnist(N_TRAIN, N_TEST, seed=5)["test_images"][:4])
    runs = run_many({
        (kind, model): ([kind, "--model", model, "--device", "cpu", "--json"]
                        + (["--data-dir", small_dir] if kind == "evaluate" else [images]),
                        {"cwd": tmp_path})
        for kind in ("evaluate", "predict") for model in ("ck.npz", "m.npz")})
    for result in runs.values():
        assert_ok(result)
    for kind in ("evaluate", "predict"):
        from_checkpoint = json.loads(runs[kind, "ck.npz"].stdout)
        from_model = json.loads(runs[kind, "m.npz"].stdout)
        if kind == "evaluate":
            assert from_checkpoint["accuracy"] == from_model["accuracy"]
        else:
            assert [r["probabilities"] for r in from_checkpoint] == \
                [r["probabilities"] for r in from_model]


def test_patience_without_validation_watches_the_training_loss_not_the_test_set(small_dir,
                                                                                tmp_path):
    metrics = tmp_path / "m.jsonl"
    result = run_cli(*small_train(small_dir, "--epochs", 4, "--patience", 1, "--quiet",
                                  "--metrics", metrics), cwd=tmp_path)
    assert_ok(result)
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert all(r["val_accuracy"] is None and r["test_accuracy"] is not None for r in records)
    assert "test accuracy:" in result.stdout
