"""Finding the ink in a picture: the paper first, then what is written on it (OpenCV).

`find_ink` turns a greyscale picture into an ink map, 0 (paper) to 1 (solid ink),
on a copy shrunk by a whole factor (`default_work_side`), in five steps, each a
standard operation of document image analysis:

1. **The sheet.** A sheet photographed on a darker desk (or a dark one on a lighter
   desk) is the largest light region of Otsu's threshold, on a small copy closed to
   wipe out the ink, that covers most of what is light, is convex, is a polygon of
   at most six corners, has a sharp edge (a shadow's slope is not one), has desk,
   not paper, along the picture's edge off it, and has marks on under a fifth of it
   (`_find_paper`). Everything off it takes the paper's
   tone. Without such a sheet, the whole picture is the paper.
2. **The polarity** comes from the marks against the paper's local tone, a running
   median (`_ink_is_dark`): whether they are mostly darker or lighter; light marks
   holding two thirds of the picture's edge are the paper between dense dark strokes.
   Where that is undecided because the ink is dense (a thick pen cropped tight), the
   ink is taken as dark unless two thirds of the picture's edge is dark.
3. **The background.** A closing (for dark ink) removes the ink and keeps the paper's
   own brightness, shadows and uneven light included; the ink is what the picture
   lacks against it (a black-hat). Its window is an eighth of the picture, or three
   times the strokes' width where Otsu's threshold finds sharp-edged strokes that
   wide (the whole picture where they are as wide as half of it), so thick pens and
   tight crops keep their ink. It is computed on a copy of at
   most `_BACKGROUND_SIDE` pixels, which is what makes it fast.
4. **Ruled lines.** Two or more long, thin, parallel lines across the page (lined or
   squared paper), each with no other ink just above and below it, are taken out,
   and the strokes they crossed are bridged again; ink running across a line for
   more than its thickness (a stroke lying along it) stays.
5. **The stretch.** Contrast over the paper's noise becomes ink levels 0..1; nothing
   standing out by 24 grey levels is a blank picture.

References: N. Otsu, "A threshold selection method from gray-level histograms",
IEEE Trans. SMC 9(1), 1979; P. Soille, *Morphological Image Analysis*, 2nd ed.,
Springer 2003 (top-hat and black-hat transforms, §4.4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import BlankImageError, ImageError, exception_line
from .decode import INSTALL_HINT

__all__ = ["INVERT_CHOICES", "InkMap", "WORK_SIDE", "DECODE_SIDE", "cv2_module", "find_ink", "as_gray_uint8", "stroke_width"]

#: Values of ``invert``: "auto" (detect), "yes" (dark ink on light paper), "no".
INVERT_CHOICES = ("auto", "yes", "no")

#: Pictures are shrunk (area averaging) to at most this side before the analysis: a
#: digit needs no more, and a 12-megapixel photo is then nearly as quick as a drawing.
WORK_SIDE = 768

#: Files may be decoded at reduced size down to this side (JPEG's own 1/2, 1/4, 1/8
#: decoding): twice the analysis's, so a small digit in a large photo keeps its detail
#: for the closer look.
DECODE_SIDE = 2 * WORK_SIDE

# The background is estimated on a copy at most this big: a smooth surface needs no
# more, and morphology with wide windows is cheap there.
_BACKGROUND_SIDE = 128

# Ink must differ from the paper by at least this much (of 255) to count; a blank
# page photographed or JPEG-compressed varies by less.
_MIN_CONTRAST = 24.0



def cv2_module():
    """OpenCV's module, or an ImageError saying how to install it."""
    try:
        import cv2
    except ModuleNotFoundError as exc:
        if exc.name != "cv2":  # cv2 is there but something it imports is not
            raise ImageError(f"OpenCV could not be loaded ({exception_line(exc)})") from None
        raise ImageError(f"finding digits in pictures needs OpenCV: {INSTALL_HINT}") from None
    except (ImportError, MemoryError, OSError) as exc:
        # Installed, but its shared library failed to load: out of address space under a
        # memory limit, a missing system library... Installing it again would not help.
        raise ImageError(f"OpenCV could not be loaded ({exception_line(exc)})") from None
    return cv2


