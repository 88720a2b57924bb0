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

from .augment import Distortion, EpochWarps, RandomShift, RandomWarp, image_side
from .train_control import StopEpoch, TrainingDiverged, TrainingInterrupted
from .training_state import TrainState
from .backend import Backend
from .model import Architecture, forward, loss_and_grads
from .optim import OPTIMIZERS, SGD, make_optimizer

__all__ = ["TrainConfig", "train", "predict_scores", "count_correct", "EVAL_BATCH_SIZE"]

# Large enough to keep the BLAS busy, small enough to bound the (batch, hidden)
# temporaries; evaluation everywhere uses it, so saved and live models agree exactly.
EVAL_BATCH_SIZE = 2048
SCHEDULES = ("constant", "cosine", "onecycle", "step")


def learning_rate_at(config: "TrainConfig", step: int, total_steps: int,
                     steps_per_epoch: int | None = None) -> float:
    """The learning rate of optimizer step `step` (0-based) out of `total_steps`.

    ``constant``; ``cosine`` (half a cosine from the learning rate to 0); ``onecycle``
    (Smith & Topin 2019, as PyTorch's OneCycleLR: from lr/25 up to lr over the first
    30% of the steps, then a cosine down to lr/1e4); ``step`` (lr, then lr/10 from half
    way and lr/100 from three quarters). ``warmup`` epochs (needs `steps_per_epoch`)
    ramp the rate linearly from 0 at the start, on top of any schedule but onecycle.
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
    distortion: Distortion | None = None
    warp_bank: int = 1024
    optimizer: str = "sgd"
    warmup: float = 0.0
    label_smoothing: float = 0.0

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not (isinstance(self.epochs, (int, np.integer)) and self.epochs >= 1):
            raise ValueError(f"epochs must be a positive integer, got {self.epochs!r}")
        if not (isinstance(self.batch_size, (int, np.integer)) and self.batch_size >= 1):
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if not (isinstance(self.shift, (int, np.integer)) and self.shift >= 0):
            raise ValueError(f"shift must be a non-negative integer, got {self.shift!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if not (math.isfinite(self.warmup) and 0 <= self.warmup <= self.epochs):
            raise ValueError(f"warmup must be between 0 and the number of epochs, got {self.warmup!r}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing!r}")
        if self.warps_on and self.shift:
            raise ValueError("use either batch shifts or per-image distortions (whose "
                             "translate setting shifts), not both")

    @property
    def warps_on(self) -> bool:
        """Whether images are distorted one by one (`distortion` is set and active)."""
        return self.distortion is not None and self.distortion.active


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
                on_batch: Callable[[int], None] | None = None, label_smoothing: float = 0.0,
                step_losses=None, should_stop: Callable[[], bool] | None = None):
    """Run one pass over the data in the given order; return device sums (loss, correct).

    ``fetch(i, idx)`` gives the raw input rows of batch `i`, whose image indices are
    `idx`; ``lr_at(i)`` the learning rate of batch `i`. With `step_losses` (a device
    vector, one entry per batch) each batch's summed loss is stored there too; when
    ``should_stop()`` turns true after a step, `StopEpoch` is raised.
    """
    xp = backend.xp
    loss_sum = xp.zeros((), dtype=dtype)
    correct = xp.zeros((), dtype=xp.int64)
    n = order.shape[0]
    for i, start in enumerate(range(0, n, batch_size)):
        idx = order[start:min(start + batch_size, n)]
        xb = as_float_batch(fetch(i, idx), dtype, scale, xp)
        yb = xp.take(y, idx, axis=0)
        batch_loss, batch_correct, grads = loss_and_grads(params, xb, yb, arch, xp,
                                                          label_smoothing)
        opt.step(params, grads, opt_state, lr_at(i))
        loss_sum += batch_loss
        correct += xp.astype(batch_correct, xp.int64)
        if step_losses is not None:
            step_losses[i] = batch_loss
        if on_batch is not None:
            on_batch(i + 1)
        if should_stop is not None and should_stop():
            raise StopEpoch(i + 1)
    return loss_sum, correct


def flatten_optimizer_state(state: dict, backend: Backend) -> dict[str, np.ndarray]:
    """An optimizer's state (`SGD.init_state` / `Adam.init_state`) as flat host arrays."""
    flat = {}
    for key, value in state.items():
        if isinstance(value, dict):
            flat.update({f"{key}/{k}": backend.to_numpy(v).copy() for k, v in value.items()})
        elif key == "t":
            flat["t"] = np.array(value, dtype=np.int64)
        else:  # SGD: velocity per parameter
            flat[f"velocity/{key}"] = backend.to_numpy(value).copy()
    return flat


