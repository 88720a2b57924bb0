"""The one-hidden-layer perceptron as pure functions of ``(params, x, xp)``.

Written once against the array API, so the same lines run on NumPy, CuPy and
array_api_strict. Parameters are a dict of arrays, two per weight layer; for the
default one-hidden-layer network::

    W1 (n_inputs, n_hidden)   b1 (n_hidden,)
    W2 (n_hidden, n_outputs)  b2 (n_outputs,)

and for a deeper one (``n_hidden=(800, 800)``) ``W1 b1 W2 b2 W3 b3``. The hidden
layers are ReLU or sigmoid, optionally with dropout. The output layer and loss come as a pair:
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
    "ALL_PARAM_NAMES",
    "MAX_HIDDEN_LAYERS",
    "ACTIVATIONS",
    "LOSSES",
    "init_params",
    "forward",
    "dropout_mask",
    "soft_targets",
    "distillation_terms",
    "loss_and_grads",
    "probabilities",
    "one_hot",
]

PARAM_NAMES = ("W1", "b1", "W2", "b2")
#: Hidden layers a network may have (``n_hidden=(800, 800)`` has two).
MAX_HIDDEN_LAYERS = 8
#: Every parameter name a network of up to `MAX_HIDDEN_LAYERS` hidden layers can have.
ALL_PARAM_NAMES = tuple(f"{p}{i}" for i in range(1, MAX_HIDDEN_LAYERS + 2) for p in ("W", "b"))
ACTIVATIONS = ("relu", "sigmoid")
LOSSES = ("cross_entropy", "squared_error")


def _hidden_tuple(n_hidden) -> tuple:
    """`n_hidden` (an int, or a sequence of ints for several layers) as a tuple."""
    if isinstance(n_hidden, (int, np.integer)) and not isinstance(n_hidden, bool):
        return (int(n_hidden),)
    if isinstance(n_hidden, np.ndarray) and n_hidden.ndim == 1:
        n_hidden = n_hidden.tolist()
    if isinstance(n_hidden, (tuple, list)) and len(n_hidden):
        return tuple(n_hidden)
    raise ValueError(f"n_hidden must be a positive integer or a non-empty sequence of them, "
                     f"got {n_hidden!r}")


@dataclass(frozen=True)
class Architecture:
    """Layer sizes, hidden activation and output loss of the network.

    ``n_hidden`` is the width of the one hidden layer (an int), or a tuple of widths for
    a deeper network: ``(800, 800)`` is 784-800-800-10. A one-element sequence is
    stored as an int, so ``Architecture(784, [100], 10)`` is the default network.
    """

    n_inputs: int = 784
    n_hidden: int | tuple = 100
    n_outputs: int = 10
    activation: str = "relu"
    loss: str = "cross_entropy"

    def __post_init__(self):
        hidden = _hidden_tuple(self.n_hidden)
        object.__setattr__(self, "n_hidden", hidden[0] if len(hidden) == 1 else hidden)
        if len(hidden) > MAX_HIDDEN_LAYERS:
            raise ValueError(f"at most {MAX_HIDDEN_LAYERS} hidden layers, got {len(hidden)}")
        for name, value in (("n_inputs", self.n_inputs), ("n_outputs", self.n_outputs),
                            *(("n_hidden", h) for h in hidden)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        """The width of each hidden layer, input side first."""
        return _hidden_tuple(self.n_hidden)

    @property
    def n_layers(self) -> int:
        """Weight layers: the hidden layers plus the output layer (2 for 784-100-10)."""
        return len(self.hidden_sizes) + 1

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """Every layer's width, inputs to outputs: ``(784, 100, 10)``."""
        return (self.n_inputs, *self.hidden_sizes, self.n_outputs)

    @property
    def param_names(self) -> tuple[str, ...]:
        """``W1, b1, ..., W{L}, b{L}`` for ``L = n_layers`` (`PARAM_NAMES` for one hidden layer)."""
        return tuple(f"{p}{i}" for i in range(1, self.n_layers + 1) for p in ("W", "b"))

    @property
    def label(self) -> str:
        """The layer sizes joined by dashes: ``784-100-10``."""
        return "-".join(str(n) for n in self.layer_sizes)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of each parameter array: ``W{i}`` is (fan-in, fan-out), ``b{i}`` (fan-out,)."""
        sizes, out = self.layer_sizes, {}
        for i in range(1, self.n_layers + 1):
            out[f"W{i}"] = (sizes[i - 1], sizes[i])
            out[f"b{i}"] = (sizes[i],)
        return out

    @property
    def n_parameters(self) -> int:
        """Total number of weights and biases (79,510 for 784-100-10)."""
        return sum(int(np.prod(s)) for s in self.shapes.values())


def init_params(arch: Architecture, dtype, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Draw initial parameters on the host.

    Drawn with NumPy whatever the backend, so every backend starts from the same
    weights for the same seed. Weights are normal with standard deviation
    ``gain / sqrt(fan_in)`` (He for ReLU, gain sqrt(2); LeCun for sigmoid and the
    output layer, gain 1); biases are zero. Layers are drawn input side first, so a
    one-hidden-layer network gets the same weights as before deeper ones existed.

    Parameters
    ----------
    arch : Architecture
    dtype : numpy dtype
        float32 or float64.
    rng : numpy.random.Generator

    Returns
    -------
    dict of str to numpy.ndarray
        ``W1, b1, ...`` (`Architecture.param_names`) with the shapes of ``arch.shapes``
        and dtype `dtype`.
    """
    gain = np.sqrt(2.0) if arch.activation == "relu" else 1.0
    out = {}
    for i in range(1, arch.n_layers + 1):
        fan_in, fan_out = arch.shapes[f"W{i}"]
        g = 1.0 if i == arch.n_layers else gain
        out[f"W{i}"] = (rng.standard_normal((fan_in, fan_out)) * (g / np.sqrt(fan_in))).astype(dtype)
        out[f"b{i}"] = np.zeros(fan_out, dtype=dtype)
    # the one-hidden-layer order of keys, as before: W1, b1, W2, b2
    return {k: out[k] for k in arch.param_names}


