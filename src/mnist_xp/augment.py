"""Training-time augmentation, done on the device batch by batch.

Random translation: each training image is moved by a whole number of pixels, up to
`max_shift` in each direction, drawn afresh every epoch. Pixels moved in from outside
repeat the nearest edge pixel (MNIST's borders are blank, so this is the usual zero
fill there, and it needs no padded copy of the data). A batch is one gather through a
precomputed table of source offsets, one row per possible (dy, dx), so no per-sample
work runs on the host.
"""

from __future__ import annotations

import math

import numpy as np

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

    def offset_table(self) -> np.ndarray:
        """(n_shifts, side*side) int64: for each shift, where each output pixel is read from."""
        s, last = self.max_shift, self.side - 1
        i, j = np.meshgrid(np.arange(self.side), np.arange(self.side), indexing="ij")
        rows = [(np.clip(i - dy, 0, last) * self.side + np.clip(j - dx, 0, last)).ravel()
                for dy in range(-s, s + 1) for dx in range(-s, s + 1)]
        return np.stack(rows).astype(np.int64)

    def gather(self, flat, idx, shift_ids, table, xp):
        """Batch of shifted images, (len(idx), side*side).

        `flat` is the images (n, side*side) flattened to one axis, `idx` the batch's
        image indices, `shift_ids` one row index of `table` (`offset_table`) per image.
        """
        base = idx[:, None] * (self.side * self.side)
        where = base + xp.take(table, shift_ids, axis=0)
        return xp.reshape(xp.take(flat, xp.reshape(where, (-1,))), (idx.shape[0], -1))
