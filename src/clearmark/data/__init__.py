"""Datasets: synthetic generation, sources and adapters, raw load, curation, quality gates."""
