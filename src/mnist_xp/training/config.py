"""`TrainConfig`: the settings of one training run, built from `mnist_xp.settings`.

Its fields are the table's model-independent training settings (`TRAINING_SETTINGS`,
with their defaults), plus ``warp_bank``, the number of distinct warps drawn per epoch,
which is a property of the augmenter rather than a user's setting. Constructing one
checks every value and every rule between them, exactly as the estimator and the CLI
do.
"""

from __future__ import annotations

from dataclasses import field, make_dataclass

from ..augment import WARP_BANK, Distortion
from ..settings import TRAINING_SETTINGS, augment_active, check_settings

__all__ = ["TrainConfig"]


class _TrainConfigBase:
    """Checks and derived values shared by every `TrainConfig`."""

    def __post_init__(self):
        values = {s.name: getattr(self, s.name) for s in TRAINING_SETTINGS}
        check_settings(values)
        if not (isinstance(self.warp_bank, int) and self.warp_bank >= 1):
            raise ValueError(f"warp_bank must be a positive integer, got {self.warp_bank!r}")

    @property
    def distortion(self) -> Distortion | None:
        """The per-image distortion, or None when off."""
        return Distortion.from_dict(self.augment) if self.warps_on else None

    @property
    def warps_on(self) -> bool:
        """Whether images are distorted one by one."""
        return augment_active(self.augment)


def _frozen_default(value):
    # dict defaults must not be shared between instances
    return field(default_factory=lambda: dict(value)) if isinstance(value, dict) else field(default=value)


TrainConfig = make_dataclass(
    "TrainConfig",
    [(s.name, object, _frozen_default(s.default)) for s in TRAINING_SETTINGS]
    + [("warp_bank", int, field(default=WARP_BANK))],
    bases=(_TrainConfigBase,),
    frozen=True,
    namespace={"__doc__": "Settings of one training run; fields as in `mnist_xp.settings`.",
               "__module__": __name__},
)
