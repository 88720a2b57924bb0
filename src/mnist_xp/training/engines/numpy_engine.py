"""The NumPy engine: the fast path for training epochs on the CPU.

Computes exactly what the generic engine (`mnist_xp.training.engines.generic`)
computes, but shaped for the BLAS and for NumPy's per-call overhead:

- the arrays of the step are preallocated and written with ``out=`` (the one left is
  the (batch,) gather of each sample's true-class score);
- the first layer's bias is folded into its matrix product: the input batch carries one
  extra constant column, and the weights one extra row;
- the input scale (1/255 for uint8 pixels) is folded into the first layer's weights, so
  no pass over the (batch, 784) input scales it; the engine keeps ``W1s = W1 * scale``
  internally and writes ``W1`` back after each epoch;
- the learning rate and 1/batch are folded into the output gradient, so the gradients
  come out of the matrix products already scaled and the update is one subtraction;
- the output layer works transposed, (classes, batch), so that its reductions run
  along the long axis;
- below `SINGLE_THREAD_BELOW` samples per batch the BLAS runs on one thread: the
  matrix products are then too small to gain from a second core, and handing the
  arrays between cores' caches costs more than it gains (measured on 2 cores: one
  thread takes about 0.7x the epoch time of two at batch 32; from batch 128 up two
  threads are as fast or faster, 1.4x at 512);
- with per-image warps the next batch is gathered on a second thread while this one
  steps with a one-thread BLAS (see `NumpyEngine._run_warped`).

It covers SGD with or without classical momentum and weight decay, one-hot targets,
both activations and losses, shifts and warps; `NumpyEngine.unsupported_reason` names
what it does not cover, and the generic engine trains those runs.

Results match the generic path up to float rounding: the folded scales round
differently, and over many epochs the weights drift apart as any two float32
summation orders do (test accuracy stays within a few hundredths of a point).

Tested against the generic engine in tests/test_numpy_engine.py.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ...augment import EpochWarps
from ...backend import blas_threads
from ...errors import StopEpoch
from ...optim import SGD
from ...pixels import PIXEL_SCALE
from .base import Engine, EngineSetup, EpochInputs, beyond_one_layer

__all__ = ["NumpyEngine", "SINGLE_THREAD_BELOW"]

SINGLE_THREAD_BELOW = 128


def _blas_threads_for(batch_size: int):
    """One BLAS thread below `SINGLE_THREAD_BELOW` samples per batch, else the default."""
    return blas_threads(1 if batch_size < SINGLE_THREAD_BELOW else None)


class _Buffers:
    """Every array one training step of `rows` samples needs."""

    def __init__(self, rows: int, n_in: int, n_hidden: int, n_out: int, dtype, ones: float,
                 raw_dtype):
        self.rows = np.arange(rows)
        self.raw = np.empty((rows, n_in), raw_dtype)  # gathered rows, in the data's dtype
        self.y = np.empty(rows, np.int64)
        self.best = np.empty(rows, np.intp)  # argmax of each sample's scores
        self.picked = np.empty(rows, dtype)  # each sample's score for its true class
        self.x = np.empty((rows, n_in + 1), dtype)
        self.x[:, n_in] = ones  # the column that carries the first bias
        self.h = np.empty((rows, n_hidden), dtype)
        self.dh = np.empty((rows, n_hidden), dtype)
        self.dmask = np.empty((rows, n_hidden), bool)
        self.tmp_h = np.empty((rows, n_hidden), dtype)
        self.z = np.empty((n_out, rows), dtype)  # transposed output scores
        self.tmp_z = np.empty((n_out, rows), dtype)
        self.tmp_z2 = np.empty((n_out, rows), dtype)
        self.target = np.empty((n_out, rows), bool)
        self.m = np.empty(rows, dtype)
        self.s = np.empty(rows, dtype)
        self.w = np.empty(rows, dtype)  # each sample's weight, then its gradient scale
        # per-image warps: each sample's warp, its source positions and in-image mask
        self.warp = {"ids": np.empty(rows, np.int64), "offset": np.empty(rows, np.int64),
                     "pix": np.empty((rows, n_in), np.int64),
                     "keep": np.empty((rows, n_in), np.uint8)}


class NumpyEngine(Engine):
    """Runs training epochs on NumPy arrays in its own layout; see the module docstring.

    Parameters
    ----------
    setup : EngineSetup
        On the NumPy backend; ``setup.params`` are read now and written back by
        `write_back`.
    """

    name = "numpy"
    covers = ("NumPy fast path: SGD with or without momentum, one-hot targets, sample "
              "weights, shifts and warps")

    def __init__(self, setup: EngineSetup):
        super().__init__(setup)
        params, arch, optimizer = setup.params, setup.arch, setup.optimizer
        x = setup.x
        self.arch, self.opt = arch, optimizer
        self.x, self.y, self.shifter, self.warper = x, setup.y, setup.shifter, setup.warper
        self.weights = setup.sample_weight
        self.x_flat = x.reshape(-1)
        self.dtype = params["W1"].dtype
        self.scale = PIXEL_SCALE if x.dtype == np.uint8 else 1.0
        n_in = arch.n_inputs
        self.w1 = np.empty((n_in + 1, arch.n_hidden), self.dtype)
        self.w2t = np.empty((arch.n_outputs, arch.n_hidden), self.dtype)
        self.b2 = np.empty((arch.n_outputs, 1), self.dtype)
        self.g1 = np.empty_like(self.w1)
        self.g2t = np.empty_like(self.w2t)
        self.gb2 = np.empty_like(self.b2)
        self.decay1 = np.empty((n_in, arch.n_hidden), self.dtype)
        self.decay2 = np.empty_like(self.w2t)
        self.velocity = None
        if optimizer.momentum:
            self.velocity = [np.zeros_like(a) for a in (self.w1, self.w2t, self.b2)]
        self.classes = np.arange(arch.n_outputs)[:, None]
        self._buffers: dict[tuple[int, int], _Buffers] = {}  # by (rows, slot)
        self.read(params)

    @classmethod
    def unsupported_reason(cls, setup: EngineSetup) -> str | None:
        """What of `setup` this engine does not cover (SGD, classical momentum, one-hot)."""
        layered = beyond_one_layer(setup, "NumPy fast path")
        if layered is not None:
            return layered
        opt = setup.optimizer
        if not isinstance(opt, SGD) or opt.nesterov:
            return f"{opt.name} has no NumPy fast path yet"
        if setup.label_smoothing:
            return "label smoothing has no NumPy fast path yet"
        return None

    @property
    def description(self) -> str:
        """``NumPy fast path`` (and how per-image warps are gathered)."""
        if self.warper is not None:
            return "NumPy fast path, warped batches gathered on a second thread"
        return "NumPy fast path"

    def read_params(self) -> None:
        """Take ``setup.params`` into the engine's layout."""
        self.read(self.setup.params)

    # -- parameters in and out ------------------------------------------------------

    def read(self, params: dict) -> None:
        """Take the parameters into the engine's layout."""
        n_in = self.arch.n_inputs
        # x_aug = [x, 1/scale] and w1 = [W1; b1] * scale give x_aug @ w1 = scale*x@W1 + b1
        np.multiply(params["W1"], self.scale, out=self.w1[:n_in])
        np.multiply(params["b1"], self.scale, out=self.w1[n_in])
        np.copyto(self.w2t, params["W2"].T)
        np.copyto(self.b2[:, 0], params["b2"])

    def write_back(self, params: dict) -> None:
        """Store the current parameters into `params` (same arrays, updated in place)."""
        n_in = self.arch.n_inputs
        np.multiply(self.w1[:n_in], 1.0 / self.scale, out=params["W1"])
        np.multiply(self.w1[n_in], 1.0 / self.scale, out=params["b1"])
        np.copyto(params["W2"], self.w2t.T)
        np.copyto(params["b2"], self.b2[:, 0])

    # -- one epoch --------------------------------------------------------------------

    def _buffers_for(self, rows: int, slot: int = 0) -> _Buffers:
        buf = self._buffers.get((rows, slot))
        if buf is None:
            arch = self.arch
            buf = _Buffers(rows, arch.n_inputs, arch.n_hidden, arch.n_outputs, self.dtype,
                           1.0 / self.scale, self.x.dtype)
            self._buffers[(rows, slot)] = buf
        return buf

    def _gather(self, buf: _Buffers, idx: np.ndarray, shift_id) -> None:
        """Fill the input part of ``buf.x`` with the batch's rows, converted (and shifted)."""
        n_in = self.arch.n_inputs
        np.take(self.x, idx, axis=0, out=buf.raw)
        if self.shifter is None or self.shifter.offset(shift_id) == (0, 0):
            np.copyto(buf.x[:, :n_in], buf.raw, casting="unsafe")
            return
        side = self.shifter.side
        rows = idx.shape[0]
        dst = buf.x[:, :n_in].reshape(rows, side, side)  # a view: rows stay contiguous
        to, frm, strips = self.shifter.slices(shift_id)
        for strip in strips:
            dst[strip] = 0
        np.copyto(dst[to], buf.raw.reshape(rows, side, side)[frm], casting="unsafe")

    def _gather_warped(self, buf: _Buffers, idx: np.ndarray, warps: EpochWarps) -> None:
        """Fill the input part of ``buf.x`` with the batch's images, each through its warp."""
        n_in = self.arch.n_inputs
        w = buf.warp
        np.take(warps.ids, idx, out=w["ids"])
        np.take(warps.index, w["ids"], axis=0, out=w["pix"])
        np.multiply(idx, n_in, out=w["offset"])
        w["pix"] += w["offset"][:, None]  # positions in the flattened data set
        np.take(self.x_flat, w["pix"], out=buf.raw)
        np.take(warps.keep, w["ids"], axis=0, out=w["keep"])
        np.multiply(buf.raw, w["keep"], out=buf.raw)
        np.copyto(buf.x[:, :n_in], buf.raw, casting="unsafe")

    # -- exact state, for checkpoints ---------------------------------------------------

    def exact_state(self) -> dict[str, np.ndarray]:
        """Copies of every array training continues from (this engine's own layout)."""
        out = {"w1": self.w1.copy(), "w2t": self.w2t.copy(), "b2": self.b2.copy()}
        if self.velocity is not None:
            out.update({f"v{i}": v.copy() for i, v in enumerate(self.velocity)})
        return out

    def load_exact_state(self, state: dict[str, np.ndarray]) -> None:
        """Continue from `state` (from `exact_state` of an engine of the same setup), exactly."""
        for name in ("w1", "w2t", "b2"):
            np.copyto(getattr(self, name), state[name])
        if self.velocity is not None:
            for i, v in enumerate(self.velocity):
                np.copyto(v, state[f"v{i}"])

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """The momentum buffers in the generic layout (``velocity/W1`` ...), as SGD keeps them."""
        if self.velocity is None:
            return {}
        n_in, inv = self.arch.n_inputs, 1.0 / self.scale
        v1, v2t, vb2 = self.velocity
        return {"velocity/W1": v1[:n_in] * inv, "velocity/b1": v1[n_in] * inv,
                "velocity/W2": v2t.T.copy(), "velocity/b2": vb2[:, 0].copy()}

    def load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        """Take momentum buffers in the generic layout (see `optimizer_state`)."""
        if self.velocity is None:
            return
        n_in = self.arch.n_inputs
        v1, v2t, vb2 = self.velocity
        np.multiply(state["velocity/W1"], self.scale, out=v1[:n_in])
        np.multiply(state["velocity/b1"], self.scale, out=v1[n_in])
        np.copyto(v2t, state["velocity/W2"].T)
        np.copyto(vb2[:, 0], state["velocity/b2"])

    def run_epoch(self, epoch: EpochInputs, on_batch=None, should_stop=None):
        """Train one pass (see `Engine.run_epoch`); 0-d float64 loss sum and int64 hits."""
        order, batch_size, lrs = epoch.order, epoch.batch_size, epoch.learning_rates
        n = order.shape[0]
        losses = np.empty(n, self.dtype)
        hits = np.empty(n, bool)
        if epoch.warps is not None:
            self._run_warped(order, batch_size, lrs, epoch.warps, on_batch, should_stop,
                             losses, hits)
        else:
            shift_ids = epoch.shift_ids
            with _blas_threads_for(batch_size):
                for i, start in enumerate(range(0, n, batch_size)):
                    stop = min(start + batch_size, n)
                    idx = order[start:stop]
                    buf = self._buffers_for(stop - start)
                    self._gather(buf, idx, None if shift_ids is None else shift_ids[i])
                    self._labels_and_weights(buf, idx)
                    self._step(buf, buf.y, lrs[i], losses[start:stop], hits[start:stop])
                    if on_batch is not None:
                        on_batch(i + 1)
                    if should_stop is not None and should_stop():
                        raise StopEpoch(i + 1)
        self._losses, self._batch_size = losses, batch_size
        if self.weights is not None:  # the weighted sum, in the order the samples ran
            losses = losses * np.take(self.weights, order)
        return (np.asarray(losses.sum(dtype=np.float64)),
                np.asarray(np.count_nonzero(hits), dtype=np.int64))

    def _run_warped(self, order, batch_size, lrs, warps, on_batch, should_stop, losses, hits):
        """An epoch with per-image warps: the next batch is gathered on a second thread.

        The warped gather (index tables, a pixel gather, masks) takes about a third of a
        step; NumPy releases the GIL for it, so it runs on the second core while this
        thread does the step, with the BLAS kept to one thread. Measured on 2 cores at
        batch 128: 0.38-0.46 s an epoch, against 0.57-0.63 s gathering in turn with a
        two-thread BLAS. The steps themselves run in order on this thread, so results
        are as deterministic as without the prefetch.
        """
        n = order.shape[0]
        starts = list(range(0, n, batch_size))

        def prepare(i):
            start = starts[i]
            stop = min(start + batch_size, n)
            idx = order[start:stop]
            buf = self._buffers_for(stop - start, i % 2)  # two sets: one in use, one filling
            self._gather_warped(buf, idx, warps)
            self._labels_and_weights(buf, idx)
            return buf

        with blas_threads(1), ThreadPoolExecutor(1) as pool:
            pending = pool.submit(prepare, 0)
            for i, start in enumerate(starts):
                buf = pending.result()
                if i + 1 < len(starts):
                    pending = pool.submit(prepare, i + 1)
                stop = min(start + batch_size, n)
                self._step(buf, buf.y, lrs[i], losses[start:stop], hits[start:stop])
                if on_batch is not None:
                    on_batch(i + 1)
                if should_stop is not None and should_stop():
                    raise StopEpoch(i + 1)

    def _labels_and_weights(self, buf: _Buffers, idx: np.ndarray) -> None:
        """Gather the batch's labels (and weights, if any) into `buf`."""
        np.take(self.y, idx, out=buf.y)
        if self.weights is not None:
            np.take(self.weights, idx, out=buf.w)

    def first_bad_step(self) -> int | None:
        """The first step (from 0) of the last epoch whose loss was not finite, or None."""
        bad = np.flatnonzero(~np.isfinite(self._losses))
        return int(bad[0]) // self._batch_size if bad.size else None

    def _step(self, buf: _Buffers, y: np.ndarray, lr: float, losses: np.ndarray,
              hits: np.ndarray) -> None:
        """Forward, backward and update for one batch; per-sample losses and hits out."""
        arch, rows = self.arch, y.shape[0]
        h, dh, z = buf.h, buf.dh, buf.z
        # hidden layer (bias and input scale are inside w1)
        np.matmul(buf.x, self.w1, out=h)
        if arch.activation == "relu":
            np.greater(h, 0, out=buf.dmask)
            np.multiply(h, buf.dmask, out=h)
        else:
            _sigmoid(h, h)
        # output scores, transposed: (classes, batch)
        np.matmul(self.w2t, h.T, out=z)
        z += self.b2
        # a hit is argmax == y, ties going to the first class, exactly as in the generic path
        np.argmax(z, axis=0, out=buf.best)
        np.equal(buf.best, y, out=hits)
        np.max(z, axis=0, out=buf.m)
        picked = buf.picked
        picked[...] = z[y, buf.rows]
        np.equal(self.classes, y, out=buf.target)
        # dz: the gradient of the summed loss with respect to z
        if arch.loss == "cross_entropy":
            z -= buf.m
            picked -= buf.m
            np.exp(z, out=z)
            np.sum(z, axis=0, out=buf.s)
            np.log(buf.s, out=buf.m)
            np.subtract(buf.m, picked, out=losses)
            z /= buf.s
            z -= buf.target
        else:
            _sigmoid(z, z)  # outputs
            np.subtract(z, buf.target, out=buf.tmp_z)  # difference to the target
            np.multiply(buf.tmp_z, buf.tmp_z, out=buf.tmp_z2)
            np.sum(buf.tmp_z2, axis=0, out=losses)
            losses *= 0.5
            np.subtract(1.0, z, out=buf.tmp_z2)
            buf.tmp_z2 *= z  # sigmoid'
            np.multiply(buf.tmp_z, buf.tmp_z2, out=z)
        # fold lr / batch and the input scale^2 of w1 into dz: gradients come out scaled
        c2 = self.scale * self.scale
        if self.weights is None:
            z *= lr / rows * c2
        else:  # each sample's share of the batch's total weight (as the generic path)
            total = max(float(buf.w.sum()), 1e-30)
            buf.w *= lr * c2 / total
            z *= buf.w
        np.matmul(z, h, out=self.g2t)
        np.sum(z, axis=1, keepdims=True, out=self.gb2)
        np.matmul(z.T, self.w2t, out=dh)  # uses w2 before its update
        if arch.activation == "relu":
            np.multiply(dh, buf.dmask, out=dh)
        else:
            np.subtract(1.0, h, out=buf.tmp_h)
            buf.tmp_h *= h
            dh *= buf.tmp_h
        np.matmul(buf.x.T, dh, out=self.g1)
        self.g2t *= 1.0 / c2
        self.gb2 *= 1.0 / c2
        self._update(lr)

    def _update(self, lr: float) -> None:
        """Apply the (already lr-scaled) gradients, with weight decay and momentum."""
        n_in = self.arch.n_inputs
        grads = (self.g1, self.g2t, self.gb2)
        wd = self.opt.weight_decay
        if wd:
            # the penalty applies to weight matrices, not to biases (row n_in of w1)
            g1 = self.g1[:n_in]
            g1 += np.multiply(self.w1[:n_in], lr * wd, out=self.decay1)
            self.g2t += np.multiply(self.w2t, lr * wd, out=self.decay2)
        params = (self.w1, self.w2t, self.b2)
        if self.velocity is None:
            for p, g in zip(params, grads):
                p -= g
            return
        mu = self.opt.momentum
        for p, g, v in zip(params, grads, self.velocity):
            v *= mu
            v -= g
            p += v


def _sigmoid(a: np.ndarray, out: np.ndarray) -> None:
    """out = sigmoid(a), in the overflow-free tanh form."""
    np.multiply(a, 0.5, out=out)
    np.tanh(out, out=out)
    out *= 0.5
    out += 0.5

