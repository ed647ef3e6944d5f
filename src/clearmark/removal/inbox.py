"""Inbox -> outbox processing: the functions the ``clearmark_inbox`` DAG calls.

An inbox item is a top-level archive key (``photos.zip``, ``.tar``, ``.tar.gz``, ``.tgz``)
or a top-level folder prefix (``batch/``) completed by a ``batch/_READY`` object.
:func:`process_inbox_item` downloads it into a work folder, cleans it, uploads the
results to the outbox and only then moves the original to ``inbox/processed/``.  An
input that is unreadable or hostile as a whole goes to ``inbox/failed/`` next to
``<name>.error.json``.  Store or registry outages raise instead, so the task is
retried with the original still in place.  A record per input content hash in the
reports bucket (``removal/index/<sha256>.json``, written after the outputs) makes a
re-run of the same content a no-op that returns the first result.
"""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearmark.model.registry import champion_uri
from clearmark.removal.archive import ArchiveError, Limits, kind_from_name, safe_relative_path
from clearmark.removal.runner import run_removal

if TYPE_CHECKING:
    from clearmark.removal.pipeline import RemovalOutputs
    from clearmark.settings import Settings
    from clearmark.storage import ObjectStore

PROCESSED = "processed/"
FAILED = "failed/"
READY_MARKER = "_READY"
INDEX_PREFIX = "removal/index/"


def find_new_archives(settings: Settings) -> list[str]:
    """Inbox keys ready for processing: top-level archives and ``<folder>/`` prefixes with a ``_READY`` marker."""
    from clearmark.storage import ObjectStore

    found: set[str] = set()
    for obj in ObjectStore(settings).list(settings.inbox_bucket):
        key = obj.key
        if key.startswith((PROCESSED, FAILED)):
            continue
        if "/" not in key and kind_from_name(key):
            found.add(key)
        elif key.count("/") == 1 and key.endswith("/" + READY_MARKER):
            found.add(key[: -len(READY_MARKER)])
    return sorted(found)


def process_inbox_item(settings: Settings, key: str, *, model: str | None = None) -> dict[str, Any]:
    """Download, clean and publish one inbox item; returns a JSON-able summary (see module doc).

    ``model`` overrides the champion (a detector folder or an MLflow URI).
    """
    from clearmark.storage import ObjectStore

    store = ObjectStore(settings)
    name = key.rstrip("/")
    if not name or "/" in name or key.startswith((PROCESSED, FAILED)):
        raise ValueError(f"{key!r} is not an inbox item; pass a key returned by find_new_archives")
    is_folder = key.endswith("/")
    work = settings.home / "work" / "inbox" / f"{uuid.uuid4().hex[:12]}"
    try:
        input_path = work / "in" / name
        try:
            digest = _download(store, key, input_path, is_folder)
        except ArchiveError as exc:
            return _fail(store, key, name, None, str(exc))
        existing = _existing_result(store, digest)
        if existing is not None:
            existing["processed_key"] = _archive_original(store, key, PROCESSED, digest)
            return {**existing, "skipped": True}
        try:
            # Masks for the review page's mask panel (clearmark.removal.review).
            outputs = run_removal(settings, input_path, work / "out" / name, model=model, save_masks=True)
        except ArchiveError as exc:
            return _fail(store, key, name, digest, str(exc))
        summary = _publish(store, key, name, digest, outputs)
        summary["model_uri"] = model or champion_uri(settings)
        store.put_bytes(settings.reports_bucket, f"{INDEX_PREFIX}{digest}.json", json.dumps(summary).encode(), content_type="application/json")
        summary["processed_key"] = _archive_original(store, key, PROCESSED, digest)
        return {**summary, "skipped": False}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _download(store: ObjectStore, key: str, target: Path, is_folder: bool) -> str:
    """Download the item to ``target``; returns its content hash (of the archive, or of the folder's files)."""
    import hashlib

    from clearmark.storage import sha256_file

    limits, bucket = Limits.from_settings(store.settings), store.settings.inbox_bucket
    if not is_folder:
        head = store.head(bucket, key)
        if head is None:
            raise FileNotFoundError(f"{key} is no longer in the inbox bucket {bucket}")
        if head["ContentLength"] > limits.max_total_bytes:
            raise ArchiveError(f"{key} is {head['ContentLength']} bytes, above the {limits.max_total_bytes}-byte limit")
        store.get_file(bucket, key, target)
        return sha256_file(target)
    listing = [o for o in store.list(bucket, key) if o.key != key + READY_MARKER]
    if sum(o.size for o in listing) > limits.max_total_bytes:
        raise ArchiveError(f"folder {key} holds more than {limits.max_total_bytes} bytes; split it")
    if len(listing) > limits.max_members:
        raise ArchiveError(f"folder {key} holds more than {limits.max_members} objects; split it")
    lines = []
    target.mkdir(parents=True, exist_ok=True)
    for obj in listing:
        if obj.key.endswith("/"):  # an explicit "folder" object
            continue
        rel = safe_relative_path(obj.key[len(key) :])
        lines.append(f"{rel}\t{sha256_file(store.get_file(bucket, obj.key, target / rel))}\n")
    if not lines:
        raise ArchiveError(f"folder {key} is empty: it holds no files besides {READY_MARKER}")
    return hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()


