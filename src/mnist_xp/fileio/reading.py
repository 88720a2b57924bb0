"""Reading files a user names, defensively: no hang, no unbounded allocation, no pickle.

Helpers for the readers of user-supplied files (IDX, ``.npy``, ``.npz`` models and
checkpoints, pictures):

- `open_regular` opens a path without blocking and refuses anything that is not a
  regular file, so a named pipe (FIFO), a device or a socket given as an input can
  never hang the command or stream forever.
- `read_npy_header` reads a ``.npy`` header and checks it against the bytes that
  actually follow it, so a 100-byte file declaring a terabyte array is refused before
  anything is allocated, and an object array (which would need unpickling) is refused
  before anything is read. Whatever NumPy's header parser raises on text that is
  not the Python literal it writes is one `NpyHeaderError`.
- `read_npy_stream` reads the array after such a checked header.

Callers turn the exceptions into their own one-line errors (`DataError`,
`ModelFileError`), each starting with the path, with `too_large` for a MemoryError;
`read_npy` does so itself for the ``.npy`` arrays that ``mnist-xp predict`` reads, and
`mnist_xp.fileio.archive.read_npz` for ``.npz`` archives.
"""

from __future__ import annotations

import io
import math
import os
import stat
import struct
import warnings
from typing import BinaryIO

import numpy as np

from ..errors import DataError, exception_line

__all__ = ["NotNpyError", "NotRegularFileError", "NpyHeaderError", "open_regular", "open_user_file",
           "read_npy", "read_npy_header", "read_npy_stream", "too_large"]

# O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer;
# on a regular file it changes nothing. Windows has neither flag nor FIFOs.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)

# The header-length field of each .npy version read here (little-endian).
_LENGTH_FIELDS = {(1, 0): struct.Struct("<H"), (2, 0): struct.Struct("<I")}

# NumPy refuses longer headers unless pickles are allowed (numpy.lib.format's
# _MAX_HEADER_SIZE); checked here before the header is read.
_MAX_HEADER = 10_000

# Array data is read in pieces of this size into the allocated array.
_CHUNK = 1 << 20


class NotRegularFileError(OSError):
    """The path names a FIFO, device or socket, not a file with a size."""


class NpyHeaderError(ValueError):
    """A ``.npy`` header that is unreadable, or that the data after it cannot satisfy."""


class NotNpyError(NpyHeaderError):
    """The data does not start with NumPy's ``.npy`` magic at all."""


def _kind(mode: int) -> str:
    """What a non-regular file is, for the error message."""
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """Open `path` for binary reading if it is a regular file (symlinks followed).

    Raises the usual `FileNotFoundError` / `PermissionError` / `OSError`, plus
    `IsADirectoryError` for a directory and `NotRegularFileError` (whose ``strerror``
    says what the path is) for a FIFO, device or socket. Opening never blocks.
    """
    fd = os.open(path, _OPEN_FLAGS)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(21, "is a directory", str(path))
        if not stat.S_ISREG(mode):
            raise NotRegularFileError(0, f"is {_kind(mode)}, not a regular file", str(path))
        if _OPEN_FLAGS & getattr(os, "O_NONBLOCK", 0) and hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)  # ordinary reads from here on
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def open_user_file(path: str | os.PathLike, error: type[Exception], kind: str) -> BinaryIO:
    """`open_regular`, with each failure turned into one `error` line naming `path` and `kind`."""
    a_kind = f"{'an' if kind[0] in 'aeiouAEIOU' or kind.startswith('IDX') else 'a'} {kind}"
    try:
        return open_regular(path)
    except FileNotFoundError:
        raise error(f"{path}: no such {kind}") from None
    except IsADirectoryError:
        raise error(f"{path}: is a directory, not {a_kind}") from None
    except NotRegularFileError as exc:
        raise error(f"{path}: {exc.strerror}; expected {a_kind}") from None
    except PermissionError:
        raise error(f"{path}: permission denied") from None
    except OSError as exc:
        raise error(f"{path}: cannot open ({exc.strerror or exc})") from None


