"""``mnist-xp train``: settings from the preset and flags, the engine shown, checkpoints on signals."""

from __future__ import annotations

import hashlib
import json
import signal
from pathlib import Path

import numpy as np

from ..errors import DataError, ModelFileError, SettingError, TrainingInterrupted
from ..estimator import MLPClassifier
from ..fileio.writing import atomic_write
from ..model import Architecture
from ..model_files import jsonable_settings, save
from ..reporting.progress import EpochProgress, format_epoch
from ..settings import (
    AUGMENT_FIELDS,
    ESTIMATOR_SETTINGS,
    augment_active,
    check_against_data,
    check_settings,
    flag_name,
    preset_overrides,
    run_epochs,
    validation_size,
)
from ..training import data_fingerprint, load_state, save_state
from ..training.signals import stop_on_signals
from ..training.teacher import resolve_teacher, teacher_models
from .common import (
    UsageError,
    backend_from,
    check_figure_dir,
    check_writable,
    data_from,
    flatten,
    plural,
    say,
)
from .parser import TRAINING_FLAGS, augment_flags_given, build_parser

__all__ = ["cmd_train"]


def cmd_train(args) -> int:
    """Train, report, and optionally save the model and per-epoch metrics."""
    check_writable(args.save, "--save")
    check_writable(args.metrics, "--metrics")
    check_writable(args.checkpoint, "--checkpoint")
    check_figure_dir(args.plot, "--plot")
    for path in args.teacher or ():
        if not path.is_file():
            what = "is a directory" if path.is_dir() else "no such file"
            raise UsageError(f"--teacher {path}: {what}; give a model saved by "
                             "'mnist-xp train --save'")
    if not args.teacher and args.resume is None:
        given = [f for f in ("temperature", "distill_weight") if getattr(args, f) is not None]
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise UsageError(f"{flag} only applies to distillation; give --teacher MODEL too, "
                             f"or drop {flag}")
    if args.resume is not None:
        return _train(args, *_resume_settings(args))
    return _train(args, None, None, _flag_settings(args))


def _flag_settings(args) -> dict:
    """The preset's settings overridden by the flags given, checked as a whole."""
    given = {s.name: getattr(args, s.dest) for s in ESTIMATOR_SETTINGS
             if s.flag is not None and getattr(args, s.dest) is not None}
    settings = preset_overrides(args.preset, given)
    if args.teacher:
        # absolute: a checkpoint resumed from another directory finds the same files
        settings["teacher"] = [str(p.resolve()) for p in args.teacher]
    settings["augment"] = _augment_settings(args, settings["augment"])
    if augment_active(settings["augment"]) and args.shift is None:
        settings["shift"] = 0  # distortions asked for replace the preset's batch shifts
    settings.pop("device")
    try:
        check_settings(settings, flag_name)
    except SettingError as exc:
        raise UsageError(str(exc)) from None
    return settings


def _augment_settings(args, preset: dict | None) -> dict | None:
    """The per-image distortion settings: the preset's, overridden by the flags."""
    given = augment_flags_given(args)
    if args.no_augment:
        if given:
            raise UsageError(f"--no-augment contradicts {given[0]}")
        return None
    settings = dict(preset or {})
    for key, s in AUGMENT_FIELDS.items():
        if getattr(args, s.dest) is not None:
            settings[key] = getattr(args, s.dest)
    return settings if augment_active(settings) else None


def _resume_settings(args):
    """The checkpoint of --resume and its settings; refuses flags that would change them."""
    defaults = build_parser().parse_args(["train"])
    changed = [f for f in TRAINING_FLAGS if getattr(args, f) != getattr(defaults, f)]
    if changed:
        flag = "--" + changed[0].replace("_", "-")
        raise UsageError(f"{flag} cannot be combined with --resume, which continues the "
                         f"saved run with its own settings; drop {flag}")
    state, info = load_state(args.resume)
    known = {s.name for s in ESTIMATOR_SETTINGS}
    settings = {k: v for k, v in info["settings"].items() if k in known and k != "device"}
    return state, info, settings


def _check_classes(data) -> np.ndarray:
    """The training set's digits; it needs two or more, and every digit the test set has."""
    classes = np.unique(data.y_train)
    if len(classes) < 2:
        raise DataError(f"{data.source}: the training labels hold only the digit {classes[0]}; "
                        "training needs at least two")
    unseen = np.setdiff1d(np.unique(data.y_test), classes)
    if unseen.size:
        raise DataError(f"{data.source}: the test labels hold digits the training labels lack "
                        f"({', '.join(map(str, unseen))}); a model can never predict them")
    return classes


