"""Optimizers: parameter updates applied in place on the backend's arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SGD", "Adam", "OPTIMIZERS", "make_optimizer", "state_to_host", "state_from_host"]

#: Names accepted by `make_optimizer` (and ``--optimizer``).
OPTIMIZERS = ("sgd", "nesterov", "adam", "adamw")


@dataclass(frozen=True)
class SGD:
    """Minibatch stochastic gradient descent with optional (Nesterov) momentum.

    With momentum ``mu`` and learning rate ``lr`` the velocity ``v`` and parameter
    ``p`` follow ``v <- mu * v - lr * g`` and ``p <- p + v`` (Nesterov:
    ``p <- p + mu * v - lr * g``, with the new ``v``). ``momentum=0`` is plain SGD.
    ``weight_decay`` adds ``weight_decay * p`` to the gradient of the weight matrices
    (an L2 penalty; biases are not decayed).
    """

    learning_rate: float
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0

    def __post_init__(self):
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs a momentum > 0")

    @property
    def name(self) -> str:
        """The `OPTIMIZERS` name this optimizer goes by (``sgd`` or ``nesterov``)."""
        return "nesterov" if self.nesterov else "sgd"

    def init_state(self, params, xp) -> dict:
        """Velocity buffers: zeros like each parameter (empty for plain SGD)."""
        if self.momentum == 0:
            return {}
        return {k: xp.zeros_like(p) for k, p in params.items()}

    def step(self, params, grads, state, learning_rate: float | None = None) -> None:
        """Update `params` (and `state`) in place from `grads` (same keys and shapes).

        `learning_rate` overrides the configured one for this step (for schedules).
        """
        lr = float(self.learning_rate if learning_rate is None else learning_rate)
        mu, wd = float(self.momentum), float(self.weight_decay)
        for k, p in params.items():
            g = grads[k]
            if wd and p.ndim == 2:
                g = g + wd * p
            if mu == 0:
                p -= lr * g
                continue
            v = state[k]
            v *= mu
            v -= lr * g
            if self.nesterov:
                p += mu * v - lr * g
            else:
                p += v


@dataclass(frozen=True)
class Adam:
    """Adam (Kingma & Ba 2015), or AdamW with ``decoupled=True`` (Loshchilov & Hutter 2019).

    With gradient ``g`` at step ``t`` (from 1): ``m <- b1 m + (1 - b1) g``,
    ``v <- b2 v + (1 - b2) g^2``, ``p <- p - lr * m_hat / (sqrt(v_hat) + eps)`` with the
    bias-corrected ``m_hat = m / (1 - b1^t)``, ``v_hat = v / (1 - b2^t)``.
    ``weight_decay`` on the weight matrices (not biases) is added to the gradient (Adam,
    an L2 penalty) or, decoupled, applied as ``p <- p - lr * weight_decay * p`` (AdamW).
    """

    learning_rate: float
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    decoupled: bool = False

    def __post_init__(self):
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0, got {self.eps!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")

    @property
    def name(self) -> str:
        """The `OPTIMIZERS` name this optimizer goes by (``adam`` or ``adamw``)."""
        return "adamw" if self.decoupled else "adam"

    def init_state(self, params, xp) -> dict:
        """First and second moment buffers (zeros like each parameter) and the step count."""
        return {"t": 0, "m": {k: xp.zeros_like(p) for k, p in params.items()},
                "v": {k: xp.zeros_like(p) for k, p in params.items()}}

    def step(self, params, grads, state, learning_rate: float | None = None) -> None:
        """Update `params` (and `state`) in place from `grads` (same keys and shapes)."""
        lr = float(self.learning_rate if learning_rate is None else learning_rate)
        b1, b2, wd = float(self.beta1), float(self.beta2), float(self.weight_decay)
        state["t"] += 1
        t = state["t"]
        # bias corrections folded into the step size and epsilon (host scalars)
        c1, c2 = 1.0 - b1 ** t, 1.0 - b2 ** t
        step_size = lr * (c2 ** 0.5) / c1
        eps = self.eps * (c2 ** 0.5)
        xp = _namespace(params)
        for k, p in params.items():
            g = grads[k]
            if wd and p.ndim == 2:
                if self.decoupled:
                    p -= (lr * wd) * p
                else:
                    g = g + wd * p
            m, v = state["m"][k], state["v"][k]
            m *= b1
            m += (1.0 - b1) * g
            v *= b2
            v += (1.0 - b2) * (g * g)
            p -= step_size * m / (xp.sqrt(v) + eps)


def _namespace(params):
    """The array namespace of the parameters (NumPy, CuPy or array_api_strict)."""
    a = next(iter(params.values()))
    if hasattr(a, "__array_namespace__"):
        return a.__array_namespace__()
    import numpy

    return numpy


def make_optimizer(name: str, learning_rate: float, *, momentum: float = 0.9,
                   weight_decay: float = 0.0, beta1: float = 0.9, beta2: float = 0.999):
    """The optimizer called `name` (one of `OPTIMIZERS`).

    ``sgd`` is SGD with `momentum` (0 for plain SGD), ``nesterov`` SGD with Nesterov
    momentum, ``adam`` Adam with L2 `weight_decay`, ``adamw`` Adam with decoupled weight
    decay.
    """
    if name == "sgd":
        return SGD(learning_rate, momentum, weight_decay=weight_decay)
    if name == "nesterov":
        return SGD(learning_rate, momentum, nesterov=True, weight_decay=weight_decay)
    if name in ("adam", "adamw"):
        return Adam(learning_rate, beta1, beta2, weight_decay=weight_decay,
                    decoupled=name == "adamw")
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def state_to_host(state: dict, backend) -> dict[str, np.ndarray]:
    """An optimizer's state (`SGD.init_state` / `Adam.init_state`) as flat host arrays.

    Keys are ``velocity/W1``... for SGD, ``m/W1``, ``v/W1``... and ``t`` for Adam: the
    layout checkpoints store, whichever engine trained.
    """
    flat = {}
    for key, value in state.items():
        if isinstance(value, dict):
            flat.update({f"{key}/{k}": backend.to_numpy(v).copy() for k, v in value.items()})
        elif key == "t":
            flat["t"] = np.array(value, dtype=np.int64)
        else:  # SGD: velocity per parameter
            flat[f"velocity/{key}"] = backend.to_numpy(value).copy()
    return flat


def state_from_host(state: dict, flat: dict[str, np.ndarray], backend) -> None:
    """Fill an optimizer's `state` in place from `state_to_host`'s arrays."""
    for key in list(state):
        value = state[key]
        if isinstance(value, dict):
            for k, v in value.items():
                v[...] = backend.asarray(flat[f"{key}/{k}"])
        elif key == "t":
            state["t"] = int(flat["t"])
        else:
            value[...] = backend.asarray(flat[f"velocity/{key}"])
