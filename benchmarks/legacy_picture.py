"""The old picture step of ``serve`` (commit 74de8ce), for benchmarks/legacy_serve.py.

It replaces `mnist_xp.web.pictures._picture_digits`, which runs in the server's picture
processes; they find it by name, so it lives in this importable module.
"""

from __future__ import annotations

import io

import legacy_normalize
from mnist_xp.web import pictures as server


def picture_digits(body: bytes, n_features: int):
    """The old pipeline's answer for a picture: (1, 784) uint8 rows and their boxes.

    One digit, boxed whole (the old pipeline never cut a picture into digits), in the
    shape the server now expects.
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
