"""Drift reference over a curated version, with a tiny real detector, SeaweedFS and MLflow."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from clearmark.data.features import FEATURE_COLUMNS, image_features
from clearmark.data.manifest import manifest_frame
from clearmark.data.publish import publish
from clearmark.drift.reference import DriftReferenceError, champion_training_data, ensure_reference, load_reference, reference_key
from clearmark.drift.report import drift_report_for_batch
from clearmark.model.detector import Detector, DetectorConfig, build_network, save_detector
from clearmark.model.registry import log_detector_model, mlflow_client, use_tracking_server
from clearmark.settings import Settings
from clearmark.storage import ObjectStore

pytestmark = pytest.mark.integration

DATASET, VERSION = "synthetic", "v0123456789ab"


class CountingDetector(Detector):
    """A real (randomly initialised) detector that counts how many images it was asked about."""

    images_seen = 0

    def predict_maps(self, batch: np.ndarray, **options: Any) -> np.ndarray:
        self.images_seen += len(batch)
        return super().predict_maps(batch, **options)


def tiny_detector() -> CountingDetector:
    import torch

    torch.manual_seed(0)
    config = DetectorConfig(architecture="Unet", encoder="mobilenet_v2", image_size=64)
    return CountingDetector(build_network(config), config, version="3", device="cpu")


def publish_curated_version(store: ObjectStore, count: int, version: str = VERSION) -> None:
    """A published curated version of ``count`` 64 x 64 watermarked PNGs with empty masks (train and test splits)."""
    rng = np.random.default_rng(0)
    prefix = f"curated/{DATASET}/{version}/"
    empty_mask = io.BytesIO()
    Image.new("L", (64, 64)).save(empty_mask, "PNG")
    rows = []
    for index in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
        key = f"watermarked/img{index:03d}.png"
        store.put_bytes(store.settings.lake_bucket, prefix + key, buffer.getvalue(), content_type="image/png")
        store.put_bytes(store.settings.lake_bucket, f"{prefix}masks/img{index:03d}.png", empty_mask.getvalue(), content_type="image/png")
        rows.append(
            {
                "id": f"img{index:03d}", "split": "test" if index % 5 == 0 else "train", "source": "synthetic",
                "watermarked_key": key, "clean_key": None, "mask_key": f"masks/img{index:03d}.png",
                "width": 64, "height": 64, "mode": "RGB", "bytes": len(buffer.getvalue()), "sha256": "0" * 64,
                "clean_sha256": None, "mask_coverage": 0.0,
            }
        )  # fmt: skip
    manifest = io.BytesIO()
    manifest_frame(rows).to_parquet(manifest, index=False)
    digest = store.put_bytes(store.settings.lake_bucket, prefix + "manifest.parquet", manifest.getvalue())
    publish(store, DATASET, version, count, digest)


def test_reference_is_built_from_training_images_once_and_cached(settings: Settings, store: ObjectStore) -> None:
    publish_curated_version(store, count=10)
    detector = tiny_detector()

    key = ensure_reference(settings, store, DATASET, VERSION, detector, sample_size=6)

    assert key == reference_key(DATASET, VERSION, "3") == f"features/{DATASET}/{VERSION}/reference-3.parquet"
    reference = load_reference(settings, store, key)
    assert list(reference.columns) == ["id", *FEATURE_COLUMNS]
    assert len(reference) == 6 and detector.images_seen == 6
    assert set(reference["id"]).isdisjoint({"img000", "img005"})  # test-split rows are not training data
    assert (reference["width"] == 64).all() and reference["jpeg_quality"].isna().all()
    assert reference["confidence"].between(0, 1).all() and reference["mask_coverage"].between(0, 1).all()

    assert ensure_reference(settings, store, DATASET, VERSION, detector, sample_size=6) == key
    assert detector.images_seen == 6  # the second call read the cache


def test_champion_training_data_comes_from_the_champion_run_tags(settings: Settings, store: ObjectStore) -> None:
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    with pytest.raises(DriftReferenceError, match="champion"):
        champion_training_data(settings, store)
    publish_curated_version(store, count=8)

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    experiment = mlflow.set_experiment(settings.experiment)
    run = client.create_run(experiment.experiment_id, tags={"dataset": DATASET, "dataset_version": VERSION})
    client.set_terminated(run.info.run_id)
    client.create_registered_model(settings.registered_model)
    version = client.create_model_version(settings.registered_model, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(settings.registered_model, "champion", version.version)

    assert champion_training_data(settings, store) == (DATASET, VERSION)


def test_untagged_champion_is_compared_with_the_latest_configured_dataset(settings: Settings, store: ObjectStore) -> None:
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    experiment_id = client.create_experiment(settings.experiment)
    run = client.create_run(experiment_id, tags={"dataset_version": "trained-from-a-local-folder"})
    client.create_registered_model(settings.registered_model)
    version = client.create_model_version(settings.registered_model, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(settings.registered_model, "champion", version.version)
    configured = settings.model_copy(update={"dataset": DATASET})

    with pytest.raises(DriftReferenceError, match="clearmark etl run"):
        champion_training_data(configured, store)  # nothing published yet: says what to run
    publish_curated_version(store, count=8)
    assert champion_training_data(configured, store) == (DATASET, VERSION)


def test_missing_reference_gets_a_clear_error(settings: Settings, store: ObjectStore) -> None:
    with pytest.raises(DriftReferenceError, match="ensure_reference"):
        load_reference(settings, store, reference_key(DATASET, VERSION, "9"))


@pytest.mark.slow  # logs a detector to MLflow and builds two Evidently reports: ~35 s on idle 2 cores
def test_processed_inbox_item_is_compared_with_the_champion_reference(settings: Settings, store: ObjectStore, tmp_path: Path) -> None:
    publish_curated_version(store, count=8)
    detector = tiny_detector()
    use_tracking_server(settings)
    mlflow.set_experiment(settings.experiment)
    with mlflow.start_run(tags={"dataset": DATASET, "dataset_version": VERSION}):
        model_uri = log_detector_model(save_detector(detector.network, detector.config, tmp_path / "detector"))
    version = mlflow.register_model(model_uri, settings.registered_model).version
    mlflow_client(settings).set_registered_model_alias(settings.registered_model, "champion", version)

    rng = np.random.default_rng(1)
    batch = pd.DataFrame(
        [image_features(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8), jpeg_quality=85, mask_coverage=0.1, confidence=0.8) for _ in range(3)]
    )
    buffer = io.BytesIO()
    batch.to_parquet(buffer, index=False)
    store.put_bytes(settings.outbox_bucket, "photos.zip.features.parquet", buffer.getvalue())
    result = {
        "name": "photos.zip", "status": "cleaned", "features_key": "photos.zip.features.parquet",
        "outbox_bucket": settings.outbox_bucket, "model_version": version, "finished_at": "2026-11-22T10:00:00+00:00",
    }  # fmt: skip

    summary = drift_report_for_batch(settings, result)

    assert (summary["archive"], summary["date"], summary["skipped"]) == ("photos.zip", "2026-11-22", False)
    assert (summary["n_current"], summary["n_reference"]) == (3, 6)  # 6 of the 8 curated images are training data
    assert "jpeg_quality" in summary["skipped_columns"]  # curated images are PNGs
    assert "width" in summary["drifted_columns"]  # 80 px wide batch vs 64 px training images
    assert store.exists(settings.reports_bucket, "drift/2026-11-22/photos.zip/report.html")
    cached = store.head(settings.lake_bucket, reference_key(DATASET, VERSION, str(version)))
    assert cached is not None

    again = drift_report_for_batch(settings, result)  # a retry: same report, reference read from the cache
    assert again["drift_share"] == summary["drift_share"]
    assert store.head(settings.lake_bucket, reference_key(DATASET, VERSION, str(version)))["LastModified"] == cached["LastModified"]


def test_a_promotion_after_processing_does_not_change_the_reference(settings: Settings, store: ObjectStore) -> None:
    """The race: ``process`` used model version 1, then version 2 became champion before ``drift_report`` ran."""
    client = mlflow_client(settings)
    experiment_id = client.create_experiment(settings.experiment)
    client.create_registered_model(settings.registered_model)
    model_versions = {}
    for dataset_version, rows in (("v00000000000a", 5), ("v00000000000b", 9)):
        publish_curated_version(store, count=8, version=dataset_version)
        run = client.create_run(experiment_id, tags={"dataset": DATASET, "dataset_version": dataset_version})
        model_version = client.create_model_version(settings.registered_model, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id).version
        # Cached references of distinct sizes tell which one a report used, with no detector to run.
        buffer = io.BytesIO()
        pd.DataFrame([image_features(np.full((64, 64, 3), 90 + row, np.uint8), jpeg_quality=None, mask_coverage=0.1, confidence=0.9) for row in range(rows)]).to_parquet(buffer, index=False)
        store.put_bytes(settings.lake_bucket, reference_key(DATASET, dataset_version, str(model_version)), buffer.getvalue())
        model_versions[rows] = str(model_version)
    client.set_registered_model_alias(settings.registered_model, "champion", model_versions[5])
    batch = io.BytesIO()
    pd.DataFrame([image_features(np.full((48, 80, 3), 100, np.uint8), jpeg_quality=None, mask_coverage=0.1, confidence=0.9)] * 3).to_parquet(batch, index=False)
    store.put_bytes(settings.outbox_bucket, "photos.zip.features.parquet", batch.getvalue())
    processed = {
        "name": "photos.zip", "status": "cleaned", "features_key": "photos.zip.features.parquet",
        "outbox_bucket": settings.outbox_bucket, "model_version": model_versions[5], "finished_at": "2026-11-22T10:00:00+00:00",
    }  # fmt: skip

    client.set_registered_model_alias(settings.registered_model, "champion", model_versions[9])  # the promotion in between
    summary = drift_report_for_batch(settings, processed)

    assert summary["n_reference"] == 5  # model version 1's reference, not the new champion's 9 rows
    assert summary["model_version"] == model_versions[5]


def test_failed_or_imageless_items_are_skipped_without_alert(settings: Settings, store: ObjectStore) -> None:
    failed = drift_report_for_batch(settings, {"name": "bomb.zip", "status": "failed", "reason": "zip bomb"})
    assert failed["skipped"] is True and failed["alert"] is False and "zip bomb" in failed["reason"]

    buffer = io.BytesIO()
    pd.DataFrame(columns=FEATURE_COLUMNS).to_parquet(buffer, index=False)
    store.put_bytes(settings.outbox_bucket, "docs.zip.features.parquet", buffer.getvalue())
    empty = drift_report_for_batch(settings, {"name": "docs.zip", "status": "cleaned", "features_key": "docs.zip.features.parquet"})
    assert empty["skipped"] is True and "no image" in empty["reason"]
    assert not list(store.list(settings.reports_bucket, "drift/"))
