"""Decoding pictures: which files are images, and their pixels as greyscale (needs Pillow).

Pillow is an optional dependency (``pip install 'mnist-xp[images]'``), imported only
inside the functions that need it, so ``import mnist_xp`` never requires it.
"""

from __future__ import annotations

import ctypes
import functools
import math
import os
import re
import warnings
from pathlib import Path

import numpy as np

from ..errors import ImageError, exception_line
from ..fileio.reading import open_user_file
from .shrink import to_gray

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_PIXELS",
    "MAX_ASPECT",
    "MAX_SAMPLE_BYTES",
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

#: Most bytes of samples a picture may make its decoder inflate: what 40 megapixels of
#: 8-bit RGBA take. It bounds the time of the decode (about 0.4 s of CPU for those on
#: the benchmark machine), as MAX_PIXELS bounds its pixels: 40 megapixels of 16-bit
#: RGBA (320 MB, 0.9 s) are refused, 20 are read.
MAX_SAMPLE_BYTES = 4 * MAX_PIXELS

#: Longest side over shortest side beyond which a picture is refused before decoding:
#: even a row of a hundred digits is under 100:1, and a 40,000,000 x 1 sliver would
#: only be decoded to be found blank.
MAX_ASPECT = 1000

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
    _silence_libtiff()
    return Image, ImageOps


