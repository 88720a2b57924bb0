"""What a run and a model look like to a person: live progress, metrics, figures.

``progress`` (the one-line epoch display), ``metrics`` (evaluation reports and the
``--metrics`` log, NumPy only) and ``figures`` (PNG figures; needs matplotlib).
"""

from .metrics import check_output_dir, evaluation_report, read_metrics
from .progress import EpochProgress, format_epoch

__all__ = ["EpochProgress", "format_epoch", "evaluation_report", "read_metrics",
           "check_output_dir"]
