"""The training loop and batched evaluation, on device-resident data.

The data are uploaded once (images as uint8 when they are pixels); every batch is
gathered, converted and scaled on the device. Loss and correct counts are summed on
the device and read once per epoch: inside the batch loop nothing waits for the GPU.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .augment import RandomShift, image_side
from .backend import Backend
from .model import Architecture, forward, loss_and_grads
from .optim import SGD

__all__ = ["TrainConfig", "train", "predict_scores", "count_correct", "EVAL_BATCH_SIZE"]

# Large enough to keep the BLAS busy, small enough to bound the (batch, hidden)
# temporaries; evaluation everywhere uses it, so saved and live models agree exactly.
EVAL_BATCH_SIZE = 2048
SCHEDULES = ("constant", "cosine")


def learning_rate_at(config: "TrainConfig", step: int, total_steps: int) -> float:
    """The learning rate of optimizer step `step` (0-based) out of `total_steps`."""
    if config.schedule == "cosine":
        return config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * step / total_steps))
    return config.learning_rate


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run."""

    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    shift: int = 0

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not (isinstance(self.epochs, (int, np.integer)) and self.epochs >= 1):
            raise ValueError(f"epochs must be a positive integer, got {self.epochs!r}")
        if not (isinstance(self.batch_size, (int, np.integer)) and self.batch_size >= 1):
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if not (isinstance(self.shift, (int, np.integer)) and self.shift >= 0):
            raise ValueError(f"shift must be a non-negative integer, got {self.shift!r}")


def as_float_batch(xb, dtype, scale: float, xp):
    """Batch as `dtype`; pixel batches (uint8) are also scaled by `scale` (1/255)."""
    if xb.dtype == dtype:
        return xb
    xb = xp.astype(xb, dtype)
    return xb * scale if scale != 1.0 else xb


def input_scale(x, xp) -> float:
    """1/255 for uint8 pixels, which are read as intensities in [0, 255]; else 1."""
    return 1.0 / 255.0 if x.dtype == xp.uint8 else 1.0


def train_epoch(params, opt: SGD, opt_state, fetch, y, order, arch, dtype, batch_size, scale,
                backend, lr_at: Callable[[int], float],
                on_batch: Callable[[int], None] | None = None):
    """Run one pass over the data in the given order; return device sums (loss, correct).

    ``fetch(i, idx)`` gives the raw input rows of batch `i`, whose image indices are
    `idx`; ``lr_at(i)`` the learning rate of batch `i`.
    """
    xp = backend.xp
    loss_sum = xp.zeros((), dtype=dtype)
    correct = xp.zeros((), dtype=xp.int64)
    n = order.shape[0]
    for i, start in enumerate(range(0, n, batch_size)):
        idx = order[start:min(start + batch_size, n)]
        xb = as_float_batch(fetch(i, idx), dtype, scale, xp)
        yb = xp.take(y, idx, axis=0)
        batch_loss, batch_correct, grads = loss_and_grads(params, xb, yb, arch, xp)
        opt.step(params, grads, opt_state, lr_at(i))
        loss_sum += batch_loss
        correct += xp.astype(batch_correct, xp.int64)
        if on_batch is not None:
            on_batch(i + 1)
    return loss_sum, correct


def _chunks(n: int, size: int):
    """(start, stop) pairs cutting range(n) into pieces of at most `size`."""
    return [(i, min(i + size, n)) for i in range(0, n, size)]


def _batched_scores(params, x, arch: Architecture, dtype, backend: Backend, batch_size: int):
    """Yield (start, stop, scores) for consecutive row blocks of `x`."""
    xp = backend.xp
    scale = input_scale(x, xp)
    for i, j in _chunks(x.shape[0], batch_size):
        yield i, j, forward(params, as_float_batch(x[i:j, ...], dtype, scale, xp), arch, xp)[1]


def predict_scores(params, x, arch: Architecture, dtype, backend: Backend,
                   batch_size: int = EVAL_BATCH_SIZE):
    """Output scores for every row of `x`, computed in large batches on the device.

    Parameters
    ----------
    params : dict of device arrays
    x : device array, shape (n, n_inputs), uint8 pixels or float `dtype`
    arch : Architecture
    dtype : float dtype of the parameters (a dtype of ``backend.xp``)
    backend : Backend
    batch_size : int

    Returns
    -------
    device array, shape (n, n_outputs), `dtype`
    """
    chunks = [z for _, _, z in _batched_scores(params, x, arch, dtype, backend, batch_size)]
    return chunks[0] if len(chunks) == 1 else backend.xp.concat(chunks, axis=0)


def count_correct(params, x, y, arch: Architecture, dtype, backend: Backend,
                  batch_size: int = EVAL_BATCH_SIZE):
    """Number of rows of `x` whose predicted class index equals `y`, as a device 0-d int64."""
    xp = backend.xp
    correct = xp.zeros((), dtype=xp.int64)
    for i, j, z in _batched_scores(params, x, arch, dtype, backend, batch_size):
        correct += xp.sum(xp.astype(xp.argmax(z, axis=1) == y[i:j], xp.int64))
    return correct


def _shifter(max_shift: int, n_inputs: int) -> RandomShift | None:
    """The random-shift augmenter for `n_inputs`-pixel square images, or None when off."""
    if max_shift == 0:
        return None
    side = image_side(n_inputs)
    if side is None:
        raise ValueError(f"shift needs square images; {n_inputs} features are not; use shift=0")
    return RandomShift(side, max_shift)