def read_npy_header(stream: BinaryIO, available: int) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Read the header of a ``.npy`` stream and check it against `available` bytes.

    Parameters
    ----------
    stream : binary file-like
        Positioned at the start of the ``.npy`` data; left just after the header.
    available : int
        How many bytes the stream holds in all (header included). The header, and the
        array data it declares, must fit in them.

    Returns
    -------
    (shape, fortran_order, dtype)
        As ``numpy.lib.format`` reports them.

    Raises
    ------
    NpyHeaderError
        For every way the header can be bad: not ``.npy`` data, an unsupported format
        version, a header longer than the stream or than NumPy's 10,000-character
        limit, text that is not the Python literal NumPy writes (NumPy's parser then
        raises ``SyntaxError``, ``tokenize.TokenError``, ``TypeError``... which all
        become this), an object dtype (the data would be pickled; the message contains
        "pickled"), or more data declared than `available` allows.
    """
    fmt = np.lib.format
    magic = stream.read(fmt.MAGIC_LEN)
    if len(magic) < fmt.MAGIC_LEN or not magic.startswith(fmt.MAGIC_PREFIX):
        raise NotNpyError("not .npy data (no NumPy array header)")
    version = (magic[-2], magic[-1])
    if version not in _LENGTH_FIELDS:
        # 3.0 is only written for structured dtypes with non-latin-1 field names.
        raise NpyHeaderError(f"unsupported .npy format version {version[0]}.{version[1]}")
    field = _LENGTH_FIELDS[version]
    length_bytes = stream.read(field.size)
    if len(length_bytes) < field.size:
        raise NpyHeaderError("unreadable .npy header (the file ends inside it)")
    (length,) = field.unpack(length_bytes)
    used = fmt.MAGIC_LEN + field.size
    # Checked before reading: a version-2 length field can claim 4 GiB, and reading
    # that much would allocate it.
    if length > min(available - used, _MAX_HEADER):
        where = ("the file ends inside it" if length > available - used
                 else f"over NumPy's limit of {_MAX_HEADER:,} characters")
        raise NpyHeaderError(f"unreadable .npy header ({length:,} bytes long; {where})")
    text = stream.read(length)
    if len(text) < length:
        raise NpyHeaderError("unreadable .npy header (the file ends inside it)")
    try:
        with warnings.catch_warnings():
            # A header written by Python 2 parses after a warning, which would be a
            # stray line on stderr.
            warnings.simplefilter("ignore")
            reader = (fmt.read_array_header_1_0 if version == (1, 0)
                      else fmt.read_array_header_2_0)
            shape, fortran, dtype = reader(io.BytesIO(length_bytes + text))
    except Exception:  # noqa: BLE001 - NumPy's parser on untrusted text
        # ast.literal_eval and tokenize raise SyntaxError, IndentationError,
        # TokenError, TypeError, RecursionError, MemoryError... besides ValueError:
        # all of them mean "not a header NumPy wrote".
        # The parser's own words (a tokenizer's line numbers) would not help a user.
        raise NpyHeaderError("unreadable .npy header (not one NumPy wrote); re-save the array "
                             "with numpy.save") from None
    if dtype.hasobject:
        raise NpyHeaderError("holds pickled objects, which are never loaded")
    if dtype.subdtype is not None:
        # np.save folds a subarray dtype into the shape; a header with one is not its.
        raise NpyHeaderError(f"unreadable .npy header (subarray dtype {dtype})")
    if any(d < 0 for d in shape):
        raise NpyHeaderError(f"unreadable .npy header (negative dimension in shape {shape})")
    if math.prod(d for d in shape if d) * max(dtype.itemsize, 1) > np.iinfo(np.intp).max:
        # With a side of 0 (or a 0-byte dtype) the size check below passes, but NumPy
        # still refuses a shape whose other sides multiply past its index range.
        raise NpyHeaderError(f"unreadable .npy header (shape {shape} is too large for "
                             "any array)")
    needed = math.prod(shape) * dtype.itemsize
    held = available - used - length
    if needed > held:
        raise NpyHeaderError(
            f"header declares {needed:,} bytes of array data but only {max(held, 0):,} "
            "follow; the file is truncated or corrupt")
    return shape, fortran, dtype


def read_npy_stream(stream: BinaryIO, available: int) -> np.ndarray:
    """The array of a ``.npy`` stream, its header checked first; never unpickles.

    Parameters
    ----------
    stream : binary file-like
        Positioned at the start of the ``.npy`` data.
    available : int
        How many bytes the stream holds from there (see `read_npy_header`).

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    NpyHeaderError
        As `read_npy_header`, or the data ends before the header's shape is filled.
    MemoryError
        The array the header declares (and the stream holds) does not fit in memory;
        callers report it as too large, naming the file.
    """
    shape, fortran, dtype = read_npy_header(stream, available)
    size = math.prod(shape) * dtype.itemsize
    buffer = np.empty(size, np.uint8)
    view = memoryview(buffer)
    filled = 0
    while filled < size:
        n = stream.readinto(view[filled:filled + _CHUNK])
        if not n:
            raise NpyHeaderError(f"header declares {size:,} bytes of array data but only "
                                 f"{filled:,} follow; the file is truncated or corrupt")
        filled += n
    order = "F" if fortran else "C"
    if not size:  # no data, yet maybe elements (a 0-byte dtype such as '<U0')
        return np.ndarray(shape, dtype, order=order)  # np.empty would make <U0 <U1
    return buffer.view(dtype).reshape(shape, order=order)


def too_large(exc: MemoryError) -> str:
    """The one-line reason for a MemoryError met while reading a file."""
    detail = exception_line(exc)
    return ("too large to read into the memory available"
            + (f" ({detail})" if detail != "MemoryError" else ""))


def read_npy(path: str | os.PathLike) -> np.ndarray:
    """Read a ``.npy`` array a user named, safely; every failure is a one-line DataError.

    Unlike ``np.load`` it reads only ``.npy`` data (never a pickle), refuses object
    arrays without unpickling them, and checks the declared size against the file
    before allocating (``np.load`` would allocate what a corrupt header claims).

    Raises
    ------
    DataError
        Missing, unreadable, not a regular file, not ``.npy`` data, a header the file
        cannot satisfy or NumPy cannot parse, or an array too large for the memory
        available; the message starts with the path.
    """
    with open_user_file(path, DataError, ".npy file") as f:
        try:
            size = os.fstat(f.fileno()).st_size
            return read_npy_stream(f, size)
        except NotNpyError:
            raise DataError(f"{path}: not a .npy file (no NumPy array header)") from None
        except NpyHeaderError as exc:
            raise DataError(f"{path}: {exc}") from None
        except MemoryError as exc:
            raise DataError(f"{path}: {too_large(exc)}") from None
        except OSError as exc:  # an I/O error part-way (EIO, a vanished mount)
            raise DataError(f"{path}: cannot read ({exc.strerror or exception_line(exc)})") from None
