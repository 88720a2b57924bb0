"""Training time until the test accuracy first reaches 97%, 98%, 98.5% and 98.8% (CPU).

mnist_xp's ``default`` and ``best`` presets against a strong PyTorch CPU recipe for the
same 784-100-10 network: Adam with a one-cycle learning rate, batch 128, with and without the random 1-pixel shifts that mnist_xp uses. Only training counts
toward the time; the test set is scored after every epoch, off the clock. For a recipe
that deskews (``best``), deskewing the training images is part of training and its
time comes first in the curve (timed on its own, on the same images). Accuracy is
read once per epoch, so a threshold is "reached" at the end of the first epoch that
passes it.

    python benchmarks/time_to_accuracy.py --data-dir ../shared/data/mnist --seeds 3

mnist_xp trains with the engine the chooser takes (the compiled engine where it is
built); each row records it. PyTorch runs only when installed (``pip install -e
'.[bench]'``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_info, write_result  # noqa: E402

import mnist_xp  # noqa: E402

THRESHOLDS = (0.97, 0.98, 0.985, 0.988)


def run_mnist_xp(data, epochs: int | None, seed: int, preset: str = "default",
                 device: str = "cpu") -> tuple[list[tuple[float, float]], str]:
    """(cumulative training seconds, test accuracy) after each epoch of a preset; the engine."""
    from mnist_xp.deskew import deskew

    extra = {} if epochs is None else {"epochs": epochs}
    clf = mnist_xp.MLPClassifier.from_preset(preset, device=device, random_state=seed, **extra)
    x_train = data.x_train.reshape(len(data.x_train), -1)
    x_test = data.x_test.reshape(len(data.x_test), -1)
    prep = 0.0
    if clf.deskew:  # fit deskews before its first epoch, outside the epochs' seconds
        t0 = time.perf_counter()
        deskew(x_train, np)
        prep = time.perf_counter() - t0
    clf.fit(x_train, data.y_train, eval_set=(x_test, data.y_test))
    curve = _cumulative([(r["seconds"], r["test_accuracy"]) for r in clf.history_], start=prep)
    engine = str(clf.engine_) + (f"; deskewing {prep:.2f} s" if prep else "")
    return curve, engine


def run_torch(data, epochs: int, seed: int, shift: int) -> tuple[list[tuple[float, float]], str]:
    """The same for PyTorch eager: Adam, OneCycleLR (max lr 3e-3), batch 128."""
    import torch

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(784, 100), torch.nn.ReLU(), torch.nn.Linear(100, 10))
    batch = 128
    x = torch.from_numpy(data.x_train.reshape(len(data.x_train), -1).copy())
    y = torch.from_numpy(data.y_train.astype(np.int64))
    xt = torch.from_numpy(data.x_test.reshape(len(data.x_test), -1).astype(np.float32) / 255)
    yt = torch.from_numpy(data.y_test.astype(np.int64))
    steps = -(-len(x) // batch)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, epochs=epochs, steps_per_epoch=steps)
    loss_fn = torch.nn.CrossEntropyLoss()
    shifter = None
    if shift:
        # the same augmentation as mnist_xp, run by torch: one random shift per batch
        from mnist_xp.augment import RandomShift

        shifter = RandomShift(28, shift)
    results = []
    for _ in range(epochs):
        # shuffle and shifts drawn off the clock, as mnist_xp's train() does
        order = torch.randperm(len(x), generator=gen)
        shift_ids = (torch.randint(0, shifter.n_shifts, (steps,), generator=gen).tolist()
                     if shifter is not None else None)
        t0 = time.perf_counter()
        for i, s in enumerate(range(0, len(x), batch)):
            idx = order[s:s + batch]
            xb = x[idx]
            if shifter is not None:
                xb = shifter.apply(xb, shift_ids[i], torch)
            xb = xb.float().div_(255)
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xb), y[idx]).backward()
            opt.step()
            sched.step()
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            acc = (model(xt).argmax(1) == yt).float().mean().item()
        results.append((seconds, acc))
    return _cumulative(results), f"pytorch {torch.__version__} eager"


def _cumulative(per_epoch, start: float = 0.0):
    total, out = start, []
    for seconds, acc in per_epoch:
        total += seconds
        out.append((total, acc))
    return out


def reached(curve, threshold):
    """Training seconds at the end of the first epoch whose accuracy >= threshold, or None."""
    return next((t for t, acc in curve if acc >= threshold), None)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, help="MNIST IDX directory (default: bundled subset)")
    parser.add_argument("--epochs", type=int, default=15,
                        help="epochs of the default preset and the peers (best: its own 30)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="seeds of the best preset (its mean accuracy is reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    data = mnist_xp.load_mnist("bundled", data_dir=args.data_dir)
    print(f"data: {data.source}")

    runs = {"mnist_xp default preset": lambda: run_mnist_xp(data, args.epochs, args.seed)}
    for k in range(args.seeds):
        label = "mnist_xp best preset" + (f" (seed {args.seed + k})" if args.seeds > 1 else "")
        runs[label] = (lambda s=args.seed + k: run_mnist_xp(data, None, s, "best"))
    try:
        import torch  # noqa: F401

        runs["pytorch adam one-cycle + shifts"] = lambda: run_torch(data, args.epochs, args.seed, 1)
        runs["pytorch adam one-cycle"] = lambda: run_torch(data, args.epochs, args.seed, 0)
    except ImportError:
        print("  pytorch: skipped (not installed)")

    rows = []
    for name, run in runs.items():
        curve, engine = run()
        row = {"implementation": name, "engine": engine, "epochs": len(curve), "curve": curve,
               "final_accuracy": curve[-1][1], "best_accuracy": max(a for _, a in curve),
               "seconds_to": {f"{t:.3f}": reached(curve, t) for t in THRESHOLDS}}
        rows.append(row)
        print(f"  {name}: final {row['final_accuracy']:.2%} after {curve[-1][0]:.1f} s ({engine})")

    base = rows[0]["seconds_to"]
    head = "".join(f"{'to ' + format(t, '.1%'):>16}" for t in THRESHOLDS)
    print(f"{'implementation':<34}{head}{'best':>9}")
    for row in rows:
        cells = []
        for t in THRESHOLDS:
            s, b = row["seconds_to"][f"{t:.3f}"], base[f"{t:.3f}"]
            cells.append("never" if s is None else
                         f"{s:.1f}s" + ("" if not b or row is rows[0] else f" ({s / b:.1f}x)"))
        print(f"{row['implementation']:<34}" + "".join(f"{c:>16}" for c in cells)
              + f"{row['best_accuracy']:>9.2%}")
    best_rows = [r for r in rows if r["implementation"].startswith("mnist_xp best")]
    summary = None
    if best_rows:
        finals = [r["final_accuracy"] for r in best_rows]
        summary = {"best_preset_final_accuracies": finals,
                   "best_preset_mean_final_accuracy": float(np.mean(finals))}
        print(f"best preset: final accuracy {', '.join(f'{a:.2%}' for a in finals)}; "
              f"mean {np.mean(finals):.2%}")
    path = write_result(args.out, "time_to_accuracy", {
        "data": data.source, "thresholds": THRESHOLDS, "rows": rows, "summary": summary,
        "machine": machine_info()})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
