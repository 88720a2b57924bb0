"""IDX reading and writing: round trips, the exact byte layout, and every refusal."""

from __future__ import annotations

import gzip
import os
import re
import struct
import tracemalloc
import zlib

import numpy as np
import pytest

from mnist_xp.data import read_idx, write_idx
from mnist_xp.errors import DataError

DTYPES = ["uint8", "int8", "int16", "int32", "float32", "float64"]
SHAPES = [(7,), (3, 5), (2, 28, 28), (0, 4), (1, 2, 3, 4)]


def sample(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Values spanning the dtype's range, so a byte-order slip changes them."""
    rng = np.random.default_rng(0)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return (rng.standard_normal(shape) * 1e3).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


def idx_bytes(code: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    """An IDX file built by hand, independent of write_idx."""
    return struct.pack(f">2xBB{len(dims)}I", code, len(dims), *dims) + payload


def assert_data_error(path, pattern: str) -> str:
    """read_idx(path) raises a one-line DataError starting with the path and matching."""
    with pytest.raises(DataError) as info:
        read_idx(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message
    assert re.search(pattern, message), message
    return message


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip(tmp_path, dtype, shape, suffix):
    array = sample(dtype, shape)
    path = tmp_path / f"a.idx{suffix}"
    write_idx(path, array)
    result = read_idx(path)
    assert result.dtype == np.dtype(dtype)
    assert result.dtype.isnative
    assert result.shape == shape
    np.testing.assert_array_equal(result, array)


@pytest.mark.parametrize("dtype", [d for d in DTYPES if np.dtype(d).itemsize > 1])
@pytest.mark.parametrize("order", ["<", ">"])
def test_write_accepts_either_byte_order(tmp_path, dtype, order):
    array = sample(dtype, (4, 3))
    write_idx(tmp_path / "a", array.astype(np.dtype(dtype).newbyteorder(order)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), array)


def test_write_lays_out_header_and_big_endian_values(tmp_path):
    write_idx(tmp_path / "a", np.array([[1, -2, 258]], dtype="<i2"))
    assert (tmp_path / "a").read_bytes() == (
        b"\x00\x00\x0b\x02" b"\x00\x00\x00\x01" b"\x00\x00\x00\x03"
        b"\x00\x01" b"\xff\xfe" b"\x01\x02"
    )


def test_read_hand_built_file(tmp_path):
    (tmp_path / "a").write_bytes(idx_bytes(0x0C, (2,), b"\x00\x00\x01\x00\xff\xff\xff\xfd"))
    result = read_idx(str(tmp_path / "a"))
    assert result.dtype == np.int32
    np.testing.assert_array_equal(result, [256, -3])


def test_gzip_is_detected_by_magic_not_by_name(tmp_path):
    content = idx_bytes(0x08, (3,), b"\x01\x02\x03")
    (tmp_path / "compressed.idx").write_bytes(gzip.compress(content))
    (tmp_path / "plain.gz").write_bytes(content)
    np.testing.assert_array_equal(read_idx(tmp_path / "compressed.idx"), [1, 2, 3])
    np.testing.assert_array_equal(read_idx(tmp_path / "plain.gz"), [1, 2, 3])


def test_write_gz_is_gzip_and_reproducible(tmp_path):
    array = sample("uint8", (10, 28, 28))
    write_idx(tmp_path / "a.gz", array)
    first = (tmp_path / "a.gz").read_bytes()
    assert first[:2] == b"\x1f\x8b"
    assert first[4:8] == b"\0\0\0\0"  # gzip mtime field
    write_idx(tmp_path / "b.gz", array)
    assert (tmp_path / "b.gz").read_bytes() == first


def test_write_replaces_atomically_and_leaves_no_temp_files(tmp_path):
    write_idx(tmp_path / "a.gz", sample("uint8", (3,)))
    write_idx(tmp_path / "a.gz", sample("int32", (2, 2)))
    assert os.listdir(tmp_path) == ["a.gz"]
    assert read_idx(tmp_path / "a.gz").dtype == np.int32


@pytest.mark.parametrize("dtype", ["bool", "int64", "uint16", "float16", "complex64", "U3"])
def test_write_rejects_unsupported_dtype(tmp_path, dtype):
    with pytest.raises(ValueError, match=re.escape(str(np.dtype(dtype)))):
        write_idx(tmp_path / "a", np.zeros(3, dtype=dtype))
    assert not (tmp_path / "a").exists()


def test_write_rejects_0d_array(tmp_path):
    with pytest.raises(ValueError, match="0-dimensional"):
        write_idx(tmp_path / "a", np.uint8(3))


# (content, pattern the message must match); each is tried raw and gzipped.
BAD_CONTENTS = {
    "empty": (b"", "empty"),
    "short header": (b"\0\0\x08", "too short for an IDX header"),
    "wrong magic": (b"\x01\x00\x08\x01\0\0\0\x01\x05", "bad magic number 0x01000801"),
    "unknown type code": (idx_bytes(0x0A, (1,), b"\x05"), "unknown IDX type code 0x0a"),
    "ndim 0": (b"\0\0\x08\x00", "0 dimensions"),
    "truncated dims": (b"\0\0\x08\x03\0\0\0\x01\0\0", "truncated header: 3 dimensions need 12 bytes, file holds 6"),
    "payload short": (idx_bytes(0x08, (2, 5), bytes(9)), "truncated: header declares 10 bytes of data, file holds 9"),
    "payload long": (idx_bytes(0x08, (2, 5), bytes(12)), "2 bytes of trailing data"),
    "itemsize counts": (idx_bytes(0x0C, (3,), bytes(11)), "truncated: header declares 12 bytes"),
}


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("case", BAD_CONTENTS)
def test_bad_content_is_refused(tmp_path, case, compress):
    content, pattern = BAD_CONTENTS[case]
    path = tmp_path / "bad-idx"
    path.write_bytes(gzip.compress(content) if compress else content)
    assert_data_error(path, pattern)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("dims", [(1000, 1000, 1000), (2**32 - 1,) * 3])
def test_huge_declared_size_is_refused_without_allocating(tmp_path, dims, compress):
    content = idx_bytes(0x0E, dims, bytes(64))
    path = tmp_path / "huge.gz"
    path.write_bytes(gzip.compress(content) if compress else content)
    tracemalloc.start()
    try:
        assert_data_error(path, "truncated|more than a")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_gzip_bomb_is_read_in_bounded_memory(tmp_path):
    # 16 declared bytes followed by 64 MiB of zeros, compressed to ~64 KiB.
    path = tmp_path / "bomb.gz"
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    with open(path, "wb") as f:
        f.write(compressor.compress(idx_bytes(0x08, (16,), bytes(16))))
        for _ in range(64):
            f.write(compressor.compress(zeros))
        f.write(compressor.flush())
    del zeros
    tracemalloc.start()
    try:
        assert_data_error(path, f"{64 << 20:,} bytes of trailing data")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def valid_gz() -> bytes:
    return gzip.compress(idx_bytes(0x08, (300,), bytes(range(256)) + bytes(44)), mtime=0)


CORRUPT_GZIP = {
    "bad crc": lambda data: data[:-8] + bytes(b ^ 0xFF for b in data[-8:-4]) + data[-4:],
    "bad deflate block": lambda data: data[:10] + b"\xff" * (len(data) - 10),
    "garbage after magic": lambda data: b"\x1f\x8b" + b"not gzip at all",
    "truncated stream": lambda data: data[: len(data) // 2],
    "missing trailer": lambda data: data[:-8],
}


@pytest.mark.parametrize("case", CORRUPT_GZIP)
def test_corrupt_gzip_is_refused(tmp_path, case):
    path = tmp_path / "a.gz"
    path.write_bytes(CORRUPT_GZIP[case](valid_gz()))
    assert_data_error(path, "corrupt gzip data")


def test_directory_is_refused(tmp_path):
    assert_data_error(tmp_path, "is a directory")


def test_missing_file_is_refused(tmp_path):
    assert_data_error(tmp_path / "nope.gz", "no such IDX file")


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="needs POSIX permissions and a non-root user (root can read anything)",
)
def test_unreadable_file_is_refused(tmp_path):
    path = tmp_path / "a.gz"
    write_idx(path, sample("uint8", (3,)))
    path.chmod(0)
    try:
        assert_data_error(path, "permission denied")
    finally:
        path.chmod(0o644)


def test_gzip_bomb_is_refused_after_reading_a_bounded_amount(tmp_path, monkeypatch):
    # The trailing data is counted up to a limit, then refused without inflating the
    # rest; a smaller limit here stands in for the real 64 MiB.
    from mnist_xp.data import idx as idx_module

    monkeypatch.setattr(idx_module, "_MAX_TRAILING", 1 << 20)
    path = tmp_path / "bomb.gz"
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    with open(path, "wb") as f:
        f.write(compressor.compress(idx_bytes(0x08, (16,), bytes(16))))
        f.writelines(compressor.compress(bytes(1 << 20)) for _ in range(64))
        f.write(compressor.flush())
    reads = []
    real_read = gzip.GzipFile.read

    def counting_read(self, size=-1):
        data = real_read(self, size)
        reads.append(len(data))
        return data

    monkeypatch.setattr(gzip.GzipFile, "read", counting_read)
    assert_data_error(path, f"more than {1 << 20:,} bytes of trailing data")
    assert sum(reads) < 4 << 20  # not the 64 MiB that follow


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_named_pipe_is_refused_without_blocking(tmp_path):
    path = tmp_path / "pipe.idx"
    os.mkfifo(path)  # nothing ever writes to it: opening it normally would block
    assert_data_error(path, "named pipe")


def test_sides_numpy_cannot_index_are_refused_even_with_a_zero_side(tmp_path):
    path = tmp_path / "a.idx"
    path.write_bytes(idx_bytes(0x08, (0, 2, 2**31, 2**31), b""))
    assert_data_error(path, "too large for any array")


@pytest.mark.parametrize("gz", [False, True])
def test_little_endian_dimensions_are_called_wrong_byte_order(tmp_path, gz):
    # a header written little-endian would otherwise read as ~10^25 bytes "truncated"
    import gzip
    import struct

    content = struct.pack("<2xBB3I", 0x08, 3, 50, 28, 28) + bytes(50 * 784)
    path = tmp_path / ("le.gz" if gz else "le.idx")
    path.write_bytes(gzip.compress(content) if gz else content)
    with pytest.raises(DataError) as info:
        read_idx(path)
    message = str(info.value)
    assert "wrong byte order" in message and "50x28x28" in message
    assert "truncated" not in message and "fetch it again" not in message


def test_a_wholly_little_endian_header_is_called_wrong_byte_order(tmp_path):
    import struct

    path = tmp_path / "le.idx"
    path.write_bytes(struct.pack("<iI", 0x0801, 10) + bytes(10))
    with pytest.raises(DataError, match="wrong byte order"):
        read_idx(path)
