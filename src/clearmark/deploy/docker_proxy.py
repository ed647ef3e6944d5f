"""Docker socket proxy: the Docker API calls DockerOperator needs to run the trainer, nothing else.

Airflow reaches the Docker engine only through this proxy (``docker-proxy`` in
docker-compose.yaml). Path allow-lists (as in tecnativa/docker-socket-proxy) cannot tell
``docker run --privileged -v /:/host`` from a training container, since both are
``POST /containers/create``; this proxy also reads the request body. It allows:

- ``GET /_ping``, ``GET /version``;
- images: inspecting, listing (filtered to) and pulling an allowed image;
- ``POST /containers/create`` of an allowed image, on an allowed network, with named
  volumes from the allow-list, GPU device requests, not as root, and no other host access
  (privileged mode, bind mounts, capabilities, devices, host namespaces, published ports);
- start, attach, wait, logs, inspect, stop, kill and remove of containers of an allowed image.

Configured by ``DOCKER_PROXY_IMAGES``, ``DOCKER_PROXY_NETWORKS`` and ``DOCKER_PROXY_VOLUMES``
(comma-separated). Standard library only: the proxy image copies this one file.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import socket
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

API_VERSION = re.compile(r"^/v\d+(\.\d+)?(?=/)")
CONTAINER_ACTION = re.compile(r"^/containers/(?P<id>[A-Za-z0-9_.-]+)(?:/(?P<action>[a-z]+))?$")
IMAGE_INSPECT = re.compile(r"^/images/(?P<name>.+)/json$")
# (method, action) pairs on one container; action None is the container itself.
CONTAINER_CALLS = {
    ("POST", "start"), ("POST", "attach"), ("POST", "wait"), ("POST", "stop"), ("POST", "kill"),
    ("GET", "logs"), ("GET", "json"), ("DELETE", None),
}  # fmt: skip
# Container fields a trainer may set; anything else with a value is refused.
CREATE_FIELDS = {
    "Image", "Cmd", "Entrypoint", "Env", "WorkingDir", "User", "Tty", "Hostname", "Domainname", "Labels",
    "AttachStdin", "AttachStdout", "AttachStderr", "OpenStdin", "StdinOnce", "StopSignal", "StopTimeout",
    "Healthcheck", "NetworkDisabled", "HostConfig", "NetworkingConfig", "Volumes", "ExposedPorts",
}  # fmt: skip
# Host settings that stay inside the container's own limits; the others are checked or refused.
HOST_FIELDS = {
    "AutoRemove", "ShmSize", "CpuShares", "NanoCpus", "Memory", "MemorySwap", "LogConfig", "Ulimits",
    "Dns", "DnsSearch", "DnsOptions", "ExtraHosts", "Init", "RestartPolicy", "PortBindings",
}  # fmt: skip
ROOT_USERS = {"0", "root"}


@dataclass(frozen=True)
class Policy:
    """What the proxy lets through: images to run, networks to join, named volumes to mount."""

    images: frozenset[str]
    networks: frozenset[str]
    volumes: frozenset[str]

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> Policy:
        environ = dict(os.environ if environ is None else environ)

        def names(variable: str) -> frozenset[str]:
            return frozenset(name.strip() for name in environ.get(variable, "").split(",") if name.strip())

        policy = cls(names("DOCKER_PROXY_IMAGES"), names("DOCKER_PROXY_NETWORKS"), names("DOCKER_PROXY_VOLUMES"))
        if not policy.images:
            raise SystemExit("DOCKER_PROXY_IMAGES is empty: name the image(s) the proxy may run (the trainer image).")
        return policy

    def allows_image(self, name: str) -> bool:
        return name in self.images or (":" not in name.rsplit("/", 1)[-1] and f"{name}:latest" in self.images)


class Refused(Exception):
    """A call the policy does not allow; the message says which part of it."""


def check_request(
    policy: Policy, method: str, target: str, body: bytes, container_image: Callable[[str], str | None]
) -> None:
    """Raise :class:`Refused` unless the call is one the trainer needs.

    ``container_image(id)`` returns the image a container was created from (None if it does
    not exist), so that only the trainer's containers can be started, read or removed.
    """
    parts = urlsplit(target)
    path = API_VERSION.sub("", unquote(parts.path))
    query = parse_qs(parts.query)
    if method in ("GET", "HEAD") and path in ("/_ping", "/version"):
        return
    if method == "GET" and path == "/images/json":
        _check_image_listing(policy, query)
        return
    if method == "GET" and (match := IMAGE_INSPECT.match(path)):
        _require_image(policy, match["name"])
        return
    if method == "POST" and path == "/images/create":
        name = query.get("fromImage", [""])[0]
        tag = query.get("tag", [""])[0]
        _require_image(policy, f"{name}:{tag}" if tag else name)
        return
    if method == "POST" and path == "/containers/create":
        check_container_create(policy, body)
        return
    if (match := CONTAINER_ACTION.match(path)) and (method, match["action"]) in CONTAINER_CALLS:
        image = container_image(match["id"])
        if image is not None and not policy.allows_image(image):
            raise Refused(f"container {match['id']} runs {image}, not an allowed image")
        return
    raise Refused(f"{method} {path} is not a call the trainer needs")


def _require_image(policy: Policy, name: str) -> None:
    if not policy.allows_image(name):
        raise Refused(f"image {name!r} is not allowed (allowed: {', '.join(sorted(policy.images))})")


def _check_image_listing(policy: Policy, query: dict[str, list[str]]) -> None:
    """Listing is allowed only filtered to an allowed image (DockerOperator's "is it here?")."""
    try:
        filters = json.loads(query.get("filters", ["{}"])[0])
    except ValueError as exc:
        raise Refused("image listing with unreadable filters") from exc
    references = filters.get("reference", []) if isinstance(filters, dict) else []
    references = list(references) if isinstance(references, (list, dict)) else [references]
    if set(filters) != {"reference"} or not references:
        raise Refused("listing images is allowed only filtered by reference to an allowed image")
    for reference in references:
        _require_image(policy, reference)


def check_container_create(policy: Policy, body: bytes) -> None:
    """A trainer container: allowed image, network and volumes, no host access, not root."""
    try:
        spec = json.loads(body or b"{}")
    except ValueError as exc:
        raise Refused("container create with a body that is not JSON") from exc
    if not isinstance(spec, dict):
        raise Refused("container create with a body that is not a JSON object")
    _refuse_unknown(spec, CREATE_FIELDS, "container field")
    _require_image(policy, str(spec.get("Image", "")))
    user = str(spec.get("User") or "")
    if user.split(":", 1)[0] in ROOT_USERS:
        raise Refused("containers may not run as root (User)")
    host = spec.get("HostConfig") or {}
    _refuse_unknown(host, HOST_FIELDS | {"Mounts", "NetworkMode", "DeviceRequests"}, "host setting")
    if host.get("PortBindings"):
        raise Refused("publishing container ports on the host is not allowed (PortBindings)")
    network = host.get("NetworkMode") or ""
    networks = set((spec.get("NetworkingConfig") or {}).get("EndpointsConfig") or {}) | {network}
    for name in networks:
        if name not in policy.networks:
            raise Refused(f"network {name or '(default bridge)'!r} is not allowed (allowed: {', '.join(sorted(policy.networks))})")
    for mount in host.get("Mounts") or []:
        if mount.get("Type") != "volume" or mount.get("Source") not in policy.volumes:
            raise Refused(f"mount {mount.get('Type')}:{mount.get('Source')} is not an allowed named volume")
    for request in host.get("DeviceRequests") or []:
        if request.get("Capabilities") != [["gpu"]] or request.get("DeviceIDs") or request.get("Options"):
            raise Refused("only GPU device requests are allowed")


def _refuse_unknown(spec: dict, allowed: Iterable[str], kind: str) -> None:
    extra = sorted(key for key, value in spec.items() if key not in allowed and value not in (None, False, "", [], {}, 0))
    if extra:
        raise Refused(f"{kind}(s) not allowed: {', '.join(extra)}")


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.socket_path = socket_path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


def engine_container_image(socket_path: str, container: str) -> str | None:
    """The image name a container was created with, asked of the engine; None if it has none such."""
    connection = _UnixConnection(socket_path)
    try:
        connection.request("GET", f"/containers/{container}/json")
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    if response.status == 404:
        return None
    if response.status != 200:
        raise Refused(f"could not inspect container {container} (engine answered {response.status})")
    return str(json.loads(data)["Config"]["Image"])


def _refusal(reason: str) -> bytes:
    body = json.dumps({"message": f"docker-proxy refused the call: {reason}"}).encode()
    head = f"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return head.encode() + body


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        if writer.can_write_eof():
            try:
                writer.write_eof()
            except OSError:
                pass


async def handle(policy: Policy, socket_path: str, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
    """One request per connection: checked, then forwarded with ``Connection: close``.

    Attach is the exception: the engine hijacks that connection for the container's output
    stream, so it is piped both ways; no further API call can follow on it.
    """
    try:
        head = await client_reader.readuntil(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")[:-2]
        method, target, _version = request_line.split(" ", 2)
        headers = {name.strip().lower(): value.strip() for name, value in (line.split(":", 1) for line in header_lines)}
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise Refused("chunked request bodies are not accepted (image builds and uploads are not allowed)")
        body = await client_reader.readexactly(int(headers.get("content-length", "0")))
        await asyncio.to_thread(
            check_request, policy, method, target, body, lambda container: engine_container_image(socket_path, container)
        )
    except Refused as exc:
        print(f"refused: {exc}", file=sys.stderr, flush=True)
        client.write(_refusal(str(exc)))
        await client.drain()
        client.close()
        return
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, ConnectionError):
        client.close()
        return
    upgrade = headers.get("upgrade") is not None
    kept = [line for line in header_lines if line.split(":", 1)[0].strip().lower() != "connection" or upgrade]
    forwarded = "\r\n".join([request_line, *kept, *([] if upgrade else ["Connection: close"])]) + "\r\n\r\n"
    engine_reader, engine = await asyncio.open_unix_connection(socket_path)
    engine.write(forwarded.encode("latin-1") + body)
    await engine.drain()
    pipes = [_pipe(engine_reader, client)] + ([_pipe(client_reader, engine)] if upgrade else [])
    await asyncio.gather(*pipes)
    engine.close()
    client.close()


async def serve(policy: Policy, socket_path: str, host: str, port: int) -> None:
    server = await asyncio.start_server(lambda r, w: handle(policy, socket_path, r, w), host, port)
    print(f"docker-proxy on {host}:{port} -> {socket_path}; images {sorted(policy.images)}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    policy = Policy.from_environment()
    socket_path = os.environ.get("DOCKER_PROXY_SOCKET", "/var/run/docker.sock")
    asyncio.run(serve(policy, socket_path, "0.0.0.0", int(os.environ.get("DOCKER_PROXY_PORT", "2375"))))  # noqa: S104


if __name__ == "__main__":
    main()