def load_optimizer_state(state: dict, flat: dict[str, np.ndarray], backend: Backend) -> None:
    """Fill an optimizer's `state` in place from `flatten_optimizer_state`'s arrays."""
    for key in list(state):
        value = state[key]
        if isinstance(value, dict):
            for k, v in value.items():
                v[...] = backend.asarray(flat[f"{key}/{k}"])
        elif key == "t":
            state["t"] = int(flat["t"])
        else:
            value[...] = backend.asarray(flat[f"velocity/{key}"])


def _restore(state: TrainState, params, runner, rng, backend) -> int:
    """Put a run back where `state` left it; return the epochs it had done."""
    for k, v in state.params.items():
        params[k][...] = backend.asarray(v)
    if state.runner and state.runner_kind == type(runner).__name__ and hasattr(runner, "load_exact_state"):
        runner.load_exact_state(state.runner)  # the fast path's own arrays: bit for bit
    else:
        if hasattr(runner, "read"):
            runner.read(params)
        runner.load_optimizer_state(state.optimizer)
    rng.bit_generator.state = state.rng_state
    return state.epoch


def _diverged(epoch: int, runner, n_batches: int, loss: float, lr: float):
    """Raise `TrainingDiverged` for a non-finite epoch loss, naming where it began."""
    step = runner.first_bad_step() if hasattr(runner, "first_bad_step") else None
    what = "NaN" if math.isnan(loss) else "infinite"
    where = f"epoch {epoch}" + ("" if step is None else f", step {step + 1} of {n_batches}")
    raise TrainingDiverged(
        f"training diverged: the loss became {what} in {where}; the run was stopped. "
        f"Try a smaller learning rate (e.g. --learning-rate {lr / 10:g})", epoch, step)


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