@dataclass(frozen=True)
class InkMap:
    """Where the ink is in a picture.

    Attributes
    ----------
    level : numpy.ndarray
        float32, shape (h, w): 0 paper (or off the paper) to 1 solid ink, at the
        working scale.
    factor : int
        Pixels of the picture per working pixel, along each side (1 or more).
    dark_ink : bool
        Whether the ink was darker than the paper.
    paper : numpy.ndarray or None
        uint8 (h, w), 1 on the sheet of paper found on a desk; None when the whole
        picture is the paper.
    """

    level: np.ndarray
    factor: int
    dark_ink: bool
    paper: np.ndarray | None = None


def as_gray_uint8(gray) -> np.ndarray:
    """`gray` (uint8, bool, ints in 0..255 or floats in [0, 1]) as a uint8 (H, W) array."""
    a = np.asarray(gray)
    if a.ndim != 2 or 0 in a.shape:
        raise ValueError(f"expected a 2-D greyscale image (H, W), got shape {a.shape}")
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * np.uint8(255)
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or a.min() < 0 or a.max() > 1:
            raise ValueError("float pixels must be finite and in [0, 1]")
        return np.rint(a * 255).astype(np.uint8)
    if a.dtype.kind in "iu":
        if a.min() < 0 or a.max() > 255:
            raise ValueError(f"integer pixels must be in 0..255, found {a.min()}..{a.max()}")
        return a.astype(np.uint8)
    raise ValueError(f"unsupported pixel dtype {a.dtype}")


def find_ink(gray, invert: str = "auto", work_side: int | None = None, *,
             sheet: np.ndarray | None = None) -> InkMap:
    """The ink map of a picture of handwriting.

    Parameters
    ----------
    gray : array_like, shape (H, W)
        Greyscale pixels: uint8 (0 black to 255 white), booleans, integers in
        0..255 or floats in [0, 1].
    invert : {"auto", "yes", "no"}, default "auto"
        "yes": the ink is darker than the paper; "no": lighter; "auto": detect it.
    work_side : int, optional
        The picture is shrunk by a whole factor (area averaging) until its longer
        side is at most this; default `default_work_side`.
    sheet : numpy.ndarray, optional
        A mask (H, W) of the sheet of paper, when already known (1 on the sheet);
        otherwise it is looked for.

    Returns
    -------
    InkMap

    Raises
    ------
    BlankImageError
        If nothing stands out from the paper by at least 24 of 255 grey levels.
    ImageError
        If OpenCV is missing.
    ValueError
        If `gray` is not a 2-D image in a supported range, or `invert` is unknown.
    """
    if invert not in INVERT_CHOICES:
        raise ValueError(f"invert must be one of {', '.join(INVERT_CHOICES)}; got {invert!r}")
    cv2 = cv2_module()
    g = as_gray_uint8(gray)
    if work_side is None:
        work_side = default_work_side(g.shape)
    factor = max(1, math.ceil(max(g.shape) / work_side))
    g = reduce(cv2, g, factor)
    # The sheet first (light on a darker desk, or dark on a lighter one), then the
    # polarity of the marks on it.
    if sheet is not None:
        paper = reduce(cv2, np.asarray(sheet, np.uint8) * np.uint8(255), factor)
        paper = (paper >= 255).astype(np.uint8) if not paper.all() else None
    else:
        sheets = [p for p in (_find_paper(cv2, g), _find_paper(cv2, 255 - g)) if p is not None]
        paper = max(sheets, key=lambda p: p[1])[0] if sheets else None
    if paper is not None:
        # The desk takes the paper's tone, so that its edge is no mark on the paper.
        g = g.copy()
        on = paper.astype(bool)
        g[~on] = np.uint8(np.median(g[on]))
    dark = _ink_is_dark(cv2, g, paper) if invert == "auto" else invert == "yes"
    contrast = _contrast(cv2, g, paper, dark)
    noise = _noise(cv2, contrast, paper)
    # Ruling first, found wherever anything stands out of the noise, so that faint
    # lines are whole lines; then what is left sets the ink's strength.
    _remove_ruled_lines(cv2, contrast, paper, max(4 * noise, _MIN_CONTRAST / 2))
    level = _stretch(contrast, paper, noise)
    if level is None:
        raise BlankImageError("no ink found: the picture is blank or its contrast is too low")
    return InkMap(level, factor, dark, paper)


