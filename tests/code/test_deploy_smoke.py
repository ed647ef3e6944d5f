"""The production proof's own checks (src/clearmark/deploy/smoke.py), without a Docker engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from clearmark.deploy.smoke import (
    PLACEHOLDER,
    PUBLISHED,
    SmokeFailure,
    Stack,
    default_secrets_left,
    env_values,
    generate_env,
    repeated_runs,
    unexpected_ports,
)
from tests.code.test_deploy_contract import ENV_EXAMPLE, run_compose


def test_generated_env_replaces_every_placeholder_with_a_fresh_secret() -> None:
    example = ENV_EXAMPLE.read_text()
    first, second = env_values(generate_env(example, {})), env_values(generate_env(example, {}))
    placeholders = [name for name, value in env_values(example).items() if value.startswith(PLACEHOLDER)]
    assert len(placeholders) >= 7
    for name in placeholders:
        assert not first[name].startswith(PLACEHOLDER) and first[name] != second[name], name
    Fernet(first["AIRFLOW_FERNET_KEY"].encode())  # a real Fernet key, or this raises
    assert default_secrets_left(generate_env(example, {}), example) == []


def test_overrides_replace_values_and_are_added_when_new() -> None:
    values = env_values(generate_env(ENV_EXAMPLE.read_text(), {"AIRFLOW_HOST_PORT": "18080", "POSTGRES_IMAGE": "local/pg", "NEW_ONE": "x"}))
    assert (values["AIRFLOW_HOST_PORT"], values["POSTGRES_IMAGE"], values["NEW_ONE"]) == ("18080", "local/pg", "x")


def test_a_default_secret_left_is_named() -> None:
    example = ENV_EXAMPLE.read_text()
    generated = generate_env(example, {"POSTGRES_PASSWORD": "CHANGE-ME-postgres-password"})
    assert default_secrets_left(generated, example) == ["POSTGRES_PASSWORD"]
    assert default_secrets_left(generated + "REDIS_PASSWORD=CHANGE-ME-later\n", example) == ["POSTGRES_PASSWORD", "REDIS_PASSWORD"]


def test_generated_env_is_a_valid_stack(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(generate_env(ENV_EXAMPLE.read_text(), {"CLEARMARK_TRAINER_GPUS": "0"}))
    result = run_compose("config", "--format", "json", env_file=env_file)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert services["airflow-scheduler"]["environment"]["CLEARMARK_TRAINER_GPUS"] == "0"


def ps_row(service: str, *publishers: tuple[str, int, int]) -> dict:
    return {"Service": service, "Publishers": [{"URL": url, "TargetPort": target, "PublishedPort": port} for url, target, port in publishers]}


@pytest.mark.parametrize(
    ("rows", "problems"),
    [
        ([ps_row("airflow-apiserver", ("127.0.0.1", 8080, 18080)), ps_row("mlflow", ("127.0.0.1", 5000, 15000))], []),
        (
            [
                ps_row("airflow-apiserver", ("127.0.0.1", 8080, 18080)),
                ps_row("mlflow", ("127.0.0.1", 5000, 15000)),
                ps_row("seaweedfs", ("127.0.0.1", 8333, 8333)),
                ps_row("postgres", ("", 5432, 0)),  # exposed by the image, not published
            ],
            ["seaweedfs publishes port 8333"],
        ),
        (
            [ps_row("airflow-apiserver", ("0.0.0.0", 8080, 18080)), ps_row("mlflow")],
            ["airflow-apiserver:8080 is published on 0.0.0.0, not 127.0.0.1", "mlflow does not publish port 5000"],
        ),
    ],
)
def test_unexpected_ports(rows: list[dict], problems: list[str]) -> None:
    assert unexpected_ports(rows, "127.0.0.1", PUBLISHED) == problems


class RecordedRuns(Stack):
    """A stack whose Airflow API answers with fixed DAG runs (newest first)."""

    def __init__(self, runs: list[dict]) -> None:
        self.runs = runs

    def recent_runs(self, dag_id: str) -> list[dict]:
        return self.runs


def dag_run(run_id: str, run_type: str) -> dict:
    return {"dag_run_id": run_id, "run_type": run_type}


def test_the_etl_is_the_run_the_first_start_scheduled() -> None:
    stack = RecordedRuns([dag_run("manual__1", "manual"), dag_run("scheduled__2026-12-01T02:00", "scheduled")])
    assert stack.run_of_type("clearmark_etl_nightly", "scheduled", timeout=0) == "scheduled__2026-12-01T02:00"
    with pytest.raises(SmokeFailure, match="no asset_triggered run of clearmark_train"):
        stack.run_of_type("clearmark_train", "asset_triggered", timeout=0)


def test_a_second_first_start_etl_or_training_is_named() -> None:
    once = {"clearmark_etl_nightly": [dag_run("scheduled__1", "scheduled")], "clearmark_train": [dag_run("asset_triggered__1", "asset_triggered")]}
    assert repeated_runs(once) == []
    twice = {**once, "clearmark_etl_nightly": [dag_run("manual__2", "manual"), dag_run("scheduled__1", "scheduled")]}
    assert repeated_runs(twice) == ["clearmark_etl_nightly ran 2 times: manual__2 (manual), scheduled__1 (scheduled)"]
