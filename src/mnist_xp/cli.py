"""The ``mnist-xp`` command: train, evaluate, predict, preprocess, serve, info.

``predict`` classifies arrays (.npy, IDX) and image files (PNG, JPEG, BMP, GIF, TIFF;
normalised like MNIST by `mnist_xp.images`); ``preprocess`` writes the 28×28 image
the model sees for one picture.

A user's mistake (bad flag, missing or corrupt file, unusable required device) ends
with one line on stderr and exit status 2, never a traceback; files are written
atomically, and only once the work that produces them has succeeded.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import sys
from pathlib import Path

import numpy as np

from . import __version__
from ._files import atomic_write
from ._inputs import read_npy
from .backend import DEVICE_FORMS, cuda_status, get_backend, parse_device
from .checkpoint import default_model_path, jsonable_settings, load, save
from .errors import DataError, DeviceError, MnistXPError
from .estimator import PRESETS, MLPClassifier
from .images import (
    IMAGE_SUFFIXES,
    INVERT_CHOICES,
    looks_like_image,
    preprocess_file,
    save_png,
)
from .model import ACTIVATIONS, LOSSES, Architecture
from .progress import EpochProgress, format_epoch
from .augment import Distortion
from .optim import OPTIMIZERS
from .train import SCHEDULES
from .train_control import TrainingInterrupted
from .training_state import data_fingerprint, load_state, save_state

PROG = "mnist-xp"


class UsageError(MnistXPError):
    """A command-line flag or value the user must change."""


def _one_line(text: str) -> str:
    """`text` with unprintable characters escaped (a newline becomes \\x0a).

    Messages quote paths and arguments as given, and a file name may hold a newline
    (or U+2028, or an undecodable byte); escaping keeps every diagnostic to exactly
    one line that stderr can always encode.
    """
    return "".join(c if c.isprintable() else
                   f"\\x{ord(c):02x}" if ord(c) < 0x100 else
                   f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}"
                   for c in text)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit status 2) instead of usage dumps."""

    def error(self, message):
        sys.stderr.write(_one_line(f"{self.prog}: error: {message} (see '{self.prog} --help')")
                         + "\n")
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

_MAX_SCALE = 64  # a 28x28 image at 64x is 1792x1792: large enough to see, small to write


def _scale(text: str) -> int:
    """An argparse type: a whole number from 1 to _MAX_SCALE."""
    value = _positive_int(text)
    if value > _MAX_SCALE:
        raise argparse.ArgumentTypeError(f"must be at most {_MAX_SCALE}, got {value}")
    return value


# 65,536 hidden units are ~200 MB of float32 weights (x4 with gradients and momentum);
# far more than MNIST can use, and a typo such as --hidden 1000000000 (5.7 TiB) is
# refused here rather than by an allocation failure.
_MAX_HIDDEN = 1 << 16


