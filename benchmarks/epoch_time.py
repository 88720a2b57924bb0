"""Epoch time of 784-100-10 training on the CPU, mnist_xp beside its peers, in one process.

Every implementation trains the same network (784-100-10, ReLU, softmax cross-entropy,
float32, plain SGD, lr 0.1) on the same uint8 images, normalised per batch, one epoch
at a time; only training is timed. The implementations take turns, one epoch each per
round, so that the machine's drift in speed hits them all alike. Reported: the median
and fastest epoch after one warm-up epoch, samples per second, and each peer's time
over mnist_xp's, as the median (and range) of the per-round ratios (a ratio > 1 means
the peer is slower). The float32 GEMM roofline is the
epoch's arithmetic (19.2 GFLOP for 60,000 images) over the measured peak of a large
float32 matrix product, which takes its turn in the same rounds.

    python benchmarks/epoch_time.py --data-dir ../shared/data/mnist

Peers run only when installed (``pip install -e '.[bench]'``): PyTorch eager on the
CPU and scikit-learn's MLPClassifier.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_result  # noqa: E402

import mnist_xp  # noqa: E402
from mnist_xp.backend import get_backend  # noqa: E402
from mnist_xp.model import Architecture, init_params  # noqa: E402
from mnist_xp.optim import SGD  # noqa: E402
from mnist_xp.training.engines import EngineSetup, EpochInputs, choose_engine  # noqa: E402

LR = 0.1
HIDDEN = 100


def epoch_flops(n: int, n_in=784, n_hidden=HIDDEN, n_out=10) -> float:
    """Multiply-adds x2 of one epoch: forward 2(784*100 + 100*10), backward 2*784*100 + 4*100*10."""
    forward = 2 * (n_in * n_hidden + n_hidden * n_out)
    backward = 2 * n_in * n_hidden + 4 * n_hidden * n_out
    return float(n * (forward + backward))


GEMM_SIZE = 2048


def make_gemm(size: int = GEMM_SIZE):
    """Three large float32 products back to back: the machine's matrix-product peak."""
    rng = np.random.default_rng(0)
    a = rng.random((size, size), dtype=np.float32)
    b = rng.random((size, size), dtype=np.float32)
    out = np.empty_like(a)

    def run():
        for _ in range(3):
            np.matmul(a, b, out=out)
    return run


# -- implementations: each returns a function that runs one epoch -----------------------

