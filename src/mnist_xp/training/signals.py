"""Stopping a run cleanly on SIGINT/SIGTERM: the signal only asks, the loop stops after a step."""

from __future__ import annotations

import contextlib
import signal
from typing import Iterator

__all__ = ["StopRequest", "stop_on_signals"]


class StopRequest:
    """Which stop signal arrived (None until one does); pass `requested` as ``should_stop``."""

    signum: int | None = None

    def requested(self) -> bool:
        """Whether a stop signal has arrived."""
        return self.signum is not None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """While the block runs, SIGINT and SIGTERM ask training to stop after its current step.

    A second signal raises `KeyboardInterrupt` at once (the user insists). The previous
    handlers are restored on exit.
    """
    stop = StopRequest()

    def handler(signum, frame):
        if stop.signum is not None:
            raise KeyboardInterrupt  # asked twice: stop now, without a checkpoint
        stop.signum = signum

    signals = [signal.SIGINT, signal.SIGTERM]
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
