"""The ``mnist-xp`` argument parser; ``train``'s setting flags come from `mnist_xp.settings`."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from .. import __version__
from ..backend import DEVICE_FORMS, parse_device
from ..errors import DeviceError, SettingError
from ..images import INVERT_CHOICES
from ..settings import (
    AUGMENT_FIELDS,
    PRESET_NAMES,
    PRESETS,
    SETTINGS,
    Setting,
    check_value,
)
from .common import PROG, printable

__all__ = ["build_parser", "TRAINING_FLAGS"]

#: The argparse names of the flags that set what ``train`` trains: ``--resume`` takes all
#: of them from the checkpoint.
TRAINING_FLAGS = ("preset", "no_augment", "teacher", *(s.dest for s in SETTINGS if s.flag))

_MAX_SCALE = 64  # a 28x28 image at 64x is 1792x1792: large enough to see, small to write


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit status 2) instead of usage dumps."""

    def error(self, message):
        sys.stderr.write(printable(f"{self.prog}: error: {message} (see '{self.prog} --help')")
                         + "\n")
        sys.exit(2)


# -- argument types ---------------------------------------------------------------------

def setting_type(setting: Setting):
    """An argparse type for a number setting: parsed, then checked against the table."""
    def parse(text: str):
        try:
            if setting.kind == "hidden":
                widths = tuple(int(part) for part in text.split(","))
                value = widths[0] if len(widths) == 1 else widths
            else:
                value = int(text) if setting.kind in ("int", "seed") else float(text)
        except ValueError:
            what = {"hidden": "a width or widths joined by commas (800,800)"}.get(
                setting.kind, "a whole number" if setting.kind in ("int", "seed") else "a number")
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        try:
            check_value(setting, value, lambda name, v=None: "")
        except SettingError as exc:
            raise argparse.ArgumentTypeError(f"{str(exc).lstrip(': ')}, got {text}") from None
        return value
    return parse


def _whole(minimum: int, maximum: float = math.inf):
    """An argparse type: a whole number in [minimum, maximum]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value
    return parse


def _open_fraction(text: str) -> float:
    """A number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"give a fraction between 0 and 1, got {text}")
    return value


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


# -- flags from the settings table ---------------------------------------------------------

def _setting_help(setting: Setting) -> str:
    """``--help`` text: the table's help, then its unit and the default or presets' values."""
    if setting.group is not None:
        values = {p: (PRESETS[p][setting.group] or {}).get(setting.field_key, setting.default)
                  for p in PRESET_NAMES}
    else:
        values = {p: PRESETS[p].get(setting.name, setting.default) for p in PRESET_NAMES}
    notes = [setting.unit] if setting.unit else []
    if setting.interval is not None:
        notes.append(setting.interval.describe())
    if setting.cli_default is not None:
        notes.append(f"default {_shown(setting.cli_default)}")
    elif len({repr(v) for v in values.values()}) == 1:
        value = next(iter(values.values()))
        notes += [] if value is None else [f"default {_shown(value)}"]
    else:
        notes.append(", ".join(f"{p} preset: {_shown(v)}" for p, v in values.items()))
    return setting.help + (f" ({'; '.join(notes)})" if notes else "")


def _shown(value) -> str:
    """A value as --help shows it (0.1, not 0.1000; 30, not 30.0)."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _add_setting(group, setting: Setting) -> None:
    """The flag of `setting`; None by default, so that the preset's value applies."""
    kwargs = {"dest": setting.dest, "help": _setting_help(setting),
              "default": setting.cli_default}
    if setting.kind == "bool":  # --deskew / --no-deskew; neither: the preset's value
        group.add_argument(setting.flag, *setting.aliases, action=argparse.BooleanOptionalAction,
                           **kwargs)
        return
    if setting.choices:
        kwargs["choices"] = setting.choices
    else:
        kwargs["type"] = setting_type(setting)
    if setting.metavar or not setting.choices:
        kwargs["metavar"] = setting.metavar or ("N" if setting.kind in ("int", "seed") else "X")
    group.add_argument(setting.flag, *setting.aliases, **kwargs)


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


class _OneModel(argparse.Action):
    """``--model`` of a command that reads with one model: given twice is a mistake."""

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, self.dest, None) is not None:
            raise argparse.ArgumentError(self, "given more than once; this command reads with "
                                               "one model (evaluate --model A --model B scores "
                                               "an ensemble)")
        setattr(namespace, self.dest, values)


def _add_model_flag(p):
    p.add_argument("--model", metavar="PATH", type=Path, action=_OneModel,
                   help="a model saved by 'train --save', or a checkpoint from 'train "
                        "--checkpoint' (default: the model installed with mnist-xp)")


