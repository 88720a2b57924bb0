"""``mnist-xp predict`` and ``preprocess``: the model on people's own pictures and arrays.

``predict`` classifies arrays (.npy, IDX) and image files (PNG, JPEG, BMP, GIF, TIFF;
read by `mnist_xp.images.read_digits` as one digit or a number of several, each
normalised like MNIST); ``preprocess`` writes the 28×28 images the model reads for one
picture.

Every answer, one digit or several, has the same JSON keys. For a picture of one
digit, and for every row of an array, the top-level fields describe that digit:
``prediction`` is its class label, ``probabilities``, ``probabilities_by_class`` and
``top_k`` its distribution. For a picture of several digits, ``prediction`` is the
number (a string, "2026"), ``probability`` the product of its digits' probabilities
(the chance that every digit is right, if their errors are independent and the
segmentation is right), and ``probabilities``, ``probabilities_by_class`` and
``top_k`` are null: a distribution over ten classes describes one digit, and each
digit's is in ``digits``. ``number`` (always a string) and ``digits`` (one entry per
digit, left to right, with its ``box`` in the picture) are there for every answer.

Rows of an array are single 28×28 digits (no segmentation); a blank row gets an error
line naming ``file[i]``, by the same rule as a blank picture (`mnist_xp.images.check_ink`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..data import read_idx
from ..errors import DataError, MnistXPError
from ..fileio.reading import NotRegularFileError, open_regular, read_npy
from ..fileio.writing import atomic_write
from ..images import IMAGE_SUFFIXES, is_blank, looks_like_image, read_digits_file, save_png
from ..images.blank import all_ink_error, blank_error, is_all_ink
from ..pixels import IMAGE_SIDE, N_PIXELS
from .common import UsageError, check_writable, load_model, say

__all__ = ["cmd_predict", "cmd_preprocess"]


def _read_images(path: Path, n_features: int) -> np.ndarray:
    """Rows of pixels from a .npy or IDX file: (n, n_features), uint8 or float."""
    start = _first_bytes(path)
    if start.startswith(_ZIP_MAGIC):
        raise DataError(f"{path}: an .npz archive, not an image, .npy or IDX file (a model? "
                        "give it with --model)")
    if path.suffix.lower() == ".json" or start.lstrip()[:1] in (b"[", b"{"):
        # JSON pixels are what serve takes; read as IDX they would fail on a "bad magic
        # number", which says nothing about what to do.
        raise DataError(f"{path}: JSON, which predict does not read; give a picture, .npy "
                        "or IDX file (save the array with numpy.save), or send the JSON to "
                        "mnist-xp serve")
    if path.suffix.lower() == ".npy" or start.startswith(np.lib.format.MAGIC_PREFIX):
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


# The first bytes of every zip archive (an .npz model or checkpoint among them).
_ZIP_MAGIC = b"PK\x03\x04"


def _first_bytes(path: Path) -> bytes:
    """The first 6 bytes of `path`, or b"" when it cannot be read (its reader says why)."""
    try:
        with open_regular(path) as f:
            return f.read(6)
    except OSError:
        return b""


# A directory INPUT contributes its images and these array files. By MNIST's naming,
# "*-idx3-ubyte" files hold images, "*-idx1-ubyte" ones labels (skipped).
_ARRAY_ENDINGS = (".npy", ".idx", ".idx.gz", "idx3-ubyte", "idx3-ubyte.gz")


def _expand_input(path: Path) -> list[Path]:
    """`path` itself, or the image and array files directly inside it if a directory."""
    if not path.is_dir():
        # A FIFO or device would block (or never end) the sniffing and reading below;
        # open_regular is the one place that tells them apart without blocking.
        try:
            open_regular(path).close()
        except NotRegularFileError as exc:
            raise DataError(f"{path}: {exc.strerror}; give an image, .npy or IDX file") from None
        except OSError:
            pass  # missing or unreadable: the reader says so, as for any input
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


def _read_picture(path: Path, n_features: int, invert: str,
                  classify=None) -> tuple[np.ndarray, list]:
    """One image file's digits, left to right: (k, 784) uint8 rows and their boxes."""
    if n_features != N_PIXELS:
        raise DataError(f"{path}: the model expects {n_features} pixels per image; "
                        f"pictures become {IMAGE_SIDE}x{IMAGE_SIDE} = {N_PIXELS}")
    digits = read_digits_file(path, invert=invert, classify=classify)
    rows = np.stack([d.image.reshape(-1) for d in digits])
    return rows, [tuple(int(v) for v in d.box) for d in digits]


def _digit(p: np.ndarray, labels: list, top_k: int, box) -> dict:
    """One digit's JSON-ready answer: the best class, all probabilities, the top k, its box."""
    order = np.argsort(-p, kind="stable")[:top_k]
    return {"prediction": labels[order[0]], "probability": float(p[order[0]]),
            "probabilities": [float(v) for v in p],
            "top_k": [{"prediction": labels[j], "probability": float(p[j])} for j in order],
            "box": list(box)}


