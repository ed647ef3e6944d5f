"""A local stand-in for the part of Kaggle's API that ``kagglehub.dataset_download`` uses.

kagglehub (through kagglesdk) talks to ``http://localhost:7777`` when
``KAGGLE_API_ENVIRONMENT=TEST``.  For a whole-dataset download it makes two calls:

1. ``POST /api/v1/datasets.DatasetApiService/GetDataset`` with JSON
   ``{"ownerSlug", "datasetSlug"}``: answers the dataset with ``currentVersionNumber``
   (skipped when the handle names a version);
2. ``POST /api/v1/datasets.DatasetApiService/DownloadDataset`` with
   ``{"ownerSlug", "datasetSlug", "datasetVersionNumber"}``: Kaggle answers a redirect
   to a signed storage URL, which serves the zip archive (with an ``x-goog-hash`` MD5
   that kagglehub verifies).

Errors are JSON ``{"code": 4xx, "message": ...}``, which kagglesdk turns into
``requests.HTTPError``.  Credentials are checked like Kaggle does: HTTP Basic
(user name + key) or a Bearer API token.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

KAGGLE_TEST_PORT = 7777  # fixed by kagglesdk for KAGGLE_API_ENVIRONMENT=TEST
API_PREFIX = "/api/v1/datasets.DatasetApiService/"


@dataclass
class KaggleStandIn:
    """Serve ``datasets`` ({"owner/slug": zip bytes}) to clients holding ``username``/``key`` or ``token``."""

    datasets: dict[str, bytes]
    username: str
    key: str
    token: str | None = None
    version: int = 3
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path) of every request seen

    def __post_init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://localhost:{KAGGLE_TEST_PORT}"

    def start(self) -> KaggleStandIn:
        self._server = ThreadingHTTPServer(("127.0.0.1", KAGGLE_TEST_PORT), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, name="kaggle-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> KaggleStandIn:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def authorised(self, header: str | None) -> bool:
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        if scheme == "Bearer":
            return self.token is not None and value == self.token
        if scheme == "Basic":
            return base64.b64decode(value).decode() == f"{self.username}:{self.key}"
        return False


def _handler_for(standin: KaggleStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
            """Keep test output quiet."""

        def _json(self, status: int, payload: dict[str, object]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, message: str) -> None:
            self._json(status, {"code": status, "message": message})

        def do_POST(self) -> None:  # noqa: N802 - stdlib naming
            standin.requests.append(("POST", self.path))
            request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if not standin.authorised(self.headers.get("Authorization")):
                self._error(401, "Unauthenticated: invalid username or key")
                return
            handle = f"{request.get('ownerSlug')}/{request.get('datasetSlug')}"
            if handle not in standin.datasets:
                self._error(404, f"Dataset {handle} not found")
                return
            if self.path == API_PREFIX + "GetDataset":
                owner, slug = handle.split("/")
                self._json(200, {"ownerSlug": owner, "datasetSlug": slug, "currentVersionNumber": standin.version})
            elif self.path == API_PREFIX + "DownloadDataset":
                version = request.get("datasetVersionNumber", standin.version)
                self.send_response(302)
                self.send_header("Location", f"/storage/{handle}/{version}.zip")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._error(404, f"no such API method {self.path}")

        def do_GET(self) -> None:  # noqa: N802 - stdlib naming
            """The signed storage URL the download redirects to (no credentials, like GCS)."""
            standin.requests.append(("GET", self.path))
            handle = self.path.removeprefix("/storage/").rsplit("/", 1)[0]
            if not self.path.startswith("/storage/") or handle not in standin.datasets:
                self._error(404, "no such object")
                return
            archive = standin.datasets[handle]
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(len(archive)))
            self.send_header("x-goog-hash", f"md5={base64.b64encode(hashlib.md5(archive).digest()).decode()}")
            self.end_headers()
            self.wfile.write(archive)

    return Handler
