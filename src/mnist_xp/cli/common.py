"""What every ``mnist-xp`` command shares: one-line errors, the backend, the data, output checks."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from ..backend import get_backend
from ..errors import MnistXPError, ReportError
from ..model_files import default_model_path, load

PROG = "mnist-xp"


class UsageError(MnistXPError):
    """A command-line flag or value the user must change."""


def printable(text: str) -> str:
    """`text` with unprintable characters escaped (a newline becomes \\x0a).

    Messages quote paths and arguments as given, and a file name may hold a newline
    (or U+2028, or an undecodable byte); escaping keeps every diagnostic to exactly
    one line that stderr can always encode.
    """
    return "".join(c if c.isprintable() else
                   f"\\x{ord(c):02x}" if ord(c) < 0x100 else
                   f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}"
                   for c in text)


def say(line: str) -> None:
    """One diagnostic line on stderr."""
    print(printable(f"{PROG}: {line}"), file=sys.stderr, flush=True)


def backend_from(args):
    """The backend ``--device``/``--require-device`` ask for (a fallback is said on stderr)."""
    return get_backend(args.device, require=args.require_device, on_fallback=say)


def data_from(args):
    """The data ``--data``/``--data-dir``/``--no-download`` ask for."""
    from ..data import load_mnist

    return load_mnist(args.data, data_dir=args.data_dir, download=not args.no_download, log=say)


def check_writable(path: Path | None, flag: str) -> None:
    """Fail before the work, not after it, when `path` could not be written."""
    if path is None:
        return
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a directory; give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{flag} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{flag} {path}: directory {parent} is not writable")


def check_figure_dir(path: Path | None, flag: str) -> None:
    """Fail before the work when `path` cannot hold figures or matplotlib is missing."""
    if path is None:
        return
    from ..reporting.figures import check_matplotlib
    from ..reporting.metrics import check_output_dir

    try:
        check_output_dir(path)
    except ReportError as exc:
        raise UsageError(f"{flag} {exc}") from None
    check_matplotlib()


def plural(n: int, word: str) -> str:
    """'1 epoch', '2 epochs'."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def flatten(images: np.ndarray) -> np.ndarray:
    """(n, 28, 28) images as (n, 784) rows, without copying."""
    return images.reshape(images.shape[0], int(np.prod(images.shape[1:])))


def model_path(args) -> Path:
    """``--model``, or the model installed with mnist-xp (a UsageError if that is missing)."""
    if args.model is not None:
        return args.model
    path = default_model_path()
    if not path.is_file():
        raise UsageError(f"no --model given and the model installed with mnist-xp is missing "
                         f"({path}); pass --model PATH (a file from 'mnist-xp train --save') "
                         "or reinstall mnist-xp")
    return path


def load_model(args):
    """The model of ``--model`` on the backend of ``--device``; (model, backend)."""
    args.model = model_path(args)
    backend = backend_from(args)
    return load(args.model, device=backend), backend
