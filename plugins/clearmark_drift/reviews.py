"""The review side of the plugin's app: list reviews, serve their files, read and record flags.

Reviews are the folders ``clearmark.removal.review`` uploads to
``reports/reviews/<date>/<archive>/``; flags are ``clearmark.data.feedback`` events, keyed
by the reviewed archive's content hash and model version (read from the review's
``summary.json``), so a review of the same content shows the same flags.

A published review holds no copy of a full-size image the inbox and outbox archives can
serve: ``review.json``'s ``served_from`` names the span of the archive object (bucket, key,
offset, size, deflated) that holds it, and :func:`stream_file` reads that span alone.  A
flag copies the flagged original into the review, where the feedback dataset reads it.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from fastapi import HTTPException
from fastapi.responses import StreamingResponse

if TYPE_CHECKING:
    from clearmark.data.feedback import Flag
    from clearmark.storage import ObjectStore

# The files a review holds: nothing else below its prefix is served.
_REVIEW_FILE = re.compile(r"^(index\.html|review\.json|thumbs/\d{6}\.jpg|full/\d{6}\.(before|after)\.[a-z]{3,4})$")


def _prefix(review_date: str, archive: str) -> str:
    from clearmark.removal.review import review_prefix

    try:
        return review_prefix(review_date, archive)
    except ValueError as exc:
        raise HTTPException(status_code=404, detail=f"No such review: {exc}") from exc


def stored_summary(store: ObjectStore, review_date: str, archive: str) -> dict[str, Any]:
    """The review's ``summary.json``; 404 when there is none."""
    from clearmark.removal.review import SUMMARY_FILE

    key = _prefix(review_date, archive) + SUMMARY_FILE
    if not store.exists(store.settings.reports_bucket, key):
        raise HTTPException(status_code=404, detail=f"No review for archive {archive!r} on {review_date}.")
    return json.loads(store.get_bytes(store.settings.reports_bucket, key))


def stream_file(store: ObjectStore, review_date: str, archive: str, file_path: str) -> StreamingResponse:
    """A file of the review: its object, or for a full-size image not copied, the archive span that holds it."""
    from clearmark.removal.review import content_type

    prefix = _prefix(review_date, archive)
    bucket = store.settings.reports_bucket
    if _REVIEW_FILE.match(file_path):
        if store.exists(bucket, prefix + file_path):
            body = store.client.get_object(Bucket=bucket, Key=prefix + file_path)["Body"]
            return StreamingResponse(body.iter_chunks(1024 * 1024), media_type=content_type(file_path))
        if file_path.startswith("full/") and (span := _served_span(store, _served_from(store, prefix), file_path)) is not None:
            return StreamingResponse(_span_chunks(store, span), media_type=content_type(file_path))
    raise HTTPException(status_code=404, detail=f"No file {file_path!r} in the review of {archive!r} on {review_date}.")


def _served_from(store: ObjectStore, prefix: str) -> dict[str, Any]:
    """``review.json``'s ``served_from``: where each full-size image not copied lies (empty without the file)."""
    key = prefix + "review.json"
    if not store.exists(store.settings.reports_bucket, key):
        return {}
    return json.loads(store.get_bytes(store.settings.reports_bucket, key)).get("served_from", {})


def _served_span(store: ObjectStore, served_from: dict[str, Any], file_path: str) -> dict[str, Any] | None:
    """Where the review says a full-size image lies; only spans of the inbox and outbox buckets are read."""
    span = served_from.get(file_path)
    if span is None or span["bucket"] not in (store.settings.inbox_bucket, store.settings.outbox_bucket):
        return None
    return span


def _span_chunks(store: ObjectStore, span: dict[str, Any]) -> Iterator[bytes]:
    """The bytes of an archive member: one ranged GET, inflated when the zip deflated it."""
    first, last = span["offset"], span["offset"] + span["size"] - 1
    body = store.client.get_object(Bucket=span["bucket"], Key=span["key"], Range=f"bytes={first}-{last}")["Body"]
    inflate = zlib.decompressobj(-zlib.MAX_WBITS) if span["deflated"] else None
    for chunk in body.iter_chunks(1024 * 1024):
        yield inflate.decompress(chunk) if inflate else chunk
    if inflate:
        yield inflate.flush()


def _keep_original(store: ObjectStore, prefix: str, served_from: dict[str, Any], name: str) -> str:
    """The reports-bucket key of a full-size image of the review, copied there first if it was served from its archive."""
    bucket, key = store.settings.reports_bucket, prefix + name
    if not store.exists(bucket, key):
        span = _served_span(store, served_from, name)
        if span is None:
            raise HTTPException(status_code=404, detail=f"The review has no full-size image {name!r} to keep with the flag.")
        store.put_bytes(bucket, key, b"".join(_span_chunks(store, span)))
    return key


def _reviewed(summary: dict[str, Any]) -> tuple[str, str]:
    sha, version = summary.get("content_sha256"), summary.get("model_version")
    if not sha or not version:
        raise HTTPException(status_code=409, detail="This review names no archive content hash or model version, so it takes no flags.")
    return str(sha), str(version)


def flags_of(store: ObjectStore, summary: dict[str, Any]) -> dict[str, str]:
    """member -> current flag, for the reviewed archive content and model version."""
    from clearmark.data.feedback import current_flags, flag_prefix, read_flag_events

    sha, version = _reviewed(summary)
    return {member: flag.flag for (_, _, member), flag in current_flags(read_flag_events(store, flag_prefix(sha, version))).items()}


def record(store: ObjectStore, review_date: str, archive: str, member: str, flag: str, user: str) -> dict[str, Any]:
    """Record ``user``'s flag on a pictured image of the review; 422 for anything else."""
    from dataclasses import asdict, replace

    from clearmark.data.feedback import Flag, FlagError, record_flag

    prefix = _prefix(review_date, archive)
    sha, version = _reviewed(stored_summary(store, review_date, archive))
    review = json.loads(store.get_bytes(store.settings.reports_bucket, prefix + "review.json"))
    row = next((r for r in review["rows"] if r["member"] == member and "before" in r), None)
    if row is None:
        raise HTTPException(status_code=422, detail=f"{member!r} is not a pictured image of this review.")
    try:
        candidate = Flag(sha, version, member, flag, user, archive=archive)
        candidate.check()  # a bad flag is refused before anything is copied
        original_key = _keep_original(store, prefix, review.get("served_from", {}), row["before"])  # the feedback dataset reads it there
        saved = record_flag(store, replace(candidate, original_key=original_key))
    except FlagError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from exc
    return asdict(saved)


def all_current_flags(store: ObjectStore) -> dict[tuple[str, str, str], Flag]:
    from clearmark.data.feedback import current_flags, read_flag_events

    return current_flags(read_flag_events(store))


def listed(store: ObjectStore, flags: dict[tuple[str, str, str], Flag], limit: int) -> list[dict[str, Any]]:
    """Review summaries with their flag counts and relative ``href``."""
    from clearmark.removal.review import list_reviews, review_page_path

    counts: dict[tuple[str, str], dict[str, int]] = {}
    for (sha, version, _), flag in flags.items():
        per_flag = counts.setdefault((sha, version), {})
        per_flag[flag.flag] = per_flag.get(flag.flag, 0) + 1
    return [
        {
            **review,
            "flags": counts.get((str(review.get("content_sha256")), str(review.get("model_version"))), {}),
            "href": review_page_path(review["date"], review["archive"]),
        }
        for review in list_reviews(store, limit=limit)
    ]
