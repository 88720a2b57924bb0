"""Exceptions for mistakes a user can make and mend.

Every error here is a *user* error: the CLI prints its message as one line on stderr
and exits with status 2, without a traceback. Anything else that escapes is a bug and
keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "MnistXPError",
    "DataError",
    "DownloadError",
    "ModelFileError",
    "DeviceError",
    "ReportError",
    "ImageError",
    "DeviceFallbackWarning",
    "NotFittedError",
]


class MnistXPError(Exception):
    """Base class of the errors a user can act on; the message says what to do."""


class DataError(MnistXPError, ValueError):
    """A data file or directory is missing, unreadable or not valid MNIST-style IDX."""


class DownloadError(MnistXPError, OSError):
    """The full MNIST could not be downloaded or failed its checksum."""


class ModelFileError(MnistXPError, ValueError):
    """A model file is missing, corrupt, foreign or of an unsupported format version."""


class DeviceError(MnistXPError, RuntimeError):
    """A device string does not parse, or a required device cannot be used."""


class ReportError(MnistXPError, ValueError):
    """A report or figure cannot be made: unusable output directory, bad metrics log, no matplotlib."""


class ImageError(MnistXPError, ValueError):
    """An image file is missing, unreadable, too large or blank, or Pillow is not installed."""


class DeviceFallbackWarning(UserWarning):
    """An explicitly requested CUDA device was unusable, so the CPU is used instead."""


class NotFittedError(ValueError, AttributeError):
    """A model was used before `fit` (the same bases as scikit-learn's NotFittedError)."""