def _summary(arch: Architecture, model: MLPClassifier, epochs: int) -> str:
    """The ``model:`` line: network, dtype, and the recipe."""
    if model.optimizer in ("sgd", "nesterov"):
        name = "momentum" if model.optimizer == "sgd" else "nesterov"
        optimizer = f"{name} {model.momentum:g}"
    else:
        optimizer = model.optimizer
    if model.augment:
        augment = "distortions " + ", ".join(f"{k} {v:g}" for k, v in model.augment.items())
    else:
        augment = f"shift {model.shift}"
    extras = f", dropout {model.dropout:g}" if model.dropout else ""
    extras += ", deskewed" if model.deskew else ""
    longer = f" (at least {model.min_steps:,} steps)" if epochs > model.epochs else ""
    if model.teacher is not None:
        extras += (f"; distilled from {plural(len(teacher_models(model.teacher)), 'teacher')} "
                   f"at temperature {model.temperature:g}, weight {model.distill_weight:g}")
    return (f"model: {arch.label} {arch.activation}, "
            f"{arch.loss.replace('_', ' ')}, {model.dtype} ({arch.n_parameters:,} parameters); "
            f"{plural(epochs, 'epoch')}{longer}, batch {model.batch_size}, lr "
            f"{model.learning_rate:g} ({model.schedule}), {optimizer}, {augment}{extras}")


def _train(args, state, info, settings) -> int:
    """Train with `settings` (from flags, or from the checkpoint `state` of --resume)."""
    backend = backend_from(args)
    data = data_from(args)
    x_train = flatten(data.x_train)
    try:
        check_against_data(settings, *x_train.shape, flag_name, clip_batch=False)
    except SettingError as exc:
        raise UsageError(str(exc)) from None
    classes = _check_classes(data)
    model = MLPClassifier(**settings, device=backend)
    _check_teacher_files(model, classes, x_train.shape[1], backend,
                         f"--resume {args.resume}: its teacher" if state is not None else "--teacher")
    n_train = x_train.shape[0] - validation_size(model.validation_fraction, x_train.shape[0])
    epochs = run_epochs(settings, n_train)
    fingerprint = data_fingerprint(x_train, data.y_train)
    if state is not None:
        if info["data_fingerprint"] != fingerprint or not np.array_equal(info["classes"], classes):
            raise UsageError(f"--resume {args.resume}: that run trained on other data than "
                             f"{data.source}; give the same --data/--data-dir as it had")
        if state.epoch >= epochs:
            raise UsageError(f"--resume {args.resume}: that run already finished "
                             f"({state.epoch} of {epochs} epochs); nothing to continue")
    arch = Architecture(x_train.shape[1], model.n_hidden, len(classes), model.activation,
                        model.loss)
    print(f"data: {data.source}")
    print(f"device: {backend.describe()}")
    print(_summary(arch, model, epochs), flush=True)

    records: list[dict] = []

    def write_metrics():
        if args.metrics is not None:
            with atomic_write(args.metrics, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in records)

    def on_epoch(record):
        records.append(record)
        if not args.quiet:
            print(format_epoch(record), flush=True)
        write_metrics()

    if state is not None:
        records.extend(state.history)
        print(f"resuming after epoch {state.epoch} from {args.resume}", flush=True)

    teacher_hashes = _teacher_hashes(model)
    if state is not None:
        _check_teachers(args.resume, info, teacher_hashes)

    def write_checkpoint(train_state, path=args.checkpoint):
        return save_state(path, train_state, settings=jsonable_settings(model), classes=classes,
                          fingerprint=fingerprint,
                          metadata={"data": data.source, "teacher_sha256": teacher_hashes})

    progress = EpochProgress(epochs, enabled=False if args.quiet else None)
    with stop_on_signals() as stop:
        try:
            model.fit(x_train, data.y_train, test_set=(flatten(data.x_test), data.y_test),
                      on_epoch=on_epoch, progress=progress, resume=state,
                      on_checkpoint=None if args.checkpoint is None else write_checkpoint,
                      checkpoint_every=args.checkpoint_every, should_stop=stop.requested,
                      on_engine=lambda choice: print(f"engine: {choice}", flush=True))
        except TrainingInterrupted as exc:
            return _interrupted(exc, stop.signum, args, write_checkpoint)
    if model.validation_fraction:
        write_metrics()  # once more: the kept epoch's record now says "best": true
    _report(args, model, data, records, state, backend, teacher_hashes)
    return 0


