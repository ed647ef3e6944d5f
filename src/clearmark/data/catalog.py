"""Reader API: which curated versions are published, their manifests, and local copies of them.

Readers only see versions with ``_PUBLISHED.json``; ``curated/<dataset>/LATEST`` names
the version published last.  :func:`load_training_data` is the one entry for training,
evaluation and calibration: a local folder if given, else a published version.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearmark.data.dataset import DatasetError, LocalDataset, load_local_folder
from clearmark.data.layout import LATEST, MANIFEST, PUBLISHED, TRANSFER_WORKERS, CurationError, DatasetNotFoundError, dataset_prefix, version_prefix
from clearmark.data.manifest import KEY_COLUMNS, read_lake_parquet, with_matte_columns

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd

    from clearmark.settings import Settings
    from clearmark.storage import ObjectStore


def published_marker(store: ObjectStore, dataset: str, version: str) -> dict[str, Any] | None:
    """The ``_PUBLISHED.json`` of a version, or ``None`` when it is not published."""
    key = version_prefix(dataset, version) + PUBLISHED
    if not store.exists(store.settings.lake_bucket, key):
        return None
    return json.loads(store.get_bytes(store.settings.lake_bucket, key))


def published_markers(store: ObjectStore, dataset: str) -> list[dict[str, Any]]:
    """The ``_PUBLISHED.json`` of every published version of ``dataset``, oldest first."""
    prefix = dataset_prefix(dataset)
    markers = []
    for folder in store.list_prefixes(store.settings.lake_bucket, prefix):
        marker = published_marker(store, dataset, folder[len(prefix) :].rstrip("/"))
        if marker is not None:
            markers.append(marker)
    return sorted(markers, key=lambda marker: (marker["created_at"], marker["version"]))


def published_versions(store: ObjectStore, dataset: str) -> list[str]:
    """Published versions of ``dataset``, oldest first (by publication time)."""
    return [marker["version"] for marker in published_markers(store, dataset)]


def list_published(store: ObjectStore, dataset: str | None = None) -> list[dict[str, Any]]:
    """One row per published version (of ``dataset``, or of every dataset in the lake) with its row count."""
    names = [dataset] if dataset else [folder.split("/")[1] for folder in store.list_prefixes(store.settings.lake_bucket, "curated/")]
    listing = []
    for name in names:
        markers = published_markers(store, name)
        latest = latest_version(store, name) if markers else None
        listing += [
            {key: marker.get(key) for key in ("dataset", "version", "rows", "created_at", "logical_date")} | {"latest": marker["version"] == latest}
            for marker in markers
        ]
    return listing


def latest_version(store: ObjectStore, dataset: str) -> str:
    """The version named by ``LATEST`` (or the newest published one); raises when none is published."""
    bucket = store.settings.lake_bucket
    latest_key = dataset_prefix(dataset) + LATEST
    if store.exists(bucket, latest_key):
        version = store.get_bytes(bucket, latest_key).decode().strip()
        if published_marker(store, dataset, version) is not None:
            return version
    versions = published_versions(store, dataset)
    if not versions:
        raise DatasetNotFoundError(
            f"Dataset {dataset!r} has no published version in s3://{bucket}/{dataset_prefix(dataset)}. "
            f"Run the ETL first: `clearmark etl run --dataset {dataset}` (or trigger the Airflow DAG clearmark_etl_nightly)."
        )
    return versions[-1]


def _require_published(store: ObjectStore, dataset: str, version: str) -> dict[str, Any]:
    marker = published_marker(store, dataset, version)
    if marker is None:
        known = published_versions(store, dataset)
        raise DatasetNotFoundError(
            f"Version {version!r} of dataset {dataset!r} is not published (published: {known or 'none'}). "
            f"Use one of those, or run `clearmark etl run --dataset {dataset}`."
        )
    return marker


def read_manifest(store: ObjectStore, dataset: str, version: str) -> pd.DataFrame:
    """The manifest of a published version."""
    _require_published(store, dataset, version)
    return read_lake_parquet(store, version_prefix(dataset, version) + MANIFEST)


def fetch_version(
    store: ObjectStore,
    dataset: str,
    version: str,
    *,
    select: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    progress: bool = True,
) -> LocalDataset:
    """Download a published version under ``cache_dir/datasets/<dataset>/<version>/``.

    Without ``select`` every object of the version comes down; with it, only the files
    of the manifest rows ``select`` returns, and the dataset's manifest holds those rows.
    Files already there are kept (versions are immutable), so a second call downloads nothing.
    """
    import pandas as pd

    from clearmark.progress import progress_bar
    from clearmark.storage import sha256_file

    marker = _require_published(store, dataset, version)
    bucket = store.settings.lake_bucket
    prefix = version_prefix(dataset, version)
    root = store.settings.cache_dir / "datasets" / dataset / version

    def download(relative_key: str) -> None:
        target = root / relative_key
        if not target.exists():
            store.get_file(bucket, prefix + relative_key, target)

    download(MANIFEST)
    manifest_path = root / MANIFEST
    if sha256_file(manifest_path) != marker["manifest_sha256"]:
        raise CurationError(
            f"Local copy {manifest_path} does not match the published manifest of {dataset}/{version}; delete {root} and fetch again."
        )
    manifest = with_matte_columns(pd.read_parquet(manifest_path))
    if select is None:
        keys = [info.key[len(prefix) :] for info in store.list(bucket, prefix)]
    else:
        manifest = select(manifest)
        keys = [str(key) for column in KEY_COLUMNS for key in manifest[column].dropna()]
    with ThreadPoolExecutor(max_workers=TRANSFER_WORKERS) as pool:
        list(progress_bar(pool.map(download, keys), total=len(keys), desc=f"fetch {dataset}/{version}", disable=not progress))
    return LocalDataset(root, manifest, dataset, version, marker["manifest_sha256"], f"s3://{bucket}/{prefix.rstrip('/')}")


def synthetic_source_name(settings: Settings, dataset: str) -> str:
    """Name of the synthetic source of ``dataset`` in the sources file (ids start with it)."""
    from clearmark.data.sources import SourcesError, load_sources

    try:
        sources = load_sources(settings.sources_file).dataset(dataset).sources
    except (SourcesError, KeyError, LookupError):
        return dataset
    synthetic = [source.name for source in sources if source.kind == "synthetic"]
    return synthetic[0] if len(synthetic) == 1 else dataset


def load_training_data(settings: Settings, dataset: str | None = None, version: str | None = None, data_dir: Path | None = None) -> LocalDataset:
    """The data a training, evaluation or calibration run reads: ``data_dir`` if given, else the curated version.

    ``version`` ``None``, ``""`` or ``"latest"`` means the latest published version.

    Pairs of a ``clearmark synth`` folder get the ids the ETL would give them as the
    dataset's synthetic source, so their splits match the curated version's.
    """
    from clearmark.storage import ObjectStore

    dataset = dataset or settings.dataset
    if data_dir is not None:
        return load_local_folder(Path(data_dir), dataset, source=synthetic_source_name(settings, dataset))
    store = ObjectStore(settings)
    try:
        return fetch_version(store, dataset, latest_version(store, dataset) if version in (None, "", "latest") else version)
    except DatasetNotFoundError as exc:
        raise DatasetError(f"{exc} Or train on a local folder with --data-dir.") from exc
