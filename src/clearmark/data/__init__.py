"""Datasets: synthetic generation, sources and adapters, raw load, curation, quality gates."""

# Built-in source kinds that live in their own module register on import; importing any
# clearmark.data module imports this package first, so every reader of a sources file has them.
from clearmark.data import feedback as feedback
from clearmark.data import kaggle as kaggle
