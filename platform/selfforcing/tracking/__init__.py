"""Experiment tracking behind a small interface, and the MLflow model registry.

Training code talks to a ``Tracker`` (log_params / log_metrics / log_artifact); only
``MlflowTracker`` and ``registry`` import mlflow. Serving resolves ``models:/<name>@<alias>`` through
``resolve_model_source``.
"""

from .registry import (
    GENERATOR_ARTIFACT_PATH,
    RegisteredGenerator,
    ResolvedModel,
    is_model_uri,
    register_generator,
    resolve_model,
    resolve_model_source,
    tracking_uri_or_default,
)
from .tracker import MlflowTracker, NullTracker, Tracker

__all__ = [
    "GENERATOR_ARTIFACT_PATH",
    "MlflowTracker",
    "NullTracker",
    "RegisteredGenerator",
    "ResolvedModel",
    "Tracker",
    "is_model_uri",
    "register_generator",
    "resolve_model",
    "resolve_model_source",
    "tracking_uri_or_default",
]
