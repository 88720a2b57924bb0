"""Realistic pictures of handwriting, made only from MNIST's test digits.

Every picture shows one or more digits of the official MNIST test set (the bundled
``t10k`` files), so its label is known without anyone labelling it. A digit is
enlarged smoothly (bicubic) from 28×28 into an ink coverage map with a pen's solid
core and soft edge, then put into a synthetic scene: a sheet of paper with its tint,
fibres and blotches, lit by a camera-like light, blurred a little, with sensor noise,
then encoded as a phone or a drawing app would (JPEG, PNG). The kinds (`KINDS`):

==============  ===========================================================  ==========
kind            picture                                                      file
==============  ===========================================================  ==========
clean           the plain 28×28 MNIST digit (the reference row)              PNG L
desk1/2/4       a photo of a sheet on a darker desk that shows along 1, 2    JPEG RGB
                or 4 edges; the sheet turned by up to ±5°
lined           ruled paper, lines (blue or grey) closer than a digit's      JPEG RGB
                height, so they cross it
squared         squared paper, a grid finer than the digit                   JPEG RGB
shadow          a strong linear brightness gradient across the page          JPEG RGB
uneven          a vignette and blotchy low-frequency light, maybe a glare    JPEG RGB
blue            blue ballpoint on white                                      JPEG RGB
pencil          graphite: grey, faint, grainy; a greyscale photo             JPEG L
thin, thick     the strokes redrawn 2-4 px wide, or about twice MNIST's      JPEG RGB
jpeg            a photo compressed at JPEG quality 15-30                     JPEG RGB
tiny            a 40-80 px digit somewhere in a large photo (`TINY_SIZE`)    JPEG RGB
cropped         the digit cut to its own ink box, dark on white              PNG L
transparent     a drawing app's export: ink opaque, background transparent  PNG RGBA
number2..6      a number of 2 to 6 digits side by side; gaps vary, some      JPEG RGB
                negative, so neighbours may touch or overlap
==============  ===========================================================  ==========

Photos are 450 to 1,000 px a side (numbers: as wide as they need), digits 60 to 250 px
tall, placed at random. Everything is deterministic given the seed: picture ``i`` of a
kind is drawn from its own generator, ``picture_rng(seed, kind, i)``, so asking for
more pictures or fewer kinds leaves the others unchanged.

::

    import handwriting_pictures as hp
    digits = hp.load_test_digits()
    for name, kind, pic in hp.iter_pictures(per_kind=2, seed=0, digits=digits):
        ...  # pic.data (encoded bytes), pic.suffix, pic.label ("7", "2026"), pic.indices

Command line (writes the files and ``labels.json``)::

    python tests/handwriting_pictures.py --out DIR [--per-kind N] [--seed S]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import zlib
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Iterator, NamedTuple

import cv2
import numpy as np
from PIL import Image

__all__ = ["FORMATS", "KINDS", "NUMBER_KINDS", "Picture", "SINGLE_KINDS", "TINY_SIZE",
           "drawing", "encode", "ink_map", "iter_pictures", "load_test_digits",
           "make_picture", "parse_size", "phone_photo", "picture_rng", "restroke", "write_pictures"]

SINGLE_KINDS = ("clean", "desk1", "desk2", "desk4", "lined", "squared", "shadow", "uneven",
                "blue", "pencil", "thin", "thick", "jpeg", "tiny", "cropped", "transparent")
NUMBER_KINDS = ("number2", "number3", "number4", "number5", "number6")
KINDS = SINGLE_KINDS + NUMBER_KINDS

#: kind -> (Pillow format, Pillow mode) of its file.
FORMATS = {kind: ("JPEG", "RGB") for kind in KINDS}
FORMATS.update(clean=("PNG", "L"), pencil=("JPEG", "L"), cropped=("PNG", "L"),
               transparent=("PNG", "RGBA"))

_SUFFIX = {"JPEG": ".jpg", "PNG": ".png"}

#: (width, height) of a ``tiny`` picture unless told otherwise (3 megapixels).
TINY_SIZE = (2000, 1500)


class Picture(NamedTuple):
    """One encoded picture and what it shows."""

    data: bytes
    suffix: str
    label: str
    indices: tuple[int, ...]  # the MNIST test images drawn, left to right


# -- the digits -------------------------------------------------------------------------

@lru_cache(maxsize=1)
def load_test_digits() -> tuple[np.ndarray, np.ndarray]:
    """The official MNIST test set bundled in the package.

    Returns
    -------
    images : numpy.ndarray
        uint8, shape (10000, 28, 28), white ink on black.
    labels : numpy.ndarray
        uint8, shape (10000,).
    """
    from mnist_xp.data import FILE_NAMES, read_idx

    bundled = resources.files("mnist_xp.data") / "bundled"
    with contextlib.ExitStack() as stack:
        images, labels = (read_idx(stack.enter_context(
            resources.as_file(bundled / f"{FILE_NAMES[role]}.gz"))) for role in
            ("test_images", "test_labels"))
    images.flags.writeable = labels.flags.writeable = False  # shared by the cache
    return images, labels


def picture_rng(seed: int, kind: str, index: int) -> np.random.Generator:
    """The generator of picture `index` of `kind`: independent of every other picture."""
    return np.random.default_rng([seed, zlib.crc32(kind.encode()), index])


# -- ink --------------------------------------------------------------------------------

def _smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """0 below `lo`, 1 above `hi`, a smooth S between."""
    t = np.clip((x - lo) / (hi - lo), 0, 1)
    return t * t * (3 - 2 * t)


def _trim(cov: np.ndarray, level: float = 0.02) -> np.ndarray:
    """`cov` cut to the box of its pixels above `level`, with one pixel to spare."""
    rows = np.flatnonzero(cov.max(axis=1) > level)
    cols = np.flatnonzero(cov.max(axis=0) > level)
    if rows.size == 0:
        return cov[:1, :1] * 0
    return cov[max(rows[0] - 1, 0):rows[-1] + 2, max(cols[0] - 1, 0):cols[-1] + 2]


def ink_map(digit: np.ndarray, height: float, angle: float = 0.0) -> np.ndarray:
    """A 28×28 MNIST digit enlarged into a pen stroke's ink coverage.

    Parameters
    ----------
    digit : numpy.ndarray
        uint8, shape (28, 28), white ink on black.
    height : float
        Pixels the digit's 20-pixel box becomes: about the ink's height.
    angle : float, default 0
        Degrees to turn it, counter-clockwise.

    Returns
    -------
    numpy.ndarray
        float32 in [0, 1], cut to the ink with a pixel to spare.
    """
    padded = np.pad(digit, 4).astype(np.float32) / 255  # room to turn
    side = max(8, round(36 * height / 20))
    big = cv2.resize(padded, (side, side), interpolation=cv2.INTER_CUBIC)
    # MNIST's anti-aliased edge, enlarged, is a ramp many pixels wide; a pen's is about
    # one, with a solid core.
    cov = _smoothstep(big, 0.25, 0.6).astype(np.float32)
    if angle:
        m = cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0)
        cov = cv2.warpAffine(cov, m, (side, side), flags=cv2.INTER_LINEAR)
    return _trim(cov)


def _stroke_width(cov: np.ndarray) -> float:
    """Typical stroke width in pixels: twice the inked area over its outline's length."""
    solid = cov > 0.5
    area = int(solid.sum())
    outline = (np.count_nonzero(solid[1:] != solid[:-1])
               + np.count_nonzero(solid[:, 1:] != solid[:, :-1]))
    return 2 * area / max(int(outline), 1)


