"""Pictures of handwritten digits: decoding files, the MNIST normalisation, writing PNGs.

``decode`` (which files are images; their greyscale pixels, through Pillow),
``normalize`` (`to_mnist`: the 28×28 image the model sees) and ``encode`` (`save_png`).
"""

from .decode import IMAGE_SUFFIXES, INSTALL_HINT, MAX_PIXELS, load_image, looks_like_image
from .encode import save_png
from .normalize import INVERT_CHOICES, preprocess_file, to_mnist

__all__ = ["IMAGE_SUFFIXES", "INSTALL_HINT", "INVERT_CHOICES", "MAX_PIXELS", "load_image",
           "looks_like_image", "preprocess_file", "save_png", "to_mnist"]
