"""The layered NumPy engine: deep networks, dropout and distillation on the CPU.

The one-hidden-layer engines (compiled, NumPy, CUDA) decline networks with more than
one hidden layer, dropout and teachers (`beyond_one_layer`); this engine trains those
runs instead of the generic one. It computes exactly the generic engine's step
(`mnist_xp.training.engines.generic`, `mnist_xp.model.loss_and_grads`), in the same
order of operations, but shaped for NumPy's per-call costs:

- every (batch, width) array of a step is preallocated per batch size and written
  with ``out=``: matrix products, bias additions, activations and their slopes run in
  place, so a step allocates nothing of the hidden layers' size (the few (batch,
  classes) temporaries of the loss and the teacher's own forward pass remain);
- the gradients land in preallocated buffers; for SGD the learning rate is folded into
  the output gradient, so they come out of the matrix products already scaled, and the
  update (weight decay, classical or Nesterov momentum) runs in place on
  ``setup.params`` with `mnist_xp.optim.SGD.step`'s operations less that one pass over
  the weights; Adam and AdamW call the optimizer's own `step` on the buffers;
- below `SINGLE_THREAD_BELOW` samples per batch the BLAS runs on one thread, as in
  the NumPy engine.
- with per-image warps the next batch is gathered on a second thread while this one
  steps (NumPy releases the GIL for the gather), as in `NumpyEngine._run_warped`.

The parameters are ``setup.params`` themselves and the optimizer state is the generic
engine's (`SGD.init_state` / `Adam.init_state`), so there is no layout of its own:
`write_back` and `read_params` have nothing to do, `exact_state` is empty, and a
checkpoint resumes bit for bit from the parameters and optimizer buffers alone.

Results match the generic engine up to float rounding (the matrix products are the
same BLAS calls; the folded learning rate rounds differently, and a sigmoid layer's
slope under dropout is taken from the activation before dropout rather than divided
back out of it).

Speed: a 784-800-800-10 step is nearly all matrix products, which are the same calls
as the generic engine's, so the gain there is small; what is saved is the allocation
and passes around them, which weigh more for narrower layers and smaller batches.
Measured with benchmarks/layers_epoch_time.py on 2 shared, busy cores (20,000 images,
one BLAS thread for both, median of the per-round ratios): 784-800-800-10 at batch 128
1.02-1.07x the generic engine's speed (1.09x with dropout 0.5), 784-256-256-10 at
batch 64 1.08-1.14x. Tested against the generic engine
in tests/test_numpy_layers.py.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ...errors import StopEpoch
from ...model import distillation_terms, dropout_mask
from ...optim import SGD, Adam, state_from_host, state_to_host
from ...pixels import input_scale
from .base import Engine, EngineSetup, EpochInputs, beyond_one_layer
from .numpy_engine import _blas_threads_for

__all__ = ["NumpyLayersEngine"]

_WHAT = "layered NumPy path"


class _Inputs:
    """One step's inputs: the float batch, labels and weights (two sets when prefetching)."""

    def __init__(self, rows: int, n_in: int, dtype, weighted: bool):
        self.x = np.empty((rows, n_in), dtype)
        self.y = np.empty(rows, np.int64)
        self.w = np.empty(rows, dtype) if weighted else None


class _Buffers:
    """Every (rows, width) array one step of `rows` samples needs, per layer."""

    def __init__(self, rows: int, hidden: tuple, n_out: int, dtype, dropout: bool):
        # act[l]: layer l's activation before dropout; out[l]: after it (the same array
        # without dropout); delta[l]: the gradient with respect to its pre-activation
        self.act = [np.empty((rows, w), dtype) for w in hidden]
        self.out = [np.empty((rows, w), dtype) for w in hidden] if dropout else self.act
        self.delta = [np.empty((rows, w), dtype) for w in hidden]
        self.tmp = [np.empty((rows, w), dtype) for w in hidden]
        self.positive = [np.empty((rows, w), bool) for w in hidden]
        self.z = np.empty((rows, n_out), dtype)
        self.dz = np.empty((rows, n_out), dtype)
        self.shifted = np.empty((rows, n_out), dtype)
        self.terms = np.empty((rows, n_out), dtype)
        self.target = np.empty((rows, n_out), dtype)
        self.is_class = np.empty((rows, n_out), bool)
        self.col = np.empty((rows, 1), dtype)  # a per-sample column (max, sum, log-sum)
        self.col2 = np.empty((rows, 1), dtype)
        self.best = np.empty(rows, np.intp)
        self.hit = np.empty(rows, bool)


