"""The embedded stack's services and the process manager that runs them.

Each service is a :class:`ServiceSpec` (command, environment, health URL) built from
:class:`Settings`; :class:`ProcessManager` starts specs as background processes in
their own session, records each pid (with its start time, so a recycled pid is never
mistaken for ours) under ``$CLEARMARK_HOME/run/`` and stops exactly those processes.
The test fixtures use the same specs on free ports, so tests run the real servers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from clearmark.diskspace import DiskSpaceError, check_disk_space
from clearmark.settings import REPO_ROOT, Settings


class StackError(RuntimeError):
    """A service could not be started or did not become healthy."""


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    command: list[str]
    env: dict[str, str]
    health_url: str
    url: str
    login: str = ""
    startup_timeout: float = 120.0
    cwd: Path | None = None
    extra_health_ok: tuple[int, ...] = field(default=())
    preflight: Callable[[], None] | None = None  # raises StackError when the service could not work here


def venv_bin(name: str) -> str:
    """Path of an executable installed next to this Python (the venv's bin/)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise StackError(f"`{name}` is not installed. Run `make install` (pip install -c constraints.txt -e '.[platform,test]').")
    return found


def check_seaweed_disk(data_dir: Path) -> None:
    """:func:`check_disk_space` raising :class:`StackError`, which the stack CLI prints as advice."""
    try:
        check_disk_space(data_dir)
    except DiskSpaceError as exc:
        raise StackError(str(exc)) from None


def s3_credentials_env(settings: Settings) -> dict[str, str]:
    if not (settings.s3_access_key_id and settings.s3_secret_access_key):
        raise StackError("S3 credentials are not set: run `clearmark stack up` (it generates them) or set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.")
    return {
        "AWS_ACCESS_KEY_ID": settings.s3_access_key_id.get_secret_value(),
        "AWS_SECRET_ACCESS_KEY": settings.s3_secret_access_key.get_secret_value(),
    }


def seaweedfs_spec(settings: Settings) -> ServiceSpec:
    """SeaweedFS ``weed mini``: master, volume, filer and S3 gateway, all on loopback.

    gRPC ports are the HTTP ports + 10000 (SeaweedFS convention); WebDAV, Iceberg and
    Lance endpoints are switched off; the admin UI is bound to loopback. The volume
    count is set explicitly: the automatic one depends on free disk and can be too small
    for one volume per bucket. SeaweedFS refuses writes when less than 1 % of its disk is
    free, so the start checks free space first (:func:`check_seaweed_disk`).
    """
    data_dir = settings.home / "seaweedfs"
    data_dir.mkdir(parents=True, exist_ok=True)
    host = settings.bind_host
    buckets = [settings.lake_bucket, settings.inbox_bucket, settings.outbox_bucket, settings.reports_bucket, settings.mlflow_bucket]
    command = [
        venv_bin("weed"), "mini",
        f"-dir={data_dir}",
        f"-ip={host}", f"-ip.bind={host}",
        f"-master.port={settings.seaweed_master_port}",
        f"-volume.port={settings.seaweed_volume_port}",
        f"-volume.max={settings.seaweed_max_volumes}",
        f"-filer.port={settings.seaweed_filer_port}",
        f"-s3.port={settings.s3_port}",
        f"-admin.port={settings.seaweed_admin_port}",
        "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
        f"-bucket={','.join(buckets)}",
    ]  # fmt: skip
    url = f"http://{host}:{settings.s3_port}"
    return ServiceSpec(
        name="seaweedfs",
        command=command,
        env=s3_credentials_env(settings),
        health_url=f"{url}/healthz",
        url=url,
        login="S3 keys: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in $CLEARMARK_HOME/stack.env",
        startup_timeout=60,
        preflight=partial(check_seaweed_disk, data_dir),
    )


def mlflow_spec(settings: Settings) -> ServiceSpec:
    """MLflow tracking server: SQLite backend, artifacts proxied into the S3 store."""
    mlflow_dir = settings.home / "mlflow"
    mlflow_dir.mkdir(parents=True, exist_ok=True)
    host = settings.bind_host
    command = [
        venv_bin("mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{mlflow_dir / 'mlflow.db'}",
        "--artifacts-destination", f"s3://{settings.mlflow_bucket}/",
        "--host", host, "--port", str(settings.mlflow_port),
        "--workers", "1",
    ]  # fmt: skip
    env = {
        **s3_credentials_env(settings),
        "MLFLOW_S3_ENDPOINT_URL": settings.s3_endpoint_url or "",
        # The GenAI job runners (7 huey consumers, ~1.6 GB) serve nothing clearmark uses.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    url = f"http://{host}:{settings.mlflow_port}"
    return ServiceSpec(
        name="mlflow", command=command, env=env, health_url=f"{url}/health", url=url, login="no login (loopback only)", startup_timeout=180
    )


def airflow_env(settings: Settings) -> dict[str, str]:
    """Environment of Airflow standalone: this repo's DAGs and plugins, connections from settings."""
    from urllib.parse import quote

    airflow_home = settings.home / "airflow"
    creds = s3_credentials_env(settings)
    s3_conn = {
        "conn_type": "aws",
        "login": creds["AWS_ACCESS_KEY_ID"],
        "password": creds["AWS_SECRET_ACCESS_KEY"],
        "extra": {"endpoint_url": settings.s3_endpoint_url, "region_name": settings.s3_region},
    }
    venv = str(Path(sys.executable).parent)
    return {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(airflow_home / "passwords.json"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__API__HOST": settings.bind_host,
        "AIRFLOW__API__PORT": str(settings.airflow_port),
        "AIRFLOW__API__BASE_URL": f"http://{settings.bind_host}:{settings.airflow_port}",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "AIRFLOW_CONN_CLEARMARK_S3": json.dumps(s3_conn),
        "AIRFLOW_CONN_CLEARMARK_MLFLOW": f"http://{quote(settings.mlflow_tracking_uri.split('://', 1)[-1], safe=':')}",
        "CLEARMARK_HOME": str(settings.home),
        "PATH": f"{venv}{os.pathsep}{os.environ.get('PATH', '')}",
        "NO_PROXY": "*",
        # Airflow's own services share the few cores of an embedded machine with the tasks; torch's
        # OpenMP threads spin-wait when oversubscribed (2 threads trained 8x slower than 1 here).
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        # Task logs: MLflow logs through Airflow's logging (at its real level) rather than its own
        # stderr handler, which Airflow files as errors; its download progress bars stay off.
        "MLFLOW_CONFIGURE_LOGGING": "false",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }


def airflow_spec(settings: Settings) -> ServiceSpec:
    """Airflow 3 standalone (SQLite, LocalExecutor): api-server, scheduler, dag-processor, triggerer."""
    (settings.home / "airflow").mkdir(parents=True, exist_ok=True)
    url = f"http://{settings.bind_host}:{settings.airflow_port}"
    return ServiceSpec(
        name="airflow",
        command=[venv_bin("airflow"), "standalone"],
        env=airflow_env(settings),
        health_url=f"{url}/api/v2/monitor/health",
        url=url,
        login="user admin, password: `clearmark stack status` prints it",
        startup_timeout=300,
        cwd=settings.home / "airflow",
    )


def http_ok(url: str, timeout: float = 3.0) -> bool:
    """True when ``url`` answers with a status below 500."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (OSError, ValueError):
        return False


class ProcessManager:
    """Start, find and stop the stack's processes by pid file."""

    def __init__(self, home: Path) -> None:
        self.run_dir = home / "run"
        self.log_dir = home / "logs"

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def running_pid(self, name: str) -> int | None:
        """The pid we started for ``name`` if that very process is still alive."""
        import psutil

        path = self.pid_file(name)
        if not path.exists():
            return None
        record = json.loads(path.read_text())
        try:
            proc = psutil.Process(record["pid"])
            if abs(proc.create_time() - record["create_time"]) < 1.0 and proc.status() != psutil.STATUS_ZOMBIE:
                return record["pid"]
        except psutil.Error:
            pass
        return None

    def start(self, spec: ServiceSpec) -> int:
        """Start ``spec`` unless it already runs; wait until healthy; return the pid."""
        import psutil

        pid = self.running_pid(spec.name)
        if pid is not None:
            return pid
        if spec.preflight is not None:  # this machine's own conditions first, then the network
            spec.preflight()
        if http_ok(spec.health_url):
            raise StackError(
                f"Something else already answers on {spec.url} ({spec.name}'s port). Stop it, or choose another port "
                f"(see `clearmark stack status` and CLEARMARK_*_PORT in .env.example)."
            )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_file(spec.name), "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(
            spec.command,
            env={**os.environ, **spec.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=spec.cwd,
            start_new_session=True,  # its own process group: `down` stops its children too
        )
        log.close()
        record = {"pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time(), "command": spec.command, "url": spec.url}
        self.pid_file(spec.name).write_text(json.dumps(record, indent=2))
        self.wait_healthy(spec, proc)
        return proc.pid

    def wait_healthy(self, spec: ServiceSpec, proc: subprocess.Popen[bytes] | None = None) -> None:
        deadline = time.monotonic() + spec.startup_timeout
        while time.monotonic() < deadline:
            if http_ok(spec.health_url):
                return
            if proc is not None and proc.poll() is not None:
                self.pid_file(spec.name).unlink(missing_ok=True)
                raise StackError(f"{spec.name} exited with code {proc.returncode}; see {self.log_file(spec.name)}:\n{self.tail(spec.name)}")
            time.sleep(1.0)
        raise StackError(f"{spec.name} did not become healthy at {spec.health_url} within {spec.startup_timeout:.0f} s; see {self.log_file(spec.name)}")

    def stop(self, name: str, timeout: float = 30.0) -> bool:
        """Stop the process group we started for ``name``; True if something was stopped."""
        import psutil

        pid = self.running_pid(name)
        self.pid_file(name).unlink(missing_ok=True)
        if pid is None:
            return False
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        try:
            psutil.Process(pid).wait(timeout=timeout)
        except psutil.TimeoutExpired:
            os.killpg(pid, signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
        # Children that outlived their leader (e.g. Airflow's gunicorn workers) share the group.
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return True

    def tail(self, name: str, lines: int = 20) -> str:
        path = self.log_file(name)
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
