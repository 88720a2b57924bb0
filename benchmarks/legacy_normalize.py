"""The OLD picture normaliser ("legacy pipeline"), kept for benchmarks/images.py and serve_load.py.

A verbatim copy of src/mnist_xp/images/normalize.py at commit 74de8ce, before the
OpenCV rewrite (issue 13), with its relative imports made absolute so that it imports
from benchmarks/ on its own. Do not edit: it is the baseline the new pipeline is
compared against. Decoding (`load_image`, `pil_modules`) is mnist_xp's current one,
so only the normalisation is the old one. Its docstring follows.

Turn a picture of one handwritten digit into the 28×28 image the model expects.

MNIST's digits were made from scanned handwriting: each was size-normalised to fit a
20×20 box, keeping its aspect ratio, with anti-aliasing, then placed in a 28×28 field
so that its centre of mass sat at the centre, white ink on black. `to_mnist` does the
same to any greyscale picture (a phone photo, a scan, a drawing from a paint program),
so a user's own handwriting reaches the model looking like what it learnt from::

    from mnist_xp.images import preprocess_file, save_png
    x = preprocess_file("seven.jpg")       # uint8 (28, 28)
    model.predict(x.reshape(1, 784))
    save_png(x, "seen.png", scale=10)      # what the model sees, enlarged

Reading the files is `mnist_xp.images.decode`'s job (Pillow); this module is the
normalisation, on NumPy arrays.
"""

from __future__ import annotations

import math
import os

import numpy as np

from mnist_xp.errors import ImageError
from mnist_xp.pixels import IMAGE_SIDE
from mnist_xp.images.decode import load_image, pil_modules

__all__ = ["INVERT_CHOICES", "preprocess_file", "to_mnist"]

#: Values of `to_mnist`'s ``invert``.
INVERT_CHOICES = ("auto", "yes", "no")

_SIDE, _BOX, _CENTRE = IMAGE_SIDE, 20, IMAGE_SIDE / 2  # MNIST: 28×28 field, 20×20 box, centre of mass at (14, 14)

# Images are shrunk by block averaging to at most this side before the analysis: a
# digit does not need more, and it bounds the memory a 40-megapixel photo costs.
_WORK_SIDE = 2048

# Ink must differ from the background by at least this much (of 255) to count; a
# blank page photographed or JPEG-compressed varies by less.
_MIN_CONTRAST = 24.0

# Stroke width (pixels, at the 20-pixel box scale) below which strokes are thickened,
# and the width they are thickened to: MNIST strokes are about 2 pixels wide, while a
# thin pen on a large canvas would shrink to a faint hairline the model never saw.
_THIN_STROKE, _STROKE = 1.5, 2.0

# Marks apart from the digit (dust, a stray dot, the edge of another character) must
# not stretch its bounding box: a separate mark at an end holding less than
# _STRAY of the ink is dropped, and so is _SPECK of the ink at either end of what remains
# (scattered noise that touches the digit).
_STRAY, _SPECK = 0.05, 0.002


# -- the MNIST normalisation ------------------------------------------------------------

def to_mnist(gray, invert: str = "auto") -> np.ndarray:
    """Normalise a greyscale picture of one digit the way MNIST's digits were made.

    1. Make the ink white on black: ``invert="auto"`` compares the border's typical
       brightness with the pixels that stand out from it, so dark ink on light paper
       is inverted and light ink on a dark ground is not.
    2. Subtract the background (a smooth surface fitted to the border, so a photo's
       mild uneven lighting goes too) and stretch the contrast, so faint background
       noise becomes 0 and solid ink 255.
    3. Crop to the ink's bounding box (ignoring tiny specks at its edges), thicken
       hairline strokes to MNIST's width, and scale to fit 20×20 keeping the aspect
       ratio, with Lanczos anti-aliasing.
    4. Place it in a 28×28 field with the ink's centre of mass at pixel (14, 14)
       (row, column, counted from 0), clipping whatever would fall outside.

    Parameters
    ----------
    gray : array_like, shape (H, W)
        Greyscale pixels: uint8 (0 black to 255 white), floats in [0, 1], booleans,
        or integers in 0..255. Any size from a few pixels up.
    invert : {"auto", "yes", "no"}, default "auto"
        "yes": the ink is darker than the background; "no": it is lighter. When
        told, and nothing stands out from the border in that direction (the digit
        crosses the border, or the answer is wrong), the darkest pixels are taken
        as the background instead.

    Returns
    -------
    numpy.ndarray
        uint8, shape (28, 28): white (255) ink on black (0).

    Raises
    ------
    ImageError
        If no ink is found (the picture is blank or too faint), or Pillow is missing.
    ValueError
        If `gray` is not a 2-D image in a supported range, or `invert` is unknown.
    """
    if invert not in INVERT_CHOICES:
        raise ValueError(f"invert must be one of {', '.join(INVERT_CHOICES)}; got {invert!r}")
    g = _working_copy(gray)
    dark_ink = _ink_is_dark(g) if invert == "auto" else invert == "yes"
    ink = np.subtract(255, g, out=g) if dark_ink else g
    level = _ink_level(ink, trust_border=invert == "auto")
    crop = _crop(level)
    crop = _thicken(crop)
    patch = _fit(crop, _BOX)
    return _place(patch, _SIDE, _CENTRE)