def default_work_side(shape) -> int:
    """The working resolution for a picture of `shape`: a quarter of it, within 192..768.

    Small enough that a drawing is analysed in about a millisecond, large enough that
    the strokes of a small digit in a large photo keep most of their contrast; a digit
    still small at this scale is looked at again, closer (`mnist_xp.images.digits`).
    """
    return int(min(WORK_SIDE, max(192, max(shape) / 4)))


def reduce(cv2, g: np.ndarray, factor: int) -> np.ndarray:
    """`g` shrunk by an integer `factor` by area averaging (OpenCV's fast path for it)."""
    if factor <= 1:
        return g
    fy, fx = min(factor, g.shape[0]), min(factor, g.shape[1])
    h, w = g.shape[0] // fy, g.shape[1] // fx
    # Whole blocks only: a fractional ratio takes OpenCV's general path, 20x slower.
    return cv2.resize(g[:h * fy, :w * fx], (w, h), interpolation=cv2.INTER_AREA)


# -- the paper ---------------------------------------------------------------------------

def _small(cv2, g: np.ndarray, side: int) -> tuple[np.ndarray, int]:
    """`g` shrunk by a whole factor to at most `side` pixels, and the factor."""
    factor = max(1, math.ceil(max(g.shape) / side))
    return reduce(cv2, g, factor), factor


