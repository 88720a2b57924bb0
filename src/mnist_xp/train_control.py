"""Signals between the training loop and the epoch runners: stopping, divergence."""

from __future__ import annotations

from .errors import MnistXPError

__all__ = ["StopEpoch", "TrainingDiverged", "TrainingInterrupted"]


class StopEpoch(Exception):
    """Raised by a runner after the step at which it was asked to stop."""

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