def _hidden(text: str) -> int:
    """An argparse type: a whole number from 1 to _MAX_HIDDEN."""
    value = _positive_int(text)
    if value > _MAX_HIDDEN:
        raise argparse.ArgumentTypeError(f"must be at most {_MAX_HIDDEN}, got {value}")
    return value


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


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port; use 1 to 65535 "
                                         "(or 0 for any free one)")
    return value


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
                                metavar="{train,evaluate,predict,preprocess,serve,info}")

    t = sub.add_parser("train", help="train a model and report its test accuracy",
                       description="Train a model; print per-epoch results and the final "
                                   "test accuracy. Flags override the preset's values.")
    _add_data_flags(t)
    _add_device_flags(t)
    t.add_argument("--preset", choices=sorted(PRESETS), default="default",
                   help="default: ReLU, softmax cross-entropy, momentum SGD with a cosine "
                        "schedule and 1-pixel shifts, 15 epochs; best: the same with per-image "
                        "affine and elastic distortions, 30 epochs; classic: the textbook "
                        "sigmoid network with squared error and plain SGD (default: default)")
    t.add_argument("--epochs", type=_positive_int)
    t.add_argument("--batch-size", type=_positive_int)
    t.add_argument("--learning-rate", "--lr", dest="learning_rate",
                   type=_float_in(0, float("inf"), low_open=True, high_open=True))
    t.add_argument("--momentum", type=_float_in(0, 1, low_open=False, high_open=True))
    t.add_argument("--weight-decay", type=_float_in(0, float("inf"), low_open=False, high_open=True))
    t.add_argument("--optimizer", choices=OPTIMIZERS)
    t.add_argument("--schedule", choices=SCHEDULES)
    t.add_argument("--warmup", metavar="EPOCHS",
                   type=_float_in(0, float("inf"), low_open=False, high_open=True),
                   help="ramp the learning rate up linearly over this many epochs")
    t.add_argument("--label-smoothing", type=_float_in(0, 1, low_open=False, high_open=True))
    t.add_argument("--shift", type=_non_negative_int,
                   help="random translation of whole batches by up to N pixels (0: off)")
    aug = t.add_argument_group("per-image distortions (override the preset's; 0 turns one off)")
    nonneg = _float_in(0, float("inf"), low_open=False, high_open=True)
    aug.add_argument("--rotate", metavar="DEG",
                     type=_float_in(0, 180, low_open=False, high_open=False))
    aug.add_argument("--zoom", metavar="FRAC", type=_float_in(0, 1, low_open=False, high_open=True))
    aug.add_argument("--shear", metavar="DEG", type=_float_in(0, 90, low_open=False, high_open=True))
    aug.add_argument("--translate", metavar="PX", type=nonneg)
    aug.add_argument("--elastic", metavar="ALPHA", type=nonneg,
                     help="strength of the elastic distortion (Simard et al. 2003)")
    aug.add_argument("--elastic-sigma", metavar="PX",
                     type=_float_in(0, float("inf"), low_open=True, high_open=True),
                     help="smoothness of the elastic distortion (default 4)")
    aug.add_argument("--no-augment", action="store_true", help="no per-image distortions")
    t.add_argument("--validation", metavar="FRACTION",
                   type=_float_in(0, 1, low_open=False, high_open=True),
                   help="hold out this fraction of the training images and keep the epoch "
                        "with the best validation accuracy (the test set is only reported)")
    t.add_argument("--patience", metavar="EPOCHS", type=_positive_int,
                   help="with --validation: stop after this many epochs without improvement")
    t.add_argument("--hidden", type=_hidden, help="hidden units (default 100)")
    t.add_argument("--activation", choices=ACTIVATIONS)
    t.add_argument("--loss", choices=LOSSES)
    t.add_argument("--dtype", choices=("float32", "float64"))
    t.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default 0)")
    t.add_argument("--save", metavar="PATH", type=Path, help="write the trained model here (.npz)")
    t.add_argument("--metrics", metavar="FILE", type=Path,
                   help="write one JSON line per epoch here (rewritten after every epoch)")
    t.add_argument("--plot", metavar="DIR", type=Path,
                   help="after training, write training_curves.png and weights.png into DIR "
                        "(created if missing; needs matplotlib: pip install 'mnist-xp[plot]')")
    t.add_argument("--checkpoint", metavar="PATH", type=Path,
                   help="keep the training state here (rewritten atomically every "
                        "--checkpoint-every epochs and at the end), to continue with --resume")
    t.add_argument("--checkpoint-every", metavar="N", type=_positive_int, default=1,
                   help="epochs between checkpoints (default 1)")
    t.add_argument("--resume", metavar="PATH", type=Path,
                   help="continue the run saved in this checkpoint (its settings, seed and "
                        "data; the result is as if it had never stopped)")
    t.add_argument("--quiet", "-q", action="store_true",
                   help="no progress line and no per-epoch lines; only the result")

    e = sub.add_parser("evaluate", help="test accuracy of a saved model",
                       description="Score a saved model on a dataset's test images.")
    e.add_argument("--model", metavar="PATH", type=Path,
                   help="a model saved by 'train --save' (default: the model installed "
                        "with mnist-xp)")
    _add_data_flags(e)
    _add_device_flags(e)
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--report", metavar="DIR", type=Path,
                   help="also write report.json (per-class precision, recall, F1, confusion "
                        "matrix, most confident mistakes) and PNG figures into DIR (created "
                        "if missing; needs matplotlib: pip install 'mnist-xp[plot]')")
    e.add_argument("--metrics", metavar="FILE", type=Path,
                   help="with --report: the model's training log (train --metrics FILE), "
                        "drawn as training_curves.png")

    p = sub.add_parser("predict", help="recognise digits in image files or .npy/IDX arrays",
                       description="Print the predicted digit and its probability for each "
                                   "input. An INPUT is an image of one digit (.png, .jpg, "
                                   ".jpeg, .bmp, .gif, .tif, .tiff; dark ink on light paper "
                                   "or the reverse, any size; needs pip install "
                                   "'mnist-xp[images]'), a .npy or IDX array of 28x28 "
                                   "images (shape (28, 28), (n, 28, 28) or (n, 784); uint8 "
                                   "white-on-black pixels or floats in [0, 1]), or a "
                                   "directory of such files. A bad input gets one error "
                                   "line, the others are still classified, and the exit "
                                   "status is 2.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", type=Path)
    p.add_argument("--model", metavar="PATH", type=Path,
                   help="a model saved by 'train --save' (default: the model installed "
                        "with mnist-xp)")
    _add_device_flags(p)
    p.add_argument("--invert", choices=INVERT_CHOICES, default="auto",
                   help="images only: yes: dark ink on a light background; no: light ink "
                        "on dark; auto: decide from the picture's border (default: auto)")
    p.add_argument("--top-k", metavar="K", type=_positive_int, default=1,
                   help="show the K most probable digits with their probabilities "
                        "(default: 1)")
    p.add_argument("--json", action="store_true",
                   help="print a JSON list with all class probabilities")

    r = sub.add_parser("preprocess", help="write the 28x28 image the model sees for a picture",
                       description="Normalise a picture of one digit like MNIST (white ink "
                                   "on black, fitted to 20x20, centred by mass in 28x28) "
                                   "and write it as a PNG (or the uint8 array as .npy).")
    r.add_argument("image", metavar="IMAGE", type=Path)
    r.add_argument("-o", "--output", metavar="OUT", type=Path, required=True,
                   help="a .png file (or .npy for the (28, 28) uint8 array); written "
                        "atomically, into an existing directory")
    r.add_argument("--invert", choices=INVERT_CHOICES, default="auto",
                   help="yes: dark ink on light; no: light ink on dark (default: auto)")
    r.add_argument("--scale", metavar="N", type=_scale, default=1,
                   help=f"enlarge each pixel of the PNG to NxN, 1 to {_MAX_SCALE} "
                        "(default: 1)")

    v = sub.add_parser("serve", help="a web page to draw digits on, and a JSON API",
                       description="Serve a page where you draw a digit and watch the model "
                                   "answer, plus a JSON API: POST /api/predict (a PNG/JPEG "
                                   "body or a JSON array of 784 pixels), GET /api/health. "
                                   "Ctrl-C stops it.")
    v.add_argument("--model", metavar="PATH", type=Path,
                   help="a model saved by 'train --save' (default: the model installed "
                        "with mnist-xp)")
    v.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; "
                        "0.0.0.0 lets other machines connect)")
    v.add_argument("--port", type=_port, default=8000,
                   help="TCP port, 0 for any free one (default: 8000)")
    _add_device_flags(v)

    i = sub.add_parser("info", help="version, backends and devices")
    i.add_argument("--json", action="store_true")
    return parser