def _sigmoid(z, xp):
    # tanh form: never overflows, unlike 1 / (1 + exp(-z)) for z << 0.
    return 0.5 * xp.tanh(0.5 * z) + 0.5


def _activate(a, arch: Architecture, xp):
    return xp.maximum(a, 0.0) if arch.activation == "relu" else _sigmoid(a, xp)


def dropout_mask(key: int, step: int, layer: int, shape: tuple[int, int], rate: float, xp):
    """The inverted-dropout multiplier of one hidden layer at one step: 0 or ``1/(1-rate)``.

    Counter-based (MurmurHash3's 32-bit finaliser over ``(key, step, layer, element)``),
    so every backend draws the same mask for the same numbers, a run resumes exactly, and
    no generator state lives on the device (Srivastava et al. 2014 for dropout; Salmon et
    al. 2011 for counter-based random numbers).

    Parameters
    ----------
    key : int
        The epoch's dropout key, drawn on the host (0 <= key < 2**32).
    step, layer : int
        The step in the epoch and the hidden layer (from 1).
    shape : (batch, width)
    rate : float
        The probability of dropping a unit, in (0, 1).
    xp : array namespace

    Returns
    -------
    array of `shape`, float32
        Multiply the hidden activations by it (and their gradients).
    """
    u32 = xp.uint32
    seed = (int(key) * 0x9E3779B1 + step * 0x85EBCA77 + layer * 0xC2B2AE3D) & 0xFFFFFFFF
    x = xp.reshape(xp.arange(shape[0] * shape[1], dtype=u32), shape)
    x = x ^ xp.asarray(seed, dtype=u32)
    x = x ^ (x >> 16)
    x = x * xp.asarray(0x85EBCA6B, dtype=u32)
    x = x ^ (x >> 13)
    x = x * xp.asarray(0xC2B2AE35, dtype=u32)
    x = x ^ (x >> 16)
    threshold = xp.asarray(min(int(rate * 2.0 ** 32), 0xFFFFFFFF), dtype=u32)
    return xp.astype(x >= threshold, xp.float32) * (1.0 / (1.0 - rate))


