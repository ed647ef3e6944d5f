"""The Docker socket proxy lets through what DockerOperator needs for the trainer, and refuses the rest.

No Docker engine: the policy is checked on the request bodies docker-py builds, and the
forwarding against a fake engine on a Unix socket.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import socket
import socketserver
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import docker
import pytest

from clearmark.deploy.docker_proxy import Policy, Refused, check_container_create, check_request, serve
from clearmark.settings import get_settings

TRAINER = "clearmark-trainer:latest"
NETWORK = "clearmark"
VOLUME = "clearmark-trainer-cache"
POLICY = Policy(frozenset({TRAINER}), frozenset({NETWORK}), frozenset({VOLUME}))
CLIENT = docker.APIClient(base_url="tcp://127.0.0.1:9", version="1.41")  # never connects: builds bodies only


def create_body(image: str = TRAINER, *, user: str | None = None, **host_config: Any) -> bytes:
    host_config.setdefault("network_mode", NETWORK)
    config = CLIENT.create_container_config(image, ["train"], user=user, host_config=CLIENT.create_host_config(**host_config))
    return json.dumps(config).encode()


def no_containers(_container: str) -> str | None:
    return None


def operator_create_body(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, gpus: str) -> bytes:
    """The container-create body DockerOperator sends for the train task, as clearmark wires it."""
    from clearmark.orchestration import train_operator

    for name, value in {
        "CLEARMARK_HOME": str(tmp_path),
        "CLEARMARK_TRAIN_RUNNER": "docker",
        "CLEARMARK_DOCKER_URL": "tcp://127.0.0.1:9",  # nothing listens: no engine is ever reached
        "CLEARMARK_TRAINER_IMAGE": TRAINER,
        "CLEARMARK_DOCKER_NETWORK": NETWORK,
        "CLEARMARK_TRAINER_CACHE_VOLUME": VOLUME,
        "CLEARMARK_TRAINER_GPUS": gpus,
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        operator = train_operator("train", "--epochs 1")
    finally:
        get_settings.cache_clear()
    sent: list[dict] = []

    class Captured(Exception):
        pass

    def capture(config: dict, name: str | None = None, platform: str | None = None) -> dict:
        sent.append(config)
        raise Captured

    client = docker.APIClient(base_url="tcp://127.0.0.1:9", version="1.41")
    monkeypatch.setattr(client, "create_container_from_config", capture)
    monkeypatch.setattr(type(operator), "cli", property(lambda _operator: client))
    with pytest.raises(Captured):
        operator._run_image_with_mounts(operator.mounts, add_tmp_variable=False)
    return json.dumps(sent[0]).encode()


@pytest.mark.parametrize("gpus", ["-1", "0"])
def test_the_train_operators_container_is_allowed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, gpus: str) -> None:
    body = operator_create_body(monkeypatch, tmp_path, gpus)
    check_container_create(POLICY, body)
    requests = json.loads(body)["HostConfig"].get("DeviceRequests") or []
    assert [request["Count"] for request in requests] == ([-1] if gpus == "-1" else [])  # no GPU request on a CPU host


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (create_body(privileged=True), "Privileged"),
        (create_body(binds=["/:/host"]), "Binds"),
        (create_body(cap_add=["SYS_ADMIN"]), "CapAdd"),
        (create_body(pid_mode="host"), "PidMode"),
        (create_body(devices=["/dev/sda:/dev/sda"]), "Devices"),
        (create_body(port_bindings={8080: 8080}), "PortBindings"),
        (create_body(network_mode="host"), "network 'host'"),
        (create_body(mounts=[docker.types.Mount("/host", "/etc", type="bind")]), "bind:/etc"),
        (create_body(mounts=[docker.types.Mount("/data", "other-volume", type="volume")]), "volume:other-volume"),
        (create_body(user="0"), "root"),
        (create_body(user="root:root"), "root"),
        (create_body("clearmark-airflow:latest"), "image 'clearmark-airflow:latest'"),
        (create_body(device_requests=[docker.types.DeviceRequest(count=-1, capabilities=[["compute"]], driver="x")]), "device requests"),
        (b"not json", "not JSON"),
    ],
)
def test_dangerous_containers_are_refused(body: bytes, reason: str) -> None:
    with pytest.raises(Refused, match=reason):
        check_container_create(POLICY, body)


@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("GET", "/v1.41/images/json"),
        ("GET", "/v1.41/images/json?filters=%7B%22dangling%22%3A%5B%22true%22%5D%7D"),
        ("GET", "/v1.41/images/clearmark-airflow:latest/json"),
        ("POST", "/v1.41/images/create?fromImage=alpine&tag=latest"),
        ("POST", "/v1.41/containers/abc/exec"),
        ("POST", "/v1.41/build"),
        ("GET", "/v1.41/volumes"),
        ("POST", "/v1.41/networks/create"),
        ("GET", "/v1.41/containers/json"),
        ("POST", "/v1.41/swarm/init"),
    ],
)
def test_calls_the_trainer_does_not_need_are_refused(method: str, target: str) -> None:
    with pytest.raises(Refused):
        check_request(POLICY, method, target, b"", no_containers)


def test_calls_the_trainer_needs_are_allowed() -> None:
    reference = urllib.request.quote(json.dumps({"reference": [TRAINER]}))
    for method, target in [
        ("GET", "/_ping"),
        ("GET", "/version"),
        ("GET", f"/v1.41/images/json?filters={reference}"),  # DockerOperator: is the image here?
        ("GET", f"/v1.41/images/{TRAINER}/json"),  # preflight
        ("POST", "/v1.41/images/create?fromImage=clearmark-trainer&tag=latest"),
        ("POST", "/v1.41/containers/abc123/attach?stream=1&stdout=1&stderr=1"),
        ("POST", "/v1.41/containers/abc123/start"),
        ("POST", "/v1.41/containers/abc123/wait"),
        ("GET", "/v1.41/containers/abc123/logs?stdout=1"),
        ("DELETE", "/v1.41/containers/abc123"),
    ]:
        check_request(POLICY, method, target, b"", lambda _id: TRAINER)


def test_other_images_containers_cannot_be_touched() -> None:
    with pytest.raises(Refused, match="runs clearmark-airflow"):
        check_request(POLICY, "DELETE", "/v1.41/containers/scheduler", b"", lambda _id: "clearmark-airflow:latest")


def test_policy_needs_an_image_to_allow() -> None:
    with pytest.raises(SystemExit, match="DOCKER_PROXY_IMAGES"):
        Policy.from_environment({"DOCKER_PROXY_NETWORKS": NETWORK})


class FakeEngine(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Answers every call with a small JSON body and records what reached it."""

    daemon_threads = True

    def __init__(self, path: str) -> None:
        self.calls: list[str] = []
        engine = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def address_string(self) -> str:
                return "engine"

            def log_message(self, *args: Any) -> None:
                pass

            def answer(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                self.rfile.read(length)
                engine.calls.append(f"{self.command} {self.path} connection={self.headers.get('Connection')}")
                body = json.dumps({"Config": {"Image": TRAINER}, "Id": "abc123"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = answer

        super().__init__(path, Handler)


@pytest.fixture
def proxied(tmp_path: Path):
    engine = FakeEngine(str(tmp_path / "docker.sock"))
    threading.Thread(target=engine.serve_forever, daemon=True).start()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    loop = asyncio.new_event_loop()
    server_task = loop.create_task(serve(POLICY, str(tmp_path / "docker.sock"), "127.0.0.1", port))
    threading.Thread(target=loop.run_forever, daemon=True).start()
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            threading.Event().wait(0.05)
    yield f"http://127.0.0.1:{port}", engine
    loop.call_soon_threadsafe(server_task.cancel)
    loop.call_soon_threadsafe(loop.stop)
    engine.shutdown()


def send(base: str, method: str, path: str, body: bytes | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(base + path, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_proxy_forwards_allowed_calls_one_per_connection_and_stops_refused_ones(proxied) -> None:
    base, engine = proxied
    assert send(base, "GET", "/v1.41/_ping")[0] == 200
    status, answer = send(base, "POST", "/v1.41/containers/create", create_body(privileged=True))
    assert status == 403 and "Privileged" in answer["message"]
    assert send(base, "GET", "/v1.41/images/json")[0] == 403
    assert send(base, "POST", "/v1.41/containers/create", create_body())[0] == 200
    assert send(base, "POST", "/v1.41/containers/abc123/start", b"")[0] == 200
    # Refused calls never reach the engine; allowed ones close after one request, so no unchecked call can follow.
    assert engine.calls == [
        "GET /v1.41/_ping connection=close",
        "POST /v1.41/containers/create connection=close",
        "GET /containers/abc123/json connection=None",  # the proxy asking whose container it is
        "POST /v1.41/containers/abc123/start connection=close",
    ]
