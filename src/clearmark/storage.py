"""Object storage resource: one code path for SeaweedFS, MinIO or AWS S3.

Every pipeline step receives an :class:`ObjectStore` built from :class:`Settings`
(Dagster-style injected resource).  Writes are atomic per object (an S3 PUT is
all-or-nothing; multi-object versions are published by a marker written last, see
``clearmark.data.publish``); downloads go to a temporary file that is renamed into
place, so a crash never leaves a half-written local file behind.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from clearmark.diskspace import DiskSpaceError, check_disk_space

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

    from clearmark.settings import Settings

SHA256_META = "sha256"  # user metadata key holding the content hash of every object we write
CHUNK = 8 * 1024 * 1024
# An archive name becomes one path segment of a report's key and URL.
_ARCHIVE_NAME = re.compile(r"^(?!\.\.?$)[^/\\\x00-\x1f]{1,255}$")


class StorageError(RuntimeError):
    """Object storage is unreachable or refused a request; the message says what to check."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def validate_report_id(report_date: str, archive: str) -> None:
    """Raise ``ValueError`` unless ``report_date`` is YYYY-MM-DD and ``archive`` is one safe path segment.

    Reports per archive and day (drift reports, reviews) are keyed ``<kind>/<date>/<archive>/``.
    """
    try:
        # fromisoformat also takes 20261122; the fixed length keeps keys in one form.
        valid_date = len(report_date) == 10 and bool(date.fromisoformat(report_date))
    except (TypeError, ValueError):
        valid_date = False
    if not valid_date:
        raise ValueError(f"Report date {report_date!r} is not a YYYY-MM-DD date.")
    if not _ARCHIVE_NAME.match(archive or ""):
        raise ValueError(
            f"Archive name {archive!r} cannot name a drift report or review: use the archive's file name "
            "(no '/', '\\', control characters, '.' or '..')."
        )