def _existing_result(store: ObjectStore, digest: str) -> dict[str, Any] | None:
    index_key = f"{INDEX_PREFIX}{digest}.json"
    if not store.exists(store.settings.reports_bucket, index_key):
        return None
    return json.loads(store.get_bytes(store.settings.reports_bucket, index_key))


def _publish(store: ObjectStore, key: str, name: str, digest: str, outputs: RemovalOutputs) -> dict[str, Any]:
    """Upload the cleaned item and its report files to the outbox; returns the summary."""
    bucket = store.settings.outbox_bucket
    if outputs.output.is_dir():
        for path in sorted(p for p in outputs.output.rglob("*") if p.is_file()):
            store.put_file(bucket, f"{name}/{path.relative_to(outputs.output).as_posix()}", path)
        outbox_key = f"{name}/"
    else:
        store.put_file(bucket, name, outputs.output)
        outbox_key = name
    keys = {
        "report_key": (f"{name}.report.json", outputs.report_json, "application/json"),
        "report_csv_key": (f"{name}.report.csv", outputs.report_csv, "text/csv"),
        "features_key": (f"{name}.features.parquet", outputs.features, "application/vnd.apache.parquet"),
    }
    if outputs.masks is not None:
        keys["masks_key"] = (f"{name}.masks.zip", outputs.masks, "application/zip")
    for object_key, path, content_type in keys.values():
        store.put_file(bucket, object_key, path, content_type=content_type)
    watermark_keys = [name + path.name[len(outputs.output.name) :] for path in outputs.watermarks]  # <name>.watermark.png
    for object_key, path in zip(watermark_keys, outputs.watermarks, strict=True):
        store.put_file(bucket, object_key, path, content_type="image/png")
    report = outputs.report.summary()
    return {
        "key": key,
        "name": name,
        "status": report["status"],
        "content_sha256": digest,
        "model_version": report["model_version"],
        "inpainter": report["inpainter"],
        "counts": report["counts"],
        "restorations": report["restorations"],
        "members": report["members"],
        "duration_s": report["duration_s"],
        "images_per_s": report["images_per_s"],
        "outbox_bucket": bucket,
        "outbox_key": outbox_key,
        **{field: spec[0] for field, spec in keys.items()},
        "watermark_keys": watermark_keys,
        "finished_at": datetime.now(UTC).isoformat(),
    }


def _fail(store: ObjectStore, key: str, name: str, digest: str | None, reason: str) -> dict[str, Any]:
    """Write ``failed/<name>.error.json``, then move the original to ``failed/``."""
    error = {
        "key": key,
        "name": name,
        "status": "failed",
        "reason": reason,
        "content_sha256": digest,
        "failed_at": datetime.now(UTC).isoformat(),
    }
    error_key = f"{FAILED}{name}.error.json"
    store.put_bytes(store.settings.inbox_bucket, error_key, json.dumps(error, indent=2).encode(), content_type="application/json")
    return {**error, "error_key": error_key, "failed_key": _archive_original(store, key, FAILED, digest), "skipped": False}


def _archive_original(store: ObjectStore, key: str, prefix: str, digest: str | None) -> str:
    """Move the item under ``prefix`` (copy everything first, then delete, marker first).

    An earlier item with the same name is never overwritten: the new one then goes to
    ``<prefix><hash12>-<name>``.
    """
    bucket = store.settings.inbox_bucket
    destination = prefix + key
    taken = store.exists(bucket, destination) if not key.endswith("/") else any(True for _ in store.list(bucket, destination))
    if taken:
        destination = f"{prefix}{(digest or uuid.uuid4().hex)[:12]}-{key}"
    sources = [key] if not key.endswith("/") else [o.key for o in store.list(bucket, key)]
    for source in sources:
        store.copy(bucket, source, destination + source[len(key) :])
    # The marker goes first: a crash mid-way leaves no half folder that looks ready.
    for source in sorted(sources, key=lambda k: not k.endswith(READY_MARKER)):
        store.delete(bucket, source)
    return destination
