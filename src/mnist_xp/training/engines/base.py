"""The engine contract: what every implementation of a training epoch provides.

An engine trains whole epochs of one run. The training loop (`mnist_xp.training.loop`)
owns everything around them -- shuffles, schedules, evaluation, checkpoints, early
stopping -- and talks to an engine only through the methods of `Engine`. There are
five: the generic array-API path (`GenericEngine`, on any backend; the reference
every other engine is tested against), the compiled CPU engine (`CompiledEngine`, C
with OpenMP and OpenBLAS), the NumPy fast path (`NumpyEngine`), the layered NumPy path
for deep networks, dropout and teachers (`NumpyLayersEngine`) and the fused CUDA
kernels (`CudaEngine`). `mnist_xp.training.engines.choose_engine` picks one for a run
and says why.

Where values live
-----------------
Arrays in `EngineSetup` and `EpochInputs` are on the backend's device, except the
host-side lists (learning rates, shift numbers) that steer slicing and kernel
arguments. `Engine.run_epoch` returns the epoch's summed loss and hit count as device
0-d arrays without waiting for the device: the loop reads them once per epoch, which
is the one sync point of an epoch on CUDA. Everything a checkpoint needs is copied to
the host only when asked (`optimizer_state`, `exact_state`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np

from ...augment import EpochWarps, RandomShift, RandomWarp
from ...backend import Backend
from ...model import Architecture

__all__ = ["Engine", "EngineSetup", "EpochInputs", "EngineChoice", "beyond_one_layer"]


def beyond_one_layer(setup: "EngineSetup", engine: str) -> str | None:
    """Why an engine of the one-hidden-layer network (`engine`, e.g. ``"NumPy fast path"``)
    cannot train `setup`: more hidden layers, dropout or a teacher; None if none."""
    if setup.arch.n_layers > 2:
        return f"{len(setup.arch.hidden_sizes)} hidden layers have no {engine}"
    if setup.dropout:
        return f"dropout has no {engine}"
    if setup.teacher is not None:
        return f"distillation has no {engine}"
    return None


@dataclass(frozen=True)
class EngineSetup:
    """What an engine trains: one run's parameters, data, optimizer and augmentation.

    Attributes
    ----------
    params : dict of device arrays
        ``W1 (n_inputs, n_hidden)``, ``b1 (n_hidden,)``, ``W2 (n_hidden, n_outputs)``,
        ``b2 (n_outputs,)``, float32 or float64, updated in place (see
        `Engine.write_back`).
    arch : Architecture
    optimizer : SGD or Adam
        From `mnist_xp.optim.make_optimizer`; its ``name`` is one of ``OPTIMIZERS``.
    x : device array, shape (n, n_inputs)
        uint8 pixels (scaled by 1/255 per batch) or floats of the parameters' dtype.
    y : device array, shape (n,), int64
        Class indices.
    backend : Backend
    shifter : RandomShift or None
        Moves each batch by the shift `EpochInputs.shift_ids` gives for it.
    warper : RandomWarp or None
        Distorts each image by the warp `EpochInputs.warps` gives for it.
    label_smoothing : float
        In [0, 1); 0 trains on one-hot targets.
    cuda_graphs : bool
        On CUDA, replay each epoch as one captured graph (True) or launch its kernels
        step by step; the results are the same.
    sample_weight : device array, shape (n,), the parameters' dtype, or None
        Each sample's weight in the loss (``sample_weight`` times ``class_weight``);
        a step's mean is over its total weight. None weighs every sample 1.
    dropout : float
        The probability of dropping a hidden unit at a step (`mnist_xp.model.dropout_mask`);
        0 is off.
    teacher : Teacher or None
        Distil from these networks (`mnist_xp.training.teacher`): their soft targets are
        computed on each step's batch, on the device.
    """

    params: dict
    arch: Architecture
    optimizer: Any
    x: Any
    y: Any
    backend: Backend
    shifter: RandomShift | None = None
    warper: RandomWarp | None = None
    label_smoothing: float = 0.0
    cuda_graphs: bool = True
    sample_weight: Any = None
    dropout: float = 0.0
    teacher: Any = None


@dataclass(frozen=True)
class EpochInputs:
    """What changes from epoch to epoch, drawn by the loop on the host.

    Attributes
    ----------
    order : device array, shape (n,), int64
        The sample indices in training order (the epoch's shuffle).
    batch_size : int
        Samples per step; the last step takes the rest.
    learning_rates : list of float
        The learning rate of each step, ``len == ceil(n / batch_size)``.
    shift_ids : list of int or None
        One shift number per step (see `RandomShift.offset`); with a shifter only.
    warps : EpochWarps or None
        The epoch's warps, on the device; with a warper only.
    dropout_key : int or None
        The epoch's dropout key (`mnist_xp.model.dropout_mask`); with dropout only.
    """

    order: Any
    batch_size: int
    learning_rates: list
    shift_ids: list | None = None
    warps: EpochWarps | None = None
    dropout_key: int | None = None

    @property
    def n_batches(self) -> int:
        """Steps in the epoch."""
        return len(self.learning_rates)


@dataclass(frozen=True)
class EngineChoice:
    """Which engine trains a run, and why; what the user is shown.

    Attributes
    ----------
    name : str
        ``generic``, ``compiled``, ``numpy``, ``numpy-layers`` or ``cuda``.
    description : str
        What it is, e.g. ``"fused CUDA kernels, one graph per epoch"``.
    reason : str
        Why a faster engine was not used (``"nesterov has no NumPy fast path yet"``);
        empty when this is the fastest engine for the backend.
    """

    name: str
    description: str
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.description} ({self.reason})" if self.reason else self.description


class Engine(ABC):
    """Trains epochs of one run; the base of every engine.

    Construct with an `EngineSetup`; the setup is checked by `unsupported_reason` first
    (`choose_engine` does). The engine may keep the parameters in its own layout during
    an epoch; `write_back` makes ``setup.params`` current.

    Parameters
    ----------
    setup : EngineSetup
    """

    #: Short name, stored in checkpoints and shown in metrics.
    name: ClassVar[str]
    #: What runs it trains, in a few words (for ``mnist-xp info``).
    covers: ClassVar[str]
    #: Threads for NumPy's BLAS in the loop's host work between epochs (scoring the
    #: held-out sets, drawing warps), or None to leave it alone. An engine that runs its
    #: own threads on every core sets 1: OpenBLAS's threads spin for about 0.1 s after
    #: a threaded call and would share the cores with the next epoch's first steps.
    host_blas_threads: ClassVar[int | None] = None

    def __init__(self, setup: EngineSetup):
        self.setup = setup

    @classmethod
    @abstractmethod
    def unsupported_reason(cls, setup: EngineSetup) -> str | None:
        """Why this engine cannot train `setup` (one short clause), or None when it can."""

    @property
    @abstractmethod
    def description(self) -> str:
        """What this engine is, in a few words, for the ``engine:`` line."""

    @abstractmethod
    def run_epoch(self, epoch: EpochInputs, on_batch: Callable[[int], None] | None = None,
                  should_stop: Callable[[], bool] | None = None):
        """Train one pass over ``epoch.order``.

        Parameters
        ----------
        epoch : EpochInputs
        on_batch : callable, optional
            Progress: called with the number of steps done (or queued) so far.
        should_stop : callable, optional
            Checked after each step (engines that replay a whole epoch at once check
            only after it); once true, the engine raises `StopEpoch` with the number of
            steps done, and the epoch's work is to be discarded.

        Returns
        -------
        loss_sum : device 0-d array, float
            The summed per-sample loss of the epoch (weighted by ``sample_weight``).
        hits : device 0-d array, integer
            How many samples' argmax equalled their label, before each step's update.

        Neither is read here: the caller reads both once per epoch.
        """

    @abstractmethod
    def write_back(self, params: dict) -> None:
        """Store the current parameters into `params` (the same arrays, in place)."""

    @abstractmethod
    def first_bad_step(self) -> int | None:
        """The first step (from 0) of the last epoch whose loss was not finite, or None.

        Only called after an epoch whose summed loss was NaN or infinite (it may sync).
        """

    @abstractmethod
    def optimizer_state(self) -> dict[str, np.ndarray]:
        """The optimizer's buffers as host arrays in the generic layout.

        Keys as `mnist_xp.optim.state_to_host` makes them (``velocity/W1``, or ``m/W1``,
        ``v/W1`` and ``t``), whichever engine trained: a checkpoint from any engine
        resumes on any other.
        """

    @abstractmethod
    def load_optimizer_state(self, flat: dict[str, np.ndarray]) -> None:
        """Take optimizer buffers in the layout `optimizer_state` gives."""

    def read_params(self) -> None:
        """Take ``setup.params`` into the engine's own layout after they changed outside.

        Engines that train ``setup.params`` in place have nothing to do.
        """

    @classmethod
    def absent_reason(cls) -> str | None:
        """Why this installation lacks the engine (e.g. an extension not built), or None."""
        return None

    def exact_state(self) -> dict[str, np.ndarray]:
        """Host copies of the engine's own arrays, to resume bit for bit; {} if it has none."""
        return {}

    def load_exact_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Continue exactly from `exact_state`'s arrays of an engine of the same setup."""

    def resume_from(self, state) -> None:
        """Continue from a checkpoint (`mnist_xp.training.checkpoint.TrainState`).

        The same engine takes its own arrays back, bit for bit; another engine takes the
        parameters and optimizer buffers in the generic layout.
        """
        backend = self.setup.backend
        for k, v in state.params.items():
            self.setup.params[k][...] = backend.asarray(v)
        if state.engine == self.name and state.engine_arrays:
            self.load_exact_state(state.engine_arrays)
        else:
            self.read_params()
            self.load_optimizer_state(state.optimizer)
