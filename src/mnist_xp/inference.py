"""Forward passes over whole data sets on the device, in large batches: scores and hit counts.

Training scores its validation and test sets with these after every epoch, and the
estimator predicts with them, so a saved model and the run that trained it agree
exactly.
"""

from __future__ import annotations

from .backend import Backend
from .model import Architecture, forward
from .pixels import as_float_batch, input_scale

__all__ = ["EVAL_BATCH_SIZE", "predict_scores", "count_correct"]

# Large enough to keep the BLAS busy, small enough to bound the (batch, hidden)
# temporaries; evaluation everywhere uses it, so saved and live models agree exactly.
EVAL_BATCH_SIZE = 2048


def _batched_scores(params, x, arch: Architecture, dtype, backend: Backend, batch_size: int):
    """Yield (start, stop, scores) for consecutive row blocks of `x`."""
    xp = backend.xp
    scale = input_scale(x, xp)
    for i in range(0, x.shape[0], batch_size):
        j = min(i + batch_size, x.shape[0])
        yield i, j, forward(params, as_float_batch(x[i:j, ...], dtype, scale, xp), arch, xp)[1]


def predict_scores(params, x, arch: Architecture, dtype, backend: Backend,
                   batch_size: int = EVAL_BATCH_SIZE):
    """Output scores (logits) for every row of `x`.

    Parameters
    ----------
    params : dict of device arrays
    x : device array, shape (n, n_inputs), uint8 pixels or float `dtype`
    arch : Architecture
    dtype : float dtype of the parameters (a dtype of ``backend.xp``)
    backend : Backend
    batch_size : int

    Returns
    -------
    device array, shape (n, n_outputs), `dtype`
    """
    chunks = [z for _, _, z in _batched_scores(params, x, arch, dtype, backend, batch_size)]
    return chunks[0] if len(chunks) == 1 else backend.xp.concat(chunks, axis=0)


def count_correct(params, x, y, arch: Architecture, dtype, backend: Backend,
                  batch_size: int = EVAL_BATCH_SIZE):
    """How many rows of `x` have the class index `y` as their argmax: a device 0-d int64.

    Parameters
    ----------
    params : dict of device arrays
    x : device array, shape (n, n_inputs)
    y : device array, shape (n,), int64 class indices
    arch, dtype, backend, batch_size
        As for `predict_scores`.
    """
    xp = backend.xp
    correct = xp.zeros((), dtype=xp.int64)
    for i, j, z in _batched_scores(params, x, arch, dtype, backend, batch_size):
        correct += xp.sum(xp.astype(xp.argmax(z, axis=1) == y[i:j], xp.int64))
    return correct