# -- helpers ----------------------------------------------------------------------------

def _say(line: str) -> None:
    """One diagnostic line on stderr."""
    print(_one_line(f"{PROG}: {line}"), file=sys.stderr, flush=True)


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


def _check_figure_dir(path: Path | None, flag: str) -> None:
    """Fail before the work when `path` cannot hold figures or matplotlib is missing."""
    if path is None:
        return
    from .errors import ReportError
    from .plots import check_matplotlib
    from .report import check_output_dir

    try:
        check_output_dir(path)
    except ReportError as exc:
        raise UsageError(f"{flag} {exc}") from None
    check_matplotlib()


def _report_history(args) -> list[dict] | None:
    """Check evaluate's --report/--metrics before any work; the training log, if given."""
    if args.metrics is not None and args.report is None:
        raise UsageError(f"--metrics {args.metrics}: only used with --report DIR, which its "
                         "training curves are drawn into; add --report DIR")
    _check_figure_dir(args.report, "--report")
    if args.metrics is None:
        return None
    from .errors import ReportError
    from .report import read_metrics

    try:
        return read_metrics(args.metrics)
    except ReportError as exc:
        raise UsageError(f"--metrics {exc}") from None


def _write_evaluation_report(args, model, data, x, predicted, history) -> dict:
    """Write evaluate's --report directory; a summary of it for the output."""
    from .plots import write_report
    from .report import evaluation_report

    proba = np.asarray(model.predict_proba(x))
    # predicted (model.predict) is what the accuracy line counted; the report uses the same.
    try:
        scores = evaluation_report(data.y_test, proba, model.classes_, y_pred=predicted)
    except ValueError as exc:  # test labels the model was never trained on
        raise DataError(f"{data.source}: no report for {args.model}: {exc}") from None
    report = {"model": str(args.model), "data": data.source, **scores}
    files = write_report(args.report, report, images=data.x_test,
                         W1=model.backend_.to_numpy(model.params_["W1"]), history=history)
    return {"path": str(args.report), "macro_f1": report["macro"]["f1"],
            "macro_precision": report["macro"]["precision"],
            "macro_recall": report["macro"]["recall"],
            "files": [p.name for p in files.values()]}


