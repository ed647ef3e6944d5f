"""The Airflow plugin's FastAPI app against the real SeaweedFS (plugins/clearmark_drift)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from clearmark.settings import REPO_ROOT, Settings
from clearmark.storage import ObjectStore

sys.path.insert(0, str(REPO_ROOT / "plugins"))

from clearmark_drift.app import create_app  # noqa: E402

pytestmark = pytest.mark.integration

HTML = b"<html><body><h1>Evidently drift report</h1>" + b"x" * 600_000 + b"</body></html>"


def upload_report(store: ObjectStore, day: str, archive: str, drift_share: float, alert: bool) -> None:
    prefix = f"drift/{day}/{archive}/"
    summary = {
        "archive": archive, "date": day, "drift_share": drift_share, "drifted_columns": ["brightness"] if alert else [],
        "n_current": 12, "n_reference": 200, "html_key": prefix + "report.html", "threshold": 0.5, "alert": alert,
    }  # fmt: skip
    bucket = store.settings.reports_bucket
    store.put_bytes(bucket, prefix + "report.html", HTML, content_type="text/html")
    store.put_bytes(bucket, prefix + "summary.json", json.dumps(summary).encode(), content_type="application/json")


@pytest.fixture
def client(settings: Settings, store: ObjectStore) -> TestClient:
    upload_report(store, "2026-11-21", "old.zip", 0.1, False)
    upload_report(store, "2026-11-22", "holiday photos.zip", 0.7, True)
    store.put_bytes(settings.reports_bucket, "secret.html", b"not a drift report")
    # The app reads clearmark's settings from the environment, which the settings fixture exported.
    return TestClient(create_app())


def test_list_shows_the_uploaded_reports_newest_first(client: TestClient) -> None:
    listed = client.get("/api/reports").json()
    assert [(r["date"], r["archive"], r["drift_share"], r["alert"]) for r in listed] == [
        ("2026-11-22", "holiday photos.zip", 0.7, True),
        ("2026-11-21", "old.zip", 0.1, False),
    ]
    page = client.get("/")
    assert page.status_code == 200
    assert "holiday photos.zip" in page.text and "70%" in page.text and 'class="alert"' in page.text
    assert 'href="reports/2026-11-22/holiday%20photos.zip"' in page.text


def test_report_page_streams_the_stored_html(client: TestClient) -> None:
    response = client.get("/reports/2026-11-22/holiday%20photos.zip")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.content == HTML


def test_unknown_report_is_404(client: TestClient) -> None:
    assert client.get("/reports/2026-11-22/missing.zip").status_code == 404
    assert client.get("/reports/2020-01-01/old.zip").status_code == 404


@pytest.mark.parametrize(
    "path",
    ["/reports/2026-11-22/%2e%2e", "/reports/2026-11-22/..%2F..%2Fsecret.html", "/reports/..%2Fsecret.html/x", "/reports/2026-11-22/..%5Csecret.html"],
)
def test_path_traversal_in_the_report_id_is_rejected(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert b"not a drift report" not in response.content


def test_empty_bucket_shows_how_to_get_a_report(settings: Settings, store: ObjectStore) -> None:
    page = TestClient(create_app()).get("/")
    assert page.status_code == 200 and "No drift report yet" in page.text


def test_plugin_app_admits_only_airflow_users(airflow_db: object, settings: Settings, store: ObjectStore) -> None:
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    upload_report(store, "2026-11-22", "a.zip", 0.2, False)
    auth_manager = create_auth_manager()
    auth_manager.init()
    token = auth_manager.generate_jwt(SimpleAuthManagerUser(username="viewer", role="viewer"))
    guarded = TestClient(create_app(require_login=True))

    assert guarded.get("/api/reports").status_code == 401
    assert guarded.get("/reports/2026-11-22/a.zip", headers={"Authorization": "Bearer not-a-token"}).status_code == 403
    assert guarded.get("/reports/2026-11-22/a.zip", cookies={"_token": token}).content == HTML
    assert guarded.get("/api/reports", headers={"Authorization": f"Bearer {token}"}).json()[0]["archive"] == "a.zip"


def test_a_published_review_serves_full_size_images_from_the_archives_and_a_flag_keeps_the_original(
    settings: Settings, store: ObjectStore, tmp_path: Path
) -> None:
    import zipfile

    from clearmark.removal.review import publish_review
    from clearmark.storage import sha256_file
    from clearmark_drift import reviews
    from tests.support.hostile_archives import encode, watermarked_rgb

    originals = {f"p/{index}.jpg": encode(watermarked_rgb(64, 48, index), "JPEG", quality=90) for index in range(3)}
    inbox, outbox = tmp_path / "in.zip", tmp_path / "out.zip"
    with zipfile.ZipFile(inbox, "w", zipfile.ZIP_DEFLATED) as deflated, zipfile.ZipFile(outbox, "w") as stored:
        for index, (name, data) in enumerate(originals.items()):
            deflated.writestr(name, data)
            stored.writestr(name, encode(watermarked_rgb(64, 48, index + 10), "JPEG", quality=90))
    report = {"threshold": 0.5, "model_version": "7", "rows": [{"path": n, "status": "cleaned", "mask_coverage": 0.1, "confidence": 0.9} for n in originals]}
    store.put_file(settings.inbox_bucket, "processed/trip.zip", inbox)
    store.put_file(settings.outbox_bucket, "trip.zip", outbox)
    store.put_bytes(settings.outbox_bucket, "trip.zip.report.json", json.dumps(report).encode())
    result = {"status": "ok", "name": "trip.zip", "content_sha256": sha256_file(inbox), "processed_key": "processed/trip.zip",
              "outbox_key": "trip.zip", "report_key": "trip.zip.report.json", "finished_at": "2026-11-23T09:00:00+00:00"}  # fmt: skip
    review = publish_review(settings, result)

    assert not list(store.list(settings.reports_bucket, review["prefix"] + "full/"))  # no copies uploaded
    assert [o.key.removeprefix(review["prefix"]) for o in store.list(settings.reports_bucket, review["prefix"] + "thumbs/")] == ["thumbs/000000.jpg"]
    rows = json.loads(store.get_bytes(settings.reports_bucket, review["prefix"] + "review.json"))["rows"]
    client = TestClient(create_app())
    with zipfile.ZipFile(outbox) as cleaned:
        for row in rows:
            before = client.get(f"/{review['prefix']}{row['before']}")
            assert before.status_code == 200 and before.headers["content-type"] == "image/jpeg"
            assert before.content == originals[row["member"]]  # inflated from the deflated inbox zip
            assert client.get(f"/{review['prefix']}{row['after']}").content == cleaned.read(row["member"])
    assert client.get(f"/{review['prefix']}full/000099.before.jpg").status_code == 404

    saved = reviews.record(store, "2026-11-23", "trip.zip", rows[0]["member"], "watermark_left", "ann")
    assert saved["original_key"] == review["prefix"] + rows[0]["before"]
    assert store.get_bytes(settings.reports_bucket, saved["original_key"]) == originals[rows[0]["member"]]  # kept for the feedback dataset
