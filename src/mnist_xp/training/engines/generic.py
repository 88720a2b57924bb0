"""The generic engine: one training step in portable array-API calls, on any backend.

This is the reference: every fast engine is tested against it. It runs wherever
`mnist_xp.model` runs -- NumPy, CuPy and array_api_strict -- and covers every setting
(all optimizers, label smoothing, shifts, warps, both losses and activations, any
number of hidden layers, dropout and distillation from a teacher).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ...errors import StopEpoch
from ...model import dropout_mask, loss_and_grads
from ...optim import state_from_host, state_to_host
from ...pixels import as_float_batch, input_scale
from .base import Engine, EngineSetup, EpochInputs

__all__ = ["GenericEngine"]


class GenericEngine(Engine):
    """Training epochs on the generic array-API path; updates ``setup.params`` in place.

    Parameters
    ----------
    setup : EngineSetup
    """

    name = "generic"
    covers = ("generic array-API path (every setting: sample weights, deep networks, dropout "
              "and teachers included)")

    def __init__(self, setup: EngineSetup):
        super().__init__(setup)
        self.state = setup.optimizer.init_state(setup.params, setup.backend.xp)
        self._step_losses = None

    @classmethod
    def unsupported_reason(cls, setup: EngineSetup) -> str | None:
        """None: the generic path trains every setup."""
        return None

    @property
    def description(self) -> str:
        """``generic array-API path``."""
        return "generic array-API path"

    def _fetch(self, epoch: EpochInputs, i: int, idx):
        """The raw input rows of step `i` (sample numbers `idx`), warped or shifted."""
        s, xp = self.setup, self.setup.backend.xp
        if s.warper is not None:
            return s.warper.gather(s.x, idx, epoch.warps, xp)
        xb = xp.take(s.x, idx, axis=0)
        return xb if s.shifter is None else s.shifter.apply(xb, epoch.shift_ids[i], xp)

    def run_epoch(self, epoch: EpochInputs, on_batch: Callable[[int], None] | None = None,
                  should_stop: Callable[[], bool] | None = None):
        """Train one pass (see `Engine.run_epoch`); device sums of loss and hits."""
        s = self.setup
        xp, params = s.backend.xp, s.params
        dtype = params["W1"].dtype
        scale = input_scale(s.x, xp)
        loss_sum = xp.zeros((), dtype=dtype)
        correct = xp.zeros((), dtype=xp.int64)
        self._step_losses = xp.zeros(epoch.n_batches, dtype=dtype)
        n, size = epoch.order.shape[0], epoch.batch_size
        for i, start in enumerate(range(0, n, size)):
            idx = epoch.order[start:min(start + size, n)]
            xb = as_float_batch(self._fetch(epoch, i, idx), dtype, scale, xp)
            yb = xp.take(s.y, idx, axis=0)
            wb = None if s.sample_weight is None else xp.take(s.sample_weight, idx, axis=0)
            masks = soft = None
            if s.dropout:
                masks = [dropout_mask(epoch.dropout_key, i, layer, (xb.shape[0], width),
                                      s.dropout, xp)
                         for layer, width in enumerate(s.arch.hidden_sizes, start=1)]
            if s.teacher is not None:
                soft = s.teacher.soft_targets(xb, xp)
            batch_loss, batch_correct, grads = loss_and_grads(
                params, xb, yb, s.arch, xp, s.label_smoothing, wb, masks, soft,
                *((s.teacher.temperature, s.teacher.weight) if soft is not None else ()))
            s.optimizer.step(params, grads, self.state, epoch.learning_rates[i])
            loss_sum += batch_loss
            correct += xp.astype(batch_correct, xp.int64)
            # a slice, not an element: a device-to-device copy on every array library
            self._step_losses[i:i + 1] = xp.reshape(batch_loss, (1,))
            if on_batch is not None:
                on_batch(i + 1)
            if should_stop is not None and should_stop():
                raise StopEpoch(i + 1)
        return loss_sum, correct

    def write_back(self, params: dict) -> None:
        """Nothing to do: the generic path updates the parameters directly."""

    def first_bad_step(self) -> int | None:
        """The first step of the last epoch with a non-finite loss (see `Engine`)."""
        losses = self.setup.backend.to_numpy(self._step_losses)  # only read after a bad epoch
        bad = np.flatnonzero(~np.isfinite(losses))
        return int(bad[0]) if bad.size else None

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """The optimizer's buffers in the generic layout (see `Engine`)."""
        return state_to_host(self.state, self.setup.backend)

    def load_optimizer_state(self, flat: dict[str, np.ndarray]) -> None:
        """Take buffers as `optimizer_state` gives them."""
        state_from_host(self.state, flat, self.setup.backend)