class NumpyLayersEngine(Engine):
    """Trains deep networks, dropout and distillation on NumPy; see the module docstring.

    Parameters
    ----------
    setup : EngineSetup
        On the NumPy backend, float32 or float64 parameters (``W1, b1, ..., W{L}, b{L}``,
        trained in place), uint8 or float inputs; checked by `unsupported_reason`.
    """

    name = "numpy-layers"
    covers = ("layered NumPy path: deep networks, dropout and teachers (SGD, momentum, "
              "Nesterov, Adam, AdamW, label smoothing, sample weights, shifts and warps)")

    def __init__(self, setup: EngineSetup):
        super().__init__(setup)
        params, arch = setup.params, setup.arch
        self.arch = arch
        self.names = arch.param_names
        self.dtype = params["W1"].dtype
        self.scale = input_scale(setup.x, np)
        self.state = setup.optimizer.init_state(params, np)
        self.grads = {k: np.empty_like(p) for k, p in params.items()}
        opt = setup.optimizer
        # room for the SGD update's one intermediate (decay term, Nesterov step), if any
        needs_scratch = isinstance(opt, SGD) and (opt.weight_decay or opt.nesterov)
        self.scratch = {k: np.empty_like(p) for k, p in params.items()} if needs_scratch else {}
        self.classes = np.arange(arch.n_outputs)
        self._buffers: dict[int, _Buffers] = {}
        self._inputs: dict[tuple[int, int], _Inputs] = {}
        self._step_losses = None
        self._hits = 0

    @classmethod
    def unsupported_reason(cls, setup: EngineSetup) -> str | None:
        """Why this engine does not train `setup` (one short clause), or None.

        It takes only what the one-hidden-layer engines decline (more hidden layers,
        dropout or a teacher), on the NumPy backend, with float32 or float64
        parameters, uint8 or float inputs and an `SGD` or `Adam` optimizer.
        """
        if setup.backend.name != "numpy":
            return f"the {setup.backend.name} backend has no {_WHAT}"
        if beyond_one_layer(setup, _WHAT) is None:
            return f"the {_WHAT} takes only deep networks, dropout or teachers"
        dtype = np.dtype(setup.params["W1"].dtype)
        if dtype not in (np.float32, np.float64):
            return f"{dtype} has no {_WHAT}"
        x_dtype = np.dtype(setup.x.dtype)
        if x_dtype != np.uint8 and x_dtype.kind != "f":
            return f"{x_dtype} inputs have no {_WHAT}"
        if not isinstance(setup.optimizer, (SGD, Adam)):
            return f"{getattr(setup.optimizer, 'name', type(setup.optimizer).__name__)} " \
                   f"has no {_WHAT}"
        return None

    @property
    def description(self) -> str:
        """``layered NumPy path`` (and how per-image warps are gathered)."""
        if self.setup.warper is not None:
            return f"{_WHAT}, warped batches gathered on a second thread"
        return _WHAT

    # -- state: the parameters and the generic optimizer state are all of it ------------

    def write_back(self, params: dict) -> None:
        """Nothing to do: the engine trains ``setup.params`` in place."""

    def optimizer_state(self) -> dict[str, np.ndarray]:
        """The optimizer's buffers in the generic layout (see `Engine.optimizer_state`)."""
        return state_to_host(self.state, self.setup.backend)

    def load_optimizer_state(self, flat: dict[str, np.ndarray]) -> None:
        """Take buffers as `optimizer_state` gives them."""
        state_from_host(self.state, flat, self.setup.backend)

    def first_bad_step(self) -> int | None:
        """The first step of the last epoch with a non-finite loss (see `Engine`)."""
        bad = np.flatnonzero(~np.isfinite(self._step_losses))
        return int(bad[0]) if bad.size else None

    # -- one epoch ----------------------------------------------------------------------

    def _buffers_for(self, rows: int) -> _Buffers:
        buf = self._buffers.get(rows)
        if buf is None:
            buf = _Buffers(rows, self.arch.hidden_sizes, self.arch.n_outputs, self.dtype,
                           bool(self.setup.dropout))
            self._buffers[rows] = buf
        return buf

    def _inputs_for(self, rows: int, slot: int = 0) -> _Inputs:
        inp = self._inputs.get((rows, slot))
        if inp is None:
            inp = _Inputs(rows, self.arch.n_inputs, self.dtype,
                          self.setup.sample_weight is not None)
            self._inputs[(rows, slot)] = inp
        return inp

    def _fill(self, inp: _Inputs, epoch: EpochInputs, i: int, idx: np.ndarray) -> None:
        """Fill `inp` with step `i`'s batch (samples `idx`) as the generic engine makes it."""
        s = self.setup
        if s.warper is not None:
            xb = s.warper.gather(s.x, idx, epoch.warps, np)
        else:
            xb = np.take(s.x, idx, axis=0)
            if s.shifter is not None:
                xb = s.shifter.apply(xb, epoch.shift_ids[i], np)
        # as `as_float_batch`: the cast, then the pixel scale (the same rounding)
        np.copyto(inp.x, xb, casting="unsafe")
        if xb.dtype != self.dtype and self.scale != 1.0:
            inp.x *= self.scale
        np.take(s.y, idx, out=inp.y)
        if inp.w is not None:
            np.take(s.sample_weight, idx, out=inp.w)

    def run_epoch(self, epoch: EpochInputs, on_batch=None, should_stop=None):
        """Train one pass (see `Engine.run_epoch`); 0-d loss sum (parameter dtype), int64 hits."""
        order, size = epoch.order, epoch.batch_size
        n = order.shape[0]
        starts = list(range(0, n, size))
        self._step_losses = np.zeros(len(starts), self.dtype)
        loss_sum = np.zeros((), self.dtype)

        def prepare(i: int, slot: int) -> _Inputs:
            idx = order[starts[i]:min(starts[i] + size, n)]
            inp = self._inputs_for(idx.shape[0], slot)
            self._fill(inp, epoch, i, idx)
            return inp

        # Warped gathers are a pixel gather and a mask per image: worth a second thread
        # (two input sets alternate, one stepping and one filling). The steps still run
        # in order on this thread, so results are as deterministic as without it.
        pool = ThreadPoolExecutor(1) if self.setup.warper is not None else None
        try:
            with _blas_threads_for(size):
                self._steps(epoch, starts, prepare, pool, loss_sum, on_batch, should_stop)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        return loss_sum, np.asarray(self._hits, dtype=np.int64)

    def _steps(self, epoch, starts, prepare, pool, loss_sum, on_batch, should_stop) -> None:
        """The epoch's steps in order; sums into `loss_sum` (in place) and ``self._hits``."""
        self._hits = 0
        pending = pool.submit(prepare, 0, 0) if pool is not None else None
        for i in range(len(starts)):
            if pool is not None:
                inp = pending.result()
                if i + 1 < len(starts):
                    pending = pool.submit(prepare, i + 1, (i + 1) % 2)
            else:
                inp = prepare(i, 0)
            batch_loss, batch_hits = self._step(inp, epoch, i)
            loss_sum += batch_loss
            self._hits += batch_hits
            self._step_losses[i] = batch_loss
            if on_batch is not None:
                on_batch(i + 1)
            if should_stop is not None and should_stop():
                raise StopEpoch(i + 1)

    def _step(self, inp: _Inputs, epoch: EpochInputs, i: int):
        """Forward, backward and update for one batch; (batch loss sum, hits)."""
        s, arch, params = self.setup, self.arch, self.setup.params
        x, y = inp.x, inp.y
        rows = x.shape[0]
        buf = self._buffers_for(rows)
        relu = arch.activation == "relu"
        last = arch.n_layers
        masks = None
        if s.dropout:  # the generic engine's masks, drawn by the same function
            masks = [dropout_mask(epoch.dropout_key, i, layer, (rows, width), s.dropout, np)
                     for layer, width in enumerate(arch.hidden_sizes, start=1)]
        # forward: a = below @ W + b, activated in place, then dropout into `out`
        below = x
        for layer in range(1, last):
            a = buf.act[layer - 1]
            np.matmul(below, params[f"W{layer}"], out=a)
            a += params[f"b{layer}"]
            if relu:
                np.maximum(a, 0.0, out=a)
            else:
                _sigmoid(a)
            if masks is not None:
                np.multiply(a, masks[layer - 1], out=buf.out[layer - 1])
            below = buf.out[layer - 1]
        z = buf.z
        np.matmul(below, params[f"W{last}"], out=z)
        z += params[f"b{last}"]
        np.argmax(z, axis=1, out=buf.best)
        np.equal(buf.best, y, out=buf.hit)
        batch_hits = int(np.count_nonzero(buf.hit))
        lr = float(epoch.learning_rates[i])
        sgd = isinstance(s.optimizer, SGD)
        # SGD: lr folded into dz, so the gradients come out of the matrix products
        # already scaled and the update saves a pass over every weight
        batch_loss = self._output_gradient(buf, y, inp.w, x, lr if sgd else 1.0)
        self._backward(buf, x, masks, relu)
        if sgd:
            self._sgd_update(lr)
        else:
            s.optimizer.step(params, self.grads, self.state, lr)
        return batch_loss, batch_hits

    def _output_gradient(self, buf: _Buffers, y, w, x, factor: float):
        """The batch's summed loss; ``buf.dz`` `factor` times the mean loss's gradient in z."""
        s, arch = self.setup, self.arch
        z, dz, target, terms = buf.z, buf.dz, buf.target, buf.terms
        np.equal(y[:, None], self.classes, out=buf.is_class)
        np.copyto(target, buf.is_class)
        if s.label_smoothing:
            target *= 1.0 - s.label_smoothing
            target += s.label_smoothing / arch.n_outputs
        if arch.loss == "cross_entropy":
            shifted, col, col2 = buf.shifted, buf.col, buf.col2
            np.max(z, axis=1, keepdims=True, out=col)
            np.subtract(z, col, out=shifted)
            np.exp(shifted, out=dz)  # e
            np.sum(dz, axis=1, keepdims=True, out=col)  # s
            np.log(col, out=col2)
            np.subtract(shifted, col2, out=terms)
            terms *= target
            np.negative(terms, out=terms)
            dz /= col
            dz -= target
            if s.teacher is not None:
                soft = s.teacher.soft_targets(x, np)  # on the very float batch the student sees
                a, t = float(s.teacher.weight), float(s.teacher.temperature)
                # as `loss_and_grads`; (batch, classes) temporaries, small beside the
                # teacher's forward pass
                soft_terms, soft_dz = distillation_terms(z, soft, t, np)
                terms *= 1.0 - a
                terms += (a * t * t) * soft_terms
                dz *= 1.0 - a
                dz += (a * t * t) * soft_dz
        else:
            out = buf.shifted  # the sigmoid outputs, then 1 - outputs
            _sigmoid(z, out=out)
            np.subtract(out, target, out=dz)  # diff
            np.multiply(dz, dz, out=terms)
            terms *= 0.5
            dz *= out
            np.subtract(1.0, out, out=out)
            dz *= out
        if w is None:
            loss = np.sum(terms)
            dz *= factor / dz.shape[0]
        else:
            loss = np.sum(w * np.sum(terms, axis=1))
            # an all-zero-weight batch moves nothing (and divides nothing by zero)
            total = np.maximum(np.sum(w), np.asarray(1e-30, dtype=w.dtype))
            dz *= (w * (factor / total))[:, None]
        return loss

    def _backward(self, buf: _Buffers, x, masks, relu: bool) -> None:
        """Every layer's gradients into ``self.grads``, from ``buf.dz`` down to the input."""
        params, grads = self.setup.params, self.grads
        delta = buf.dz
        for i in range(self.arch.n_layers, 0, -1):
            below = buf.out[i - 2] if i >= 2 else x
            np.matmul(below.T, delta, out=grads[f"W{i}"])
            np.sum(delta, axis=0, out=grads[f"b{i}"])
            if i == 1:
                break
            dh = buf.delta[i - 2]
            np.matmul(delta, params[f"W{i}"].T, out=dh)  # W{i} before its update
            if masks is not None:
                dh *= masks[i - 2]
            a = buf.act[i - 2]  # the unit's own output, before dropout's scale
            if relu:
                # where dropout zeroed a unit dh is 0 already, so a > 0 gives h > 0's mask
                np.greater(a, 0.0, out=buf.positive[i - 2])
                dh *= buf.positive[i - 2]
            else:
                dh *= a
                tmp = buf.tmp[i - 2]
                np.subtract(1.0, a, out=tmp)
                dh *= tmp
            delta = dh

    def _sgd_update(self, lr: float) -> None:
        """`SGD.step` in place, on gradients that already carry the factor `lr`."""
        opt, params, grads, state = self.setup.optimizer, self.setup.params, self.grads, self.state
        mu, wd = float(opt.momentum), float(opt.weight_decay)
        for k in self.names:
            p, g, tmp = params[k], grads[k], self.scratch.get(k)
            if wd and p.ndim == 2:
                np.multiply(p, lr * wd, out=tmp)
                g += tmp
            if mu == 0:
                p -= g
                continue
            v = state[k]
            v *= mu
            v -= g
            if opt.nesterov:
                np.multiply(v, mu, out=tmp)
                tmp -= g
                p += tmp
            else:
                p += v


def _sigmoid(a: np.ndarray, out: np.ndarray | None = None) -> None:
    """``out = sigmoid(a)`` (in place on `a` without `out`), in `model`'s tanh form."""
    out = a if out is None else out
    np.multiply(a, 0.5, out=out)
    np.tanh(out, out=out)
    out *= 0.5
    out += 0.5
