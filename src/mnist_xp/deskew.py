"""Deskewing: straighten each image's slant and centre its ink, before the network sees it.

A handwritten digit's slant is a large part of how one writer's digit differs from
another's, and it says nothing about which digit it is. Deskewing removes it as LeCun
et al. (1998, section III.A) describe: find the principal axis of the shape closest to
the vertical and shift the lines so as to make it vertical. The axis comes from the
image's first and second moments, and the shift is about the ink's centre of mass,
which also moves to the frame's centre. The MNIST table
(http://yann.lecun.com/exdb/mnist/) lists "deskewing" as the preprocessing of many of
its classifiers.

For a 784-100-10 network it pays because the network is small: the hundred hidden units
no longer spend capacity on every slant. The deskewed image is a fixed function of the
image, with no parameters, so a model trained on deskewed images deskews every image it
is given (`MLPClassifier(deskew=True)`, ``mnist-xp train --deskew``).

Written against the array namespace `xp`, so it runs on the device that holds the data.
"""

from __future__ import annotations

import math

__all__ = ["deskew", "DESKEW_CHUNK"]

#: Images deskewed per pass. Each pass's temporaries (the largest, the padded rows, is
#: 8 MB for 28x28 images) stay small enough for the allocator to reuse their memory
#: from pass to pass; at 4,096 images they were allocated and page-faulted afresh each
#: time, and deskewing the 60,000 training images took 2.5x as long.
DESKEW_CHUNK = 512

# A slant beyond 45 degrees is no handwriting slant (a bar or a blot with almost no
# vertical extent); the shear is clipped there so that such an image is not smeared
# across the frame.
_MAX_SLANT = 1.0


def deskew(x, xp, *, side: int | None = None):
    """Deskew flattened square images: shear each one upright about its centre of ink.

    Each image ``I`` is resampled (bilinear, zero outside the frame) at
    ``(y + cy - c, x + a (y - c) + cx - c)`` for output pixel ``(y, x)``, where
    ``c = (side - 1) / 2``, ``(cy, cx)`` is the ink's centre of mass and
    ``a = cov(y, x) / var(y)`` its slant, both from the image's first and second
    moments with the pixel values as weights. ``a`` is clipped to [-1, 1]. An image
    with no ink, or no vertical extent, is returned unchanged (its slant is 0 and its
    centre the frame's).

    Parameters
    ----------
    x : device array, shape (n_samples, side * side)
        uint8 pixels, or float32/float64 values (any scale: the moments are ratios, and
        the resampling is linear). Values must be >= 0, which the moments need as
        weights; `MLPClassifier` refuses negative ones before calling this.
    xp : array namespace
        The namespace of `x` (NumPy, CuPy, array_api_strict).
    side : int, optional
        The image side; by default the square root of the number of features.

    Returns
    -------
    device array, shape (n_samples, side * side), the dtype of `x`
        A new array. uint8 input gives uint8 output (rounded to the nearest value),
        so deskewed pixels keep the engines' uint8 path and a quarter of the memory.

    Raises
    ------
    ValueError
        `x` is not 2-D, or the number of features is not a square.
    TypeError
        `x` is neither uint8 nor float32/float64.

    References
    ----------
    LeCun, Bottou, Bengio & Haffner, "Gradient-based learning applied to document
    recognition", Proc. IEEE 86(11), 1998 (the deskewing in the MNIST table).
    """
    if x.ndim != 2:
        raise ValueError(f"deskew takes a 2-D array (n_samples, side * side); got shape "
                         f"{tuple(x.shape)}")
    n, p = x.shape
    side = math.isqrt(p) if side is None else side
    if side * side != p:
        raise ValueError(f"deskewing needs square images; {p} features are not")
    is_bytes = x.dtype == xp.uint8
    if not (is_bytes or x.dtype == xp.float32 or x.dtype == xp.float64):
        raise TypeError(f"deskew takes uint8 pixels or float32/float64 values, not {x.dtype}")
    work = xp.float32 if is_bytes else x.dtype
    out = xp.empty((n, p), dtype=x.dtype)
    for i in range(0, n, DESKEW_CHUNK):
        j = min(i + DESKEW_CHUNK, n)
        part = _deskew_chunk(x[i:j, :], side, work, xp)
        # back to bytes chunk by chunk: a float copy of the whole set would be 4x its size
        out[i:j, :] = xp.astype(xp.clip(xp.round(part), 0, 255), xp.uint8) if is_bytes else part
    return out


