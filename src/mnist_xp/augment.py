"""Training-time augmentation: random translations, applied batch by batch.

Each batch is moved by a whole number of pixels, up to `max_shift` in each direction,
drawn afresh for every batch of every epoch (all images of a batch move alike);
pixels moved in from outside are zero, as on MNIST's blank borders. The shifts are
drawn on the host as Python integers, so applying one is a slice copy on the device:
no per-pixel index arrays and no host-device traffic.
"""

from __future__ import annotations

import math


__all__ = ["image_side", "RandomShift"]


def image_side(n_features: int) -> int | None:
    """The side of a square image with `n_features` pixels, or None if not square."""
    side = math.isqrt(n_features)
    return side if side * side == n_features else None


class RandomShift:
    """Random integer translations of flattened square images.

    Parameters
    ----------
    side : int
        Image side in pixels (28 for MNIST); images are rows of ``side * side`` pixels.
    max_shift : int
        Largest translation in pixels along each axis (>= 1).
    """

    def __init__(self, side: int, max_shift: int):
        if max_shift < 1 or max_shift >= side:
            raise ValueError(f"max_shift must be in [1, {side - 1}], got {max_shift}")
        self.side, self.max_shift = side, max_shift

    @property
    def n_shifts(self) -> int:
        """How many distinct (dy, dx) translations there are."""
        return (2 * self.max_shift + 1) ** 2

    def offset(self, shift_id: int) -> tuple[int, int]:
        """The (dy, dx) of shift number `shift_id` (0 .. n_shifts-1): down and right."""
        width = 2 * self.max_shift + 1
        return shift_id // width - self.max_shift, shift_id % width - self.max_shift

    def slices(self, shift_id: int):
        """(destination, source, zero strips) slices of a (batch, side, side) image stack.

        ``out[dst] = img[src]`` moves the images; the strips, (rows, columns) index
        tuples, are the destination pixels that nothing moved into.
        """
        dy, dx = self.offset(int(shift_id))
        (dst_y, src_y, strip_y), (dst_x, src_x, strip_x) = (_axis(d, self.side) for d in (dy, dx))
        full = slice(None)
        return ((full, dst_y, dst_x), (full, src_y, src_x),
                [(full, strip_y, full), (full, full, strip_x)])

    def apply(self, xb, shift_id: int, xp):
        """The batch `xb` (rows, side*side) moved by shift `shift_id`, zero-filled."""
        rows = xb.shape[0]
        if self.offset(int(shift_id)) == (0, 0):
            return xb
        dst, src, _ = self.slices(shift_id)
        images = xp.reshape(xb, (rows, self.side, self.side))
        out = xp.zeros_like(images)
        out[dst] = images[src]
        return xp.reshape(out, (rows, self.side * self.side))


def _axis(d: int, side: int) -> tuple[slice, slice, slice]:
    """Destination, source and empty-strip slices for a move by `d` along one axis."""
    dst = slice(max(d, 0), side + min(d, 0))
    src = slice(max(-d, 0), side - max(d, 0))
    strip = slice(0, d) if d > 0 else slice(side + d, side)
    return dst, src, strip