def preprocess_file(path: str | os.PathLike, invert: str = "auto") -> np.ndarray:
    """`load_image` then `to_mnist`: the image the model sees for the file at `path`.

    Parameters
    ----------
    path : str or os.PathLike
        An image file (see `load_image`).
    invert : {"auto", "yes", "no"}, default "auto"
        See `to_mnist`.

    Returns
    -------
    numpy.ndarray
        uint8, shape (28, 28): white ink on black.

    Raises
    ------
    ImageError
        As `load_image` and `to_mnist` do; the message starts with the path.
    """
    gray = load_image(path)
    try:
        return to_mnist(gray, invert=invert)
    except ImageError as exc:
        raise ImageError(f"{path}: {exc}") from None


# -- steps of to_mnist ------------------------------------------------------------------

def _working_copy(gray) -> np.ndarray:
    """`gray` as a new float32 (H, W) array in 0..255, block-averaged if very large."""
    a = np.asarray(gray)
    if a.ndim != 2 or 0 in a.shape:
        raise ValueError(f"expected a 2-D greyscale image (H, W), got shape {a.shape}")
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * np.uint8(255)
    elif a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or a.min() < 0 or a.max() > 1:
            raise ValueError("float pixels must be finite and in [0, 1]")
        a = a.astype(np.float32) * 255
    elif a.dtype.kind in "iu":
        if a.dtype != np.uint8 and (a.min() < 0 or a.max() > 255):
            raise ValueError(f"integer pixels must be in 0..255, found {a.min()}..{a.max()}")
    else:
        raise ValueError(f"unsupported pixel dtype {a.dtype}")
    factor = math.ceil(max(a.shape) / _WORK_SIDE)
    if factor == 1:
        return a.astype(np.float32)  # always a copy: later steps work in place
    h, w = a.shape[0] // factor, a.shape[1] // factor
    if h == 0 or w == 0:  # a sliver narrower than one block: resample it instead
        small = _resize(a.astype(np.float32), (max(1, w), max(1, h)))
        return np.clip(small, 0, 255)
    blocks = a[:h * factor, :w * factor].reshape(h, factor, w, factor)
    return blocks.mean(axis=(1, 3), dtype=np.float32)


def _border_mask(shape: tuple[int, int]) -> np.ndarray:
    """A band around the image's edge, about 3% of the shorter side wide (at least 1)."""
    h, w = shape
    band = max(1, round(0.03 * min(h, w)))
    mask = np.zeros(shape, bool)
    mask[:band] = mask[-band:] = True
    mask[:, :band] = mask[:, -band:] = True
    return mask


def _spread(values: np.ndarray) -> float:
    """Robust standard deviation (scaled median absolute deviation) of `values`."""
    return 1.4826 * float(np.median(np.abs(values - np.median(values))))


def _ink_is_dark(g: np.ndarray) -> bool:
    """Whether the pixels standing out from the border are mostly darker than it."""
    border = g[_border_mask(g.shape)]
    background = float(np.median(border))
    # Summed deviation beyond the noise, not extremes: one hot pixel cannot decide, and
    # a digit covering well under 1% of a large picture still can.
    margin = 3 * _spread(border) + 8
    dark = float(np.clip(background - margin - g, 0, None).sum())
    light = float(np.clip(g - background - margin, 0, None).sum())
    return dark >= light


