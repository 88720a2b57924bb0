"""Training-time augmentation: batch-wise random shifts and per-image random warps.

`RandomShift` moves each batch by a whole number of pixels, up to `max_shift` in each
direction, drawn afresh for every batch of every epoch (all images of a batch move
alike); pixels moved in from outside are zero, as on MNIST's blank borders. The shifts
are drawn on the host as Python integers, so applying one is a slice copy on the
device: no per-pixel index arrays and no host-device traffic.

`RandomWarp` distorts every image on its own: a random affine map (rotation, scale,
shear, translation) plus an elastic distortion (a smoothed random displacement field,
Simard et al. 2003). Each epoch a bank of `bank_size` warps is drawn on the host as
pixel index tables (nearest-neighbour resampling) and uploaded once; every image then
draws one warp of the bank. Applying a warp is a gather from the device-resident
uint8 data, so it fuses with the batch gather that training does anyway: the
distortion costs almost nothing on top of it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .settings import AUGMENT_FIELDS, BY_NAME, augment_active, check_value

__all__ = ["image_side", "RandomShift", "Distortion", "RandomWarp", "EpochWarps", "WARP_BANK"]

#: Distinct warps drawn per epoch; each image draws one of them.
WARP_BANK = 1024


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


@dataclass(frozen=True)
class Distortion:
    """Ranges of the per-image random warps; 0 turns a part off.

    Attributes
    ----------
    rotate : float
        Largest rotation, degrees (uniform in ``[-rotate, rotate]``).
    zoom : float
        Largest relative change of scale (uniform in ``[1 - zoom, 1 + zoom]``).
    shear : float
        Largest shear angle, degrees.
    translate : float
        Largest translation along each axis, pixels.
    elastic : float
        Strength (alpha) of the elastic distortion: the displacement field is uniform
        noise in [-1, 1] smoothed by a Gaussian of `sigma` pixels, times `elastic`.
    sigma : float
        Smoothing of the elastic field, pixels.
    """

    rotate: float = 0.0
    zoom: float = 0.0
    shear: float = 0.0
    translate: float = 0.0
    elastic: float = 0.0
    sigma: float = 4.0

    def __post_init__(self):
        # the ranges are the settings table's (mnist_xp.settings: --rotate, --zoom...)
        for key, value in asdict(self).items():
            check_value(AUGMENT_FIELDS[key], value)

    @property
    def active(self) -> bool:
        """Whether any part of the warp is on (sigma alone is not)."""
        return augment_active(asdict(self))

    @classmethod
    def from_dict(cls, d: dict | None) -> "Distortion":
        """A Distortion from a dict of its fields (None or {} give no distortion).

        Raises
        ------
        SettingError
            An unknown key, or a value out of its range (the settings table's checks).
        """
        check_value(BY_NAME["augment"], dict(d or {}))
        return cls(**dict(d or {}))


@dataclass
class EpochWarps:
    """One epoch's warps on the device: the bank's tables and each sample's warp.

    Attributes
    ----------
    index : device array, shape (bank_size, side * side), int64
        For each warp and output pixel, the source pixel's position in the image row
        (0 where the source falls outside; `keep` then zeroes it).
    keep : device array, shape (bank_size, side * side), uint8
        1 where the source pixel is inside the image, else 0.
    ids : device array, shape (n,), int64
        The warp of each training sample (by sample number, not by position in the
        epoch's order).
    """

    index: object
    keep: object
    ids: object


class RandomWarp:
    """Per-image random affine and elastic warps of flattened square images.

    Parameters
    ----------
    side : int
        Image side in pixels (28 for MNIST).
    distortion : Distortion
    bank_size : int
        How many distinct warps are drawn per epoch.
    """

    def __init__(self, side: int, distortion: Distortion, bank_size: int = WARP_BANK):
        if not distortion.active:
            raise ValueError("RandomWarp needs an active Distortion")
        if bank_size < 1:
            raise ValueError(f"bank_size must be >= 1, got {bank_size}")
        self.side, self.distortion, self.bank_size = side, distortion, bank_size
        self._blur = _gaussian_matrix(side, distortion.sigma) if distortion.elastic else None

    def draw_bank(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw `bank_size` warps on the host.

        Returns
        -------
        index : numpy.ndarray, shape (bank_size, side * side), int64
        keep : numpy.ndarray, shape (bank_size, side * side), uint8
        """
        d, side, k = self.distortion, self.side, self.bank_size
        rad = math.pi / 180.0
        theta = rng.uniform(-d.rotate, d.rotate, k) * rad
        shear = rng.uniform(-d.shear, d.shear, k) * rad
        scale = rng.uniform(1 - d.zoom, 1 + d.zoom, k)
        shift = rng.uniform(-d.translate, d.translate, (k, 2))
        # forward map M = rotation @ shear @ scale; each output pixel samples M^-1 (p - t)
        cos, sin, tan = np.cos(theta), np.sin(theta), np.tan(shear)
        m = np.empty((k, 2, 2))
        m[:, 0, 0], m[:, 0, 1] = cos * scale, (cos * tan - sin) * scale
        m[:, 1, 0], m[:, 1, 1] = sin * scale, (sin * tan + cos) * scale
        inv = np.linalg.inv(m)
        centre = (side - 1) / 2.0
        ys, xs = np.mgrid[0:side, 0:side].astype(np.float64)
        grid = np.stack([xs.ravel() - centre, ys.ravel() - centre])  # (2, P): x, y
        rel = grid[None] - shift[:, :, None]  # (k, 2, P)
        src = np.einsum("kij,kjp->kip", inv, rel) + centre
        if d.elastic:
            noise = rng.uniform(-1.0, 1.0, (k, 2, side, side))
            smooth = self._blur @ noise @ self._blur.T  # separable Gaussian, zero outside
            src += d.elastic * smooth.reshape(k, 2, side * side)
        cx, cy = np.rint(src[:, 0]), np.rint(src[:, 1])
        inside = (cx >= 0) & (cx < side) & (cy >= 0) & (cy < side)
        index = np.where(inside, cy * side + cx, 0).astype(np.int64)
        return index, inside.astype(np.uint8)

    def draw_epoch(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """A fresh bank and one warp per sample for an epoch of `n` samples, on the host.

        Returns ``(index, keep, ids)``; `upload` puts them on a device.
        """
        index, keep = self.draw_bank(rng)
        return index, keep, rng.integers(0, self.bank_size, n).astype(np.int64)

    @staticmethod
    def upload(host: tuple[np.ndarray, ...], backend) -> EpochWarps:
        """`draw_epoch`'s arrays as `EpochWarps` on `backend`'s device."""
        return EpochWarps(*(backend.asarray(a) for a in host))

    def gather(self, x, rows, warps: EpochWarps, xp, first: int = 0):
        """The warped images of samples `rows`: (len(rows), side*side), in `x`'s dtype.

        `x` is the (n, side*side) device-resident data, `rows` the batch's sample
        numbers (device int64).
        """
        p = self.side * self.side
        ids = xp.take(warps.ids, rows, axis=0)
        pix = xp.take(warps.index, ids, axis=0) + xp.reshape(rows * p, (-1, 1))
        flat = xp.take(xp.reshape(x, (-1,)), xp.reshape(pix, (-1,)), axis=0)
        keep = xp.take(warps.keep, ids, axis=0)
        out = xp.reshape(flat, (rows.shape[0], p))
        return out * keep if out.dtype == keep.dtype else out * xp.astype(keep, out.dtype)


def _gaussian_matrix(side: int, sigma: float) -> np.ndarray:
    """(side, side) matrix of a 1-D Gaussian blur with zero padding (kernel sums to 1)."""
    i = np.arange(side)
    g = np.exp(-0.5 * ((i[:, None] - i[None, :]) / sigma) ** 2)
    radius = np.arange(-side, side + 1)
    return g / np.exp(-0.5 * (radius / sigma) ** 2).sum()
