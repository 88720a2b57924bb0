"""The fused CUDA training step: its instantiation from ``cuda_kernels.cu``, and when it applies.

One training step is three kernels, each fusing what the generic path does in many:

``hidden_partial``
    gathers the batch's rows from the uint8 dataset through the epoch's order, moves
    them by the batch's shift (or each image through its own warp), converts and
    scales them (kept in ``xbuf`` for the weight gradient), and computes partial sums
    of ``x @ W1`` over slices of the inputs (split-K: a grid of (row blocks, input
    slices) keeps the GPU busy at small batches, and the slices are summed in a fixed
    order, so results are deterministic). It also zeroes the step's loss counter (and,
    at step 0, the epoch's hit counter), so an epoch is nothing but kernel launches,
    and with sample weights sums the batch's total weight (in a fixed order).
``output_backward``
    one warp per sample: sums the slices, adds ``b1`` and applies the activation
    (stores ``h``), computes the output scores, the loss (targets smoothed by the
    label smoothing; each sample's share of the mean 1/rows, or its weight over the
    batch's total), the hit and the output gradient ``dz``, then back-propagates to
    ``dh``. Each sample's loss is added to its
    step's counter and its hit to the epoch's (read once per epoch; the per-step losses
    say where a diverging run first went wrong).
``grads_update``
    the weight gradients (``xbuf.T @ dh`` as 32x32 tiles; ``h.T @ dz`` and the bias
    sums one warp per row, lanes striding over the batch and reduced by shuffles; all
    summed in a fixed order) with the optimizer's update applied in the same kernel
    (SGD with classical or Nesterov momentum, or Adam/AdamW: Kingma & Ba 2015,
    Loshchilov & Hutter 2019, with the bias corrections of each step computed on the
    host): no gradient ever goes to device memory.

No cuBLAS and no cuRAND are called, so the whole epoch can be captured as one CUDA
graph (CuPy refuses cuBLAS calls during stream capture). The arithmetic matches
`mnist_xp.model.loss_and_grads`, `mnist_xp.optim.SGD.step` and `mnist_xp.optim.Adam.step`
up to float rounding.

The CUDA C is in ``cuda_kernels.cu`` beside this module, read at run time; this module
holds the instantiation (the ``#define`` table) and the rules. It needs no GPU, so the
CPU test suite renders every variant and, where NVRTC is installed, compiles it.
"""

from __future__ import annotations

import functools
from importlib import resources

import numpy as np

from ...model import Architecture

__all__ = [
    "KERNEL_NAMES",
    "K_SLICE",
    "MAX_OUTPUTS",
    "ROWS_A",
    "THREADS_A",
    "THREADS_B",
    "THREADS_C",
    "TILE",
    "kernel_source",
    "launch_shapes",
    "unsupported_reason",
]

KERNEL_NAMES = ("hidden_partial", "output_backward", "grads_update")
ROWS_A = 8  # rows of the batch per hidden_partial block
K_SLICE = 56  # inputs per split-K slice (784 = 14 slices)
K_GROUP = 14  # weight loads in flight together within a slice
THREADS_A = 128
THREADS_B = 128  # 4 warps: 4 samples per block
THREADS_C = 256  # 8 warps: a 32x32 tile, 4 outputs per thread
TILE = 32
MAX_OUTPUTS = 64  # the output scores of a sample live in registers

_REAL = {np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
_PIXEL = {np.dtype(np.uint8): "unsigned char"}

# The kernels' CUDA C lives beside this module; it is read once, when first rendered.
_SOURCE_FILE = "cuda_kernels.cu"


def kernel_source(arch: Architecture, dtype, pixel_dtype, side: int = 0,
                  warp: bool = False) -> str:
    """The CUDA C source of the three step kernels, specialised by `#define`.

    Parameters
    ----------
    arch : Architecture
    dtype : float32 or float64
        The parameters' dtype (``real`` in the kernels).
    pixel_dtype : uint8, or the same as `dtype`
        The dtype of the device-resident inputs.
    side : int
        Image side when batches are shifted (the inputs are ``side * side`` images);
        0 compiles the shift out.
    warp : bool
        Whether each image is gathered through its own warp (`mnist_xp.augment.RandomWarp`
        index tables); not with `side`.

    Returns
    -------
    str
    """
    real = _REAL[np.dtype(dtype)]
    pixel = _PIXEL.get(np.dtype(pixel_dtype)) or _REAL[np.dtype(pixel_dtype)]
    defines = {
        "N_IN": arch.n_inputs, "N_HID": arch.n_hidden, "N_OUT": arch.n_outputs,
        "SIDE": side, "WARP": int(warp), "ACT_RELU": int(arch.activation == "relu"),
        "LOSS_CE": int(arch.loss == "cross_entropy"), "ROWS_A": ROWS_A, "K_SLICE": K_SLICE,
        "K_GROUP": K_GROUP,
        "THREADS_A": THREADS_A, "THREADS_B": THREADS_B, "THREADS_C": THREADS_C, "TILE": TILE,
    }
    head = [f"typedef {real} real;", f"typedef {pixel} in_t;"]
    head += [f"#define {k} {int(v)}" for k, v in defines.items()]
    return "\n".join(head) + "\n" + _body()


@functools.cache
def _body() -> str:
    """The kernels' CUDA C, as shipped in the package."""
    return (resources.files(__package__) / _SOURCE_FILE).read_text(encoding="utf-8")


def unsupported_reason(arch: Architecture, dtype, pixel_dtype, side: int = 0) -> str | None:
    """Why the fused kernels cannot train this configuration, or None when they can."""
    dtype, pixel_dtype = np.dtype(dtype), np.dtype(pixel_dtype)
    if dtype not in _REAL:
        return f"parameters of dtype {dtype} (float32 or float64 only)"
    if pixel_dtype != np.uint8 and pixel_dtype != dtype:
        return f"inputs of dtype {pixel_dtype} with {dtype} parameters"
    if arch.n_outputs > MAX_OUTPUTS:
        return f"{arch.n_outputs} outputs (at most {MAX_OUTPUTS})"
    if side and side * side != arch.n_inputs:
        return f"shifts of {side}x{side} images with {arch.n_inputs} inputs"
    return None


def launch_shapes(arch: Architecture, rows: int) -> dict[str, tuple[int, ...]]:
    """Grid shape of each kernel for a batch of `rows` samples (blocks per axis)."""
    n_split = -(-arch.n_inputs // K_SLICE)
    w1_tiles = -(-arch.n_inputs // TILE) * -(-arch.n_hidden // TILE)
    small_warps = arch.n_hidden + 1  # a W2 row and b1 entry each, then b2
    return {
        "hidden_partial": (-(-rows // ROWS_A), n_split),
        "output_backward": (-(-rows * 32 // THREADS_B),),
        "grads_update": (w1_tiles + -(-small_warps * 32 // THREADS_C),),
    }