class GenericEpochs:
    """Training epochs on the generic array-API path (any backend).

    Same interface as the backends' fast paths (`mnist_xp._fast_cpu.NumpyEpochRunner`):
    ``run_epoch`` trains one pass and returns device sums of loss and hits, and
    ``write_back`` makes ``params`` current (here they always are).
    """

    def __init__(self, params, arch: Architecture, optimizer: SGD, x, y, backend: Backend,
                 shifter: RandomShift | None = None):
        self.params, self.arch, self.opt = params, arch, optimizer
        self.x, self.y, self.backend, self.shifter = x, y, backend, shifter
        self.state = optimizer.init_state(params, backend.xp)

    def run_epoch(self, order, batch_size: int, lr_at, shift_ids=None, on_batch=None):
        """Train one pass over `order` (device int64); return device (loss sum, correct).

        `shift_ids` (host integers, one per batch) pick each batch's translation.
        """
        xp, x, shifter = self.backend.xp, self.x, self.shifter

        def fetch(i, idx):
            xb = xp.take(x, idx, axis=0)
            return xb if shifter is None else shifter.apply(xb, shift_ids[i], xp)
        return train_epoch(self.params, self.opt, self.state, fetch, self.y, order, self.arch,
                           self.params["W1"].dtype, batch_size, input_scale(x, xp), self.backend,
                           lr_at=lr_at, on_batch=on_batch)

    def write_back(self, params) -> None:
        """Nothing to do: the generic path updates `params` directly."""


def train(params, x, y, *, arch: Architecture, config: TrainConfig, backend: Backend,
          rng: np.random.Generator, eval_set=None, on_epoch=None, progress=None,
          fast: bool = True, cuda_graphs: bool = True) -> list[dict]:
    """Train `params` in place for ``config.epochs`` epochs.

    Parameters
    ----------
    params : dict of device arrays
        From `mnist_xp.model.init_params`, moved with ``backend.asarray``.
    x : device array, shape (n, n_inputs)
        uint8 pixels (scaled by 1/255 per batch) or floats of the parameters' dtype.
    y : device array, shape (n,), int64 class indices.
    arch : Architecture
    config : TrainConfig
    backend : Backend
    rng : numpy.random.Generator
        Source of the per-epoch shuffles (drawn on the host so that every backend
        sees the same order for the same seed).
    eval_set : tuple of (x_eval, y_eval) device arrays, optional
        Scored after every epoch (not counted in ``seconds``).
    on_epoch : callable, optional
        Called with each epoch's record.
    progress : object with ``start(epoch, n_batches)``, ``advance(i)``, ``finish()``
        A live display; see `mnist_xp.progress.EpochProgress`.
    fast : bool
        Use the backend's fast path when it has one (the default); False forces the
        generic array-API path, which the fast paths are tested against. A fast path
        may keep the parameters in its own layout during an epoch and writes them
        back into `params` at the end of each one: `on_epoch` may read `params`, but
        changes it makes to them are not seen by the rest of the run.
    cuda_graphs : bool
        On CUDA, replay each epoch as one captured CUDA graph (the default) rather than
        launching its kernels step by step; the results are the same.

    Returns
    -------
    list of dict
        One record per epoch: ``epoch``, ``train_loss`` (mean), ``train_accuracy``,
        ``test_accuracy`` (None without `eval_set`), ``seconds`` (training only),
        ``device``.
    """
    dtype = params["W1"].dtype
    opt = SGD(config.learning_rate, config.momentum, weight_decay=config.weight_decay)
    n = x.shape[0]
    n_batches = -(-n // config.batch_size)
    total_steps = n_batches * config.epochs
    history = []
    with backend.activate():
        shifter = _shifter(config.shift, arch.n_inputs)
        runner = (backend.epoch_runner(params, arch, opt, x, y, shifter, graphs=cuda_graphs)
                  if fast else None)
        if runner is None:
            runner = GenericEpochs(params, arch, opt, x, y, backend, shifter)

        def draw_epoch():
            # The shuffle is drawn on the host (the same order on every backend for a
            # seed) and uploaded once per epoch; the batches' shifts stay on the host
            # (Python integers choose slices, never a sync).
            order = rng.permutation(n).astype(np.int64)
            shifts = (rng.integers(0, shifter.n_shifts, n_batches).tolist()
                      if shifter is not None else None)
            return order, shifts

        pending = draw_epoch()
        for epoch in range(1, config.epochs + 1):
            if progress is not None:
                progress.start(epoch, n_batches)
            host_order, shift_ids = pending
            order = backend.asarray(host_order)
            backend.synchronize()  # sync point: the uploads stay out of the epoch's time
            t0 = time.perf_counter()
            first_step = (epoch - 1) * n_batches
            loss_sum, correct = runner.run_epoch(
                order, config.batch_size,
                lambda i: learning_rate_at(config, first_step + i, total_steps),
                shift_ids=shift_ids,
                on_batch=None if progress is None else progress.advance,
            )
            runner.write_back(params)
            last = epoch == config.epochs
            if backend.is_async and not last:
                pending = draw_epoch()  # on the host while the device runs the queued epoch
            backend.synchronize()  # sync point: the epoch's work is done before the clock is read
            seconds = time.perf_counter() - t0
            if not backend.is_async and not last:
                pending = draw_epoch()
            # The one device -> host read of the epoch's training metrics.
            loss_sum, correct = backend.to_numpy(loss_sum), backend.to_numpy(correct)
            record = {
                "epoch": epoch,
                "train_loss": float(loss_sum) / n,
                "train_accuracy": int(correct) / n,
                "test_accuracy": None,
                "seconds": seconds,
                "device": backend.device,
            }
            if eval_set is not None:
                x_eval, y_eval = eval_set
                hits = count_correct(params, x_eval, y_eval, arch, dtype, backend)
                record["test_accuracy"] = int(backend.to_numpy(hits)) / x_eval.shape[0]
            if progress is not None:
                progress.finish()
            history.append(record)
            if on_epoch is not None:
                on_epoch(record)
    return history