def _plural(n: int, word: str) -> str:
    """'1 epoch', '2 epochs'."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _flatten(images: np.ndarray) -> np.ndarray:
    """(n, 28, 28) images as (n, 784) rows, without copying."""
    return images.reshape(images.shape[0], int(np.prod(images.shape[1:])))


# -- commands ---------------------------------------------------------------------------

# Flags that set what is trained; --resume takes all of them from the checkpoint.
_TRAINING_FLAGS = ("preset", "epochs", "batch_size", "learning_rate", "momentum", "weight_decay",
                   "schedule", "shift", "activation", "loss", "dtype", "optimizer", "warmup",
                   "label_smoothing", "hidden", "rotate", "zoom", "shear", "translate",
                   "elastic", "elastic_sigma", "no_augment", "validation", "patience", "seed")


def _resume_settings(args):
    """The checkpoint of --resume and its settings; refuses flags that would change them."""
    defaults = build_parser().parse_args(["train"])
    changed = [f for f in _TRAINING_FLAGS if getattr(args, f) != getattr(defaults, f)]
    if changed:
        flag = "--" + changed[0].replace("_", "-")
        raise UsageError(f"{flag} cannot be combined with --resume, which continues the "
                         f"saved run with its own settings; drop {flag}")
    state, info = load_state(args.resume)
    settings = {k: v for k, v in info["settings"].items()
                if k in MLPClassifier._get_param_names() and k != "device"}
    return state, info, settings


def cmd_train(args) -> int:
    """Train, report, and optionally save the model and per-epoch metrics."""
    _check_writable(args.save, "--save")
    _check_writable(args.metrics, "--metrics")
    _check_writable(args.checkpoint, "--checkpoint")
    _check_figure_dir(args.plot, "--plot")
    if args.resume is not None:
        return _train(args, *_resume_settings(args))
    settings = dict(PRESETS[args.preset])
    for name in ("epochs", "batch_size", "learning_rate", "momentum", "weight_decay",
                 "schedule", "shift", "activation", "loss", "dtype", "optimizer", "warmup",
                 "label_smoothing"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    if args.hidden is not None:
        settings["n_hidden"] = args.hidden
    if args.validation is not None:
        settings["validation_fraction"] = args.validation
    if args.patience is not None:
        if not settings.get("validation_fraction"):
            raise UsageError(f"--patience {args.patience} needs --validation FRACTION "
                             "(a held-out set to watch)")
        settings["n_iter_no_change"] = args.patience
    settings["augment"] = _augment_settings(args, settings.get("augment"))
    if settings["augment"] and args.shift is None:
        settings["shift"] = 0  # distortions asked for replace the preset's batch shifts
    side = 28
    if settings["shift"] >= side:
        raise UsageError(f"--shift {settings['shift']} must be less than the image side ({side})")
    if settings["shift"] and settings["augment"]:
        raise UsageError(f"--shift {settings['shift']} cannot be combined with per-image "
                         "distortions (the preset's or --rotate etc.); use --translate, or "
                         "--no-augment")
    if settings.get("warmup", 0) > settings["epochs"]:
        raise UsageError(f"--warmup {settings['warmup']:g} is longer than the run "
                         f"({settings['epochs']} epochs)")
    settings["random_state"] = args.seed
    return _train(args, None, None, settings)


def _train(args, state, info, settings) -> int:
    """Train with `settings` (from flags, or from the checkpoint `state` of --resume)."""
    backend = _backend(args)
    data = _data(args)
    n_train = data.x_train.shape[0]
    if settings["batch_size"] > n_train:
        raise UsageError(f"--batch-size {settings['batch_size']} is larger than the training "
                         f"set ({n_train:,} images); use at most {n_train}")
    classes = _check_classes(data)
    model = MLPClassifier(**settings, device=backend)
    fingerprint = data_fingerprint(_flatten(data.x_train), data.y_train)
    if state is not None:
        if info["data_fingerprint"] != fingerprint or not np.array_equal(info["classes"], classes):
            raise UsageError(f"--resume {args.resume}: that run trained on other data than "
                             f"{data.source}; give the same --data/--data-dir as it had")
        if state.epoch >= model.epochs:
            raise UsageError(f"--resume {args.resume}: that run already finished "
                             f"({state.epoch} of {model.epochs} epochs); nothing to continue")
    try:
        model._validation_split(n_train)
    except ValueError as exc:
        raise UsageError(f"--validation {args.validation:g}: {exc}") from None
    arch = Architecture(data.x_train[0].size, model.n_hidden, len(classes), model.activation,
                        model.loss)
    print(f"data: {data.source}")
    print(f"device: {backend.describe()}")
    print(f"model: {arch.n_inputs}-{arch.n_hidden}-{arch.n_outputs} {arch.activation}, "
          f"{arch.loss.replace('_', ' ')}, {model.dtype} ({arch.n_parameters:,} parameters); "
          f"{_plural(model.epochs, 'epoch')}, batch {model.batch_size}, lr {model.learning_rate:g} "
          f"({model.schedule}), {_optimizer_text(model)}, {_augment_text(model)}", flush=True)

    records: list[dict] = []

    def on_epoch(record):
        records.append(record)
        if not args.quiet:
            print(format_epoch(record), flush=True)
        if args.metrics is not None:
            with atomic_write(args.metrics, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in records)

    if state is not None:
        records.extend(state.history)
        print(f"resuming after epoch {state.epoch} from {args.resume}", flush=True)

    def write_checkpoint(train_state, path=args.checkpoint):
        return save_state(path, train_state, settings=jsonable_settings(model), classes=classes,
                          fingerprint=fingerprint, metadata={"data": data.source})

    progress = EpochProgress(model.epochs, enabled=False if args.quiet else None)
    with _stop_on_signals() as stop:
        try:
            model.fit(_flatten(data.x_train), data.y_train,
                      eval_set=(_flatten(data.x_test), data.y_test), on_epoch=on_epoch,
                      progress=progress, resume=state,
                      on_checkpoint=None if args.checkpoint is None else write_checkpoint,
                      checkpoint_every=args.checkpoint_every, should_stop=stop.requested)
        except TrainingInterrupted as exc:
            return _interrupted(exc, stop.signum, args, write_checkpoint)
    final = records[model.best_epoch_ - 1]
    n_test = data.x_test.shape[0]
    seconds = sum(r["seconds"] for r in records)
    if model.validation_fraction:
        print(f"kept epoch {model.best_epoch_} (validation accuracy {final['val_accuracy']:.2%})")
    print(f"test accuracy: {final['test_accuracy']:.2%} "
          f"({round(final['test_accuracy'] * n_test)}/{n_test}) after {_plural(len(records), 'epoch')}, "
          f"{seconds:.1f} s of training on {backend.device}")
    if args.save is not None:
        save(model, args.save, metadata={
            "data": data.source, "test_accuracy": final["test_accuracy"],
            "seed": model.random_state,
            **({"preset": args.preset} if state is None else {"resumed_from": str(args.resume)})})
        print(f"saved model to {args.save}")
    if args.plot is not None:
        from .plots import write_training_plots

        files = write_training_plots(args.plot, records,
                                     W1=backend.to_numpy(model.params_["W1"]))
        print(f"wrote {', '.join(p.name for p in files.values())} to {args.plot}")
    return 0


class _StopRequest:
    """Which stop signal arrived (None until one does)."""

    signum = None

    def requested(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def _stop_on_signals():
    """SIGINT/SIGTERM ask training to stop after its current step (a second one aborts)."""
    stop = _StopRequest()

    def handler(signum, frame):
        if stop.signum is not None:
            raise KeyboardInterrupt  # asked twice: stop now, without a checkpoint
        stop.signum = signum

    signals = [signal.SIGINT, signal.SIGTERM]
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _interrupted(exc: TrainingInterrupted, signum, args, write_checkpoint) -> int:
    """Save the state of the last finished epoch of an interrupted run; the exit status."""
    name = signal.Signals(signum).name if signum else "a stop request"
    where = f"epoch {exc.epoch}" + (f" after step {exc.step}" if exc.step else "")
    status = 128 + signum if signum else 130
    if exc.state is None:
        _say(f"stopped by {name} during {where}; no epoch had finished, so there is nothing "
             "to resume and no model was saved")
        return status
    path = args.checkpoint or _free_path(Path("mnist-xp-checkpoint.npz"))
    write_checkpoint(exc.state, path)
    _say(f"stopped by {name} during {where}; saved the state after epoch {exc.state.epoch} "
         f"to {path}; continue with: mnist-xp train --resume {path}")
    return status


def _free_path(path: Path) -> Path:
    """`path`, or `path` with -1, -2... before its suffix if that name is taken."""
    candidate, i = path, 0
    while candidate.exists():
        i += 1
        candidate = path.with_name(f"{path.stem}-{i}{path.suffix}")
    return candidate


def _augment_settings(args, preset: dict | None) -> dict | None:
    """The per-image distortion settings: the preset's, overridden by the flags."""
    if args.no_augment:
        given = [f for f in ("rotate", "zoom", "shear", "translate", "elastic", "elastic_sigma")
                 if getattr(args, f) is not None]
        if given:
            raise UsageError(f"--no-augment contradicts --{given[0].replace('_', '-')}")
        return None
    settings = dict(preset or {})
    for flag, key in (("rotate", "rotate"), ("zoom", "zoom"), ("shear", "shear"),
                      ("translate", "translate"), ("elastic", "elastic"),
                      ("elastic_sigma", "sigma")):
        if getattr(args, flag) is not None:
            settings[key] = getattr(args, flag)
    try:
        distortion = Distortion.from_dict(settings)
    except ValueError as exc:
        raise UsageError(f"per-image distortions: {exc}") from None
    return settings if distortion.active else None


