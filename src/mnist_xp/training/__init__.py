"""Training: the loop, its settings, schedules, checkpoints, signals and engines.

::

    training/
      config.py      TrainConfig, built from mnist_xp.settings
      schedule.py    learning rate of every step
      loop.py        train(): one engine, one device read per epoch
      checkpoint.py  TrainState: resumable state between epochs (npz + JSON)
      signals.py     SIGINT/SIGTERM ask the loop to stop after a step
      engines/       base (the contract), generic, numpy_engine, cuda_engine (+ .cu)
"""

from .checkpoint import TrainState, data_fingerprint, load_state, save_state
from .config import TrainConfig
from .engines import EngineChoice, choose_engine
from .loop import TrainingHooks, train
from .schedule import learning_rate_at

__all__ = ["TrainConfig", "TrainingHooks", "train", "learning_rate_at", "TrainState",
           "save_state", "load_state", "data_fingerprint", "EngineChoice", "choose_engine"]