def _background(ink: np.ndarray, mask: np.ndarray):
    """The background under the ink: a quadratic surface fitted robustly to the border."""
    h, w = ink.shape
    ys, xs = np.nonzero(mask)
    values = ink[ys, xs].astype(np.float64)
    if min(h, w) < 16:
        return np.float32(np.median(values))  # too few border pixels to fit a surface
    step = max(1, values.size // 20_000)
    ys, xs, values = ys[::step], xs[::step], values[::step]
    u, v = xs / (w - 1) * 2 - 1, ys / (h - 1) * 2 - 1
    terms = np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], axis=1)
    keep = np.ones(values.size, bool)
    for _ in range(4):
        coef, *_ = np.linalg.lstsq(terms[keep], values[keep], rcond=None)
        residual = values - terms @ coef
        # Ink touching the border is bright here: drop it and refit.
        keep = residual < 3 * _spread(residual[keep]) + 1
    gu = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    gv = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    c = coef.astype(np.float32)
    return c[0] + c[1] * gu + c[2] * gv + c[3] * gu * gu + c[4] * gu * gv + c[5] * gv * gv


def _ink_level(ink: np.ndarray, trust_border: bool = True) -> np.ndarray:
    """How inked each pixel is, 0 (background) to 1 (solid ink); float32 (H, W).

    The background is what the border shows. When the polarity was given rather than
    detected, the border may instead be as bright as the ink is said to be (the digit
    crosses it, or the polarity is wrong): then the darkest pixels are the background.
    """
    mask = _border_mask(ink.shape)
    surface = _background(ink, mask)
    residual = ink - surface
    noise = _spread(residual[mask])
    level = _stretch(residual, noise)
    if level is None and not trust_border:
        darkest, brightest = np.percentile(ink, [1, 99])
        if brightest - darkest >= 2 * _MIN_CONTRAST:
            level = _stretch(ink - np.float32(darkest), 0.0)
    if level is None:
        raise ImageError("no ink found: the image is blank or its contrast is too low")
    return level


def _stretch(residual: np.ndarray, noise: float) -> np.ndarray | None:
    """`residual` (ink minus background) mapped to 0..1, or None if no ink stands out."""
    floor = max(4 * noise, _MIN_CONTRAST / 2)
    candidates = residual[residual > floor]
    peak = float(np.percentile(candidates, 99)) if candidates.size else 0.0
    if peak < max(_MIN_CONTRAST, 6 * noise):
        return None
    # Pixels below a fifth of the ink's strength are background texture or JPEG noise.
    low = max(floor, 0.2 * peak)
    high = float(np.percentile(candidates[candidates > low], 90))
    residual -= low
    residual /= max(high - low, 1e-3)
    return np.clip(residual, 0, 1, out=residual)


def _span(mass: np.ndarray) -> tuple[int, int]:
    """First and one-past-last index of the digit's ink along one axis, without strays."""
    cumulative = np.concatenate([[0.0], np.cumsum(mass, dtype=np.float64)])
    # Runs of inked indices: a connected mark projects onto one run, so a run with an
    # empty gap before it is a separate mark.
    edges = np.flatnonzero(np.diff(np.concatenate([[0], (mass > 0).view(np.int8), [0]])))
    starts, stops = edges[::2], edges[1::2]
    held = cumulative[stops] - cumulative[starts]
    first, last = 0, len(starts) - 1
    while first < last:
        smaller = first if held[first] <= held[last] else last
        if held[smaller] >= _STRAY * held.sum():
            break
        first, last = (first + 1, last) if smaller == first else (first, last - 1)
    start, stop = int(starts[first]), int(stops[last])
    inside = cumulative[start:stop + 1] - cumulative[start]
    total = inside[-1]
    low = start + int(np.searchsorted(inside, _SPECK * total, side="right")) - 1
    high = start + int(np.searchsorted(inside, (1 - _SPECK) * total, side="left"))
    return max(start, low), min(stop, max(high, low + 1))


