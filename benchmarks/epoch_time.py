"""Epoch time of 784-100-10 training on the CPU, mnist_xp beside its peers, in one process.

Every implementation trains the same network (784-100-10, ReLU, softmax cross-entropy,
float32) with the same optimizer -- plain SGD at lr 0.1, Adam at lr 0.001, or (on
request) Nesterov at lr 0.1 with momentum 0.9 -- on the same uint8 images, normalised
per batch, one epoch at a time; only training is timed.
The implementations take turns, one epoch each per round, so that the machine's drift
in speed hits them all alike. Reported: the median and fastest epoch after one warm-up
epoch, samples per second, and each one's time over mnist_xp's (the compiled engine
where it is built, else the NumPy engine), as the median (and range) of the per-round
ratios (a ratio > 1 means it is slower). The float32 GEMM roofline is the epoch's
arithmetic (19.2 GFLOP for 60,000 images) over the measured peak of a large float32
matrix product on every core, which takes its turn in the same rounds.

    python benchmarks/epoch_time.py --data-dir ../shared/data/mnist

mnist_xp runs as its compiled engine, its NumPy engine (SGD only: the NumPy engine has
no Adam; ``mnist_xp generic`` is the path Adam takes without the compiled engine) and
the obvious 20-line NumPy loop. Peers run only when installed (``pip install -e
'.[bench]'``): PyTorch eager on the CPU and scikit-learn's MLPClassifier.

``--blas-spin`` adds the measurement behind the compiled engine's limit on NumPy's
BLAS threads: a compiled epoch started right after a threaded NumPy matrix product,
with the limit and without it.
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
from mnist_xp.optim import make_optimizer  # noqa: E402
from mnist_xp.training.engines import (  # noqa: E402
    CompiledEngine,
    EngineSetup,
    EpochInputs,
    GenericEngine,
    NumpyEngine,
    compiled_engine,
)

#: Learning rate of each optimizer (Nesterov with momentum 0.9, Adam with its usual
#: betas and eps).
LR = {"sgd": 0.1, "nesterov": 0.1, "adam": 0.001}
MOMENTUM = 0.9  # Nesterov's
HIDDEN = 100
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


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

def _mnist_xp(engine_class, x, y, batch, seed, optimizer):
    """One epoch of `engine_class` (or None when it does not cover the run: skipped)."""
    backend = get_backend("cpu")
    arch = Architecture(784, HIDDEN, 10)
    rng = np.random.default_rng(seed)
    params = init_params(arch, np.float32, rng)
    xd, yd = x.reshape(len(x), -1), y.astype(np.int64)
    momentum = MOMENTUM if optimizer == "nesterov" else 0.0
    setup = EngineSetup(params, arch, make_optimizer(optimizer, LR[optimizer], momentum=momentum),
                        xd, yd, backend)
    why = engine_class.unsupported_reason(setup)
    if why is not None:
        return why
    engine = engine_class(setup)
    rates = [LR[optimizer]] * -(-len(xd) // batch)

    def epoch():
        engine.run_epoch(EpochInputs(rng.permutation(len(xd)), batch, rates))
    return epoch


def make_compiled(x, y, batch, seed, optimizer):
    """What `mnist-xp train` runs on the CPU where the extension is built."""
    return _mnist_xp(CompiledEngine, x, y, batch, seed, optimizer)


def make_numpy_engine(x, y, batch, seed, optimizer):
    """The NumPy engine (``MNIST_XP_ENGINE=numpy``, or no compiled extension): SGD only."""
    return _mnist_xp(NumpyEngine, x, y, batch, seed, optimizer)


def make_mnist_xp_generic(x, y, batch, seed, optimizer):
    """The generic engine on NumPy (the reference the fast engines are tested against)."""
    return _mnist_xp(GenericEngine, x, y, batch, seed, optimizer)


def make_numpy_reference(x, y, batch, seed, optimizer):
    """The obvious NumPy loop, as a user would write it (Nesterov, Adam: a few lines more)."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((784, HIDDEN)) * np.sqrt(2 / 784)).astype(np.float32)
    b1 = np.zeros(HIDDEN, np.float32)
    w2 = (rng.standard_normal((HIDDEN, 10)) * np.sqrt(1 / HIDDEN)).astype(np.float32)
    b2 = np.zeros(10, np.float32)
    params = [w1, b1, w2, b2]
    moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
    xd, eye, lr = x.reshape(len(x), -1), np.eye(10, dtype=np.float32), LR[optimizer]
    t = 0

    def epoch():
        nonlocal t
        w1, b1, w2, b2 = params
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
            grads = [xb.T @ dh, dh.sum(axis=0), h.T @ dz, dz.sum(axis=0)]
            if optimizer == "sgd":
                for param, g in zip(params, grads):
                    param -= lr * g
                continue
            if optimizer == "nesterov":
                for param, g, (v, _) in zip(params, grads, moments):
                    v *= MOMENTUM
                    v -= lr * g
                    param += MOMENTUM * v - lr * g
                continue
            t += 1
            step = lr * np.sqrt(1 - BETA2 ** t) / (1 - BETA1 ** t)
            for param, g, (m, v) in zip(params, grads, moments):
                m *= BETA1
                m += (1 - BETA1) * g
                v *= BETA2
                v += (1 - BETA2) * g * g
                param -= step * m / (np.sqrt(v) + EPS)
    return epoch


