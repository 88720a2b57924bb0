"""A live one-line progress display for training (tqdm), drawn on a terminal only."""

from __future__ import annotations

import os
import sys

__all__ = ["EpochProgress", "format_epoch"]


class EpochProgress:
    """Shows ``epoch 3/10 [#####.....] 52% 0.4s`` on one line while an epoch runs (tqdm).

    It reads only host-side counters (the batch number), never a device value, so
    drawing it adds no GPU sync. The line is erased when the epoch finishes, leaving the
    terminal clean for the epoch's summary line. Drawing is tqdm's (the progress bar
    the field uses): it throttles redraws, sizes the bar to the terminal and, by
    default, draws nothing when the stream is not a terminal.

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

    def __init__(self, epochs: int, stream=None, enabled: bool | None = None,
                 min_interval: float = 0.1):
        self.stream = sys.stderr if stream is None else stream
        if enabled is None:
            enabled = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.enabled = enabled
        self.epochs = epochs
        self.min_interval = min_interval
        self._bar = None

    def start(self, epoch: int, n_batches: int) -> None:
        """Begin drawing epoch `epoch` of `n_batches` batches."""
        if not self.enabled:
            return
        from tqdm import tqdm

        digits = len(str(self.epochs))
        columns, lines = _terminal_size(self.stream)
        self._bar = tqdm(total=n_batches, desc=f"epoch {epoch:>{digits}}/{self.epochs}",
                         file=self.stream, leave=False, mininterval=self.min_interval,
                         ascii=".#", ncols=columns, nrows=lines,
                         bar_format="{desc} [{bar:24}] {percentage:3.0f}% {elapsed_s:5.1f}s")

    def advance(self, done: int) -> None:
        """Note that `done` batches of the epoch are finished (redrawn at most every `min_interval`)."""
        if self._bar is not None:
            self._bar.update(done - self._bar.n)

    def finish(self) -> None:
        """Erase the line."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _terminal_size(stream) -> tuple[int, int]:
    """The terminal's (columns, lines), 80 x 24 where it reports none.

    A new pseudo-terminal reports 0 x 0, which tqdm would take as no room to draw.
    """
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return 80, 24
    return size.columns or 80, size.lines or 24


def format_epoch(record: dict) -> str:
    """One line summing up an epoch record from `mnist_xp.training.train`."""
    line = (f"epoch {record['epoch']:>3}  loss {record['train_loss']:.4f}  "
            f"train {record['train_accuracy']:7.2%}")
    if record.get("val_accuracy") is not None:
        line += f"  val {record['val_accuracy']:7.2%}"
    if record.get("test_accuracy") is not None:
        line += f"  test {record['test_accuracy']:7.2%}"
    return line + f"  {record['seconds']:6.2f}s"
