"""ETL step functions: what each task of ``clearmark_etl_nightly`` (and ``clearmark etl``) runs.

Every step takes and returns small JSON-able dicts (Airflow XCom) and is idempotent:
extract re-uses downloads, raw load uploads only changed files, curation finds a
version it already built, validation re-runs on the same manifest, and publishing
a published version only moves ``LATEST``.  ``ts`` is the caller's logical timestamp
(Airflow's ``{{ ts }}``); it is echoed in every summary and recorded when publishing.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from clearmark.data.sources import SourceSpec
    from clearmark.settings import Settings
    from clearmark.storage import ObjectStore


class DataValidationError(RuntimeError):
    """The curated version failed its Great Expectations suite and must not be published."""


def dataset_sources(settings: Settings, dataset: str) -> list[SourceSpec]:
    """The sources that ``dataset`` declares in the sources file (a disabled dataset runs when asked by name)."""
    from clearmark.data.sources import load_sources

    return list(load_sources(settings.sources_file).dataset(dataset).sources)


def object_store(settings: Settings) -> ObjectStore:
    from clearmark.storage import ObjectStore

    return ObjectStore(settings)


def extract_step(settings: Settings, dataset: str, *, ts: str | None = None) -> dict[str, Any]:
    """Bring every source of ``dataset`` to a local folder (download Kaggle, generate synthetic, ...)."""
    from clearmark.data.sources import extract

    folders = {source.name: str(extract(source, settings)) for source in dataset_sources(settings, dataset)}
    return {"dataset": dataset, "sources": folders, "ts": ts}


def load_raw_step(settings: Settings, dataset: str, extracted: dict[str, Any], *, ts: str | None = None) -> dict[str, Any]:
    """Mirror the folders named by :func:`extract_step`'s result into ``lake/raw/<source>/``."""
    from pathlib import Path

    from clearmark.data.raw import load_raw

    store = object_store(settings)
    results = {name: load_raw(store, name, Path(folder)).as_dict() for name, folder in extracted["sources"].items()}
    return {
        "dataset": dataset,
        "sources": results,
        "files": sum(int(r["files"]) for r in results.values()),
        "bytes_uploaded": sum(int(r["bytes_uploaded"]) for r in results.values()),
        "bytes_skipped": sum(int(r["bytes_skipped"]) for r in results.values()),
        "ts": ts,
    }


def curate_step(settings: Settings, dataset: str, *, ts: str | None = None) -> dict[str, Any]:
    """Build (or find) the curated version of ``dataset`` from the lake's raw objects."""
    from clearmark.data.curate import curate

    result = curate(settings, object_store(settings), dataset, dataset_sources(settings, dataset))
    return result.as_dict() | {"ts": ts}


def validate_step(settings: Settings, dataset: str, version: str, *, ts: str | None = None) -> dict[str, Any]:
    """Run the Great Expectations suite on the version's manifest; raise when it fails."""
    from clearmark.data.manifest import manifest_sha256, read_unpublished_manifest
    from clearmark.data.quality import validate_version

    store = object_store(settings)
    manifest = read_unpublished_manifest(store, dataset, version)
    result = validate_version(settings, store, dataset, version, manifest)
    summary = {
        "dataset": dataset,
        "version": version,
        "success": bool(result["success"]),
        "failed": result.get("failed", []),
        "statistics": result.get("statistics"),
        "data_docs_prefix": result.get("data_docs_prefix"),
        "data_docs_index": result.get("data_docs_index"),
        "manifest_sha256": manifest_sha256(store, dataset, version),
        "ts": ts,
    }
    if not summary["success"]:
        raise DataValidationError(
            f"Dataset {dataset} version {version} failed validation; it is not published. "
            f"Failed expectations: {json.dumps(summary['failed'], default=str)[:2000]}. "
            f"Data Docs: {summary['data_docs_prefix']}. Fix the sources (or the suite) and run the ETL again."
        )
    return summary


def publish_step(settings: Settings, dataset: str, version: str, *, ts: str | None = None) -> dict[str, Any]:
    """Publish a version whose ``validation.json`` says it passed.

    Returns the dataset's asset URI for Airflow and what the Asset event tells its
    consumers: the version, its row count and ``reject_share`` (rejected inputs / all inputs).
    """
    from clearmark.data.curate import curated_result
    from clearmark.data.layout import version_prefix
    from clearmark.data.manifest import manifest_sha256
    from clearmark.data.publish import publish
    from clearmark.data.quality import VALIDATION_FILE

    store = object_store(settings)
    validation_key = version_prefix(dataset, version) + VALIDATION_FILE
    validation = json.loads(store.get_bytes(settings.lake_bucket, validation_key)) if store.exists(settings.lake_bucket, validation_key) else {}
    if validation.get("success") is not True:
        state = "failed" if validation else "has not been run"
        raise DataValidationError(
            f"Dataset {dataset} version {version} cannot be published: its validation {state} "
            f"(s3://{settings.lake_bucket}/{validation_key}). Run `clearmark etl validate --dataset {dataset} --version {version}` first."
        )
    curated = curated_result(store, dataset, version)
    marker = publish(store, dataset, version, curated.rows, manifest_sha256(store, dataset, version), logical_date=ts)
    return {
        "dataset": dataset,
        "version": version,
        "rows": marker["rows"],
        "reject_share": curated.reject_ratio,
        "asset_uri": asset_uri(settings, dataset),
        "created_at": marker["created_at"],
        "ts": ts,
    }


def asset_uri(settings: Settings, dataset: str) -> str:
    """URI of the Airflow Asset that stands for the curated dataset (training schedules on it)."""
    return f"s3://{settings.lake_bucket}/curated/{dataset}"


def run_etl(settings: Settings, dataset: str, *, ts: str | None = None) -> dict[str, Any]:
    """Extract, load raw, curate, validate and publish ``dataset`` in this process (seconds per step in ``step_seconds``)."""
    step_seconds: dict[str, float] = {}

    def timed(step: str, call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        started = time.perf_counter()
        result = call()
        step_seconds[step] = round(time.perf_counter() - started, 3)
        return result

    extracted = timed("extract", lambda: extract_step(settings, dataset, ts=ts))
    raw = timed("load_raw", lambda: load_raw_step(settings, dataset, extracted, ts=ts))
    curated = timed("curate", lambda: curate_step(settings, dataset, ts=ts))
    validation = timed("validate", lambda: validate_step(settings, dataset, curated["version"], ts=ts))
    published = timed("publish", lambda: publish_step(settings, dataset, curated["version"], ts=ts))
    return {
        "dataset": dataset,
        "version": curated["version"],
        "rows": curated["rows"],
        "rejects": curated["rejects"],
        "reject_ratio": curated["reject_ratio"],
        "sources": extracted["sources"],
        "bytes_uploaded": raw["bytes_uploaded"],
        "validation_success": validation["success"],
        "data_docs_prefix": validation["data_docs_prefix"],
        "asset_uri": published["asset_uri"],
        "step_seconds": step_seconds,
        "ts": ts,
    }
