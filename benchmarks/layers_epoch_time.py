"""Epoch time of a deep network on the CPU: the generic engine against the layered NumPy one.

Both engines train 784-800-800-10 (or ``--hidden``; ReLU, softmax cross-entropy,
float32, SGD with momentum 0.9 at lr 0.01) on the same random uint8 images, batch 128
(or ``--batch-size``), from the same weights; they take turns, one epoch each per round, so the machine's drift in speed
hits both alike. Printed: every epoch's seconds and the per-round ratio generic /
numpy-layers (> 1: the layered engine is faster).

    python benchmarks/layers_epoch_time.py [--n 20000] [--rounds 3] [--dropout 0.5]
        [--blas-threads 1] [--hidden 256,256] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from mnist_xp.backend import blas_threads, get_backend
from mnist_xp.model import Architecture, init_params
from mnist_xp.optim import make_optimizer
from mnist_xp.training.engines import EngineSetup, EpochInputs, GenericEngine, NumpyLayersEngine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--hidden", default="800,800", help="hidden widths, comma-separated")
    parser.add_argument("--blas-threads", type=int, default=None,
                        help="limit NumPy's BLAS to this many threads for both engines "
                             "(on a busy machine a spinning second thread can cost more "
                             "than the engines differ)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.n, 784), dtype=np.uint8)
    y = rng.integers(0, 10, args.n).astype(np.int64)
    arch = Architecture(784, tuple(int(w) for w in args.hidden.split(",")), 10)
    cpu = get_backend("cpu")
    engines = {}
    for cls in (GenericEngine, NumpyLayersEngine):
        params = init_params(arch, np.float32, np.random.default_rng(1))
        setup = EngineSetup(params, arch, make_optimizer("sgd", 0.01, momentum=0.9), x, y, cpu,
                            dropout=args.dropout)
        engines[cls.name] = cls(setup)
    n_batches = -(-args.n // args.batch_size)
    times = {name: [] for name in engines}
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"), \
            blas_threads(args.blas_threads):
        for r in range(args.rounds):
            order = rng.permutation(args.n).astype(np.int64)
            inputs = EpochInputs(order, args.batch_size, [0.01] * n_batches,
                                 dropout_key=r if args.dropout else None)
            for name, engine in engines.items():
                t0 = time.perf_counter()
                engine.run_epoch(inputs)
                times[name].append(time.perf_counter() - t0)
    ratios = [g / f for g, f in zip(times["generic"], times["numpy-layers"])]
    print(json.dumps({"network": arch.label, "n": args.n, "batch_size": args.batch_size,
                      "dropout": args.dropout,
                      "blas_threads": args.blas_threads,
                      "seconds": times, "ratio_generic_over_layers": ratios,
                      "median_ratio": statistics.median(ratios)}, indent=1))


if __name__ == "__main__":
    main()