def _optimizer_text(model) -> str:
    """'momentum 0.9' / 'nesterov 0.9' / 'adam' for the summary line."""
    if model.optimizer in ("sgd", "nesterov"):
        name = "momentum" if model.optimizer == "sgd" else "nesterov"
        return f"{name} {model.momentum:g}"
    return model.optimizer


def _augment_text(model) -> str:
    """The training-time augmentation, for the summary line."""
    if model.augment:
        return "distortions " + ", ".join(f"{k} {v:g}" for k, v in model.augment.items())
    return f"shift {model.shift}"


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
    if args.model is None:
        args.model = _default_model()
    backend = _backend(args)
    return load(args.model, device=backend), backend


def cmd_evaluate(args) -> int:
    """Score a saved model on the test images of the chosen data."""
    history = _report_history(args)
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
    if args.report is not None:
        result["report"] = _write_evaluation_report(args, model, data, x, predicted, history)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"test accuracy: {correct / total:.2%} ({correct}/{total}) on {data.source}")
        if args.report is not None:
            summary = result["report"]
            print(f"macro F1 {summary['macro_f1']:.4f}; wrote {', '.join(summary['files'])} "
                  f"to {args.report}")
    return 0


def _read_images(path: Path, n_features: int) -> np.ndarray:
    """Rows of pixels from a .npy or IDX file: (n, n_features), uint8 or float."""
    from .data import read_idx

    if path.suffix == ".npy":
        # Not np.load: it allocates whatever size a corrupt header claims (see _inputs).
        images = read_npy(path)
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


