"""Which engine trains a run, and that the user is told why: chooser, CLI, estimator, info.

The CUDA cases run on a stand-in for CuPy: a module with NumPy's functions and a
`cuda` namespace that answers like one device. The generic engine runs on it as it
would on CuPy, so `--device cuda --optimizer adam` can be tried end to end here.
"""

from __future__ import annotations

import inspect
import json
import types

import numpy as np
import pytest
from helpers_data import blobs, synthetic_mnist, write_mnist_dir
from helpers_engines import CPU_FAST_ENGINE, CPU_FAST_LINE, LAYERED_DECLINES
from test_cli import assert_ok, run_cli

import mnist_xp
from mnist_xp import backend as backend_module
from mnist_xp.backend import Backend, get_backend
from mnist_xp.cli import main
from mnist_xp.model import Architecture, init_params
from mnist_xp.optim import make_optimizer
from mnist_xp.training import TrainConfig, TrainingHooks, train
from mnist_xp.training.engines import (
    CompiledEngine,
    CudaEngine,
    Engine,
    EngineSetup,
    GenericEngine,
    NumpyEngine,
    NumpyLayersEngine,
    choose_engine,
)

CPU = get_backend("cpu")


def cuda_standin():
    """A module posing as CuPy: NumPy's functions, and one device named 'CPU stand-in'."""
    xp = types.ModuleType("cupy_standin")
    xp.__dict__.update({k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
    xp.__version__ = "stand-in"

    class Device:
        def __init__(self, index=0):
            self.index = index

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def synchronize(self):
            pass

    runtime = types.SimpleNamespace(
        getDeviceProperties=lambda i: {"name": "CPU stand-in", "totalGlobalMem": 1 << 30},
        getDeviceCount=lambda: 1, runtimeGetVersion=lambda: 0, driverGetVersion=lambda: 0)
    xp.cuda = types.SimpleNamespace(Device=Device, runtime=runtime)
    return xp


def setup_for(backend, optimizer="sgd", label_smoothing=0.0, momentum=0.9, n_outputs=4):
    x, y = blobs()
    arch = Architecture(36, 8, n_outputs)
    params = {k: backend.asarray(v)
              for k, v in init_params(arch, np.float32, np.random.default_rng(0)).items()}
    opt = make_optimizer(optimizer, 0.1, momentum=momentum)
    return EngineSetup(params, arch, opt, backend.asarray(x), backend.asarray(y), backend,
                       label_smoothing=label_smoothing)


def test_every_engine_implements_the_whole_contract():
    for cls in (GenericEngine, NumpyEngine, NumpyLayersEngine, CompiledEngine, CudaEngine):
        assert issubclass(cls, Engine) and not inspect.isabstract(cls), cls
        assert cls.name and cls.covers


def test_the_numpy_engine_trains_what_it_covers(numpy_engine):
    engine, choice = choose_engine(setup_for(CPU))
    assert isinstance(engine, NumpyEngine)
    assert (choice.name, choice.reason, str(choice)) == (
        "numpy", "MNIST_XP_ENGINE=numpy", "NumPy fast path (MNIST_XP_ENGINE=numpy)")


@pytest.mark.parametrize("optimizer, smoothing, reason", [
    ("nesterov", 0.0, "nesterov has no NumPy fast path yet"),
    ("adam", 0.0, "adam has no NumPy fast path yet"),
    ("adamw", 0.0, "adamw has no NumPy fast path yet"),
    ("sgd", 0.1, "label smoothing has no NumPy fast path yet"),
])
def test_what_the_numpy_engine_does_not_cover_runs_generic_with_the_reason(
        optimizer, smoothing, reason, numpy_engine):
    engine, choice = choose_engine(setup_for(CPU, optimizer, smoothing))
    assert isinstance(engine, GenericEngine)
    reasons = f"MNIST_XP_ENGINE=numpy; {reason}; {LAYERED_DECLINES}"
    assert choice.name == "generic" and choice.reason == reasons
    assert str(choice) == f"generic array-API path ({reasons})"


def test_forcing_the_generic_engine_and_a_backend_without_a_fast_one_say_so():
    _, choice = choose_engine(setup_for(CPU), fast=False)
    assert (choice.name, choice.reason) == ("generic", "fast engines turned off")
    pytest.importorskip("array_api_strict")
    _, choice = choose_engine(setup_for(get_backend("array_api_strict")))
    assert choice.reason == "the array_api_strict backend has no fast engine"


@pytest.mark.parametrize("optimizer", ["sgd", "nesterov", "adam", "adamw"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_the_cuda_engine_covers_every_optimizer_and_label_smoothing(optimizer, smoothing):
    gpu = Backend("cupy", cuda_standin(), "cuda:0")
    assert CudaEngine.unsupported_reason(setup_for(gpu, optimizer, smoothing)) is None


WIDE = "the fused CUDA kernels do not cover 65 outputs (at most 64)"


def test_a_run_the_cuda_kernels_do_not_cover_runs_the_generic_engine_and_records_why():
    gpu = Backend("cupy", cuda_standin(), "cuda:0")
    setup = setup_for(gpu, "adam", n_outputs=65)  # more scores than a warp keeps in registers
    assert CudaEngine.unsupported_reason(setup) == WIDE
    seen = []
    history = train(setup.params, setup.x, setup.y, arch=setup.arch,
                    config=TrainConfig(epochs=2, batch_size=32, optimizer="adam",
                                       learning_rate=0.01),
                    backend=gpu, rng=np.random.default_rng(0),
                    hooks=TrainingHooks(on_engine=seen.append))
    assert [str(c) for c in seen] == [f"generic array-API path ({WIDE})"]
    assert all((r["engine"], r["engine_reason"]) == ("generic", WIDE) for r in history)
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_the_estimator_keeps_the_engine_choice(numpy_engine):
    x, y = blobs()
    clf = mnist_xp.MLPClassifier(8, epochs=1, batch_size=16, device="cpu", random_state=0)
    assert str(clf.fit(x, y).engine_) == "NumPy fast path (MNIST_XP_ENGINE=numpy)"
    clf.set_params(optimizer="nesterov").fit(x, y)
    assert clf.engine_.name == "generic"
    assert clf.engine_.reason == ("MNIST_XP_ENGINE=numpy; nesterov has no NumPy fast path yet; "
                                  + LAYERED_DECLINES)
    assert all(r["engine"] == "generic" for r in clf.history_)


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    return write_mnist_dir(tmp_path_factory.mktemp("engines") / "data",
                           synthetic_mnist(n_train=200, n_test=50, seed=1))


def test_train_header_names_the_engine_and_why(small_dir, tmp_path, numpy_engine):
    metrics = tmp_path / "m.jsonl"
    result = run_cli("train", "--data-dir", small_dir, "--device", "cpu", "--optimizer",
                     "nesterov", "--epochs", 2, "--quiet", "--metrics", metrics, cwd=tmp_path)
    assert_ok(result)
    lines = result.stdout.splitlines()
    why = f"MNIST_XP_ENGINE=numpy; nesterov has no NumPy fast path yet; {LAYERED_DECLINES}"
    assert f"engine: generic array-API path ({why})" in lines
    assert lines.index(next(x for x in lines if x.startswith("engine:"))) == 3  # after model:
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [(r["engine"], r["engine_reason"]) for r in records] == \
        [("generic", why)] * 2


def test_train_header_names_the_fast_engine(small_dir, tmp_path):
    result = run_cli("train", "--data-dir", small_dir, "--device", "cpu", "--epochs", 1,
                     "--quiet", cwd=tmp_path)
    assert_ok(result)
    assert any(line.startswith("engine: " + CPU_FAST_LINE) for line in result.stdout.splitlines())


def test_train_on_cuda_says_why_the_fused_kernels_do_not_take_a_run(
        small_dir, tmp_path, monkeypatch, capsys):
    # the CLI in-process, with CUDA "available" through the stand-in; no option of the
    # command line leaves the fused kernels, so the engine is told to decline
    monkeypatch.setattr(backend_module, "cuda_status", lambda index=0: (cuda_standin(), ""))
    monkeypatch.setattr(CudaEngine, "unsupported_reason",
                        classmethod(lambda cls, setup: f"{setup.optimizer.name} declined here"))
    status = main(["train", "--data-dir", str(small_dir), "--device", "cuda", "--optimizer",
                   "adam", "--learning-rate", "0.01", "--epochs", "1", "--quiet"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "device: cuda:0 (CPU stand-in, CuPy stand-in)" in out
    assert "engine: generic array-API path (adam declined here)" in out


def test_info_lists_the_engines(tmp_path):
    result = run_cli("info", "--json", cwd=tmp_path)
    assert_ok(result)
    info = json.loads(result.stdout)
    assert info["engines"]["cpu"].startswith(CompiledEngine.covers)
    assert "NumPy fast path" in info["engines"]["cpu"]
    assert "generic array-API path" in info["engines"]["cpu"]
    text = run_cli("info", cwd=tmp_path).stdout
    assert "engine on cpu: compiled engine (C, OpenMP, OpenBLAS)" in text


def test_the_command_line_never_imports_scikit_learn(tmp_path):
    # importing it costs ~0.7 s, five times the CLI's start-up; plain arrays skip it
    import subprocess
    import sys

    code = ("import sys; from mnist_xp.cli import main; "
            "main(['train', '--data', 'bundled', '--no-download', '--device', 'cpu', "
            "'--epochs', '1', '--quiet', '--save', 'm.npz']); "
            "main(['predict', '--model', 'm.npz', '--device', 'cpu', 'x.npy']); "
            "print('sklearn' in sys.modules)")
    np.save(tmp_path / "x.npy", np.zeros((2, 28, 28), np.uint8))
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "False"
