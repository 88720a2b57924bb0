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

from ..errors import BlankImageError
from ..pixels import IMAGE_SIDE, N_PIXELS

__all__ = ["MIN_INK_PIXELS", "INK_LEVEL", "blank_error", "check_ink", "is_blank"]

#: A 28×28 image needs at least this many pixels at `INK_LEVEL` or brighter.
MIN_INK_PIXELS = 10

#: Half brightness on MNIST's 0..255 scale.
INK_LEVEL = 128


def is_blank(images) -> np.ndarray:
    """Which rows of `images` hold no digit by the "no ink" rule.

    Parameters
    ----------
    images : array_like, shape (n, 784), (n, 28, 28), (28, 28) or (784,)
        uint8 pixels 0..255, or floats in [0, 1], white ink on black.

    Returns
    -------
    numpy.ndarray
        bool, shape (n,) (shape (1,) for one image, (28, 28) or (784,)).
    """
    a = np.asarray(images)
    # Only MNIST's own shapes are one image: 784 rows of 784 pixels are 784 images.
    one = a.ndim == 1 or a.shape == (IMAGE_SIDE, IMAGE_SIDE)
    rows = a.reshape(1, -1) if one else a.reshape(a.shape[0], -1)
    level = INK_LEVEL / 255 if rows.dtype.kind == "f" else INK_LEVEL
    return np.count_nonzero(rows >= level, axis=1) < MIN_INK_PIXELS


def check_ink(images, name: str = "image") -> None:
    """Refuse `images` if any of them is blank by the "no ink" rule.

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
    """
    blank = is_blank(images)
    if blank.any():
        which = "" if blank.size == 1 else f"[{int(np.argmax(blank))}]"
        raise blank_error(f"{name}{which}")


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
