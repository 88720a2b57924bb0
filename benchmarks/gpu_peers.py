"""The peers of benchmarks/gpu_epoch_time.py: PyTorch and JAX training the same network.

Each peer trains the 784-100-10 ReLU network with softmax cross-entropy and SGD with
momentum (lr 0.1, momentum 0.9, constant rate) on uint8 images scaled by 1/255, shuffles
on the device every epoch, and sums the loss and the correct count on the device. Each
has ``epoch() -> (mean loss, hits)`` (which waits for the device: the one sync of an
epoch), ``test_accuracy(x, y)`` and ``n``.

- `TorchEager`: the usual PyTorch loop.
- `TorchStepGraph`: one training step captured as a CUDA graph (``torch.cuda.graph``),
  replayed once per step (one graph for full batches, one for the last, smaller one).
- `TorchEpochGraph`: the *whole epoch* captured as one CUDA graph: static buffers for
  the data, the order and the sums, every step inside the capture, one replay per epoch.
  The order is drawn on the device (``torch.randperm``) into the static order buffer
  just before each replay.
- `TorchCompiled`: ``torch.compile`` of the forward pass and loss (its backward is
  compiled with it) and of the optimizer step, ``mode="max-autotune"`` or
  ``"reduce-overhead"`` (the latter replays CUDA graphs), shapes specialised.
- `JaxScan`: ``jax.jit`` of one epoch, ``lax.scan`` over all its full batches (the last,
  smaller batch after the scan), the permutation drawn inside. With
  ``command_buffers=True`` XLA is asked to run the loop as CUDA command buffers
  (``xla_gpu_enable_command_buffer`` with ``WHILE``); with False, none at all, so
  XLA's while loop reads its condition on the host every iteration.

On a machine without CUDA every peer but the graph-based ones runs on the CPU
(``device="cpu"``), and `TorchEpochGraph` runs its epoch body eagerly: that is how
tests/test_gpu_peers.py checks them without a GPU.
"""

from __future__ import annotations

import numpy as np

LR, MOMENTUM = 0.1, 0.9
N_IN, N_HID, N_OUT = 784, 100, 10

__all__ = ["LR", "MOMENTUM", "JaxScan", "TorchCompiled", "TorchEager", "TorchEpochGraph",
           "TorchStepGraph", "command_buffer_flag"]


class _Torch:
    """The model, optimizer, data and sums on `device`, shared by the PyTorch peers."""

    def __init__(self, x, y, batch: int, seed: int = 0, device: str = "cuda", fused_sgd=None):
        import torch
        import torch.nn.functional as F

        self.torch, self.F = torch, F
        torch.manual_seed(seed)
        self.device = dev = torch.device(device)
        self.model = torch.nn.Sequential(torch.nn.Linear(N_IN, N_HID), torch.nn.ReLU(),
                                         torch.nn.Linear(N_HID, N_OUT)).to(dev)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.x = torch.from_numpy(np.ascontiguousarray(x)).to(dev)
        self.y = torch.from_numpy(y.astype(np.int64)).to(dev)
        self.n, self.batch = len(y), batch
        self.loss_sum = torch.zeros((), device=dev)
        self.hits = torch.zeros((), dtype=torch.int64, device=dev)

    def _step(self, idx):
        """One training step on the samples `idx`; adds to the epoch's sums."""
        xb = self.x[idx].float().mul_(1.0 / 255.0)
        yb = self.y[idx]
        out = self.model(xb)
        loss = self.F.cross_entropy(out, yb)
        loss.backward()
        self.opt.step()
        self.loss_sum += loss.detach() * idx.shape[0]
        self.hits += (out.argmax(1) == yb).sum()

    def _result(self) -> tuple[float, int]:
        """The epoch's mean loss and hits (reading them waits for the device)."""
        return float(self.loss_sum) / self.n, int(self.hits)

    def test_accuracy(self, x, y) -> float:
        """Accuracy of the current weights on host arrays `x` (uint8 rows) and `y`."""
        torch = self.torch
        with torch.no_grad():
            xt = torch.from_numpy(np.ascontiguousarray(x)).to(self.device).float() / 255.0
            pred = self.model(xt).argmax(1).cpu().numpy()
        return float(np.mean(pred == y))

    def _snapshot(self):
        """Copies of the weights, to undo the warm-up steps a capture needs."""
        return [p.detach().clone() for p in self.model.parameters()]

    def _restore(self, saved) -> None:
        """Put the weights back in place and zero the momentum (the same tensors)."""
        with self.torch.no_grad():
            for p, s in zip(self.model.parameters(), saved):
                p.copy_(s)
                buf = self.opt.state.get(p, {}).get("momentum_buffer")
                if buf is not None:
                    buf.zero_()


