"""The presets on 28×28 data that is not MNIST, beside scikit-learn's MLPClassifier.

`--preset best` applies digit-tuned distortions (rotations, shears, elastic warps) to
whatever it is given. This measures what that does on data it was not tuned for, made
here without any download:

- ``mirrored``: MNIST's digits mirrored left to right and transposed, their labels
  permuted: the same difficulty, but the digit-tuned warps no longer match the shapes.
- ``letters``: ten letters that are easily confused (C D G I J L O Q U V) rendered from
  the fonts matplotlib ships (DejaVu, STIX, Computer Modern; regular, bold, italic),
  turned, sheared, squeezed, thickened and partly rubbed out at random, with noise,
  and normalised like MNIST (20×20 box, centred by mass).
- ``digits8x8``: scikit-learn's bundled 8×8 digits (1,797 of them, from 43 writers),
  scaled up to a 20×20 box in a 28×28 field.

Each recipe (mnist_xp's ``default`` and ``best`` presets; ``mnist_xp.tune``, which
chooses a recipe on a validation split of the training images and trains it on all of
them; and scikit-learn's ``MLPClassifier(hidden_layer_sizes=(100,))`` with its defaults)
trains on the training split and is scored on the test split, with the same seeds.

    python benchmarks/not_mnist.py --seeds 3      # mirrored MNIST from the bundled subset

Needs the ``bench``, ``images`` and ``tune`` extras (scikit-learn, matplotlib's fonts,
Pillow, OpenCV, Optuna).
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

DATASETS = ("mirrored", "letters", "digits8x8")
RECIPES = ("mnist_xp default", "mnist_xp best", "mnist_xp tune", "sklearn MLPClassifier")

# A fixed relabelling for `mirrored`: class k is called _PERMUTATION[k].
_PERMUTATION = np.array([3, 7, 0, 9, 5, 1, 8, 2, 6, 4])


def mirrored(data) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST mirrored and transposed, labels permuted: (x_train, y_train, x_test, y_test)."""
    def turn(x):
        return np.ascontiguousarray(np.swapaxes(x[:, :, ::-1], 1, 2))
    return (turn(data.x_train), _PERMUTATION[data.y_train], turn(data.x_test),
            _PERMUTATION[data.y_test])


def _font_files() -> list[Path]:
    """The text fonts matplotlib ships (not its symbol and size-variant fonts)."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    keep = ("DejaVuSans", "DejaVuSerif", "STIXGeneral", "cmr10", "cmb10", "cmss10",
            "cmtt10", "cmti10")
    return sorted(p for p in folder.glob("*.ttf")
                  if p.name.startswith(keep) and "Display" not in p.name)


LETTERS = "CDGIJLOQUV"


def letters(n_train: int, n_test: int, seed: int = 0):
    """`LETTERS` rendered from matplotlib's fonts: (x_train, y_train, x_test, y_test)."""
    import cv2
    from PIL import Image, ImageDraw, ImageFont

    from mnist_xp.images.normalize import mnist_box

    rng = np.random.default_rng(seed)
    fonts = [ImageFont.truetype(str(p), 56) for p in _font_files()]
    n = n_train + n_test
    x = np.empty((n, 28, 28), np.uint8)
    y = rng.integers(0, 10, n)
    for i in range(n):
        canvas = Image.new("L", (112, 112), 0)
        draw = ImageDraw.Draw(canvas)
        draw.text((56, 56), LETTERS[y[i]], fill=255, anchor="mm",
                  font=fonts[rng.integers(len(fonts))],
                  stroke_width=int(rng.integers(0, 4)), stroke_fill=255)
        # A rubbed-out patch: a letter is not always whole.
        cx, cy, r = rng.uniform(30, 82), rng.uniform(30, 82), rng.uniform(0, 14)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=0)
        angle, shear = rng.uniform(-20, 20), rng.uniform(-0.4, 0.4)
        squeeze = rng.uniform(0.6, 1.4)
        a = np.deg2rad(angle)
        m = np.array([[squeeze * np.cos(a), -np.sin(a) + shear], [np.sin(a), np.cos(a)]])
        affine = np.hstack([m, (np.array([56, 56]) - m @ np.array([56, 56]))[:, None]])
        img = cv2.warpAffine(np.asarray(canvas, np.float32) / 255, affine, (112, 112),
                             flags=cv2.INTER_LINEAR)
        img = np.clip(img + rng.normal(0, 0.15, img.shape).astype(np.float32) * (img > 0), 0, 1)
        x[i] = mnist_box(cv2, img)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def digits8x8(seed: int = 0):
    """scikit-learn's 8×8 digits in MNIST's form, 80/20 split: (x_train, y_train, x_test, y_test)."""
    import cv2
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from mnist_xp.images.normalize import mnist_box

    digits = load_digits()
    x = np.stack([mnist_box(cv2, cv2.resize((img / 16).astype(np.float32), (32, 32),
                                            interpolation=cv2.INTER_CUBIC).clip(0, 1))
                  for img in digits.images])
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.2, random_state=seed, stratify=digits.target)
    return x_train, y_train, x_test, y_test