def make_torch(x, y, batch, seed, optimizer):
    import torch

    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(784, HIDDEN), torch.nn.ReLU(),
                                torch.nn.Linear(HIDDEN, 10))
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=LR[optimizer])
    elif optimizer == "nesterov":
        opt = torch.optim.SGD(model.parameters(), lr=LR[optimizer], momentum=MOMENTUM,
                              nesterov=True)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=LR[optimizer], betas=(BETA1, BETA2),
                               eps=EPS)
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


def make_sklearn(x, y, batch, seed, optimizer):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    nesterov = optimizer == "nesterov"
    clf = MLPClassifier(hidden_layer_sizes=(HIDDEN,), solver="sgd" if nesterov else optimizer,
                        batch_size=batch, learning_rate_init=LR[optimizer],
                        momentum=MOMENTUM if nesterov else 0.0, nesterovs_momentum=nesterov,
                        alpha=0.0,
                        beta_1=BETA1, beta_2=BETA2, epsilon=EPS, random_state=seed)
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
    "mnist_xp compiled": (make_compiled, None),
    "mnist_xp numpy": (make_numpy_engine, None),
    "mnist_xp generic": (make_mnist_xp_generic, None),
    "numpy reference": (make_numpy_reference, None),
    "pytorch eager": (make_torch, "torch"),
    "scikit-learn": (make_sklearn, "sklearn"),
}
#: What runs unless --peers says otherwise (the generic path is slow and not a target).
DEFAULT_PEERS = [p for p in PEERS if p != "mnist_xp generic"]


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


