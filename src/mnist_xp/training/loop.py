"""The training loop: one engine, device-resident data, one device read per epoch.

`train` reads as the loop it is: choose the engine, then for every epoch upload its
shuffle, let the engine train it, read its sums once, score the held-out sets, keep the
best epoch, and checkpoint. The shuffles, shifts and warps are drawn on the host from
one seeded generator, so every backend and engine sees the same order for a seed; on
CUDA the next epoch's draws overlap the device's work on the current one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..augment import RandomShift, RandomWarp, image_side
from ..backend import Backend, blas_threads
from ..errors import StopEpoch, TrainingDiverged, TrainingInterrupted
from ..inference import count_correct
from ..model import Architecture
from ..optim import make_optimizer
from ..settings import check_against_data
from .checkpoint import TrainState
from .engines import Engine, EngineChoice, EngineSetup, EpochInputs, choose_engine
from .schedule import epoch_learning_rates

__all__ = ["TrainingHooks", "train"]


@dataclass
class TrainingHooks:
    """What the caller wants to hear and say during a run; every hook is optional.

    Attributes
    ----------
    on_engine : callable
        Called once, before the first epoch, with the `EngineChoice`.
    on_epoch : callable
        Called with each epoch's record (see `train`).
    progress : object with ``start(epoch, n_batches)``, ``advance(i)``, ``finish()``
        A live display; see `mnist_xp.reporting.progress.EpochProgress`.
    on_checkpoint : callable
        Called with a `TrainState` after every `checkpoint_every`-th epoch and after the
        last one.
    checkpoint_every : int
    should_stop : callable
        Checked after every step (after every epoch on a CUDA graph): once it returns
        True, the running epoch's work is dropped and `TrainingInterrupted` is raised
        carrying the state after the last completed epoch.
    on_finish : callable
        Called once at the end with the `TrainState` after the last epoch run (one host
        copy of the weights and optimizer buffers): what a later run continues from.
    """

    on_engine: Callable[[EngineChoice], None] | None = None
    on_epoch: Callable[[dict], None] | None = None
    progress: object | None = None
    on_checkpoint: Callable[[TrainState], None] | None = None
    checkpoint_every: int = 1
    should_stop: Callable[[], bool] | None = None
    on_finish: Callable[[TrainState], None] | None = None


def train(params, x, y, *, arch: Architecture, config, backend: Backend,
          rng: np.random.Generator, eval_set=None, val_set=None,
          hooks: TrainingHooks | None = None, resume: TrainState | None = None,
          fast: bool = True, cuda_graphs: bool = True, sample_weight=None,
          teacher=None) -> list[dict]:
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
        Source of the per-epoch shuffles, shifts and warps.
    eval_set : tuple of (x_eval, y_eval) device arrays, optional
        Scored after every epoch (not counted in ``seconds``).
    val_set : tuple of (x_val, y_val) device arrays, optional
        A validation set held out of the training data. It is scored after every
        epoch, and at the end `params` are set back to those of the epoch with the
        best validation accuracy (the earliest among equals). With
        ``config.n_iter_no_change`` the run stops once that many epochs in a row have
        not beaten it (early stopping); without `val_set`, once that many have not
        lowered the training loss (the last epoch's weights are kept).
    hooks : TrainingHooks, optional
    resume : TrainState, optional
        Continue a run from this state (see `mnist_xp.training.checkpoint`) instead of
        from `params`; on the same backend and engine, the result is bit for bit that of
        the uninterrupted run.
    fast : bool
        Use the backend's fast engine when it covers the run (the default); False forces
        the generic engine. A fast engine may keep the parameters in its own layout
        during an epoch and writes them back into `params` after each one: `on_epoch`
        may read `params`, but changes it makes to them are not seen by the run.
    cuda_graphs : bool
        On CUDA, replay each epoch as one captured CUDA graph (the default) rather than
        launching its kernels step by step; the results are the same.
    sample_weight : device array, shape (n,), the parameters' dtype, optional
        Each sample's weight in the loss; ``train_loss`` is then the weighted mean.
    teacher : Teacher, optional
        Distil from it (`mnist_xp.training.teacher.resolve_teacher`); ``train_loss`` is
        then the distillation loss.

    Returns
    -------
    list of dict
        One record per epoch: ``epoch``, ``train_loss`` (mean), ``train_accuracy``,
        ``val_accuracy`` and ``test_accuracy`` (None without `val_set`/`eval_set`),
        ``seconds`` (training only), ``device``, ``engine`` and ``engine_reason`` (see
        `EngineChoice`); with `val_set`, the best epoch's record also has ``"best": True``.

    Raises
    ------
    TrainingDiverged
        The loss became NaN or infinite; the message names the epoch and step.
    TrainingInterrupted
        ``hooks.should_stop()`` turned true.
    SettingError
        Shifts or distortions of images that are not square.
    """
    hooks = hooks or TrainingHooks()
    # square images for shifts and warps (the estimator and the CLI checked it already,
    # naming the parameter or the flag; this is for direct callers)
    check_against_data({"shift": config.shift, "augment": config.augment}, *x.shape)
    # NaN and overflow are detected once per epoch from the loss (TrainingDiverged, one
    # clear message); NumPy's own warnings would only add noise on the way there.
    with backend.activate(), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        setup = EngineSetup(params, arch, _optimizer(config), x, y, backend,
                            _shifter(config.shift, arch.n_inputs),
                            _warper(config, arch.n_inputs), config.label_smoothing,
                            cuda_graphs, sample_weight, config.dropout, teacher)
        engine, choice = choose_engine(setup, fast=fast)
        if hooks.on_engine is not None:
            hooks.on_engine(choice)
        run = _Run(setup, engine, choice, config, rng, hooks, eval_set, val_set)
        if resume is not None:
            run.resume_from(resume)
        for epoch in range(run.first_epoch, config.epochs + 1):
            loss_sum, hits, seconds = run.train_epoch(epoch)
            record = run.record(epoch, loss_sum, hits, seconds)
            run.keep_if_best(record, params)
            run.report(record)
            if run.save_or_stop(epoch):
                break
        if hooks.on_finish is not None:
            hooks.on_finish(run.final_state())
        run.restore_best(params)
    return run.history


