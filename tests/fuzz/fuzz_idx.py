"""Fuzz harness: the IDX reader (`mnist_xp.data.read_idx`), raw and gzip-compressed.

Invariants: every failure is a `DataError` naming the file on one line; an array
that is read has the shape its header declares, one of IDX's dtypes in native byte
order, and survives a `write_idx` / `read_idx` round trip unchanged.
"""

from __future__ import annotations

import gzip

import numpy as np

from mnist_xp.data import read_idx, write_idx
from mnist_xp.errors import DataError

from ._support import check_message, quiet_stderr, scratch

_KINDS = {"u1", "i1", "i2", "i4", "f4", "f8"}


def one_input(data: bytes) -> None:
    """Read `data` as an IDX file; raise only on a bug."""
    path = scratch(data, "input.idx")
    try:
        with quiet_stderr():
            array = read_idx(path)
    except DataError as exc:
        check_message(exc, path)
        return
    assert array.dtype.isnative and f"{array.dtype.kind}{array.dtype.itemsize}" in _KINDS
    raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    assert array.shape == dims, (array.shape, dims)
    again = scratch(b"", "again.idx")
    write_idx(again, array)
    back = read_idx(again)
    assert back.dtype == array.dtype and back.shape == array.shape
    assert back.tobytes() == array.tobytes()


def seeds() -> list[bytes]:
    """Small valid IDX files of every type code, raw and gzipped, and near misses."""
    out = []
    rng = np.random.default_rng(0)
    for code, dtype in ((0x08, ">u1"), (0x09, ">i1"), (0x0B, ">i2"), (0x0C, ">i4"),
                        (0x0D, ">f4"), (0x0E, ">f8")):
        for shape in ((3,), (2, 4, 4), (1, 2, 2, 2)):
            values = (rng.random(shape) * 100).astype(dtype)
            blob = bytes([0, 0, code, len(shape)]) + b"".join(
                d.to_bytes(4, "big") for d in shape) + values.tobytes()
            out.append(blob)
    out += [gzip.compress(b, mtime=0) for b in out[::4]]
    out += [b"", b"\0\0\x08", b"\0\0\x08\x01\0\0\0\x05abc", b"\x1f\x8b\x08\0junk"]
    return out
