"""Turn a picture of one handwritten digit into the 28×28 image the model expects.

MNIST's digits were made from scanned handwriting: each was size-normalised to fit a
20×20 box, keeping its aspect ratio, with anti-aliasing, then placed in a 28×28 field
so that its centre of mass sat at the centre, white ink on black (LeCun, Bottou,
Bengio & Haffner, "Gradient-based learning applied to document recognition", Proc.
IEEE 86(11), 1998, §III.A). `to_mnist` does the same to any picture (a phone photo, a
scan, a drawing), once `mnist_xp.images.ink` has found the ink, so a user's own
handwriting reaches the model looking like what it learnt from::

    from mnist_xp.images import preprocess_file, save_png
    x = preprocess_file("seven.jpg")       # uint8 (28, 28)
    model.predict(x.reshape(1, 784))
    save_png(x, "seen.png", scale=10)      # what the model sees, enlarged

A picture of a number is read digit by digit with `mnist_xp.images.read_digits`.
"""

from __future__ import annotations

import math
import os

import numpy as np

from ..errors import BlankImageError, ImageError
from ..pixels import IMAGE_SIDE
from .blank import blank_error, check_ink
from .ink import INVERT_CHOICES, cv2_module, stroke_width

__all__ = ["INVERT_CHOICES", "mnist_box", "preprocess_file", "to_mnist"]

_SIDE, _BOX, _CENTRE = IMAGE_SIDE, 20, IMAGE_SIDE / 2  # MNIST: 28×28 field, 20×20 box, centre of mass at (14, 14)

# Stroke width (pixels, at the 20-pixel box scale) below which strokes are thickened,
# and the width they are thickened to: MNIST strokes are about 2 pixels wide, while a
# thin pen on a large canvas would shrink to a faint hairline the model never saw.
_THIN_STROKE, _STROKE = 1.5, 2.0

# The widest stroke (pixels, at the 20-pixel box scale) left as it is; wider ones are
# slimmed to it. A marker's strokes, twice MNIST's, close a 9's or an 8's loops into
# blobs (measured as here: median 2.1 in photos of a ballpoint's digits, 3.3 in the
# generated "thick" pictures, tests/handwriting_pictures.py). MNIST's own bold digits
# reach 3 too and read best as they are, so strokes are slimmed no further than this.
# Only crops of at least _SLIM_MIN pixels are slimmed: whole-pixel erosion is too
# coarse for a digit drawn at about MNIST's own size, which is as the model learnt it.
_THICK_STROKE, _SLIM_MIN = 2.4, 40
# Strokes are measured and reshaped with the crop's longer side at most this many
# pixels: 8 per pixel of MNIST's 20-pixel box, fine enough for whole-pixel erosion.
_STROKE_SIDE = 8 * _BOX


def to_mnist(gray, invert: str = "auto") -> np.ndarray:
    """Normalise a picture of one digit the way MNIST's digits were made.

    1. Find the ink (`mnist_xp.images.ink.find_ink`): the paper, the polarity from
       the ink against it, the background with its shadows, ruled lines.
    2. Keep the digit's own strokes and drop specks (as `read_digits` does), taking
       everything that remains as one digit.
    3. Crop to the ink, bring its strokes toward MNIST's width (thicken hairlines,
       slim a marker's broad strokes), and scale to fit 20×20 keeping the aspect
       ratio, with area-averaging anti-aliasing.
    4. Place it in a 28×28 field with the ink's centre of mass at pixel (14, 14)
       (row, column, counted from 0), clipping whatever would fall outside.

    Parameters
    ----------
    gray : array_like, shape (H, W)
        Greyscale pixels: uint8 (0 black to 255 white), floats in [0, 1], booleans,
        or integers in 0..255. Any size from a few pixels up.
    invert : {"auto", "yes", "no"}, default "auto"
        "yes": the ink is darker than the paper; "no": it is lighter; "auto": detect
        it from the ink against the paper.

    Returns
    -------
    numpy.ndarray
        uint8, shape (28, 28): white (255) ink on black (0).

    Raises
    ------
    BlankImageError
        If no ink is found (the picture is blank, a lone dot or too faint).
    ImageError
        If OpenCV is missing.
    ValueError
        If `gray` is not a 2-D image in a supported range, or `invert` is unknown.
    """
    from .digits import _whole_ink

    cv2 = cv2_module()
    try:
        image = mnist_box(cv2, _whole_ink(cv2, gray, invert))
    except BlankImageError:
        raise blank_error("image") from None
    check_ink(image)
    return image


