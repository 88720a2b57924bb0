"""Learning-rate schedules: the rate of every optimizer step of a run."""

from __future__ import annotations

import math

from ..settings import SCHEDULES

__all__ = ["SCHEDULES", "learning_rate_at", "epoch_learning_rates"]


def learning_rate_at(config, step: int, total_steps: int,
                     steps_per_epoch: int | None = None) -> float:
    """The learning rate of optimizer step `step` (0-based) out of `total_steps`.

    Parameters
    ----------
    config : TrainConfig
        Uses ``learning_rate``, ``schedule`` (one of `SCHEDULES`) and ``warmup`` (epochs).
    step, total_steps : int
    steps_per_epoch : int, optional
        Needed for ``warmup``.

    Returns
    -------
    float

    Notes
    -----
    ``constant``; ``cosine`` (half a cosine from the learning rate to 0); ``onecycle``
    (Smith & Topin 2019, as PyTorch's OneCycleLR: from lr/25 up to lr over the first
    30% of the steps, then a cosine down to lr/1e4); ``step`` (lr, then lr/10 from half
    way and lr/100 from three quarters). ``warmup`` epochs ramp the rate linearly from
    0 at the start, on top of any schedule but onecycle.
    """
    lr, frac = config.learning_rate, step / total_steps
    if config.schedule == "cosine":
        lr *= 0.5 * (1.0 + math.cos(math.pi * frac))
    elif config.schedule == "onecycle":
        peak = 0.3 * total_steps
        if step < peak:
            lr = lr / 25 + (lr - lr / 25) * step / peak
        else:
            low = lr / 1e4
            lr = low + (lr - low) * 0.5 * (1.0 + math.cos(math.pi * (step - peak) / (total_steps - peak)))
    elif config.schedule == "step":
        lr *= 1.0 if frac < 0.5 else 0.1 if frac < 0.75 else 0.01
    if config.warmup and config.schedule != "onecycle" and steps_per_epoch:
        ramp = config.warmup * steps_per_epoch
        if step < ramp:
            lr *= (step + 1) / ramp
    return lr


def epoch_learning_rates(config, epoch: int, n_batches: int) -> list[float]:
    """The learning rate of each step of epoch `epoch` (from 1), as Python floats."""
    total = n_batches * config.epochs
    first = (epoch - 1) * n_batches
    return [learning_rate_at(config, first + i, total, n_batches) for i in range(n_batches)]
