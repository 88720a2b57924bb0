"""The one rule for "no ink": when a 28×28 image holds no digit to read.

Every input reaches the model as a 28×28 image, white ink on black: a picture after
its normalisation, a row of a ``.npy`` or IDX file, a JSON array sent to ``serve``.
`check_ink` is applied to all of them, so a blank drawing, a lone dot or a faint
smudge is refused the same way everywhere, with a message naming the input, instead
of being answered with a guess.

The threshold comes from MNIST itself: every one of its 70,000 digits has at least
15 pixels at half brightness or more (the thinnest "1"s); a lone dot has one or two.
"""

from __future__ import annotations

import numpy as np

from ..errors import BlankImageError, ImageError
from ..pixels import IMAGE_SIDE, N_PIXELS

__all__ = ["MIN_INK_PIXELS", "MAX_INK_PIXELS", "INK_LEVEL", "all_ink_error", "blank_error",
           "check_ink", "is_all_ink", "is_blank"]

#: A 28×28 image needs at least this many pixels at `INK_LEVEL` or brighter.
MIN_INK_PIXELS = 10

#: Half brightness on MNIST's 0..255 scale.
INK_LEVEL = 128

#: More pixels than this at `INK_LEVEL` is nearly all ink, not a digit (MNIST's
#: heaviest of 70,000 has 312).
MAX_INK_PIXELS = 500


def _ink_counts(images) -> np.ndarray:
    """Pixels at half brightness or more in each image (int, shape (n,))."""
    a = np.asarray(images)
    if a.ndim == 0 or a.size == 0:
        raise ValueError(f"expected images of {N_PIXELS} pixels, got an array of shape {a.shape}")
    # Only MNIST's own shapes are one image: 784 rows of 784 pixels are 784 images.
    one = a.ndim == 1 or a.shape == (IMAGE_SIDE, IMAGE_SIDE)
    rows = a.reshape(1, -1) if one else a.reshape(a.shape[0], -1)
    if rows.dtype == np.bool_:
        return np.count_nonzero(rows, axis=1)
    level = 0.5 if rows.dtype.kind == "f" else INK_LEVEL  # 128 of 255, or half of 1.0
    return np.count_nonzero(rows >= level, axis=1)


def is_blank(images) -> np.ndarray:
    """Which rows of `images` hold no digit by the "no ink" rule.

    Parameters
    ----------
    images : array_like, shape (n, 784), (n, 28, 28), (28, 28) or (784,)
        uint8 pixels 0..255, floats in [0, 1] or booleans, white ink on black.

    Returns
    -------
    numpy.ndarray
        bool, shape (n,) (shape (1,) for one image, (28, 28) or (784,)).

    Raises
    ------
    ValueError
        If `images` is a scalar or empty.
    """
    return _ink_counts(images) < MIN_INK_PIXELS


def is_all_ink(images) -> np.ndarray:
    """Which rows of `images` are nearly all ink: no digit, or the polarity is wrong.

    More than `MAX_INK_PIXELS` pixels at half brightness: MNIST's heaviest digit has
    312. Arguments and result as for `is_blank`.
    """
    return _ink_counts(images) > MAX_INK_PIXELS


def check_ink(images, name: str = "image") -> None:
    """Refuse `images` if any of them is blank, or nearly all ink.

    Parameters
    ----------
    images : array_like
        As for `is_blank`.
    name : str
        What the input is called in the message: ``"image"``, a file name,
        ``"request body"``.

    Raises
    ------
    BlankImageError
        ``"<name>: no ink found: ..."``, naming the first blank row of several.
    ImageError
        ``"<name>: not a digit: ..."`` for an image nearly all ink.
    """
    counts = _ink_counts(images)
    several = counts.size > 1
    for i, n in enumerate(counts):
        where = f"{name}[{i}]" if several else name
        if n < MIN_INK_PIXELS:
            raise blank_error(where)
        if n > MAX_INK_PIXELS:
            raise all_ink_error(where)


def all_ink_error(name: str) -> ImageError:
    """The refusal of an image nearly all ink (see `is_all_ink`), naming the input."""
    return ImageError(f"{name}: not a digit: nearly all of the image is ink (more than "
                      f"{MAX_INK_PIXELS} of its {N_PIXELS} pixels at half brightness or "
                      "more); give white ink on black, or a picture")


def blank_error(name: str) -> BlankImageError:
    """The one "no ink" refusal of the input called `name`, whatever its form.

    Parameters
    ----------
    name : str
        ``"image"``, a file name, ``"photo.npy[3]"``, ``"request body"``.

    Returns
    -------
    BlankImageError
        To raise; the message starts with ``"<name>: no ink found: "``.
    """
    # One text for a blank picture, array row or request body alike: the rule is the
    # same, so a user sees the same refusal however the input reached the model.
    return BlankImageError(f"{name}: no ink found: the image is blank, a lone dot or too "
                           f"faint (fewer than {MIN_INK_PIXELS} of the {N_PIXELS} pixels "
                           "the model sees are at half brightness or more); write the "
                           "digit larger and darker")
