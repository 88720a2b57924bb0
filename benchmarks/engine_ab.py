"""Epochs of several builds of the compiled engine's extension, interleaved in one process.

For comparing a change to `epoch.c` with the build before it on a machine whose speed
drifts: every build and optimizer trains its own 784-H-10 network, one epoch (or a
fraction of one) each in turn per round, straight through ``train_steps`` (no Python
training loop around it). Printed per build and batch size: the fastest epoch of each
optimizer and, for each optimizer, its fastest and median epoch over SGD's.

    python setup.py build_ext --inplace && cp src/mnist_xp/_cengine/_epoch*.so /tmp/new.so
    git stash && python setup.py build_ext --inplace && cp src/mnist_xp/_cengine/_epoch*.so /tmp/old.so && git stash pop
    python benchmarks/engine_ab.py /tmp/old.so /tmp/new.so --data-dir ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time

import numpy as np
import scipy_openblas32  # noqa: F401  (loads the OpenBLAS the extension links against)

import mnist_xp

OPTIMIZERS = {"sgd": 0, "momentum": 1, "nesterov": 2, "adam": 3, "adamw": 4}


def load(path: str, k: int):
    spec = importlib.util.spec_from_file_location(f"build{k}._epoch", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("builds", nargs="+", help="paths of built _epoch extension modules")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128, 512])
    ap.add_argument("--optimizers", nargs="+", default=["sgd", "nesterov", "adam"],
                    choices=list(OPTIMIZERS))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--fraction", type=float, default=0.5, help="of an epoch, per turn")
    ap.add_argument("--hidden", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    mods = {path: load(path, k) for k, path in enumerate(args.builds)}
    data = mnist_xp.load_mnist("bundled", data_dir=args.data_dir)
    x = np.ascontiguousarray(data.x_train, np.uint8).reshape(len(data.y_train), -1)
    y = np.asarray(data.y_train, np.int64)
    n, n_in, H = len(y), x.shape[1], args.hidden
    rng = np.random.default_rng(0)

    def fresh(opt):
        r = np.random.default_rng(1)
        p = {"W1": (r.standard_normal((n_in, H)) * 0.05).astype(np.float32),
             "b1": np.zeros(H, np.float32),
             "W2": (r.standard_normal((H, 10)) * 0.1).astype(np.float32),
             "b2": np.zeros(10, np.float32)}
        zeros = tuple(np.zeros_like(p[k]) for k in ("W1", "b1", "W2", "b2"))
        s1 = zeros if opt else (None,) * 4
        s2 = tuple(np.zeros_like(a) for a in zeros) if opt >= 3 else (None,) * 4
        return [p, s1, s2, 0]

    def turn(mod, opt, batch, state):
        p, s1, s2, t = state
        m = int(n * args.fraction)
        order = rng.permutation(n)[:m].astype(np.int64)
        steps = (m + batch - 1) // batch
        lrs = np.full(steps, 0.001 if opt >= 3 else 0.05)
        losses, hits = np.zeros(m, np.float32), np.zeros(m, np.uint8)
        per_call = max(1, 8192 // batch)
        start = time.perf_counter()
        for first in range(0, steps, per_call):
            last = min(first + per_call, steps)
            lo, hi = first * batch, min(last * batch, m)
            t = mod.train_steps(
                x=x, y=y, sample_weight=None, order=order[lo:hi], learning_rates=lrs[first:last],
                shifts=None, warp_index=None, warp_keep=None, warp_ids=None, W1=p["W1"],
                b1=p["b1"], W2=p["W2"], b2=p["b2"], state1=s1, state2=s2,
                losses=losses[lo:hi], hits=hits[lo:hi], batch_size=batch, side=28,
                activation=0, loss=0, optimizer=opt, threads=args.threads, scale=1 / 255,
                label_smoothing=0.0, momentum=0.9, weight_decay=1e-4, beta1=0.9,
                beta2=0.999, eps=1e-8, t=t)
        state[3] = t
        return (time.perf_counter() - start) / args.fraction

    for batch in args.batch_sizes:
        keys = [(b, o) for b in mods for o in args.optimizers]
        states = {k: fresh(OPTIMIZERS[k[1]]) for k in keys}
        times = {k: [] for k in keys}
        for k in keys:  # warm-up
            turn(mods[k[0]], OPTIMIZERS[k[1]], batch, states[k])
        for _ in range(args.rounds):
            for k in keys:
                times[k].append(turn(mods[k[0]], OPTIMIZERS[k[1]], batch, states[k]))
        for b in mods:
            fast = {o: min(times[(b, o)]) for o in args.optimizers}
            med = {o: statistics.median(times[(b, o)]) for o in args.optimizers}
            line = f"batch {batch:4d}  {b}  fastest " + " ".join(
                f"{o} {fast[o]:.4f} s" for o in args.optimizers)
            if "sgd" in fast:
                line += "  over SGD (fastest / median): " + ", ".join(
                    f"{o} {fast[o] / fast['sgd']:.2f} / {med[o] / med['sgd']:.2f}"
                    for o in args.optimizers if o != "sgd")
            print(line, flush=True)


if __name__ == "__main__":
    main()
