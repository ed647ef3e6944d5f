"""Where a curated dataset version lives in the lake, and the names of its files.

``lake/curated/<dataset>/<version>/`` holds ``watermarked/``, ``clean/`` and ``masks/``
PNGs (and ``alpha/`` and ``colour/`` for pairs whose matte is known), ``manifest.parquet``, ``rejects.parquet``, ``validation.json`` and, once
published, ``_PUBLISHED.json``; ``curated/<dataset>/LATEST`` names the version
published last (docs/architecture.md, "Curated dataset version").
"""

from __future__ import annotations

from typing import NamedTuple

MANIFEST = "manifest.parquet"
REJECTS = "rejects.parquet"
PUBLISHED = "_PUBLISHED.json"
LATEST = "LATEST"
TRANSFER_WORKERS = 8  # parallel transfers of a version's objects: they wait on the network


class CurationError(RuntimeError):
    """Curation cannot produce a version; the message says what to do."""


class DatasetNotFoundError(LookupError):
    """The dataset or version is not published (readers never see unpublished versions)."""


class PairKeys(NamedTuple):
    """Keys of one pair's files, relative to the version (or local folder) root."""

    watermarked: str
    clean: str | None
    mask: str
    alpha: str | None = None  # the exact soft matte (synthetic photo styles), 16-bit grey
    colour: str | None = None  # the mark's colour layer W, RGB


def dataset_prefix(dataset: str) -> str:
    """``curated/<dataset>/``."""
    if not dataset or "/" in dataset or dataset.startswith("."):
        raise CurationError(f"Dataset name {dataset!r} is not usable as a storage prefix; use a plain name like 'synthetic'.")
    return f"curated/{dataset}/"


def version_prefix(dataset: str, version: str) -> str:
    """``curated/<dataset>/<version>/`` in the lake bucket."""
    return f"{dataset_prefix(dataset)}{version}/"


def curated_pair_keys(pair_id: str, *, with_clean: bool, with_matte: bool = False) -> PairKeys:
    """Keys of a curated pair's PNGs (no clean key for a detection-only pair, alpha and colour only with a known matte)."""
    return PairKeys(
        f"watermarked/{pair_id}.png",
        f"clean/{pair_id}.png" if with_clean else None,
        f"masks/{pair_id}.png",
        f"alpha/{pair_id}.png" if with_matte else None,
        f"colour/{pair_id}.png" if with_matte else None,
    )
