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
