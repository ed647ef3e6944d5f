"""``clearmark stack status`` tells this home's services from another process on their ports."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clearmark.cli import app
from clearmark.settings import Settings
from clearmark.stack.manager import HOME_VARIABLE, service_specs, status


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def ports(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Free ports for the three services, so no stack on this machine interferes."""
    chosen = {"seaweedfs": _free_port(), "mlflow": _free_port(), "airflow": _free_port()}
    monkeypatch.setenv("CLEARMARK_S3_PORT", str(chosen["seaweedfs"]))
    monkeypatch.setenv("CLEARMARK_MLFLOW_PORT", str(chosen["mlflow"]))
    monkeypatch.setenv("CLEARMARK_AIRFLOW_PORT", str(chosen["airflow"]))
    return chosen


@pytest.fixture
def other_stack(tmp_path: Path, ports: dict[str, int]):
    """A server on the MLflow port, started with another home in its environment as `stack up` does."""
    other_home = tmp_path / "other-home"
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(ports["mlflow"]), "--bind", "127.0.0.1"],
        env={HOME_VARIABLE: str(other_home), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", ports["mlflow"]), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    yield server, other_home
    server.terminate()
    server.wait(timeout=10)


def test_a_port_answered_by_another_home_is_reported_with_that_home(tmp_path: Path, other_stack) -> None:
    server, other_home = other_stack
    here = tmp_path / "this-home"
    by_name = {s.name: s for s in status(here)}
    assert by_name["mlflow"].other == f"pid {server.pid}, the stack of home {other_home}"
    assert not by_name["mlflow"].healthy and by_name["mlflow"].pid is None
    assert by_name["seaweedfs"].other is None and by_name["airflow"].other is None  # nothing on their ports
    result = CliRunner().invoke(app, ["stack", "status", "--home", str(here)], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    mlflow_line = next(line for line in result.output.splitlines() if line.startswith("mlflow"))
    assert "port in use" in mlflow_line and str(other_home) in mlflow_line and str(here) in mlflow_line
    assert "stopped" in next(line for line in result.output.splitlines() if line.startswith("seaweedfs"))


def test_every_service_the_stack_starts_carries_its_home(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, s3_access_key_id="key", s3_secret_access_key="secret")
    assert {name: spec.env[HOME_VARIABLE] for name, spec in service_specs(settings).items()} == dict.fromkeys(
        ("seaweedfs", "mlflow", "airflow"), str(tmp_path)
    )