def preprocess_file(path: str | os.PathLike, invert: str = "auto") -> np.ndarray:
    """`load_image` then `to_mnist`: the image the model sees for the file at `path`.

    Parameters
    ----------
    path : str, os.PathLike or binary file object
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
        As `load_image` and `to_mnist` do; the message starts with the path (or a
        file object's ``name``).
    """
    from .decode import load_image
    from .ink import DECODE_SIDE

    name = getattr(path, "name", "image") if hasattr(path, "read") else path
    gray = load_image(path, max_side=DECODE_SIDE)
    try:
        return to_mnist(gray, invert=invert)
    except BlankImageError:
        raise blank_error(str(name)) from None
    except ImageError as exc:
        raise type(exc)(f"{name}: {exc}") from None


def mnist_box(cv2, crop: np.ndarray) -> np.ndarray:
    """A digit's ink levels (float32 0..1, cropped to it) as MNIST's uint8 (28, 28) image."""
    crop = _trim(crop)
    if max(crop.shape) > _STROKE_SIDE:
        # Morphology costs the crop's area times the kernel's, and the kernel grows
        # with the crop: shrinking first keeps a 768-pixel digit at about 1 ms, not 0.1 s.
        crop = _fit(cv2, crop, _STROKE_SIDE)
    crop = _restroke(cv2, crop)
    patch = _fit(cv2, crop, _BOX)
    return _place(patch, _SIDE, _CENTRE)


def _trim(crop: np.ndarray) -> np.ndarray:
    """`crop` without empty rows and columns around the ink."""
    rows, cols = np.flatnonzero(crop.any(axis=1)), np.flatnonzero(crop.any(axis=0))
    if rows.size == 0:
        return crop
    return crop[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _restroke(cv2, crop: np.ndarray) -> np.ndarray:
    """`crop` with its strokes brought toward MNIST's width at the 20-pixel box scale.

    Hairlines are dilated to `_STROKE`; strokes wider than `_THICK_STROKE` (a marker,
    a felt pen) are eroded to it, by whole pixels, so that loops stay open.
    """
    scale = _BOX / max(crop.shape)
    solid = crop > 0.5
    # Padded: the crop is trimmed to its ink, so strokes run along its edges, and an
    # edge is outline too (a solid bar would otherwise have no outline at all).
    width = stroke_width(np.pad(solid if solid.any() else crop > 0, 1)) * scale
    if width < _THIN_STROKE:
        radius = math.ceil((_STROKE - width) / (2 * scale))
        k = 2 * radius + 1
        return cv2.dilate(np.pad(crop, radius), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    if width <= _THICK_STROKE or max(crop.shape) < _SLIM_MIN:
        return crop
    radius = round((width - _THICK_STROKE) / (2 * scale))
    if radius < 1 or 2 * radius + 1 >= min(crop.shape):
        return crop  # a kernel as wide as the crop would leave nothing to read
    k = 2 * radius + 1
    slim = cv2.erode(crop, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return _trim(slim) if slim.max() > 0.5 else crop


def _fit(cv2, crop: np.ndarray, box: int) -> np.ndarray:
    """`crop` scaled so its longer side is `box` pixels, keeping the aspect ratio."""
    h, w = crop.shape
    scale = box / max(h, w)
    size = (max(1, min(box, round(w * scale))), max(1, min(box, round(h * scale))))
    method = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    patch = np.clip(cv2.resize(np.ascontiguousarray(crop, np.float32), size,
                               interpolation=method), 0, 1)
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
        return np.zeros((side, side), np.uint8)  # the "no ink" rule refuses it
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
