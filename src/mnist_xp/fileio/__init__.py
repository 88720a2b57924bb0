"""Files on disk: `reading` opens what a user names, defensively, and reads ``.npy``
data; `archive` reads ``.npz`` archives; `writing` writes atomically."""

from .archive import read_npz
from .reading import open_regular, open_user_file, read_npy, read_npy_header
from .writing import atomic_write

__all__ = ["atomic_write", "open_regular", "open_user_file", "read_npy", "read_npy_header",
           "read_npz"]