def _crop(level: np.ndarray) -> np.ndarray:
    """The part of `level` inside the ink's bounding box."""
    top, bottom, left, right = 0, level.shape[0], 0, level.shape[1]
    # Twice: a stray mark may be apart from the digit along one axis only, and dropping
    # it there can leave empty rows or columns along the other.
    for _ in range(2):
        box = level[top:bottom, left:right]
        t, b = _span(box.sum(axis=1))
        box = box[t:b]
        l, r = _span(box.sum(axis=0))
        top, bottom, left, right = top + t, top + b, left + l, left + r
    return level[top:bottom, left:right]


def _stroke_width(ink: np.ndarray) -> float:
    """Typical stroke width in pixels: twice the inked area over its outline's length."""
    solid = ink > 0.5
    if not solid.any():
        solid = ink > 0
    area = int(solid.sum())
    outline = (int(np.count_nonzero(solid[1:] != solid[:-1])) +
               int(np.count_nonzero(solid[:, 1:] != solid[:, :-1])) +
               int(solid[0].sum() + solid[-1].sum() + solid[:, 0].sum() + solid[:, -1].sum()))
    return 2 * area / max(outline, 1)


def _thicken(crop: np.ndarray) -> np.ndarray:
    """`crop` with hairline strokes dilated to MNIST's stroke width at the 20-pixel scale."""
    scale = _BOX / max(crop.shape)
    width = _stroke_width(crop) * scale
    if width >= _THIN_STROKE:
        return crop
    radius = math.ceil((_STROKE - width) / (2 * scale))
    return _dilate(crop, radius)


def _running_max(a: np.ndarray, k: int, axis: int) -> np.ndarray:
    """Maximum over each run of `k` consecutive elements along `axis` (which shrinks by k-1)."""
    a = np.moveaxis(a, axis, 0)
    n, m, span = a.shape[0], a, 1
    while span * 2 <= k:  # m[i] = max(a[i : i + span]), doubling span: log2(k) passes
        m = np.maximum(m[:-span], m[span:])
        span *= 2
    out = np.maximum(m[:n - k + 1], m[k - span:n - span + 1])
    return np.moveaxis(out, 0, axis)


def _dilate(a: np.ndarray, radius: int) -> np.ndarray:
    """Grey-level dilation by a square of side 2*radius+1; the result grows by `radius` a side."""
    padded = np.pad(a, 2 * radius)
    k = 2 * radius + 1
    return _running_max(_running_max(padded, k, 0), k, 1)


def _resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float32 `a` resampled to `size` (width, height) with Pillow's Lanczos filter."""
    Image, _ = pil_modules()
    im = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32))
    return np.asarray(im.resize(size, Image.Resampling.LANCZOS), dtype=np.float32)


def _fit(crop: np.ndarray, box: int) -> np.ndarray:
    """`crop` scaled so its longer side is `box` pixels, keeping the aspect ratio."""
    h, w = crop.shape
    scale = box / max(h, w)
    size = (max(1, min(box, round(w * scale))), max(1, min(box, round(h * scale))))
    patch = np.clip(_resize(crop, size), 0, 1)
    # Shrinking spreads a thin stroke over more, fainter pixels; MNIST's strokes
    # are solid at their core.
    strongest = float(patch.max())
    if 0 < strongest < 1:
        patch /= strongest
    return patch


def _place(patch: np.ndarray, side: int, centre: float) -> np.ndarray:
    """`patch` in a `side`² uint8 field, its centre of mass moved to (centre, centre)."""
    h, w = patch.shape
    total = float(patch.sum())
    if total <= 0:
        raise ImageError("no ink found: the image is blank or its contrast is too low")
    rows, cols = np.arange(h), np.arange(w)
    cy = float(patch.sum(axis=1) @ rows) / total
    cx = float(patch.sum(axis=0) @ cols) / total
    top, left = round(centre - cy), round(centre - cx)
    field = np.zeros((side, side), np.float32)
    # Clip the parts that fall outside, as MNIST's centring did.
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, side), min(left + w, side)
    field[y0:y1, x0:x1] = patch[y0 - top:y1 - top, x0 - left:x1 - left]
    return np.rint(field * 255).astype(np.uint8)