def _holes(cov: np.ndarray, min_area: float) -> int:
    """How many holes of at least `min_area` pixels the ink of `cov` encloses."""
    background = np.pad(cov <= 0.5, 1, constant_values=True).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(background, connectivity=4)
    # Label 0 is the ink itself and label 1 the outside (it holds the padded corner).
    return int(np.count_nonzero(stats[2:n, cv2.CC_STAT_AREA] >= min_area))


def _thicken(cov: np.ndarray, factor: float) -> np.ndarray:
    """`cov` redrawn with strokes `factor` times as wide, less if that would fill a loop."""
    width = _stroke_width(cov)
    holes = _holes(cov, width ** 2)
    while True:
        # A marker closes small loops; the label would then be a guess, so the pen is
        # made thinner for this digit until its loops stay open.
        thick = restroke(cov, width * factor)
        if factor <= 1.3 or _holes(thick, width ** 2) >= holes:
            return thick
        factor *= 0.9


def _skeleton(solid: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning: the centre lines of a boolean image, one pixel wide, connected."""
    img = np.pad(solid, 1).astype(np.uint8)
    while True:
        changed = False
        for step in (0, 1):
            p2, p3, p4 = img[:-2, 1:-1], img[:-2, 2:], img[1:-1, 2:]
            p5, p6, p7 = img[2:, 2:], img[2:, 1:-1], img[2:, :-2]
            p8, p9 = img[1:-1, :-2], img[:-2, :-2]
            ring = (p2, p3, p4, p5, p6, p7, p8, p9, p2)
            count = sum(q.astype(np.int8) for q in ring[:8])
            rises = sum((ring[k] < ring[k + 1]).view(np.int8) for k in range(8))
            if step == 0:
                side = ((p2 & p4 & p6) == 0) & ((p4 & p6 & p8) == 0)
            else:
                side = ((p2 & p4 & p8) == 0) & ((p2 & p6 & p8) == 0)
            drop = (img[1:-1, 1:-1] == 1) & (count >= 2) & (count <= 6) & (rises == 1) & side
            if drop.any():
                img[1:-1, 1:-1][drop] = 0
                changed = True
        if not changed:
            return img[1:-1, 1:-1].astype(bool)


def restroke(cov: np.ndarray, width: float) -> np.ndarray:
    """`cov` redrawn along its centre lines with a round pen `width` pixels wide.

    Parameters
    ----------
    cov : numpy.ndarray
        Ink coverage in [0, 1], as from `ink_map`.
    width : float
        The new stroke width in pixels (a thin pen: 2; MNIST enlarged to 150 px: about 19).

    Returns
    -------
    numpy.ndarray
        float32 coverage in [0, 1], grown by enough to hold the wider strokes.
    """
    grow = int(np.ceil(width / 2)) + 2
    centre = _skeleton(np.pad(cov, grow) > 0.5)
    if not centre.any():
        return np.pad(cov, grow)
    far = cv2.distanceTransform((~centre).astype(np.uint8), cv2.DIST_L2, 5)
    # Coverage falls from 1 to 0 over the pixel at distance width/2: an anti-aliased edge.
    return _trim(np.clip(width / 2 + 0.5 - far, 0, 1).astype(np.float32))


# -- scenes (float32 reflectance or light, 0..255) -------------------------------------

def _smooth_field(rng, shape: tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
    """A smooth random field, about unit variance, varying over `grid` cells."""
    coarse = rng.standard_normal((grid[0] + 1, grid[1] + 1)).astype(np.float32)
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _paper(rng, shape: tuple[int, int], tone: tuple[float, float] = (200, 240)) -> np.ndarray:
    """A sheet of paper filling `shape`: (H, W, 3) with a tint, blotches and fibres."""
    h, w = shape
    level = rng.uniform(*tone) * (1 + 0.012 * _smooth_field(rng, shape, (4, 4)))
    fibres = rng.standard_normal((h // 2 + 1, w // 2 + 1), dtype=np.float32)
    level += 1.5 * cv2.resize(fibres, (w, h), interpolation=cv2.INTER_LINEAR)
    tint = (1 + rng.uniform(-0.03, 0.03, 3)).astype(np.float32)
    return level[..., None] * tint


def _desk(rng, shape: tuple[int, int]) -> np.ndarray:
    """A darker desk top: (H, W, 3) wood, grey or cool, with grain along one axis."""
    h, w = shape
    tint = np.array([(1.15, 1.0, 0.8), (1.0, 1.0, 1.0), (0.92, 1.0, 1.1)][rng.integers(3)],
                    np.float32)
    along_x = rng.random() < 0.5
    grain = rng.standard_normal((max(2, h // 6), 3) if along_x else (3, max(2, w // 6)))
    grain = cv2.resize(grain.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    level = rng.uniform(40, 120) * (1 + 0.08 * grain + 0.1 * _smooth_field(rng, shape, (3, 3)))
    return np.clip(level, 5, None)[..., None] * tint


def _ink_colour(rng, kind: str = "pen") -> np.ndarray:
    """RGB of an ink: "pen" mostly black-ish, sometimes dark blue; "blue"; "pencil" (grey)."""
    if kind == "pencil":
        return np.full(3, rng.uniform(70, 115), np.float32)
    if kind == "blue" or (kind == "pen" and rng.random() < 0.25):
        return np.array([rng.uniform(20, 60), rng.uniform(35, 80), rng.uniform(115, 170)],
                        np.float32)
    g = rng.uniform(15, 60)
    return np.array([g, g, g + rng.uniform(0, 15)], np.float32)


def _put_ink(img: np.ndarray, cov: np.ndarray, top: int, left: int, colour,
             opacity: float = 1.0) -> None:
    """Lay ink of `colour` over `img` (in place) where `cov` says, at (top, left)."""
    h, w = cov.shape
    region = img[top:top + h, left:left + w]
    a = (cov * np.float32(opacity))[..., None]
    region *= 1 - a
    region += a * np.asarray(colour, np.float32)


def _rule(img: np.ndarray, rng, spacing: float, colour, *, vertical: bool = False,
          angle: float = 0.0, thickness: int = 1, opacity: float = 0.8,
          only_x: float | None = None) -> None:
    """Print ruled lines `spacing` px apart over `img` (in place), turned by `angle` degrees."""
    h, w = img.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    slope = np.tan(np.radians(angle))
    shift = 16  # fixed-point bits: lines at sub-pixel positions, anti-aliased
    f = 1 << shift
    if only_x is not None:  # one line, e.g. a margin's
        positions = [only_x]
    else:  # lines across the whole frame, however they are turned
        reach = abs(slope) * (h if vertical else w)
        positions = np.arange(rng.uniform(0, spacing) - reach, (w if vertical else h) + reach,
                              spacing)
    for p in positions:
        if vertical:
            a, b = (p, 0), (p - slope * h, h)
        else:
            a, b = (0, p), (w, p + slope * w)
        cv2.line(mask, (round(a[0] * f), round(a[1] * f)), (round(b[0] * f), round(b[1] * f)),
                 255, thickness, cv2.LINE_AA, shift)
    alpha = (mask.astype(np.float32) * (opacity / 255))[..., None]
    img *= 1 - alpha
    img += alpha * np.asarray(colour, np.float32)


def _light(rng, shape: tuple[int, int], kind: str = "mild") -> np.ndarray:
    """The light falling on the scene, a factor per pixel (H, W, 1).

    "mild": a room's light on a phone photo; "shadow": one side at a quarter to under
    half of the other's, changing linearly; "uneven": a vignette, blotches, maybe a glare.
    """
    h, w = shape
    y, x = np.ogrid[-1:1:h * 1j, -1:1:w * 1j]
    y, x = y.astype(np.float32), x.astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    along = (x * np.cos(theta) + y * np.sin(theta)) / (abs(np.cos(theta)) + abs(np.sin(theta)))
    r2 = (x * x + y * y) / 2
    if kind == "shadow":
        dark = rng.uniform(0.25, 0.45)
        light = 1 - (1 - dark) * (along + 1) / 2
    elif kind == "uneven":
        light = (1 - rng.uniform(0.3, 0.5) * r2) * (1 + 0.12 * _smooth_field(
            rng, shape, tuple(rng.integers(2, 5, 2))))
        if rng.random() < 0.5:  # a lamp's glare on glossy paper
            cy, cx = rng.uniform(-0.8, 0.8, 2)
            light = light + rng.uniform(0.1, 0.25) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.1)
    else:
        light = (1 + rng.uniform(0, 0.08) * along) * (1 - rng.uniform(0, 0.12) * r2)
    return (rng.uniform(0.95, 1.08) * light).astype(np.float32)[..., None]


def _camera(rng, img: np.ndarray, *, blur=(0.4, 1.1), noise=(2.0, 5.0),
            gray: bool = False) -> np.ndarray:
    """What a camera makes of the scene `img`: mild blur, sensor noise, 8-bit pixels."""
    if gray:
        img = img @ np.array([0.299, 0.587, 0.114], np.float32)
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(*blur))
    grain = rng.standard_normal(img.shape[:2], dtype=np.float32) * np.float32(rng.uniform(*noise))
    img += grain if gray else grain[..., None]
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray, fmt: str = "PNG", quality: int = 90) -> bytes:
    """Encode uint8 pixels as a file's bytes.

    Parameters
    ----------
    pixels : numpy.ndarray
        uint8, shape (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA.
    fmt : {"PNG", "JPEG"}
    quality : int, default 90
        JPEG quality (ignored for PNG).

    Returns
    -------
    bytes
    """
    buf = io.BytesIO()
    im = Image.fromarray(np.ascontiguousarray(pixels))
    if fmt == "JPEG":
        im.save(buf, format="JPEG", quality=int(quality))
    else:
        im.save(buf, format=fmt)
    return buf.getvalue()


def _photo_shape(rng, longest=(600, 1000)) -> tuple[int, int]:
    """(H, W) of a phone photo scaled down for sharing: 4:3, either way up."""
    long_side = int(rng.integers(*longest))
    short = round(long_side * 3 / 4)
    return (long_side, short) if rng.random() < 0.5 else (short, long_side)


def _spot(rng, room: tuple[int, int], size: tuple[int, int], margin: int) -> tuple[int, int]:
    """Random (top, left) for `size` inside `room` with `margin` to spare around it."""
    return tuple(int(rng.integers(margin, max(margin, r - s - margin) + 1))
                 for r, s in zip(room, size))


def _height(rng, lo: float, hi: float, room: float) -> float:
    """A digit height in [lo, hi] that fits `room` pixels."""
    hi = min(hi, room)
    return rng.uniform(min(lo, hi), hi)


def _pick(rng, digits, n: int = 1):
    """`n` random test images and their labels."""
    images, labels = digits
    idx = rng.integers(0, len(images), n)
    return [images[i] for i in idx], "".join(str(int(labels[i])) for i in idx), tuple(map(int, idx))


def _sheet_photo(rng, shape, cov, *, ink="pen", light="mild", rules=None, tone=(200, 240),
                 opacity=1.0, grain=0.0, gray=False, quality=(70, 92), margin=0.06):
    """A photo of a sheet filling the frame with `cov` inked somewhere on it; encoded bytes."""
    h, w = shape
    img = _paper(rng, shape, tone)
    if rules is not None:
        rules(img)
    top, left = _spot(rng, shape, cov.shape, round(margin * min(h, w)))
    if grain:  # graphite catches on the paper's tooth, unevenly
        tooth = rng.random(cov.shape, dtype=np.float32)
        cov = cov * (1 - grain * cv2.GaussianBlur(tooth, (0, 0), 0.6))
    _put_ink(img, cov, top, left, _ink_colour(rng, ink), opacity)
    img *= _light(rng, shape, light)
    q = rng.integers(*quality, endpoint=True)
    return encode(_camera(rng, img, gray=gray), "JPEG", q)


# -- the kinds --------------------------------------------------------------------------

def _desk_photo(rng, digit, edges: int) -> bytes:
    """A sheet on a desk that shows along `edges` of the photo's edges, turned by ±5°."""
    h, w = _photo_shape(rng)
    showing = set(rng.choice(4, edges, replace=False).tolist())  # top, right, bottom, left
    # A shown edge of the sheet lies inside the frame; the others run past it by more
    # than a ±5° turn can bring them back.
    inset = [rng.uniform(0.06, 0.2) if e in showing else -0.15 for e in range(4)]
    y0, x1, y1, x0 = inset[0] * h, w - inset[1] * w, h - inset[2] * h, inset[3] * w
    sh, sw = round(y1 - y0), round(x1 - x0)
    sheet = _paper(rng, (sh, sw))
    # The digit goes on the part of the sheet in view, with room for the turn.
    pad = round(0.08 * min(h, w))
    vy0, vx0 = max(0, -round(y0)) + pad, max(0, -round(x0)) + pad
    vy1, vx1 = min(sh, sh - round(y1 - h)) - pad, min(sw, sw - round(x1 - w)) - pad
    cov = ink_map(digit, _height(rng, 60, 250, 0.6 * min(vy1 - vy0, vx1 - vx0)))
    top, left = _spot(rng, (vy1 - vy0, vx1 - vx0), cov.shape, 0)
    _put_ink(sheet, cov, vy0 + top, vx0 + left, _ink_colour(rng))
    angle = rng.uniform(-5, 5)
    m = cv2.getRotationMatrix2D((sw / 2, sh / 2), angle, 1.0)
    m[:, 2] += ((x0 + x1) / 2 - sw / 2, (y0 + y1) / 2 - sh / 2)
    placed = cv2.warpAffine(sheet, m, (w, h), flags=cv2.INTER_LINEAR)
    ones = np.ones((sh, sw), np.float32)
    mask = cv2.warpAffine(ones, m, (w, h), flags=cv2.INTER_LINEAR)[..., None]
    m[:, 2] += rng.uniform(0.002, 0.01, 2) * w  # the sheet's shadow, cast a little aside
    shade = cv2.GaussianBlur(cv2.warpAffine(ones, m, (w, h)), (0, 0), 0.01 * w)[..., None]
    desk = _desk(rng, (h, w)) * (1 - rng.uniform(0.2, 0.45) * shade)
    img = desk * (1 - mask) + placed
    img *= _light(rng, (h, w))
    return encode(_camera(rng, img), "JPEG", rng.integers(70, 92, endpoint=True))


def _ruled_photo(rng, digit, squared: bool) -> bytes:
    """Ruled or squared paper whose lines cross the digit."""
    shape = _photo_shape(rng)
    cov = ink_map(digit, _height(rng, 60, 250, 0.6 * min(shape)), rng.uniform(-3, 3))
    dh = cov.shape[0]
    angle = rng.uniform(-2, 2)
    if squared:
        spacing = dh * rng.uniform(0.3, 0.7)
        colour = [rng.uniform(150, 190)] * 2 + [rng.uniform(170, 215)]
        thick = 1
    else:
        spacing = dh * rng.uniform(0.4, 1.0)
        colour = ([rng.uniform(130, 175), rng.uniform(150, 190), rng.uniform(200, 235)]
                  if rng.random() < 0.7 else [rng.uniform(140, 180)] * 3)
        thick = int(rng.integers(1, 3))
    margin_x = rng.uniform(0.06, 0.15) * shape[1] if not squared and rng.random() < 0.5 else None

    def rules(img):
        _rule(img, rng, spacing, colour, angle=angle, thickness=thick)
        if squared:
            _rule(img, rng, spacing, colour, vertical=True, angle=angle, thickness=thick)
        if margin_x is not None:  # a red margin line
            _rule(img, rng, 0, (200, 90, 90), vertical=True, angle=angle, thickness=2,
                  only_x=margin_x)
    return _sheet_photo(rng, shape, cov, rules=rules)


def _number_strip(rng, images, height: float) -> np.ndarray:
    """Digits side by side as one coverage map; gaps vary, some negative (touching)."""
    parts = [ink_map(d, height * rng.uniform(0.9, 1.1), rng.uniform(-4, 4)) for d in images]
    lefts, x = [], 0.0
    for k, part in enumerate(parts):
        lefts.append(round(x))
        # A negative gap pulls the next digit into this one's box, but never more than
        # a third of the way: overlapping strokes, not one digit drawn over another.
        gap = max(height * rng.uniform(-0.1, 0.3), -part.shape[1] / 3)
        x += part.shape[1] + gap
    bottom = max(p.shape[0] for p in parts) + round(0.1 * height)
    tops = [bottom - p.shape[0] - round(height * rng.uniform(0, 0.1)) for p in parts]
    strip = np.zeros((bottom, max(l + p.shape[1] for l, p in zip(lefts, parts))), np.float32)
    for part, top, left in zip(parts, tops, lefts):
        region = strip[top:top + part.shape[0], left:left + part.shape[1]]
        np.maximum(region, part, out=region)
    return _trim(strip)


def _number_photo(rng, digits, n: int) -> tuple[bytes, str, tuple]:
    """A number of `n` digits written on a sheet."""
    images, label, idx = _pick(rng, digits, n)
    strip = _number_strip(rng, images, _height(rng, 50, 160, 1100 / (0.8 * n)))
    sh, sw = strip.shape
    h = max(round(sh * rng.uniform(1.8, 3.5)), 300)
    w = max(round(sw * rng.uniform(1.3, 2.0)), 400)
    return _sheet_photo(rng, (h, w), strip), label, idx


def _transparent(rng, digit) -> bytes:
    """A drawing app's export: RGBA, the ink opaque, the background fully transparent."""
    h, w = (int(v) for v in rng.integers(200, 600, 2))
    cov = ink_map(digit, _height(rng, 0.5 * min(h, w), 0.85 * min(h, w), 0.85 * min(h, w)))
    top, left = _spot(rng, (h, w), cov.shape, 2)
    alpha = np.zeros((h, w), np.float32)
    alpha[top:top + cov.shape[0], left:left + cov.shape[1]] = cov
    colour = [(0, 0, 0), (20, 40, 160), (200, 30, 30), (255, 255, 255)][rng.choice(4, p=[.5, .2, .15, .15])]
    rgba = np.zeros((h, w, 4), np.uint8)
    # Apps differ in what lies under transparent pixels: the ink's colour, or black.
    rgba[..., :3] = colour if rng.random() < 0.5 else np.where(alpha[..., None] > 0, colour, 0)
    rgba[..., 3] = np.rint(alpha * 255)
    return encode(rgba, "PNG")


def _cropped(rng, digit) -> bytes:
    """The digit cut to its own ink box, so that strokes touch all four edges."""
    cov = ink_map(digit, rng.uniform(60, 200))
    solid = cov >= 0.75
    rows, cols = np.flatnonzero(solid.any(axis=1)), np.flatnonzero(solid.any(axis=0))
    cov = cov[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    ink = rng.uniform(0, 40)
    return encode(np.rint(255 - cov * (255 - ink)).astype(np.uint8), "PNG")


def make_picture(kind: str, rng: np.random.Generator, digits, *,
                 tiny_size: tuple[int, int] = TINY_SIZE) -> Picture:
    """One picture of `kind`, drawn with `rng` from the MNIST test digits.

    Parameters
    ----------
    kind : str
        One of `KINDS`.
    rng : numpy.random.Generator
        All randomness comes from it (see `picture_rng`).
    digits : tuple of numpy.ndarray
        ``(images, labels)``, as `load_test_digits` returns.
    tiny_size : tuple of int, default `TINY_SIZE`
        (width, height) of a ``tiny`` picture, e.g. (4000, 3000) for 12 megapixels.

    Returns
    -------
    Picture
        The encoded file (`FORMATS` says which format and mode), its suffix, the label
        (the digits as a string, ``"7"`` or ``"2026"``) and the test images used.
    """
    if kind not in FORMATS:
        raise ValueError(f"unknown kind {kind!r}; choose from {', '.join(KINDS)}")
    if kind in NUMBER_KINDS:
        data, label, idx = _number_photo(rng, digits, int(kind[6:]))
        return Picture(data, ".jpg", label, idx)
    (digit,), label, idx = _pick(rng, digits)
    if kind == "clean":
        data = encode(digit, "PNG")
    elif kind.startswith("desk"):
        data = _desk_photo(rng, digit, int(kind[4:]))
    elif kind in ("lined", "squared"):
        data = _ruled_photo(rng, digit, squared=kind == "squared")
    elif kind == "transparent":
        data = _transparent(rng, digit)
    elif kind == "cropped":
        data = _cropped(rng, digit)
    elif kind == "tiny":
        shape = (tiny_size[1], tiny_size[0])
        cov = ink_map(digit, rng.uniform(40, 80), rng.uniform(-3, 3))
        data = _sheet_photo(rng, shape, cov, quality=(80, 92), margin=0.03)
    else:
        shape = _photo_shape(rng)
        lo, hi = (100, 250) if kind == "thin" else (60, 250)
        cov = ink_map(digit, _height(rng, lo, hi, 0.6 * min(shape)), rng.uniform(-3, 3))
        options = {}
        if kind in ("shadow", "uneven"):
            options["light"] = kind
        elif kind == "blue":
            options.update(ink="blue", tone=(235, 252))
        elif kind == "pencil":  # a sharp pencil draws narrower lines than MNIST's
            cov = restroke(cov, max(3.0, _stroke_width(cov) * rng.uniform(0.4, 0.8)))
            options.update(ink="pencil", opacity=rng.uniform(0.6, 0.85), grain=0.6, gray=True)
        elif kind == "thin":
            cov = restroke(cov, rng.uniform(2, 4))
        elif kind == "thick":
            cov = _thicken(cov, rng.uniform(1.8, 2.4))
        elif kind == "jpeg":
            options["quality"] = (15, 30)
        if cov.shape[0] > 0.9 * min(shape) or cov.shape[1] > 0.9 * min(shape):
            cov = cv2.resize(cov, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)
        data = _sheet_photo(rng, shape, cov, **options)
    fmt = FORMATS[kind][0]
    return Picture(data, _SUFFIX[fmt], label, idx)


# -- sets of pictures -------------------------------------------------------------------

def iter_pictures(per_kind: int = 2, seed: int = 0, kinds=KINDS, *,
                  per_number_kind: int | None = None, digits=None,
                  tiny_size: tuple[int, int] = TINY_SIZE) -> Iterator[tuple[str, str, Picture]]:
    """Generate pictures of every kind, kind by kind.

    Parameters
    ----------
    per_kind : int, default 2
        Pictures of each single-digit kind.
    seed : int, default 0
    kinds : sequence of str, default `KINDS`
    per_number_kind : int, optional
        Pictures of each ``number`` kind (default: `per_kind`).
    digits : tuple of numpy.ndarray, optional
        ``(images, labels)``; default `load_test_digits()`.
    tiny_size : tuple of int, default `TINY_SIZE`
        See `make_picture`.

    Yields
    ------
    name : str
        A file name, ``"<kind>-<index>.<suffix>"``.
    kind : str
    picture : Picture
    """
    digits = load_test_digits() if digits is None else digits
    for kind in kinds:
        count = per_number_kind if kind in NUMBER_KINDS and per_number_kind is not None else per_kind
        for i in range(count):
            pic = make_picture(kind, picture_rng(seed, kind, i), digits, tiny_size=tiny_size)
            yield f"{kind}-{i:03d}{pic.suffix}", kind, pic


def write_pictures(out: str | Path, per_kind: int = 2, seed: int = 0, kinds=KINDS, *,
                   per_number_kind: int | None = None,
                   tiny_size: tuple[int, int] = TINY_SIZE) -> Path:
    """Write `iter_pictures` into the directory `out`, with ``labels.json``.

    ``labels.json`` holds the settings and ``"pictures"``: a list of ``{"file", "kind",
    "label", "test_indices"}``.

    Returns
    -------
    pathlib.Path
        The path of ``labels.json``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for name, kind, pic in iter_pictures(per_kind, seed, kinds, per_number_kind=per_number_kind,
                                         tiny_size=tiny_size):
        (out / name).write_bytes(pic.data)
        records.append({"file": name, "kind": kind, "label": pic.label,
                        "test_indices": list(pic.indices)})
    labels = out / "labels.json"
    labels.write_text(json.dumps({
        "source": "MNIST test set (the bundled t10k files)", "seed": seed,
        "per_kind": per_kind, "per_number_kind": per_number_kind, "tiny_size": list(tiny_size),
        "pictures": records}, indent=1) + "\n")
    return labels


# -- pictures for the benchmarks --------------------------------------------------------

def drawing(digit: np.ndarray, side: int = 280, *, dark_ink: bool = True) -> np.ndarray:
    """A digit as drawn on the web page's canvas: solid round strokes ``side/16`` wide.

    Parameters
    ----------
    digit : numpy.ndarray
        uint8 (28, 28) MNIST digit.
    side : int, default 280
    dark_ink : bool, default True
        Black strokes on white (the page's), else white on black.

    Returns
    -------
    numpy.ndarray
        uint8, shape (side, side), greyscale.
    """
    cov = restroke(ink_map(digit, 0.6 * side), side / 16)
    canvas = np.zeros((side, side), np.float32)
    ch, cw = (min(a, side) for a in cov.shape)
    top, left = (side - ch) // 2, (side - cw) // 2
    canvas[top:top + ch, left:left + cw] = cov[:ch, :cw]
    ink = 255 - canvas * 255 if dark_ink else canvas * 255
    return np.rint(ink).astype(np.uint8)


def phone_photo(rng: np.random.Generator, digit: np.ndarray,
                size: tuple[int, int] = (4000, 3000), *, quality: int = 90) -> tuple[np.ndarray, bytes]:
    """A phone's full-size photo of one digit on a sheet: its pixels and its JPEG.

    Parameters
    ----------
    rng : numpy.random.Generator
    digit : numpy.ndarray
        uint8 (28, 28) MNIST digit.
    size : tuple of int, default (4000, 3000)
        (width, height): 12 megapixels by default. The digit is a quarter to two fifths
        of the height.
    quality : int, default 90

    Returns
    -------
    rgb : numpy.ndarray
        uint8, shape (height, width, 3), as decoded from the JPEG.
    jpeg : bytes
    """
    w, h = size
    cov = ink_map(digit, rng.uniform(0.25, 0.4) * h, rng.uniform(-3, 3))
    data = _sheet_photo(rng, (h, w), cov, quality=(quality, quality))
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB")), data


def parse_size(text: str) -> tuple[int, int]:
    """``"WIDTHxHEIGHT"`` (e.g. ``"4000x3000"``) as ``(width, height)``."""
    w, _, h = text.lower().partition("x")
    return int(w), int(h)


def main(argv=None) -> int:
    """The command line: write pictures and labels.json into --out."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="directory to write into")
    ap.add_argument("--per-kind", type=int, default=2, help="pictures of each kind (default 2)")
    ap.add_argument("--per-number-kind", type=int, help="pictures of each number kind "
                                                        "(default: --per-kind)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS, metavar="KIND")
    ap.add_argument("--tiny-size", type=parse_size, default=TINY_SIZE, metavar="WxH",
                    help=f"size of the 'tiny' photos (default {TINY_SIZE[0]}x{TINY_SIZE[1]})")
    args = ap.parse_args(argv)
    labels = write_pictures(args.out, args.per_kind, args.seed, args.kinds,
                            per_number_kind=args.per_number_kind, tiny_size=args.tiny_size)
    n = len(json.loads(labels.read_text())["pictures"])
    print(f"wrote {n} pictures and {labels}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
