"""Reading ``.npz`` archives a user names (models, checkpoints): every failure one line.

`read_npz` is the one reader behind ``--model`` and ``--resume``. It reads the archive
member by member with `mnist_xp.fileio.reading`, not ``np.load``: only ``.npy``
members are ever touched (np.load would hand back any other member as raw bytes,
inflating it whole), and every wanted member's header is checked -- parseable, no
object dtype (which would need unpickling), no more data than the archive can hold
-- before any array is allocated. Whatever the zip, zlib or NumPy layers raise
becomes the caller's error class, one line starting with the path.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Callable, Iterable
from typing import NamedTuple
from pathlib import Path

import numpy as np

from ..errors import MnistXPError, exception_line
from .reading import NpyHeaderError, open_user_file, read_npy_header, read_npy_stream, too_large

__all__ = ["read_npz", "Header"]

# The members read before the others' data (`first`) are small JSON strings; a header
# declaring more than this is refused before it is read.
_MAX_FIRST = 16 << 20


class Header(NamedTuple):
    """What a member's ``.npy`` header declares: the array's shape and dtype."""

    shape: tuple
    dtype: np.dtype

# Deflate cannot expand data more than ~1032:1, so a member declaring more array data
# than this many times the size of the whole archive is corrupt or hostile.
_MAX_DEFLATE_RATIO = 1100

_NPY_MAGIC = np.lib.format.MAGIC_PREFIX
_ZIP_MAGIC = b"PK\x03\x04"


def read_npz(path: str | os.PathLike, error: type[MnistXPError], kind: str,
             members: Iterable[str] | None = None, optional: Iterable[str] = (),
             missing: str = "missing {}", bare: str | None = None, first: Iterable[str] = (),
             expect: Callable[[dict, dict], None] | None = None) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` archive at `path`, by member name without ``.npy``.

    Parameters
    ----------
    path : str or os.PathLike
    error : type
        The `MnistXPError` subclass every failure is raised as.
    kind : str
        What the file is, for messages ("model file": "not a readable .npz model
        file (...)").
    members : iterable of str, optional
        The members to read (names without ``.npy``); all must be there. None: every
        ``.npy`` member.
    optional : iterable of str
        Members read when present.
    missing : str
        The message for absent `members`, with ``{}`` for their names.
    bare : str, optional
        The message for a bare ``.npy`` array given instead of an archive.
    first : iterable of str
        Members (at most 16 MiB each, such as the metadata) read before any other
        member's data, for `expect`.
    expect : callable, optional
        ``expect(first_arrays, headers)``, called once every wanted member's header is
        read but before the data of any member outside `first`: `headers` maps each
        wanted member to its `Header`. It raises (an `error`) when the headers are not
        what the first members describe, so a member declaring a huge array the
        metadata does not allow is refused before anything is allocated.

    Returns
    -------
    dict of str to numpy.ndarray

    Raises
    ------
    error
        Missing, unreadable or not a regular file; not a zip archive (a bare ``.npy``
        array is named as such); corrupt zip or deflate data; a member that is not
        ``.npy`` data, has an unparseable header, holds pickled objects or declares
        more data than the archive can hold; an unsupported compression method or an
        encrypted member; or arrays too large for the memory available.
    """
    with open_user_file(path, error, kind) as f:
        try:
            size = os.fstat(f.fileno()).st_size
            if not zipfile.is_zipfile(f):
                f.seek(0)
                start = f.read(len(_NPY_MAGIC))
                f.seek(0)
                if start == _NPY_MAGIC:
                    raise error(f"{path}: " + (bare or f"not a readable .npz {kind} "
                                               "(a bare .npy array, not a zip archive)"))
                if f.read(len(_ZIP_MAGIC)) == _ZIP_MAGIC:
                    # A zip's directory is at its end: a start without it is a cut copy.
                    raise error(f"{path}: not a readable .npz {kind} (a truncated or corrupt "
                                "zip archive: its central directory is missing); copy or "
                                "save it again")
                raise error(f"{path}: not a readable .npz {kind} (not a zip archive)")
            with zipfile.ZipFile(f) as archive:
                names = {n[:-4] for n in archive.namelist() if n.endswith(".npy")}
                if members is None:
                    wanted = sorted(names)
                else:
                    wanted = list(members)
                    absent = [m for m in wanted if m not in names]
                    if absent:
                        raise error(f"{path}: " + missing.format(", ".join(sorted(absent))))
                wanted += [m for m in optional if m in names and m not in wanted]
                return _read_members(path, error, archive, size, wanted, first, expect)
        except MnistXPError:
            raise
        except MemoryError as exc:
            raise error(f"{path}: {too_large(exc)}") from None
        except PermissionError:
            raise error(f"{path}: permission denied") from None
        except (OSError, zipfile.BadZipFile, EOFError, ValueError, zlib.error,
                NotImplementedError,  # a compression method zipfile cannot undo
                RuntimeError,  # an encrypted member
                ) as exc:
            raise error(f"{path}: not a readable .npz {kind} ({exception_line(exc)})") from None


def _read_members(path: Path, error, archive: zipfile.ZipFile, archive_size: int,
                  wanted: list[str], first: Iterable[str] = (),
                  expect=None) -> dict[str, np.ndarray]:
    """The `wanted` arrays of an archive, every header checked before any data is read."""
    infos = {m: archive.getinfo(f"{m}.npy") for m in wanted}
    problems, bounds, headers = [], {}, {}
    for name, info in infos.items():  # first pass: headers only
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            problems.append(f"member {info.filename} uses an unsupported compression "
                            f"method ({info.compress_type})")
            continue
        # What the member can really hold: the sizes in the zip directory may lie,
        # but stored data cannot exceed its compressed size, nor deflated data its
        # compressed size times deflate's ratio, nor either the archive itself.
        stored = min(info.compress_size, archive_size)
        if info.compress_type == zipfile.ZIP_DEFLATED:
            stored *= _MAX_DEFLATE_RATIO
        bounds[name] = min(info.file_size, stored)
        with archive.open(info) as member:
            try:
                shape, _, dtype = read_npy_header(member, bounds[name])
                headers[name] = Header(tuple(shape), dtype)
            except NpyHeaderError as exc:
                if "pickled" in str(exc):  # said first, whatever else is wrong
                    raise error(f"{path}: {exc}") from None
                problems.append(f"member {info.filename}: {exc}")
    if problems:
        raise error(f"{path}: {problems[0]}")
    loaded = {}
    early = [m for m in first if m in infos]
    for name in early:
        if np.prod(headers[name].shape) * headers[name].dtype.itemsize > _MAX_FIRST:
            raise error(f"{path}: member {infos[name].filename} is larger than "
                        f"{_MAX_FIRST >> 20} MiB; not a file mnist_xp wrote")
        loaded[name] = _read_member(path, error, archive, infos[name], bounds[name])
    if expect is not None:
        expect(dict(loaded), headers)
    for name, info in infos.items():  # the data, now known to be bounded and expected
        if name not in loaded:
            loaded[name] = _read_member(path, error, archive, info, bounds[name])
    return loaded


def _read_member(path, error, archive: zipfile.ZipFile, info, bound: int) -> np.ndarray:
    """One member's array, its header already checked against `bound`."""
    with archive.open(info) as member:
        try:
            return read_npy_stream(member, bound)
        except NpyHeaderError as exc:
            raise error(f"{path}: member {info.filename}: {exc}") from None
