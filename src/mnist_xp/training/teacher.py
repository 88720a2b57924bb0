"""The teacher of a distilled run: networks whose softened probabilities a student learns.

Knowledge distillation (Hinton, Vinyals & Dean, "Distilling the knowledge in a neural
network", 2015): the student is trained on a mix of the labels and the teacher's class
probabilities at a temperature ``T > 1``, which carry what the teacher knows of how
alike the classes look. The teacher's forward pass runs on the student's device, on the
very batch the student sees after its shifts or distortions, inside the engine's step:
no soft target ever travels through the host.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..backend import Backend, to_numpy
from ..model import Architecture, forward, soft_targets

__all__ = ["Teacher", "resolve_teacher", "teacher_models"]


@dataclass(frozen=True)
class Teacher:
    """One or more networks on the student's device, and how their soft targets are mixed in.

    Attributes
    ----------
    networks : tuple of (dict of device arrays, Architecture)
        Each teacher network's parameters, in the student's dtype, and its layers.
    temperature : float
        ``T``: the soft targets are ``softmax(logits / T)``, averaged over the networks.
    weight : float
        The soft term's share of the loss, in [0, 1].
    """

    networks: tuple
    temperature: float
    weight: float

    def soft_targets(self, x, xp):
        """The mean of the networks' ``softmax(logits / T)`` for the float batch `x`.

        Parameters
        ----------
        x : device array, shape (batch, n_inputs), the student's float dtype
            The batch as the student sees it (scaled, shifted or distorted).
        xp : array namespace

        Returns
        -------
        device array, shape (batch, n_outputs), the dtype of `x`; rows sum to one.
        """
        total = None
        for params, arch in self.networks:
            p = soft_targets(forward(params, x, arch, xp)[1], self.temperature, xp)
            total = p if total is None else total + p
        return total if len(self.networks) == 1 else total * (1.0 / len(self.networks))


def teacher_models(teacher) -> list:
    """The teacher setting as a flat list: model paths and fitted models (ensembles opened)."""
    items = teacher if isinstance(teacher, (list, tuple)) else [teacher]
    out = []
    for item in items:
        members = getattr(item, "models", None)  # an Ensemble: its members, averaged alike
        out.extend(members if isinstance(members, list) else [item])
    return out


def resolve_teacher(teacher, *, classes: np.ndarray, n_features: int, dtype, backend: Backend,
                    temperature: float, weight: float, deskew: bool = False) -> Teacher:
    """Load and check the `teacher` setting for a student; its networks on the student's device.

    Parameters
    ----------
    teacher : MLPClassifier, Ensemble, path, or a list of them
    classes : numpy.ndarray
        The student's class labels; every teacher must have exactly these, in order.
    n_features : int
        The student's input size.
    dtype : numpy dtype
        The student's float type; the teacher's weights are cast to it.
    backend : Backend
    temperature, weight : float
    deskew : bool
        Whether the student deskews its images; the teacher reads the student's batches
        as they are, so it must have been trained the same way.

    Returns
    -------
    Teacher

    Raises
    ------
    ValueError
        A teacher that is not fitted, not a cross-entropy `MLPClassifier`, or that reads
        other images (size, or deskewed or not) or classes than the student's; the
        message names it.
    ModelFileError
        A teacher file that cannot be loaded.
    """
    from ..model_files import load

    networks = []
    items = teacher_models(teacher)
    for k, item in enumerate(items, start=1):
        name = (os.fspath(item) if isinstance(item, (str, os.PathLike))
                else "the teacher" if len(items) == 1 else f"teacher model {k} of {len(items)}")
        model = load(item, device=backend) if isinstance(item, (str, os.PathLike)) else item
        params = getattr(model, "params_", None)
        if params is None or not hasattr(model, "_arch"):
            raise ValueError(f"{name} is not fitted: a teacher must be a fitted mnist_xp "
                             "MLPClassifier (or its model file)")
        arch: Architecture = model._arch()
        if arch.loss != "cross_entropy":
            raise ValueError(f"{name}: a teacher must be a cross-entropy network; this one "
                             f"has loss={arch.loss!r}, whose outputs are no softmax to soften")
        if arch.n_inputs != n_features:
            raise ValueError(f"{name} reads {arch.n_inputs} pixels per image, the training "
                             f"data has {n_features}; a teacher must read the student's images")
        if bool(getattr(model, "deskew", False)) != bool(deskew):
            raise ValueError(
                f"{name} was trained {'without' if deskew else 'with'} deskewing and the "
                f"student {'deskews' if deskew else 'does not'}; a teacher reads the "
                "student's batches as they are, so train both with the same deskew setting "
                "(--deskew or --no-deskew; deskew= from Python)")
        own = to_numpy(model.classes_)
        if own.shape != classes.shape or not np.array_equal(own, classes):
            raise ValueError(f"{name} has classes {own.tolist()}, the training data "
                             f"{classes.tolist()}; a teacher must have the student's classes")
        with backend.activate():
            placed = {key: backend.asarray(np.asarray(to_numpy(v), dtype=dtype))
                      for key, v in params.items()}
        networks.append((placed, arch))
    return Teacher(tuple(networks), float(temperature), float(weight))