def _optimizer(config):
    """The optimizer `config` names."""
    return make_optimizer(config.optimizer, config.learning_rate, momentum=config.momentum,
                          weight_decay=config.weight_decay)


def _warper(config, n_inputs: int) -> RandomWarp | None:
    """The per-image distorter for `n_inputs`-pixel square images, or None when off."""
    if not config.warps_on:
        return None
    return RandomWarp(image_side(n_inputs), config.distortion, config.warp_bank)


def _shifter(max_shift: int, n_inputs: int) -> RandomShift | None:
    """The random-shift augmenter for `n_inputs`-pixel square images, or None when off."""
    return RandomShift(image_side(n_inputs), max_shift) if max_shift else None


class _Run:
    """The state of one run between epochs: history, best epoch, the next epoch's draws."""

    def __init__(self, setup: EngineSetup, engine: Engine, choice: EngineChoice, config,
                 rng: np.random.Generator, hooks: TrainingHooks, eval_set, val_set):
        self.setup, self.engine, self.choice = setup, engine, choice
        self.config, self.rng, self.hooks = config, rng, hooks
        self.eval_set, self.val_set = eval_set, val_set
        self.n = setup.x.shape[0]
        # the weighted mean loss divides by the total weight: one read, before training
        self.total_weight = (float(setup.backend.to_numpy(setup.backend.xp.sum(
            setup.sample_weight))) if setup.sample_weight is not None else self.n)
        self.n_batches = -(-self.n // config.batch_size)
        self.history: list[dict] = []
        self.best = None  # (epoch, validation accuracy, parameters) of the best epoch so far
        self.first_epoch = 1
        self.last_state: TrainState | None = None  # after the last completed epoch
        self.next_rng_state = None  # before the next epoch's draws, once an epoch ran
        self.pending = self._draw()

    # -- steps of the loop ------------------------------------------------------------

    def resume_from(self, state: TrainState) -> None:
        """Put the run back where `state` left it."""
        backend = self.setup.backend
        self.engine.resume_from(state)
        self.rng.bit_generator.state = state.rng_state
        self.first_epoch = state.epoch + 1
        self.history = [dict(r) for r in state.history]
        if state.best is not None:
            epoch, accuracy, params = state.best
            self.best = (epoch, accuracy, {k: backend.asarray(v) for k, v in params.items()})
        self.last_state = state
        self.pending = self._draw() if self.first_epoch <= self.config.epochs else None

    def train_epoch(self, epoch: int):
        """Upload the epoch's draws, let the engine train it; (loss sum, hits, seconds)."""
        backend, progress = self.setup.backend, self.hooks.progress
        if progress is not None:
            progress.start(epoch, self.n_batches)
        host_order, shift_ids, host_warps, dropout_key = self.pending
        inputs = EpochInputs(
            order=backend.asarray(host_order), batch_size=self.config.batch_size,
            learning_rates=epoch_learning_rates(self.config, epoch, self.n_batches),
            shift_ids=shift_ids,
            warps=None if host_warps is None else RandomWarp.upload(host_warps, backend),
            dropout_key=dropout_key)
        backend.synchronize()  # sync point: the uploads stay out of the epoch's time
        t0 = time.perf_counter()
        try:
            loss_sum, hits = self.engine.run_epoch(
                inputs, on_batch=None if progress is None else progress.advance,
                should_stop=self.hooks.should_stop)
        except StopEpoch as stop:
            self._finish_progress()
            raise TrainingInterrupted(epoch, stop.steps_done, self.last_state) from None
        self.engine.write_back(self.setup.params)
        last = epoch == self.config.epochs
        self.next_rng_state = self.rng.bit_generator.state
        if backend.is_async and not last:
            self.pending = self._draw()  # on the host while the device runs the queued epoch
        backend.synchronize()  # sync point: the epoch's work is done before the clock is read
        seconds = time.perf_counter() - t0
        if not backend.is_async and not last:
            with blas_threads(self.engine.host_blas_threads):
                self.pending = self._draw()
        return loss_sum, hits, seconds

    def record(self, epoch: int, loss_sum, hits, seconds: float) -> dict:
        """The epoch's record: its training sums read once, the held-out sets scored."""
        backend = self.setup.backend
        # The one device -> host read of the epoch's training metrics.
        loss, correct = float(backend.to_numpy(loss_sum)), int(backend.to_numpy(hits))
        if not math.isfinite(loss):
            self._finish_progress()
            self._diverged(epoch, loss)
        record = {"epoch": epoch, "train_loss": loss / self.total_weight,
                  "train_accuracy": correct / self.n,
                  "val_accuracy": None, "test_accuracy": None, "seconds": seconds,
                  "device": backend.device, "engine": self.choice.name,
                  "engine_reason": self.choice.reason}
        s = self.setup
        for key, scored in (("val_accuracy", self.val_set), ("test_accuracy", self.eval_set)):
            if scored is not None:
                with blas_threads(self.engine.host_blas_threads):
                    correct = count_correct(s.params, scored[0], scored[1], s.arch,
                                            s.params["W1"].dtype, backend)
                record[key] = int(backend.to_numpy(correct)) / scored[0].shape[0]
        return record

    def keep_if_best(self, record: dict, params: dict) -> None:
        """Remember this epoch's parameters if its validation accuracy is the best yet."""
        if self.val_set is None or (self.best is not None and record["val_accuracy"] <= self.best[1]):
            return
        xp = self.setup.backend.xp
        # a device copy: no sync, and the next epochs update params in place
        self.best = (record["epoch"], record["val_accuracy"],
                     {k: xp.asarray(v, copy=True) for k, v in params.items()})

    def report(self, record: dict) -> None:
        """Close the progress line, keep the record and hand it to ``on_epoch``."""
        self._finish_progress()
        self.history.append(record)
        if self.hooks.on_epoch is not None:
            self.hooks.on_epoch(record)

    def save_or_stop(self, epoch: int) -> bool:
        """Checkpoint as asked, stop on request; whether early stopping ends the run here."""
        hooks, config = self.hooks, self.config
        last = epoch == config.epochs
        patience = config.n_iter_no_change
        stopping = patience is not None and epoch - self._best_epoch() >= patience
        if hooks.should_stop is not None or hooks.on_checkpoint is not None:
            self.last_state = self._snapshot(epoch)
            if hooks.on_checkpoint is not None and (
                    epoch % hooks.checkpoint_every == 0 or last or stopping):
                hooks.on_checkpoint(self.last_state)
            if hooks.should_stop is not None and hooks.should_stop() and not last:
                raise TrainingInterrupted(epoch + 1, 0, self.last_state)
        return stopping

    def _best_epoch(self) -> int:
        """The best epoch so far: by validation accuracy, or without a validation set by
        training loss (the earliest among equals)."""
        if self.val_set is not None:
            return self.best[0]
        losses = [r["train_loss"] for r in self.history]
        return self.history[int(np.argmin(losses))]["epoch"]

    def final_state(self) -> TrainState | None:
        """The state after the last epoch run here (or the one resumed from, if none ran)."""
        ran = self.history and self.history[-1]["epoch"] >= self.first_epoch
        return self._snapshot(self.history[-1]["epoch"]) if ran else self.last_state

    def restore_best(self, params: dict) -> None:
        """With a validation set: mark the best epoch and put its parameters back."""
        if self.best is None:
            return
        self.history[self.best[0] - 1]["best"] = True
        for k, v in self.best[2].items():
            params[k][...] = v

    # -- helpers ------------------------------------------------------------------------

    def _draw(self):
        """The next epoch's shuffle, batch shifts, warps and dropout key, drawn on the host."""
        # The same order on every backend for a seed; shifts stay host integers (they
        # choose slices, never a sync); warps are uploaded once per epoch.
        rng, shifter, warper = self.rng, self.setup.shifter, self.setup.warper
        order = rng.permutation(self.n).astype(np.int64)
        shifts = (rng.integers(0, shifter.n_shifts, self.n_batches).tolist()
                  if shifter is not None else None)
        warps = warper.draw_epoch(self.n, rng) if warper is not None else None
        # drawn last, and only with dropout: runs without it draw as they always did
        key = int(rng.integers(0, 1 << 32)) if self.setup.dropout else None
        return order, shifts, warps, key

    def _snapshot(self, epoch: int) -> TrainState:
        """The state after `epoch`, on the host (copies: training goes on in place)."""
        backend, params, engine = self.setup.backend, self.setup.params, self.engine
        engine.write_back(params)
        best = None
        if self.best is not None:
            best = (self.best[0], self.best[1],
                    {k: backend.to_numpy(v).copy() for k, v in self.best[2].items()})
        return TrainState(
            epoch=epoch, history=[dict(r) for r in self.history], rng_state=self.next_rng_state,
            params={k: backend.to_numpy(v).copy() for k, v in params.items()},
            optimizer=engine.optimizer_state(), engine=engine.name,
            engine_arrays=engine.exact_state(), best=best)

    def _finish_progress(self) -> None:
        if self.hooks.progress is not None:
            self.hooks.progress.finish()

    def _diverged(self, epoch: int, loss: float):
        """Raise `TrainingDiverged` for a non-finite epoch loss, naming where it began."""
        step = self.engine.first_bad_step()
        what = "NaN" if math.isnan(loss) else "infinite"
        where = f"epoch {epoch}" + ("" if step is None else f", step {step + 1} of {self.n_batches}")
        lr = epoch_learning_rates(self.config, epoch, self.n_batches)[0]
        raise TrainingDiverged(
            f"training diverged: the loss became {what} in {where}; the run was stopped. "
            f"Try a smaller learning rate (e.g. --learning-rate {lr / 10:g})", epoch, step)
