"""The compiled training engine's C extension (`epoch.c`), loaded on first use.

`load` imports it once and keeps the answer: the module, or why it is not there
(not built, scipy-openblas32 missing, a failed load). The extension links against
scipy-openblas32's ``libscipy_openblas``; importing `scipy_openblas32` first loads that
library with ``RTLD_GLOBAL``, which is how the extension finds it at run time (the
build environment's path is gone by then, so there is no rpath to it).
"""

from __future__ import annotations

import importlib
import importlib.util
import os

__all__ = ["load", "default_threads", "mark_used", "forked_after_use"]

_LOADED: tuple[object | None, str] | None = None
#: Spins at an OpenMP barrier before a thread sleeps, unless the environment sets it.
GOMP_SPINCOUNT = "1000"
# GNU OpenMP's thread pool does not survive fork(): a child whose parent has run a
# parallel region hangs in its own first one. A child forked after the engine ran is
# told so (and the NumPy engine trains there).
_USED = False
_FORKED_AFTER_USE = False


def mark_used() -> None:
    """Record that this process has run the extension's OpenMP threads."""
    global _USED
    _USED = True


def forked_after_use() -> bool:
    """Whether this process was forked from one that had run the extension's threads."""
    return _FORKED_AFTER_USE


def _after_fork_in_child() -> None:
    global _FORKED_AFTER_USE
    _FORKED_AFTER_USE = _FORKED_AFTER_USE or _USED


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def load():
    """The extension module and an empty reason, or None and why it cannot be used.

    Returns
    -------
    module : module or None
        ``mnist_xp._cengine._epoch``.
    reason : str
        One clause for the engine line, e.g. ``"the compiled engine is not built (...)"``.
    """
    global _LOADED
    if _LOADED is None:
        _LOADED = _import()
    return _LOADED


def _import():
    """Import scipy_openblas32 (it loads the BLAS), then the extension."""
    try:
        import scipy_openblas32  # noqa: F401  (loads libscipy_openblas, RTLD_GLOBAL)
    except Exception as exc:  # an ImportError, or a broken wheel's OSError
        return None, f"scipy-openblas32 is not importable ({_first_line(exc)})"
    if importlib.util.find_spec(f"{__name__}._epoch") is None:
        return None, "the compiled engine is not built (no C compiler with OpenMP at install?)"
    # GNU OpenMP reads its spin count once, as it loads with the extension. Its default
    # (300,000 spins at a barrier before sleeping) is no faster on an idle machine and
    # up to 15x slower on busy cores, where a spinning thread holds the core its
    # partner needs; 1,000 spins measured as fast idle and 0.3 s, not 2.5 s, an epoch
    # busy (batch 128, 2 cores). The user's own setting wins; the environment is restored.
    own = "GOMP_SPINCOUNT" in os.environ or "OMP_WAIT_POLICY" in os.environ
    if not own:
        os.environ["GOMP_SPINCOUNT"] = GOMP_SPINCOUNT
    try:
        return importlib.import_module(f"{__name__}._epoch"), ""
    except ImportError as exc:  # built, but unloadable: a missing symbol or library
        return None, f"the compiled engine does not load ({_first_line(exc)})"
    finally:
        if not own:
            del os.environ["GOMP_SPINCOUNT"]


def _first_line(exc: BaseException) -> str:
    """An exception's message, first line only."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def default_threads() -> int:
    """Threads per epoch: ``MNIST_XP_THREADS`` if set, else OpenMP's default team size.

    OpenMP's default follows ``OMP_NUM_THREADS`` (which joblib sets in its workers, so a
    parallel grid search does not oversubscribe the cores) and otherwise the cores this
    process may run on.

    Raises
    ------
    ValueError
        ``MNIST_XP_THREADS`` is not a positive integer.
    """
    value = os.environ.get("MNIST_XP_THREADS", "").strip()
    if value:
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"MNIST_XP_THREADS must be a positive integer, got {value!r}")
        return int(value)
    ext, _ = load()
    if ext is not None:
        return ext.max_threads()
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
