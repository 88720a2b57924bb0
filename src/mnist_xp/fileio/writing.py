"""Writing files atomically: a temporary file in the target's directory, renamed into place."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import IO, Iterator

__all__ = ["atomic_write"]


def _create_temp(directory: Path, name: str) -> tuple[int, Path]:
    """Create a new, unique, empty file beside `name`; return (fd, path).

    Opened with mode 0666 so the kernel applies the umask, as for any file the user
    creates (tempfile.mkstemp would make it private, 0600).
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = directory / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing; rename it over `path` on success.

    An exception (or interruption) inside the block removes the temporary file and leaves
    whatever was at `path` untouched, so a reader never sees a half-written file.
    `mode` is "wb", "w" or "w+b".
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = _create_temp(directory, path.name)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
