"""The ``mnist-xp`` command: train, evaluate, predict, info.

A user's mistake (bad flag, missing or corrupt file, unusable required device) ends
with one line on stderr and exit status 2, never a traceback; files are written
atomically, and only once the work that produces them has succeeded.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from pathlib import Path

import numpy as np

from . import __version__
from ._files import atomic_write
from .backend import DEVICE_FORMS, cuda_status, get_backend, parse_device
from .checkpoint import load, save
from .errors import DataError, DeviceError, MnistXPError
from .estimator import PRESETS, MLPClassifier
from .model import ACTIVATIONS, LOSSES, Architecture
from .progress import EpochProgress, format_epoch
from .train import SCHEDULES

PROG = "mnist-xp"


class UsageError(MnistXPError):
    """A command-line flag or value the user must change."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit status 2) instead of usage dumps."""

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


# -- argument types ---------------------------------------------------------------------

def _int_at_least(minimum: int):
    """An argparse type: a whole number >= `minimum`."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _float_in(low: float, high: float, *, low_open: bool, high_open: bool):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        ok_low = value > low if low_open else value >= low
        ok_high = value < high if high_open else value <= high
        if not (ok_low and ok_high):
            lo, hi = "(" if low_open else "[", ")" if high_open else "]"
            raise argparse.ArgumentTypeError(f"must be in {lo}{low}, {high}{hi}, got {text}")
        return value
    return parse


def _device(text: str) -> str:
    try:
        parse_device(text)
    except DeviceError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; use {DEVICE_FORMS}") from None
    return text


# -- parser -----------------------------------------------------------------------------

def _add_device_flags(p):
    p.add_argument("--device", type=_device, default="auto",
                   help=f"where to compute: {DEVICE_FORMS} (default: auto). An unusable "
                        "cuda falls back to the CPU with a one-line reason")
    p.add_argument("--require-device", action="store_true",
                   help="exit with status 2 instead of falling back to the CPU")


def _add_data_flags(p):
    p.add_argument("--data", choices=("auto", "full", "bundled"), default="auto",
                   help="auto: the full MNIST from the cache (downloading it if needed), "
                        "else the bundled 10,000-image subset; full: the full MNIST or an "
                        "error; bundled: the subset shipped with mnist_xp (default: auto)")
    p.add_argument("--data-dir", metavar="DIR", type=Path,
                   help="use the four MNIST-layout IDX files (.gz or raw) in DIR instead")
    p.add_argument("--no-download", action="store_true",
                   help="never download; use only the cache, --data-dir or the bundled subset")


def build_parser() -> argparse.ArgumentParser:
    """The ``mnist-xp`` argument parser."""
    parser = _Parser(prog=PROG, description="Train and use a 784-100-10 digit recogniser "
                                            "on NumPy (CPU) or CuPy (CUDA).")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser,
                                metavar="{train,evaluate,predict,info}")

    t = sub.add_parser("train", help="train a model and report its test accuracy",
                       description="Train a model; print per-epoch results and the final "
                                   "test accuracy. Flags override the preset's values.")
    _add_data_flags(t)
    _add_device_flags(t)
    t.add_argument("--preset", choices=sorted(PRESETS), default="default",
                   help="default: ReLU, softmax cross-entropy, momentum SGD with a cosine "
                        "schedule and 1-pixel shifts; classic: the textbook sigmoid network "
                        "with squared error and plain SGD (default: default)")
    t.add_argument("--epochs", type=_positive_int)
    t.add_argument("--batch-size", type=_positive_int)
    t.add_argument("--learning-rate", "--lr", dest="learning_rate",
                   type=_float_in(0, float("inf"), low_open=True, high_open=True))
    t.add_argument("--momentum", type=_float_in(0, 1, low_open=False, high_open=True))
    t.add_argument("--weight-decay", type=_float_in(0, float("inf"), low_open=False, high_open=True))
    t.add_argument("--schedule", choices=SCHEDULES)
    t.add_argument("--shift", type=_non_negative_int,
                   help="random translation of training images by up to N pixels (0: off)")
    t.add_argument("--hidden", type=_positive_int, help="hidden units (default 100)")
    t.add_argument("--activation", choices=ACTIVATIONS)
    t.add_argument("--loss", choices=LOSSES)
    t.add_argument("--dtype", choices=("float32", "float64"))
    t.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default 0)")
    t.add_argument("--save", metavar="PATH", type=Path, help="write the trained model here (.npz)")
    t.add_argument("--metrics", metavar="FILE", type=Path,
                   help="write one JSON line per epoch here (rewritten after every epoch)")
    t.add_argument("--quiet", "-q", action="store_true",
                   help="no progress line and no per-epoch lines; only the result")

    e = sub.add_parser("evaluate", help="test accuracy of a saved model",
                       description="Score a saved model on a dataset's test images.")
    e.add_argument("--model", metavar="PATH", type=Path, required=True)
    _add_data_flags(e)
    _add_device_flags(e)
    e.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("predict", help="classify 28x28 images stored as .npy or IDX arrays",
                       description="Print the predicted digit and its probability for every "
                                   "image in the given .npy or IDX files (shape (28, 28), "
                                   "(n, 28, 28) or (n, 784); uint8 pixels or floats in [0, 1]).")
    p.add_argument("inputs", nargs="+", metavar="INPUT", type=Path)
    p.add_argument("--model", metavar="PATH", type=Path, required=True)
    _add_device_flags(p)
    p.add_argument("--json", action="store_true",
                   help="print a JSON list with all class probabilities")

    i = sub.add_parser("info", help="version, backends and devices")
    i.add_argument("--json", action="store_true")
    return parser


# -- helpers ----------------------------------------------------------------------------

def _say(line: str) -> None:
    """One diagnostic line on stderr."""
    print(f"{PROG}: {line}", file=sys.stderr, flush=True)


def _backend(args):
    return get_backend(args.device, require=args.require_device, on_fallback=_say)


def _data(args):
    from .data import load_mnist

    return load_mnist(args.data, data_dir=args.data_dir, download=not args.no_download, log=_say)


def _check_writable(path: Path | None, flag: str) -> None:
    """Fail before the work, not after it, when `path` could not be written."""
    if path is None:
        return
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a directory; give a file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{flag} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{flag} {path}: directory {parent} is not writable")


def _plural(n: int, word: str) -> str:
    """'1 epoch', '2 epochs'."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _flatten(images: np.ndarray) -> np.ndarray:
    """(n, 28, 28) images as (n, 784) rows, without copying."""
    return images.reshape(images.shape[0], int(np.prod(images.shape[1:])))