def _prediction(path: Path, index: int | None, proba: np.ndarray, boxes: list, labels: list,
                top_k: int) -> dict:
    """One JSON-ready answer for a picture or array row whose digits have `proba` (k, n)."""
    digits = [_digit(p, labels, top_k, box) for p, box in zip(proba, boxes)]
    number = "".join(str(d["prediction"]) for d in digits)
    row = {"input": str(path), "index": index}
    if len(digits) == 1:
        (d,) = digits
        row.update(prediction=d["prediction"], probability=d["probability"],
                   probabilities=d["probabilities"],
                   probabilities_by_class={str(c): v for c, v in zip(labels, d["probabilities"])},
                   top_k=d["top_k"])
    else:
        # Per-class fields describe one digit; each digit's own are in "digits".
        row.update(prediction=number,
                   probability=float(np.prod([d["probability"] for d in digits])),
                   probabilities=None, probabilities_by_class=None, top_k=None)
    row.update(number=number, digits=digits)
    return row


def _line(where: str, row: dict) -> str:
    """predict's text line for one answer: the top k of one digit, or the number and its digits."""
    if len(row["digits"]) == 1:
        shown = ", ".join(f"{t['prediction']} ({t['probability']:.1%})" for t in row["top_k"])
        return f"{where}: {shown}"
    digits = ", ".join(f"{d['prediction']} ({d['probability']:.1%})" for d in row["digits"])
    return f"{where}: {row['number']} (digits: {digits})"


# An array row is one 28x28 digit: its box is the whole image.
_WHOLE = (0, 0, IMAGE_SIDE, IMAGE_SIDE)


def cmd_predict(args) -> int:
    """Classify every image in the inputs; a bad input (or blank array row) is reported and skipped."""
    model, _ = load_model(args)
    labels = [c.item() for c in np.asarray(model.classes_)]
    if args.top_k > len(labels):
        raise UsageError(f"--top-k {args.top_k}: the model knows {len(labels)} digits; "
                         f"use at most {len(labels)}")
    results, failed = [], 0

    def answer(where: str, row: dict) -> None:
        results.append(row)
        if not args.json:
            print(_line(where, row), flush=True)

    for given in args.inputs:
        try:
            files = _expand_input(given)
        except MnistXPError as exc:
            say(f"error: {exc}")
            failed += 1
            continue
        for path in files:
            try:
                if _is_picture(path):
                    rows, boxes = _read_picture(path, model.n_features_in_, args.invert,
                                                model.predict_proba)
                    proba = np.asarray(model.predict_proba(rows))
                    answer(str(path), _prediction(path, None, proba, boxes, labels, args.top_k))
                    continue
                rows = _read_images(path, model.n_features_in_)
                # The "no ink" rule is MNIST's (28x28); other models' rows are not judged.
                blank = (is_blank(rows) if rows.shape[1] == N_PIXELS
                         else np.zeros(len(rows), bool))
                full = (is_all_ink(rows) if rows.shape[1] == N_PIXELS
                        else np.zeros(len(rows), bool))
                blank = blank | full
                kept = rows if not blank.any() else rows[~blank]
                proba = np.asarray(model.predict_proba(kept)) if len(kept) else None
            except MnistXPError as exc:
                say(f"error: {exc}")
                failed += 1
                continue
            except MemoryError:
                # The readers name the file for a MemoryError while reading it; this is
                # one in the work after (a huge array's probabilities): the same line,
                # and the other inputs are still read.
                say(f"error: {path}: too large to process in the memory available")
                failed += 1
                continue
            answered = iter(proba if proba is not None else ())
            for i, empty in enumerate(blank):
                where = f"{path}[{i}]"
                if empty:
                    say(f"error: {all_ink_error(where) if full[i] else blank_error(where)}")
                    failed += 1
                else:
                    p = next(answered)[None]
                    answer(where, _prediction(path, i, p, [_WHOLE], labels, args.top_k))
    if args.json:
        print(json.dumps(results))
    return 2 if failed else 0


def cmd_preprocess(args) -> int:
    """Write the 28x28 image(s) the model reads for one picture (PNG, or .npy array)."""
    out = args.output
    kind = out.suffix.lower()
    if kind not in (".png", ".npy"):
        raise UsageError(f"-o {out}: give a .png file name (or .npy for the uint8 array)")
    if kind == ".npy" and args.scale != 1:
        raise UsageError(f"--scale {args.scale}: only a .png output can be enlarged, not {out}")
    check_writable(out, "-o")
    if out.resolve() == args.image.resolve():
        raise UsageError(f"-o {out}: that is the input picture; choose another file name")
    # The model reads digits that touch, to decide where to cut them, as predict does.
    model, _ = load_model(args)
    images = np.stack([d.image for d in read_digits_file(args.image, invert=args.invert,
                                                         classify=model.predict_proba)])
    k = len(images)
    if kind == ".png":
        # Several digits side by side, left to right, as the model reads them.
        save_png(np.hstack(list(images)), out, scale=args.scale)
        size = f"{IMAGE_SIDE * k * args.scale}x{IMAGE_SIDE * args.scale}"
    else:
        # One digit stays a (28, 28) array; several are (k, 28, 28), which predict reads back.
        array = images[0] if k == 1 else images
        try:
            with atomic_write(out) as f:
                np.save(f, array)
        except OSError as exc:
            raise DataError(f"{out}: cannot write ({exc.strerror or exc})") from None
        size = "x".join(map(str, array.shape))
    if k == 1:
        print(f"wrote {out} ({size}): the 28x28 image the model reads for {args.image}")
    else:
        print(f"wrote {out} ({size}): the {k} 28x28 images the model reads for {args.image}, "
              "left to right")
    return 0
