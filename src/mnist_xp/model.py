"""The one-hidden-layer perceptron as pure functions of ``(params, x, xp)``.

Written once against the array API, so the same lines run on NumPy, CuPy and
array_api_strict. Parameters are a dict of four arrays::

    W1 (n_inputs, n_hidden)   b1 (n_hidden,)
    W2 (n_hidden, n_outputs)  b2 (n_outputs,)

The hidden layer is ReLU or sigmoid. The output layer and loss come as a pair:
``cross_entropy`` is softmax with cross-entropy, ``squared_error`` is sigmoid units
with half the squared distance to the one-hot target (the textbook network).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "Architecture",
    "check_network",
    "PARAM_NAMES",
    "ACTIVATIONS",
    "LOSSES",
    "init_params",
    "forward",
    "loss_and_grads",
    "probabilities",
    "one_hot",
]

PARAM_NAMES = ("W1", "b1", "W2", "b2")
ACTIVATIONS = ("relu", "sigmoid")
LOSSES = ("cross_entropy", "squared_error")


@dataclass(frozen=True)
class Architecture:
    """Layer sizes, hidden activation and output loss of the network."""

    n_inputs: int = 784
    n_hidden: int = 100
    n_outputs: int = 10
    activation: str = "relu"
    loss: str = "cross_entropy"

    def __post_init__(self):
        for name in ("n_inputs", "n_hidden", "n_outputs"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of each parameter array."""
        return {
            "W1": (self.n_inputs, self.n_hidden),
            "b1": (self.n_hidden,),
            "W2": (self.n_hidden, self.n_outputs),
            "b2": (self.n_outputs,),
        }

    @property
    def n_parameters(self) -> int:
        """Total number of weights and biases (79,510 for 784-100-10)."""
        return sum(int(np.prod(s)) for s in self.shapes.values())


