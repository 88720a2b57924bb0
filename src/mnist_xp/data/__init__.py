"""MNIST data: IDX files (`idx`), the verified download cache (`cache`), the sources and the bundled subset (`datasets`)."""

from mnist_xp.data.datasets import (
    FILE_NAMES,
    MNIST,
    default_cache_dir,
    download_mnist,
    load_bundled,
    load_idx_dir,
    load_mnist,
)
from mnist_xp.data.idx import read_idx, write_idx

__all__ = [
    "read_idx",
    "write_idx",
    "MNIST",
    "load_mnist",
    "load_bundled",
    "load_idx_dir",
    "download_mnist",
    "default_cache_dir",
    "FILE_NAMES",
]