def _find_paper(cv2, g: np.ndarray):
    """(uint8 mask, area) of a sheet lying on a darker ground, or None if there is none.

    A sheet is the largest bright region (on a small copy closed to wipe out the ink)
    that covers a fifth to nearly all of the picture and most of what is bright, is
    convex, is a polygon of at most six corners (four, and the picture's own corners
    where it runs off the edge; a round blob, such as a thick 0, is not), has a sharp
    edge (not a shadow's slope), has the desk (dark) along at least 70% of the
    picture's edge off it, and has marks on under a fifth of it (none: a blank
    sheet).
    """
    small, f = _small(cv2, g, 160)
    if min(small.shape) < 16:
        return None
    # Close away the ink (a few per cent of the frame), so that the sheet is one region;
    # no more, or a desk showing as a thin margin would be closed away too.
    k = max(3, round(0.025 * max(small.shape)) | 1)
    clean = cv2.morphologyEx(small, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k)))
    t, bright = cv2.threshold(clean, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    counts = np.bincount(clean.ravel(), minlength=256)
    tones = np.arange(256)
    above, below = counts[int(t) + 1:], counts[:int(t) + 1]
    if above.sum() == 0 or below.sum() == 0:
        return None
    if (above @ tones[int(t) + 1:]) / above.sum() - (below @ tones[:int(t) + 1]) / below.sum() \
            < 2 * _MIN_CONTRAST:
        return None  # one tone throughout: no desk
    frame = small.size
    # The largest bright region's outline (outer contours: one per region, holes aside).
    contours, _ = cv2.findContours(bright, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    outline = max(contours, key=cv2.contourArea)
    hull = cv2.convexHull(outline)
    hull_area = cv2.contourArea(hull)
    if not 0.2 * frame <= hull_area <= 0.995 * frame:
        return None
    corners = cv2.approxPolyDP(hull, 0.01 * cv2.arcLength(hull, True), True)
    if len(corners) > 6:
        return None
    (_, (rw, rh), _) = cv2.minAreaRect(hull)
    filled = np.zeros_like(bright)
    cv2.drawContours(filled, [outline], -1, 1, thickness=cv2.FILLED)
    if cv2.contourArea(outline) < 0.9 * hull_area or hull_area < 0.85 * rw * rh:
        return None  # not a sheet: a sheet is convex and nearly rectangular
    # A sheet's edge is a step, not the slope of a shadow: the tone changes by as
    # much just inside and outside it as a digit differs from paper.
    sheet = np.zeros_like(bright)
    cv2.fillPoly(sheet, [hull.reshape(-1, 2)], 1)
    ring = np.ones((5, 5), np.uint8)
    inner = sheet.astype(bool) & ~cv2.erode(sheet, ring).astype(bool)
    outer = cv2.dilate(sheet, ring).astype(bool) & ~sheet.astype(bool)
    if not outer.any() or np.median(clean[inner]) - np.median(clean[outer]) < 2 * _MIN_CONTRAST:
        return None
    # The desk is what lies around the sheet: dark all along the picture's edge off the
    # sheet. Off the "sheet" that is the paper inside a thick digit cropped to its ink
    # (a 7's hook) lies more paper, beside the strokes.
    edge = np.ones_like(sheet, bool)
    edge[1:-1, 1:-1] = False
    off = edge & ~sheet.astype(bool)
    if np.count_nonzero(bright[off]) > 0.3 * np.count_nonzero(off):
        return None
    # A sheet holds what is written on it: dark marks inside, in the unclosed picture.
    # What is written on a sheet covers little of it (a blank sheet is a sheet too:
    # then nothing is written, and the picture is blank).
    marks = np.count_nonzero(filled.astype(bool) & (clean.astype(np.int16) - small > _MIN_CONTRAST))
    if marks >= 0.2 * np.count_nonzero(filled):
        return None
    # And a sheet is most of what is light: the white beside a thick stroke of a digit
    # cropped tight is one of several light pieces.
    if cv2.contourArea(outline) < 0.8 * np.count_nonzero(bright):
        return None
    mask = np.zeros(g.shape, np.uint8)
    cv2.fillPoly(mask, [np.rint((hull.reshape(-1, 2) + 0.5) * f).astype(np.int32)], 1)
    # Step in from the sheet's edge, where its shadow and the desk blur into it.
    m = max(1, round(0.03 * min(g.shape)))
    mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_RECT, (2 * m + 1, 2 * m + 1)))
    return mask, hull_area


# -- polarity, background and contrast ---------------------------------------------------

def _background(cv2, g: np.ndarray, dark: bool, window: float) -> np.ndarray:
    """The paper's brightness under the ink, float32 (h, w), for ink narrower than `window`/2 px.

    For dark ink: a closing (dilate, then erode) with a square window of `window`
    pixels, on a copy shrunk by max-pooling, so the ink vanishes and shading stays.
    """
    src = g if dark else 255 - g
    f = min(1.0, _BACKGROUND_SIDE / max(src.shape))
    if f < 1:
        pool = max(1, math.ceil(1 / f))
        src = cv2.dilate(src, cv2.getStructuringElement(cv2.MORPH_RECT, (pool, pool)))
        size = (max(1, round(src.shape[1] * f)), max(1, round(src.shape[0] * f)))
        small = cv2.resize(src, size, interpolation=cv2.INTER_NEAREST)
    else:
        small = src
    k = max(3, min(2 * max(small.shape) + 1, round(window * f) | 1))
    closed = cv2.morphologyEx(small, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k)))
    if closed.shape != g.shape:
        closed = cv2.resize(closed, (g.shape[1], g.shape[0]), interpolation=cv2.INTER_LINEAR)
    return closed.astype(np.float32)


