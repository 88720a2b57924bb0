"""Writing pictures: a greyscale array as a PNG file, atomically (needs Pillow)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import ImageError, exception_line
from ..fileio.writing import atomic_write
from .decode import pil_modules

__all__ = ["save_png"]


def save_png(array28, path: str | os.PathLike, *, scale: int = 1) -> Path:
    """Write a greyscale image as a PNG, atomically, optionally enlarged.

    Parameters
    ----------
    array28 : array_like of uint8, shape (H, W)
        Typically the (28, 28) output of `to_mnist`.
    path : str or os.PathLike
        Destination. An existing file is replaced only once the new one is complete;
        a failed write leaves nothing behind.
    scale : int, default 1
        Each pixel becomes a `scale` × `scale` block (nearest neighbour, so the pixels
        the model sees stay visible as pixels).

    Returns
    -------
    pathlib.Path
        `path`.

    Raises
    ------
    ImageError
        If Pillow is missing, the directory does not exist, or the file cannot be
        written.
    ValueError
        If `array28` is not 2-D uint8 or `scale` is not a positive integer.
    """
    pixels = np.asarray(array28)
    if pixels.ndim != 2 or pixels.dtype != np.uint8 or 0 in pixels.shape:
        raise ValueError(f"expected a 2-D uint8 image, got {pixels.dtype}{list(pixels.shape)}")
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    path = Path(path)
    Image, _ = pil_modules(path)
    im = Image.fromarray(np.ascontiguousarray(pixels))
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise ImageError(f"{path}: directory {directory} does not exist")
    try:
        with atomic_write(path) as f:
            im.save(f, format="PNG")
    except OSError as exc:
        raise ImageError(f"{path}: cannot write ({exc.strerror or exception_line(exc)})") from None
    return path
