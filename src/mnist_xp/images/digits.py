"""Pictures of numbers: the digits of a picture, one 28×28 image each, left to right."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

__all__ = ["Digit", "read_digits", "read_digits_file"]


@dataclass(frozen=True)
class Digit:
    """One digit found in a picture.

    Attributes
    ----------
    image : numpy.ndarray
        uint8, shape (28, 28): the digit normalised like MNIST's (white ink on black,
        fitted to 20×20, centre of mass at the centre).
    box : tuple of int
        ``(top, left, bottom, right)``: where the digit lies in the decoded picture, in
        its pixels, bottom and right exclusive.
    """

    image: np.ndarray
    box: tuple[int, int, int, int]


def read_digits(gray, invert: str = "auto", *, name: str = "image") -> list[Digit]:
    """The digits of a picture, left to right (one for a picture of one digit).

    STUB: the whole picture as one digit, until the segmentation lands.
    """
    from .normalize import to_mnist
    g = np.asarray(gray)
    from .blank import blank_error, check_ink
    from ..errors import ImageError
    try:
        image = to_mnist(g, invert=invert)
    except ImageError as exc:
        if "no ink found" in str(exc):  # the old normaliser's refusal: the one message
            raise blank_error(name) from None
        raise type(exc)(f"{name}: {exc}") from None
    check_ink(image, name)
    return [Digit(image, (0, 0, g.shape[0], g.shape[1]))]


def read_digits_file(path: str | os.PathLike, invert: str = "auto") -> list[Digit]:
    """`load_image` then `read_digits`; messages name `path` (or a file object's ``name``)."""
    from .decode import load_image
    name = getattr(path, "name", None) if hasattr(path, "read") else path
    return read_digits(load_image(path), invert=invert, name=str(name or "image"))
