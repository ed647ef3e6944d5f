"""DriftNotifier posts to the webhook the DAG gives it, and only then."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from clearmark.orchestration import DriftNotifier


def test_notifier_posts_the_message_to_the_webhook_it_was_given() -> None:
    received: list[dict] = []

    class Webhook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Webhook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        DriftNotifier("drift 60% on photos.zip", webhook_url=f"http://127.0.0.1:{server.server_port}/hook").notify({})
    finally:
        server.shutdown()
    assert received == [{"text": "drift 60% on photos.zip"}]


def test_notifier_without_a_webhook_only_logs(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLEARMARK_DRIFT_WEBHOOK_URL", "http://127.0.0.1:9/never-called")  # settings are not read below the DAG
    DriftNotifier("drift 60% on photos.zip").notify({})
    assert "drift 60% on photos.zip" in caplog.text