class TorchEager(_Torch):
    """PyTorch, the usual loop: one step after another from Python."""

    name = "torch eager"

    def epoch(self) -> tuple[float, int]:
        """Train one epoch in a fresh device-drawn order."""
        perm = self.torch.randperm(self.n, device=self.device)
        self.loss_sum.zero_()
        self.hits.zero_()
        for s in range(0, self.n, self.batch):
            self.opt.zero_grad(set_to_none=True)
            self._step(perm[s:s + self.batch])
        return self._result()


class TorchStepGraph(_Torch):
    """PyTorch with one training step captured as a CUDA graph, replayed once per step."""

    name = "torch step graph"

    def __init__(self, x, y, batch: int, seed: int = 0, device: str = "cuda"):
        super().__init__(x, y, batch, seed, device)
        torch = self.torch
        sizes = [batch] + ([self.n % batch] if self.n % batch else [])
        saved = self._snapshot()
        self.static_idx, self.graph = {}, {}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture, as PyTorch's docs require
            for size in sizes:
                idx = torch.arange(size, device=self.device)
                for _ in range(3):
                    self.opt.zero_grad(set_to_none=True)
                    self._step(idx)
        torch.cuda.current_stream().wait_stream(side)
        pool = None
        for size in sizes:
            self.static_idx[size] = torch.arange(size, device=self.device)
            g = torch.cuda.CUDAGraph()
            self.opt.zero_grad(set_to_none=True)
            with torch.cuda.graph(g, pool=pool):
                self._step(self.static_idx[size])
            pool = g.pool()
            self.graph[size] = g
        self._restore(saved)

    def epoch(self) -> tuple[float, int]:
        """Train one epoch: a device-drawn order, one graph replay per step."""
        perm = self.torch.randperm(self.n, device=self.device)
        self.loss_sum.zero_()
        self.hits.zero_()
        for s in range(0, self.n, self.batch):
            idx = perm[s:s + self.batch]
            self.static_idx[idx.shape[0]].copy_(idx)
            self.graph[idx.shape[0]].replay()
        return self._result()


class TorchEpochGraph(_Torch):
    """PyTorch with the whole epoch captured as one CUDA graph (`capture` False: eager).

    The graph reads the order from a static buffer, zeroes the sums, and runs every
    step; gradients are zeroed in place (``set_to_none=False``), so every step inside
    the capture reuses the same gradient tensors.
    """

    name = "torch epoch graph"

    def __init__(self, x, y, batch: int, seed: int = 0, device: str = "cuda",
                 capture: bool | None = None):
        super().__init__(x, y, batch, seed, device)
        torch = self.torch
        self.capture = self.device.type == "cuda" if capture is None else capture
        self.perm = torch.arange(self.n, device=self.device)
        saved = self._snapshot()
        if self.capture:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # creates the gradients and momentum buffers
                for _ in range(3):
                    self._body(steps=2)
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self._body()
        else:
            self._body(steps=1)  # the same warm-up, so both paths start alike
        self._restore(saved)

    def _body(self, steps: int | None = None) -> None:
        """The epoch as captured: zero the sums, then every step in `perm`'s order."""
        self.loss_sum.zero_()
        self.hits.zero_()
        starts = list(range(0, self.n, self.batch))[:steps]
        for s in starts:
            if any(p.grad is not None for p in self.model.parameters()):
                self.opt.zero_grad(set_to_none=False)
            self._step(self.perm[s:s + self.batch])

    def epoch(self) -> tuple[float, int]:
        """Draw the order on the device into the static buffer, then run the epoch."""
        torch = self.torch
        self.perm.copy_(torch.randperm(self.n, device=self.device))
        if self.capture:
            self.graph.replay()
        else:
            self._body()
        return self._result()


