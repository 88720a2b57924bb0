"""Read and write IDX files, the small binary format MNIST is distributed in.

An IDX file is two zero bytes, a type code, the number of dimensions, one big-endian
uint32 per dimension, then the values in C order, big-endian. Files may be gzipped.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mnist_xp.fileio.writing import atomic_write
from mnist_xp.fileio.reading import open_user_file
from mnist_xp.errors import DataError

__all__ = ["read_idx", "write_idx", "idx_header"]

_GZIP_MAGIC = b"\x1f\x8b"

# Type code -> dtype as stored on disk (always big-endian).
_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_TYPE_CODES = {(dtype.kind, dtype.itemsize): code for code, dtype in _DTYPES.items()}

# Deflate cannot expand data more than ~1032:1, so a header declaring more than this
# many bytes per compressed byte is corrupt (or hostile), whatever the rest holds.
_MAX_GZIP_RATIO = 1100

# Reads happen in pieces of this size, so a gzip bomb never costs more than one piece
# beyond the size the header declares.
_CHUNK = 1 << 20

# Trailing data after the declared payload is counted up to this many bytes, then the
# file is refused without inflating the rest: a small .gz can expand ~1000-fold, and
# counting every byte of a bomb would take minutes. The exact count is reported when
# there is less than this.
_MAX_TRAILING = 64 << 20


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, raw or gzip-compressed, into a NumPy array.

    Gzip is recognised by its magic bytes (1f 8b), not by the file name. The whole
    file is validated: a header that does not fit the payload, a truncated or corrupt
    file, or trailing data is refused, and a header declaring more data than the file
    could hold is refused before any memory is allocated for it. Trailing data is
    inflated only up to 64 MiB, so a gzip bomb is refused quickly. Only regular files
    are opened: a named pipe or device is refused without blocking.

    Parameters
    ----------
    path : str or os.PathLike
        The IDX file.

    Returns
    -------
    numpy.ndarray
        Array of the shape the header declares (``ndim >= 1``), in native byte order,
        of dtype uint8, int8, int16, int32, float32 or float64 (type codes 0x08, 0x09,
        0x0B, 0x0C, 0x0D, 0x0E).

    Raises
    ------
    DataError
        If the file is missing, a directory, not a regular file, unreadable, empty,
        or not valid IDX data. The message is one line that starts with the path.
    """
    path = Path(path)
    with _open(path) as f:
        try:
            is_gzip = f.read(2) == _GZIP_MAGIC
            f.seek(0)
            if is_gzip:
                return _read_gzip(f, path)
            return _read_raw(f, path)
        except OSError as e:  # an I/O error part-way (EIO, a vanished network mount)
            raise DataError(f"{path}: cannot read ({e.strerror or e})") from e


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write an array as an IDX file, gzip-compressed when the name ends in ``.gz``.

    The file is written to a temporary sibling and renamed into place, so an
    interrupted write leaves any previous file intact. Gzip output has a zero
    timestamp and no stored name, so the same array always gives the same bytes.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    array : array_like, shape (d0, ..., dk), k >= 0
        Values of dtype uint8, int8, int16, int32, float32 or float64, in either
        byte order; they are stored big-endian.

    Raises
    ------
    ValueError
        If the dtype is not one of those six, or the array is 0-dimensional.
    """
    array = np.asarray(array)
    header = idx_header(array)
    data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder(">"))
    with atomic_write(path, "wb") as f:
        if str(path).lower().endswith(".gz"):
            with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0) as gz:
                gz.write(header)
                gz.write(data.data)
        else:
            f.write(header)
            f.write(data.data)


def idx_header(array: np.ndarray) -> bytes:
    """The IDX header for `array`; ValueError for a dtype or shape IDX cannot hold."""
    code = _TYPE_CODES.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise ValueError(
            f"IDX cannot store dtype {array.dtype}; "
            "use uint8, int8, int16, int32, float32 or float64"
        )
    if array.ndim == 0:
        raise ValueError("IDX cannot store a 0-dimensional array; reshape it to (1,)")
    return struct.pack(f">2xBB{array.ndim}I", code, array.ndim, *array.shape)


def _open(path: Path) -> BinaryIO:
    """Open `path` for binary reading (a regular file only); failures become DataError."""
    # A FIFO would block the open (and then the reads) forever, and a device has no
    # size to check the header against.
    return open_user_file(path, DataError, "IDX file")


def _read_raw(f: BinaryIO, path: Path) -> np.ndarray:
    """Read an uncompressed IDX file, checking its size against the header first."""
    dtype, dims = _read_header(f, path)
    declared = math.prod(dims) * dtype.itemsize
    held = os.fstat(f.fileno()).st_size - f.tell()
    if declared != held:
        if math.prod(_swapped(dims)) * dtype.itemsize == held:
            raise _byte_order_error(path, dims)
        raise _size_error(path, declared, held)
    return _read_payload(f, path, dtype, dims)


def _read_gzip(f: BinaryIO, path: Path) -> np.ndarray:
    """Read a gzip-compressed IDX file; any gzip failure becomes 'corrupt gzip data'."""
    compressed_size = os.fstat(f.fileno()).st_size
    try:
        with gzip.GzipFile(fileobj=f, mode="rb") as gz:
            dtype, dims = _read_header(gz, path)
            declared = math.prod(dims) * dtype.itemsize
            if declared > _MAX_GZIP_RATIO * compressed_size:
                swapped = math.prod(_swapped(dims)) * dtype.itemsize
                if swapped <= _MAX_GZIP_RATIO * compressed_size:
                    raise _byte_order_error(path, dims)
                raise DataError(
                    f"{path}: header declares {declared:,} bytes of data, more than a "
                    f"{compressed_size:,}-byte gzip file can hold; the header is corrupt"
                )
            array = _read_payload(gz, path, dtype, dims)
            trailing = _count_rest(gz)
    except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as e:
        raise DataError(
            f"{path}: corrupt gzip data ({e}); download or copy the file again"
        ) from e
    if trailing:
        raise _size_error(path, declared, declared + trailing)
    return array


def _read_header(stream: BinaryIO, path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    """Parse and check the magic number and dimensions; return (disk dtype, shape)."""
    head = stream.read(4)
    if not head:
        raise DataError(f"{path}: empty file; expected an IDX file (raw or gzip)")
    if len(head) < 4:
        raise DataError(
            f"{path}: only {len(head)} bytes, too short for an IDX header (at least 4)"
        )
    if head[:2] != b"\0\0" and head[2:] == b"\0\0" and head[1] in _DTYPES:
        raise DataError(
            f"{path}: wrong byte order: the header (0x{head.hex()}) is stored "
            "little-endian; IDX is big-endian, so rewrite the file with big-endian "
            "numbers (mnist_xp.write_idx does)")
    if head[:2] != b"\0\0":
        raise DataError(
            f"{path}: bad magic number 0x{head.hex()} (an IDX file starts with two "
            "zero bytes); not an IDX file"
        )
    code, ndim = head[2], head[3]
    if code not in _DTYPES:
        raise DataError(
            f"{path}: unknown IDX type code 0x{code:02x} "
            "(expected 0x08, 0x09, 0x0b, 0x0c, 0x0d or 0x0e); not an IDX file"
        )
    if ndim == 0:
        raise DataError(f"{path}: header declares 0 dimensions (at least 1 needed)")
    dim_bytes = stream.read(4 * ndim)
    if len(dim_bytes) < 4 * ndim:
        raise DataError(
            f"{path}: truncated header: {ndim} dimensions need {4 * ndim} bytes, "
            f"file holds {len(dim_bytes)}"
        )
    return _DTYPES[code], struct.unpack(f">{ndim}I", dim_bytes)


def _read_payload(
    stream: BinaryIO, path: Path, dtype: np.dtype, dims: tuple[int, ...]
) -> np.ndarray:
    """Read exactly the declared values, chunk by chunk, into a native-order array."""
    # With a side of 0 the size checks pass, but NumPy still refuses a shape whose
    # other sides multiply past its index range (e.g. 0x2x2^31x2^31); that is data.
    if math.prod(d for d in dims if d) * dtype.itemsize > np.iinfo(np.intp).max:
        raise DataError(
            f"{path}: header declares dimensions {'x'.join(map(str, dims))}, too large "
            "for any array; the header is corrupt"
        )
    size = math.prod(dims) * dtype.itemsize
    try:
        # Callers have checked `size` against what the file can hold; this catches a
        # genuine file larger than the memory this process may use.
        buffer = np.empty(size, dtype=np.uint8)
    except MemoryError as e:
        raise DataError(
            f"{path}: too large to read into the memory available (the header "
            f"declares {size:,} bytes of data)") from e
    view = memoryview(buffer)
    filled = 0
    while filled < len(view):
        n = stream.readinto(view[filled : filled + _CHUNK])
        if not n:
            raise _size_error(path, len(view), filled)
        filled += n
    return _to_native(buffer.view(dtype).reshape(dims))


def _count_rest(stream: BinaryIO) -> int:
    """Number of bytes left in `stream`, read one chunk at a time.

    Stops once more than `_MAX_TRAILING` bytes are seen (a gzip bomb), returning a
    count above that limit without reading further.
    """
    total = 0
    while total <= _MAX_TRAILING and (chunk := stream.read(_CHUNK)):
        total += len(chunk)
    return total


def _to_native(array: np.ndarray) -> np.ndarray:
    """The same values in the machine's byte order, swapped in place (no copy)."""
    if array.dtype.isnative:
        return array
    return array.byteswap(inplace=True).view(array.dtype.newbyteorder("="))


def _swapped(dims: tuple[int, ...]) -> tuple[int, ...]:
    """The dimensions as they read when the header was written little-endian."""
    return tuple(int.from_bytes(d.to_bytes(4, "big"), "little") for d in dims)


def _byte_order_error(path: Path, dims: tuple[int, ...]) -> DataError:
    """DataError for a header whose dimensions make sense only read little-endian."""
    shown = "x".join(map(str, _swapped(dims)))
    return DataError(
        f"{path}: wrong byte order: the header's dimensions are stored little-endian "
        f"({shown} when read so); IDX is big-endian, so rewrite the file with big-endian "
        "dimensions (mnist_xp.write_idx does)"
    )


def _size_error(path: Path, declared: int, held: int) -> DataError:
    """DataError for a payload shorter or longer than the header declares."""
    if held < declared:
        return DataError(
            f"{path}: truncated: header declares {declared:,} bytes of data, "
            f"file holds {held:,}; the file is incomplete, fetch it again"
        )
    extra = held - declared
    amount = f"{extra:,}" if extra <= _MAX_TRAILING else f"more than {_MAX_TRAILING:,}"
    return DataError(
        f"{path}: {amount} bytes of trailing data after the {declared:,} "
        "bytes the header declares; not a valid IDX file"
    )
