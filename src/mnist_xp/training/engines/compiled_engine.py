"""The compiled engine: training steps in C with OpenMP and OpenBLAS, the GIL released.

The C side (`mnist_xp/_cengine/epoch.c`) trains a run of steps per call on a team of
threads: each thread gathers, converts (shifts or warps) and runs forward and backward
on its own rows of the batch; after a barrier each one computes the first layer's
gradient and update for its own rows of the inputs, so every matrix product keeps all
hidden units, and prefetches the rows it gathers next. One thread also updates the
small output layer. The BLAS is scipy-openblas32's, on the calling thread.

The parameters are trained in place in the generic layout, float32, and the optimizer
buffers are kept in the generic layout too (``velocity/W1``, ``m/W1``, ``v/W1``, ``t``):
a checkpoint's parameters and optimizer state are this engine's whole state, so it
resumes bit for bit from them (with the same number of threads), and `exact_state` has
nothing to add.

It covers SGD, momentum, Nesterov, Adam and AdamW, weight decay, label smoothing, both
activations and losses, sample weights, shifts and warps, uint8 or float32 inputs;
`CompiledEngine.unsupported_reason` names what it does not cover (float64 runs, the
extension missing, ``MNIST_XP_ENGINE=numpy``) and the next engine trains those runs.

Tested against the generic engine in tests/test_compiled_engine.py.
"""

from __future__ import annotations

import os

import numpy as np

from ... import _cengine
from ...backend import blas_threads
from ...errors import SettingError, StopEpoch
from ...optim import SGD
from ...pixels import PIXEL_SCALE
from .base import Engine, EngineSetup, EpochInputs, beyond_one_layer

__all__ = ["CompiledEngine", "CHUNK_SAMPLES", "ENGINE_ENV", "LIMIT_NUMPY_BLAS"]

#: Samples per call into C: between calls the loop's progress and stop hooks run.
CHUNK_SAMPLES = 8192
#: Hold NumPy's own BLAS to one thread during compiled epochs (off only to measure why:
#: benchmarks/epoch_time.py --blas-spin).
LIMIT_NUMPY_BLAS = True
#: ``MNIST_XP_ENGINE=numpy`` turns the compiled engine off (the NumPy engine trains).
ENGINE_ENV = "MNIST_XP_ENGINE"

_OPTIMIZERS = {"sgd": 0, "momentum": 1, "nesterov": 2, "adam": 3, "adamw": 4}


def _c_contiguous(a, dtype) -> bool:
    """Whether `a` is a C-contiguous NumPy array of `dtype`."""
    return isinstance(a, np.ndarray) and a.dtype == dtype and a.flags.c_contiguous


