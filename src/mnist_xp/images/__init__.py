"""Pictures of handwritten digits: decoding files, the MNIST normalisation, writing PNGs.

``decode`` (which files are images; their greyscale pixels, through Pillow),
``normalize`` (`to_mnist`: the 28×28 image the model sees), ``digits`` (`read_digits`:
the digits of a picture of a number, left to right), ``blank`` (`check_ink`: the one
"no ink" rule) and ``encode`` (`save_png`).
"""

from .blank import MAX_INK_PIXELS, MIN_INK_PIXELS, check_ink, is_all_ink, is_blank
from .decode import IMAGE_SUFFIXES, INSTALL_HINT, MAX_PIXELS, load_image, looks_like_image
from .digits import Digit, read_digits, read_digits_file
from .encode import save_png
from .normalize import INVERT_CHOICES, preprocess_file, to_mnist

__all__ = ["IMAGE_SUFFIXES", "INSTALL_HINT", "INVERT_CHOICES", "MAX_PIXELS", "MIN_INK_PIXELS", "MAX_INK_PIXELS",
           "Digit", "check_ink", "is_all_ink", "is_blank", "load_image", "looks_like_image",
           "preprocess_file", "read_digits", "read_digits_file", "save_png", "to_mnist"]
