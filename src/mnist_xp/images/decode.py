"""Decoding pictures: which files are images, and their pixels as greyscale (needs Pillow).

Pillow is an optional dependency (``pip install 'mnist-xp[images]'``), imported only
inside the functions that need it, so ``import mnist_xp`` never requires it.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import ImageError, exception_line
from ..fileio.reading import open_user_file

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "INSTALL_HINT",
    "has_image_signature",
    "pil_modules",
    "load_image",
    "looks_like_image",
]

#: File name endings read as images (compared case-insensitively).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")

#: Largest image `load_image` decodes (width × height). A 40-megapixel photo is
#: plenty for one digit; a larger one is refused before its pixels are decoded, so a
#: small hostile file cannot claim gigabytes of memory.
MAX_PIXELS = 40_000_000

INSTALL_HINT = "pip install 'mnist-xp[images]'"

# Signatures of the formats above, for bytes whose name does not say what they are.
_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM",
          b"II*\x00", b"MM\x00*")


def has_image_signature(head: bytes) -> bool:
    """Whether `head` (a file's first 12 bytes or more) starts like PNG, JPEG, GIF, BMP,
    TIFF or WebP (which Pillow usually reads too)."""
    return head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")

def pil_modules(path=None):
    """Pillow's Image and ImageOps modules, or an ImageError (naming `path`) saying how to install it."""
    try:
        from PIL import Image, ImageOps
    except ImportError:
        where = f"{path}: " if path is not None else ""
        raise ImageError(f"{where}reading and writing images needs Pillow: {INSTALL_HINT}") from None
    return Image, ImageOps


def looks_like_image(path: str | os.PathLike) -> bool:
    """Whether `path` names an image: by its suffix, else by its first bytes.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    bool
        True for a name ending in one of `IMAGE_SUFFIXES` (any case), or a readable
        file starting with a PNG, JPEG, GIF, BMP, TIFF or WebP signature.
    """
    path = Path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return has_image_signature(head)


def load_image(path: str | os.PathLike, max_side: int | None = None) -> np.ndarray:
    """Decode an image file into greyscale pixels.

    PNG, JPEG, BMP, GIF (its first frame), TIFF (its first page) and any other format
    the installed Pillow reads. A JPEG's EXIF orientation is applied, so a phone photo
    is upright. Transparent pixels are composited onto a backdrop that keeps the ink
    visible: onto white behind dark ink, onto black behind light ink, and onto the
    colour of the opaque background where most of the picture is opaque.

    Parameters
    ----------
    path : str, os.PathLike or binary file object
        The image file, or an open binary file (such as ``io.BytesIO(data)``).
    max_side : int, optional
        The picture may be decoded smaller, down to this many pixels on its longer
        side, where the format can do so cheaply: a JPEG is then decoded at 1/2, 1/4
        or 1/8 of its size by the decoder itself (Pillow's ``draft``), which takes a
        12-megapixel photo from about 100 ms to about 15. None: full size.

    Returns
    -------
    numpy.ndarray
        uint8, shape (H, W): luminance, 0 black to 255 white. 16-bit and float
        images are scaled to this range.

    Raises
    ------
    ImageError
        If Pillow is missing, or the file is missing, not an image, larger than
        `MAX_PIXELS`, truncated or corrupt. The message is one line starting with
        the path.
    """
    return load_image_scaled(path, max_side)[0]


def load_image_scaled(path, max_side: int | None = None) -> tuple[np.ndarray, float]:
    """`load_image`, and the picture's pixels per decoded pixel (>= 1; 1 at full size)."""
    # A binary file object (e.g. io.BytesIO of an uploaded body) is decoded as it is,
    # with the same checks; messages then name it by its ``name`` attribute.
    if hasattr(path, "read"):
        return _decode(path, getattr(path, "name", "image"), max_side)
    pil_modules(path)  # a missing Pillow is said before anything else
    # A regular file only (a FIFO would block for ever), opened with the one-line errors
    # every reader of user files gives.
    with open_user_file(path, ImageError, "image file") as f:
        return _decode(f, path, max_side)


def _decode(source, path, max_side: int | None = None) -> tuple[np.ndarray, float]:
    """(`load_image` of the open binary file `source`, named `path` in messages, its scale)."""
    Image, ImageOps = pil_modules(path)
    from PIL import UnidentifiedImageError

    with warnings.catch_warnings():
        # Warnings about odd metadata would print stray lines; the pixels either decode
        # or raise. Pillow's own size check warns, which must stop the decode instead.
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            im = Image.open(source)
        except UnidentifiedImageError:
            raise ImageError(f"{path}: not an image file Pillow can read "
                             "(PNG, JPEG, BMP, GIF or TIFF)") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageError(f"{path}: too large; the limit is "
                             f"{MAX_PIXELS // 1_000_000} megapixels, scale it down") from None
        except Exception as exc:  # noqa: BLE001 - a decoder on untrusted bytes; see below
            raise ImageError(f"{path}: not a readable image ({exception_line(exc)})") from None
        with im:
            width, height = im.size
            # Checked before load(): only the header has been read so far.
            if width * height > MAX_PIXELS:
                raise ImageError(f"{path}: {width}x{height} pixels is too large; the limit "
                                 f"is {MAX_PIXELS // 1_000_000} megapixels, scale it down")
            if width < 1 or height < 1:
                raise ImageError(f"{path}: the image has no pixels")
            try:
                if max_side and im.format == "JPEG" and max(width, height) > 2 * max_side:
                    f = max_side / max(width, height)
                    im.draft("L", (math.ceil(width * f), math.ceil(height * f)))
                im.load()
                scale = width / im.size[0]  # JPEG's reduced decoding shrinks both sides alike
                upright = ImageOps.exif_transpose(im)
                return _luminance(upright), scale
            except Exception as exc:  # noqa: BLE001
                # Corrupt input makes decoders raise OSError, SyntaxError, ValueError,
                # struct.error, zlib.error, IndexError...: all mean "this file is bad",
                # which the user must hear about in one line, not as a traceback.
                raise ImageError(f"{path}: corrupt or truncated image ({exception_line(exc)})") from None


def _luminance(im) -> np.ndarray:
    """A decoded Pillow image as uint8 (H, W) luminance, alpha composited as documented."""
    mode = im.mode
    if mode == "F" or mode == "I" or mode.startswith("I;"):
        values = np.asarray(im).astype(np.float64)
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
        if mode == "F":
            scale = 255.0 if values.max() <= 1.0 else 1.0
        else:
            # 16-bit samples (PNG, TIFF) arrive as I;16 or as I holding 0..65535.
            scale = 1 / 257 if mode.startswith("I;16") or values.max() > 255 else 1.0
        return np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    if not has_alpha:
        return np.asarray(im.convert("L"), dtype=np.uint8).copy()
    rgba = np.asarray(im.convert("RGBA"), dtype=np.float32)
    alpha = rgba[..., 3] / 255
    # ITU-R 601 luma, the weights Pillow's own "L" conversion uses.
    luma = rgba[..., 0] * 0.299 + rgba[..., 1] * 0.587 + rgba[..., 2] * 0.114
    coverage = float(alpha.mean())
    if coverage == 0:
        return np.full(alpha.shape, 255, np.uint8)  # fully transparent: blank
    if coverage < 0.5:
        # Mostly transparent, as a drawing app exports strokes on no background: the
        # opaque part is the ink, whatever colour it is (the RGB under transparent
        # pixels is often black too), so the backdrop must contrast with it.
        ink = float((luma * alpha).sum() / alpha.sum())
        backdrop = 255.0 if ink < 128 else 0.0
    else:
        opaque = luma[alpha > 0.5]
        if opaque.size and float(opaque.std()) < 20 and coverage < 0.98:
            # Opaque in one flat colour, the rest transparent: a drawing's strokes (a
            # thick pen, cropped tight), whatever share they cover; they are the ink.
            backdrop = 255.0 if float(np.median(opaque)) < 128 else 0.0
        else:
            # Mostly opaque with texture (a photo with transparent margins): continue
            # its background.
            backdrop = float(np.median(opaque)) if opaque.size else 255.0
    gray = luma * alpha + backdrop * (1 - alpha)
    return np.clip(np.rint(gray), 0, 255).astype(np.uint8)