# A directory INPUT contributes its images and these array files. By MNIST's naming,
# "*-idx3-ubyte" files hold images, "*-idx1-ubyte" ones labels (skipped).
_ARRAY_ENDINGS = (".npy", ".idx", ".idx.gz", "idx3-ubyte", "idx3-ubyte.gz")


def _default_model() -> Path:
    """The model installed with mnist-xp, or a UsageError saying what to do instead."""
    path = default_model_path()
    if not path.is_file():
        raise UsageError(f"no --model given and the model installed with mnist-xp is missing "
                         f"({path}); pass --model PATH (a file from 'mnist-xp train --save') "
                         "or reinstall mnist-xp")
    return path


def _expand_input(path: Path) -> list[Path]:
    """`path` itself, or the image and array files directly inside it if a directory."""
    if not path.is_dir():
        # A FIFO or device would block (or never end) the sniffing and reading below.
        if path.exists() and not path.is_file():
            raise DataError(f"{path}: not a regular file (a FIFO, device or socket); give "
                            "an image, .npy or IDX file")
        return [path]
    try:
        files = sorted(p for p in path.iterdir()
                       if not p.name.startswith(".") and p.is_file()
                       and (p.suffix.lower() in IMAGE_SUFFIXES
                            or p.name.lower().endswith(_ARRAY_ENDINGS)))
    except OSError as exc:
        raise DataError(f"{path}: cannot list the directory ({exc.strerror or exc})") from None
    if not files:
        raise DataError(f"{path}: the directory holds no image ({', '.join(IMAGE_SUFFIXES)}), "
                        ".npy or IDX files")
    return files


