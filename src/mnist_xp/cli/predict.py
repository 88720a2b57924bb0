"""``mnist-xp predict`` and ``preprocess``: the model on people's own pictures and arrays.

``predict`` classifies arrays (.npy, IDX) and image files (PNG, JPEG, BMP, GIF, TIFF;
normalised like MNIST by `mnist_xp.images`); ``preprocess`` writes the 28×28 image
the model sees for one picture.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..data import read_idx
from ..errors import DataError, MnistXPError
from ..fileio.reading import read_npy
from ..fileio.writing import atomic_write
from ..images import IMAGE_SUFFIXES, looks_like_image, preprocess_file, save_png
from ..pixels import IMAGE_SIDE, N_PIXELS
from .common import UsageError, check_writable, load_model, say

__all__ = ["cmd_predict", "cmd_preprocess"]


def _read_images(path: Path, n_features: int) -> np.ndarray:
    """Rows of pixels from a .npy or IDX file: (n, n_features), uint8 or float."""
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
    if n_features != N_PIXELS:
        raise DataError(f"{path}: the model expects {n_features} pixels per image; "
                        f"pictures become {IMAGE_SIDE}x{IMAGE_SIDE} = {N_PIXELS}")
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
    model, _ = load_model(args)
    n_classes = len(model.classes_)
    if args.top_k > n_classes:
        raise UsageError(f"--top-k {args.top_k}: the model knows {n_classes} digits; "
                         f"use at most {n_classes}")
    results, failed = [], 0
    for given in args.inputs:
        try:
            files = _expand_input(given)
        except MnistXPError as exc:
            say(f"error: {exc}")
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
                say(f"error: {exc}")
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
    check_writable(out, "-o")
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
    size = IMAGE_SIDE * args.scale
    print(f"wrote {out} ({size}x{size}): the 28x28 image the model sees for {args.image}")
    return 0
