"""What the file harnesses share: a scratch file per process, the one-line rule, and a
check that nothing below Python writes to stderr."""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import shutil
import tempfile
from pathlib import Path

_SCRATCH: list[Path] = []


def scratch(data: bytes, name: str) -> Path:
    """`data` written to a file called `name` in this process's scratch directory."""
    if not _SCRATCH:
        directory = Path(tempfile.mkdtemp(prefix="mnist_xp_fuzz_"))
        atexit.register(shutil.rmtree, directory, True)
        _SCRATCH.append(directory)
    path = _SCRATCH[0] / name
    # Replace, never reuse: a reader may have left the old one mapped or open.
    with open(path, "wb") as f:
        f.write(data)
    os.utime(path)
    return path


def check_message(exc: BaseException, name: object) -> None:
    """A user error must be one non-empty line starting with the input's name."""
    message = str(exc)
    assert message.startswith(f"{name}: "), f"message does not name {name}: {message!r}"
    assert "\n" not in message and "\r" not in message, f"not one line: {message!r}"
    assert message[len(f"{name}: "):].strip(), f"empty reason: {message!r}"


@contextlib.contextmanager
def quiet_stderr():
    """Fail if anything writes to file descriptor 2 inside the block.

    A C library that prints its own diagnostics (libtiff did) would add lines to the
    one line on stderr a user must get; Python's own ``sys.stderr`` is caught too.
    """
    sys.stderr.flush()
    with tempfile.TemporaryFile() as capture:
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        written = capture.read(2000)
    assert not written, f"written to stderr: {written!r}"
