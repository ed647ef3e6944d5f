"""A small client for Airflow 3's REST API (``/api/v2``), used by ``clearmark demo``."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

TERMINAL_STATES = {"success", "failed"}
ATTEMPTS = 5  # a loaded machine can stall the API server for a while: retry before giving up


class AirflowError(RuntimeError):
    """The Airflow API refused a call or a DAG run did not succeed."""


class AirflowClient:
    """Token-authenticated calls to Airflow's public API."""

    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self.password = password
        self._token: str | None = None

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None, *, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base_url}{path}", data=data, method=method, headers=headers)
        unreachable: OSError | None = None
        for attempt in range(1, ATTEMPTS + 1):
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    payload = response.read()
                return json.loads(payload) if payload else None
            except urllib.error.HTTPError as exc:
                raise AirflowError(f"{method} {path} -> HTTP {exc.code}: {exc.read().decode(errors='replace')[:500]}") from exc
            except OSError as exc:
                unreachable = exc
                time.sleep(5 * attempt)
        raise AirflowError(f"Airflow is unreachable at {self.base_url} ({unreachable}); is the stack up? `clearmark stack status`")

    def token(self) -> str:
        if self._token is None:
            answer = self._request("POST", "/auth/token", {"username": self.username, "password": self.password}, auth=False)
            self._token = answer["access_token"]
        return self._token

    def wait_for_dag(self, dag_id: str, timeout: float = 300) -> None:
        """Wait until the dag-processor has parsed ``dag_id`` (and show import errors if any)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self._request("GET", f"/api/v2/dags/{dag_id}")
                return
            except AirflowError as exc:
                if "404" not in str(exc):
                    raise
            time.sleep(3)
        errors = self._request("GET", "/api/v2/importErrors").get("import_errors", [])
        detail = "; ".join(f"{e['filename']}: {e['stack_trace'][-300:]}" for e in errors) or "no import errors reported"
        raise AirflowError(f"DAG {dag_id} did not appear within {timeout:.0f} s ({detail})")

    def unpause(self, dag_id: str) -> None:
        self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        run = self._request("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        return run["dag_run_id"]

    def latest_run(self, dag_id: str) -> dict[str, Any] | None:
        """The most recently created run of ``dag_id`` (whatever its logical date)."""
        runs = self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns?order_by=-id&limit=1").get("dag_runs", [])
        return runs[0] if runs else None

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float, echo=print) -> dict[str, Any]:  # noqa: ANN001
        """Poll a DAG run until it finishes; raise with the failed tasks if it did not succeed."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            run = self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            tasks = self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances").get("task_instances", [])
            progress = ", ".join(f"{t['task_id']}={t['state']}" for t in tasks if t.get("state"))
            if progress != last:
                echo(f"  {dag_id}: {progress or run['state']}")
                last = progress
            if run["state"] in TERMINAL_STATES:
                if run["state"] != "success":
                    failed = [t["task_id"] for t in tasks if t.get("state") in {"failed", "upstream_failed"}]
                    raise AirflowError(f"{dag_id} run {run_id} {run['state']} (failed tasks: {failed}); open the Airflow UI for the logs")
                return run
            time.sleep(5)
        raise AirflowError(f"{dag_id} run {run_id} did not finish within {timeout:.0f} s")