def init_params(arch: Architecture, dtype, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw initial parameters on the host.

    Drawn with NumPy whatever the backend, so every backend starts from the same
    weights for the same seed. Weights are normal with standard deviation
    ``gain / sqrt(fan_in)`` (He for ReLU, gain sqrt(2); LeCun for sigmoid and the
    output layer, gain 1); biases are zero.

    Parameters
    ----------
    arch : Architecture
    dtype : numpy dtype
        float32 or float64.
    rng : numpy.random.Generator

    Returns
    -------
    dict of str to numpy.ndarray
        ``W1, b1, W2, b2`` with the shapes of ``arch.shapes`` and dtype `dtype`.
    """
    gain = np.sqrt(2.0) if arch.activation == "relu" else 1.0
    w1 = rng.standard_normal(arch.shapes["W1"]) * (gain / np.sqrt(arch.n_inputs))
    w2 = rng.standard_normal(arch.shapes["W2"]) * (1.0 / np.sqrt(arch.n_hidden))
    return {
        "W1": w1.astype(dtype),
        "b1": np.zeros(arch.n_hidden, dtype=dtype),
        "W2": w2.astype(dtype),
        "b2": np.zeros(arch.n_outputs, dtype=dtype),
    }


def _sigmoid(z, xp):
    # tanh form: never overflows, unlike 1 / (1 + exp(-z)) for z << 0.
    return 0.5 * xp.tanh(0.5 * z) + 0.5


def forward(params, x, arch: Architecture, xp):
    """Hidden activations and output scores (logits) for a batch.

    Parameters
    ----------
    params : dict of arrays
    x : array, shape (batch, n_inputs), float32 or float64
    arch : Architecture
    xp : array namespace

    Returns
    -------
    h : array, shape (batch, n_hidden)
    z : array, shape (batch, n_outputs)
        Pre-activation outputs; ``argmax(z)`` is the predicted class.
    """
    a = x @ params["W1"] + params["b1"]
    h = xp.maximum(a, 0.0) if arch.activation == "relu" else _sigmoid(a, xp)
    return h, h @ params["W2"] + params["b2"]


def probabilities(z, arch: Architecture, xp):
    """Class probabilities from output scores `z` of shape (batch, n_outputs).

    Softmax for cross-entropy networks; for squared-error networks the sigmoid
    outputs normalised to sum to one.
    """
    if arch.loss == "cross_entropy":
        e = xp.exp(z - xp.max(z, axis=1, keepdims=True))
    else:
        e = _sigmoid(z, xp)
    return e / xp.sum(e, axis=1, keepdims=True)


def one_hot(y, n_classes: int, dtype, xp):
    """(batch, n_classes) array of `dtype` with ones at the integer labels `y`."""
    return xp.astype(y[:, None] == xp.arange(n_classes, dtype=y.dtype), dtype)


def loss_and_grads(params, x, y, arch: Architecture, xp, label_smoothing: float = 0.0,
                   weights=None):
    """Loss, correct count and gradients of the mean loss for one batch.

    Parameters
    ----------
    params : dict of arrays
    x : array, shape (batch, n_inputs), float dtype of the parameters
    y : array, shape (batch,), integer class indices in ``[0, n_outputs)``
    arch : Architecture
    xp : array namespace
    label_smoothing : float
        The targets are ``(1 - label_smoothing)`` times the one-hot vector plus
        ``label_smoothing / n_outputs`` everywhere (Szegedy et al. 2016); 0 for one-hot.
    weights : array, shape (batch,), parameter dtype, optional
        Per-sample weights (``sample_weight`` times ``class_weight``): the loss is the
        weighted sum, and its mean is over the batch's total weight, so an integer
        weight k counts a sample as k copies of it.

    Returns
    -------
    loss_sum : 0-d array, parameter dtype
        The batch's summed (weighted) per-sample loss (divide by the batch size, or its
        total weight, for the mean).
    n_correct : 0-d array, integer
        How many argmax predictions equal `y`.
    grads : dict of arrays
        Gradient of the *mean* loss, same keys, shapes and dtype as `params`.
    """
    n = x.shape[0]
    h, z = forward(params, x, arch, xp)
    target = one_hot(y, arch.n_outputs, z.dtype, xp)
    if label_smoothing:
        target = target * (1.0 - label_smoothing) + label_smoothing / arch.n_outputs
    n_correct = xp.sum(xp.astype(xp.argmax(z, axis=1) == y, xp.int32))
    if arch.loss == "cross_entropy":
        shifted = z - xp.max(z, axis=1, keepdims=True)
        e = xp.exp(shifted)
        s = xp.sum(e, axis=1, keepdims=True)
        terms = -(target * (shifted - xp.log(s)))  # (batch, classes); a sample's loss is its row sum
        dz = e / s - target
    else:
        out = _sigmoid(z, xp)
        diff = out - target
        terms = 0.5 * (diff * diff)
        dz = diff * out * (1.0 - out)
    if weights is None:
        loss_sum = xp.sum(terms)
        dz = dz * (1.0 / n)
    else:
        loss_sum = xp.sum(weights * xp.sum(terms, axis=1))
        # an all-zero-weight batch moves nothing (and divides nothing by zero)
        total = xp.maximum(xp.sum(weights), xp.asarray(1e-30, dtype=weights.dtype))
        dz = dz * xp.reshape(weights / total, (-1, 1))
    dh = dz @ params["W2"].T
    if arch.activation == "relu":
        da = dh * xp.astype(h > 0.0, dh.dtype)
    else:
        da = dh * h * (1.0 - h)
    grads = {
        "W1": x.T @ da,
        "b1": xp.sum(da, axis=0),
        "W2": h.T @ dz,
        "b2": xp.sum(dz, axis=0),
    }
    return loss_sum, n_correct, grads


def check_network(arrays: dict, classes: np.ndarray, arch: Architecture, dtype: str) -> None:
    """Check that parameter arrays and class labels are those of `arch` in `dtype`.

    The one check of a stored network, shared by the model-file reader and the
    checkpoint reader, so both accept and refuse the same files.

    Parameters
    ----------
    arrays : dict of str to numpy.ndarray
        ``W1, b1, W2, b2``; anything with ``shape`` and ``dtype`` (an array's header)
        is checked for those only, so a file can be refused before its data is read.
    classes : numpy.ndarray
        The class labels, one per output.
    arch : Architecture
    dtype : str
        The recorded float type: ``float32`` or ``float64``.

    Raises
    ------
    ValueError
        A wrong dtype, shape, a NaN or infinity, or labels that do not fit; the
        message is one phrase, for the caller to prefix with the file.
    """
    if dtype not in ("float32", "float64"):
        raise ValueError(f"unsupported dtype {dtype!r} in metadata")
    for name, shape in arch.shapes.items():
        a = arrays[name]
        if a.shape != shape or a.dtype != np.dtype(dtype):
            raise ValueError(f"array {name} is {a.dtype}{list(a.shape)}, metadata says "
                             f"{dtype}{list(shape)}")
        if isinstance(a, np.ndarray) and not np.all(np.isfinite(a)):
            raise ValueError(f"array {name} holds NaN or infinite values")
    if classes.shape != (arch.n_outputs,) or classes.dtype.kind not in "biuU":
        raise ValueError(f"classes should be {arch.n_outputs} labels, "
                         f"got {classes.dtype}{list(classes.shape)}")
