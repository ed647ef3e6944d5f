"""What the DAG files share: default arguments, Assets, and settings for tasks.

Import-light on purpose (stdlib, pydantic settings and ``airflow.sdk`` only): DAG files
import this at module level, and their parse cost must stay near ``import airflow.sdk``.
"""

from __future__ import annotations

import logging
import os
import shlex
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import Asset, BaseNotifier, Param

from clearmark.model.train_config import TrainingError, cli_arguments, scheduled_recipe, train_options
from clearmark.settings import Settings, get_settings, load_settings

log = logging.getLogger(__name__)

S3_CONN_ID = "clearmark_s3"
KAGGLE_CONN_ID = "kaggle_default"

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "clearmark",
    "retries": 2,
    "retry_delay": timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=10),
}


def curated_asset(dataset: str | None = None) -> Asset:
    """The Asset a published curated dataset updates (training is scheduled on it)."""
    from clearmark.data.etl import asset_uri

    settings = get_settings()
    name = dataset or settings.dataset
    return Asset(name=f"clearmark_curated_{name}", uri=asset_uri(settings, name))


def train_params(settings: Settings) -> dict[str, Param]:
    """The train DAG's form: a Param for each ``clearmark train`` option that a scheduled run can take.

    Its defaults, which Asset-triggered runs train with, are the recipe in
    ``settings.training_file`` (config/training.yaml), then ``clearmark train``'s own.
    """
    from airflow.sdk.definitions.param import ParamValidationError

    recipe = scheduled_recipe(settings.training_file)
    params = {}
    for train_option in train_options():
        if not train_option.in_form:
            continue
        spec, name = train_option.spec, train_option.name
        if name in recipe:
            default = recipe[name]
        else:
            default = getattr(settings, spec.settings_default) if spec.settings_default else train_option.default
        description = spec.help if spec.none_means is None or default is not None else f"{spec.help} Empty: {spec.none_means}."
        params[name] = Param(default, description=description, **spec.schema)
        try:
            params[name].resolve()
        except ParamValidationError as exc:
            raise TrainingError(f"Training recipe {settings.training_file}: {name}: {default!r} is not valid ({exc}).") from None
    return params


def training_inputs(settings: Settings, params: Mapping[str, Any], events: Sequence[Any], run_name: str) -> dict[str, str]:
    """The dataset version a train run trains, and the trainer's arguments (after ``clearmark train``).

    A run that curated-Asset events triggered trains the version the newest of them names:
    ``LATEST`` may already point at a later publish.  A manual run takes the form's
    ``dataset_version``, reading ``LATEST`` once here if it says ``latest``; either way the
    version is fixed before training starts and recorded in this task's XCom, and so is the
    model version that ``init_from`` (``champion`` in the shipped recipe) fine-tunes.
    """
    if events:
        published = max(events, key=lambda event: event.timestamp).extra
        dataset, version = published["dataset"], published["version"]
    else:
        dataset, version = params["dataset"], params["dataset_version"]
        if version == "latest":
            from clearmark.data.catalog import latest_version
            from clearmark.storage import ObjectStore

            version = latest_version(ObjectStore(settings), dataset)
    init_from = params.get("init_from")
    if init_from:  # the detector to fine-tune, pinned too: `champion` may move while this run trains
        from clearmark.model.detector import DetectorError
        from clearmark.model.loading import fixed_source

        try:
            init_from = fixed_source(init_from, settings)
        except DetectorError as exc:
            raise TrainingError(
                f"{exc}. Nothing to fine-tune: register one (`clearmark register-baseline`), or train from scratch with "
                f"init_from: null in {settings.training_file} (CLEARMARK_TRAINING_FILE) or the run's form."
            ) from exc
    values = {**params, "dataset": dataset, "dataset_version": version, "init_from": init_from, "run_name": run_name}
    return {"dataset": dataset, "dataset_version": version, "init_from": init_from, "arguments": shlex.join(cli_arguments(values))}


