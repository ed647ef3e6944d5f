"""Raw load against a real SeaweedFS: full upload, 0 bytes on re-run, only changes after an edit."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from clearmark.data.raw import INDEX_NAME, RawLoadError, load_raw, read_raw_index
from clearmark.storage import ObjectStore, sha256_file

pytestmark = pytest.mark.integration


def _write_source(root: Path) -> dict[str, bytes]:
    files = {
        "clean/a.png": b"clean-a" * 100,
        "watermarked/a.png": b"marked-a" * 100,
        "watermarked/nested/b.jpg": os.urandom(5000),
        "notes.txt": b"hello",
    }
    for relpath, data in files.items():
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_bytes(data)
    (root / ".hidden").write_bytes(b"ignored")
    return files


def test_load_raw_is_incremental_and_idempotent(store: ObjectStore, tmp_path: Path) -> None:
    bucket = store.settings.lake_bucket
    files = _write_source(tmp_path)
    total = sum(len(data) for data in files.values())

    first = load_raw(store, "demo", tmp_path, progress=False)
    assert (first.files, first.uploaded, first.skipped) == (4, 4, 0)
    assert first.bytes_uploaded == total
    for relpath, data in files.items():
        assert store.get_bytes(bucket, f"raw/demo/{relpath}") == data
    assert not store.exists(bucket, "raw/demo/.hidden")
    index = read_raw_index(store, "demo")
    assert index["watermarked/nested/b.jpg"] == {"sha256": sha256_file(tmp_path / "watermarked/nested/b.jpg"), "size": 5000}

    again = load_raw(store, "demo", tmp_path, progress=False)
    assert (again.uploaded, again.bytes_uploaded, again.skipped, again.bytes_skipped) == (0, 0, 4, total)

    (tmp_path / "clean/a.png").write_bytes(b"changed")
    (tmp_path / "notes.txt").unlink()
    (tmp_path / "clean/new.png").write_bytes(b"new file")
    changed = load_raw(store, "demo", tmp_path, progress=False)
    assert (changed.uploaded, changed.bytes_uploaded, changed.removed) == (2, len(b"changed") + len(b"new file"), 1)
    assert store.get_bytes(bucket, "raw/demo/clean/a.png") == b"changed"
    assert not store.exists(bucket, "raw/demo/notes.txt")
    assert sorted(json.loads(store.get_bytes(bucket, f"raw/demo/{INDEX_NAME}"))) == [
        "clean/a.png", "clean/new.png", "watermarked/a.png", "watermarked/nested/b.jpg",
    ]  # fmt: skip


def test_object_missing_from_store_is_uploaded_again(store: ObjectStore, tmp_path: Path) -> None:
    """The index alone is not trusted: an object deleted behind its back is re-uploaded."""
    _write_source(tmp_path)
    load_raw(store, "demo", tmp_path, progress=False)
    store.delete(store.settings.lake_bucket, "raw/demo/watermarked/a.png")
    repaired = load_raw(store, "demo", tmp_path, progress=False)
    assert repaired.uploaded == 1
    assert store.exists(store.settings.lake_bucket, "raw/demo/watermarked/a.png")


def test_large_file_goes_up_multipart(store: ObjectStore, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(17 * 1024 * 1024))  # above the 16 MiB multipart threshold
    result = load_raw(store, "big", tmp_path, progress=False)
    assert result.bytes_uploaded == big.stat().st_size
    head = store.head(store.settings.lake_bucket, "raw/big/big.bin")
    assert head is not None and head["ContentLength"] == big.stat().st_size
    assert head["ETag"].strip('"').endswith("-2")  # a multipart ETag names its part count


def test_empty_or_missing_folder_is_refused(store: ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(RawLoadError, match="holds no files"):
        load_raw(store, "demo", tmp_path, progress=False)
    with pytest.raises(RawLoadError, match="does not exist"):
        load_raw(store, "demo", tmp_path / "nope", progress=False)
    with pytest.raises(RawLoadError, match="storage prefix"):
        load_raw(store, "../evil", tmp_path, progress=False)


def test_crash_mid_upload_keeps_the_old_index_and_the_next_run_finishes(
    store: ObjectStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_source(tmp_path)
    load_raw(store, "demo", tmp_path, progress=False)
    before = read_raw_index(store, "demo")
    (tmp_path / "clean/a.png").write_bytes(b"edited")
    (tmp_path / "clean/new.png").write_bytes(b"added")

    real_put_file = store.put_file

    def failing_put_file(bucket: str, key: str, path: Path, **kwargs: object) -> str:
        if key.endswith("new.png"):
            raise ConnectionError("network dropped")  # a crash half-way through the uploads
        return real_put_file(bucket, key, path, **kwargs)

    monkeypatch.setattr(store, "put_file", failing_put_file)
    with pytest.raises(ConnectionError):
        load_raw(store, "demo", tmp_path, progress=False)
    assert read_raw_index(store, "demo") == before  # the index is written only after every upload

    monkeypatch.setattr(store, "put_file", real_put_file)
    resumed = load_raw(store, "demo", tmp_path, progress=False)
    assert resumed.uploaded == 2  # the edited file again (the old index does not know it) and the new one
    assert read_raw_index(store, "demo")["clean/new.png"]["size"] == len(b"added")
