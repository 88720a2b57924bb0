"""The backend layer: device strings, CUDA detection and fallback, transfers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import types
import warnings

import numpy as np
import pytest

import mnist_xp.backend as backend_module
from mnist_xp.backend import (
    Backend,
    as_array_of,
    backend_name_of,
    cuda_status,
    get_backend,
    parse_device,
    to_numpy,
)
from mnist_xp.errors import DeviceError, DeviceFallbackWarning

from helpers_backend import assert_close


@pytest.mark.parametrize(
    "spec, expected",
    [("auto", ("auto", None)), ("cpu", ("cpu", None)), ("cuda", ("cuda", None)),
     ("cuda:0", ("cuda", 0)), ("cuda:3", ("cuda", 3)), (" CUDA:1 ", ("cuda", 1)),
     ("array_api_strict", ("array_api_strict", None))],
)
def test_parse_device_accepts_the_documented_forms(spec, expected):
    assert parse_device(spec) == expected


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cuda:", "cuda:-1", "cpu:0", "", "cuda0", None])
def test_parse_device_rejects_other_strings_listing_the_accepted_forms(spec):
    with pytest.raises(DeviceError, match="auto, cpu, cuda or cuda:N"):
        parse_device(spec)


def test_cpu_backend_is_numpy():
    b = get_backend("cpu")
    assert (b.name, b.xp, b.device, b.reason) == ("numpy", np, "cpu", "")
    assert get_backend(b) is b


# -- simulated CUDA failures -------------------------------------------------------------

def _fake_cupy(device_count=None, error=None):
    """A stand-in CuPy whose runtime reports `device_count` devices or raises `error`."""
    def get_device_count():
        if error is not None:
            raise error
        return device_count

    runtime = types.SimpleNamespace(getDeviceCount=get_device_count, memGetInfo=lambda: (1, 1))
    cuda = types.SimpleNamespace(runtime=runtime, Device=lambda i: _NullContext())
    return types.SimpleNamespace(cuda=cuda, ndarray=type("ndarray", (), {}))


class _NullContext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class CUDARuntimeError(RuntimeError):
    pass


def _cupy_missing():
    raise ModuleNotFoundError("No module named 'cupy'", name="cupy")


def _cupy_broken():
    raise ImportError("libcudart.so.12: cannot open shared object file")


@pytest.mark.parametrize(
    "importer, expected_reason",
    [
        (_cupy_missing, "CuPy is not installed (pip install 'mnist-xp[cuda12]'"),
        (_cupy_broken, "CuPy failed to import: ImportError: libcudart.so.12: cannot open"),
        (lambda: _fake_cupy(error=CUDARuntimeError(
            "cudaErrorNoDevice: no CUDA-capable device is detected")),
         "CUDA is not usable: CUDARuntimeError: cudaErrorNoDevice: no CUDA-capable device"),
        (lambda: _fake_cupy(device_count=0), "no CUDA device found"),
    ],
)
def test_unusable_cuda_falls_back_to_cpu_with_one_line_giving_the_real_reason(
        monkeypatch, importer, expected_reason):
    monkeypatch.setattr(backend_module, "_import_cupy", importer)
    lines = []
    b = get_backend("cuda", on_fallback=lines.append)
    assert b.name == "numpy" and b.device == "cpu"
    assert len(lines) == 1 and "\n" not in lines[0]
    assert expected_reason in lines[0]
    assert lines[0].startswith("cuda unavailable (") and lines[0].endswith("); using cpu")


def test_fallback_without_a_callback_is_a_warning(monkeypatch):
    monkeypatch.setattr(backend_module, "_import_cupy", _cupy_missing)
    with pytest.warns(DeviceFallbackWarning, match="CuPy is not installed"):
        assert get_backend("cuda:0").name == "numpy"


def test_require_turns_the_fallback_into_an_error(monkeypatch):
    monkeypatch.setattr(backend_module, "_import_cupy", _cupy_missing)
    with pytest.raises(DeviceError, match="'cuda' cannot be used: CuPy is not installed"):
        get_backend("cuda", require=True)


def test_auto_falls_back_quietly_but_keeps_the_reason(monkeypatch):
    monkeypatch.setattr(backend_module, "_import_cupy", _cupy_missing)
    lines = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        b = get_backend("auto", on_fallback=lines.append)
    assert b.name == "numpy" and lines == []
    assert "CuPy is not installed" in b.reason


def test_a_device_number_beyond_the_machine_is_named(monkeypatch):
    monkeypatch.setattr(backend_module, "_import_cupy", lambda: _fake_cupy(device_count=2))
    cupy, reason = cuda_status(5)
    assert cupy is None
    assert reason == "there is no CUDA device 5 (this machine has 2)"


# -- transfers on every backend ------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.float32, np.float64])
def test_asarray_and_to_numpy_round_trip_keeping_dtype(backend, dtype):
    host = np.arange(12, dtype=dtype).reshape(3, 4)
    dev = backend.asarray(host)
    assert backend.owns(dev)
    assert backend_name_of(dev) == backend.name
    back = backend.to_numpy(dev)
    assert isinstance(back, np.ndarray)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, host)


def test_asarray_converts_dtype_on_request(backend):
    dev = backend.asarray(np.arange(4, dtype=np.uint8), dtype=np.float32)
    assert_close(dev, np.arange(4, dtype=np.float32), backend)


def test_as_array_of_returns_results_in_the_callers_library(backend):
    host = np.ones(3, dtype=np.float32)
    on_device = backend.asarray(host)
    assert isinstance(as_array_of(on_device, host), np.ndarray)
    assert backend.owns(as_array_of(host, on_device))
    assert as_array_of(on_device, on_device) is on_device


def test_synchronize_and_describe_work(backend):
    backend.synchronize()
    assert backend.describe().startswith(backend.device)


def test_backend_name_of_unknown_objects_is_none():
    assert backend_name_of([1, 2]) is None
    assert backend_name_of(np.float32(1)) == "numpy"
    assert isinstance(to_numpy([1, 2]), np.ndarray)


# -- importing never pulls in CuPy ----------------------------------------------------------

def _run(code: str, extra_path: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (extra_path, env.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_import_mnist_xp_does_not_import_cupy(tmp_path):
    # A CuPy that records being imported: real or not, it must not be touched.
    fake = tmp_path / "cupy"
    fake.mkdir()
    (fake / "__init__.py").write_text(
        f"open({str(tmp_path / 'imported')!r}, 'w').close()\nraise ImportError('fake cupy')\n")
    result = _run("""
        import sys
        import mnist_xp
        from mnist_xp import MLPClassifier, load_mnist, save, load, get_backend
        get_backend("cpu")
        print("cupy" in sys.modules)
    """, extra_path=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
    assert not (tmp_path / "imported").exists()


def test_only_backend_module_imports_cupy():
    import pathlib

    import mnist_xp

    root = pathlib.Path(mnist_xp.__file__).parent
    importers = sorted(str(p.relative_to(root)) for p in root.rglob("*.py")
                       if "import cupy" in p.read_text())
    assert importers == ["backend.py"]


def test_backend_is_frozen():
    b = Backend("numpy", np, "cpu")
    with pytest.raises(AttributeError):
        b.name = "cupy"


def test_backends_pickle_as_their_device_string(backend):
    import pickle

    clone = pickle.loads(pickle.dumps(backend))
    assert clone == backend and clone.xp is backend.xp
