"""``find_new_archives`` / ``process_inbox_item`` against the real SeaweedFS of the test session."""

from __future__ import annotations

import io
import json
import zipfile

import pandas as pd
import pytest

from clearmark.data.features import FEATURE_COLUMNS
from clearmark.removal.inbox import find_new_archives, process_inbox_item
from tests.support.hostile_archives import encode, tiny_detector_folder, watermarked_jpeg, watermarked_rgb

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def finds_everything(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A saved smp detector that marks every pixel: every image gets cleaned."""
    return str(tiny_detector_folder(tmp_path_factory.mktemp("detector") / "all", finds_everything=True))


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _keys(store, bucket: str) -> set[str]:
    return {o.key for o in store.list(bucket)}


def test_inbox_archive_goes_to_outbox_then_processed_and_a_rerun_is_idempotent(settings, store, finds_everything):
    members = {"x/1.jpg": watermarked_jpeg(seed=1), "x/2.png": encode(watermarked_rgb(48, 48, 2), "PNG"), "x/notes.txt": b"hi"}
    archive = _zip(members)
    store.put_bytes(settings.inbox_bucket, "photos.zip", archive)
    store.put_bytes(settings.inbox_bucket, "half/a.jpg", watermarked_jpeg())  # no _READY yet: not an item
    store.put_bytes(settings.inbox_bucket, "notes.txt", b"not an archive name")

    assert find_new_archives(settings) == ["photos.zip"]
    summary = process_inbox_item(settings, "photos.zip", model=finds_everything)

    assert json.loads(json.dumps(summary)) == summary  # JSON-able for XCom
    assert summary["status"] == "ok" and not summary["skipped"]
    assert summary["counts"] == {"cleaned": 2, "unchanged_no_watermark": 0, "copied_non_image": 1, "error": 0}
    assert summary["model_uri"] == finds_everything and len(summary["model_version"]) == 64  # weights SHA-256 for a folder
    outbox = _keys(store, settings.outbox_bucket)
    assert {"photos.zip", "photos.zip.report.json", "photos.zip.report.csv", "photos.zip.features.parquet"} <= outbox
    with zipfile.ZipFile(io.BytesIO(store.get_bytes(settings.outbox_bucket, "photos.zip"))) as cleaned:
        assert sorted(cleaned.namelist()) == sorted(members)
        assert cleaned.read("x/notes.txt") == b"hi" and cleaned.read("x/1.jpg") != members["x/1.jpg"]
    report = json.loads(store.get_bytes(settings.outbox_bucket, summary["report_key"]))
    assert {r["path"]: r["status"] for r in report["rows"]}["x/2.png"] == "cleaned"
    features = pd.read_parquet(io.BytesIO(store.get_bytes(settings.outbox_bucket, summary["features_key"])))
    assert list(features.columns) == FEATURE_COLUMNS and len(features) == 2
    inbox = _keys(store, settings.inbox_bucket)
    assert "photos.zip" not in inbox and summary["processed_key"] == "processed/photos.zip" and "processed/photos.zip" in inbox
    assert find_new_archives(settings) == []

    # The same content dropped again: skipped, same result, original still moved away (never overwriting).
    store.put_bytes(settings.inbox_bucket, "photos.zip", archive)
    again = process_inbox_item(settings, "photos.zip", model=finds_everything)
    assert again["skipped"] and again["counts"] == summary["counts"] and again["outbox_key"] == "photos.zip"
    inbox = _keys(store, settings.inbox_bucket)
    assert "photos.zip" not in inbox and again["processed_key"] in inbox and "processed/photos.zip" in inbox
    assert not (settings.home / "work" / "inbox").exists() or not any((settings.home / "work" / "inbox").iterdir())


def test_ready_folder_is_processed_into_an_outbox_folder(settings, store, finds_everything):
    store.put_bytes(settings.inbox_bucket, "batch/a.jpg", watermarked_jpeg(seed=4))
    store.put_bytes(settings.inbox_bucket, "batch/sub/b.jpg", watermarked_jpeg(seed=5))
    assert find_new_archives(settings) == []
    store.put_bytes(settings.inbox_bucket, "batch/_READY", b"")
    assert find_new_archives(settings) == ["batch/"]

    summary = process_inbox_item(settings, "batch/", model=finds_everything)

    assert summary["status"] == "ok" and summary["counts"]["cleaned"] == 2 and summary["outbox_key"] == "batch/"
    outbox = _keys(store, settings.outbox_bucket)
    assert {"batch/a.jpg", "batch/sub/b.jpg", "batch.report.json", "batch.report.csv", "batch.features.parquet"} <= outbox
    inbox = _keys(store, settings.inbox_bucket)
    assert inbox == {"processed/batch/a.jpg", "processed/batch/sub/b.jpg", "processed/batch/_READY"}


def test_hostile_archive_moves_to_failed_with_an_error_report(settings, store, finds_everything):
    slip = _zip({"ok.jpg": watermarked_jpeg(), "../../escape.txt": b"x"})
    store.put_bytes(settings.inbox_bucket, "evil.zip", slip)
    store.put_bytes(settings.inbox_bucket, "fake.tgz", b"plain text, not gzip")

    evil = process_inbox_item(settings, "evil.zip", model=finds_everything)
    fake = process_inbox_item(settings, "fake.tgz", model=finds_everything)

    assert evil["status"] == "failed" and "path traversal" in evil["reason"]
    assert fake["status"] == "failed" and "not a zip, tar or tar.gz" in fake["reason"]
    inbox = _keys(store, settings.inbox_bucket)
    assert inbox == {"failed/evil.zip", "failed/evil.zip.error.json", "failed/fake.tgz", "failed/fake.tgz.error.json"}
    assert store.get_bytes(settings.inbox_bucket, "failed/evil.zip") == slip  # the original is kept, unchanged
    error = json.loads(store.get_bytes(settings.inbox_bucket, "failed/evil.zip.error.json"))
    assert error["reason"] == evil["reason"]
    assert not any(k.startswith("evil.zip") for k in _keys(store, settings.outbox_bucket))
    assert not (settings.home.parent / "escape.txt").exists()
