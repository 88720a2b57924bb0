"""Reading files a user names, defensively: no hang, no unbounded allocation, no pickle.

Two helpers for the readers of user-supplied files (IDX, ``.npy``, ``.npz`` models):

- `open_regular` opens a path without blocking and refuses anything that is not a
  regular file, so a named pipe (FIFO), a device or a socket given as an input can
  never hang the command or stream forever.
- `read_npy_header` reads a ``.npy`` header and checks it against the bytes that
  actually follow it, so a 100-byte file declaring a terabyte array is refused before
  anything is allocated, and an object array (which would need unpickling) is refused
  before anything is read.

Callers turn the exceptions into their own one-line errors (`DataError`,
`ModelFileError`), each starting with the path; `read_npy` does so itself for the
``.npy`` arrays that ``mnist-xp predict`` reads.
"""

from __future__ import annotations

import math
import os
import stat
from typing import BinaryIO

import numpy as np

from ..errors import DataError, exception_line

__all__ = ["NotRegularFileError", "NpyHeaderError", "open_regular", "read_npy",
           "read_npy_header"]

# O_NONBLOCK makes opening a FIFO return at once instead of waiting for a writer;
# on a regular file it changes nothing. Windows has neither flag nor FIFOs.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)


class NotRegularFileError(OSError):
    """The path names a FIFO, device or socket, not a file with a size."""


class NpyHeaderError(ValueError):
    """A ``.npy`` header that is unreadable, or that the data after it cannot satisfy."""


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
        How many bytes the stream holds in all (header included). The array data the
        header declares must fit in what follows the header.

    Returns
    -------
    (shape, fortran_order, dtype)
        As ``numpy.lib.format`` reports them.

    Raises
    ------
    NpyHeaderError
        Not ``.npy`` data, an unsupported format version, an object dtype (the data
        would be pickled; the message contains "pickled"), or more data declared than
        `available` allows.
    """
    fmt = np.lib.format
    start = stream.tell()
    try:
        version = fmt.read_magic(stream)
    except ValueError as exc:
        raise NpyHeaderError(f"not .npy data ({exc})") from None
    try:
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(stream)
        else:
            # 3.0 is only written for structured dtypes with non-latin-1 field names.
            raise NpyHeaderError(f"unsupported .npy format version {version[0]}.{version[1]}")
    except (ValueError, EOFError, OSError) as exc:
        raise NpyHeaderError(f"unreadable .npy header ({exc})") from None
    if dtype.hasobject:
        raise NpyHeaderError("holds pickled objects, which are never loaded")
    if any(d < 0 for d in shape):
        raise NpyHeaderError(f"unreadable .npy header (negative dimension in shape {shape})")
    needed = math.prod(shape) * dtype.itemsize
    held = available - (stream.tell() - start)
    if needed > held:
        raise NpyHeaderError(
            f"header declares {needed:,} bytes of array data but only {max(held, 0):,} "
            "follow; the file is truncated or corrupt")
    return shape, fortran, dtype


def read_npy(path: str | os.PathLike) -> np.ndarray:
    """Read a ``.npy`` array a user named, safely; every failure is a one-line DataError.

    Unlike ``np.load`` it reads only ``.npy`` data (never a pickle), refuses object
    arrays without unpickling them, and checks the declared size against the file
    before allocating (``np.load`` would allocate what a corrupt header claims).

    Raises
    ------
    DataError
        Missing, unreadable, not a regular file, not ``.npy`` data, or a header the
        file cannot satisfy; the message starts with the path.
    """
    with open_user_file(path, DataError, ".npy file") as f:
        try:
            size = os.fstat(f.fileno()).st_size
            if f.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
                raise DataError(f"{path}: not a .npy file (no NumPy array header)")
            f.seek(0)
            try:
                read_npy_header(f, size)
            except NpyHeaderError as exc:
                raise DataError(f"{path}: {exc}") from None
            f.seek(0)
            return np.lib.format.read_array(f, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(f"{path}: not a readable .npy array ({exception_line(exc)})") from None
