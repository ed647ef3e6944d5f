"""ObjectStore against the real SeaweedFS fixture."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from clearmark.settings import Settings
from clearmark.storage import ObjectStore, StorageError, sha256_file

pytestmark = pytest.mark.integration


def test_round_trip_records_content_hash(store: ObjectStore, settings: Settings, tmp_path: Path) -> None:
    source = tmp_path / "a.bin"
    source.write_bytes(b"x" * 1000)
    digest = store.put_file(settings.lake_bucket, "dir/a.bin", source)
    assert digest == sha256_file(source)
    assert store.stored_sha256(settings.lake_bucket, "dir/a.bin") == digest
    cached = store.get_cached(settings.lake_bucket, "dir/a.bin", digest)
    assert cached.read_bytes() == source.read_bytes()
    assert [o.key for o in store.list(settings.lake_bucket, "dir/")] == ["dir/a.bin"]


def test_multipart_upload_of_large_file(store: ObjectStore, settings: Settings, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * (40 * 4096))  # 40 MiB > multipart threshold
    store.put_file(settings.lake_bucket, "big.bin", big)
    head = store.head(settings.lake_bucket, "big.bin")
    assert head is not None and head["ContentLength"] == big.stat().st_size
    assert "-" in head["ETag"]  # multipart ETags carry the part count
    back = store.get_file(settings.lake_bucket, "big.bin", tmp_path / "back.bin")
    assert sha256_file(back) == sha256_file(big)


def test_move_keeps_object_until_copied(store: ObjectStore, settings: Settings) -> None:
    store.put_bytes(settings.inbox_bucket, "photos.zip", b"zip")
    store.move(settings.inbox_bucket, "photos.zip", "processed/photos.zip")
    assert not store.exists(settings.inbox_bucket, "photos.zip")
    assert store.get_bytes(settings.inbox_bucket, "processed/photos.zip") == b"zip"


def test_delete_bucket_removes_its_objects_and_the_bucket(store: ObjectStore, settings: Settings) -> None:
    scratch = settings.lake_bucket.replace("lake-", "scratch-")  # same suffix: the fixture drops it if this test fails
    store.ensure_buckets([scratch])
    for index in range(3):
        store.put_bytes(scratch, f"part/{index}.bin", b"x")
    store.delete_bucket(scratch)
    assert scratch not in {b["Name"] for b in store.client.list_buckets()["Buckets"]}
    assert store.exists(settings.lake_bucket, "nothing") is False  # other buckets untouched and reachable
    store.delete_bucket(scratch)  # already gone: nothing to do


def test_ensure_buckets_accepts_a_bucket_the_listing_did_not_show_yet(
    store: ObjectStore, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A create retried after a lost response, or a concurrent creator: BucketAlreadyOwnedByYou is success."""
    store.ensure_buckets([settings.lake_bucket])
    monkeypatch.setattr(store.client, "list_buckets", lambda: {"Buckets": []})  # a listing from before the create
    store.ensure_buckets([settings.lake_bucket])
    assert store.exists(settings.lake_bucket, "nothing") is False  # still there and reachable


def test_wrong_credentials_say_what_to_set(settings: Settings) -> None:
    wrong = settings.model_copy(update={"s3_secret_access_key": SecretStr("not-the-secret")})
    with pytest.raises(StorageError, match="AWS_SECRET_ACCESS_KEY"):
        ObjectStore(wrong).check()


def test_unreachable_endpoint_says_how_to_start(settings: Settings) -> None:
    gone = settings.model_copy(update={"s3_endpoint_url": "http://127.0.0.1:9"})
    with pytest.raises(StorageError, match="clearmark stack up"):
        ObjectStore(gone).check()


def test_store_takes_writes_in_more_buckets_than_a_small_disk_auto_limit(store: ObjectStore, settings: Settings) -> None:
    # SeaweedFS's automatic volume limit is free disk / 1 GiB (about 10 on a small CI
    # disk) and every bucket holds its own volume: the embedded stack sets it explicitly.
    buckets = [settings.lake_bucket.replace("lake-", f"many{index}-") for index in range(24)]  # dropped by the fixture
    store.ensure_buckets(buckets)
    for bucket in buckets:
        store.put_bytes(bucket, "one.bin", b"x")
    assert all(store.get_bytes(bucket, "one.bin") == b"x" for bucket in buckets)


def test_internal_store_failure_says_what_to_check(settings: Settings) -> None:
    from botocore.exceptions import ClientError

    failure = ClientError({"Error": {"Code": "InternalError", "Message": "We encountered an internal error"}}, "PutObject")
    explained = ObjectStore(settings)._explain(failure)
    assert isinstance(explained, StorageError)
    assert "CLEARMARK_SEAWEED_MAX_VOLUMES" in str(explained) and "seaweedfs.log" in str(explained)


def test_internal_store_failure_on_a_nearly_full_embedded_disk_says_so(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    from types import SimpleNamespace

    from botocore.exceptions import ClientError

    (settings.home / "seaweedfs").mkdir(parents=True)  # the embedded store keeps its data here
    gib = 1 << 30
    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=200 * gib, used=199 * gib, free=1 * gib))
    failure = ClientError({"Error": {"Code": "InternalError", "Message": "We encountered an internal error"}}, "PutObject")

    explained = str(ObjectStore(settings)._explain(failure))

    assert "1.0 GiB free of 200 GiB" in explained and "Free disk space" in explained
