"""The manifest: one row per pair, built here for curated versions and local folders alike.

Columns and their meaning are the contract in docs/architecture.md ("Curated dataset
version").  ``rejects.parquet`` (one row per rejected input) lives beside it.
"""

from __future__ import annotations

import hashlib
import io
from typing import TYPE_CHECKING, Any

from clearmark.data.layout import MANIFEST, DatasetNotFoundError, version_prefix

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd
    from PIL import Image

    from clearmark.data.layout import PairKeys
    from clearmark.storage import ObjectStore

MANIFEST_COLUMNS = [
    "id", "split", "source", "watermarked_key", "clean_key", "mask_key", "width", "height",
    "mode", "bytes", "sha256", "clean_sha256", "mask_coverage", "alpha_key", "colour_key",
    "alpha_mode", "alpha_width", "alpha_height",
]  # fmt: skip
# The columns that name a pair's files (relative to the version root).
KEY_COLUMNS = ("watermarked_key", "clean_key", "mask_key", "alpha_key", "colour_key")
# The matte's columns and dtypes: null where it is unknown, absent from manifests written before them.
MATTE_COLUMNS = {"alpha_key": "string", "colour_key": "string", "alpha_mode": "string", "alpha_width": "Int64", "alpha_height": "Int64"}
REJECT_COLUMNS = ["source", "path", "reason", "detail"]


def manifest_row(
    pair_id: str, source: str, keys: PairKeys, *, watermarked: Path, clean: Path | None, size: tuple[int, int], mode: str, mask: Image.Image,
    alpha: Image.Image | None = None,
) -> dict[str, Any]:
    """The manifest row of one pair.

    ``watermarked`` and ``clean`` are the original files (their size and hashes are
    recorded), ``size`` the watermarked image's (width, height) as stored under
    ``keys.watermarked``, ``mode`` its original PIL mode, ``mask`` its binary mask,
    ``alpha`` its matte as stored under ``keys.alpha`` (its mode and size are recorded).
    """
    from clearmark.data.masks import coverage
    from clearmark.data.splits import stable_split
    from clearmark.storage import sha256_file

    return {
        "id": pair_id,
        "split": stable_split(pair_id),
        "source": source,
        "watermarked_key": keys.watermarked,
        "clean_key": keys.clean,
        "mask_key": keys.mask,
        "width": size[0],
        "height": size[1],
        "mode": mode,
        "bytes": watermarked.stat().st_size,
        "sha256": sha256_file(watermarked),
        "clean_sha256": sha256_file(clean) if clean is not None else None,
        "mask_coverage": coverage(mask),
        "alpha_key": keys.alpha,
        "colour_key": keys.colour,
        "alpha_mode": alpha.mode if alpha is not None else None,
        "alpha_width": alpha.width if alpha is not None else None,
        "alpha_height": alpha.height if alpha is not None else None,
    }


def manifest_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Manifest rows as a DataFrame with the contract's columns and dtypes, sorted by id."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=MANIFEST_COLUMNS).sort_values("id", ignore_index=True)
    return frame.astype(
        {
            "id": "string", "split": "string", "source": "string", "watermarked_key": "string",
            "clean_key": "string", "mask_key": "string", "width": "int64", "height": "int64",
            "mode": "string", "bytes": "int64", "sha256": "string", "clean_sha256": "string",
            "mask_coverage": "float64", **MATTE_COLUMNS,
        }
    )  # fmt: skip


def with_matte_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with null matte columns added where a manifest predates them."""
    missing = {column: dtype for column, dtype in MATTE_COLUMNS.items() if column not in frame.columns}
    return frame.assign(**dict.fromkeys(missing)).astype(missing) if missing else frame


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """``frame`` as Parquet file content."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def read_lake_parquet(store: ObjectStore, key: str) -> pd.DataFrame:
    """A Parquet object of the lake bucket as a DataFrame."""
    import pandas as pd

    return pd.read_parquet(io.BytesIO(store.get_bytes(store.settings.lake_bucket, key)))


def read_unpublished_manifest(store: ObjectStore, dataset: str, version: str) -> pd.DataFrame:
    """The manifest of a curated version whether or not it is published (for curation, validation and publishing)."""
    key = version_prefix(dataset, version) + MANIFEST
    if not store.exists(store.settings.lake_bucket, key):
        raise DatasetNotFoundError(
            f"Version {version} of dataset {dataset!r} has no manifest at s3://{store.settings.lake_bucket}/{key}. "
            f"Curate it first: `clearmark etl curate --dataset {dataset}`."
        )
    return read_lake_parquet(store, key)


def manifest_sha256(store: ObjectStore, dataset: str, version: str) -> str:
    """SHA-256 of a version's ``manifest.parquet`` (recorded when it was written)."""
    key = version_prefix(dataset, version) + MANIFEST
    recorded = store.stored_sha256(store.settings.lake_bucket, key)
    return recorded or hashlib.sha256(store.get_bytes(store.settings.lake_bucket, key)).hexdigest()