def _is_picture(path: Path) -> bool:
    """An image file by its name, or by its first bytes unless it is named .npy."""
    return path.suffix.lower() != ".npy" and looks_like_image(path)


def _read_picture(path: Path, n_features: int, invert: str) -> np.ndarray:
    """One image file as a (1, 784) uint8 row, normalised like MNIST."""
    if n_features != 28 * 28:
        raise DataError(f"{path}: the model expects {n_features} pixels per image; "
                        "pictures become 28x28 = 784")
    return preprocess_file(path, invert=invert).reshape(1, -1)


def _prediction(path: Path, index: int | None, p: np.ndarray, classes, top_k: int) -> dict:
    """One JSON-ready result: the best class, all probabilities, and the top k."""
    order = np.argsort(-p, kind="stable")[:top_k]
    labels = [c.item() for c in np.asarray(classes)]
    return {"input": str(path), "index": index,
            "prediction": labels[order[0]], "probability": float(p[order[0]]),
            "probabilities": [float(v) for v in p],
            "probabilities_by_class": {str(c): float(v) for c, v in zip(labels, p)},
            "top_k": [{"prediction": labels[j], "probability": float(p[j])} for j in order]}


def cmd_predict(args) -> int:
    """Classify every image in the inputs; a bad input is reported and skipped."""
    if args.model is None:
        args.model = _default_model()
    model, _ = _load_model(args)
    n_classes = len(model.classes_)
    if args.top_k > n_classes:
        raise UsageError(f"--top-k {args.top_k}: the model knows {n_classes} digits; "
                         f"use at most {n_classes}")
    results, failed = [], 0
    for given in args.inputs:
        try:
            files = _expand_input(given)
        except MnistXPError as exc:
            _say(f"error: {exc}")
            failed += 1
            continue
        for path in files:
            try:
                picture = _is_picture(path)
                if picture:
                    images = _read_picture(path, model.n_features_in_, args.invert)
                else:
                    images = _read_images(path, model.n_features_in_)
                proba = np.asarray(model.predict_proba(images))
            except MnistXPError as exc:
                _say(f"error: {exc}")
                failed += 1
                continue
            for i, p in enumerate(proba):
                row = _prediction(path, None if picture else i, p, model.classes_, args.top_k)
                results.append(row)
                if not args.json:
                    where = f"{path}" if picture else f"{path}[{i}]"
                    shown = ", ".join(f"{t['prediction']} ({t['probability']:.1%})"
                                      for t in row["top_k"])
                    print(f"{where}: {shown}", flush=True)
    if args.json:
        print(json.dumps(results))
    return 2 if failed else 0


