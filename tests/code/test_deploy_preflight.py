"""Preflight checks that need no S3 or MLflow server: variables, MLflow errors, the CLI."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clearmark.cli import app
from clearmark.deploy.preflight import check_docker, check_mlflow, check_variables, describe_variable, known_variables
from clearmark.settings import Settings

CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "CLEARMARK_S3_ACCESS_KEY_ID",
    "CLEARMARK_S3_SECRET_ACCESS_KEY",
    "MLFLOW_TRACKING_URI",
    "CLEARMARK_MLFLOW_TRACKING_URI",
)


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No credentials or tracking URI in the environment, and an empty CLEARMARK_HOME."""
    for name in CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLEARMARK_HOME", str(tmp_path))
    return tmp_path


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def forbidding_server() -> Iterator[str]:
    """A real HTTP server that answers 403 like MLflow does for a Host header it does not allow."""

    class Forbid(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.send_error(403, "Invalid Host header")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Forbid)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_known_variables_cover_prefix_and_aliases() -> None:
    variables = known_variables()
    assert variables["AWS_ACCESS_KEY_ID"] == "s3_access_key_id"
    assert variables["CLEARMARK_S3_ACCESS_KEY_ID"] == "s3_access_key_id"
    assert variables["MLFLOW_TRACKING_URI"] == "mlflow_tracking_uri"
    assert variables["CLEARMARK_LAKE_BUCKET"] == "lake_bucket"
    assert variables["CLEARMARK_TRAINER_IMAGE"] == "trainer_image"
    assert describe_variable("s3_secret_access_key") == "AWS_SECRET_ACCESS_KEY (or CLEARMARK_S3_SECRET_ACCESS_KEY)"


def test_missing_required_variables_are_named(clean_env: Path) -> None:
    settings = Settings(_env_file=None)
    check = check_variables(settings, ("s3_access_key_id", "s3_secret_access_key", "mlflow_tracking_uri"))
    assert not check.ok
    assert "AWS_ACCESS_KEY_ID" in check.detail
    assert "AWS_SECRET_ACCESS_KEY" in check.detail
    assert "MLFLOW_TRACKING_URI" in check.detail
    assert ".env.example" in check.detail


def test_empty_value_counts_as_missing(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    check = check_variables(Settings(_env_file=None), ("s3_access_key_id", "s3_secret_access_key"))
    assert not check.ok
    assert "AWS_ACCESS_KEY_ID" in check.detail
    assert "AWS_SECRET_ACCESS_KEY" not in check.detail


def test_variables_set_by_environment_pass(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLEARMARK_S3_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    check = check_variables(Settings(_env_file=None), ("s3_access_key_id", "s3_secret_access_key", "mlflow_tracking_uri"))
    assert check.ok, check.detail


def test_extra_required_variables(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLEARMARK_DOCKER_URL", raising=False)
    monkeypatch.delenv("SOME_OPERATOR_VARIABLE", raising=False)
    check = check_variables(Settings(_env_file=None), (), ("CLEARMARK_DOCKER_URL", "SOME_OPERATOR_VARIABLE"))
    assert not check.ok
    assert "CLEARMARK_DOCKER_URL" in check.detail and "SOME_OPERATOR_VARIABLE" in check.detail

    monkeypatch.setenv("CLEARMARK_DOCKER_URL", "tcp://docker-proxy:2375")
    monkeypatch.setenv("SOME_OPERATOR_VARIABLE", "x")
    assert check_variables(Settings(_env_file=None), (), ("CLEARMARK_DOCKER_URL", "SOME_OPERATOR_VARIABLE")).ok


def test_unreachable_mlflow_names_variable_and_service() -> None:
    uri = f"http://127.0.0.1:{closed_port()}"
    check = check_mlflow(Settings(_env_file=None, mlflow_tracking_uri=uri), timeout=2)
    assert not check.ok
    assert "CLEARMARK_MLFLOW_TRACKING_URI" in check.detail
    assert uri in check.detail
    assert "mlflow service" in check.detail


def test_mlflow_rejecting_host_suggests_allowed_hosts(forbidding_server: str) -> None:
    check = check_mlflow(Settings(_env_file=None, mlflow_tracking_uri=forbidding_server), timeout=5)
    assert not check.ok
    assert "HTTP 403" in check.detail
    assert "MLFLOW_ALLOWED_HOSTS" in check.detail


def test_non_http_tracking_uri_needs_no_server() -> None:
    check = check_mlflow(Settings(_env_file=None, mlflow_tracking_uri="file:///tmp/mlruns"))
    assert check.ok


def test_cli_invalid_value_names_variable(clean_env: Path) -> None:
    result = CliRunner().invoke(app, ["preflight"], env={"CLEARMARK_INBOX_CONCURRENCY": "many"})
    assert result.exit_code == 1
    assert "CLEARMARK_INBOX_CONCURRENCY" in result.output


def test_cli_fails_naming_missing_variables_and_services(clean_env: Path) -> None:
    env = {
        "CLEARMARK_S3_ENDPOINT_URL": "http://127.0.0.1:8333",
        "CLEARMARK_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{closed_port()}",
    }
    result = CliRunner().invoke(app, ["preflight", "--timeout", "2"], env=env)
    assert result.exit_code == 1
    assert "[FAIL] variables" in result.output and "AWS_ACCESS_KEY_ID" in result.output
    assert "[FAIL] s3: No S3 credentials" in result.output
    assert "[FAIL] mlflow" in result.output and "mlflow service" in result.output


def test_unreachable_docker_engine_names_variable_and_service() -> None:
    url = f"tcp://127.0.0.1:{closed_port()}"
    check = check_docker(Settings(_env_file=None, docker_url=url), timeout=2)
    assert not check.ok
    assert "CLEARMARK_DOCKER_URL" in check.detail and url in check.detail
    assert "docker-proxy" in check.detail


def test_docker_is_checked_only_for_the_docker_runner(clean_env: Path) -> None:
    env = {
        "CLEARMARK_S3_ENDPOINT_URL": "http://127.0.0.1:8333",
        "CLEARMARK_MLFLOW_TRACKING_URI": "file:///tmp/mlruns",
        "CLEARMARK_DOCKER_URL": f"tcp://127.0.0.1:{closed_port()}",
    }
    local = CliRunner().invoke(app, ["preflight"], env={**env, "CLEARMARK_TRAIN_RUNNER": "local"})
    assert "docker:" not in local.output
    docker = CliRunner().invoke(app, ["preflight", "--timeout", "2"], env={**env, "CLEARMARK_TRAIN_RUNNER": "docker"})
    assert docker.exit_code == 1
    assert "[FAIL] docker" in docker.output and "CLEARMARK_DOCKER_URL" in docker.output