@functools.cache
def _silence_libtiff() -> None:
    """Turn off libtiff's own reports, which it writes to stderr beside our one line.

    A damaged TIFF made libtiff print lines such as "TIFFFetchNormalTag: Incorrect
    count for ..." (found by tests/fuzz/fuzz_picture.py); the failure itself still
    reaches Pillow and becomes one ImageError. Pillow leaves libtiff's default
    handlers in place, so they are cleared in the libtiff Pillow loaded (found in
    the process's memory map; on other systems than Linux nothing is done).
    """
    try:
        with open("/proc/self/maps") as maps:
            libraries = {path for path in (line.split()[-1] for line in maps)
                         if path.startswith("/") and "libtiff" in path.rsplit("/", 1)[-1]
                         and ".so" in path.rsplit("/", 1)[-1]}
        for library in libraries:
            lib = ctypes.CDLL(library)
            for name in ("TIFFSetWarningHandler", "TIFFSetErrorHandler"):
                setter = getattr(lib, name)
                setter.restype, setter.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
                setter(None)
    except (OSError, AttributeError):
        pass  # no /proc (not Linux) or no libtiff: nothing to silence


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
        side (never fewer), when it is at least twice as large. A JPEG is then
        decoded at 1/2, 1/4 or 1/8 of its size by the decoder itself (Pillow's
        ``draft``), which takes a 12-megapixel photo from about 100 ms to about 15;
        any picture still twice `max_side` or more is shrunk by a whole factor
        (block averaging) one tile at a time, before any copy of its full size is
        made, so that a 40-megapixel picture costs its decoded size (at most 160 MB)
        and not gigabytes. None: full size.

    Returns
    -------
    numpy.ndarray
        uint8, shape (H, W): luminance, 0 black to 255 white. 16-bit and float
        images are scaled to this range.

    Raises
    ------
    ImageError
        If Pillow (or, for a transparent or shrunk picture, OpenCV) is missing, or
        the file is missing, not an image, larger than `MAX_PIXELS` or than the
        memory available allows, truncated or corrupt. The message is one line
        starting with the path.
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
    Image, _ = pil_modules(path)
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
        except MemoryError:
            raise ImageError(f"{path}: too large to open in the memory available; "
                             "scale it down") from None
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
            stored = width * height * _stored_bytes_per_pixel(im)
            if stored > MAX_SAMPLE_BYTES:
                raise ImageError(
                    f"{path}: {width}x{height} pixels of {im.mode} with 16 bits or more per "
                    f"channel is too large ({stored / 1e6:,.0f} MB of samples to decode; the "
                    f"limit is {MAX_SAMPLE_BYTES / 1e6:,.0f} MB); scale it down or save it "
                    "with 8 bits per channel")
            if max(width, height) > MAX_ASPECT * min(width, height):
                raise ImageError(
                    f"{path}: {width}x{height} pixels is too {'wide' if width > height else 'tall'}"
                    f" to hold digits (over {MAX_ASPECT}:1); crop it to the digits")
            try:
                if max_side and im.format == "JPEG" and max(width, height) > 2 * max_side:
                    f = max_side / max(width, height)
                    im.draft("L", (math.ceil(width * f), math.ceil(height * f)))
                im.load()
                # Larger than twice max_side still: shrunk by a whole factor, block by
                # block in bounded memory, before anything of its full size is copied.
                factor = max(1, max(im.size) // max_side) if max_side else 1
                gray = to_gray(im, factor)
                # JPEG's reduced decoding and the factor shrink both sides alike.
                scale = width / im.size[0] * factor
                return _upright(gray, _orientation(im)), scale
            except ImageError as exc:  # OpenCV missing: said with the file's name
                raise ImageError(f"{path}: {exc}") from None
            except MemoryError:
                raise ImageError(f"{path}: {width}x{height} pixels is too large to decode in "
                                 "the memory available; scale it down") from None
            except Exception as exc:  # noqa: BLE001
                # Corrupt input makes decoders raise OSError, SyntaxError, ValueError,
                # struct.error, zlib.error, IndexError...: all mean "this file is bad",
                # which the user must hear about in one line, not as a traceback.
                raise ImageError(f"{path}: {_decode_failure(exc)}") from None


def _decode_failure(exc: Exception) -> str:
    """A decoder's exception as what went wrong and what to do, without nested repetition."""
    detail = exception_line(exc)
    if "truncated" in detail.lower():  # Pillow: "image file is truncated (N bytes not processed)"
        return "truncated image (the file ends before the picture does); export or copy it again"
    return f"corrupt image ({detail}); export it again"


def _stored_bytes_per_pixel(im) -> int:
    """Bytes per pixel of the samples `im`'s decoder will inflate (read from its tiles).

    16- and 32-bit raw modes ("RGBA;16B", "F;32F") are counted as stored; any other is
    at most 4 bytes, which Pillow's own pixels take.
    """
    most = 4
    for tile in getattr(im, "tile", None) or ():
        args = tile[3] if isinstance(tile, tuple) and len(tile) > 3 else ""
        rawmode = args if isinstance(args, str) else (
            args[0] if isinstance(args, tuple) and args and isinstance(args[0], str) else "")
        match = re.match(r"([A-Z]+);(16|32)", rawmode)
        if match:
            bands = 1 if match[1] in ("I", "F") else len(match[1])
            most = max(most, bands * int(match[2]) // 8)
    return most


def _orientation(im) -> int:
    """The EXIF orientation of `im` (1 to 8; 1, upright, when absent or unreadable)."""
    try:
        value = im.getexif().get(0x0112, 1)  # ExifTags.Base.Orientation
    except Exception:  # noqa: BLE001 - damaged metadata: the pixels as stored
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _upright(gray: np.ndarray, orientation: int) -> np.ndarray:
    """`gray` turned as EXIF `orientation` says (what ``ImageOps.exif_transpose`` does)."""
    turned = {
        1: lambda a: a,
        2: np.fliplr,                           # mirrored
        3: lambda a: np.rot90(a, 2),            # upside down
        4: np.flipud,                           # mirrored, upside down
        5: lambda a: a.T,                       # transposed
        6: lambda a: np.rot90(a, -1),           # turned 90 degrees clockwise to upright
        7: lambda a: np.rot90(a, 2).T,          # transversed
        8: lambda a: np.rot90(a, 1),            # turned 90 degrees anticlockwise
    }[orientation](gray)
    return np.ascontiguousarray(turned)
