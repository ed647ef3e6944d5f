"""End-to-end `dag.test()` of clearmark_inbox on the real SeaweedFS and MLflow fixtures."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
import yaml

from clearmark.settings import Settings, get_settings
from clearmark.storage import ObjectStore

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "clearmark_inbox.py"


@pytest.fixture
def champion(settings: Settings, store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A tiny detector registered as champion, trained on (tagged with) a published tiny dataset."""
    from clearmark.data.etl import run_etl
    from clearmark.model.promotion import ensure_baseline_champion
    from clearmark.model.registry import mlflow_client
    from tests.support.hostile_archives import tiny_detector_folder

    sources = {"datasets": {"tiny": {"sources": [{"name": "tiny-synth", "kind": "synthetic", "layout": "synthetic", "options": {"count": 24, "seed": 5, "size": 64}}]}}}
    quality = yaml.safe_load((Path(__file__).resolve().parents[2] / "config" / "quality.yaml").read_text())
    quality["datasets"] = {"tiny": {"min_rows": 10, "split_tolerance": 0.3}}
    (tmp_path / "sources.yaml").write_text(yaml.safe_dump(sources))
    (tmp_path / "quality.yaml").write_text(yaml.safe_dump(quality))
    folder = tiny_detector_folder(tmp_path / "detector", finds_everything=True)
    for key, value in {
        "CLEARMARK_SOURCES_FILE": tmp_path / "sources.yaml",
        "CLEARMARK_QUALITY_FILE": tmp_path / "quality.yaml",
        "CLEARMARK_BASELINE_DIR": folder,
    }.items():
        monkeypatch.setenv(key, str(value))
    get_settings.cache_clear()
    configured = get_settings()
    version = run_etl(configured, "tiny")["version"]
    model_version = ensure_baseline_champion(configured)
    client = mlflow_client(configured)
    run_id = client.get_model_version(configured.registered_model, model_version).run_id
    client.set_tag(run_id, "dataset", "tiny")
    client.set_tag(run_id, "dataset_version", version)
    return model_version


def photos_zip() -> bytes:
    from PIL import Image, ImageDraw

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for index, folder in enumerate(["a", "a", "b/c"]):
            image = Image.new("RGB", (96, 80), (40 * index, 120, 160))
            ImageDraw.Draw(image).text((10, 30), "SAMPLE", fill=(255, 255, 255))
            jpeg = io.BytesIO()
            image.save(jpeg, format="JPEG", quality=90)
            archive.writestr(f"{folder}/photo{index}.jpg", jpeg.getvalue())
        archive.writestr("a/readme.txt", "kept as is")
    return buffer.getvalue()


def test_inbox_dag_cleans_an_archive_and_reports_drift(
    airflow_db: Path, settings: Settings, store: ObjectStore, champion: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    connection = {
        "conn_type": "aws",
        "login": settings.s3_access_key_id.get_secret_value(),  # type: ignore[union-attr]
        "password": settings.s3_secret_access_key.get_secret_value(),  # type: ignore[union-attr]
        "extra": {"endpoint_url": settings.s3_endpoint_url, "region_name": settings.s3_region},
    }
    monkeypatch.setenv("AIRFLOW_CONN_CLEARMARK_S3", json.dumps(connection))
    store.put_bytes(settings.inbox_bucket, "photos.zip", photos_zip(), content_type="application/zip")

    dag = DagBag(dag_folder=str(DAG_FILE)).dags["clearmark_inbox"]
    run = dag.test()
    assert run.state == "success"
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    assert states[("wait_for_archives", -1)] == "success"
    assert states[("handle_archive.process", 0)] == "success"
    assert states[("handle_archive.drift_report", 0)] == "success"
    assert states[("handle_archive.review", 0)] == "success"

    any_ti = run.get_task_instances()[0]
    processed = any_ti.xcom_pull(task_ids="handle_archive.process", map_indexes=0)
    assert str(processed["model_version"]) == champion  # the champion version used is recorded
    drift = any_ti.xcom_pull(task_ids="handle_archive.drift_report", map_indexes=0)
    assert drift["alert"] == (drift["drift_share"] > settings.drift_share_threshold)
    # The notifier warns only past the threshold; otherwise it shows as skipped.
    assert states[("handle_archive.notify_drift", 0)] == ("success" if drift["alert"] else "skipped")

    outbox = {o.key for o in store.list(settings.outbox_bucket)}
    assert {"photos.zip", "photos.zip.report.json", "photos.zip.report.csv"} <= outbox
    with zipfile.ZipFile(io.BytesIO(store.get_bytes(settings.outbox_bucket, "photos.zip"))) as cleaned:
        assert sorted(cleaned.namelist()) == ["a/photo0.jpg", "a/photo1.jpg", "a/readme.txt", "b/c/photo2.jpg"]
        assert cleaned.read("a/readme.txt") == b"kept as is"
    inbox = {o.key for o in store.list(settings.inbox_bucket)}
    assert inbox == {"processed/photos.zip"}

    drift = [o.key for o in store.list(settings.reports_bucket, "drift/")]
    assert any(k.endswith("/photos.zip/report.html") for k in drift)
    assert any(k.endswith("/photos.zip/summary.json") for k in drift)

    # The review of the same day: every image listed, pictured with its mask, summary last.
    review = any_ti.xcom_pull(task_ids="handle_archive.review", map_indexes=0)
    assert review["prefix"] == f"reviews/{processed['finished_at'][:10]}/photos.zip/"
    assert review["images"] == 3 and review["content_sha256"] == processed["content_sha256"]
    stored = json.loads(store.get_bytes(settings.reports_bucket, review["prefix"] + "review.json"))
    assert sorted(r["member"] for r in stored["rows"]) == ["a/photo0.jpg", "a/photo1.jpg", "b/c/photo2.jpg"]
    assert all(store.exists(settings.reports_bucket, review["prefix"] + r["thumb"]) for r in stored["rows"])
    assert "masks_key" in processed
