"""Property-based tests of the IDX reader and writer (hypothesis).

- Round trip: any array of the six IDX dtypes and a small shape, written raw or
  gzipped, reads back with the same shape, dtype and bytes (NaNs and -0.0 included).
- Hostile bytes: `read_idx` on arbitrary bytes -- raw, gzipped, or a valid file with
  bytes flipped, cut or appended -- either returns an array consistent with the file
  or raises `DataError`, the one exception it documents; never anything else.

Derandomized and without an example database, so every run (and CI) tries the same
examples; sized to run in a few seconds.
"""

from __future__ import annotations

import gzip
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mnist_xp.data import read_idx, write_idx
from mnist_xp.errors import DataError

DTYPES = ["uint8", "int8", ">i2", "<i2", ">i4", "<i4", ">f4", "<f4", ">f8", "<f8"]
TYPE_CODES = [0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]
ITEMSIZE = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}



def examples(n: int) -> settings:
    """Reproducible settings trying `n` examples."""
    return settings(deadline=None, max_examples=n, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def workdir():
    """One scratch directory for the module (hypothesis reruns a test many times)."""
    with tempfile.TemporaryDirectory(prefix="idx-properties-") as d:
        yield Path(d)


arrays = hnp.arrays(
    dtype=st.sampled_from(DTYPES).map(np.dtype),
    shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5),
)


@examples(150)
@given(array=arrays, compress=st.booleans())
def test_write_then_read_gives_the_same_array(workdir, array, compress):
    path = workdir / ("a.idx.gz" if compress else "a.idx")
    write_idx(path, array)
    result = read_idx(path)
    assert result.shape == array.shape
    assert result.dtype == array.dtype.newbyteorder("=")
    assert result.dtype.isnative
    # Bytes, not values: NaN payloads and -0.0 must survive too.
    assert result.tobytes() == array.astype(result.dtype).tobytes()


def _read(workdir: Path, content: bytes):
    """read_idx on `content`; DataError passes, any other exception fails the test."""
    path = workdir / "hostile"
    path.write_bytes(content)
    try:
        result = read_idx(path)
    except DataError as exc:
        message = str(exc)
        assert message.startswith(f"{path}: ") and "\n" not in message, message
        return None
    assert isinstance(result, np.ndarray) and result.ndim >= 1
    return result


@examples(300)
@given(content=st.binary(max_size=64))
def test_random_bytes_give_an_array_or_a_data_error(workdir, content):
    result = _read(workdir, content)
    if result is not None and content[:2] != b"\x1f\x8b":
        # A raw file is accepted only when the header accounts for every byte.
        assert 4 + 4 * result.ndim + result.nbytes == len(content)


@st.composite
def idx_like(draw):
    """Mostly well-formed IDX bytes: a plausible header and a payload of about the
    right size, so the checks beyond the magic number are reached too."""
    code = draw(st.sampled_from(TYPE_CODES + [0x00, 0x0A, 0xFF]))
    dims = draw(st.lists(st.integers(0, 6) | st.sampled_from([2**31, 2**32 - 1]),
                         min_size=0, max_size=4))
    size = ITEMSIZE.get(code, 1) * int(np.prod(dims, dtype=object) if dims else 0)
    size = min(size, 512) + draw(st.integers(-3, 3))
    payload = draw(st.binary(min_size=max(size, 0), max_size=max(size, 0)))
    return struct.pack(f">2xBB{len(dims)}I", code, len(dims), *dims) + payload


@examples(200)
@given(content=idx_like())
def test_idx_like_bytes_give_an_array_or_a_data_error(workdir, content):
    _read(workdir, content)


@examples(200)
@given(content=st.binary(max_size=64) | idx_like())
def test_gzipped_random_bytes_give_an_array_or_a_data_error(workdir, content):
    _read(workdir, gzip.compress(content, mtime=0))


@st.composite
def damaged_gzip(draw):
    """A valid gzipped IDX file with bytes flipped, cut off or appended."""
    array = draw(hnp.arrays(np.uint8, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6)))
    header = struct.pack(f">2xBB{array.ndim}I", 0x08, array.ndim, *array.shape)
    data = bytearray(gzip.compress(header + array.tobytes(), mtime=0))
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] ^= draw(st.integers(1, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) + draw(st.binary(max_size=8))


@examples(200)
@given(content=damaged_gzip())
def test_damaged_gzip_gives_an_array_or_a_data_error(workdir, content):
    assume(content)  # the empty file is covered above
    _read(workdir, content)
