"""Preflight: check a deployment's configuration before any service depends on it.

The compose init services run ``clearmark preflight`` so that a missing variable,
wrong S3 credentials or an unreachable MLflow server stop the stack at start with a
message that names the variable or the service to fix, instead of failing hours
later inside a task.  Every check returns a :class:`Check`; nothing raises for a
configuration problem.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pydantic import AliasChoices

from clearmark.settings import Settings

if TYPE_CHECKING:
    from clearmark.storage import ObjectStore

# Settings fields a deployment must set explicitly: their defaults only fit the embedded stack.
DEFAULT_REQUIRED_FIELDS: tuple[str, ...] = ("s3_access_key_id", "s3_secret_access_key", "mlflow_tracking_uri")

DATA_BUCKET_FIELDS: tuple[str, ...] = ("lake_bucket", "inbox_bucket", "outbox_bucket", "reports_bucket")


@dataclass(frozen=True)
class Check:
    """Outcome of one preflight check; ``detail`` says what was found or what to fix."""

    name: str
    ok: bool
    detail: str


@dataclass
class PreflightReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]


def variable_names(field_name: str) -> list[str]:
    """Environment variables that set a Settings field, preferred name first."""
    info = Settings.model_fields[field_name]
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    if isinstance(alias, str):
        return [alias]
    return [f"{Settings.model_config.get('env_prefix', '')}{field_name}".upper()]


def known_variables() -> dict[str, str]:
    """Every environment variable the Settings object reads, mapped to its field name."""
    return {name.upper(): field_name for field_name in Settings.model_fields for name in variable_names(field_name)}


def describe_variable(field_name: str) -> str:
    """``AWS_ACCESS_KEY_ID (or CLEARMARK_S3_ACCESS_KEY_ID)``: how messages name a field."""
    names = variable_names(field_name)
    # The AWS_* / MLFLOW_* aliases are what operators know; name them first when present.
    names.sort(key=lambda name: name.startswith("CLEARMARK_"))
    return names[0] if len(names) == 1 else f"{names[0]} (or {', '.join(names[1:])})"


def check_variables(settings: Settings, required_fields: Iterable[str], extra_variables: Iterable[str] = ()) -> Check:
    """Required Settings fields were set by the environment (not defaulted) and are not empty."""
    missing: list[str] = []
    for field_name in required_fields:
        value = getattr(settings, field_name)
        text = value.get_secret_value() if hasattr(value, "get_secret_value") else value
        if field_name not in settings.model_fields_set or text in (None, ""):
            missing.append(describe_variable(field_name))
    by_variable = known_variables()
    for variable in extra_variables:
        field_name = by_variable.get(variable.upper())
        if field_name is not None:
            if field_name not in settings.model_fields_set:
                missing.append(describe_variable(field_name))
        elif not os.environ.get(variable):
            missing.append(variable)
    if missing:
        return Check(
            "variables",
            False,
            f"Missing variable(s): {'; '.join(missing)}. Set them in .env (see .env.example) or the service's environment.",
        )
    return Check("variables", True, "required variables are set")


def check_object_store(store: ObjectStore) -> Check:
    """S3 answers an authenticated call (reachable endpoint, accepted credentials)."""
    from clearmark.storage import StorageError

    settings = store.settings
    where = settings.s3_endpoint_url or "AWS S3"
    try:
        store.check()
    except StorageError as exc:
        return Check("s3", False, str(exc))  # ObjectStore's messages name the endpoint and the variables
    except Exception as exc:  # anything boto3 raises that ObjectStore does not translate
        return Check(
            "s3",
            False,
            f"S3 at {where} failed: {exc}. Check CLEARMARK_S3_ENDPOINT_URL, "
            f"{describe_variable('s3_access_key_id')} and {describe_variable('s3_secret_access_key')}.",
        )
    return Check("s3", True, f"S3 at {where} accepted the credentials")


def bucket_status(store: ObjectStore, bucket: str) -> str:
    """``"exists"``, ``"missing"`` or ``"denied"`` for one bucket."""
    from botocore.exceptions import ClientError

    try:
        store.client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in {"404", "NoSuchBucket", "NotFound"}:
            return "missing"
        if code in {"403", "AccessDenied"}:
            return "denied"
        raise
    return "exists"


def check_buckets(store: ObjectStore, bucket_fields: Sequence[str], *, create: bool) -> Check:
    """Every configured bucket exists (created first when ``create``) and is accessible."""
    settings = store.settings
    where = settings.s3_endpoint_url or "AWS S3"
    buckets = {field_name: getattr(settings, field_name) for field_name in bucket_fields}
    try:
        status = {field_name: bucket_status(store, bucket) for field_name, bucket in buckets.items()}
        missing = [field_name for field_name, state in status.items() if state == "missing"]
        if create and missing:
            store.ensure_buckets([buckets[field_name] for field_name in missing])
            missing = [field_name for field_name in missing if bucket_status(store, buckets[field_name]) != "exists"]
    except Exception as exc:
        return Check("buckets", False, f"Could not check buckets at {where}: {exc}")
    problems = [
        f"bucket '{buckets[f]}' ({describe_variable(f)}) does not exist" for f in missing
    ] + [
        f"bucket '{buckets[f]}' ({describe_variable(f)}) is not accessible with these credentials"
        for f, state in status.items()
        if state == "denied"
    ]
    if problems:
        return Check(
            "buckets",
            False,
            f"At {where}: {'; '.join(problems)}. Create them with `clearmark preflight --create-buckets` "
            "(the compose service s3-init does this) or point the variable at an existing bucket.",
        )
    return Check("buckets", True, f"buckets present: {', '.join(buckets.values())}")


def _get(url: str, timeout: float) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http(s) only, checked by caller)
        return response.status, response.read()


def check_mlflow(settings: Settings, *, timeout: float = 10.0) -> Check:
    """The MLflow tracking server answers its health probe and its REST API."""
    uri = settings.mlflow_tracking_uri.rstrip("/")
    variable = describe_variable("mlflow_tracking_uri")
    if not uri.startswith(("http://", "https://")):
        return Check("mlflow", True, f"tracking URI {uri} is not an HTTP server; nothing to reach")
    try:
        _get(f"{uri}/health", timeout)
        _status, body = _get(f"{uri}/api/2.0/mlflow/experiments/search?max_results=1", timeout)
        json.loads(body)
    except urllib.error.HTTPError as exc:
        hint = (
            " The server rejected the Host header: add this host name to MLFLOW_ALLOWED_HOSTS (mlflow server --allowed-hosts)."
            if exc.code in (400, 403)
            else ""
        )
        return Check("mlflow", False, f"MLflow server at {uri} answered HTTP {exc.code} ({exc.reason}).{hint} Check {variable}.")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return Check(
            "mlflow",
            False,
            f"MLflow server at {uri} is unreachable ({reason}). Check {variable} (now '{uri}') and that the "
            "mlflow service is running (`docker compose ps mlflow`, `docker compose logs mlflow`).",
        )
    return Check("mlflow", True, f"MLflow at {uri} is up")


def check_docker(settings: Settings, *, timeout: float = 10.0) -> Check:
    """The Docker engine DockerOperator uses answers and holds the trainer image."""
    url = settings.docker_url
    try:
        import docker
        from docker.errors import DockerException, ImageNotFound
    except ImportError:
        return Check("docker", False, "The docker package is missing here: install apache-airflow-providers-docker.")
    try:
        client = docker.APIClient(base_url=url, version="auto", timeout=timeout)
        client.inspect_image(settings.trainer_image)
    except ImageNotFound:
        return Check(
            "docker",
            False,
            f"The Docker engine at {url} has no image {settings.trainer_image} (CLEARMARK_TRAINER_IMAGE): build it with "
            "`docker compose build trainer`, or push it to a registry the engine can pull from and name it there.",
        )
    except (DockerException, OSError) as exc:
        return Check(
            "docker",
            False,
            f"The Docker engine at {url} is unreachable ({exc}). Check CLEARMARK_DOCKER_URL and the docker-proxy "
            "service (`docker compose ps docker-proxy`), or set CLEARMARK_TRAIN_RUNNER=local to train without containers.",
        )
    return Check("docker", True, f"Docker engine at {url} has {settings.trainer_image}")


def run_preflight(
    settings: Settings,
    *,
    required_fields: Sequence[str] = DEFAULT_REQUIRED_FIELDS,
    extra_variables: Sequence[str] = (),
    create_buckets: bool = False,
    include_mlflow_bucket: bool = True,
    mlflow: bool = True,
    docker: bool = True,
    timeout: float = 10.0,
) -> PreflightReport:
    """Run every check and collect the results (all of them, so one run lists every problem).

    The Docker check runs where training runs in containers (``CLEARMARK_TRAIN_RUNNER=docker``).
    """
    from clearmark.storage import ObjectStore

    report = PreflightReport([check_variables(settings, required_fields, extra_variables)])
    store = ObjectStore(settings)
    s3 = check_object_store(store)
    report.checks.append(s3)
    if s3.ok:
        bucket_fields = DATA_BUCKET_FIELDS + (("mlflow_bucket",) if include_mlflow_bucket else ())
        report.checks.append(check_buckets(store, bucket_fields, create=create_buckets))
    if mlflow:
        report.checks.append(check_mlflow(settings, timeout=timeout))
    if docker and settings.train_runner == "docker":
        report.checks.append(check_docker(settings, timeout=timeout))
    return report
