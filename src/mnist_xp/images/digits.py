"""Pictures of numbers: the digits of a picture, one 28×28 image each, left to right.

After `find_ink` has the ink, the digits are its connected components
(``cv2.connectedComponentsWithStats``), sorted out in three steps:

1. **Edges of things go.** A long thin band along the picture's edge is the edge of a
   desk, a shadow or another page; a thin straight line across nearly all of it is a
   margin rule or a fold; a line across much of it, five times as long as high, is an
   underline or the edge of a sheet. None is writing.
2. **Strokes of one digit join; specks go.** Components whose horizontal extents
   overlap by more than half of the narrower one belong to one digit: a 5 whose bar
   was lifted, a 4 written in two strokes, a digit cut by a ruled line (but not two
   tall strokes side by side: "11"). Components under a tenth of the largest one's
   area join the digit they overlap; if they overlap none they are dust, noise or
   stray dots, unless at least 40% as tall as the tallest (a thin 1). A round blob
   as small as the pen is wide is a dot, not a digit; one that looks so in a shrunk
   picture is looked at closer first (a small marker digit whose loops filled in).
3. **Touching digits part.** A group much wider than it is tall, with a thin neck
   (a column crossed by no more ink than one stroke, where a cut leaves two parts of
   digit-like height), is cut there. Given the model (``classify``), a group wide
   enough to be two digits is also cut where the model reads the two parts better
   than the whole (segmentation by recognition): in a number, the parts'
   log-probabilities against the whole's plus a prior from the group's width in the
   heights of the number's other digits; a picture's only group, when the parts read
   surely and clearly better. Without the model, digits that touch over more than a
   stroke's width stay one.

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
from .blank import blank_error, check_ink
from .ink import DECODE_SIDE, as_gray_uint8, cv2_module, find_ink, stroke_width

__all__ = ["Digit", "read_digits", "read_digits_file"]

# Solid ink, for the components; the fainter edge of a stroke is added back per digit.
_CORE = 0.35

# A blob less than this many pen widths tall and wide is a dot, not a digit (a digit is
# several pen widths tall: MNIST's, about seven; a round dot, one). A small digit drawn
# with a broad marker, its loops filled in, is a blob too, but taller: 1.5 to 1.8 pen
# widths in the generated "thick" pictures that were once refused as dots.
_DOT = 1.3

# A group at least _TWO_WIDE times as wide as tall may be two digits that touch; it is
# cut when the two parts read with a confidence (geometric mean) _SPLIT_GAIN above
# the whole's, each at least _SURE: a half of one digit often reads as some digit,
# but rarely as surely as a whole one does.
_TWO_WIDE, _SPLIT_GAIN, _SURE = 0.9, 0.05, 0.9

# The same for the only group of ink in a picture, which is one digit unless it is at
# least this much wider than tall (MNIST's digits are at most about as wide as tall).
_TWO_WIDE_ALONE = 1.3

# In a number, one digit or two is decided by the model's log-probabilities plus a
# prior from the group's width in the number's digit heights (the median height of its
# other groups: digits of one number are about equally tall, while widths vary, a 1
# being a third of a 0): the log-odds of two digits grow by _WIDTH_ODDS per digit
# height of width and are even at _EVEN_WIDTH. In the generated numbers of 2-6 digits
# (tests/handwriting_pictures.py, seeds 1 and 2), groups that are one digit are 0.98
# such heights wide (median; 95th percentile 1.13), two touching digits 1.35 (5th
# percentile 1.04); these values made the fewest wrong decisions there (19 of 928).
_WIDTH_ODDS, _EVEN_WIDTH = 3.0, 1.2

# The model's probabilities are softened by this temperature before a cut is weighed
# (temperature scaling: Guo, Pleiss, Sun & Weinberger, "On calibration of modern neural
# networks", ICML 2017): a perceptron reads half a digit, or two digits run together, as
# surely as a whole one, and log-probabilities near 1 would then say nothing. Chosen on
# the generated numbers of seeds 1 and 2 (tests/handwriting_pictures.py), where 1.5 to 3
# did about equally well (892 numbers of 1000 read right untempered, 898 at 2); seed 0,
# not looked at in the choice, went from 443 to 449 of 500. The probabilities that
# _SURE and _PART_SURE bound are these softened ones.
_TEMPERATURE = 2.0

# Each part of a cut must be read with at least this probability.
_PART_SURE = 0.5

# Digits smaller than this (working pixels), or with strokes thinner than _THIN, are
# looked at again in more detail.
_CLOSE_LOOK, _THIN = 64, 2.5

# A piece under this fraction of a group's ink, left just beside a cut, is the end of a
# stroke from the other side (an arc of the next digit reaching over), not a part.
_SLIVER = 0.05


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


def read_digits(gray, invert: str = "auto", *, name: str = "image",
                classify=None) -> list[Digit]:
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
    classify : callable, optional
        A model's probabilities: uint8 (k, 784) images to float (k, n_classes), such
        as ``model.predict_proba``. When given, a group of ink wide enough to hold two
        digits that touch is cut where the model reads the two parts with more
        confidence than the whole, weighed in a number by the group's width against
        its other digits' height (segmentation by recognition: LeCun, Bottou,
        Bengio & Haffner, "Gradient-based learning applied to document recognition",
        Proc. IEEE 86(11), 1998, §VI.A). Without it, only thin joins are cut.

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

    try:
        cv2 = cv2_module()
        height, width = np.shape(gray)[:2]
        ink, groups, offset = _locate(cv2, gray, invert)
        if classify is not None:
            groups = _recognised(cv2, ink.level, groups, classify)
        digits = []
        for mask, (top, left, bottom, right) in groups:
            image = mnist_box(cv2, _gated(cv2, ink.level, mask, top, left, bottom, right))
            check_ink(image, name)
            f = ink.factor
            # Within the picture: a sliver thinner than the factor was reduced less.
            box = (min(int(offset[0] + top * f), height), min(int(offset[1] + left * f), width),
                   min(int(offset[0] + bottom * f), height), min(int(offset[1] + right * f), width))
            digits.append(Digit(image, box))
    except BlankImageError:
        raise blank_error(name) from None  # one refusal, whatever found no ink
    except ImageError as exc:
        raise type(exc)(f"{name}: {exc}") from None
    return digits


def _locate(cv2, gray, invert: str = "auto"):
    """(InkMap, digit groups, (row, column) offset of the map's origin in the picture).

    The picture is analysed at `default_work_side`; when the digits found there are
    small (under `_CLOSE_LOOK` working pixels) or thinly drawn, and the picture has
    more detail, their surroundings are analysed again in more detail: a small digit
    in a large photo, a fine pen on a large canvas.
    """
    g = as_gray_uint8(gray)
    ink = find_ink(g, invert)
    # A blob that looks like a dot when shrunk may be a small digit drawn with a broad
    # marker, whose loops filled in: with more detail to see, it is looked at closer
    # before it is called a dot.
    groups = _digit_groups(cv2, ink.level, keep_dots=ink.factor > 1)
    top = min(b[0] for _, b in groups)
    left = min(b[1] for _, b in groups)
    bottom = max(b[2] for _, b in groups)
    right = max(b[3] for _, b in groups)
    # A digit's height says what detail it has (a number is wide however small).
    size = max(b[2] - b[0] for _, b in groups)
    union = ink.level[top:bottom, left:right] >= _CORE
    stroke = stroke_width(union)
    f = ink.factor
    if f == 1:  # dots already dropped
        return ink, groups, (0, 0)
    if size >= _CLOSE_LOOK and stroke >= _THIN:
        return ink, _drop_dots(cv2, ink.level, groups), (0, 0)
    # A finer factor: the digits at least twice _CLOSE_LOOK tall, strokes _THIN wide.
    finer = max(1, int(min(f * size / (2 * _CLOSE_LOOK), f * stroke / _THIN)))
    if finer >= f:
        return ink, _drop_dots(cv2, ink.level, groups), (0, 0)
    # A margin of half the digits' size each side leaves paper enough to measure.
    m = size // 2 + 1
    y0, x0 = max(0, (top - m) * f), max(0, (left - m) * f)
    y1, x1 = min(g.shape[0], (bottom + m) * f), min(g.shape[1], (right + m) * f)
    closer = g[y0:y1, x0:x1]
    sheet = None
    if ink.paper is not None:  # the sheet as found in the whole picture
        part = ink.paper[y0 // f:y1 // f + 1, x0 // f:x1 // f + 1]  # y0, x0: multiples of f
        sheet = np.repeat(np.repeat(part, f, axis=0), f, axis=1)[:y1 - y0, :x1 - x0]
        sheet = np.pad(sheet, ((0, closer.shape[0] - sheet.shape[0]),
                               (0, closer.shape[1] - sheet.shape[1])))
    ink = find_ink(closer, "yes" if ink.dark_ink else "no",
                   work_side=math.ceil(max(closer.shape) / finer), sheet=sheet)
    return ink, _digit_groups(cv2, ink.level), (y0, x0)


def read_digits_file(path: str | os.PathLike, invert: str = "auto", *,
                     classify=None) -> list[Digit]:
    """`load_image` then `read_digits`; messages name `path` (or a file object's ``name``).

    Parameters
    ----------
    path : str, os.PathLike or binary file object
        As for `mnist_xp.images.load_image`.
    invert : {"auto", "yes", "no"}, default "auto"
    classify : callable, optional
        See `read_digits`.

    Returns
    -------
    list of Digit

    Raises
    ------
    ImageError
        As `load_image` and `read_digits` do.
    """
    from .decode import load_image_scaled

    name = getattr(path, "name", "image") if hasattr(path, "read") else path
    gray, scale = load_image_scaled(path, DECODE_SIDE)
    digits = read_digits(gray, invert=invert, name=str(name), classify=classify)
    if scale == 1:
        return digits
    # A large JPEG was decoded smaller: boxes in the picture's own pixels.
    return [Digit(d.image, tuple(int(round(v * scale)) for v in d.box)) for d in digits]


def _whole_ink(cv2, gray, invert: str = "auto") -> np.ndarray:
    """All the digits' ink as one crop (float32 levels): the picture read as one digit."""
    ink, groups, _ = _locate(cv2, gray, invert)
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


def _digit_groups(cv2, level: np.ndarray, keep_dots: bool = False):
    """[(bool mask of the digit's components, (top, left, bottom, right))], left to right.

    With `keep_dots`, groups that look like dots at this scale are kept (to be looked
    at closer: a small digit in a broad marker fills its loops into a blob).
    """
    core = (level >= _CORE).astype(np.uint8)
    # Connected across one-pixel gaps: a faint, thin stroke breaks up at the threshold.
    n, labels, stats, _ = cv2.connectedComponentsWithStats(
        cv2.dilate(core, np.ones((3, 3), np.uint8)), connectivity=8)
    if n <= 1:
        raise BlankImageError("no ink found: the picture is blank or its contrast is too low")
    h, w = level.shape
    x0, y0 = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
    cw, ch = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
    # A long thin band along the picture's edge is the edge of a desk, a shadow or a
    # page, not writing (a digit that runs off the edge is tall too, and a dash is no
    # digit).
    along = [i for i in range(1, n) if
             ((y0[i] == 0 or y0[i] + ch[i] == h) and cw[i] >= 0.5 * w and ch[i] <= 0.15 * h)
             or ((x0[i] == 0 or x0[i] + cw[i] == w) and ch[i] >= 0.5 * h and cw[i] <= 0.15 * w)
             # a margin rule or a fold: straight across nearly all the page, and thin
             # (thin for its length: it may lean a few degrees)
             or (cw[i] >= 0.8 * w and ch[i] <= max(0.03 * h, 0.06 * cw[i]))
             or (ch[i] >= 0.8 * h and cw[i] <= max(0.03 * w, 0.06 * ch[i]))
             # a line across much of the picture, five times as long as high: an
             # underline, a sheet's edge (no digit is several times wider than tall)
             or (cw[i] >= 0.3 * w and cw[i] >= 5 * ch[i])]
    area = stats[:, cv2.CC_STAT_AREA].astype(np.int64)
    # The desk showing as margins on two or more sides: one thin frame-like piece
    # reaching across the picture both ways, with ink on under a tenth of its box.
    along += [i for i in range(1, n) if cw[i] >= 0.8 * w and ch[i] >= 0.8 * h
              and area[i] < 0.1 * cw[i] * ch[i]]
    ids = [i for i in range(1, n) if i not in along]
    if not ids:
        raise BlankImageError("no ink found: the picture is blank or its contrast is too low")
    big_area = int(area[ids].max())
    big = [i for i in ids if area[i] >= 0.1 * big_area]
    small = [i for i in ids if area[i] < 0.1 * big_area and area[i] >= max(4, 0.005 * big_area)]
    # Groups of components by overlapping columns: the large ones first, each joining
    # the group it overlaps most; then the small ones (a 5's bar, the dot of a broken
    # stroke) join the group they overlap, and are specks if they overlap none.
    tallest = max(ch[j] for j in big)
    groups: list[list] = []
    for i in sorted(big, key=lambda i: -area[i]) + sorted(small, key=lambda i: -area[i]):
        b = [int(x0[i]), int(x0[i] + cw[i]), int(y0[i]), int(y0[i] + ch[i]), [i]]
        best, best_overlap = None, 0.0
        # A short piece joins on a smaller overlap: a 5's bar may stick out to the right.
        least = 0.5 if ch[i] >= 0.6 * tallest else 0.2
        for g in groups:
            overlap = (min(g[1], b[1]) - max(g[0], b[0])) / min(g[1] - g[0], b[1] - b[0])
            shared = min(g[3], b[3]) - max(g[2], b[2])  # rows in common; negative: a gap
            stacked = -0.25 * tallest <= shared < 0.3 * min(g[3] - g[2], b[3] - b[2])
            # One just above the other and touching columns: a stroke broken across its
            # length (a second line of writing lies further off).
            need = -0.1 if stacked else least
            if overlap > max(need, best_overlap) and _one_digit(g, b):
                best, best_overlap = g, max(overlap, 0.0)
        if best is not None:
            best[0], best[1] = min(best[0], b[0]), max(best[1], b[1])
            best[2], best[3] = min(best[2], b[2]), max(best[3], b[3])
            best[4] += b[4]
        elif i in big or ch[i] >= 0.4 * tallest:
            groups.append(b)
    highest = max(g[3] - g[2] for g in groups)
    groups = [g for g in groups if g[3] - g[2] >= 0.4 * highest]
    out = []
    for left, right, top, bottom, ids in sorted(groups, key=lambda g: (g[0] + g[1]) / 2):
        mask = np.isin(labels, ids)
        for part in _split(mask, core, top, bottom, left, right):
            out.append(part)
    return out if keep_dots else _drop_dots(cv2, level, out)


def _drop_dots(cv2, level: np.ndarray, groups):
    """`groups` without the dots (`_dot`); BlankImageError if nothing else is left."""
    core = level >= _CORE
    groups = [(m, (t, l, b, r)) for m, (t, l, b, r) in groups
              if not _dot(cv2, m[t:b, l:r] & core[t:b, l:r])]
    if not groups:
        raise BlankImageError("no ink found: only dots or specks")
    return groups


def _dot(cv2, ink: np.ndarray) -> bool:
    """Whether a group's ink is a dot: a round blob, about as tall and wide as the pen.

    The pen's width is twice the largest distance from the ink's edge (the distance
    transform); a digit is several pen widths tall. A lone dot is a blank picture, not
    an 8.
    """
    if not ink.any():
        return True
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    pen = 2 * float(cv2.distanceTransform(np.pad(ink, 1).view(np.uint8), cv2.DIST_L2, 3).max())
    return (rows[-1] - rows[0] + 1) < _DOT * pen and (cols[-1] - cols[0] + 1) < _DOT * pen


def _one_digit(g, b) -> bool:
    """Whether two overlapping column ranges (boxes [left, right, top, bottom, ...]) are one digit.

    Not when both are tall side by side (two 1s leaning together, "11"): one digit's
    separate strokes are a small one beside a large one (a 5's bar), or one above
    the other (a digit cut by a ruled line).
    """
    hg, hb = g[3] - g[2], b[3] - b[2]
    rows_shared = min(g[3], b[3]) - max(g[2], b[2])
    return min(hg, hb) < 0.6 * max(hg, hb) or rows_shared < 0.3 * min(hg, hb)


def _split(mask, core, top, bottom, left, right, height=None):
    """[(mask, box)]: one group, cut at thin necks into parts of digit-like size.

    A cut must cross no more ink than about one stroke, and leave on each side a part
    at least 60% as tall as the group (`height`) and a third as wide as that is tall:
    so a 2's long
    tail or a 7's bar is never cut off, while two digits joined by a thin touch are
    parted. (Digits that touch more broadly are parted by recognition, `_recognised`.)
    """
    h, w = bottom - top, right - left
    height = h if height is None else height
    whole = [(mask, (top, left, bottom, right))]
    if w < 1.3 * h:
        return whole
    inside = mask[top:bottom, left:right] & core[top:bottom, left:right].astype(bool)
    columns = inside.sum(axis=0)
    stroke = stroke_width(inside)
    lo, hi = max(1, int(0.35 * height)), w - max(1, int(0.35 * height))
    if hi <= lo:
        return whole
    for cut in lo + np.argsort(columns[lo:hi], kind="stable")[:16]:
        if columns[cut] > 1.2 * stroke:
            return whole
        tall = [np.flatnonzero(side.any(axis=1)) for side in (inside[:, :cut], inside[:, cut:])]
        if all(r.size and r[-1] - r[0] + 1 >= 0.6 * height for r in tall):
            break
    else:
        return whole
    parts = []
    for (a, b), rows in zip(((left, left + cut), (left + cut, right)), tall):
        m = np.zeros_like(mask)
        m[top:bottom, a:b] = mask[top:bottom, a:b]
        parts.extend(_split(m, core, top + int(rows[0]), top + int(rows[-1]) + 1, a, b, height))
    return parts


def _boxed(m):
    """(m, its ink's box (top, left, bottom, right)), or None if `m` holds no ink."""
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if rows.size == 0:
        return None
    return m, (int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)


def _cut(cv2, mask, top, left, bottom, right, cut):
    """The two parts of a group cut near column `left + cut`: [(mask, box), (mask, box)].

    Not a straight cut: a band three pixels wide is taken out at the column, and each
    piece of ink that falls apart is given to the side its centre lies on, so that a
    digit leaning over its neighbour keeps what leans (overlapping 0s, a 7's bar over
    the next digit). The band goes to the side of each of its columns. A sliver just
    beside the band (under `_SLIVER` of the ink) goes to neither: it is the end of a
    stroke from the other side, which would read as part of this digit.
    """
    box = mask[top:bottom, left:right]
    cut_off = box.copy()
    cut_off[:, max(0, cut - 1):cut + 2] = False
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(
        cut_off.view(np.uint8), connectivity=8)
    on_left = np.zeros(n, bool)
    on_left[1:] = centroids[1:, 0] < cut
    x0, x1 = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_LEFT] + stats[:, cv2.CC_STAT_WIDTH]
    area = stats[:, cv2.CC_STAT_AREA]
    sliver = (area < _SLIVER * max(1, int(area[1:].sum()))) & ((x1 >= cut - 1) & (x0 <= cut + 2))
    sliver[0] = False
    sides = []
    columns = np.arange(box.shape[1])[None, :]
    for want in (True, False):
        part = (labels > 0) & (on_left[labels] == want) & ~sliver[labels]
        band = box & ((columns < cut) == want) & (labels == 0)
        full = np.zeros_like(mask)
        full[top:bottom, left:right] = part | band
        sides.append(full)
    out = []
    for full in sides:
        found = _boxed(full[top:bottom, left:right])
        if found is None:
            return None
        _, (t, l, b, r) = found
        out.append((full, (top + t, left + l, top + b, left + r)))
    return out


def _tempered(probs: np.ndarray) -> np.ndarray:
    """`probs` (k, n_classes) softened by `_TEMPERATURE`: softmax(log(probs) / T)."""
    z = np.log(np.maximum(probs, 1e-30)) / _TEMPERATURE
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def _two(whole: float, a: float, b: float, width: float, tall: float | None) -> bool:
    """Whether a group is two digits: read whole with probability `whole`, cut with `a`, `b`.

    `tall` is the number's typical digit height (None for a picture's only group, which
    has no neighbours to measure by): then two digits need parts read surely and
    clearly better than the whole. In a number, the parts' log-probabilities against
    the whole's, plus the prior log-odds for a group `width` wide (see _WIDTH_ODDS).
    """
    if tall is None:
        return min(a, b) >= _SURE and math.sqrt(a * b) > whole + _SPLIT_GAIN
    if min(a, b) < _PART_SURE:
        return False
    evidence = math.log(a) + math.log(b) - math.log(max(whole, 1e-6))
    return evidence + _WIDTH_ODDS * (width / tall - _EVEN_WIDTH) > 0


def _recognised(cv2, level, groups, classify, depth: int = 0, tall: float | None = None):
    """`groups`, each group that reads better as two digits cut in two (see `read_digits`).

    `tall` is the digit height a group's width is measured in to say how likely it
    holds two digits: the median height of the number's other groups as first found
    (not the group's own: a squat 0 beside a tall 2 would measure itself). A picture's
    only group and its parts have none (`_two`).
    """
    from .normalize import mnist_box

    core = level >= _CORE
    heights = [box[2] - box[0] for _, box in groups]
    # One component is one digit unless it is clearly too wide for one: a number has
    # other digits beside it.
    alone = len(groups) == 1 and depth == 0
    out = []
    for i, (mask, (top, left, bottom, right)) in enumerate(groups):
        h, w = bottom - top, right - left
        if depth == 0 and not alone:
            tall = float(np.median(heights[:i] + heights[i + 1:]))
        wide_enough = w >= _TWO_WIDE_ALONE * h if alone else (
            w >= _TWO_WIDE * h)
        if not wide_enough or depth >= 3:
            out.append((mask, (top, left, bottom, right)))
            continue
        inside = mask[top:bottom, left:right] & core[top:bottom, left:right]
        # Cuts every sixteenth of the height, leaving parts at least 60% as tall as the
        # group and as wide as a quarter of its height: a 2's tail or a 7's bar is
        # never a digit.
        margin = max(1, int(0.25 * h))
        cuts = []
        for cut in range(margin, w - margin + 1, max(1, h // 16)):
            rows = [np.flatnonzero(side.any(axis=1)) for side in (inside[:, :cut], inside[:, cut:])]
            if all(r.size and r[-1] - r[0] + 1 >= 0.6 * h for r in rows):
                cuts.append(cut)
        if not cuts:
            out.append((mask, (top, left, bottom, right)))
            continue
        pieces = [(mask, (top, left, bottom, right))]
        for cut in cuts:
            parts = _cut(cv2, mask, top, left, bottom, right, cut)
            if parts is not None:
                pieces.extend(parts)
        if len(pieces) == 1:
            out.append((mask, (top, left, bottom, right)))
            continue
        images = np.stack([mnist_box(cv2, _gated(cv2, level, m, *box)).reshape(-1)
                           for m, box in pieces])
        probs = np.asarray(classify(images), dtype=np.float64)
        best = _tempered(probs).max(axis=1)
        # The cut whose parts read best together; two digits that overlap often read
        # as one surely ("00" as an 8), so the width weighs in (`_two`).
        k = int(np.argmax(best[1::2] * best[2::2]))
        if _two(best[0], best[1 + 2 * k], best[2 + 2 * k], w, tall):
            out.extend(_recognised(cv2, level, [pieces[1 + 2 * k], pieces[2 + 2 * k]],
                                   classify, depth + 1, tall))
        else:
            out.append((mask, (top, left, bottom, right)))
    return out
