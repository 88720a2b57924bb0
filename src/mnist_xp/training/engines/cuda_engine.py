"""The CUDA engine: fused kernels for training epochs, replayed as CUDA graphs.

Each step is three fused kernels of ours (`cuda_kernels.cu`, instantiated by
`mnist_xp.training.engines.cuda_kernels`) working on
buffers allocated once per batch size, so an epoch launches 3 kernels per batch and
allocates nothing. With ``graphs=True`` (the default) the first epoch of a given size
is captured into a CUDA graph and every epoch replays it: one launch per epoch, no
Python between steps. The per-epoch inputs of the graph (the order, the learning rate
of each step, the shift of each batch) are copied into its persistent buffers before
each replay; the loss and hit counters are zeroed inside the graph.

Nothing here waits for the device: the epoch's sums stay on the GPU until the training
loop reads them. Compiled kernels are cached on disk by CuPy (``CUPY_CACHE_DIR``,
by default ``~/.cupy/kernel_cache``), so only the first run on a machine compiles.

It covers every optimizer of `mnist_xp.optim` (SGD with classical or Nesterov
momentum, Adam, AdamW) with weight decay, label smoothing, sample and class weights,
both activations and losses, shifts and warps, float32 and float64. Adam's moments
live in persistent device buffers the graph updates in place; its bias corrections
depend only on the step count, which the host knows, so they are computed on the host
per step and copied in with the learning rates (no device value is read to build
them). `CudaEngine.unsupported_reason` names what the kernels do not cover (a dtype,
more than 64 outputs), and the generic engine (CuPy + cuBLAS) trains those runs.

CuPy is never imported here: it arrives as ``backend.xp``.
"""

from __future__ import annotations

import numpy as np

from ...errors import StopEpoch
from ...model import Architecture
from ...optim import SGD, Adam
from ...pixels import PIXEL_SCALE
from . import cuda_kernels as kern
from .base import Engine, EngineSetup, EpochInputs, beyond_one_layer

__all__ = ["CudaEngine", "EpochPlan", "step_launches"]


