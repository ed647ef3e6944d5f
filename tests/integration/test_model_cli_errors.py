"""`clearmark train` and `clearmark promote` explain a bad run id or a missing service in one line (exit code 1)."""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

from clearmark.cli import app
from clearmark.settings import Settings, get_settings

pytestmark = pytest.mark.integration


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_cli(args: list[str]):  # noqa: ANN201 - click's Result
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, args)
    finally:
        get_settings.cache_clear()


def test_promote_of_an_unknown_run_says_so_in_one_line(settings: Settings) -> None:
    result = run_cli(["promote", "--run-id", "nosuch"])
    assert result.exit_code == 1, result.output
    assert result.output.strip().count("\n") == 0, result.output
    assert "nosuch" in result.output and "clearmark train" in result.output


def test_train_without_object_storage_says_what_to_start(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("CLEARMARK_S3_ENDPOINT_URL", endpoint)
    result = run_cli(["train", "--dataset", "synthetic", "--epochs", "1"])
    assert result.exit_code == 1, result.output
    assert result.output.strip().count("\n") == 0, result.output
    assert endpoint in result.output and "clearmark stack up" in result.output