class CompiledEngine(Engine):
    """Runs training epochs in C (see the module docstring); trains ``setup.params`` in place.

    Parameters
    ----------
    setup : EngineSetup
        On the NumPy backend, float32 parameters; see `unsupported_reason`.
    """

    name = "compiled"
    covers = ("compiled engine (C, OpenMP, OpenBLAS): float32, every optimizer, label "
              "smoothing, sample weights, shifts and warps")
    # scoring after an epoch on 2 BLAS threads measured 13% slower training epochs of
    # `best` (0.363 s against 0.331 s, median of 10, eval_set scored after each epoch)
    host_blas_threads = 1

    def __init__(self, setup: EngineSetup):
        super().__init__(setup)
        self.ext, _ = _cengine.load()
        self.threads = _cengine.default_threads()
        opt, params = setup.optimizer, setup.params
        if isinstance(opt, SGD):
            kind = "nesterov" if opt.nesterov else ("momentum" if opt.momentum else "sgd")
        else:
            kind = opt.name
        self.kind = _OPTIMIZERS[kind]
        zeros = {k: np.zeros_like(params[k]) for k in ("W1", "b1", "W2", "b2")}
        if kind in ("momentum", "nesterov"):
            self.state = {"velocity": zeros}
        elif kind in ("adam", "adamw"):
            self.state = {"m": zeros, "v": {k: np.zeros_like(v) for k, v in zeros.items()}}
        else:
            self.state = {}
        self.t = 0  # Adam's step count
        self.scale = PIXEL_SCALE if setup.x.dtype == np.uint8 else 1.0
        self._losses = None

    @classmethod
    def unsupported_reason(cls, setup: EngineSetup) -> str | None:
        """Why the compiled engine cannot train `setup`, or None.

        It declines when ``MNIST_XP_ENGINE=numpy`` is set, when the extension is missing
        or does not load, for float64 parameters and for arrays it cannot hand to C.

        Raises
        ------
        SettingError
            If ``MNIST_XP_ENGINE`` is set to anything but ``numpy``, or
            ``MNIST_XP_THREADS`` is not a positive integer.
        """
        wanted = os.environ.get(ENGINE_ENV, "").strip().lower()
        if wanted == "numpy":
            return f"{ENGINE_ENV}=numpy"
        if wanted:
            # A typo must not pass for the default: it would look as if it had worked.
            raise SettingError(f"{ENGINE_ENV}={os.environ[ENGINE_ENV]!r} is not a choice; set "
                               "it to numpy to force the NumPy engine, or unset it",
                               ENGINE_ENV)
        ext, why = _cengine.load()
        if ext is None:
            return why
        if _cengine.forked_after_use():
            return "forked after the compiled engine ran: OpenMP threads do not survive fork"
        try:
            _cengine.default_threads()
        except ValueError as exc:  # a typo would cost 10-20x on the NumPy engine
            raise SettingError(f"{exc}; unset it to use every core", "MNIST_XP_THREADS") from None
        layered = beyond_one_layer(setup, "compiled engine")
        if layered is not None:
            return layered
        params = setup.params
        dtype = params["W1"].dtype
        if dtype != np.float32:
            return f"{dtype} has no compiled engine (float32 only)"
        if not all(_c_contiguous(params[k], np.float32) for k in ("W1", "b1", "W2", "b2")):
            return "the parameters are not C-contiguous arrays"
        x = setup.x
        if not (_c_contiguous(x, np.uint8) or _c_contiguous(x, np.float32)) or x.ndim != 2:
            return f"{x.dtype} inputs have no compiled engine (uint8 or float32 only)"
        if not _c_contiguous(setup.y, np.int64):
            return "the labels are not a C-contiguous int64 array"
        w = setup.sample_weight
        if w is not None and not _c_contiguous(w, np.float32):
            return "the sample weights are not a C-contiguous float32 array"
        return None

    @classmethod
    def absent_reason(cls) -> str | None:
        """Why the extension is not usable here (not built, not loadable), or None."""
        return _cengine.load()[1] or None

    @property
    def description(self) -> str:
        """``compiled engine, N threads``."""
        return f"compiled engine, {self.threads} thread{'s' if self.threads > 1 else ''}"

    # -- parameters and state ---------------------------------------------------------

    def write_back(self, params: dict) -> None:
        """Nothing to do: the engine trains ``setup.params`` in place."""

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """The optimizer's buffers (``velocity/W1`` ... or ``m/W1``, ``v/W1`` ..., ``t``)."""
        flat = {f"{group}/{k}": v.copy() for group, arrays in self.state.items()
                for k, v in arrays.items()}
        if "m" in self.state:
            flat["t"] = np.array(self.t, dtype=np.int64)
        return flat

    def load_optimizer_state(self, flat: dict[str, np.ndarray]) -> None:
        """Take buffers in the layout `optimizer_state` gives (exactly: it is this engine's)."""
        for group, arrays in self.state.items():
            for k, v in arrays.items():
                np.copyto(v, flat[f"{group}/{k}"])
        if "m" in self.state:
            self.t = int(flat["t"])

    def first_bad_step(self) -> int | None:
        """The first step (from 0) of the last epoch whose loss was not finite, or None."""
        bad = np.flatnonzero(~np.isfinite(self._losses))
        return int(bad[0]) // self._batch_size if bad.size else None

    # -- one epoch ----------------------------------------------------------------------

    def _step_arrays(self, epoch: EpochInputs):
        """Per-step shifts (dy, dx as int32) and the warp tables, for the C side.

        The warp's index table goes to C as int16 (a pixel within a row: < 784), a
        quarter of the bytes the gather and its prefetch read; it is checked first, as
        C reads through it unchecked.
        """
        s = self.setup
        shifts = warp = None
        if epoch.warps is not None:
            w, n_in = epoch.warps, s.arch.n_inputs
            index = np.asarray(w.index)
            if (index.ndim != 2 or index.shape[1] != n_in or n_in > 2**15
                    or index.min(initial=0) < 0 or index.max(initial=0) >= n_in):
                raise ValueError("the warp index table does not fit the inputs")
            warp = (np.ascontiguousarray(index, np.int16),
                    np.ascontiguousarray(w.keep, np.uint8),
                    np.ascontiguousarray(w.ids, np.int64))
            if warp[1].shape != index.shape or warp[2].shape != (s.x.shape[0],):
                raise ValueError("the warp tables do not fit the inputs")
            if warp[2].min(initial=0) < 0 or warp[2].max(initial=0) >= index.shape[0]:
                raise ValueError("a sample's warp number is outside the bank")
        elif s.shifter is not None and epoch.shift_ids is not None:
            shifts = np.array([s.shifter.offset(int(i)) for i in epoch.shift_ids], np.int32)
        return shifts, warp

    def run_epoch(self, epoch: EpochInputs, on_batch=None, should_stop=None):
        """Train one pass (see `Engine.run_epoch`); 0-d float64 loss sum and int64 hits.

        The steps run in calls of about `CHUNK_SAMPLES` samples; `on_batch` and
        `should_stop` run between calls. NumPy's own BLAS is held to one thread meanwhile:
        its idle threads spin for about 0.1 s after a threaded call and would take the
        cores from this engine's threads.
        """
        s, arch = self.setup, self.setup.arch
        order = np.ascontiguousarray(epoch.order, np.int64)
        batch, lrs = epoch.batch_size, np.asarray(epoch.learning_rates, np.float64)
        n = order.shape[0]
        losses = np.zeros(n, np.float32)
        hits = np.zeros(n, np.uint8)
        shifts, warp = self._step_arrays(epoch)
        index, keep, ids = warp if warp is not None else (None, None, None)
        side = s.shifter.side if s.shifter is not None else 0
        p = s.params
        opt = s.optimizer
        if "velocity" in self.state:
            v = self.state["velocity"]
            state1, state2 = tuple(v[k] for k in ("W1", "b1", "W2", "b2")), (None,) * 4
        elif "m" in self.state:
            state1 = tuple(self.state["m"][k] for k in ("W1", "b1", "W2", "b2"))
            state2 = tuple(self.state["v"][k] for k in ("W1", "b1", "W2", "b2"))
        else:
            state1 = state2 = (None,) * 4
        per_call = max(1, CHUNK_SAMPLES // batch)
        n_steps = len(lrs)
        _cengine.mark_used()
        with blas_threads(1 if LIMIT_NUMPY_BLAS else None):
            for first in range(0, n_steps, per_call):
                last = min(first + per_call, n_steps)
                lo, hi = first * batch, min(last * batch, n)
                self.t = self.ext.train_steps(
                    x=s.x, y=s.y, sample_weight=s.sample_weight, order=order[lo:hi],
                    learning_rates=lrs[first:last],
                    shifts=None if shifts is None else shifts[first:last],
                    warp_index=index, warp_keep=keep, warp_ids=ids,
                    W1=p["W1"], b1=p["b1"], W2=p["W2"], b2=p["b2"], state1=state1,
                    state2=state2, losses=losses[lo:hi], hits=hits[lo:hi], batch_size=batch,
                    side=side, activation=0 if arch.activation == "relu" else 1,
                    loss=0 if arch.loss == "cross_entropy" else 1, optimizer=self.kind,
                    threads=self.threads, scale=self.scale,
                    label_smoothing=float(s.label_smoothing),
                    momentum=float(getattr(opt, "momentum", 0.0)),
                    weight_decay=float(opt.weight_decay),
                    beta1=float(getattr(opt, "beta1", 0.0)),
                    beta2=float(getattr(opt, "beta2", 0.0)),
                    eps=float(getattr(opt, "eps", 1.0)), t=self.t)
                if on_batch is not None:
                    on_batch(last)
                if should_stop is not None and should_stop():
                    raise StopEpoch(last)
        self._losses, self._batch_size = losses, batch
        if s.sample_weight is not None:  # the weighted sum, in the order the samples ran
            losses = losses * np.take(s.sample_weight, order)
        return (np.asarray(losses.sum(dtype=np.float64)),
                np.asarray(np.count_nonzero(hits), dtype=np.int64))