# -- commands ---------------------------------------------------------------------------

def cmd_train(args) -> int:
    """Train, report, and optionally save the model and per-epoch metrics."""
    _check_writable(args.save, "--save")
    _check_writable(args.metrics, "--metrics")
    settings = dict(PRESETS[args.preset])
    for name in ("epochs", "batch_size", "learning_rate", "momentum", "weight_decay",
                 "schedule", "shift", "activation", "loss", "dtype"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    if args.hidden is not None:
        settings["n_hidden"] = args.hidden
    side = 28
    if settings["shift"] >= side:
        raise UsageError(f"--shift {settings['shift']} must be less than the image side ({side})")
    backend = _backend(args)
    data = _data(args)
    n_train = data.x_train.shape[0]
    if settings["batch_size"] > n_train:
        raise UsageError(f"--batch-size {settings['batch_size']} is larger than the training "
                         f"set ({n_train:,} images); use at most {n_train}")
    classes = _check_classes(data)
    model = MLPClassifier(**settings, device=backend, random_state=args.seed)
    arch = Architecture(data.x_train[0].size, model.n_hidden, len(classes), model.activation,
                        model.loss)
    print(f"data: {data.source}")
    print(f"device: {backend.describe()}")
    print(f"model: {arch.n_inputs}-{arch.n_hidden}-{arch.n_outputs} {arch.activation}, "
          f"{arch.loss.replace('_', ' ')}, {model.dtype} ({arch.n_parameters:,} parameters); "
          f"{_plural(model.epochs, 'epoch')}, batch {model.batch_size}, lr {model.learning_rate:g} "
          f"({model.schedule}), momentum {model.momentum:g}, shift {model.shift}", flush=True)

    records: list[dict] = []

    def on_epoch(record):
        records.append(record)
        if not args.quiet:
            print(format_epoch(record), flush=True)
        if args.metrics is not None:
            with atomic_write(args.metrics, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in records)

    progress = EpochProgress(model.epochs, enabled=False if args.quiet else None)
    model.fit(_flatten(data.x_train), data.y_train, eval_set=(_flatten(data.x_test), data.y_test),
              on_epoch=on_epoch, progress=progress)
    final = records[-1]
    n_test = data.x_test.shape[0]
    seconds = sum(r["seconds"] for r in records)
    print(f"test accuracy: {final['test_accuracy']:.2%} "
          f"({round(final['test_accuracy'] * n_test)}/{n_test}) after {_plural(len(records), 'epoch')}, "
          f"{seconds:.1f} s of training on {backend.device}")
    if args.save is not None:
        save(model, args.save, metadata={"data": data.source, "test_accuracy": final["test_accuracy"],
                                         "seed": args.seed, "preset": args.preset})
        print(f"saved model to {args.save}")
    return 0


def _check_classes(data) -> np.ndarray:
    """The training set's digits; it needs two or more, and every digit the test set has."""
    classes = np.unique(data.y_train)
    if len(classes) < 2:
        raise DataError(f"{data.source}: the training labels hold only the digit {classes[0]}; "
                        "training needs at least two")
    unseen = np.setdiff1d(np.unique(data.y_test), classes)
    if unseen.size:
        raise DataError(f"{data.source}: the test labels hold digits the training labels lack "
                        f"({', '.join(map(str, unseen))}); a model can never predict them")
    return classes


def _load_model(args):
    backend = _backend(args)
    return load(args.model, device=backend), backend


def cmd_evaluate(args) -> int:
    """Score a saved model on the test images of the chosen data."""
    model, backend = _load_model(args)
    data = _data(args)
    x = _flatten(data.x_test)
    if x.shape[1] != model.n_features_in_:
        raise UsageError(f"{args.model}: model expects {model.n_features_in_} pixels per image, "
                         f"the data have {x.shape[1]}")
    predicted = np.asarray(model.predict(x))
    correct = int(np.sum(predicted == data.y_test))
    total = x.shape[0]
    result = {"model": str(args.model), "data": data.source, "device": backend.device,
              "accuracy": correct / total, "correct": correct, "total": total}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"test accuracy: {correct / total:.2%} ({correct}/{total}) on {data.source}")
    return 0


