"""Raw load: mirror a local source folder into ``lake/raw/<source>/``, incrementally.

Each source keeps ``raw/<source>/_index.json`` (``{relpath: {"sha256", "size"}}``)
next to its files.  A file is uploaded only when its content hash differs from the
index or its object is missing, so a re-run with unchanged sources uploads 0 bytes.
The index is written last: a crash half-way leaves the previous index in place and
the next run simply uploads the same files again.  Curation reads the index, never
the local folder, so what the lake holds is the single input of every version.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from clearmark.storage import sha256_file

if TYPE_CHECKING:
    from clearmark.storage import ObjectStore

INDEX_NAME = "_index.json"
UPLOAD_WORKERS = 8  # uploads wait on the network, not the CPU
SOURCE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

RawIndex = dict[str, dict[str, str | int]]


class RawLoadError(RuntimeError):
    """The source folder cannot be mirrored; the message says what to fix."""


@dataclass(frozen=True)
class RawLoadResult:
    """What one raw load did (JSON-able through :meth:`as_dict`)."""

    source: str
    prefix: str
    files: int
    uploaded: int
    skipped: int
    removed: int
    bytes_uploaded: int
    bytes_skipped: int

    def as_dict(self) -> dict[str, str | int]:
        return asdict(self)


def raw_prefix(source_name: str) -> str:
    """Key prefix of a source's mirror in the lake bucket (ends with ``/``)."""
    if not SOURCE_NAME.match(source_name):
        raise RawLoadError(
            f"Source name {source_name!r} is not usable as a storage prefix: use letters, digits, '.', '_' or '-' "
            "(rename it in the sources file)."
        )
    return f"raw/{source_name}/"


def read_raw_index(store: ObjectStore, source_name: str) -> RawIndex:
    """The stored index of a source (``{}`` if it was never loaded)."""
    key = raw_prefix(source_name) + INDEX_NAME
    if not store.exists(store.settings.lake_bucket, key):
        return {}
    return json.loads(store.get_bytes(store.settings.lake_bucket, key))


def local_files(local_root: Path) -> dict[str, Path]:
    """Every regular file below ``local_root`` by POSIX relative path, hidden files excluded."""
    files: dict[str, Path] = {}
    for path in sorted(local_root.rglob("*")):
        relpath = path.relative_to(local_root).as_posix()
        if not path.is_file() or any(part.startswith(".") for part in relpath.split("/")):
            continue
        if relpath == INDEX_NAME:  # would collide with our own index object
            continue
        files[relpath] = path
    return files


def load_raw(store: ObjectStore, source_name: str, local_root: Path, *, progress: bool = True) -> RawLoadResult:
    """Mirror ``local_root`` into ``lake/raw/<source_name>/``; upload only new or changed files.

    Files that disappeared from the folder are dropped from the index and their
    objects deleted (after the new index is written), so the mirror matches the source.
    """
    from clearmark.progress import progress_bar

    local_root = Path(local_root)
    if not local_root.is_dir():
        raise RawLoadError(f"Source {source_name!r}: folder {local_root} does not exist. Check its path in the sources file.")
    prefix = raw_prefix(source_name)
    bucket = store.settings.lake_bucket
    files = local_files(local_root)
    if not files:
        # An empty folder is almost always a failed download or a wrong path; mirroring it would empty the lake.
        raise RawLoadError(f"Source {source_name!r}: folder {local_root} holds no files. Check the path or the download.")

    previous = read_raw_index(store, source_name)
    stored_sizes = {info.key[len(prefix) :]: info.size for info in store.list(bucket, prefix)}

    with ThreadPoolExecutor(max_workers=UPLOAD_WORKERS) as pool:
        hashes = dict(
            zip(files, progress_bar(pool.map(sha256_file, files.values()), total=len(files), desc=f"hash {source_name}", disable=not progress))
        )
    index: RawIndex = {relpath: {"sha256": hashes[relpath], "size": path.stat().st_size} for relpath, path in files.items()}

    def unchanged(relpath: str) -> bool:
        entry = previous.get(relpath)
        return entry == index[relpath] and stored_sizes.get(relpath) == index[relpath]["size"]

    to_upload = [relpath for relpath in index if not unchanged(relpath)]
    bytes_to_upload = sum(int(index[relpath]["size"]) for relpath in to_upload)

    with (
        progress_bar(total=bytes_to_upload, unit="B", unit_scale=True, desc=f"upload {source_name}", disable=not progress) as bar,
        ThreadPoolExecutor(max_workers=UPLOAD_WORKERS) as pool,
    ):

        def upload(relpath: str) -> None:
            store.put_file(bucket, prefix + relpath, files[relpath], sha256=str(index[relpath]["sha256"]))
            bar.update(int(index[relpath]["size"]))

        list(pool.map(upload, to_upload))

    store.put_bytes(bucket, prefix + INDEX_NAME, json.dumps(index, indent=1, sort_keys=True).encode(), content_type="application/json")
    removed = sorted(set(stored_sizes) - set(index) - {INDEX_NAME})
    for relpath in removed:
        store.delete(bucket, prefix + relpath)

    return RawLoadResult(
        source=source_name,
        prefix=f"s3://{bucket}/{prefix}",
        files=len(index),
        uploaded=len(to_upload),
        skipped=len(index) - len(to_upload),
        removed=len(removed),
        bytes_uploaded=bytes_to_upload,
        bytes_skipped=sum(int(entry["size"]) for entry in index.values()) - bytes_to_upload,
    )
