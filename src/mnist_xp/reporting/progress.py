"""A live one-line progress display for training, drawn on a terminal only."""

from __future__ import annotations

import sys
import time

__all__ = ["EpochProgress", "format_epoch"]


class EpochProgress:
    """Shows ``epoch 3/10 [#####.....] 52% 0.4s`` on one line, redrawn in place.

    It reads only host-side counters (the batch number), never a device value, so
    drawing it adds no GPU sync. The line is erased when the epoch finishes, leaving the
    terminal clean for the epoch's summary line.

    Parameters
    ----------
    epochs : int
        Total number of epochs, for the ``3/10`` counter.
    stream : file, optional
        Where to draw; standard error by default.
    enabled : bool, optional
        Draw at all; by default only when `stream` is a terminal.
    min_interval : float
        Least seconds between two redraws.
    """

    width = 24

    def __init__(self, epochs: int, stream=None, enabled: bool | None = None,
                 min_interval: float = 0.1):
        self.stream = sys.stderr if stream is None else stream
        if enabled is None:
            enabled = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.enabled = enabled
        self.epochs = epochs
        self.min_interval = min_interval
        self._epoch = self._n_batches = 0
        self._t0 = self._last_draw = 0.0

    def start(self, epoch: int, n_batches: int) -> None:
        """Begin drawing epoch `epoch` of `n_batches` batches."""
        self._epoch, self._n_batches = epoch, n_batches
        self._t0 = time.monotonic()
        self._last_draw = 0.0
        self._draw(0)

    def advance(self, done: int) -> None:
        """Note that `done` batches of the epoch are finished (redraws at most every `min_interval`)."""
        now = time.monotonic()
        if self.enabled and now - self._last_draw >= self.min_interval:
            self._draw(done, now)

    def finish(self) -> None:
        """Erase the line."""
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def _draw(self, done: int, now: float | None = None) -> None:
        if not self.enabled:
            return
        now = time.monotonic() if now is None else now
        self._last_draw = now
        frac = done / self._n_batches if self._n_batches else 1.0
        filled = int(frac * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        digits = len(str(self.epochs))
        self.stream.write(
            f"\r\x1b[Kepoch {self._epoch:>{digits}}/{self.epochs} [{bar}] {frac:4.0%} "
            f"{now - self._t0:5.1f}s"
        )
        self.stream.flush()


def format_epoch(record: dict) -> str:
    """One line summing up an epoch record from `mnist_xp.training.train`."""
    line = (f"epoch {record['epoch']:>3}  loss {record['train_loss']:.4f}  "
            f"train {record['train_accuracy']:7.2%}")
    if record.get("val_accuracy") is not None:
        line += f"  val {record['val_accuracy']:7.2%}"
    if record.get("test_accuracy") is not None:
        line += f"  test {record['test_accuracy']:7.2%}"
    return line + f"  {record['seconds']:6.2f}s"