def _mnist_xp(x, y, batch, seed, fast):
    backend = get_backend("cpu")
    arch = Architecture(784, HIDDEN, 10)
    rng = np.random.default_rng(seed)
    params = init_params(arch, np.float32, rng)
    xd, yd = x.reshape(len(x), -1), y.astype(np.int64)
    engine, choice = choose_engine(EngineSetup(params, arch, SGD(LR), xd, yd, backend), fast=fast)
    assert choice.name == ("numpy" if fast else "generic"), choice
    rates = [LR] * -(-len(xd) // batch)

    def epoch():
        engine.run_epoch(EpochInputs(rng.permutation(len(xd)), batch, rates))
    return epoch


def make_mnist_xp(x, y, batch, seed):
    """What `mnist-xp train` runs on the CPU: the NumPy engine."""
    return _mnist_xp(x, y, batch, seed, fast=True)


def make_mnist_xp_generic(x, y, batch, seed):
    """The generic engine on NumPy (the reference the NumPy engine is tested against)."""
    return _mnist_xp(x, y, batch, seed, fast=False)


def make_numpy_reference(x, y, batch, seed):
    """The obvious NumPy loop, as a user would write it."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((784, HIDDEN)) * np.sqrt(2 / 784)).astype(np.float32)
    b1 = np.zeros(HIDDEN, np.float32)
    w2 = (rng.standard_normal((HIDDEN, 10)) * np.sqrt(1 / HIDDEN)).astype(np.float32)
    b2 = np.zeros(10, np.float32)
    xd, eye = x.reshape(len(x), -1), np.eye(10, dtype=np.float32)

    def epoch():
        nonlocal w1, b1, w2, b2
        order = rng.permutation(len(xd))
        for s in range(0, len(xd), batch):
            idx = order[s:s + batch]
            xb = xd[idx].astype(np.float32) / 255
            h = np.maximum(xb @ w1 + b1, 0)
            z = h @ w2 + b2
            p = np.exp(z - z.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            dz = (p - eye[y[idx]]) / len(idx)
            dh = (dz @ w2.T) * (h > 0)
            w2 -= LR * (h.T @ dz)
            b2 -= LR * dz.sum(axis=0)
            w1 -= LR * (xb.T @ dh)
            b1 -= LR * dh.sum(axis=0)
    return epoch


def make_torch(x, y, batch, seed):
    import torch

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(784, HIDDEN), torch.nn.ReLU(),
                                torch.nn.Linear(HIDDEN, 10))
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loss_fn = torch.nn.CrossEntropyLoss()
    xd = torch.from_numpy(x.reshape(len(x), -1))
    yd = torch.from_numpy(y.astype(np.int64))
    gen = torch.Generator().manual_seed(seed)

    def epoch():
        order = torch.randperm(len(xd), generator=gen)
        for s in range(0, len(xd), batch):
            idx = order[s:s + batch]
            xb = xd[idx].float().div_(255)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yd[idx])
            loss.backward()
            opt.step()
    return epoch


def make_sklearn(x, y, batch, seed):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=(HIDDEN,), solver="sgd", batch_size=batch,
                        learning_rate_init=LR, momentum=0.0, alpha=0.0, random_state=seed)
    xd = x.reshape(len(x), -1)
    classes = np.arange(10)

    def epoch():
        # partial_fit does one pass of minibatches; scikit-learn normalises nothing,
        # so the per-batch /255 of the others is done up front here (and timed).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.partial_fit(xd.astype(np.float32) / 255, y, classes=classes)
    return epoch


PEERS = {
    "mnist_xp": (make_mnist_xp, None),
    "mnist_xp generic": (make_mnist_xp_generic, None),
    "numpy reference": (make_numpy_reference, None),
    "pytorch eager": (make_torch, "torch"),
    "scikit-learn": (make_sklearn, "sklearn"),
}


def interleaved_times(epochs: dict, rounds: int) -> dict:
    """Seconds of `rounds` epochs of each implementation, taken in turns.

    The machines these run on drift in speed by tens of percent over minutes; taking
    the implementations in turns, round after round, exposes them to the same drift,
    so their ratios hold even when the absolute times move. A short pause before each
    epoch lets the previous implementation's spinning BLAS/OpenMP threads go to sleep.
    """
    for run in epochs.values():  # warm-up: first-touch allocation, thread pools, caches
        run()
    times = {name: [] for name in epochs}
    for _ in range(rounds):
        for name, run in epochs.items():
            time.sleep(0.2)
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
    return times


def available(module: str | None) -> bool:
    if module is None:
        return True
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, help="MNIST IDX directory (default: bundled subset)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--epochs", type=int, default=9,
                        help="timed epochs of each implementation, taken in turns, after one warm-up")
    parser.add_argument("--peers", nargs="+", default=list(PEERS), choices=list(PEERS))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)

    data = mnist_xp.load_mnist("bundled", data_dir=args.data_dir)
    x, y = data.x_train, data.y_train
    n = len(x)
    print(f"data: {data.source}")

    rows, peaks = [], {}
    for batch in args.batch_sizes:
        # the GEMM peak takes its turn in every round too, so the roofline drifts with the rest
        epochs = {"gemm peak": make_gemm()}
        for name in args.peers:
            make, module = PEERS[name]
            if available(module):
                epochs[name] = make(x, y, batch, seed=0)
            else:
                print(f"  {name}: skipped ({module} not installed)")
        times = interleaved_times(epochs, rounds=args.epochs)
        peak = 3 * 2.0 * GEMM_SIZE**3 / statistics.median(times.pop("gemm peak"))
        roofline = epoch_flops(n) / peak
        peaks[batch] = peak / 1e9
        print(f"batch {batch}: float32 GEMM peak {peak / 1e9:.1f} GFLOP/s; epoch = "
              f"{epoch_flops(n) / 1e9:.2f} GFLOP -> roofline {roofline * 1e3:.1f} ms/epoch")
        base = times.get("mnist_xp")
        for name, ts in times.items():
            seconds = statistics.median(ts)
            # each round's epochs ran back to back: their ratio is the drift-free comparison
            ratios = None if base is None else [t / b for t, b in zip(ts, base)]
            rows.append({"implementation": name, "batch_size": batch, "seconds_per_epoch": seconds,
                         "fastest_epoch_seconds": min(ts), "epoch_seconds": ts,
                         "samples_per_second": n / seconds,
                         "ratio_to_mnist_xp": None if ratios is None else statistics.median(ratios),
                         "ratio_to_mnist_xp_range": None if ratios is None else [min(ratios), max(ratios)],
                         "roofline_seconds": roofline, "ratio_to_roofline": seconds / roofline})

    header = (f"{'implementation':<18}{'batch':>6}{'s/epoch':>10}{'fastest':>9}{'samples/s':>12}"
              f"{'vs mnist_xp (range)':>24}{'vs roofline':>13}")
    print(header)
    for r in rows:
        ratio = "" if r["ratio_to_mnist_xp"] is None else (
            f"{r['ratio_to_mnist_xp']:.2f}x ({r['ratio_to_mnist_xp_range'][0]:.2f}-"
            f"{r['ratio_to_mnist_xp_range'][1]:.2f})")
        print(f"{r['implementation']:<18}{r['batch_size']:>6}{r['seconds_per_epoch']:>10.3f}"
              f"{r['fastest_epoch_seconds']:>9.3f}{r['samples_per_second']:>12,.0f}{ratio:>24}"
              f"{r['ratio_to_roofline']:>12.2f}x")
    path = write_result(args.out, "epoch_time", {
        "data": data.source, "n_train": n, "epochs_timed": args.epochs,
        "gemm_peak_gflops_by_batch_size": peaks,
        "epoch_gflop": epoch_flops(n) / 1e9, "rows": rows, "machine": machine_info()})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
