"""Which CPU engines this installation has, for tests that name the engine they expect."""

from __future__ import annotations

import pytest

from mnist_xp import _cengine

EXT, WHY_NOT = _cengine.load()
#: The engine `choose_engine` takes on the CPU for a run both fast engines cover.
CPU_FAST_ENGINE = "compiled" if EXT is not None else "numpy"
#: The reason the chooser gives with it: none, or why the compiled engine is absent.
CPU_FAST_REASON = "" if EXT is not None else WHY_NOT
#: How `mnist-xp train` names that engine on its ``engine:`` line (its start).
CPU_FAST_LINE = "compiled engine, " if EXT is not None else "NumPy fast path"

#: Why the layered NumPy engine leaves a plain one-hidden-layer run alone (the last of
#: the reasons the generic engine runs with, when the one-layer engines decline it).
LAYERED_DECLINES = "the layered NumPy path takes only deep networks, dropout or teachers"

#: Each CPU fast engine, always listed; the compiled one skips where it is absent.
CPU_ENGINES = [
    pytest.param("numpy"),
    pytest.param("compiled", marks=pytest.mark.skipif(
        EXT is None, reason=f"compiled engine absent: {WHY_NOT}")),
]


def use_engine(monkeypatch, name: str) -> None:
    """Make `name` (``numpy`` or ``compiled``) the CPU fast engine for this test."""
    if name == "numpy":
        monkeypatch.setenv("MNIST_XP_ENGINE", "numpy")
    else:
        monkeypatch.delenv("MNIST_XP_ENGINE", raising=False)


def assert_same_training(fast: dict, slow: dict, fast_history, slow_history, dtype,
                         tol: float) -> None:
    """Two runs' parameters agree within `tol` and their epochs' records match."""
    import numpy as np
    import pytest

    for k in slow:
        assert fast[k].dtype == dtype and fast[k].shape == slow[k].shape
        np.testing.assert_allclose(fast[k], slow[k], rtol=tol, atol=tol, err_msg=k)
    for a, b in zip(fast_history, slow_history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=tol)
        assert a["train_accuracy"] == b["train_accuracy"]
