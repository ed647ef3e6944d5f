"""Shared fixtures: REAL SeaweedFS and MLflow servers on free loopback ports.

The servers are started once per test session with the same service specs the
embedded stack uses (``clearmark.stack.services``); each test gets fresh bucket
names and a fresh registered-model name, so tests never see each other's data.
The ``settings`` fixture also exports the matching environment variables, so code
that calls ``get_settings()`` (e.g. Airflow tasks under ``dag.test()``) sees the
same servers.
"""

from __future__ import annotations

import os
import secrets
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from clearmark.settings import Settings, get_settings
from clearmark.stack.services import ProcessManager, mlflow_spec, seaweedfs_spec
from clearmark.storage import ObjectStore

# Never let a developer's running stack (or its stack.env) leak into tests.
TEST_HOME = Path(os.environ.get("PYTEST_CLEARMARK_HOME", "/tmp")) / f"clearmark-test-{os.getpid()}"
os.environ["CLEARMARK_HOME"] = str(TEST_HOME)
# Airflow reads its configuration on first import: point it at a throw-away SQLite home.
os.environ["AIRFLOW_HOME"] = str(TEST_HOME / "airflow")
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{TEST_HOME / 'airflow' / 'airflow.db'}"
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(__file__).resolve().parents[1] / "dags")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")


def pytest_report_header() -> str:
    """Free disk where the test servers keep their data: SeaweedFS refuses writes below 1 %."""
    import shutil
    import tempfile

    usage = shutil.disk_usage(tempfile.gettempdir())
    return f"disk: {usage.free / 2**30:.1f} GiB free of {usage.total / 2**30:.0f} GiB at {tempfile.gettempdir()}"


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(with_grpc: bool = False) -> int:
    """A free loopback port; with ``with_grpc`` also port + 10000 (SeaweedFS gRPC convention)."""
    for _ in range(200):
        port = secrets.randbelow(20000) + 21000
        if _port_free(port) and (not with_grpc or _port_free(port + 10000)):
            return port
    raise RuntimeError("no free port pair found")


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated Airflow metadata database (SQLite) for ``dag.test()`` runs."""
    import subprocess
    import sys

    (TEST_HOME / "airflow").mkdir(parents=True, exist_ok=True)
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
    return TEST_HOME / "airflow"


@pytest.fixture(scope="session")
def servers_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def s3_server(servers_home: Path) -> Iterator[Settings]:
    """A real SeaweedFS S3 gateway with authentication, for the whole session."""
    base = Settings(
        home=servers_home,
        s3_port=free_port(True),
        seaweed_master_port=free_port(True),
        seaweed_volume_port=free_port(True),
        seaweed_filer_port=free_port(True),
        seaweed_admin_port=free_port(True),
        s3_access_key_id=f"test-{secrets.token_hex(4)}",
        s3_secret_access_key=secrets.token_hex(16),
    )
    base.s3_endpoint_url = f"http://127.0.0.1:{base.s3_port}"
    manager = ProcessManager(servers_home)
    manager.start(seaweedfs_spec(base))
    try:
        yield base
    finally:
        manager.stop("seaweedfs")


@pytest.fixture(scope="session")
def mlflow_server(s3_server: Settings, servers_home: Path) -> Iterator[str]:
    """A real MLflow tracking server (SQLite) proxying artifacts into SeaweedFS."""
    settings = s3_server.model_copy(update={"mlflow_port": free_port()})
    settings.mlflow_tracking_uri = f"http://127.0.0.1:{settings.mlflow_port}"
    manager = ProcessManager(servers_home)
    manager.start(mlflow_spec(settings))
    try:
        yield settings.mlflow_tracking_uri
    finally:
        manager.stop("mlflow")


@pytest.fixture
def mlflow_uri(mlflow_server: str) -> str:
    return mlflow_server


@pytest.fixture
def settings(
    s3_server: Settings, mlflow_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    """Settings on the session servers with fresh buckets and model name, exported to the env."""
    suffix = uuid.uuid4().hex[:8]
    configured = s3_server.model_copy(
        update={
            "home": tmp_path / "home",
            "lake_bucket": f"lake-{suffix}",
            "inbox_bucket": f"inbox-{suffix}",
            "outbox_bucket": f"outbox-{suffix}",
            "reports_bucket": f"reports-{suffix}",
            "mlflow_bucket": s3_server.mlflow_bucket,
            "mlflow_tracking_uri": mlflow_server,
            "registered_model": f"detector-{suffix}",
            "experiment": f"test-{suffix}",
        }
    )
    configured.home.mkdir(parents=True)
    env = {
        "CLEARMARK_HOME": str(configured.home),
        "CLEARMARK_S3_ENDPOINT_URL": configured.s3_endpoint_url or "",
        "AWS_ACCESS_KEY_ID": configured.s3_access_key_id.get_secret_value(),  # type: ignore[union-attr]
        "AWS_SECRET_ACCESS_KEY": configured.s3_secret_access_key.get_secret_value(),  # type: ignore[union-attr]
        "CLEARMARK_LAKE_BUCKET": configured.lake_bucket,
        "CLEARMARK_INBOX_BUCKET": configured.inbox_bucket,
        "CLEARMARK_OUTBOX_BUCKET": configured.outbox_bucket,
        "CLEARMARK_REPORTS_BUCKET": configured.reports_bucket,
        "CLEARMARK_MLFLOW_TRACKING_URI": mlflow_server,
        "MLFLOW_TRACKING_URI": mlflow_server,
        "CLEARMARK_REGISTERED_MODEL": configured.registered_model,
        "CLEARMARK_EXPERIMENT": configured.experiment,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield configured
    get_settings.cache_clear()
    drop_buckets(configured, suffix)


def drop_buckets(settings: Settings, suffix: str) -> None:
    """Delete this test's buckets: SeaweedFS gives every bucket its own volumes, and a
    session that kept hundreds of them would run out (InternalError on PutObject)."""
    client = ObjectStore(settings).client
    for bucket in (b["Name"] for b in client.list_buckets().get("Buckets", [])):
        if not bucket.endswith(f"-{suffix}"):
            continue
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        client.delete_bucket(Bucket=bucket)


@pytest.fixture
def store(settings: Settings) -> ObjectStore:
    """ObjectStore on the session SeaweedFS with this test's buckets created."""
    object_store = ObjectStore(settings)
    object_store.ensure_buckets(
        [settings.lake_bucket, settings.inbox_bucket, settings.outbox_bucket, settings.reports_bucket, settings.mlflow_bucket]
    )
    return object_store
