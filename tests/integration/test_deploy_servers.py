"""Preflight against the real SeaweedFS and MLflow servers of the test session."""

from __future__ import annotations

import socket

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from clearmark.cli import app
from clearmark.deploy.preflight import check_buckets, run_preflight
from clearmark.settings import Settings
from clearmark.storage import ObjectStore

pytestmark = pytest.mark.integration


def test_configured_stack_passes(settings: Settings, store: ObjectStore) -> None:
    report = run_preflight(settings, timeout=60)  # generous: the test machine's cores are shared
    assert report.ok, [check.detail for check in report.failures]
    assert [check.name for check in report.checks] == ["variables", "s3", "buckets", "mlflow"]


def test_missing_bucket_is_named_then_created(settings: Settings) -> None:
    store = ObjectStore(settings)  # no `store` fixture: this test's buckets do not exist yet
    check = check_buckets(store, ("lake_bucket", "inbox_bucket"), create=False)
    assert not check.ok
    assert settings.lake_bucket in check.detail and "CLEARMARK_LAKE_BUCKET" in check.detail
    assert "--create-buckets" in check.detail

    created = check_buckets(store, ("lake_bucket", "inbox_bucket"), create=True)
    assert created.ok, created.detail
    names = {bucket["Name"] for bucket in store.client.list_buckets()["Buckets"]}
    assert {settings.lake_bucket, settings.inbox_bucket} <= names


@pytest.mark.parametrize(
    ("field", "variable"),
    [("s3_access_key_id", "AWS_ACCESS_KEY_ID"), ("s3_secret_access_key", "AWS_SECRET_ACCESS_KEY")],
)
def test_wrong_credentials_name_the_variable(settings: Settings, store: ObjectStore, field: str, variable: str) -> None:
    wrong = settings.model_copy(update={field: SecretStr("not-the-right-one")})
    report = run_preflight(wrong, timeout=60)
    failed = {check.name: check.detail for check in report.failures}
    assert set(failed) == {"s3"}
    assert variable in failed["s3"]
    assert str(settings.s3_endpoint_url) in failed["s3"]


def test_unreachable_mlflow_names_the_service(settings: Settings, store: ObjectStore) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    report = run_preflight(settings.model_copy(update={"mlflow_tracking_uri": f"http://127.0.0.1:{port}"}), timeout=2)
    failed = {check.name: check.detail for check in report.failures}
    assert set(failed) == {"mlflow"}
    assert "CLEARMARK_MLFLOW_TRACKING_URI" in failed["mlflow"] and "mlflow service" in failed["mlflow"]


def test_cli_creates_buckets_and_exits_zero(settings: Settings) -> None:
    result = CliRunner().invoke(app, ["preflight", "--create-buckets", "--timeout", "60"])
    assert result.exit_code == 0, result.output
    assert "preflight passed" in result.output
    assert ObjectStore(settings).client.head_bucket(Bucket=settings.reports_bucket)


def test_cli_wrong_secret_exits_one(settings: Settings, store: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    result = CliRunner().invoke(app, ["preflight", "--timeout", "60"])
    assert result.exit_code == 1
    assert "[FAIL] s3" in result.output and "AWS_SECRET_ACCESS_KEY" in result.output
