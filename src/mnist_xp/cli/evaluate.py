"""``mnist-xp evaluate``: a saved model's test accuracy, and optionally a report directory."""

from __future__ import annotations

import json

import numpy as np

from ..errors import DataError, ReportError
from .common import UsageError, backend_from, check_figure_dir, data_from, flatten, load_model

__all__ = ["cmd_evaluate"]


def cmd_evaluate(args) -> int:
    """Score a saved model on the test images of the chosen data."""
    history = _report_history(args)
    model, backend, names = _models(args)
    data = data_from(args)
    x = flatten(data.x_test)
    if x.shape[1] != model.n_features_in_:
        raise UsageError(f"{names[0]}: model expects {model.n_features_in_} pixels per image, "
                         f"the data have {x.shape[1]}")
    predicted = np.asarray(model.predict(x))
    correct = int(np.sum(predicted == data.y_test))
    total = x.shape[0]
    result = {"model": names[0] if len(names) == 1 else names, "data": data.source,
              "device": backend.device, "accuracy": correct / total, "correct": correct,
              "total": total}
    if args.report is not None:
        result["report"] = _write_report(args, model, data, x, predicted, history)
    if args.json:
        print(json.dumps(result))
    else:
        of = f" (mean of {len(names)} models' probabilities)" if len(names) > 1 else ""
        print(f"test accuracy{of}: {correct / total:.2%} ({correct}/{total}) on {data.source}")
        if args.report is not None:
            summary = result["report"]
            print(f"macro F1 {summary['macro_f1']:.4f}; wrote {', '.join(summary['files'])} "
                  f"to {args.report}")
    return 0


def _models(args):
    """(model or Ensemble, backend, [file names]) of the --model flags (none: the installed one)."""
    paths = args.model or [None]
    if len(paths) == 1:
        args.model = paths[0]
        model, backend = load_model(args)
        return model, backend, [str(args.model)]
    from ..ensemble import Ensemble

    backend = backend_from(args)
    try:
        return Ensemble(paths, device=backend), backend, [str(p) for p in paths]
    except ValueError as exc:  # the models disagree (a damaged file is a ModelFileError)
        raise UsageError(f"--model {exc}") from None


def _report_history(args) -> list[dict] | None:
    """Check --report/--metrics before any work; the training log, if given."""
    if args.metrics is not None and args.report is None:
        raise UsageError(f"--metrics {args.metrics}: only used with --report DIR, which its "
                         "training curves are drawn into; add --report DIR")
    check_figure_dir(args.report, "--report")
    if args.metrics is None:
        return None
    from ..reporting.metrics import read_metrics

    try:
        return read_metrics(args.metrics)
    except ReportError as exc:
        raise UsageError(f"--metrics {exc}") from None


def _write_report(args, model, data, x, predicted, history) -> dict:
    """Write the --report directory; a summary of it for the output."""
    from ..reporting.figures import write_report
    from ..reporting.metrics import evaluation_report

    names = [str(p) for p in args.model] if isinstance(args.model, list) else [str(args.model)]
    proba = np.asarray(model.predict_proba(x))
    # predicted (model.predict) is what the accuracy line counted; the report uses the same.
    try:
        scores = evaluation_report(data.y_test, proba, model.classes_, y_pred=predicted)
    except ValueError as exc:  # test labels the model was never trained on
        raise DataError(f"{data.source}: no report for {', '.join(names)}: {exc}") from None
    report = {"model": names[0] if len(names) == 1 else names, "data": data.source, **scores}
    # An ensemble's hidden units are drawn from its first model.
    first = getattr(model, "models", [model])[0]
    files = write_report(args.report, report, images=data.x_test,
                         W1=first.backend_.to_numpy(first.params_["W1"]), history=history)
    return {"path": str(args.report), "macro_f1": report["macro"]["f1"],
            "macro_precision": report["macro"]["precision"],
            "macro_recall": report["macro"]["recall"],
            "files": [p.name for p in files.values()]}
