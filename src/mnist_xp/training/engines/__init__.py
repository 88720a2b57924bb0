"""Training engines, and the one place that chooses which of them trains a run.

Each backend has a list of fast engines, fastest first: the compiled engine, the
NumPy engine, then the layered NumPy engine (deep networks, dropout, teachers) on
NumPy, `CudaEngine` on CuPy. `choose_engine` takes the first that covers the run, and
otherwise the generic engine, with the fast engines' own words for why (``"float64
has no compiled engine (float32 only)"``). The choice is shown to the user: in
``mnist-xp train``'s ``engine:`` line, in every ``--metrics`` record, as
``MLPClassifier.engine_`` and in ``mnist-xp info``.
"""

from __future__ import annotations

from .base import Engine, EngineChoice, EngineSetup, EpochInputs
from .compiled_engine import CompiledEngine
from .cuda_engine import CudaEngine
from .generic import GenericEngine
from .numpy_engine import NumpyEngine
from .numpy_layers import NumpyLayersEngine

__all__ = ["Engine", "EngineChoice", "EngineSetup", "EpochInputs", "GenericEngine",
           "CompiledEngine", "NumpyEngine", "NumpyLayersEngine", "CudaEngine", "FAST_ENGINES",
           "choose_engine", "engine_summary"]

#: The fast engines of each backend (by `Backend.name`), fastest first; a backend not
#: listed has none.
FAST_ENGINES: dict[str, tuple[type[Engine], ...]] = {
    "numpy": (CompiledEngine, NumpyEngine, NumpyLayersEngine), "cupy": (CudaEngine,)}


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
        Its name and description, and the reason the fastest engine did not run: the
        first fast engine's reason when a later one runs, every fast engine's reason
        (joined by ``"; "``) when the generic engine runs, empty when the fastest runs.
    """
    fast_engines = FAST_ENGINES.get(setup.backend.name, ())
    if not fast:
        reasons = ["fast engines turned off"]
    elif not fast_engines:
        reasons = [f"the {setup.backend.name} backend has no fast engine"]
    else:
        reasons = []
        for cls in fast_engines:
            reason = cls.unsupported_reason(setup)
            if reason is None:
                engine = cls(setup)
                return engine, EngineChoice(engine.name, engine.description,
                                            reasons[0] if reasons else "")
            reasons.append(reason)
    engine = GenericEngine(setup)
    return engine, EngineChoice(engine.name, engine.description, "; ".join(reasons))


def engine_summary(backend_name: str) -> str:
    """One line for ``mnist-xp info``: a backend's fast engines and what they cover."""
    covers = []
    for cls in FAST_ENGINES.get(backend_name, ()):
        absent = cls.absent_reason()
        covers.append(cls.covers if absent is None else f"{cls.covers} [absent: {absent}]")
    return "; otherwise the ".join(covers + [GenericEngine.covers])
