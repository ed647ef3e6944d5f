"""The Airflow plugin's FastAPI app against the real SeaweedFS (plugins/clearmark_drift)."""

from __future__ import annotations

import json
import sys

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