def run_recipe(recipe: str, split, seed: int, trials: int = 12) -> tuple[float, float, dict]:
    """(test accuracy, training seconds, what was chosen) of one recipe on one split."""
    x_train, y_train, x_test, y_test = split
    xtr, xte = x_train.reshape(len(x_train), -1), x_test.reshape(len(x_test), -1)
    t0 = time.perf_counter()
    if recipe == "mnist_xp tune":
        result = mnist_xp.tune(xtr, y_train, n_trials=trials, random_state=seed, device="cpu")
        seconds = time.perf_counter() - t0
        return float(result.model.score(xte, y_test)), seconds, {
            "settings": result.settings, "val_accuracy": result.val_accuracy,
            "preset_val_accuracy": result.preset_val_accuracy}
    if recipe == "sklearn MLPClassifier":
        from sklearn.neural_network import MLPClassifier

        clf = MLPClassifier(hidden_layer_sizes=(100,), random_state=seed)
        clf.fit(xtr / 255.0, y_train)
        seconds = time.perf_counter() - t0
        return float(clf.score(xte / 255.0, y_test)), seconds, {}
    clf = mnist_xp.MLPClassifier.from_preset(recipe.split()[1], device="cpu",
                                             random_state=seed)
    clf.fit(xtr, y_train)
    seconds = time.perf_counter() - t0
    return float(clf.score(xte, y_test)), seconds, {}


def main(argv=None) -> int:
    """Run every recipe on every dataset and seed; print the table, save JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", help="MNIST's four IDX files, for `mirrored` (default: the "
                                       "bundled 10,000-image subset)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 of every recipe (default 3)")
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS,
                    help="default: all")
    ap.add_argument("--recipes", nargs="+", default=[r.split()[-1] for r in RECIPES],
                    choices=[r.split()[-1] for r in RECIPES],
                    help="default: all (default, best, tune: mnist_xp's; MLPClassifier: "
                         "scikit-learn's)")
    ap.add_argument("--letters", type=int, nargs=2, default=(5000, 2000),
                    metavar=("TRAIN", "TEST"), help="sizes of the letters set")
    ap.add_argument("--trials", type=int, default=12, help="trials of mnist_xp tune")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"),
                    help="folder of the JSON result (default benchmarks/results)")
    ap.add_argument("--no-save", action="store_true", help="print only, write no JSON")
    args = ap.parse_args(argv)
    args.recipes = [r for r in RECIPES if r.split()[-1] in args.recipes]

    splits = {}
    if "mirrored" in args.datasets:
        splits["mirrored"] = mirrored(
            mnist_xp.load_mnist(data_dir=args.data_dir, download=False) if args.data_dir
            else mnist_xp.load_mnist("bundled"))
    if "letters" in args.datasets:
        splits["letters"] = letters(*args.letters)
    if "digits8x8" in args.datasets:
        splits["digits8x8"] = digits8x8()
    rows = []
    for name, split in splits.items():
        print(f"{name}: {len(split[0])} training, {len(split[2])} test images", flush=True)
        for seed in range(args.seeds):
            for recipe in args.recipes:  # interleaved: every recipe once per seed
                acc, secs, chosen = run_recipe(recipe, split, seed, args.trials)
                rows.append({"dataset": name, "recipe": recipe, "seed": seed,
                             "test_accuracy": acc, "train_seconds": secs, **chosen})
                print(f"  seed {seed} {recipe:22s} {acc:.2%} ({secs:.1f} s)", flush=True)
    print("\nmean test accuracy over seeds")
    print(f"{'dataset':12s}" + "".join(f"{r:>24s}" for r in args.recipes))
    summary = {}
    for name in splits:
        means = {r: float(np.mean([x["test_accuracy"] for x in rows
                                   if x["dataset"] == name and x["recipe"] == r]))
                 for r in args.recipes}
        summary[name] = means
        print(f"{name:12s}" + "".join(f"{means[r]:>23.2%} " for r in args.recipes))
    if not args.no_save:
        path = write_result(Path(args.out), "not_mnist", {
            "benchmark": "not_mnist", "command": "python benchmarks/not_mnist.py "
            + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": machine_info(), "rows": rows, "mean_test_accuracy": summary})
        print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
