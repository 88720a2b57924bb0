"""Assertions that check where an array lives as well as what it holds."""

from __future__ import annotations

import numpy as np

from mnist_xp.backend import Backend, to_numpy

# float32 rounding differs between BLAS builds and devices; float64 barely does.
TOLERANCE = {np.dtype(np.float32): (2e-5, 2e-6), np.dtype(np.float64): (1e-12, 1e-14)}


def assert_close(actual, desired, backend: Backend, *, rtol=None, atol=None):
    """Assert `actual` is an array of `backend`, with `desired`'s dtype, shape and values.

    `desired` is a NumPy array (or a scalar); tolerances default to the dtype's.
    """
    assert backend.owns(actual), f"expected a {backend.name} array on {backend.device}, got {type(actual)}"
    got = to_numpy(actual)
    want = np.asarray(desired)
    assert got.dtype == want.dtype, f"dtype {got.dtype} != expected {want.dtype}"
    assert got.shape == want.shape, f"shape {got.shape} != expected {want.shape}"
    if want.dtype.kind == "f":
        default_rtol, default_atol = TOLERANCE[want.dtype]
        np.testing.assert_allclose(got, want, rtol=rtol if rtol is not None else default_rtol,
                                   atol=atol if atol is not None else default_atol)
    else:
        np.testing.assert_array_equal(got, want)