def forward(params, x, arch: Architecture, xp, masks=None):
    """Hidden activations and output scores (logits) for a batch.

    Parameters
    ----------
    params : dict of arrays
    x : array, shape (batch, n_inputs), float32 or float64
    arch : Architecture
    xp : array namespace
    masks : list of arrays, optional
        One dropout multiplier per hidden layer (`dropout_mask`), applied to its
        activations; None for none (evaluation).

    Returns
    -------
    h : array, shape (batch, last hidden width)
        The last hidden layer's activations (after dropout).
    z : array, shape (batch, n_outputs)
        Pre-activation outputs; ``argmax(z)`` is the predicted class.
    """
    hs = _hidden_layers(params, x, arch, xp, masks)
    last = arch.n_layers
    return hs[-1], hs[-1] @ params[f"W{last}"] + params[f"b{last}"]


def _hidden_layers(params, x, arch: Architecture, xp, masks=None) -> list:
    """Every hidden layer's activations (dropout applied), input side first."""
    hs, h = [], x
    for i in range(1, arch.n_layers):
        h = _activate(h @ params[f"W{i}"] + params[f"b{i}"], arch, xp)
        if masks is not None:
            h = h * xp.astype(masks[i - 1], h.dtype)
        hs.append(h)
    return hs


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


def soft_targets(logits, temperature: float, xp):
    """``softmax(logits / temperature)`` row by row: a teacher's soft targets.

    Parameters
    ----------
    logits : array, shape (batch, n_classes), float
    temperature : float
        Above 1 spreads the probability over the wrong classes (Hinton et al. 2015).
    xp : array namespace

    Returns
    -------
    array, shape (batch, n_classes), the dtype of `logits`; rows sum to one.
    """
    z = logits * (1.0 / temperature)
    e = xp.exp(z - xp.max(z, axis=1, keepdims=True))
    return e / xp.sum(e, axis=1, keepdims=True)


def distillation_terms(z, soft, temperature: float, xp):
    """The soft targets' loss terms of a batch and their gradient in the logits.

    Parameters
    ----------
    z : array, shape (batch, n_classes), float
        The student's logits.
    soft : array, shape (batch, n_classes), the dtype of `z`
        The teacher's soft targets at `temperature` (`soft_targets`).
    temperature : float
    xp : array namespace

    Returns
    -------
    terms : array, shape (batch, n_classes)
        ``soft * (log soft - log softmax(z / T))``: a row sums to ``KL(soft ||
        softmax(z / T))``, the cross-entropy less the soft targets' own entropy, so a
        student that matches its teacher scores 0 (same gradient as the cross-entropy).
    dz : array, shape (batch, n_classes)
        The gradient of the row sums in `z`: ``(softmax(z / T) - soft) / T``.
    """
    t = float(temperature)
    zt = z * (1.0 / t)
    shifted = zt - xp.max(zt, axis=1, keepdims=True)
    e = xp.exp(shifted)
    s = xp.sum(e, axis=1, keepdims=True)
    own = xp.where(soft > 0, soft * xp.log(xp.where(soft > 0, soft, 1.0)), 0.0)
    return own - soft * (shifted - xp.log(s)), (e / s - soft) * (1.0 / t)


def one_hot(y, n_classes: int, dtype, xp):
    """(batch, n_classes) array of `dtype` with ones at the integer labels `y`."""
    return xp.astype(y[:, None] == xp.arange(n_classes, dtype=y.dtype), dtype)