def _read_images(path: Path, n_features: int) -> np.ndarray:
    """Rows of pixels from a .npy or IDX file: (n, n_features), uint8 or float."""
    from .data import read_idx

    if path.suffix == ".npy":
        try:
            with open(path, "rb") as f:
                if f.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
                    raise DataError(f"{path}: not a .npy file (no NumPy array header)")
            images = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise DataError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise DataError(f"{path}: is a directory, not a .npy file") from None
        except PermissionError:
            raise DataError(f"{path}: permission denied") from None
        except (ValueError, OSError, EOFError) as exc:
            if "pickle" in str(exc):
                raise DataError(f"{path}: holds pickled objects, which are never loaded") from None
            raise DataError(f"{path}: not a readable .npy array ({exc})") from None
    else:
        images = read_idx(path)
    if images.dtype != np.uint8 and images.dtype.kind != "f":
        raise DataError(f"{path}: holds {images.dtype} values; give uint8 pixels (0-255) "
                        "or floats in [0, 1]")
    side = math.isqrt(n_features)
    if images.shape == (side, side):
        rows = images.reshape(1, -1)
    elif images.ndim == 3 and images.shape[1:] == (side, side):
        rows = images.reshape(images.shape[0], n_features)
    elif images.ndim == 2 and images.shape[1] == n_features:
        rows = images
    else:
        raise DataError(f"{path}: shape {images.shape} is not ({side}, {side}), "
                        f"(n, {side}, {side}) or (n, {n_features})")
    if rows.shape[0] == 0:
        raise DataError(f"{path}: holds no images")
    if rows.dtype.kind == "f":
        if not np.all(np.isfinite(rows)):
            raise DataError(f"{path}: holds NaN or infinite pixel values")
        low, high = float(rows.min()), float(rows.max())
        if low < 0 or high > 1:
            raise DataError(f"{path}: float pixels must be in [0, 1], found {low:g}..{high:g}; "
                            "divide by 255 or save uint8 pixels")
    return rows