def task_settings() -> Settings:
    """Settings for a running task: the environment first, the Airflow connection second.

    In the embedded stack and in docker-compose the S3 credentials are environment
    variables; where only the Airflow connection ``clearmark_s3`` holds them (e.g. a
    secrets backend), they are taken from there.
    """
    settings = load_settings()
    if settings.s3_access_key_id and settings.s3_secret_access_key:
        return settings
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(S3_CONN_ID)
    extra = conn.extra_dejson
    overrides: dict[str, Any] = {"s3_access_key_id": conn.login, "s3_secret_access_key": conn.password}
    if extra.get("endpoint_url"):
        overrides["s3_endpoint_url"] = extra["endpoint_url"]
    return load_settings(**overrides)


def export_kaggle_credentials() -> None:
    """Map the Airflow connection ``kaggle_default`` to kagglehub's variables if they are unset."""
    if os.environ.get("KAGGLE_USERNAME") or os.environ.get("KAGGLE_API_TOKEN"):
        return
    from airflow.exceptions import AirflowNotFoundException
    from airflow.sdk import BaseHook

    try:
        conn = BaseHook.get_connection(KAGGLE_CONN_ID)
    except AirflowNotFoundException:
        return  # the extract step explains what to set if a Kaggle source needs it
    os.environ["KAGGLE_USERNAME"] = conn.login or ""
    os.environ["KAGGLE_KEY"] = conn.password or ""


class DriftNotifier(BaseNotifier):
    """Warns when an archive's drift share exceeds the threshold.

    Writes a WARNING to the task log (visible in the UI) and, given a ``webhook_url``
    (the DAG passes ``CLEARMARK_DRIFT_WEBHOOK_URL``), also POSTs the message (Slack-compatible JSON).
    """

    template_fields = ("message",)

    def __init__(self, message: str, *, webhook_url: str | None = None) -> None:
        super().__init__()
        self.message = message
        self.webhook_url = webhook_url

    def notify(self, context: dict[str, Any]) -> None:
        log.warning(self.message)
        if self.webhook_url:
            import json
            import urllib.request

            request = urllib.request.Request(
                self.webhook_url, data=json.dumps({"text": self.message}).encode(), headers={"Content-Type": "application/json"}
            )
            urllib.request.urlopen(request, timeout=10).close()


def trainer_environment() -> dict[str, str]:
    """Variables the trainer needs, wherever it runs; credentials come from the Airflow connection."""
    settings = get_settings()
    env = {
        "CLEARMARK_S3_ENDPOINT_URL": settings.s3_endpoint_url or "",
        "CLEARMARK_S3_REGION": settings.s3_region,
        "CLEARMARK_MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "CLEARMARK_LAKE_BUCKET": settings.lake_bucket,
        "CLEARMARK_REGISTERED_MODEL": settings.registered_model,
        "CLEARMARK_EXPERIMENT": settings.experiment,
        # Rendered at run time from the connection; Airflow masks the password in logs and the UI.
        "AWS_ACCESS_KEY_ID": "{{ conn.%s.login }}" % S3_CONN_ID,
        "AWS_SECRET_ACCESS_KEY": "{{ conn.%s.password }}" % S3_CONN_ID,
    }
    return env


def train_operator(task_id: str, arguments: str):  # noqa: ANN201 - an Airflow operator
    """The training step: a GPU container (DockerOperator) or a local process, by ``CLEARMARK_TRAIN_RUNNER``.

    Both run ``clearmark train`` with ``arguments`` (shell-quoted; a template is rendered
    first); its last stdout line (a JSON summary) becomes the task's XCom either way.
    """
    settings = get_settings()
    if settings.train_runner == "docker":
        from airflow.providers.docker.operators.docker import DockerOperator
        from docker.types import DeviceRequest, Mount

        return DockerOperator(
            task_id=task_id,
            image=settings.trainer_image,
            command=f"train {arguments}",  # Docker splits a string command as a shell would
            docker_url=settings.docker_url,
            network_mode=settings.docker_network,
            environment=trainer_environment(),
            device_requests=[DeviceRequest(count=settings.trainer_gpus, capabilities=[["gpu"]])] if settings.trainer_gpus else [],
            mounts=[Mount(source=settings.trainer_cache_volume, target="/home/clearmark/.cache", type="volume")],
            mount_tmp_dir=False,
            auto_remove="success",
            shm_size=2 * 1024**3,  # DataLoader workers share batches through /dev/shm
            do_xcom_push=True,
        )
    from airflow.providers.standard.operators.bash import BashOperator

    return BashOperator(task_id=task_id, bash_command=f"clearmark train {arguments}", do_xcom_push=True)
