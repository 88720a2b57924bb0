"""``mnist-xp`` whose ``serve`` turns pictures into pixels with the OLD normaliser.

For ``benchmarks/serve_load.py --compare-legacy``: the server is today's, request
handling, batching and all; only the picture step, `mnist_xp.web.pictures`'s
``_picture_digits`` (run in its picture processes), is swapped for
``legacy_picture.picture_digits``, the picture step of commit 74de8ce. Arguments are
those of ``mnist-xp``::

    python benchmarks/legacy_serve.py serve --port 0

It refuses to start if the server no longer calls ``_picture_digits``, or calls it
differently, since the swap would then silently benchmark the new pipeline twice.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
import legacy_picture  # noqa: E402

from mnist_xp.cli import main  # noqa: E402
from mnist_xp.web import pictures as server  # noqa: E402

_NAME = "_picture_digits"


def _callers(module, name: str) -> list[str]:
    """Functions and methods of `module` whose code refers to the global `name`."""
    found = []
    for owner_name, owner in vars(module).items():
        members = vars(owner).items() if inspect.isclass(owner) else [(owner_name, owner)]
        for member_name, f in members:
            code = getattr(inspect.unwrap(f) if callable(f) else f, "__code__", None)
            if code is not None and name in code.co_names and f is not getattr(module, name, None):
                found.append(f"{owner_name}.{member_name}" if inspect.isclass(owner) else member_name)
    return found


def install() -> None:
    """Swap the server's picture step for the old one, or exit saying why it cannot be."""
    current = getattr(server, _NAME, None)
    if current is None or not _callers(server, _NAME):
        sys.exit(f"legacy_serve: mnist_xp.web.pictures no longer calls {_NAME}; update "
                 "benchmarks/legacy_serve.py to swap whatever now turns a picture into pixels")
    if list(inspect.signature(current).parameters) != ["body", "n_features"]:
        sys.exit(f"legacy_serve: mnist_xp.web.pictures.{_NAME} now takes "
                 f"{inspect.signature(current)}; update benchmarks/legacy_serve.py to match")
    # By name, from an importable module: it is called in the server's picture processes.
    setattr(server, _NAME, legacy_picture.picture_digits)


if __name__ == "__main__":
    install()
    sys.exit(main())