def cmd_preprocess(args) -> int:
    """Write the 28x28 image the model sees for one picture (PNG, or .npy array)."""
    out = args.output
    kind = out.suffix.lower()
    if kind not in (".png", ".npy"):
        raise UsageError(f"-o {out}: give a .png file name (or .npy for the uint8 array)")
    if kind == ".npy" and args.scale != 1:
        raise UsageError(f"--scale {args.scale}: only a .png output can be enlarged, not {out}")
    _check_writable(out, "-o")
    if out.resolve() == args.image.resolve():
        raise UsageError(f"-o {out}: that is the input picture; choose another file name")
    pixels = preprocess_file(args.image, invert=args.invert)
    if kind == ".png":
        save_png(pixels, out, scale=args.scale)
    else:
        try:
            with atomic_write(out) as f:
                np.save(f, pixels)
        except OSError as exc:
            raise DataError(f"{out}: cannot write ({exc.strerror or exc})") from None
    size = 28 * args.scale
    print(f"wrote {out} ({size}x{size}): the 28x28 image the model sees for {args.image}")
    return 0


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


def cmd_serve(args) -> int:
    """Serve the drawing page and the JSON API until Ctrl-C (exit status 130)."""
    import errno

    from .checkpoint import read_metadata
    from .serve import make_server

    model, backend = _load_model(args)
    try:
        server = make_server(model, args.host, args.port, device=backend.device,
                             model_name=args.model.name, metadata=read_metadata(args.model))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"--port {args.port}: address {args.host}:{args.port} is already "
                             "in use; choose another --port (0 picks a free one)") from None
        if exc.errno == errno.EACCES:
            raise UsageError(f"--port {args.port}: permission denied; use a port above "
                             "1023") from None
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UsageError(f"--host {args.host}: cannot listen there ({reason}); use an "
                         "address of this machine, e.g. 127.0.0.1") from None
    # Ctrl-C (and SIGTERM) ask the server to stop instead of raising KeyboardInterrupt,
    # which could land anywhere, e.g. inside the event loop's construction, and print
    # a traceback there.
    stopped = []

    def stop(signum, frame):
        stopped.append(signum)
        server.shutdown()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in host else host
    try:
        print(f"serving http://{shown}:{port}/ (model {args.model.name}, {backend.device}); "
              "Ctrl-C stops", flush=True)
        server.serve_forever()
    finally:
        server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _say("stopped")
    return 130 if signal.SIGINT in stopped else 0


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
            "preprocess": cmd_preprocess, "serve": cmd_serve, "info": cmd_info}


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except MnistXPError as exc:
        _say(f"error: {exc}")
        return 2
    except MemoryError as exc:
        # Backstop: inputs are size-checked before allocating, but a size the user
        # asked for may still not fit; one line, not a traceback.
        if type(exc).__name__ == "OutOfMemoryError":  # CuPy's, a MemoryError subclass
            _say(f"error: out of GPU memory ({_one_line(str(exc))}); try a smaller "
                 "--batch-size, or --device cpu")
        else:
            _say(f"error: out of memory ({_one_line(str(exc)) or 'MemoryError'}); use smaller "
                 "inputs, --batch-size or --hidden")
        return 2
    except KeyboardInterrupt:
        _say("interrupted; no model was saved" if args.command == "train" else "interrupted")
        return 130
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): not an error worth a traceback.
        sys.stderr.close()
        return 0
