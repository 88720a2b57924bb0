"""Fuzz harness: picture decoding and normalising (what ``predict`` and ``serve`` do).

The bytes go to `mnist_xp.images.read_digits_file` as an uploaded file would, with
the pixel cap lowered to `MAX_PIXELS` so that each run stays quick. Invariants: every
failure is an `ImageError` (a blank picture's `BlankImageError` included) naming the
input on one line, and nothing else reaches stderr (libtiff printed its own reports); a picture that is read gives one or more uint8 28x28 digits, each
with a box inside the picture.
"""

from __future__ import annotations

import io

import numpy as np

from mnist_xp.errors import ImageError
from mnist_xp.images import decode, read_digits_file

from ._support import check_message, quiet_stderr

#: The pixel cap while fuzzing (the product's is 40 megapixels).
MAX_PIXELS = 200_000

_NAME = "upload.bin"


def one_input(data: bytes) -> None:
    """Read `data` as a picture of digits; raise only on a bug."""
    source = io.BytesIO(data)
    source.name = _NAME
    saved, decode.MAX_PIXELS = decode.MAX_PIXELS, MAX_PIXELS
    try:
        with quiet_stderr():
            digits = read_digits_file(source)
    except ImageError as exc:
        check_message(exc, _NAME)
        return
    finally:
        decode.MAX_PIXELS = saved
    assert digits, "no digits and no error"
    for d in digits:
        assert d.image.dtype == np.uint8 and d.image.shape == (28, 28)
        x0, y0, x1, y1 = d.box
        assert 0 <= x0 < x1 and 0 <= y0 < y1, d.box


def _digit(side: int = 40) -> np.ndarray:
    """A 7 drawn with a thick pen, uint8, dark on white."""
    g = np.full((side, side), 255, np.uint8)
    s = side // 8
    g[s:2 * s, s:side - s] = 0
    for i in range(side - 3 * s):
        c = side - s - 1 - i // 2
        g[2 * s + i, max(0, c - s):c] = 0
    return g


def seeds() -> list[bytes]:
    """One small digit in every format and mode Pillow reads, as files would hold it."""
    from PIL import Image

    g = _digit()
    rgba = np.zeros((*g.shape, 4), np.uint8)
    rgba[..., 3] = 255 - g  # the ink opaque, the rest transparent
    pictures = [
        ("PNG", Image.fromarray(g)), ("PNG", Image.fromarray(g).convert("1")),
        ("PNG", Image.fromarray(rgba, "RGBA")), ("PNG", Image.fromarray(g).convert("LA")),
        ("PNG", Image.fromarray(g.astype(np.uint16) * 257)),
        ("PNG", Image.fromarray(g).convert("P")), ("GIF", Image.fromarray(g)),
        ("JPEG", Image.fromarray(g).convert("RGB")), ("BMP", Image.fromarray(g)),
        ("TIFF", Image.fromarray(g.astype(np.float32) / 255)),
        ("TIFF", Image.fromarray(g.astype(np.int32) * 257)),
        ("WEBP", Image.fromarray(g).convert("RGB")),
    ]
    out = []
    for fmt, im in pictures:
        f = io.BytesIO()
        im.save(f, fmt, **({"compression": "tiff_deflate"} if fmt == "TIFF" else {}))
        out.append(f.getvalue())
    p = Image.fromarray(g).convert("P")
    f = io.BytesIO()
    p.save(f, "PNG", transparency=255)
    out.append(f.getvalue())
    return out
