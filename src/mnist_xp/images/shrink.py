"""A decoded picture as uint8 greyscale, shrunk by a whole factor, in bounded memory.

`to_gray` turns a decoded Pillow image of any mode into luminance (alpha composited,
16-bit and float samples scaled) and shrinks it by block averaging, one tile of about
`TILE_PIXELS` at a time. Nothing the size of the whole picture is ever made beyond the
decoded image itself: a 40-megapixel RGBA picture (160 MB decoded) used to take
another 1.5 GB of float copies before it was shrunk. Needs OpenCV, whose area
averaging over whole blocks is several times faster than NumPy's.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["TILE_PIXELS", "to_gray", "has_alpha"]

#: Pixels of the picture converted at a time: about 1 MB of RGBA, 5 MB with its float
#: planes. Larger tiles are no faster and leave more memory behind in the allocator.
TILE_PIXELS = 1 << 18

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def has_alpha(im) -> bool:
    """Whether the Pillow image `im` has transparency (an alpha band or a transparent colour)."""
    return im.mode in _ALPHA_MODES or "transparency" in im.info


def _deep(mode: str) -> bool:
    """Whether `mode` holds 16-bit, 32-bit or float samples."""
    return mode in ("F", "I") or mode.startswith("I;")


def to_gray(im, factor: int = 1) -> np.ndarray:
    """The decoded Pillow image `im` as uint8 luminance, shrunk `factor` times.

    Parameters
    ----------
    im : PIL.Image.Image
        Decoded (``load()`` done), of any mode Pillow converts to ``L`` or ``RGBA``,
        or 16-bit, 32-bit integer or float samples.
    factor : int, default 1
        Each output pixel is the mean of a `factor` x `factor` block (a partial one
        at the right and bottom edges): the output is ``ceil(H / factor)`` by
        ``ceil(W / factor)``.

    Returns
    -------
    numpy.ndarray
        uint8, 0 black to 255 white. 16-bit samples are divided by 257; float
        samples in [0, 1] are multiplied by 255 (larger ones are taken as 0..255);
        NaN and infinities are 0. Transparent pixels are composited onto a backdrop
        that keeps the ink visible (see `_backdrop`).
    """
    if _deep(im.mode):
        return _deep_gray(im, factor)
    if has_alpha(im):
        return _alpha_gray(im, factor)
    return _plain_gray(im, factor)


def _cv2():
    """OpenCV, or the ImageError saying how to install it."""
    from .ink import cv2_module

    return cv2_module()


def _tiles(width: int, height: int, factor: int):
    """Boxes (left, top, right, bottom) of whole `factor` blocks, about TILE_PIXELS each,
    covering the picture; and each one's (row, column) in the output."""
    rows = min(factor, height)
    if width * rows <= TILE_PIXELS:  # whole rows of blocks at a time
        tw, th = width, factor * max(1, TILE_PIXELS // (width * rows))
    else:  # a sliver, or blocks wider than a tile: runs of blocks along a row
        tw, th = factor * max(1, TILE_PIXELS // (factor * rows)), factor
    for top in range(0, height, th):
        for left in range(0, width, tw):
            yield ((left, top, min(width, left + tw), min(height, top + th)),
                   (top // factor, left // factor))


def _block_mean(cv2, a: np.ndarray, factor: int) -> np.ndarray:
    """The means of `a`'s `factor` x `factor` blocks (partial ones at the far edges)."""
    if factor == 1:
        return a
    h, w = a.shape[:2]
    out = np.empty((-(-h // factor), -(-w // factor), *a.shape[2:]), a.dtype)
    whole_h, whole_w = h // factor * factor, w // factor * factor
    # Whole blocks, then the partial row, column and corner: every part has integer
    # ratios, so INTER_AREA takes its exact block-averaging fast path.
    for r0, r1 in ((0, whole_h), (whole_h, h)):
        for c0, c1 in ((0, whole_w), (whole_w, w)):
            if r1 > r0 and c1 > c0:
                o0, o1 = r0 // factor, -(-r1 // factor)
                p0, p1 = c0 // factor, -(-c1 // factor)
                part = np.ascontiguousarray(a[r0:r1, c0:c1])
                out[o0:o1, p0:p1] = cv2.resize(part, (p1 - p0, o1 - o0),
                                               interpolation=cv2.INTER_AREA).reshape(
                                                   out[o0:o1, p0:p1].shape)
    return out


def _shape(im, factor: int) -> tuple[int, int]:
    """The output's (rows, columns)."""
    return -(-im.size[1] // factor), -(-im.size[0] // factor)


def _plain_gray(im, factor: int) -> np.ndarray:
    """An image without transparency: Pillow's own luminance, block-averaged as uint8."""
    cv2 = _cv2() if factor > 1 else None
    out = np.empty(_shape(im, factor), np.uint8)
    for box, (r, c) in _tiles(*im.size, factor):
        tile = im.crop(box)
        if tile.mode != "L":
            tile = tile.convert("L")
        small = _block_mean(cv2, np.asarray(tile), factor)
        out[r:r + small.shape[0], c:c + small.shape[1]] = small
    return out


def _deep_gray(im, factor: int) -> np.ndarray:
    """16-bit, 32-bit or float samples, scaled to 0..255 then block-averaged."""
    cv2 = _cv2() if factor > 1 else None
    scale = _deep_scale(im)
    out = np.empty(_shape(im, factor), np.uint8)
    for box, (r, c) in _tiles(*im.size, factor):
        v = np.asarray(im.crop(box)).astype(np.float32)
        np.nan_to_num(v, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        v *= scale
        np.clip(v, 0, 255, out=v)
        small = np.rint(_block_mean(cv2, v, factor))
        out[r:r + small.shape[0], c:c + small.shape[1]] = small
    return out


def _deep_scale(im) -> float:
    """What to multiply `im`'s samples by for 0..255, judged by their largest finite value."""
    if im.mode.startswith("I;16"):
        return 1 / 257
    high = im.getextrema()[1]  # C, no copy
    if not math.isfinite(high):
        # An infinity or NaN is the largest: the largest finite value, tile by tile.
        high = 0.0
        for box, _ in _tiles(*im.size, 1):
            v = np.asarray(im.crop(box))
            finite = v[np.isfinite(v)]
            high = max(high, float(finite.max()) if finite.size else 0.0)
    if im.mode == "F":
        return 255.0 if high <= 1.0 else 1.0
    return 1 / 257 if high > 255 else 1.0


def _alpha_gray(im, factor: int) -> np.ndarray:
    """A picture with transparency: luminance composited onto `_backdrop`, block-averaged.

    Each block keeps the mean of luminance x alpha and the mean of alpha, which is
    exactly what compositing each pixel and then averaging gives, whatever the backdrop.
    """
    cv2 = _cv2()
    shape = _shape(im, factor)
    # mean(luma * alpha) and mean(alpha), both 0..255; the only float arrays of the
    # output's size, worked on in place from here on.
    premultiplied, alpha = np.empty(shape, np.float32), np.empty(shape, np.float32)
    for box, (r, c) in _tiles(*im.size, factor):
        tile = im.crop(box)
        if tile.mode != "RGBA":
            tile = tile.convert("RGBA")
        rgba = np.asarray(tile)
        # ITU-R 601 luma, the weights Pillow's own "L" conversion uses.
        luma = cv2.cvtColor(rgba, cv2.COLOR_RGBA2GRAY)
        a = np.ascontiguousarray(rgba[..., 3])
        for plane, values in ((premultiplied, cv2.multiply(luma, a, dtype=cv2.CV_32F,
                                                           scale=1 / 255)),
                              (alpha, a.astype(np.float32))):
            small = _block_mean(cv2, values, factor)
            plane[r:r + small.shape[0], c:c + small.shape[1]] = small
    backdrop = _backdrop(premultiplied, alpha)
    if backdrop is None:
        return np.full(shape, 255, np.uint8)  # fully transparent: blank
    # luma * alpha + backdrop * (1 - alpha), alpha in 0..1
    gray = premultiplied
    np.multiply(alpha, -backdrop / 255, out=alpha)
    gray += alpha
    gray += backdrop
    np.rint(gray, out=gray)
    np.clip(gray, 0, 255, out=gray)
    return gray.astype(np.uint8)


def _backdrop(premultiplied: np.ndarray, alpha: np.ndarray) -> float | None:
    """The grey behind transparent pixels that keeps the ink visible; None if all is transparent.

    `premultiplied` is luminance x alpha, `alpha` 0..255. Onto white behind dark ink and
    black behind light ink where the picture is mostly transparent or opaque in one
    flat colour (a drawing's strokes); onto the median of the opaque part where that
    is textured (a photo with transparent margins).
    """
    coverage = float(alpha.mean(dtype=np.float64)) / 255
    if coverage == 0:
        return None
    if coverage < 0.5:
        # Mostly transparent, as a drawing app exports strokes on no background: the
        # opaque part is the ink, whatever colour it is (the RGB under transparent
        # pixels is often black too), so the backdrop must contrast with it.
        ink = 255 * float(premultiplied.sum(dtype=np.float64) / alpha.sum(dtype=np.float64))
        return 255.0 if ink < 128 else 0.0
    # The opaque part's spread and median, on an even sample of at most ~1M pixels:
    # every pixel of a picture up to that size, and bounded memory beyond.
    step = max(1, math.ceil(math.sqrt(alpha.size / TILE_PIXELS)))
    a, p = alpha[::step, ::step], premultiplied[::step, ::step]
    solid = a > 127.5
    opaque = p[solid] / a[solid] * 255  # the luminance where it is opaque
    if opaque.size and float(opaque.std()) < 20 and coverage < 0.98:
        # Opaque in one flat colour, the rest transparent: a drawing's strokes (a
        # thick pen, cropped tight), whatever share they cover; they are the ink.
        return 255.0 if float(np.median(opaque)) < 128 else 0.0
    # Mostly opaque with texture (a photo with transparent margins): continue its
    # background.
    return float(np.median(opaque)) if opaque.size else 255.0
