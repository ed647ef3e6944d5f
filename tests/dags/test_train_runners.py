"""One setting switches the training task between a local process and a GPU container."""

from __future__ import annotations

from pathlib import Path

import pytest

from clearmark.settings import get_settings

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "clearmark_train.py"


def load_train_task(monkeypatch: pytest.MonkeyPatch, runner: str):  # noqa: ANN201
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("CLEARMARK_TRAIN_RUNNER", runner)
    monkeypatch.setenv("CLEARMARK_TRAINER_IMAGE", "registry.example/clearmark-trainer:1.2.3")
    monkeypatch.setenv("CLEARMARK_DOCKER_NETWORK", "clearmark")
    get_settings.cache_clear()
    try:
        return DagBag(dag_folder=str(DAG_FILE)).dags["clearmark_train"].get_task("train")
    finally:
        get_settings.cache_clear()


def test_local_runner_runs_the_cli_as_a_process(monkeypatch: pytest.MonkeyPatch) -> None:
    task = load_train_task(monkeypatch, "local")
    assert type(task).__name__ == "BashOperator"
    assert task.bash_command.startswith("clearmark train ")
    assert "xcom_pull(task_ids='training_inputs')" in task.bash_command  # the arguments that task fixed, rendered at run time
    assert task.do_xcom_push is True


def test_docker_runner_starts_the_gpu_trainer_image(monkeypatch: pytest.MonkeyPatch) -> None:
    task = load_train_task(monkeypatch, "docker")
    assert type(task).__name__ == "DockerOperator"
    assert task.image == "registry.example/clearmark-trainer:1.2.3"
    assert task.command.startswith("train ")
    assert [r.capabilities for r in task.device_requests] == [[["gpu"]]]
    assert task.mount_tmp_dir is False
    assert task.auto_remove == "success"
    assert task.network_mode == "clearmark"
    env = task.environment
    assert env["CLEARMARK_MLFLOW_TRACKING_URI"] and env["CLEARMARK_S3_ENDPOINT_URL"]
    # Credentials are rendered from the Airflow connection at run time, never baked into the DAG.
    assert env["AWS_SECRET_ACCESS_KEY"] == "{{ conn.clearmark_s3.password }}"


def test_both_runners_pass_the_same_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    local = load_train_task(monkeypatch, "local").bash_command
    docker = load_train_task(monkeypatch, "docker").command
    assert local == f"clearmark {docker}"
