"""Pictures of numbers: the digits of a picture, one 28×28 image each, left to right.

After `find_ink` has the ink, the digits are its connected components
(``cv2.connectedComponentsWithStats``), sorted out in three steps:

1. **Specks go.** A component much smaller than the largest one (under a tenth of its
   area, unless it is at least a third as tall) is dust, noise or a stray dot.
2. **Strokes of one digit join.** Components whose horizontal extents overlap by more
   than half of the narrower one belong to one digit: a 5 whose bar was lifted, a 4
   written in two strokes, a digit cut by a ruled line.
3. **Touching digits part.** A group much wider than it is tall, with a thin neck
   (a column crossed by no more ink than one stroke, near where a cut would leave two
   parts of digit-like width), is cut there. Digits that merge over more than a
   stroke's width stay one: an honest limit.

Groups much shorter than the tallest (under 40% of its height) are not digits of the
number (a full stop, a dash, a speck that survived) and are dropped. Each digit is
then normalised like MNIST's (`mnist_xp.images.normalize.mnist_box`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from ..errors import BlankImageError, ImageError
from .blank import check_ink
from .ink import DECODE_SIDE, as_gray_uint8, cv2_module, find_ink, stroke_width

__all__ = ["Digit", "read_digits", "read_digits_file"]

# Solid ink, for the components; the fainter edge of a stroke is added back per digit.
_CORE = 0.35

# Digits smaller than this (working pixels), or with strokes thinner than _THIN, are
# looked at again in more detail.
_CLOSE_LOOK, _THIN = 64, 2.5


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

    Parameters
    ----------
    gray : array_like, shape (H, W)
        Greyscale pixels: uint8 (0 black to 255 white), booleans, integers in
        0..255 or floats in [0, 1]; a photo, a scan or a drawing, of any size.
    invert : {"auto", "yes", "no"}, default "auto"
        "yes": the ink is darker than the paper; "no": lighter; "auto": detect it
        from the ink against the paper.
    name : str, default "image"
        What the picture is called in error messages (a file name).

    Returns
    -------
    list of Digit
        At least one; each digit's ``image`` is uint8 (28, 28), white ink on black.

    Raises
    ------
    BlankImageError
        If no ink is found ("<name>: no ink found: ..."), by the same rule as for
        arrays (`mnist_xp.images.check_ink`).
    ImageError
        If OpenCV is missing.
    ValueError
        If `gray` is not a 2-D image in a supported range, or `invert` is unknown.
    """
    from .normalize import mnist_box

    cv2 = cv2_module()
    try:
        ink, groups, offset = locate(cv2, gray, invert)
        digits = []
        for mask, (top, left, bottom, right) in groups:
            image = mnist_box(cv2, _gated(cv2, ink.level, mask, top, left, bottom, right))
            check_ink(image, name)
            f = ink.factor
            box = (offset[0] + top * f, offset[1] + left * f,
                   offset[0] + bottom * f, offset[1] + right * f)
            digits.append(Digit(image, box))
    except ImageError as exc:
        raise type(exc)(f"{name}: {exc}") from None
    return digits


def locate(cv2, gray, invert: str = "auto"):
    """(InkMap, digit groups, (row, column) offset of the map's origin in the picture).

    The picture is analysed at `default_work_side`; when the digits found there are
    small (under `_CLOSE_LOOK` working pixels) or thinly drawn, and the picture has
    more detail, their surroundings are analysed again in more detail: a small digit
    in a large photo, a fine pen on a large canvas.
    """
    g = as_gray_uint8(gray)
    ink = find_ink(g, invert)
    groups = _digit_groups(cv2, ink.level)
    top = min(b[0] for _, b in groups)
    left = min(b[1] for _, b in groups)
    bottom = max(b[2] for _, b in groups)
    right = max(b[3] for _, b in groups)
    size = max(bottom - top, right - left)
    union = ink.level[top:bottom, left:right] >= _CORE
    stroke = stroke_width(union)
    f = ink.factor
    if f == 1 or (size >= _CLOSE_LOOK and stroke >= _THIN):
        return ink, groups, (0, 0)
    # A finer factor: the digits at least twice _CLOSE_LOOK, strokes at least _THIN wide.
    finer = max(1, int(min(f * size / (2 * _CLOSE_LOOK), f * stroke / _THIN)))
    if finer >= f:
        return ink, groups, (0, 0)
    # A margin of half the digits' size each side leaves paper enough to measure.
    m = size // 2 + 1
    y0, x0 = max(0, (top - m) * f), max(0, (left - m) * f)
    y1, x1 = min(g.shape[0], (bottom + m) * f), min(g.shape[1], (right + m) * f)
    closer = g[y0:y1, x0:x1]
    ink = find_ink(closer, "yes" if ink.dark_ink else "no",
                   work_side=math.ceil(max(closer.shape) / finer))
    return ink, _digit_groups(cv2, ink.level), (y0, x0)


