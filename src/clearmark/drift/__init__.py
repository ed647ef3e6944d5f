"""Drift: per-image features and Evidently reports against the training reference."""