def _deskew_chunk(x, side: int, work, xp):
    """`deskew` of up to `DESKEW_CHUNK` images, in float type `work`."""
    m = x.shape[0]
    f = xp.reshape(xp.astype(x, work), (m, side, side))
    coord = xp.arange(side, dtype=work)
    rows, cols = xp.sum(f, axis=2), xp.sum(f, axis=1)  # (m, side): ink per row, column
    total = xp.sum(rows, axis=1)
    inked = total > 0
    safe = xp.where(inked, total, xp.ones_like(total))
    centre = (side - 1) / 2.0
    cy = xp.where(inked, xp.sum(rows * coord, axis=1) / safe, centre)
    cx = xp.where(inked, xp.sum(cols * coord, axis=1) / safe, centre)
    dy = coord[None, :] - cy[:, None]  # (m, side)
    dx = coord[None, :] - cx[:, None]
    var_y = xp.sum(rows * dy * dy, axis=1) / safe
    cov = xp.sum(xp.sum(f * dy[:, :, None], axis=1) * dx, axis=1) / safe
    upright = var_y > 0
    slant = xp.where(upright, cov / xp.where(upright, var_y, xp.ones_like(var_y)), 0.0)
    slant = xp.clip(slant, -_MAX_SLANT, _MAX_SLANT)
    # Bilinear resampling, separable because the shear only moves whole rows sideways:
    # first each output row y mixes source rows y + cy - c (one shift per image), then
    # each row is shifted by x + a (y - c) + cx - c (one shift per row). Two row gathers
    # and one pixel gather, instead of four pixel gathers with four index arrays.
    sy = cy - centre
    y0 = xp.floor(sy)
    wy = sy - y0
    lines = xp.reshape(f, (m * side, side))
    out_rows = xp.arange(side, dtype=xp.int64)[None, :]
    first = xp.reshape(xp.arange(m, dtype=xp.int64) * side, (m, 1))
    mixed = None
    for r, w in ((out_rows + xp.astype(y0, xp.int64)[:, None], 1 - wy[:, None]),
                 (out_rows + xp.astype(y0, xp.int64)[:, None] + 1, wy[:, None])):
        inside = (r >= 0) & (r < side)
        line = xp.take(lines, xp.reshape(xp.where(inside, first + r, 0), (-1,)), axis=0)
        weight = xp.reshape(xp.where(inside, w, 0.0), (-1, 1))
        mixed = line * weight if mixed is None else mixed + line * weight
    sx = slant[:, None] * (coord[None, :] - centre) + (cx - centre)[:, None]  # (m, side)
    x0 = xp.reshape(xp.floor(sx), (-1, 1))
    wx = xp.reshape(sx, (-1, 1)) - x0
    # zeros either side cover the largest shift: |a (y - c)| + |cx - c| < 2 side
    pad = 2 * side
    blank = xp.zeros((m * side, pad), dtype=work)
    padded = xp.reshape(xp.concat([blank, mixed, blank], axis=1), (-1,))
    width = side + 2 * pad
    starts = xp.reshape(xp.arange(m * side, dtype=xp.int64) * width, (-1, 1)) \
        + xp.astype(x0, xp.int64) + pad
    taken = xp.take(padded, xp.reshape(starts + xp.arange(side + 1, dtype=xp.int64)[None, :],
                                       (-1,)), axis=0)
    taken = xp.reshape(taken, (m * side, side + 1))
    out = taken[:, :-1] * (1 - wx) + taken[:, 1:] * wx
    return xp.reshape(out, (m, side * side))
