"""Publishing: make a validated curated version visible to readers and move ``LATEST`` to it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from clearmark.data.catalog import published_marker
from clearmark.data.layout import LATEST, MANIFEST, PUBLISHED, CurationError, dataset_prefix, version_prefix

if TYPE_CHECKING:
    from clearmark.storage import ObjectStore


def publish(
    store: ObjectStore, dataset: str, version: str, rows: int, manifest_sha256: str, *, logical_date: str | None = None
) -> dict[str, Any]:
    """Make a curated version visible: write ``_PUBLISHED.json`` (last), then ``LATEST``.

    Publishing a version twice keeps its first marker (its ``created_at``) and only
    moves ``LATEST``.  Returns the marker.
    """
    bucket = store.settings.lake_bucket
    prefix = version_prefix(dataset, version)
    stored = store.stored_sha256(bucket, prefix + MANIFEST)
    if stored is None:
        raise CurationError(f"Cannot publish {dataset}/{version}: s3://{bucket}/{prefix}{MANIFEST} is missing. Curate it first.")
    if stored != manifest_sha256:
        raise CurationError(
            f"Cannot publish {dataset}/{version}: manifest SHA-256 {stored[:12]} differs from the validated {manifest_sha256[:12]}. "
            "Validate the version again."
        )
    marker = published_marker(store, dataset, version)
    if marker is None:
        marker = {
            "dataset": dataset,
            "version": version,
            "rows": int(rows),
            "manifest_sha256": manifest_sha256,
            "created_at": datetime.now(UTC).isoformat(),
            "logical_date": logical_date,
        }
        store.put_bytes(bucket, prefix + PUBLISHED, json.dumps(marker, indent=1).encode(), content_type="application/json")
    store.put_bytes(bucket, dataset_prefix(dataset) + LATEST, version.encode(), content_type="text/plain")
    return marker
