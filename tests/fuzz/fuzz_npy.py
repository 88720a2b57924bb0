"""Fuzz harness: the array reader behind ``mnist-xp predict`` (``.npy`` files).

Feeds the bytes to `mnist_xp.fileio.read_npy` and to predict's own
`_read_images` (which adds the dtype, shape and range checks). Invariants: every
failure is a `DataError` naming the file on one line; an array that is read is the
one ``np.load(allow_pickle=False)`` reads from the same bytes; rows predict accepts
are (n, 784) uint8 or floats in [0, 1].
"""

from __future__ import annotations

import io
import warnings

import numpy as np

from mnist_xp.cli.predict import _read_images
from mnist_xp.errors import DataError
from mnist_xp.fileio import read_npy

from ._support import check_message, quiet_stderr, scratch


def one_input(data: bytes) -> None:
    """Read `data` as a ``.npy`` file, as the library and as predict do; raise only on a bug."""
    path = scratch(data, "input.npy")
    try:
        with quiet_stderr():
            array = read_npy(path)
    except DataError as exc:
        check_message(exc, path)
        array = None
    if array is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NumPy's note on headers from Python 2
            expected = np.load(io.BytesIO(data), allow_pickle=False)
        assert array.dtype == expected.dtype and array.shape == expected.shape
        assert _same_fields(array, expected)
    try:
        with quiet_stderr():
            rows = _read_images(path, 784)
    except DataError as exc:
        check_message(exc, path)
        return
    assert array is not None, "predict read rows the library refused"
    assert rows.ndim == 2 and rows.shape[1] == 784 and rows.shape[0] >= 1
    assert rows.dtype == np.uint8 or (rows.dtype.kind == "f" and 0 <= rows.min() <= rows.max() <= 1)


def _same_fields(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal bytes field by field: np.load leaves a structured dtype's padding uninitialised."""
    if a.dtype.names is None:
        return a.tobytes() == b.tobytes()
    return all(_same_fields(a[name], b[name]) for name in a.dtype.names)


def _npy(array: np.ndarray, version=None) -> bytes:
    """`array` as .npy bytes."""
    f = io.BytesIO()
    np.lib.format.write_array(f, array, version=version, allow_pickle=False)
    return f.getvalue()


def seeds() -> list[bytes]:
    """Small valid arrays of the shapes and dtypes predict takes, and near misses."""
    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 13:15] = 255
    out = [
        _npy(digit), _npy(digit[None]), _npy(digit.reshape(1, 784)),
        _npy(digit.astype(np.float32) / 255), _npy(np.asfortranarray(digit)),
        _npy(digit, version=(2, 0)), _npy(np.arange(5, dtype=">i4")),
        _npy(np.zeros((0, 28, 28), np.uint8)), _npy(np.array("text")),
        _npy(np.zeros(3, [("a", "<u2"), ("b", "<f4")])),
    ]
    # Headers that are not the Python literal NumPy writes (issue 18's tokenerror.npy).
    head, length = out[0][:10], int.from_bytes(out[0][8:10], "little")
    text = b"{'descr': '<u1', 'fortran_order': False, 'shape': (28, 28), ["
    out.append(head + text.ljust(length - 1) + b"\n" + bytes(784))
    out.append(out[0][:8] + b"\x00\x00")
    return out
