"""How many epochs `best` should train, chosen on a validation split, never on the test set.

``--preset best`` is trained on the first 50,000 of MNIST's training images for each
number of epochs in ``--epochs`` and scored on the other 10,000; the official test set
is not read. Each run trains at least the steps its epochs take on 60,000 images
(``min_steps``), so that a number of epochs here means the same training as on the full
set. The JSON records each run's validation accuracy, its training seconds, the seconds
until the validation accuracy first reached 98.5% (scored after every epoch, off the
clock), the engine and the machine.

    python benchmarks/epochs_validation.py --data-dir ../shared/data/mnist --seeds 3

It repeats the sweep by which ``--epochs 200``, the README's 99.2% recipe, was chosen.
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
from mnist_xp.settings import MNIST_STEPS_PER_EPOCH  # noqa: E402

N_TRAIN = 50_000


def run(x_train, y_train, x_val, y_val, epochs: int, seed: int) -> dict:
    """Train `best` for `epochs` (MNIST's steps) and score it on the validation images."""
    clf = mnist_xp.MLPClassifier.from_preset(
        "best", device="cpu", random_state=seed, epochs=epochs,
        min_steps=epochs * MNIST_STEPS_PER_EPOCH)
    t0 = time.perf_counter()
    clf.fit(x_train, y_train, eval_set=(x_val, y_val))
    wall = time.perf_counter() - t0
    seconds = np.cumsum([r["seconds"] for r in clf.history_])
    to_985 = next((float(s) for s, r in zip(seconds, clf.history_)
                   if r["test_accuracy"] >= 0.985), None)
    return {"epochs": epochs, "epochs_run": len(clf.history_), "seed": seed,
            "val_accuracy": clf.history_[-1]["test_accuracy"],
            "train_seconds": float(seconds[-1]), "wall_seconds": wall,
            "seconds_to_0.985": to_985, "engine": str(clf.engine_)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="the full MNIST's IDX directory (60,000 training images)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, nargs="+", default=[30, 60, 100, 200, 400])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    data = mnist_xp.load_mnist("bundled", data_dir=args.data_dir)
    if len(data.x_train) <= N_TRAIN:
        parser.error(f"--data-dir {args.data_dir}: {len(data.x_train)} training images; "
                     f"give the full MNIST (more than {N_TRAIN:,})")
    x = data.x_train.reshape(len(data.x_train), -1)
    split = (x[:N_TRAIN], data.y_train[:N_TRAIN], x[N_TRAIN:], data.y_train[N_TRAIN:])
    runs, summary = [], {}
    for epochs in args.epochs:
        accuracy = []
        for seed in range(args.seeds):
            record = run(*split, epochs, seed)
            runs.append(record)
            accuracy.append(record["val_accuracy"])
            print(f"{epochs} epochs, seed {seed}: validation {record['val_accuracy']:.2%} "
                  f"in {record['train_seconds']:.1f} s", flush=True)
        summary[str(epochs)] = {"mean_val_accuracy": float(np.mean(accuracy)),
                                "val_accuracy": accuracy}
        print(f"{epochs} epochs: mean {np.mean(accuracy):.2%}", flush=True)
    path = write_result(args.out, "epochs_validation", {
        "machine": machine_info(), "data": data.source,
        "split": {"train": f"training images [0, {N_TRAIN})",
                  "validation": f"training images [{N_TRAIN}, {len(x)})"},
        "settings": {"seeds": args.seeds, "epochs": args.epochs, "preset": "best"},
        "runs": runs, "summary": summary})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