class TorchCompiled(_Torch):
    """PyTorch with ``torch.compile``: forward, loss and backward, and the optimizer step.

    Parameters
    ----------
    mode : str or None
        ``"max-autotune"`` or ``"reduce-overhead"`` (CUDA graphs), None for the default.
    backend : str
        ``"inductor"`` (the default); ``"eager"`` checks the tracing alone (CPU tests).
    """

    def __init__(self, x, y, batch: int, seed: int = 0, device: str = "cuda",
                 mode: str | None = "max-autotune", backend: str = "inductor"):
        super().__init__(x, y, batch, seed, device)
        torch = self.torch
        self.name = f"torch.compile {mode}"
        kw = {"backend": backend, "dynamic": False}  # the last, smaller batch: its own graph
        if backend == "inductor":
            kw["mode"] = mode
        self.forward = torch.compile(self._loss_and_hits, **kw)
        self.opt_step = torch.compile(self.opt.step, backend=backend, dynamic=False)
        # reduce-overhead replays CUDA graphs whose outputs the next replay overwrites:
        # each step is marked as a new one, its outputs read before the next
        mark = getattr(getattr(torch, "compiler", None), "cudagraph_mark_step_begin", None)
        self.mark_step = mark if mode == "reduce-overhead" and backend == "inductor" else None

    def _loss_and_hits(self, x, y, idx):
        """Mean loss and correct count of the samples `idx` (gather and scale inside)."""
        xb = x[idx].float() * (1.0 / 255.0)
        yb = y[idx]
        out = self.model(xb)
        return self.F.cross_entropy(out, yb), (out.argmax(1) == yb).sum()

    def epoch(self) -> tuple[float, int]:
        """Train one epoch in a fresh device-drawn order."""
        perm = self.torch.randperm(self.n, device=self.device)
        self.loss_sum.zero_()
        self.hits.zero_()
        for s in range(0, self.n, self.batch):
            idx = perm[s:s + self.batch]
            self.opt.zero_grad(set_to_none=True)
            if self.mark_step is not None:
                self.mark_step()
            loss, hits = self.forward(self.x, self.y, idx)
            loss.backward()
            self.opt_step()
            # read before the next call: reduce-overhead's graphs reuse output memory
            self.loss_sum += loss.detach() * idx.shape[0]
            self.hits += hits
        return self._result()


def command_buffer_flag(enabled: bool) -> str:
    """The value of XLA's ``xla_gpu_enable_command_buffer`` for `JaxScan`.

    On: XLA's default command types plus ``WHILE`` and ``CONDITIONAL``, so that a
    scan's loop runs on the device; off: empty, no command buffers at all.
    """
    if not enabled:
        return ""
    return "FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,CONDITIONAL"


