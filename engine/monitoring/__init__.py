"""Monitoring a model's data once it is served: how far a current table has drifted from a reference one, per
column and in the model's score (``finscore drift``).

:mod:`~engine.monitoring.drift` holds the statistics (PSI, Kolmogorov-Smirnov, chi-squared),
:mod:`~engine.monitoring.model` what a named model contributes (its input columns, its score),
:mod:`~engine.monitoring.compare` the comparison of two tables, and :mod:`~engine.monitoring.report` its JSON and
HTML files.
"""

from engine.monitoring.compare import DEFAULT_THRESHOLD, HEADER, DriftReport, drift_files, drift_frames
from engine.monitoring.drift import BINS, EPSILON, MISSING, FeatureDrift, categorical_drift, numeric_drift, psi
from engine.monitoring.model import DriftModel, drift_model
from engine.monitoring.report import require_matplotlib, write_html, write_json

__all__ = [
    "BINS",
    "DEFAULT_THRESHOLD",
    "EPSILON",
    "HEADER",
    "MISSING",
    "DriftModel",
    "DriftReport",
    "FeatureDrift",
    "categorical_drift",
    "drift_files",
    "drift_frames",
    "drift_model",
    "numeric_drift",
    "psi",
    "require_matplotlib",
    "write_html",
    "write_json",
]
