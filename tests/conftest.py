"""Shared fixtures: the `backend` fixture runs a test once per array backend.

Every backend is always listed, so one that this machine lacks shows up as a skip
with its reason rather than silently vanishing from the run.
"""

from __future__ import annotations

import pytest

from mnist_xp.backend import cuda_status, get_backend

BACKEND_NAMES = ("numpy", "array_api_strict", "cupy")


def make_backend(name: str):
    """The named backend, or a pytest skip saying why it is not available here."""
    if name == "numpy":
        return get_backend("cpu")
    if name == "array_api_strict":
        pytest.importorskip("array_api_strict", reason="array_api_strict is not installed")
        return get_backend("array_api_strict")
    cupy, reason = cuda_status(0)
    if cupy is None:
        pytest.skip(f"cupy backend: {reason}")
    return get_backend("cuda", require=True)


@pytest.fixture(
    params=[
        pytest.param("numpy"),
        pytest.param("array_api_strict"),
        pytest.param("cupy", marks=pytest.mark.gpu),
    ]
)
def backend(request):
    """Each backend in turn: NumPy, array_api_strict (the generic path), CuPy (GPU)."""
    return make_backend(request.param)


@pytest.fixture(params=[pytest.param("cupy", marks=pytest.mark.gpu)])
def cuda_backend(request):
    """The CuPy backend only (skipped with the reason where CUDA is unusable)."""
    return make_backend(request.param)


@pytest.fixture
def numpy_engine(monkeypatch):
    """The NumPy engine as the CPU fast engine (``MNIST_XP_ENGINE=numpy``), for its tests."""
    monkeypatch.setenv("MNIST_XP_ENGINE", "numpy")


def pytest_report_header(config):
    """Name the CPU engine these tests exercise (CI logs show it), or why it is not compiled."""
    from mnist_xp import _cengine

    ext, why = _cengine.load()
    if ext is None:
        return f"cpu engine: NumPy fast path ({why})"
    return (f"cpu engine: compiled ({_cengine.default_threads()} threads, "
            f"{ext.blas_config()})")