def list_dated_summaries(store: ObjectStore, kind: str, summary_file: str, *, limit: int = 500) -> list[dict[str, Any]]:
    """The ``<kind>/<date>/<archive>/<summary_file>`` objects of the reports bucket, newest ``limit``.

    Newest date first, then archive name; each summary gets its ``archive`` and ``date``.
    Reads only the small summaries; one that cannot be read is listed with an ``error``
    instead of hiding the others.
    """
    import json

    bucket = store.settings.reports_bucket
    found = []
    for info in store.list(bucket, f"{kind}/"):
        parts = info.key.split("/")
        if len(parts) != 4 or parts[3] != summary_file:
            continue
        try:
            validate_report_id(parts[1], parts[2])
        except ValueError:
            continue
        found.append((parts[1], parts[2], info.key))
    found.sort(key=lambda item: item[1])
    found.sort(key=lambda item: item[0], reverse=True)  # stable: archives stay in name order per day
    summaries = []
    for report_date, archive, key in found[:limit]:
        try:
            summary = json.loads(store.get_bytes(bucket, key))
        except (ValueError, UnicodeDecodeError) as exc:
            summary = {"error": f"unreadable {summary_file}: {exc}"}
        summaries.append({**summary, "archive": archive, "date": report_date})
    return summaries


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ObjectStore:
    """Thin, typed wrapper over a boto3 S3 client with the conventions clearmark needs."""

    def __init__(self, settings: Settings, client: S3Client | None = None) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.settings = settings
        self.client: S3Client = client or boto3.client(
            "s3",
            config=Config(
                retries={"max_attempts": 5, "mode": "standard"},
                connect_timeout=5,
                read_timeout=120,
                s3={"addressing_style": "path"},
                # SeaweedFS and older S3 clones reject the newer default checksum trailers.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
            **self.settings.s3_client_kwargs(),
        )
        # Files above 16 MiB go up as parallel multipart uploads.
        self.transfer = TransferConfig(multipart_threshold=16 * 1024 * 1024, multipart_chunksize=16 * 1024 * 1024, max_concurrency=8)

    # --- buckets ------------------------------------------------------------------------
    def ensure_buckets(self, names: list[str]) -> None:
        """Create the buckets that do not exist yet (idempotent)."""
        from botocore.exceptions import ClientError

        existing = {b["Name"] for b in self._call(self.client.list_buckets).get("Buckets", [])}
        for name in names:
            if name in existing:
                continue
            try:
                self.client.create_bucket(Bucket=name)
            except ClientError as exc:
                # A retried request whose first try succeeded, or a concurrent creator: the bucket is there.
                if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                    raise self._explain(exc) from exc
            except Exception as exc:
                raise self._explain(exc) from exc

    def delete_bucket(self, name: str) -> None:
        """Delete every object of ``name``, then the bucket (for scratch buckets; a missing bucket is fine)."""
        existing = {b["Name"] for b in self._call(self.client.list_buckets).get("Buckets", [])}
        if name not in existing:
            return
        keys = [{"Key": obj.key} for obj in self.list(name)]
        for start in range(0, len(keys), 1000):  # the S3 limit per DeleteObjects call
            self._call(self.client.delete_objects, Bucket=name, Delete={"Objects": keys[start : start + 1000], "Quiet": True})
        self._call(self.client.delete_bucket, Bucket=name)

    def check(self) -> None:
        """Raise :class:`StorageError` with advice unless the store answers an authenticated call."""
        self._call(self.client.list_buckets)

    # --- writes -------------------------------------------------------------------------
    def put_file(self, bucket: str, key: str, path: Path, *, sha256: str | None = None, content_type: str | None = None) -> str:
        """Upload a local file (multipart when large); returns its SHA-256."""
        digest = sha256 or sha256_file(path)
        extra: dict[str, Any] = {"Metadata": {SHA256_META: digest}}
        if content_type:
            extra["ContentType"] = content_type
        self._call(self.client.upload_file, str(path), bucket, key, ExtraArgs=extra, Config=self.transfer)
        return digest

    def put_bytes(self, bucket: str, key: str, data: bytes, *, content_type: str = "application/octet-stream") -> str:
        """Upload a small in-memory object; returns its SHA-256."""
        digest = hashlib.sha256(data).hexdigest()
        self._call(self.client.put_object, Bucket=bucket, Key=key, Body=data, ContentType=content_type, Metadata={SHA256_META: digest})
        return digest

    def put_stream(self, bucket: str, key: str, stream: BinaryIO, *, content_type: str = "application/octet-stream") -> None:
        """Upload from a file object (multipart, constant memory)."""
        self._call(self.client.upload_fileobj, stream, bucket, key, ExtraArgs={"ContentType": content_type}, Config=self.transfer)

    def copy(self, bucket: str, src: str, dst: str, *, dst_bucket: str | None = None) -> None:
        self._call(self.client.copy, {"Bucket": bucket, "Key": src}, dst_bucket or bucket, dst, Config=self.transfer)

    def move(self, bucket: str, src: str, dst: str, *, dst_bucket: str | None = None) -> None:
        """Copy, then delete the source: the object is never absent from both places."""
        self.copy(bucket, src, dst, dst_bucket=dst_bucket)
        self.delete(bucket, src)

    def delete(self, bucket: str, key: str) -> None:
        self._call(self.client.delete_object, Bucket=bucket, Key=key)

    # --- reads --------------------------------------------------------------------------
    def get_bytes(self, bucket: str, key: str) -> bytes:
        return self._call(self.client.get_object, Bucket=bucket, Key=key)["Body"].read()

    def get_file(self, bucket: str, key: str, path: Path) -> Path:
        """Download to ``path`` atomically (temporary file, then rename)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        os.close(fd)
        try:
            self._call(self.client.download_file, bucket, key, tmp, Config=self.transfer)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def get_cached(self, bucket: str, key: str, sha256: str) -> Path:
        """Content-addressed local cache: download ``key`` once per SHA-256."""
        path = self.settings.cache_dir / "objects" / sha256[:2] / sha256
        if not path.exists():
            self.get_file(bucket, key, path)
        return path

    def head(self, bucket: str, key: str) -> dict[str, Any] | None:
        """Object metadata, or ``None`` if it does not exist."""
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in {"404", "NoSuchKey", "NotFound"}:
                return None
            raise self._explain(exc) from exc
        except Exception as exc:  # connection errors
            raise self._explain(exc) from exc

    def exists(self, bucket: str, key: str) -> bool:
        return self.head(bucket, key) is not None

    def stored_sha256(self, bucket: str, key: str) -> str | None:
        """The SHA-256 recorded when clearmark wrote the object, if any."""
        meta = self.head(bucket, key)
        return None if meta is None else meta.get("Metadata", {}).get(SHA256_META)

    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """All objects under ``prefix`` (paginated)."""
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    yield ObjectInfo(key=obj["Key"], size=obj["Size"], etag=obj.get("ETag", "").strip('"'))
        except Exception as exc:
            raise self._explain(exc) from exc

    def list_prefixes(self, bucket: str, prefix: str = "") -> list[str]:
        """Immediate 'folders' below ``prefix`` (delimiter ``/``)."""
        paginator = self.client.get_paginator("list_objects_v2")
        found: list[str] = []
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
                found += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        except Exception as exc:
            raise self._explain(exc) from exc
        return found

    # --- errors -------------------------------------------------------------------------
    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise self._explain(exc) from exc

    def _embedded_disk_note(self) -> str:
        """Where the embedded SeaweedFS keeps its data on this machine and that disk is nearly
        full (the usual cause of its InternalError), a sentence that says so; else ''."""
        data_dir = self.settings.home / "seaweedfs"
        if not data_dir.is_dir():
            return ""
        try:
            check_disk_space(data_dir)
        except DiskSpaceError as exc:
            return f" {exc}"
        return ""

    def _explain(self, exc: Exception) -> Exception:
        from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

        where = self.settings.s3_endpoint_url or "AWS S3"
        if isinstance(exc, EndpointConnectionError):
            return StorageError(
                f"Object storage at {where} is unreachable. Start the embedded stack with "
                "`clearmark stack up`, or set CLEARMARK_S3_ENDPOINT_URL to a running S3 endpoint."
            )
        if isinstance(exc, NoCredentialsError):
            return StorageError(
                "No S3 credentials. Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(the embedded stack writes them to $CLEARMARK_HOME/stack.env on `clearmark stack up`)."
            )
        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            if code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"}:
                return StorageError(
                    f"S3 at {where} refused the credentials ({code}). Check AWS_ACCESS_KEY_ID / "
                    "AWS_SECRET_ACCESS_KEY (or the Airflow connection clearmark_s3)."
                )
            if code == "NoSuchBucket":
                return StorageError(f"Bucket missing at {where}: {exc}. `clearmark stack up` creates the buckets.")
            if code == "InternalError":
                return StorageError(
                    f"S3 at {where} failed internally, even after retries: {exc}.{self._embedded_disk_note()} On the "
                    "embedded store this most often means no writable volume is left: free disk space or raise "
                    "CLEARMARK_SEAWEED_MAX_VOLUMES, then `clearmark stack down && clearmark stack up`; its log is "
                    "$CLEARMARK_HOME/logs/seaweedfs.log."
                )
            return exc
        return exc