def _warper(config: TrainConfig, n_inputs: int) -> RandomWarp | None:
    """The per-image distorter for `n_inputs`-pixel square images, or None when off."""
    if not config.warps_on:
        return None
    side = image_side(n_inputs)
    if side is None:
        raise ValueError(f"distortions need square images; {n_inputs} features are not")
    return RandomWarp(side, config.distortion, config.warp_bank)


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
                 shifter: RandomShift | None = None, warper: RandomWarp | None = None,
                 label_smoothing: float = 0.0):
        self.params, self.arch, self.opt = params, arch, optimizer
        self.label_smoothing = label_smoothing
        self.x, self.y, self.backend = x, y, backend
        self.shifter, self.warper = shifter, warper
        self.state = optimizer.init_state(params, backend.xp)

    def run_epoch(self, order, batch_size: int, lr_at, shift_ids=None, on_batch=None,
                  warps: EpochWarps | None = None, should_stop=None):
        """Train one pass over `order` (device int64); return device (loss sum, correct).

        `shift_ids` (host integers, one per batch) pick each batch's translation;
        `warps` (with a warper) each sample's distortion. ``should_stop()``, checked
        after every step, ends the epoch early with `StopEpoch`.
        """
        xp, x, shifter, warper = self.backend.xp, self.x, self.shifter, self.warper
        n_batches = -(-order.shape[0] // batch_size)
        self._step_losses = xp.zeros(n_batches, dtype=self.params["W1"].dtype)

        def fetch(i, idx):
            if warper is not None:
                return warper.gather(x, idx, warps, xp)
            xb = xp.take(x, idx, axis=0)
            return xb if shifter is None else shifter.apply(xb, shift_ids[i], xp)
        return train_epoch(self.params, self.opt, self.state, fetch, self.y, order, self.arch,
                           self.params["W1"].dtype, batch_size, input_scale(x, xp), self.backend,
                           lr_at=lr_at, on_batch=on_batch, label_smoothing=self.label_smoothing,
                           step_losses=self._step_losses, should_stop=should_stop)

    def write_back(self, params) -> None:
        """Nothing to do: the generic path updates `params` directly."""

    def first_bad_step(self) -> int | None:
        """The first step (from 0) of the last epoch whose loss was not finite, or None."""
        losses = self.backend.to_numpy(self._step_losses)  # only read after a bad epoch
        bad = np.flatnonzero(~np.isfinite(losses))
        return int(bad[0]) if bad.size else None

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """The optimizer's buffers as host arrays, flattened (``velocity/W1``, ``m/W1``...)."""
        return flatten_optimizer_state(self.state, self.backend)

    def load_optimizer_state(self, flat: dict[str, np.ndarray]) -> None:
        """Take buffers as `optimizer_state` gives them."""
        load_optimizer_state(self.state, flat, self.backend)


def train(params, x, y, *, arch: Architecture, config: TrainConfig, backend: Backend,
          rng: np.random.Generator, eval_set=None, on_epoch=None, progress=None,
          fast: bool = True, cuda_graphs: bool = True, val_set=None,
          patience: int | None = None, resume: TrainState | None = None,
          on_checkpoint: Callable[[TrainState], None] | None = None, checkpoint_every: int = 1,
          should_stop: Callable[[], bool] | None = None) -> list[dict]:
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
    val_set : tuple of (x_val, y_val) device arrays, optional
        A validation set held out of the training data. It is scored after every
        epoch, and at the end `params` are set back to those of the epoch with the
        best validation accuracy (the earliest among equals).
    patience : int, optional
        With `val_set`: stop once this many epochs in a row have not beaten the best
        validation accuracy (early stopping).
    resume : TrainState, optional
        Continue a run from this state (see `mnist_xp.training_state`) instead of from
        `params`; on the same backend and fast path, the result is bit for bit that of
        the uninterrupted run.
    on_checkpoint : callable, optional
        Called with a `TrainState` after every `checkpoint_every`-th epoch and after the
        last one.
    should_stop : callable, optional
        Checked after every step (after every epoch on a CUDA graph): once it returns
        True, the running epoch's work is dropped and `TrainingInterrupted` is raised
        carrying the state after the last completed epoch.

    Raises
    ------
    TrainingDiverged
        The loss became NaN or infinite; the message names the epoch and step.

    Returns
    -------
    list of dict
        One record per epoch run: ``epoch``, ``train_loss`` (mean), ``train_accuracy``,
        ``val_accuracy`` and ``test_accuracy`` (None without `val_set`/`eval_set`),
        ``seconds`` (training only), ``device``; with `val_set`, the best epoch's
        record also has ``"best": True``.
    """
    dtype = params["W1"].dtype
    opt = make_optimizer(config.optimizer, config.learning_rate, momentum=config.momentum,
                         weight_decay=config.weight_decay)
    n = x.shape[0]
    n_batches = -(-n // config.batch_size)
    total_steps = n_batches * config.epochs
    history = []
    # NaN and overflow are detected once per epoch from the loss (TrainingDiverged, one
    # clear message); NumPy's own warnings would only add noise on the way there.
    with backend.activate(), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        shifter = _shifter(config.shift, arch.n_inputs)
        warper = _warper(config, arch.n_inputs)
        runner = (backend.epoch_runner(params, arch, opt, x, y, shifter, graphs=cuda_graphs,
                                       warper=warper, label_smoothing=config.label_smoothing)
                  if fast else None)
        if runner is None:
            runner = GenericEpochs(params, arch, opt, x, y, backend, shifter, warper,
                                   config.label_smoothing)

        def draw_epoch():
            # The shuffle is drawn on the host (the same order on every backend for a
            # seed) and uploaded once per epoch; the batches' shifts stay on the host
            # (Python integers choose slices, never a sync).
            order = rng.permutation(n).astype(np.int64)
            shifts = (rng.integers(0, shifter.n_shifts, n_batches).tolist()
                      if shifter is not None else None)
            warps = warper.draw_epoch(n, rng) if warper is not None else None
            return order, shifts, warps

        best = None  # (epoch, validation accuracy, parameters) of the best epoch so far
        if patience is not None and (patience < 1 or val_set is None):
            raise ValueError("patience needs a validation set and must be >= 1")
        first_epoch = 1
        if resume is not None:
            first_epoch, best = _restore(resume, params, runner, rng, backend) + 1, None
            history = [dict(r) for r in resume.history]
            if resume.best is not None:
                best = (resume.best[0], resume.best[1],
                        {k: backend.asarray(v) for k, v in resume.best[2].items()})
        kind = type(runner).__name__

        def snapshot(epoch, rng_state):
            """The state after `epoch`, on the host (copies: training goes on in place)."""
            runner.write_back(params)
            return TrainState(
                epoch=epoch, history=[dict(r) for r in history], rng_state=rng_state,
                params={k: backend.to_numpy(v).copy() for k, v in params.items()},
                optimizer=runner.optimizer_state(), runner_kind=kind,
                runner=runner.exact_state() if hasattr(runner, "exact_state") else {},
                best=None if best is None else (best[0], best[1], {
                    k: backend.to_numpy(v).copy() for k, v in best[2].items()}))

        last_state = resume
        rng_state = rng.bit_generator.state  # before the next epoch's draws
        pending = draw_epoch() if first_epoch <= config.epochs else None
        for epoch in range(first_epoch, config.epochs + 1):
            if progress is not None:
                progress.start(epoch, n_batches)
            host_order, shift_ids, host_warps = pending
            order = backend.asarray(host_order)
            warps = None if host_warps is None else RandomWarp.upload(host_warps, backend)
            backend.synchronize()  # sync point: the uploads stay out of the epoch's time
            t0 = time.perf_counter()
            first_step = (epoch - 1) * n_batches
            try:
                loss_sum, correct = runner.run_epoch(
                    order, config.batch_size,
                    lambda i: learning_rate_at(config, first_step + i, total_steps, n_batches),
                    shift_ids=shift_ids,
                    on_batch=None if progress is None else progress.advance,
                    **({} if warps is None else {"warps": warps}),
                    **({} if should_stop is None else {"should_stop": should_stop}),
                )
            except StopEpoch as stop:
                if progress is not None:
                    progress.finish()
                raise TrainingInterrupted(epoch, stop.steps_done, last_state) from None
            runner.write_back(params)
            last = epoch == config.epochs
            next_rng_state = rng.bit_generator.state
            if backend.is_async and not last:
                pending = draw_epoch()  # on the host while the device runs the queued epoch
            backend.synchronize()  # sync point: the epoch's work is done before the clock is read
            seconds = time.perf_counter() - t0
            if not backend.is_async and not last:
                pending = draw_epoch()
            # The one device -> host read of the epoch's training metrics.
            loss_sum, correct = backend.to_numpy(loss_sum), backend.to_numpy(correct)
            if not math.isfinite(float(loss_sum)):
                if progress is not None:
                    progress.finish()
                _diverged(epoch, runner, n_batches, float(loss_sum), learning_rate_at(
                    config, first_step, total_steps, n_batches))
            record = {
                "epoch": epoch,
                "train_loss": float(loss_sum) / n,
                "train_accuracy": int(correct) / n,
                "val_accuracy": None,
                "test_accuracy": None,
                "seconds": seconds,
                "device": backend.device,
            }
            for key, scored in (("val_accuracy", val_set), ("test_accuracy", eval_set)):
                if scored is not None:
                    hits = count_correct(params, scored[0], scored[1], arch, dtype, backend)
                    record[key] = int(backend.to_numpy(hits)) / scored[0].shape[0]
            if val_set is not None and (best is None or record["val_accuracy"] > best[1]):
                # a device copy: no sync, and the next epochs update params in place
                best = (epoch, record["val_accuracy"],
                        {k: backend.xp.asarray(v, copy=True) for k, v in params.items()})
            if progress is not None:
                progress.finish()
            history.append(record)
            if on_epoch is not None:
                on_epoch(record)
            stopping = best is not None and patience is not None and epoch - best[0] >= patience
            if should_stop is not None or on_checkpoint is not None:
                last_state = snapshot(epoch, next_rng_state)
                if on_checkpoint is not None and (epoch % checkpoint_every == 0 or last or stopping):
                    on_checkpoint(last_state)
                if should_stop is not None and should_stop() and not last:
                    raise TrainingInterrupted(epoch + 1, 0, last_state)
            if stopping:
                break
        if best is not None:
            history[best[0] - 1]["best"] = True
            for k, v in best[2].items():
                params[k][...] = v
    return history
