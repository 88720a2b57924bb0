"""Every exception mnist_xp raises on purpose, and the one-line form of any exception.

The `MnistXPError` family are *user* errors: the CLI prints the message as one line on
stderr and exits with status 2, without a traceback. Anything else that escapes is a
bug and keeps its traceback. The training loop's own signals (`StopEpoch`,
`TrainingInterrupted`, `TrainingDiverged`) live here too, so that engines, the loop and
the CLI share them without importing each other.
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
    "BlankImageError",
    "SettingError",
    "DeviceFallbackWarning",
    "PixelScaleWarning",
    "NotFittedError",
    "StopEpoch",
    "TrainingDiverged",
    "TrainingInterrupted",
    "exception_line",
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


class BlankImageError(ImageError):
    """A picture or pixel array holds no digit to read: blank, a lone dot, or too faint.

    Raised by the one "no ink" rule, `mnist_xp.images.check_ink`, wherever an input
    reaches the model (pictures, arrays, the server), so that every form of a blank
    input is refused the same way. The message starts with the input's name.
    """


class SettingError(MnistXPError, ValueError):
    """A training setting is out of range, of the wrong type, or at odds with another.

    Attributes
    ----------
    setting : str
        The name of the setting at fault (the first one a rule involves).
    """

    def __init__(self, message: str, setting: str):
        super().__init__(message)
        self.setting = setting


class DeviceFallbackWarning(UserWarning):
    """An explicitly requested CUDA device was unusable, so the CPU is used instead."""


class PixelScaleWarning(UserWarning):
    """Input that looks like 0..255 pixel intensities arrived as another dtype than uint8.

    Only uint8 input is read as pixels (and scaled by 1/255); other dtypes are used as
    given, and a network trained on 0..255 values learns little (loss stuck near ln 10).
    """


class NotFittedError(ValueError, AttributeError):
    """A model was used before `fit` (the same bases as scikit-learn's NotFittedError)."""


class StopEpoch(Exception):
    """Raised by an engine after the step at which it was asked to stop."""

    def __init__(self, steps_done: int):
        super().__init__(f"stopped after {steps_done} steps")
        self.steps_done = steps_done


class TrainingDiverged(MnistXPError, ArithmeticError):
    """The training loss became NaN or infinite; the run was stopped."""

    def __init__(self, message: str, epoch: int, step: int | None):
        super().__init__(message)
        self.epoch, self.step = epoch, step


class TrainingInterrupted(Exception):
    """Training stopped at a request (a signal) after a step.

    Attributes
    ----------
    epoch : int
        The epoch that was running (its work is discarded).
    step : int
        Steps of that epoch done when it stopped.
    state : TrainState or None
        The state after the last completed epoch (None if none completed), to save.
    """

    def __init__(self, epoch: int, step: int, state):
        super().__init__(f"interrupted during epoch {epoch} after step {step}")
        self.epoch, self.step, self.state = epoch, step, state


def exception_line(exc: BaseException, *, with_type: bool = False) -> str:
    """`exc`'s message with its white space folded onto one line.

    Its type name stands in for an empty message, and is put in front of the message
    with ``with_type=True`` (``"CUDARuntimeError: no CUDA-capable device"``).
    """
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    if not text:
        return name
    return f"{name}: {text}" if with_type else text
