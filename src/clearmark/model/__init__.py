"""Detector: model registry, training, evaluation, quality gate and MLflow promotion."""