def _raw_contrast(cv2, g: np.ndarray, dark: bool, window: float) -> np.ndarray:
    """How much each pixel lacks against the paper's brightness (0..255), float32."""
    src = g.astype(np.float32) if dark else 255 - g.astype(np.float32)
    c = _background(cv2, g, dark, window) - src
    return np.maximum(c, 0, out=c)


def _first_window(g: np.ndarray) -> float:
    """The background window to start with: an eighth of the picture's longer side."""
    return max(5.0, max(g.shape) / 8)


def _ink_is_dark(cv2, g: np.ndarray, paper) -> bool:
    """Whether the marks that stand out from the paper's local tone are mostly darker.

    The paper's tone is a running median over a quarter of the picture (ink covers
    less than half of any such window), so shading cancels and only marks remain; all
    on a copy of at most `_BACKGROUND_SIDE` pixels, where this is cheap.
    Summed deviation beyond the noise decides, not extremes: one hot pixel cannot,
    and a digit covering well under 1% of a large picture still can. Unless marks are
    sparse (under a fifth of the picture) and one side has three times the other's,
    the local tone was partly ink (a thick pen cropped tight): then the ink is dark
    unless the picture's edge is mostly (two thirds) dark.
    """
    small, _ = _small(cv2, g, _BACKGROUND_SIDE)
    tiny, _ = _small(cv2, small, _BACKGROUND_SIDE // 2)
    tone = cv2.medianBlur(tiny, max(3, (max(tiny.shape) // 4) | 1))
    if tone.shape != small.shape:
        tone = cv2.resize(tone, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_LINEAR)
    r = small.astype(np.float32) - tone
    if paper is not None:
        on = cv2.resize(paper, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_NEAREST)
        values = r[on.astype(bool)]
    else:
        values = r.ravel()
    margin = max(3 * _spread(values), _MIN_CONTRAST / 2)
    dark = float(np.clip(-values - margin, 0, None).sum())
    light = float(np.clip(values - margin, 0, None).sum())
    marked = np.count_nonzero(np.abs(values) > margin)
    if marked < 0.2 * values.size and max(dark, light) >= 3 * min(dark, light):
        # Where dark ink covers over half of the picture (a thick pen cropped to its
        # ink), the local tone is the ink's, and the paper between the strokes stands
        # out as light "marks". Light marks holding two thirds of the picture's edge
        # are that paper: ink cropped tight touches the edge only here and there.
        return dark >= light or _light_edge(cv2, small) >= 2 / 3
    # Undecided: dense ink (a thick pen cropped tight) makes the local tone partly ink.
    # Then the paper is the phase (of Otsu's threshold) that holds most of the
    # picture's edge: ink cropped tight touches the edge, but only here and there.
    # A thick pen cropped tight may touch much of the edge: only a clearly dark edge
    # (under a third light) says light ink on a dark ground.
    return _light_edge(cv2, small) >= 1 / 3


def _light_edge(cv2, small: np.ndarray) -> float:
    """The fraction of the picture's edge in the light phase of Otsu's threshold."""
    t, _ = cv2.threshold(small, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    edge = np.concatenate([small[0], small[-1], small[1:-1, 0], small[1:-1, -1]])
    return np.count_nonzero(edge > t) / edge.size


def stroke_width(mask: np.ndarray) -> float:
    """Typical stroke width in pixels of a boolean mask: twice its area over its outline."""
    area = int(np.count_nonzero(mask))
    if area == 0:
        return 0.0
    outline = (int(np.count_nonzero(mask[1:] != mask[:-1]))
               + int(np.count_nonzero(mask[:, 1:] != mask[:, :-1])))
    return 2 * area / max(outline, 1)


def _contrast(cv2, g: np.ndarray, paper, dark: bool) -> np.ndarray:
    """The ink's contrast against the paper (0..255, float32), zero off the paper.

    The background window is an eighth of the picture, or three times the width of
    the strokes where they are wider than a third of that (a thick pen, a tight crop;
    see `_stroke_window`), so that the closing never mistakes a stroke for paper.
    """
    window = max(_first_window(g), _stroke_window(cv2, g, paper, dark))
    c = _raw_contrast(cv2, g, dark, window)
    if paper is not None:
        c *= paper
    return c


def _stroke_window(cv2, g: np.ndarray, paper, dark: bool) -> float:
    """Three times the strokes' width, from Otsu's ink phase, if its edges are sharp; else 0.

    Otsu's threshold splits a well-lit picture into ink and paper, but an unevenly lit
    one into light and shade. Ink has sharp edges (a step of the full contrast within
    a pixel or two), light and shade soft ones: only sharp edges are taken as strokes.
    """
    t, phase = cv2.threshold(g, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    ink = phase == (0 if dark else 1)
    if paper is not None:
        ink &= paper.astype(bool)
    if not ink.any() or ink.all():
        return 0.0
    step = abs(float(g[ink].mean()) - float(g[~ink].mean()))
    u8 = ink.view(np.uint8)
    edge = (cv2.dilate(u8, np.ones((3, 3), np.uint8)) != cv2.erode(u8, np.ones((3, 3), np.uint8)))
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    # Sobel's 3x3 kernel weighs a unit step by 4; a sharp edge's slope is about the
    # whole step over two pixels.
    slope = float(np.median(np.hypot(gx[edge], gy[edge]))) / 4
    if slope < step / 4:
        return 0.0
    width = stroke_width(ink)
    if width < 0.5 * min(g.shape):
        return 3 * width
    # As wide as half the picture: strokes of a thick digit cropped to its ink, where
    # the paper is only what shows between them (then the window spans the picture),
    # if they leave most of the picture's edge to the paper; otherwise it is the
    # ground itself (the paper, when told the ink is light and it is not).
    edge = np.concatenate([ink[0], ink[-1], ink[1:-1, 0], ink[1:-1, -1]])
    return 2.0 * max(g.shape) if np.count_nonzero(edge) < 0.5 * edge.size else 0.0


def _spread(values: np.ndarray) -> float:
    """Robust standard deviation (scaled median absolute deviation) of `values`."""
    if values.size > 4096:
        values = values[:: values.size // 4096]
    return 1.4826 * float(np.median(np.abs(values - np.median(values))))


def _sample(c: np.ndarray, paper) -> np.ndarray:
    """The contrast on the paper; a systematic sample is plenty for the statistics."""
    values = c[paper.astype(bool)] if paper is not None else c.ravel()
    return values[:: values.size // 65536] if values.size > 65536 else values


def _noise(cv2, c: np.ndarray, paper) -> float:
    """The paper's own noise in a contrast map: robust spread of Otsu's low phase.

    The low phase, because ink may cover more than half of a tight crop.
    """
    values = _sample(c, paper)
    t, _ = cv2.threshold(np.clip(values, 0, 255).astype(np.uint8).reshape(1, -1), 0, 1,
                         cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return _spread(values[values <= t])


def _stretch(c: np.ndarray, paper, noise: float) -> np.ndarray | None:
    """Contrast mapped to ink levels 0..1 (in place), or None if no ink stands out."""
    values = _sample(c, paper)
    floor = max(4 * noise, _MIN_CONTRAST / 2)
    candidates = values[values > floor]
    if candidates.size < 4:
        return None
    peak = float(np.percentile(candidates, 99))
    if peak < max(_MIN_CONTRAST, 6 * noise):
        return None
    # Below a quarter of the ink's strength is paper texture or JPEG noise.
    low = max(floor, 0.25 * peak)
    strong = candidates[candidates > low]
    high = float(np.percentile(strong, 90)) if strong.size else peak
    c -= low
    c /= max(high - low, 1e-3)
    return np.clip(c, 0, 1, out=c)


# -- ruled lines -------------------------------------------------------------------------

def _remove_ruled_lines(cv2, c: np.ndarray, paper, floor: float) -> None:
    """Take the lines of lined or squared paper out of contrast `c` (in place), bridging strokes.

    Marks are whatever stands above `floor`.
    """
    for axis in (0, 1):
        _remove_lines_along(cv2, c, paper, floor, axis)


def _remove_lines_along(cv2, level: np.ndarray, paper, floor: float, axis: int) -> None:
    """Remove horizontal (axis 0) or vertical (axis 1) ruled lines from `level`."""
    ink = (level > floor).astype(np.uint8)
    t = ink if axis == 0 else np.ascontiguousarray(ink.T)
    h, w = t.shape
    if paper is not None:
        p = paper if axis == 0 else paper.T
        cols = np.flatnonzero(p.any(axis=0))
        width = int(cols[-1] - cols[0] + 1) if cols.size else w
    else:
        width = w
    if width < 32:
        return
    # Long horizontal runs: an opening with a line of an eighth of the page keeps them
    # (tolerating a few degrees of tilt), and no digit stroke is that long and straight
    # more than once.
    run = max(9, width // 8)
    opened = cv2.morphologyEx(t, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (run, 1)))
    rows = np.flatnonzero(opened.any(axis=1))
    if rows.size < 2:
        return
    # Bands of consecutive rows holding long runs; a ruling is a band as long as half
    # the page and thin (a thick stroke of a large digit holds long runs too).
    breaks = np.flatnonzero(np.diff(rows) > 1)
    starts = np.concatenate([[rows[0]], rows[breaks + 1]])
    stops = np.concatenate([rows[breaks], [rows[-1]]]) + 1
    # Thin for the page: 2% of its smaller side (a page's lines are as thin on a strip
    # cut from it; on a tight crop of a number 3x wider than tall, 2% of the width is
    # a digit's stroke, and the sides of 0s read as ruling).
    thin = max(2.0, 0.02 * min(h, width))
    loose = t.astype(bool) & ~opened.astype(bool)  # ink that is not in a long run
    found = []
    for a, b in zip(starts, stops):
        band = opened[a:b]
        cols = np.flatnonzero(band.any(axis=0))
        extent = int(cols[-1] - cols[0] + 1)
        if extent < 0.5 * width or np.count_nonzero(band) / extent > thin:
            continue
        # A ruled line has no other ink just above and below it along most of its
        # length (the next line of a fine grid is no matter); a long run inside a
        # thick, slanting stroke (a 2's base) has.
        gap = int(thin) + 2
        above = loose[max(0, a - gap), cols[0]:cols[-1] + 1]
        below = loose[min(h - 1, b - 1 + gap), cols[0]:cols[-1] + 1]
        if np.count_nonzero(above & below) > 0.3 * extent:
            continue
        found.append((a, b, extent, np.count_nonzero(band) / extent))
    if len(found) < 2:
        # One long bar is a stroke (a 7's top, a 2's base, in a tight crop), or a lone
        # margin rule, which digits.py drops unless the writing touches it.
        return
    ruling = np.zeros_like(opened)
    for a, b, _, _ in found:
        ruling[a:b] = opened[a:b]
    thickness = [f[3] for f in found]
    # The line's soft edges too: one pixel above and below what the opening kept.
    lines = cv2.dilate(ruling, np.ones((3, 1), np.uint8)).astype(bool)
    thickness = max(1, round(float(np.median(thickness))))
    # Ink that runs across the line for more than a line is thick is a stroke lying
    # along it or crossing it (a 5's bar beside a grid line joins its band): it stays.
    across = 2 * thickness + 3
    lines &= ~cv2.morphologyEx(t, cv2.MORPH_OPEN, cv2.getStructuringElement(
        cv2.MORPH_RECT, (1, across))).astype(bool)
    lv = level if axis == 0 else level.T
    kept = np.where(lines, 0, lv).astype(np.float32)
    # A stroke crossing a line has ink above and below it: bridge the gap.
    k = 2 * thickness + 3
    bridged = cv2.morphologyEx(kept, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (1, k)))
    lv[lines] = bridged[lines]
