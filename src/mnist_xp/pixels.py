"""How images are held: MNIST's 28×28 field of uint8 intensities, scaled by 1/255 on the device.

Data stay uint8 from the file to the device (a quarter of float32's memory and transfer);
each batch is converted to the parameters' float dtype and scaled by `PIXEL_SCALE` where
it is used. Inputs of any float dtype are taken as already scaled.
"""

from __future__ import annotations

__all__ = ["IMAGE_SIDE", "N_PIXELS", "PIXEL_SCALE", "input_scale", "as_float_batch"]

#: Side of an MNIST image, pixels.
IMAGE_SIDE = 28
#: Pixels of an MNIST image (the network's input width).
N_PIXELS = IMAGE_SIDE * IMAGE_SIDE
#: uint8 intensity 255 is 1.0.
PIXEL_SCALE = 1.0 / 255.0


def input_scale(x, xp) -> float:
    """`PIXEL_SCALE` for uint8 pixels, which are read as intensities in [0, 255]; else 1."""
    return PIXEL_SCALE if x.dtype == xp.uint8 else 1.0


def as_float_batch(xb, dtype, scale: float, xp):
    """Batch `xb` as `dtype`; pixel batches (uint8) are also multiplied by `scale`."""
    if xb.dtype == dtype:
        return xb
    xb = xp.astype(xb, dtype)
    return xb * scale if scale != 1.0 else xb