def _add_train(sub) -> None:
    t = sub.add_parser("train", help="train a model and report its test accuracy",
                       description="Train a model; print the engine, per-epoch results and "
                                   "the final test accuracy. Flags override the preset's "
                                   "values.")
    _add_data_flags(t)
    _add_device_flags(t)
    t.add_argument("--preset", choices=PRESET_NAMES, default="default",
                   help="default: ReLU, softmax cross-entropy, momentum SGD with a cosine "
                        "schedule and 1-pixel shifts, 15 epochs (at least 7,035 steps: more "
                        "epochs on smaller data); best: the same with per-image "
                        "affine and elastic distortions, deskewed images, 30 epochs (at least "
                        "14,070 steps; --epochs 200 is about 0.15 points better on MNIST, "
                        "in 5 times the time); "
                        "classic: the textbook "
                        "sigmoid network with squared error and plain SGD (default: default)")
    settings = t.add_argument_group("training settings (override the preset's)")
    distortions = t.add_argument_group("per-image distortions (override the preset's; 0 turns "
                                       "one off)")
    for s in SETTINGS:
        if s.flag is not None:
            _add_setting(distortions if s.group == "augment" else settings, s)
    distortions.add_argument("--no-augment", action="store_true",
                             help="no per-image distortions")
    settings.add_argument("--teacher", metavar="MODEL", type=Path, action="append",
                          help="distil from this model (a file from 'train --save'): learn its "
                               "soft targets at --temperature, mixed with the labels by "
                               "--distill-weight, computed on every augmented batch; repeat "
                               "it to distil from the average of several")
    t.add_argument("--save", metavar="PATH", type=Path, help="write the trained model here (.npz)")
    t.add_argument("--metrics", metavar="FILE", type=Path,
                   help="write one JSON line per epoch here (rewritten after every epoch)")
    t.add_argument("--plot", metavar="DIR", type=Path,
                   help="after training, write training_curves.png and weights.png into DIR "
                        "(created if missing; needs matplotlib: pip install 'mnist-xp[plot]')")
    t.add_argument("--checkpoint", metavar="PATH", type=Path,
                   help="keep the training state here (rewritten atomically every "
                        "--checkpoint-every epochs and at the end), to continue with --resume")
    t.add_argument("--checkpoint-every", metavar="N", type=_whole(1), default=1,
                   help="epochs between checkpoints (default 1)")
    t.add_argument("--resume", metavar="PATH", type=Path,
                   help="continue the run saved in this checkpoint (its settings, seed and "
                        "data; the result is as if it had never stopped)")
    t.add_argument("--quiet", "-q", action="store_true",
                   help="no progress line and no per-epoch lines; only the result")