def read_digits_file(path: str | os.PathLike, invert: str = "auto") -> list[Digit]:
    """`load_image` then `read_digits`; messages name `path` (or a file object's ``name``).

    Parameters
    ----------
    path : str, os.PathLike or binary file object
        As for `mnist_xp.images.load_image`.
    invert : {"auto", "yes", "no"}, default "auto"

    Returns
    -------
    list of Digit

    Raises
    ------
    ImageError
        As `load_image` and `read_digits` do.
    """
    from .decode import load_image

    name = getattr(path, "name", "image") if hasattr(path, "read") else path
    return read_digits(load_image(path, max_side=DECODE_SIDE), invert=invert, name=str(name))


def whole_ink(cv2, gray, invert: str = "auto") -> np.ndarray:
    """All the digits' ink as one crop (float32 levels): the picture read as one digit."""
    ink, groups, _ = locate(cv2, gray, invert)
    mask = np.zeros(ink.level.shape, bool)
    for m, _ in groups:
        mask |= m
    top = min(b[0] for _, b in groups)
    left = min(b[1] for _, b in groups)
    bottom = max(b[2] for _, b in groups)
    right = max(b[3] for _, b in groups)
    return _gated(cv2, ink.level, mask, top, left, bottom, right)


# -- components to digits ----------------------------------------------------------------

def _gated(cv2, level, mask, top, left, bottom, right) -> np.ndarray:
    """`level` inside the box, kept only near the digit's own components."""
    near = cv2.dilate(mask[top:bottom, left:right].astype(np.uint8), np.ones((3, 3), np.uint8))
    return level[top:bottom, left:right] * near


def _digit_groups(cv2, level: np.ndarray):
    """[(bool mask of the digit's components, (top, left, bottom, right))], left to right."""
    core = (level >= _CORE).astype(np.uint8)
    # Connected across one-pixel gaps: a faint, thin stroke breaks up at the threshold.
    n, labels, stats, _ = cv2.connectedComponentsWithStats(
        cv2.dilate(core, np.ones((3, 3), np.uint8)), connectivity=8)
    if n <= 1:
        raise BlankImageError("no ink found: the picture is blank or its contrast is too low")
    area = stats[1:, cv2.CC_STAT_AREA].astype(np.int64)
    height = stats[1:, cv2.CC_STAT_HEIGHT]
    big_area, big_height = int(area.max()), int(height.max())
    keep = [i + 1 for i in range(n - 1)
            if area[i] >= max(4, 0.1 * big_area)
            or (height[i] >= big_height / 3 and area[i] >= max(4, 0.02 * big_area))]
    # Groups of components by overlapping columns, left to right.
    boxes = sorted(([int(stats[i, 0]), int(stats[i, 0] + stats[i, 2]), int(stats[i, 1]),
                     int(stats[i, 1] + stats[i, 3]), [i]] for i in keep), key=lambda b: b[0])
    groups: list[list] = []
    for b in boxes:
        for g in groups:
            overlap = min(g[1], b[1]) - max(g[0], b[0])
            if overlap > 0.5 * min(g[1] - g[0], b[1] - b[0]):
                g[0], g[1] = min(g[0], b[0]), max(g[1], b[1])
                g[2], g[3] = min(g[2], b[2]), max(g[3], b[3])
                g[4] += b[4]
                break
        else:
            groups.append(b)
    tallest = max(g[3] - g[2] for g in groups)
    groups = [g for g in groups if g[3] - g[2] >= 0.4 * tallest]
    out = []
    for left, right, top, bottom, ids in sorted(groups, key=lambda g: (g[0] + g[1]) / 2):
        mask = np.isin(labels, ids)
        for part in _split(mask, core, top, bottom, left, right):
            out.append(part)
    return out


def _split(mask, core, top, bottom, left, right):
    """[(mask, box)]: one group, cut at thin necks into parts of digit-like width."""
    h, w = bottom - top, right - left
    if w < 1.3 * h:
        return [(mask, (top, left, bottom, right))]
    inside = mask[top:bottom, left:right] & core[top:bottom, left:right].astype(bool)
    columns = inside.sum(axis=0)
    stroke = stroke_width(inside)
    lo, hi = int(0.35 * h), w - int(0.35 * h)  # each part at least a third as wide as tall
    if hi <= lo:
        return [(mask, (top, left, bottom, right))]
    cut = lo + int(np.argmin(columns[lo:hi]))
    if columns[cut] > 1.2 * stroke:
        return [(mask, (top, left, bottom, right))]
    parts = []
    for a, b in ((left, left + cut), (left + cut, right)):
        m = np.zeros_like(mask)
        m[top:bottom, a:b] = mask[top:bottom, a:b]
        rows = np.flatnonzero(m[top:bottom, a:b].any(axis=1))
        if rows.size == 0:
            continue
        parts.extend(_split(m, core, top + int(rows[0]), top + int(rows[-1]) + 1, a, b))
    return parts