def loss_and_grads(params, x, y, arch: Architecture, xp, label_smoothing: float = 0.0,
                   weights=None, masks=None, soft=None, temperature: float = 1.0,
                   distill_weight: float = 0.0):
    """Loss, correct count and gradients of the mean loss for one batch.

    With a teacher (`soft`), the loss of a sample is Hinton, Vinyals & Dean's (2015)
    distillation loss: ``(1 - a) * CE(target, softmax(z)) + a * T**2 * KL(soft ||
    softmax(z / T))`` with ``a = distill_weight`` and ``T = temperature``; the ``T**2``
    keeps the soft term's gradient on the scale of the hard one's. (KL is the
    cross-entropy with the soft targets less their entropy: the same gradient, and 0
    when the student matches its teacher.)

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
    masks : list of arrays, optional
        Dropout multipliers, one per hidden layer (see `dropout_mask`).
    soft : array, shape (batch, n_outputs), parameter dtype, optional
        The teacher's soft targets at `temperature` (`soft_targets`); cross-entropy
        networks only.
    temperature : float
    distill_weight : float
        In [0, 1]: the soft term's share of the loss.

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
    hs = _hidden_layers(params, x, arch, xp, masks)
    last = arch.n_layers
    z = hs[-1] @ params[f"W{last}"] + params[f"b{last}"]
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
        if soft is not None:
            a, t = float(distill_weight), float(temperature)
            soft_terms, soft_dz = distillation_terms(z, soft, t, xp)
            terms = (1.0 - a) * terms + (a * t * t) * soft_terms
            dz = (1.0 - a) * dz + (a * t * t) * soft_dz
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
    grads = {}
    delta = dz
    for i in range(last, 0, -1):
        below = hs[i - 2] if i >= 2 else x
        grads[f"W{i}"] = below.T @ delta
        grads[f"b{i}"] = xp.sum(delta, axis=0)
        if i == 1:
            break
        dh = delta @ params[f"W{i}"].T
        h = hs[i - 2]
        if masks is not None:
            m = xp.astype(masks[i - 2], h.dtype)
            dh = dh * m
            # the slope needs the unit's own output, before dropout's scale
            h = h / xp.where(m > 0, m, xp.ones_like(m)) if arch.activation == "sigmoid" else h
        if arch.activation == "relu":
            delta = dh * xp.astype(h > 0.0, dh.dtype)
        else:
            delta = dh * h * (1.0 - h)
    return loss_sum, n_correct, {k: grads[k] for k in arch.param_names}


def check_network(arrays: dict, classes: np.ndarray, arch: Architecture, dtype: str) -> None:
    """Check that parameter arrays and class labels are those of `arch` in `dtype`.

    The one check of a stored network, shared by the model-file reader and the
    checkpoint reader, so both accept and refuse the same files.

    Parameters
    ----------
    arrays : dict of str to numpy.ndarray
        ``W1, b1, W2, b2`` (more for a deeper network), exactly ``arch.param_names``; anything with ``shape`` and ``dtype`` (an array's header)
        is checked for those only, so a file can be refused before its data is read.
    classes : numpy.ndarray
        The class labels, one per output.
    arch : Architecture
    dtype : str
        The recorded float type: ``float32`` or ``float64``.

    Raises
    ------
    ValueError
        A missing or extra array, a wrong dtype, shape, a NaN or infinity, or labels
        that do not fit; the
        message is one phrase, for the caller to prefix with the file.
    """
    if dtype not in ("float32", "float64"):
        raise ValueError(f"unsupported dtype {dtype!r} in metadata")
    shapes = arch.shapes
    extra = sorted(set(arrays) - set(shapes))
    if extra:
        raise ValueError(f"array {extra[0]} is not part of a {arch.label} network")
    for name, shape in shapes.items():
        if name not in arrays:
            raise ValueError(f"array {name} is missing for a {arch.label} network")
        a = arrays[name]
        if a.shape != shape or a.dtype != np.dtype(dtype):
            raise ValueError(f"array {name} is {a.dtype}{list(a.shape)}, metadata says "
                             f"{dtype}{list(shape)}")
        if isinstance(a, np.ndarray) and not np.all(np.isfinite(a)):
            raise ValueError(f"array {name} holds NaN or infinite values")
    if classes.shape != (arch.n_outputs,) or classes.dtype.kind not in "biuU":
        raise ValueError(f"classes should be {arch.n_outputs} labels, "
                         f"got {classes.dtype}{list(classes.shape)}")