class JaxScan:
    """JAX: one ``jit`` of a whole epoch, ``lax.scan`` over its batches.

    Parameters
    ----------
    command_buffers : bool or None
        Compile with XLA's command buffers including loops (True), with none (False),
        or with the installed version's defaults (None). Passed per compilation as
        ``compiler_options``, so both variants can live in one process.
    """

    def __init__(self, x, y, batch: int, seed: int = 0, device: str = "gpu",
                 command_buffers: bool | None = True):
        import jax
        import jax.numpy as jnp

        self.jax, self.jnp = jax, jnp
        self.name = {True: "jax scan, command buffers", False: "jax scan, no command buffers",
                     None: "jax scan"}[command_buffers]
        self.dev = jax.devices(device)[0]
        self.n, self.batch = len(y), batch
        rng = np.random.default_rng(seed)
        # PyTorch's Linear initialisation: uniform in +-1/sqrt(fan_in)
        a1, a2 = 1 / np.sqrt(N_IN), 1 / np.sqrt(N_HID)
        params = {"W1": rng.uniform(-a1, a1, (N_IN, N_HID)), "b1": rng.uniform(-a1, a1, N_HID),
                  "W2": rng.uniform(-a2, a2, (N_HID, N_OUT)), "b2": rng.uniform(-a2, a2, N_OUT)}
        put = lambda a: jax.device_put(a, self.dev)  # noqa: E731
        self.params = {k: put(v.astype(np.float32)) for k, v in params.items()}
        self.velocity = {k: put(np.zeros_like(v, np.float32)) for k, v in params.items()}
        self.x, self.y = put(np.ascontiguousarray(x)), put(y.astype(np.int32))
        self.key = jax.random.PRNGKey(seed)
        args = (self.params, self.velocity, self.key, self.x, self.y)
        lowered = jax.jit(self._epoch, donate_argnums=(0, 1)).lower(*args)
        options = None
        if command_buffers is not None:
            options = {"xla_gpu_enable_command_buffer": command_buffer_flag(command_buffers)}
        self.compiled = lowered.compile(compiler_options=options)
        self.forward = jax.jit(self._scores)

    def _scores(self, params, x):
        """The output scores of uint8 rows `x`."""
        jnp = self.jnp
        h = jnp.maximum(x.astype(jnp.float32) * (1.0 / 255.0) @ params["W1"] + params["b1"], 0)
        return h @ params["W2"] + params["b2"]

    def _loss(self, params, xb, yb):
        """Mean cross-entropy of a batch, and its correct count."""
        jax, jnp = self.jax, self.jnp
        z = self._scores(params, xb)
        logp = jax.nn.log_softmax(z)
        loss = -jnp.mean(jnp.take_along_axis(logp, yb[:, None], axis=1))
        return loss, jnp.sum(jnp.argmax(z, axis=1) == yb)

    def _step(self, carry, idx, x, y):
        """One SGD-momentum step (PyTorch's form: v <- mu v + g, p <- p - lr v)."""
        jax = self.jax
        params, velocity, loss_sum, hits = carry
        (loss, h), grads = jax.value_and_grad(self._loss, has_aux=True)(params, x[idx], y[idx])
        velocity = jax.tree_util.tree_map(lambda v, g: MOMENTUM * v + g, velocity, grads)
        params = jax.tree_util.tree_map(lambda p, v: p - LR * v, params, velocity)
        return (params, velocity, loss_sum + loss * idx.shape[0], hits + h), None

    def _epoch(self, params, velocity, key, x, y):
        """One epoch: the permutation, a scan over the full batches, then the rest."""
        jax, jnp = self.jax, self.jnp
        n, b = self.n, self.batch
        full = n // b
        perm = jax.random.permutation(key, n)
        carry = (params, velocity, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))
        step = lambda c, idx: self._step(c, idx, x, y)  # noqa: E731
        carry, _ = jax.lax.scan(step, carry, perm[:full * b].reshape(full, b))
        if n % b:
            carry, _ = step(carry, perm[full * b:])
        return carry

    def epoch(self) -> tuple[float, int]:
        """Train one epoch; a new key each epoch."""
        self.key, sub = self.jax.random.split(self.key)
        self.params, self.velocity, loss_sum, hits = self.compiled(
            self.params, self.velocity, sub, self.x, self.y)
        return float(loss_sum) / self.n, int(hits)

    def test_accuracy(self, x, y) -> float:
        """Accuracy of the current weights on host arrays `x` (uint8 rows) and `y`."""
        z = self.forward(self.params, self.jax.device_put(np.ascontiguousarray(x), self.dev))
        return float(np.mean(np.asarray(z).argmax(1) == y))