class EpochPlan:
    """The buffers (and, once captured, the graph) of epochs of `n` rows in batches."""

    def __init__(self, cp, arch: Architecture, dtype, n: int, batch_size: int,
                 warp_bank: int = 0):
        self.n, self.batch_size = n, batch_size
        self.n_batches = -(-n // batch_size)
        n_split = -(-arch.n_inputs // kern.K_SLICE)
        b = batch_size
        self.order = cp.zeros(n, cp.int64)
        self.lrs = cp.zeros(self.n_batches, dtype)
        # Adam's per-step constants (step size, eps, lr * weight decay); zeros for SGD
        self.adam_steps = cp.zeros((self.n_batches, 3), dtype)
        self.wsum = cp.zeros(self.n_batches, dtype)  # each step's total sample weight
        self.shifts = cp.zeros((self.n_batches, 2), cp.int32)
        self.xbuf = cp.zeros((b, arch.n_inputs), dtype)
        self.part = cp.zeros((b, n_split, arch.n_hidden), dtype)
        self.h = cp.zeros((b, arch.n_hidden), dtype)
        self.dz = cp.zeros((b, arch.n_outputs), dtype)
        self.dh = cp.zeros((b, arch.n_hidden), dtype)
        self.step_loss = cp.zeros(self.n_batches, cp.float64)  # summed loss of each step
        self.hits = cp.zeros((), cp.uint64)
        # each epoch's warps are copied in here: a graph holds its buffers' addresses
        self.warp_index = cp.zeros((max(warp_bank, 1), arch.n_inputs), cp.int64)
        self.warp_keep = cp.zeros((max(warp_bank, 1), arch.n_inputs), cp.uint8)
        self.warp_ids = cp.zeros(n if warp_bank else 1, cp.int64)
        self.graph = None


class CudaEngine(Engine):
    """Runs training epochs on CuPy arrays with fused kernels, optionally as a CUDA graph.

    Parameters
    ----------
    setup : EngineSetup
        On a CuPy backend, whose device must be current while the engine is used;
        ``setup.params`` C-contiguous float32 or float64, updated in place.
        ``setup.cuda_graphs`` chooses between capturing each epoch as a CUDA graph and
        replaying it (the default) and launching the same kernels from Python, step
        by step.
    """

    name = "cuda"
    covers = ("fused CUDA kernels, one graph per epoch: SGD, Nesterov, Adam and AdamW, "
              "weight decay, label smoothing, sample weights, shifts and warps")

    def __init__(self, setup: EngineSetup):
        super().__init__(setup)
        cp = setup.backend.xp
        params, arch, x, y = setup.params, setup.arch, setup.x, setup.y
        self.cp, self.arch, self.opt = cp, arch, setup.optimizer
        self.shifter, self.warper, self.graphs = setup.shifter, setup.warper, setup.cuda_graphs
        self.dtype = np.dtype(params["W1"].dtype)
        self.real = self.dtype.type
        self.x = x
        self.y = y if y.dtype == cp.int64 else y.astype(cp.int64)
        self.scale = self.real(PIXEL_SCALE if x.dtype == cp.uint8 else 1.0)
        side = self.shifter.side if self.shifter is not None else 0
        self.params = {k: params[k] for k in ("W1", "b1", "W2", "b2")}
        for k, p in self.params.items():
            if not p.flags.c_contiguous or p.dtype != self.dtype:
                raise ValueError(f"{k} must be C-contiguous {self.dtype}")
        # plain SGD keeps (unused) velocity buffers: one kernel signature for all.
        # For Adam `velocity` holds the first moments and `second` the second ones;
        # SGD passes `velocity` again as `second`, which its update never touches.
        self.velocity = {k: cp.zeros_like(p) for k, p in self.params.items()}
        self.adam = isinstance(self.opt, Adam)
        self.second = ({k: cp.zeros_like(p) for k, p in self.params.items()}
                       if self.adam else self.velocity)
        self.t = 0  # Adam's steps taken so far (host int: its bias corrections need it)
        self.smoothing = float(setup.label_smoothing)
        self.weights = setup.sample_weight
        if self.weights is not None and self.weights.dtype != self.dtype:
            self.weights = self.weights.astype(self.dtype)
        source = kern.kernel_source(arch, self.dtype, x.dtype, side, warp=self.warper is not None)
        module = cp.RawModule(code=source, options=("--std=c++14",))
        # get_function compiles (or loads from CuPy's disk cache) and loads the module
        # now, not during a graph capture
        self.kernels = {name: module.get_function(name) for name in kern.KERNEL_NAMES}
        # A blocking stream: ordered with the default stream the rest of CuPy uses,
        # and unlike the default stream it can be captured.
        self.stream = cp.cuda.Stream()
        self._plan: EpochPlan | None = None

    @classmethod
    def unsupported_reason(cls, setup: EngineSetup) -> str | None:
        """What of `setup` the fused kernels do not cover, or None."""
        layered = beyond_one_layer(setup, "fused CUDA kernel")
        if layered is not None:
            return layered
        opt = setup.optimizer
        if not isinstance(opt, (SGD, Adam)):
            return f"{opt.name} has no fused CUDA kernel"
        side = setup.shifter.side if setup.shifter is not None else 0
        arch = setup.arch
        reason = kern.unsupported_reason(arch, setup.params["W1"].dtype, setup.x.dtype, side)
        return None if reason is None else f"the fused CUDA kernels do not cover {reason}"

    @property
    def description(self) -> str:
        """``fused CUDA kernels``, and how each epoch is launched."""
        how = "one graph per epoch" if self.graphs else "launched step by step"
        return f"fused CUDA kernels, {how}"

    def write_back(self, params: dict) -> None:
        """Nothing to do: the kernels update the parameter arrays in place."""

    def _plan_for(self, n: int, batch_size: int) -> EpochPlan:
        plan = self._plan
        if plan is None or (plan.n, plan.batch_size) != (n, batch_size):
            with self.stream:
                bank = self.warper.bank_size if self.warper is not None else 0
                plan = self._plan = EpochPlan(self.cp, self.arch, self.dtype, n, batch_size, bank)
        return plan

    def run_epoch(self, epoch: EpochInputs, on_batch=None, should_stop=None):
        """Train one pass (see `Engine.run_epoch`); device (loss sum float64, hits uint64).

        `on_batch` is called once per step's launches without graphs, and once, with
        the total, when a graph runs the epoch; `should_stop` is checked after each
        step's launches without graphs, and by the loop after a graph's epoch.
        """
        cp, s = self.cp, self.stream
        order, shift_ids, warps = epoch.order, epoch.shift_ids, epoch.warps
        n = int(order.shape[0])
        plan = self._plan_for(n, epoch.batch_size)
        lrs = np.array(epoch.learning_rates, dtype=self.dtype)
        with s:
            cp.copyto(plan.order, order)  # ordered after `order`'s upload: blocking stream
            self._upload(plan.lrs, lrs)
            if self.adam:
                self._upload(plan.adam_steps, self._adam_steps(epoch.learning_rates))
            if self.shifter is not None:
                offsets = np.array([self.shifter.offset(i) for i in shift_ids], dtype=np.int32)
                self._upload(plan.shifts, offsets)
            if self.warper is not None:
                cp.copyto(plan.warp_index, warps.index)
                cp.copyto(plan.warp_keep, warps.keep)
                cp.copyto(plan.warp_ids, warps.ids)
            if not self.graphs:
                self._launch_epoch(plan, on_batch, should_stop)
            else:
                if plan.graph is None:
                    plan.graph = self._capture(plan)
                plan.graph.launch(stream=s)
                if on_batch is not None:
                    on_batch(plan.n_batches)
            # new arrays: the counters are overwritten by the next epoch
            return plan.step_loss.sum(), plan.hits.copy()

    def _adam_steps(self, learning_rates) -> np.ndarray:
        """Adam's (step size, eps, lr * weight decay) for each step of an epoch; advances `t`.

        Float64 arithmetic in the order of `mnist_xp.optim.Adam.step`, rounded to the
        parameters' dtype as the generic path rounds these scalars.
        """
        opt = self.opt
        b1, b2, wd = float(opt.beta1), float(opt.beta2), float(opt.weight_decay)
        rows = []
        for lr in learning_rates:
            self.t += 1
            lr = float(lr)
            c1, c2 = 1.0 - b1 ** self.t, 1.0 - b2 ** self.t
            rows.append((lr * (c2 ** 0.5) / c1, opt.eps * (c2 ** 0.5), lr * wd))
        return np.array(rows, dtype=self.dtype).reshape(-1, 3)

    def first_bad_step(self) -> int | None:
        """The first step (from 0) of the last epoch whose loss was not finite, or None."""
        losses = self.cp.asnumpy(self._plan.step_loss)  # only read after a bad epoch
        bad = np.flatnonzero(~np.isfinite(losses))
        return int(bad[0]) if bad.size else None

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """Host copies in the generic layout: ``velocity/W1`` ... (empty for plain SGD),
        or Adam's ``m/W1`` ..., ``v/W1`` ... and the step count ``t``."""
        asnumpy = self.cp.asnumpy
        if self.adam:
            out = {f"m/{k}": asnumpy(v) for k, v in self.velocity.items()}
            out.update({f"v/{k}": asnumpy(v) for k, v in self.second.items()})
            out["t"] = np.array(self.t, dtype=np.int64)
            return out
        if not self.opt.momentum:
            return {}
        return {f"velocity/{k}": asnumpy(v) for k, v in self.velocity.items()}

    def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        """Take buffers as `optimizer_state` gives them."""
        asarray = self.cp.asarray
        if self.adam:
            for k in self.params:
                self.velocity[k][...] = asarray(state[f"m/{k}"])
                self.second[k][...] = asarray(state[f"v/{k}"])
            self.t = int(state["t"])
        elif self.opt.momentum:
            for k, v in self.velocity.items():
                v[...] = asarray(state[f"velocity/{k}"])

    def _upload(self, dst, host: np.ndarray) -> None:
        """Copy host array `host` into device buffer `dst`, in order on the engine's stream."""
        dst.set(host, stream=self.stream)

    def _capture(self, plan: EpochPlan):
        """Record one epoch of kernel launches on the engine's stream as a CUDA graph."""
        s = self.stream
        s.begin_capture()
        try:
            self._launch_epoch(plan, None)
        finally:
            graph = s.end_capture()  # always leave capture mode, even after an error
        return graph

    def _launch_epoch(self, plan: EpochPlan, on_batch, should_stop=None) -> None:
        """Queue the kernels of every step of an epoch on the engine's stream."""
        s = self.stream
        for i in range(plan.n_batches):
            for name, grid, block, args in step_launches(
                    self.arch, self.opt, plan, self.params, self.velocity, self.x, self.y,
                    self.scale, i, second=self.second, sample_weight=self.weights,
                    label_smoothing=self.smoothing):
                self.kernels[name](grid, block, args, stream=s)
            if on_batch is not None:
                on_batch(i + 1)
            if should_stop is not None and should_stop():
                raise StopEpoch(i + 1)


def step_launches(arch: Architecture, optimizer, plan: EpochPlan, params: dict,
                  velocity: dict, x, y, scale, i: int, *, second: dict | None = None,
                  sample_weight=None, label_smoothing: float = 0.0) -> list[tuple]:
    """The three kernel launches of step `i`: (kernel name, grid, block, arguments).

    Parameters
    ----------
    optimizer : SGD or Adam
        Adam's per-step constants are read from ``plan.adam_steps``.
    velocity, second : dict of device arrays
        SGD's velocity (`second` unused), or Adam's first and second moments.
    sample_weight : device array, shape (n,), the parameters' dtype, or None
    label_smoothing : float

    The arguments are arrays (passed as device pointers) and NumPy scalars, in the
    order of the kernels' C signatures; tests run the same launches through a CPU
    emulation of the kernels.
    """
    real = np.dtype(plan.lrs.dtype).type
    base = i * plan.batch_size
    rows = min(plan.batch_size, plan.n - base)
    grid = kern.launch_shapes(arch, rows)
    p, v = params, velocity
    s = velocity if second is None else second
    adam = isinstance(optimizer, Adam)
    if adam:
        mu, nesterov, decoupled = real(0), 0, int(optimizer.decoupled)
        b1, b2 = float(optimizer.beta1), float(optimizer.beta2)
    else:
        mu, nesterov, decoupled = real(optimizer.momentum), int(optimizer.nesterov), 0
        b1 = b2 = 0.0
    wd = real(optimizer.weight_decay)
    weighted = np.int32(sample_weight is not None)
    w = plan.wsum if sample_weight is None else sample_weight  # unread when unweighted
    ls = float(label_smoothing)
    return [
        ("hidden_partial", grid["hidden_partial"], (kern.THREADS_A,),
         (x, plan.order, np.int32(base), np.int32(rows), plan.shifts, np.int32(i), real(scale),
          p["W1"], plan.xbuf, plan.part, plan.step_loss, plan.hits, plan.warp_index,
          plan.warp_keep, plan.warp_ids, w, weighted, plan.wsum)),
        ("output_backward", grid["output_backward"], (kern.THREADS_B,),
         (plan.part, p["b1"], p["W2"], p["b2"], y, plan.order, np.int32(base), np.int32(rows),
          real(1.0 / rows), plan.h, plan.dz, plan.dh, plan.step_loss, np.int32(i), plan.hits,
          w, weighted, plan.wsum, real(1.0 - ls), real(ls / arch.n_outputs))),
        ("grads_update", grid["grads_update"], (kern.THREADS_C,),
         (plan.xbuf, plan.h, plan.dz, plan.dh, np.int32(rows), p["W1"], p["b1"], p["W2"],
          p["b2"], v["W1"], v["b1"], v["W2"], v["b2"], s["W1"], s["b1"], s["W2"], s["b2"],
          plan.lrs, plan.adam_steps, np.int32(i), mu, wd, np.int32(nesterov),
          np.int32(adam), np.int32(decoupled), real(b1), real(b2), real(1.0 - b1),
          real(1.0 - b2))),
    ]
