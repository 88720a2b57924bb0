"""Small synthetic MNIST-style datasets for the data-layer tests."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np

from mnist_xp.data import FILE_NAMES, write_idx


def synthetic_mnist(n_train: int = 5, n_test: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    """Random uint8 images (n, 28, 28) and labels (n,) in 0..9, keyed by FILE_NAMES role."""
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_mnist_dir(
    directory: Path, arrays: dict[str, np.ndarray], gz: bool | dict[str, bool] = True
) -> Path:
    """Write `arrays` under their official names, gzipped per `gz` (one flag or per role)."""
    directory.mkdir(parents=True, exist_ok=True)
    for role, array in arrays.items():
        compress = gz[role] if isinstance(gz, dict) else gz
        write_idx(directory / (FILE_NAMES[role] + (".gz" if compress else "")), array)
    return directory


def gunzip_sha256(data: bytes) -> str:
    """Hex SHA-256 of the decompressed content of gzip `data`."""
    return hashlib.sha256(gzip.decompress(data)).hexdigest()


def blobs(n: int = 90, side: int = 6, n_classes: int = 4, seed: int = 0, pixels: bool = True):
    """Separable images (n, side*side) around random class centres, int64 labels.

    uint8 pixels, or (``pixels=False``) float32 in [0, 1].
    """
    rng = np.random.default_rng(seed)
    centres = rng.uniform(30, 220, size=(n_classes, side * side))
    y = rng.integers(0, n_classes, n).astype(np.int64)
    x = np.clip(centres[y] + rng.normal(0, 25, size=(n, side * side)), 0, 255)
    return (x.astype(np.uint8) if pixels else (x / 255).astype(np.float32)), y
