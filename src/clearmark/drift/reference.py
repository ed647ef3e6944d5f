"""Drift reference: the per-image features of the data the champion was trained on.

The reference is computed once per (dataset version, model version) and cached in the
lake under ``features/<dataset>/<version>/reference-<model version>.parquet``, so every
inbox batch is compared with the same table.  Heavy libraries are imported inside the
functions: the DAG file can import this module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from clearmark.data.features import FEATURE_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

    from clearmark.data.dataset import LocalDataset
    from clearmark.model.detector import Detector
    from clearmark.settings import Settings
    from clearmark.storage import ObjectStore


class DriftReferenceError(RuntimeError):
    """The drift reference cannot be found or built; the message says what to do."""


def reference_key(dataset: str, version: str, model_version: str) -> str:
    """Lake key of the cached reference for a dataset version and a detector version."""
    return f"features/{dataset}/{version}/reference-{model_version}.parquet"


def champion_version(settings: Settings) -> str:
    """The version number of ``settings.registered_model`` that carries the ``champion`` alias."""
    from mlflow.exceptions import MlflowException

    from clearmark.model.registry import CHAMPION, mlflow_client

    name = settings.registered_model
    try:
        return str(mlflow_client(settings).get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException as exc:
        reason = str(exc).splitlines()[0][:200]
        raise DriftReferenceError(
            f"No '{CHAMPION}' version of model {name!r} at {settings.mlflow_tracking_uri} ({reason}): train and "
            "promote a detector first (`clearmark train`, `clearmark promote`), or pass --reference to compare with a file."
        ) from exc


def champion_training_data(settings: Settings, store: ObjectStore) -> tuple[str, str]:
    """``(dataset, dataset_version)`` the current champion was trained on (see :func:`model_training_data`)."""
    return model_training_data(settings, store, champion_version(settings))


def model_training_data(settings: Settings, store: ObjectStore, model_version: str) -> tuple[str, str]:
    """``(dataset, dataset_version)`` version ``model_version`` of ``settings.registered_model`` was trained on.

    Read from the tags ``dataset`` and ``dataset_version`` of the run behind the model
    version (the model version's own tags are used when the run lacks them).  A model
    that names no published version (the bundled baseline, trained from a local folder of
    the same synthetic generator, or a model registered by hand) is compared with the
    latest published version of ``settings.dataset``, and a warning says so.
    """
    import logging

    from mlflow.exceptions import MlflowException

    from clearmark.data.catalog import latest_version, published_versions
    from clearmark.data.layout import DatasetNotFoundError
    from clearmark.model.registry import mlflow_client

    client = mlflow_client(settings)
    name = settings.registered_model
    if not model_version.isdigit():
        raise DriftReferenceError(
            f"Detector version {model_version!r} is not a version of registered model {name!r} (a detector folder names no "
            "training data): process with a registered model, or pass --reference to compare with a features file."
        )
    try:
        registered = client.get_model_version(name, model_version)
    except MlflowException as exc:
        reason = str(exc).splitlines()[0][:200]
        raise DriftReferenceError(f"Model {name!r} has no version {model_version} at {settings.mlflow_tracking_uri} ({reason}).") from exc
    tags = dict(registered.tags or {})
    if registered.run_id:
        tags = {**tags, **client.get_run(registered.run_id).data.tags}
    dataset, version = tags.get("dataset"), tags.get("dataset_version")
    if dataset and version and version in published_versions(store, dataset):
        return dataset, version
    try:
        fallback = latest_version(store, settings.dataset)
    except DatasetNotFoundError as exc:
        raise DriftReferenceError(
            f"Model {name!r} version {model_version} names no published training data (dataset_version "
            f"{version!r} of {dataset!r}) and dataset {settings.dataset!r} has no published version to compare with: "
            "run the ETL (`clearmark etl run`), or pass --reference."
        ) from exc
    logging.getLogger(__name__).warning(
        "Model %s v%s names no published training data (%r/%r); drift is measured against %s/%s.",
        name, model_version, dataset, version, settings.dataset, fallback,
    )  # fmt: skip
    return settings.dataset, fallback


def _sample_rows(manifest: pd.DataFrame, sample_size: int) -> pd.DataFrame:
    """The training rows (all rows if no split says train), a fixed random sample if many."""
    rows = manifest[manifest["split"] == "train"] if "split" in manifest else manifest
    if rows.empty:
        rows = manifest
    rows = rows.sort_values("id")
    return rows.sample(n=sample_size, random_state=0) if len(rows) > sample_size else rows


def _reference_rows(settings: Settings, sample: LocalDataset, detector: Detector) -> list[dict[str, float | str]]:
    """Features of each sampled watermarked image, with the detector run exactly as the removal step runs it."""
    import numpy as np
    from PIL import Image

    from clearmark.data.features import estimate_jpeg_quality, image_features
    from clearmark.model.inference import DetectionOptions, detect_images
    from clearmark.progress import progress_bar

    options = DetectionOptions.for_detector(detector, settings)
    records: list[dict[str, float | str]] = []
    rows = sample.manifest
    with progress_bar(total=len(rows), desc="drift reference", unit="img") as progress:
        for start in range(0, len(rows), options.batch_size):
            chunk = rows.iloc[start : start + options.batch_size]
            images, qualities = [], []
            for key in chunk["watermarked_key"]:
                with Image.open(sample.root / key) as image:
                    qualities.append(estimate_jpeg_quality(image))
                    images.append(np.asarray(image.convert("RGB")))
            for row_id, rgb, quality, found in zip(chunk["id"], images, qualities, detect_images(detector, images, options), strict=True):
                features = image_features(rgb, jpeg_quality=quality, mask_coverage=found.coverage, confidence=found.confidence)
                records.append({"id": str(row_id), **features})
            progress.update(len(chunk))
    return records


def ensure_reference(
    settings: Settings,
    store: ObjectStore,
    dataset: str,
    version: str,
    detector: Detector,
    *,
    sample_size: int | None = None,
) -> str:
    """Build the reference features for a curated dataset version once; return its lake key.

    Samples up to ``sample_size`` (default ``settings.drift_reference_sample``) training
    images with a fixed seed, computes
    :data:`~clearmark.data.features.FEATURE_COLUMNS` with the detector's predicted
    mask coverage and confidence, and writes Parquet to the lake.  When the key
    already exists nothing is recomputed.
    """
    import io

    import pandas as pd

    from clearmark.data.catalog import fetch_version

    key = reference_key(dataset, version, detector.version)
    if store.exists(settings.lake_bucket, key):
        return key
    size = sample_size or settings.drift_reference_sample
    sample = fetch_version(store, dataset, version, select=lambda manifest: _sample_rows(manifest, size), progress=False)
    if sample.manifest.empty:
        raise DriftReferenceError(f"Curated dataset {dataset}/{version} has no rows; publish a non-empty version first.")
    records = _reference_rows(settings, sample, detector)
    frame = pd.DataFrame.from_records(records, columns=["id", *FEATURE_COLUMNS])
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    store.put_bytes(settings.lake_bucket, key, buffer.getvalue(), content_type="application/vnd.apache.parquet")
    return key


def load_reference(settings: Settings, store: ObjectStore, key: str) -> pd.DataFrame:
    """Read a cached reference table from the lake."""
    import io

    import pandas as pd

    if not store.exists(settings.lake_bucket, key):
        raise DriftReferenceError(f"No drift reference at s3://{settings.lake_bucket}/{key}; build it with ensure_reference first.")
    return pd.read_parquet(io.BytesIO(store.get_bytes(settings.lake_bucket, key)))


def model_reference(settings: Settings, store: ObjectStore, model_version: str) -> str:
    """Key of the reference for one version of ``settings.registered_model``; built on first use, else no model is loaded."""
    from clearmark.model.loading import load_detector

    dataset, version = model_training_data(settings, store, model_version)
    key = reference_key(dataset, version, model_version)
    if store.exists(settings.lake_bucket, key):
        return key
    # Pinned to the version number, so a promotion in between cannot mix two models.
    detector = load_detector(f"models:/{settings.registered_model}/{model_version}", settings, backend=settings.inference_backend)
    return ensure_reference(settings, store, dataset, version, detector)


def champion_reference(settings: Settings, store: ObjectStore) -> str:
    """Key of the reference for the current champion (see :func:`model_reference`)."""
    return model_reference(settings, store, champion_version(settings))