def cmd_predict(args) -> int:
    """Classify every image in the inputs; a bad input is reported and skipped."""
    model, _ = _load_model(args)
    results, failed = [], 0
    for path in args.inputs:
        try:
            images = _read_images(path, model.n_features_in_)
            proba = np.asarray(model.predict_proba(images))
        except MnistXPError as exc:
            _say(f"error: {exc}")
            failed += 1
            continue
        for i, p in enumerate(proba):
            best = int(np.argmax(p))
            results.append({"input": str(path), "index": i,
                            "prediction": model.classes_[best].item(),
                            "probability": float(p[best]),
                            "probabilities": [float(v) for v in p]})
            if not args.json:
                print(f"{path}[{i}]: {model.classes_[best]} ({p[best]:.1%})", flush=True)
    if args.json:
        print(json.dumps(results))
    return 2 if failed else 0


def cmd_info(args) -> int:
    """Print version, library versions and what CUDA looks like here."""
    cupy, reason = cuda_status(0)
    info = {"mnist_xp": __version__, "python": platform.python_version(),
            "platform": platform.platform(), "numpy": np.__version__,
            "cupy": None, "cuda": None, "devices": [], "cuda_unavailable": reason or None}
    try:
        import array_api_strict
        info["array_api_strict"] = array_api_strict.__version__
    except ImportError:
        info["array_api_strict"] = None
    if cupy is not None:
        rt = cupy.cuda.runtime
        info["cupy"] = cupy.__version__
        info["cuda"] = {"runtime": rt.runtimeGetVersion(), "driver": rt.driverGetVersion()}
        for n in range(rt.getDeviceCount()):
            props = rt.getDeviceProperties(n)
            name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
            info["devices"].append({"device": f"cuda:{n}", "name": name,
                                    "memory_bytes": int(props["totalGlobalMem"])})
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"mnist-xp {info['mnist_xp']} (Python {info['python']}, {info['platform']})")
    print(f"numpy {info['numpy']}: cpu")
    print(f"array_api_strict {info['array_api_strict'] or 'not installed'}")
    if cupy is None:
        print(f"cupy: unavailable ({reason})")
    else:
        print(f"cupy {info['cupy']}: CUDA runtime {info['cuda']['runtime']}, "
              f"driver {info['cuda']['driver']}")
        for d in info["devices"]:
            print(f"  {d['device']}: {d['name']}, {d['memory_bytes'] / 2**30:.1f} GiB")
    return 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict, "info": cmd_info}


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except MnistXPError as exc:
        _say(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        _say("interrupted; no model was saved" if args.command == "train" else "interrupted")
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): not an error worth a traceback.
        sys.stderr.close()
        return 0
