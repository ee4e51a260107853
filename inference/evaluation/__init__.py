"""Metrics, confidence intervals and paired model comparisons for the evaluation report.

Plain functions returning dataclasses with JSON-safe ``to_dict`` methods, so the Django
dashboards can import them without the command-line tools.
"""

from inference.evaluation.metrics import (
    CLASS_LABELS,
    Calibration,
    ClassificationMetrics,
    ClassMetrics,
    Proportion,
    calibration,
    classification_metrics,
    json_safe,
    proportion_with_ci,
    roc_points,
)
from inference.evaluation.stats import (
    BootstrapInterval,
    DelongResult,
    KappaResult,
    McNemarResult,
    bootstrap_difference_ci,
    bootstrap_metric_ci,
    cohen_kappa,
    delong_covariance,
    delong_test,
    fleiss_kappa_ci,
    holm_adjust,
    mcnemar_test,
)

__all__ = [
    "CLASS_LABELS",
    "BootstrapInterval",
    "Calibration",
    "ClassMetrics",
    "ClassificationMetrics",
    "DelongResult",
    "KappaResult",
    "McNemarResult",
    "Proportion",
    "bootstrap_difference_ci",
    "bootstrap_metric_ci",
    "calibration",
    "classification_metrics",
    "cohen_kappa",
    "delong_covariance",
    "delong_test",
    "fleiss_kappa_ci",
    "holm_adjust",
    "json_safe",
    "mcnemar_test",
    "proportion_with_ci",
    "roc_points",
]