def blas_spin(x, y, batch: int, rounds: int) -> dict:
    """Compiled epochs started right after a threaded NumPy product: with and without the limit.

    NumPy's OpenBLAS threads spin for a while after a threaded call; the compiled engine
    holds NumPy's BLAS to one thread during its epochs so that they do not take its cores.
    Each round runs a large NumPy matmul, then at once one compiled epoch, alternating
    the limit on and off. Returns the median seconds of each, and their ratio.
    """
    gemm, epoch = make_gemm(), make_compiled(x, y, batch, 0, "sgd")
    epoch()  # warm-up
    times = {"limited": [], "not limited": []}
    try:
        for _ in range(rounds):
            for name in times:
                compiled_engine.LIMIT_NUMPY_BLAS = name == "limited"
                gemm()
                t0 = time.perf_counter()
                epoch()
                times[name].append(time.perf_counter() - t0)
    finally:
        compiled_engine.LIMIT_NUMPY_BLAS = True
    out = {name: statistics.median(ts) for name, ts in times.items()}
    out["epoch_seconds"] = times
    out["not_limited_over_limited"] = out["not limited"] / out["limited"]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, help="MNIST IDX directory (default: bundled subset)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128, 512])
    parser.add_argument("--optimizers", nargs="+", default=["sgd", "adam"], choices=list(LR))
    parser.add_argument("--epochs", type=int, default=9,
                        help="timed epochs of each implementation, taken in turns, after one warm-up")
    parser.add_argument("--peers", nargs="+", default=DEFAULT_PEERS, choices=list(PEERS))
    parser.add_argument("--blas-spin", action="store_true",
                        help="also time compiled epochs right after a NumPy matmul, with and "
                             "without the limit on NumPy's BLAS threads (batch 128)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)

    data = mnist_xp.load_mnist("bundled", data_dir=args.data_dir)
    x, y = data.x_train, data.y_train
    n = len(x)
    print(f"data: {data.source}")

    rows, peaks, skipped = [], {}, {}
    for optimizer in args.optimizers:
        for batch in args.batch_sizes:
            # the GEMM peak takes its turn in every round too, so the roofline drifts with the rest
            epochs = {"gemm peak": make_gemm()}
            for name in args.peers:
                make, module = PEERS[name]
                if not available(module):
                    skipped[name] = f"{module} not installed"
                    continue
                run = make(x, y, batch, seed=0, optimizer=optimizer)
                if isinstance(run, str):  # the engine's reason for not covering the run
                    skipped[f"{name} ({optimizer})"] = run
                    continue
                epochs[name] = run
            times = interleaved_times(epochs, rounds=args.epochs)
            peak = 3 * 2.0 * GEMM_SIZE**3 / statistics.median(times.pop("gemm peak"))
            roofline = epoch_flops(n) / peak
            peaks[f"{optimizer} {batch}"] = peak / 1e9
            print(f"{optimizer}, batch {batch}: float32 GEMM peak {peak / 1e9:.1f} GFLOP/s; "
                  f"epoch = {epoch_flops(n) / 1e9:.2f} GFLOP -> roofline "
                  f"{roofline * 1e3:.1f} ms/epoch")
            base = times.get("mnist_xp compiled", times.get("mnist_xp numpy"))
            for name, ts in times.items():
                seconds = statistics.median(ts)
                # each round's epochs ran back to back: their ratio is the drift-free comparison
                ratios = None if base is None else [t / b for t, b in zip(ts, base)]
                rows.append({
                    "implementation": name, "optimizer": optimizer, "batch_size": batch,
                    "seconds_per_epoch": seconds, "fastest_epoch_seconds": min(ts),
                    "epoch_seconds": ts, "samples_per_second": n / seconds,
                    "ratio_to_mnist_xp": None if ratios is None else statistics.median(ratios),
                    "ratio_to_mnist_xp_range": None if ratios is None else [min(ratios), max(ratios)],
                    "roofline_seconds": roofline, "ratio_to_roofline": seconds / roofline})
    for name, why in skipped.items():
        print(f"  {name}: skipped ({why})")

    header = (f"{'implementation':<19}{'opt':>5}{'batch':>6}{'s/epoch':>10}{'fastest':>9}"
              f"{'samples/s':>12}{'vs mnist_xp (range)':>24}{'vs roofline':>13}")
    print(header)
    for r in rows:
        ratio = "" if r["ratio_to_mnist_xp"] is None else (
            f"{r['ratio_to_mnist_xp']:.2f}x ({r['ratio_to_mnist_xp_range'][0]:.2f}-"
            f"{r['ratio_to_mnist_xp_range'][1]:.2f})")
        print(f"{r['implementation']:<19}{r['optimizer']:>5}{r['batch_size']:>6}"
              f"{r['seconds_per_epoch']:>10.3f}{r['fastest_epoch_seconds']:>9.3f}"
              f"{r['samples_per_second']:>12,.0f}{ratio:>24}{r['ratio_to_roofline']:>12.2f}x")
    spin = None
    if args.blas_spin and "mnist_xp compiled" not in skipped:
        spin = blas_spin(x, y, 128, args.epochs)
        print(f"compiled epoch right after a NumPy matmul (batch 128): "
              f"{spin['limited']:.3f} s with NumPy's BLAS held to one thread, "
              f"{spin['not limited']:.3f} s without ({spin['not_limited_over_limited']:.2f}x)")
    path = write_result(args.out, "epoch_time", {
        "data": data.source, "n_train": n, "epochs_timed": args.epochs,
        "gemm_peak_gflops": peaks, "epoch_gflop": epoch_flops(n) / 1e9,
        "compiled_threads": None if "mnist_xp compiled" in skipped else _threads(),
        "skipped": skipped, "rows": rows, "blas_spin": spin, "machine": machine_info()})
    print(f"wrote {path}")
    return 0


def _threads() -> int:
    """The compiled engine's thread count."""
    from mnist_xp import _cengine

    return _cengine.default_threads()


if __name__ == "__main__":
    sys.exit(main())