def build_parser() -> argparse.ArgumentParser:
    """The ``mnist-xp`` argument parser."""
    parser = _Parser(prog=PROG, description="Train and use a digit recogniser (784-100-10 by "
                                            "default) on NumPy (CPU) or CuPy (CUDA).")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser,
                                metavar="{train,evaluate,predict,preprocess,serve,info,tune}")
    _add_train(sub)

    e = sub.add_parser("evaluate", help="test accuracy of a saved model",
                       description="Score a saved model on a dataset's test images; given "
                                   "--model more than once, the average of the models' "
                                   "probabilities (an ensemble).")
    e.add_argument("--model", metavar="PATH", type=Path, action="append",
                   help="a model saved by 'train --save', or a checkpoint from 'train "
                        "--checkpoint' (default: the model installed with mnist-xp); "
                        "repeat it to score the ensemble of several models")
    _add_data_flags(e)
    _add_device_flags(e)
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--report", metavar="DIR", type=Path,
                   help="also write report.json (per-class precision, recall, F1, confusion "
                        "matrix, most confident mistakes) and PNG figures into DIR (created "
                        "if missing; an ensemble's weights.png shows its first model; needs "
                        "matplotlib: pip install 'mnist-xp[plot]')")
    e.add_argument("--metrics", metavar="FILE", type=Path,
                   help="with --report: the model's training log (train --metrics FILE), "
                        "drawn as training_curves.png")

    p = sub.add_parser("predict", help="recognise digits in image files or .npy/IDX arrays",
                       description="Print the predicted digit and its probability for each "
                                   "input. An INPUT is an image of a digit or of a number "
                                   "of several digits, read left to right (.png, .jpg, "
                                   ".jpeg, .bmp, .gif, .tif, .tiff; dark ink on light paper "
                                   "or the reverse, any size; needs pip install "
                                   "'mnist-xp[images]'), a .npy or IDX array of 28x28 "
                                   "images of one digit each (shape (28, 28), (n, 28, 28) "
                                   "or (n, 784); uint8 white-on-black pixels or floats in "
                                   "[0, 1]), or a directory of such files. A bad input, or "
                                   "a blank image, gets one error line, the others are "
                                   "still classified, and the exit status is 2.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", type=Path)
    _add_model_flag(p)
    _add_device_flags(p)
    p.add_argument("--invert", choices=INVERT_CHOICES, default="auto",
                   help="images only: yes: dark ink on a light background; no: light ink "
                        "on dark; auto: decide from the ink against the paper (default: auto)")
    p.add_argument("--top-k", metavar="K", type=_whole(1), default=1,
                   help="show the K most probable digits with their probabilities "
                        "(default: 1); for a number, --json lists them for each digit")
    p.add_argument("--json", action="store_true",
                   help="print a JSON list with all class probabilities, and each "
                        "digit of a number")

    r = sub.add_parser("preprocess", help="write the 28x28 image(s) the model reads for a picture",
                       description="Normalise a picture like MNIST (white ink on black, "
                                   "fitted to 20x20, centred by mass in 28x28) and write "
                                   "it as a PNG (or the uint8 array as .npy). A picture "
                                   "of a number gives one 28x28 image per digit, side by "
                                   "side in the PNG, left to right. This is what predict "
                                   "gives the model; a model that deskews (as the shipped "
                                   "one does) straightens it before its first layer.")
    r.add_argument("image", metavar="IMAGE", type=Path)
    r.add_argument("-o", "--output", metavar="OUT", type=Path, required=True,
                   help="a .png file (or .npy for the (28, 28) uint8 array; (k, 28, 28) "
                        "for a number of k digits); written atomically, into an existing "
                        "directory")
    r.add_argument("--invert", choices=INVERT_CHOICES, default="auto",
                   help="yes: dark ink on light; no: light ink on dark (default: auto)")
    r.add_argument("--scale", metavar="N", type=_whole(1, _MAX_SCALE), default=1,
                   help=f"enlarge each pixel of the PNG to NxN, 1 to {_MAX_SCALE} "
                        "(default: 1)")
    r.add_argument("--model", metavar="PATH", type=Path, action=_OneModel,
                   help="the model whose reading decides where digits that touch are cut, "
                        "as predict does (default: the model installed with mnist-xp)")
    r.set_defaults(device="cpu", require_device=False)

    v = sub.add_parser("serve", help="a web page to draw digits and numbers on, and a JSON API",
                       description="Serve a page where you draw a digit or a number and "
                                   "watch the model answer, plus a JSON API: POST "
                                   "/api/predict (a PNG/JPEG body or a JSON array of 784 "
                                   "pixels), GET /api/health. Ctrl-C stops it.")
    _add_model_flag(v)
    v.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; "
                        "0.0.0.0 lets other machines connect)")
    v.add_argument("--port", type=_port, default=8000,
                   help="TCP port, 0 for any free one (default: 8000)")
    _add_device_flags(v)

    u = sub.add_parser("tune", help="choose learning rate and augmentation for your data, "
                                    "then train",
                       description="Choose the learning rate, augmentation (none, shifts or "
                                   "per-image distortions), label smoothing and epochs by "
                                   "their accuracy on a validation split of the training "
                                   "images (never the test set), with Optuna; the default and "
                                   "best presets are the first two trials. Then train the "
                                   "chosen recipe on all training images and report its test "
                                   "accuracy. Use it for data other than handwritten digits "
                                   "('--preset best' is tuned for digits). Needs pip install "
                                   "'mnist-xp[tune]'.")
    _add_data_flags(u)
    _add_device_flags(u)
    u.add_argument("--trials", metavar="N", type=_whole(2), default=20,
                   help="trials at most, the two presets included (default 20)")
    u.add_argument("--timeout", metavar="SECONDS", type=float,
                   help="start no new trial after this many seconds")
    u.add_argument("--validation", metavar="FRACTION", type=_open_fraction, default=0.1,
                   help="share of the training images held out to score the trials "
                        "(default 0.1)")
    u.add_argument("--seed", type=_whole(0), default=0,
                   help="seeds the split, the search and the training (default 0)")
    u.add_argument("--save", metavar="PATH", type=Path, help="write the trained model here (.npz)")
    u.add_argument("--json", action="store_true", help="print one JSON object")

    i = sub.add_parser("info", help="version, backends, devices and training engines")
    i.add_argument("--json", action="store_true")
    return parser


def augment_flags_given(args) -> list[str]:
    """The distortion flags given on the command line, as ``--rotate``..."""
    return [s.flag for s in AUGMENT_FIELDS.values() if getattr(args, s.dest) is not None]

