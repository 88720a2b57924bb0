"""``mnist-xp`` whose ``serve`` turns pictures into pixels with the OLD normaliser.

For ``benchmarks/serve_load.py --compare-legacy``: the server is today's, request
handling, batching and all; only the picture step, `mnist_xp.web.server`'s
``_pixels_from_image``, is swapped for the one of commit 74de8ce, which calls
benchmarks/legacy_normalize.py. Arguments are those of ``mnist-xp``::

    python benchmarks/legacy_serve.py serve --port 0

It refuses to start if the server no longer calls ``_pixels_from_image``, or calls it
differently, since the swap would then silently benchmark the new pipeline twice.
"""

from __future__ import annotations

import inspect
import io
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
import legacy_normalize  # noqa: E402

from mnist_xp.cli import main  # noqa: E402
from mnist_xp.web import server  # noqa: E402

_NAME = "_pixels_from_image"


def _pixels_from_image(body: bytes, n_features: int, classify=None):
    """The old pipeline's answer for an image body (server.py at 74de8ce): one digit.

    Returned as the server now expects it, (1, 784) uint8 rows and their boxes;
    `classify` is not used (the old pipeline never cut a picture into digits).
    """
    if n_features != server.N_PIXELS:
        raise server.ApiError(422, f"the model expects {n_features} pixels per image; pictures "
                                   "become 28x28 = 784")
    upload = io.BytesIO(body)
    upload.name = "image"  # how error messages name it
    try:
        row = legacy_normalize.preprocess_file(upload).reshape(1, -1)
    except server.MnistXPError as exc:
        # Pillow missing is the server's problem (503); anything else is the picture's.
        raise server.ApiError(503 if server.INSTALL_HINT in str(exc) else 422, str(exc)) from None
    return row, [[0, 0, 28, 28]]


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
        sys.exit(f"legacy_serve: mnist_xp.web.server no longer calls {_NAME}; update "
                 "benchmarks/legacy_serve.py to swap whatever now turns a picture into pixels")
    if list(inspect.signature(current).parameters) != ["body", "n_features", "classify"]:
        sys.exit(f"legacy_serve: mnist_xp.web.server.{_NAME} now takes "
                 f"{inspect.signature(current)}; update benchmarks/legacy_serve.py to match")
    setattr(server, _NAME, _pixels_from_image)


if __name__ == "__main__":
    install()
    sys.exit(main())