def _check_teacher_files(model, classes, n_features: int, backend, flag: str) -> None:
    """Every teacher file loads and fits the data: one line naming it otherwise."""
    if model.teacher is None:
        return
    try:
        resolve_teacher(model.teacher, classes=classes, n_features=n_features,
                        dtype=np.dtype(model.dtype), backend=backend,
                        temperature=model.temperature, weight=model.distill_weight,
                        deskew=model.deskew)
    except (ValueError, ModelFileError) as exc:
        raise UsageError(f"{flag} {exc}") from None


def _teacher_hashes(model) -> list[str] | None:
    """The SHA-256 of each teacher file of the run, or None without a teacher."""
    if model.teacher is None:
        return None
    hashes = []
    for path in teacher_models(model.teacher):
        try:
            hashes.append(hashlib.sha256(Path(path).read_bytes()).hexdigest())
        except OSError as exc:
            raise UsageError(f"teacher {path}: cannot read it ({exc.strerror or exc})") from None
    return hashes


def _check_teachers(resume: Path, info: dict, hashes: list[str] | None) -> None:
    """A resumed distilled run must learn from the very teacher files it began with."""
    recorded = info["extra"].get("teacher_sha256")
    if hashes is not None and recorded is not None and recorded != hashes:
        changed = next(p for p, a, b in zip(teacher_models(info["settings"]["teacher"]),
                                           recorded, hashes) if a != b)
        raise UsageError(f"--resume {resume}: the teacher {changed} has changed since that run "
                         "began; resuming needs the same file to continue exactly")


def _report(args, model, data, records, state, backend, teacher_hashes) -> None:
    """The result lines, then the model and figures asked for."""
    final = records[model.best_epoch_ - 1]
    n_test = data.x_test.shape[0]
    seconds = sum(r["seconds"] for r in records)
    if model.validation_fraction:
        print(f"kept epoch {model.best_epoch_} (validation accuracy {final['val_accuracy']:.2%})")
    print(f"test accuracy: {final['test_accuracy']:.2%} "
          f"({round(final['test_accuracy'] * n_test)}/{n_test}) after "
          f"{plural(len(records), 'epoch')}, {seconds:.1f} s of training on {backend.device}")
    if args.save is not None:
        save(model, args.save, metadata={
            "data": data.source, "test_accuracy": final["test_accuracy"],
            "seed": model.random_state, "engine": model.engine_.name,
            "engine_reason": model.engine_.reason,
            **({"teacher_sha256": teacher_hashes} if teacher_hashes is not None else {}),
            **({"preset": args.preset} if state is None else {"resumed_from": str(args.resume)})})
        print(f"saved model to {args.save}")
    if args.plot is not None:
        from ..reporting.figures import write_training_plots

        files = write_training_plots(args.plot, records,
                                     W1=backend.to_numpy(model.params_["W1"]))
        print(f"wrote {', '.join(p.name for p in files.values())} to {args.plot}")


def _interrupted(exc: TrainingInterrupted, signum, args, write_checkpoint) -> int:
    """Save the state of the last finished epoch of an interrupted run; the exit status."""
    name = signal.Signals(signum).name if signum else "a stop request"
    where = f"epoch {exc.epoch}" + (f" after step {exc.step}" if exc.step else "")
    status = 128 + signum if signum else 130
    if exc.state is None:
        say(f"stopped by {name} during {where}; no epoch had finished, so there is nothing "
            "to resume and no model was saved")
        return status
    path = args.checkpoint or _free_path(Path("mnist-xp-checkpoint.npz"))
    write_checkpoint(exc.state, path)
    say(f"stopped by {name} during {where}; saved the state after epoch {exc.state.epoch} "
        f"to {path}; continue with: mnist-xp train --resume {path}")
    return status


def _free_path(path: Path) -> Path:
    """`path`, or `path` with -1, -2... before its suffix if that name is taken."""
    candidate, i = path, 0
    while candidate.exists():
        i += 1
        candidate = path.with_name(f"{path.stem}-{i}{path.suffix}")
    return candidate
