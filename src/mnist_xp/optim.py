"""Optimizers: parameter updates applied in place on the backend's arrays."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SGD"]


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
