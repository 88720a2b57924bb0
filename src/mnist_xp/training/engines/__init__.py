"""Training engines, and the one place that chooses which of them trains a run.

Each backend has at most one fast engine: `NumpyEngine` on NumPy, `CudaEngine` on CuPy.
`choose_engine` takes it when it covers the run, and otherwise the generic engine,
with the fast engine's own words for why (``"nesterov has no NumPy fast path yet"``).
The choice is shown to the user: in ``mnist-xp train``'s ``engine:`` line, in every
``--metrics`` record, as ``MLPClassifier.engine_`` and in ``mnist-xp info``.
"""

from __future__ import annotations

from .base import Engine, EngineChoice, EngineSetup, EpochInputs
from .cuda_engine import CudaEngine
from .generic import GenericEngine
from .numpy_engine import NumpyEngine

__all__ = ["Engine", "EngineChoice", "EngineSetup", "EpochInputs", "GenericEngine",
           "NumpyEngine", "CudaEngine", "FAST_ENGINES", "choose_engine", "engine_summary"]

#: The fast engine of each backend (by `Backend.name`); a backend not listed has none.
FAST_ENGINES: dict[str, type[Engine]] = {"numpy": NumpyEngine, "cupy": CudaEngine}


def choose_engine(setup: EngineSetup, *, fast: bool = True) -> tuple[Engine, EngineChoice]:
    """The engine that trains `setup`, and why it was chosen.

    Parameters
    ----------
    setup : EngineSetup
    fast : bool
        False forces the generic engine (the reference the fast ones are tested against).

    Returns
    -------
    engine : Engine
        Constructed for `setup`.
    choice : EngineChoice
        Its name and description, and the reason a fast engine did not run (empty
        when the fast engine runs).
    """
    fast_engine = FAST_ENGINES.get(setup.backend.name)
    if not fast:
        reason = "fast engines turned off"
    elif fast_engine is None:
        reason = f"the {setup.backend.name} backend has no fast engine"
    else:
        reason = fast_engine.unsupported_reason(setup)
        if reason is None:
            engine = fast_engine(setup)
            return engine, EngineChoice(engine.name, engine.description)
    engine = GenericEngine(setup)
    return engine, EngineChoice(engine.name, engine.description, reason)


def engine_summary(backend_name: str) -> str:
    """One line for ``mnist-xp info``: a backend's fast engine and what it covers."""
    fast_engine = FAST_ENGINES.get(backend_name)
    if fast_engine is None:
        return GenericEngine.covers
    return f"{fast_engine.covers}; otherwise the {GenericEngine.covers}"
