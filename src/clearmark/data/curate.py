"""Curation: raw objects in the lake -> an immutable, versioned curated dataset.

A version lives under ``lake/curated/<dataset>/<version>/`` (see docs/architecture.md):
normalised PNGs in ``watermarked/``, ``clean/`` and ``masks/``, ``rejects.parquet`` and
``manifest.parquet`` (written last of the curation outputs, so its presence means the
version is complete).  ``version`` is ``"v"`` + SHA-256 over the raw content hashes and
the curation parameters, so the same inputs always give the same version and a retry
finds its own earlier work.  Readers only see versions with ``_PUBLISHED.json``
(written by :func:`publish` after validation), and ``curated/<dataset>/LATEST``
names the version published last.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearmark.data.raw import RawIndex, raw_prefix, read_raw_index

if TYPE_CHECKING:
    import pandas as pd
    from PIL import Image

    from clearmark.data.sources import RawPair, SourceSpec
    from clearmark.settings import Settings
    from clearmark.storage import ObjectStore

# Bump when the curated output of the same raw inputs changes (it is part of the version hash).
CURATION_FORMAT = 1
MANIFEST = "manifest.parquet"
REJECTS = "rejects.parquet"
PUBLISHED = "_PUBLISHED.json"
LATEST = "LATEST"
MANIFEST_COLUMNS = [
    "id", "split", "source", "watermarked_key", "clean_key", "mask_key", "width", "height",
    "mode", "bytes", "sha256", "clean_sha256", "mask_coverage",
]  # fmt: skip
REJECT_COLUMNS = ["source", "path", "reason", "detail"]
TRANSFER_WORKERS = 8  # downloads and uploads wait on the network
# Each worker decodes, encodes and uploads one pair: Pillow and zlib release the GIL while
# they work, and the uploads' network waits overlap with other pairs' encoding.
CURATE_WORKERS = 8
PNG_COMPRESS_LEVEL = 1  # ~3x faster than the default 6 for ~15% larger files


class CurationError(RuntimeError):
    """Curation cannot produce a version; the message says what to do."""


class DatasetNotFoundError(LookupError):
    """The dataset or version is not published (readers never see unpublished versions)."""


@dataclass(frozen=True)
class CurateResult:
    """Summary of one curation (JSON-able through :meth:`as_dict`)."""

    dataset: str
    version: str
    prefix: str
    rows: int
    rejects: int
    reject_ratio: float
    reused: bool = False
    published: bool = False
    reject_reasons: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_tables(cls, dataset: str, version: str, location: str, rows: int, rejects: pd.DataFrame, **flags: bool) -> CurateResult:
        """Summary of a version from its row count and its rejects table."""
        return cls(
            dataset=dataset,
            version=version,
            prefix=location,
            rows=rows,
            rejects=len(rejects),
            reject_ratio=reject_ratio(rows, len(rejects)),
            reject_reasons={str(k): int(v) for k, v in rejects["reason"].value_counts().items()},
            **flags,
        )


@dataclass
class LocalDataset:
    """A published version downloaded to a local folder: ``root / row.watermarked_key`` exists."""

    root: Path
    manifest: pd.DataFrame
    dataset: str
    version: str
    manifest_sha256: str


@dataclass(frozen=True)
class CuratedPair:
    """One accepted pair: its manifest row and its normalised PNGs by key."""

    row: dict[str, Any]
    files: dict[str, bytes]


# --- keys ---------------------------------------------------------------------------------


def dataset_prefix(dataset: str) -> str:
    """``curated/<dataset>/``."""
    if not dataset or "/" in dataset or dataset.startswith("."):
        raise CurationError(f"Dataset name {dataset!r} is not usable as a storage prefix; use a plain name like 'synthetic'.")
    return f"curated/{dataset}/"


def version_prefix(dataset: str, version: str) -> str:
    """``curated/<dataset>/<version>/`` in the lake bucket."""
    return f"{dataset_prefix(dataset)}{version}/"


# --- version ------------------------------------------------------------------------------


def curation_parameters(settings: Settings, sources: Iterable[SourceSpec]) -> dict[str, Any]:
    """Everything besides the raw bytes that changes the curated output."""
    return {
        "format": CURATION_FORMAT,
        "max_image_pixels": settings.max_image_pixels,
        "sources": [_source_parameters(source) for source in sorted(sources, key=lambda s: s.name)],
    }


def curation_version(raw_indexes: dict[str, RawIndex], parameters: dict[str, Any]) -> str:
    """``"v"`` + 12 hex digits of SHA-256 over the sorted raw content hashes and ``parameters``.

    Independent of dict order and of when or where the files were loaded.
    """
    content = {
        source: sorted((relpath, str(entry["sha256"])) for relpath, entry in index.items())
        for source, index in sorted(raw_indexes.items())
    }
    payload = json.dumps({"raw": content, "parameters": parameters}, sort_keys=True, separators=(",", ":"), default=str)
    return "v" + hashlib.sha256(payload.encode()).hexdigest()[:12]


def _source_parameters(source: SourceSpec) -> dict[str, Any]:
    """What of a source's declaration shapes its curated pairs.

    Where the files come from (kind, handle, path, generator options) only changes
    the raw bytes, which the version already hashes; leaving it out keeps the version
    the same on every machine.
    """
    return {"name": source.name, "layout": source.layout, "mask_threshold": source.mask_threshold}


# --- curation of a local folder (no storage involved) ---------------------------------------


def curate_folder(
    source: SourceSpec,
    root: Path,
    *,
    max_image_pixels: int,
    emit: Callable[[CuratedPair], None],
    progress: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Discover and normalise every pair of ``source`` below ``root``.

    ``emit`` receives each accepted pair (e.g. to upload its PNGs) as it is ready.
    Returns the manifest rows and the reject rows; bad inputs never raise.
    """
    from clearmark.data.sources import discover_pairs
    from clearmark.progress import progress_bar

    discovery = discover_pairs(source, root)
    rejects = [_reject_row(reject) for reject in discovery.rejects]
    rows: list[dict[str, Any]] = []

    def work(pair: RawPair) -> tuple[dict[str, Any] | None, dict[str, str] | None]:
        """(manifest row, None) or (None, reject row); the PNG bytes are emitted, not kept."""
        result = curate_pair(source, pair, root, max_image_pixels=max_image_pixels)
        if isinstance(result, CuratedPair):
            emit(result)
            return result.row, None
        return None, result

    with ThreadPoolExecutor(max_workers=CURATE_WORKERS) as pool:
        outcomes = pool.map(work, discovery.pairs)
        for row, reject in progress_bar(outcomes, total=len(discovery.pairs), desc=f"curate {source.name}", disable=not progress):
            if row is not None:
                rows.append(row)
            if reject is not None:
                rejects.append(reject)
    return rows, rejects


def curate_pair(source: SourceSpec, pair: RawPair, root: Path, *, max_image_pixels: int) -> CuratedPair | dict[str, str]:
    """Normalise one pair and compute its mask; a reject row when any of its files is bad."""
    from clearmark.data.images import ImageRejected, load_normalized
    from clearmark.data.masks import coverage
    from clearmark.data.splits import stable_split

    current = pair.watermarked
    try:
        watermarked, info = load_normalized(pair.watermarked, max_pixels=max_image_pixels)
        clean = None
        if pair.clean is not None:
            current = pair.clean
            clean, _ = load_normalized(pair.clean, max_pixels=max_image_pixels)
            if clean.size != watermarked.size:
                return _reject(source, root, pair.clean, "size_mismatch", _mismatch("clean image", clean, watermarked))
        current = pair.mask or pair.watermarked
        mask = _pair_mask(source, pair, watermarked, clean, max_image_pixels)
        if mask.size != watermarked.size:
            return _reject(source, root, current, "size_mismatch", _mismatch("mask", mask, watermarked))
    except ImageRejected as exc:
        return _reject(source, root, current, exc.reason, exc.detail)
    except ValueError as exc:  # e.g. a degenerate YOLO box
        return _reject(source, root, current, "bad_mask", str(exc))

    from clearmark.storage import sha256_file

    watermarked_key, mask_key = f"watermarked/{pair.id}.png", f"masks/{pair.id}.png"
    files = {watermarked_key: _png(watermarked), mask_key: _png(mask)}
    clean_key = None
    if clean is not None:
        clean_key = f"clean/{pair.id}.png"
        files[clean_key] = _png(clean)
    row = {
        "id": pair.id,
        "split": stable_split(pair.id),
        "source": source.name,
        "watermarked_key": watermarked_key,
        "clean_key": clean_key,
        "mask_key": mask_key,
        "width": watermarked.width,
        "height": watermarked.height,
        "mode": info.mode,
        "bytes": info.bytes,
        "sha256": sha256_file(pair.watermarked),
        "clean_sha256": sha256_file(pair.clean) if pair.clean is not None else None,
        "mask_coverage": float(coverage(mask)),
    }
    return CuratedPair(row=row, files=files)


def _pair_mask(
    source: SourceSpec, pair: RawPair, watermarked: Image.Image, clean: Image.Image | None, max_image_pixels: int
) -> Image.Image:
    """The pair's binary L mask: the given mask file, else the clean/watermarked difference, else its boxes."""
    from clearmark.data.images import load_normalized
    from clearmark.data.masks import mask_from_boxes, mask_from_difference

    if pair.mask is not None:
        given, _ = load_normalized(pair.mask, max_pixels=max_image_pixels)
        return given.convert("L").point(lambda value: 255 if value >= 128 else 0)
    if clean is not None:
        return mask_from_difference(watermarked, clean, source.mask_threshold)
    return mask_from_boxes(watermarked.size, pair.boxes or [])  # no boxes: an image without watermark


def _mismatch(what: str, image: Image.Image, watermarked: Image.Image) -> str:
    return (
        f"{what} is {image.width}x{image.height} but its watermarked image is {watermarked.width}x{watermarked.height} "
        "(after EXIF orientation); a pair must have the same size: check the pairing or re-export the file."
    )


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def _reject(source: SourceSpec, root: Path, path: Path, reason: str, detail: str) -> dict[str, str]:
    return {"source": source.name, "path": _relative(root, path), "reason": reason, "detail": detail}


def _reject_row(reject: Any) -> dict[str, str]:
    return {"source": reject.source, "path": str(reject.path), "reason": reject.reason, "detail": reject.detail}


def _relative(root: Path, path: Path) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


# --- curation from the lake ------------------------------------------------------------------


def curate(settings: Settings, store: ObjectStore, dataset: str, sources: list[SourceSpec], *, progress: bool = True) -> CurateResult:
    """Build (or find) the curated version of ``dataset`` from the raw objects of ``sources``.

    Bad inputs go to ``rejects.parquet``; raises :class:`CurationError` when the
    reject ratio exceeds ``settings.max_reject_ratio`` or no pair survives (the
    rejects table is written first, so the reasons are in the lake).
    """
    import pandas as pd

    if not sources:
        raise CurationError(f"Dataset {dataset!r} declares no sources. Add one to {settings.sources_file}.")
    indexes = {source.name: read_raw_index(store, source.name) for source in sources}
    missing = [name for name, index in indexes.items() if not index]
    if missing:
        raise CurationError(
            f"No raw data in s3://{settings.lake_bucket}/raw/ for source(s) {', '.join(missing)}. "
            f"Load them first: `clearmark etl load-raw --dataset {dataset}`."
        )
    version = curation_version(indexes, curation_parameters(settings, sources))
    prefix = version_prefix(dataset, version)
    bucket = settings.lake_bucket

    existing = _existing_result(store, dataset, version)
    if existing is not None:
        # The ratio is a policy, not an input of the version: an earlier, more lenient run does not pass it.
        _check_reject_ratio(settings, existing)
        return existing

    def upload(pair: CuratedPair) -> None:
        for key, data in pair.files.items():
            store.put_bytes(bucket, prefix + key, data, content_type="image/png")

    rows: list[dict[str, Any]] = []
    rejects: list[dict[str, str]] = []
    for source in sources:
        view = materialise_raw(store, source.name, indexes[source.name], progress=progress)
        source_rows, source_rejects = curate_folder(source, view, max_image_pixels=settings.max_image_pixels, emit=upload, progress=progress)
        rows += source_rows
        rejects += source_rejects

    rejects_df = pd.DataFrame(rejects, columns=REJECT_COLUMNS).sort_values(["source", "path"], ignore_index=True)
    store.put_bytes(bucket, prefix + REJECTS, _parquet(rejects_df))
    result = CurateResult.from_tables(dataset, version, f"s3://{bucket}/{prefix}", len(rows), rejects_df)
    _check_reject_ratio(settings, result)
    store.put_bytes(bucket, prefix + MANIFEST, _parquet(manifest_frame(rows)))
    return result


def _check_reject_ratio(settings: Settings, result: CurateResult) -> None:
    """Raise when no pair survived or too large a share of the inputs was rejected."""
    where = f"{result.prefix}{REJECTS}"
    if not result.rows:
        raise CurationError(
            f"No usable pair in dataset {result.dataset!r} ({result.rejects} rejected, reasons {result.reject_reasons}); see {where}."
        )
    if result.reject_ratio > settings.max_reject_ratio:
        raise CurationError(
            f"{result.rejects} of {result.rows + result.rejects} inputs of dataset {result.dataset!r} were rejected "
            f"({result.reject_ratio:.1%} > CLEARMARK_MAX_REJECT_RATIO={settings.max_reject_ratio:.0%}); "
            f"reasons {result.reject_reasons}. See {where}, fix the sources, or raise the ratio if these losses are expected."
        )


def reject_ratio(rows: int, rejects: int) -> float:
    """Share of inputs (accepted pairs + rejected inputs) that were rejected."""
    total = rows + rejects
    return rejects / total if total else 0.0


def manifest_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Manifest rows as a DataFrame with the contract's columns and dtypes, sorted by id."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=MANIFEST_COLUMNS).sort_values("id", ignore_index=True)
    return frame.astype(
        {
            "id": "string", "split": "string", "source": "string", "watermarked_key": "string",
            "clean_key": "string", "mask_key": "string", "width": "int64", "height": "int64",
            "mode": "string", "bytes": "int64", "sha256": "string", "clean_sha256": "string",
            "mask_coverage": "float64",
        }
    )  # fmt: skip


def materialise_raw(store: ObjectStore, source_name: str, index: RawIndex, *, progress: bool = True) -> Path:
    """A local folder laid out like the source, built from the lake's raw objects.

    Objects come through the content-addressed cache and are hard-linked into place,
    so a second curation on the same machine downloads nothing.
    """
    from clearmark.progress import progress_bar

    digest = hashlib.sha256(json.dumps(index, sort_keys=True).encode()).hexdigest()[:16]
    view = store.settings.cache_dir / "raw-views" / source_name / digest
    prefix = raw_prefix(source_name)

    def fetch(item: tuple[str, dict[str, str | int]]) -> None:
        relpath, entry = item
        target = view / relpath
        if target.exists():
            return
        cached = store.get_cached(store.settings.lake_bucket, prefix + relpath, str(entry["sha256"]))
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(cached, target)
        except OSError:  # another filesystem, or links not supported
            shutil.copyfile(cached, target)

    with ThreadPoolExecutor(max_workers=TRANSFER_WORKERS) as pool:
        list(progress_bar(pool.map(fetch, index.items()), total=len(index), desc=f"fetch raw {source_name}", disable=not progress))
    return view


def _existing_result(store: ObjectStore, dataset: str, version: str) -> CurateResult | None:
    """The result of an earlier curation of the same version (published or complete), if any."""
    bucket = store.settings.lake_bucket
    prefix = version_prefix(dataset, version)
    if not store.exists(bucket, prefix + MANIFEST):
        return None
    manifest = _read_parquet(store, prefix + MANIFEST)
    rejects = _read_parquet(store, prefix + REJECTS)
    return CurateResult.from_tables(
        dataset, version, f"s3://{bucket}/{prefix}", len(manifest), rejects, reused=True, published=store.exists(bucket, prefix + PUBLISHED)
    )


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _read_parquet(store: ObjectStore, key: str) -> pd.DataFrame:
    import pandas as pd

    return pd.read_parquet(io.BytesIO(store.get_bytes(store.settings.lake_bucket, key)))


# --- publishing -----------------------------------------------------------------------------


def read_unpublished_manifest(store: ObjectStore, dataset: str, version: str) -> pd.DataFrame:
    """The manifest of a curated version whether or not it is published (for validation only)."""
    key = version_prefix(dataset, version) + MANIFEST
    if not store.exists(store.settings.lake_bucket, key):
        raise DatasetNotFoundError(
            f"Version {version} of dataset {dataset!r} has no manifest at s3://{store.settings.lake_bucket}/{key}. "
            f"Curate it first: `clearmark etl curate --dataset {dataset}`."
        )
    return _read_parquet(store, key)


def manifest_sha256(store: ObjectStore, dataset: str, version: str) -> str:
    """SHA-256 of a version's ``manifest.parquet`` (recorded when it was written)."""
    key = version_prefix(dataset, version) + MANIFEST
    recorded = store.stored_sha256(store.settings.lake_bucket, key)
    return recorded or hashlib.sha256(store.get_bytes(store.settings.lake_bucket, key)).hexdigest()


def publish(
    store: ObjectStore, dataset: str, version: str, rows: int, manifest_sha256: str, *, logical_date: str | None = None
) -> dict[str, Any]:
    """Make a curated version visible: write ``_PUBLISHED.json`` (last), then ``LATEST``.

    Publishing a version twice keeps its first marker (its ``created_at``) and only
    moves ``LATEST``.  Returns the marker.
    """
    bucket = store.settings.lake_bucket
    prefix = version_prefix(dataset, version)
    stored = store.stored_sha256(bucket, prefix + MANIFEST)
    if stored is None:
        raise CurationError(f"Cannot publish {dataset}/{version}: s3://{bucket}/{prefix}{MANIFEST} is missing. Curate it first.")
    if stored != manifest_sha256:
        raise CurationError(
            f"Cannot publish {dataset}/{version}: manifest SHA-256 {stored[:12]} differs from the validated {manifest_sha256[:12]}. "
            "Validate the version again."
        )
    if store.exists(bucket, prefix + PUBLISHED):
        marker = json.loads(store.get_bytes(bucket, prefix + PUBLISHED))
    else:
        marker = {
            "dataset": dataset,
            "version": version,
            "rows": int(rows),
            "manifest_sha256": manifest_sha256,
            "created_at": datetime.now(UTC).isoformat(),
            "logical_date": logical_date,
        }
        store.put_bytes(bucket, prefix + PUBLISHED, json.dumps(marker, indent=1).encode(), content_type="application/json")
    store.put_bytes(bucket, dataset_prefix(dataset) + LATEST, version.encode(), content_type="text/plain")
    return marker


# --- reader API -----------------------------------------------------------------------------


def published_marker(store: ObjectStore, dataset: str, version: str) -> dict[str, Any] | None:
    """The ``_PUBLISHED.json`` of a version, or ``None`` when it is not published."""
    key = version_prefix(dataset, version) + PUBLISHED
    if not store.exists(store.settings.lake_bucket, key):
        return None
    return json.loads(store.get_bytes(store.settings.lake_bucket, key))


def published_markers(store: ObjectStore, dataset: str) -> list[dict[str, Any]]:
    """The ``_PUBLISHED.json`` of every published version of ``dataset``, oldest first."""
    prefix = dataset_prefix(dataset)
    markers = []
    for folder in store.list_prefixes(store.settings.lake_bucket, prefix):
        marker = published_marker(store, dataset, folder[len(prefix) :].rstrip("/"))
        if marker is not None:
            markers.append(marker)
    return sorted(markers, key=lambda marker: (marker["created_at"], marker["version"]))


def published_versions(store: ObjectStore, dataset: str) -> list[str]:
    """Published versions of ``dataset``, oldest first (by publication time)."""
    return [marker["version"] for marker in published_markers(store, dataset)]


def list_published(store: ObjectStore, dataset: str | None = None) -> list[dict[str, Any]]:
    """One row per published version (of ``dataset``, or of every dataset in the lake) with its row count."""
    names = [dataset] if dataset else [folder.split("/")[1] for folder in store.list_prefixes(store.settings.lake_bucket, "curated/")]
    listing = []
    for name in names:
        markers = published_markers(store, name)
        latest = latest_version(store, name) if markers else None
        listing += [
            {key: marker.get(key) for key in ("dataset", "version", "rows", "created_at", "logical_date")} | {"latest": marker["version"] == latest}
            for marker in markers
        ]
    return listing


def latest_version(store: ObjectStore, dataset: str) -> str:
    """The version named by ``LATEST`` (or the newest published one); raises when none is published."""
    bucket = store.settings.lake_bucket
    latest_key = dataset_prefix(dataset) + LATEST
    if store.exists(bucket, latest_key):
        version = store.get_bytes(bucket, latest_key).decode().strip()
        if published_marker(store, dataset, version) is not None:
            return version
    versions = published_versions(store, dataset)
    if not versions:
        raise DatasetNotFoundError(
            f"Dataset {dataset!r} has no published version in s3://{bucket}/{dataset_prefix(dataset)}. "
            f"Run the ETL first: `clearmark etl run --dataset {dataset}` (or trigger the Airflow DAG clearmark_etl_nightly)."
        )
    return versions[-1]


def _require_published(store: ObjectStore, dataset: str, version: str) -> dict[str, Any]:
    marker = published_marker(store, dataset, version)
    if marker is None:
        known = published_versions(store, dataset)
        raise DatasetNotFoundError(
            f"Version {version!r} of dataset {dataset!r} is not published (published: {known or 'none'}). "
            f"Use one of those, or run `clearmark etl run --dataset {dataset}`."
        )
    return marker


def read_manifest(store: ObjectStore, dataset: str, version: str) -> pd.DataFrame:
    """The manifest of a published version."""
    _require_published(store, dataset, version)
    return _read_parquet(store, version_prefix(dataset, version) + MANIFEST)


def fetch_version(store: ObjectStore, dataset: str, version: str, *, progress: bool = True) -> LocalDataset:
    """Download every object of a published version under ``cache_dir/datasets/<dataset>/<version>/``.

    Files already there are kept (versions are immutable), so a second call downloads nothing.
    """
    import pandas as pd

    from clearmark.progress import progress_bar

    marker = _require_published(store, dataset, version)
    bucket = store.settings.lake_bucket
    prefix = version_prefix(dataset, version)
    root = store.settings.cache_dir / "datasets" / dataset / version
    objects = list(store.list(bucket, prefix))

    def download(key: str) -> None:
        target = root / key[len(prefix) :]
        if not target.exists():
            store.get_file(bucket, key, target)

    with ThreadPoolExecutor(max_workers=TRANSFER_WORKERS) as pool:
        list(progress_bar(pool.map(download, [info.key for info in objects]), total=len(objects), desc=f"fetch {dataset}/{version}", disable=not progress))

    from clearmark.storage import sha256_file

    manifest_path = root / MANIFEST
    if sha256_file(manifest_path) != marker["manifest_sha256"]:
        raise CurationError(
            f"Local copy {manifest_path} does not match the published manifest of {dataset}/{version}; delete {root} and fetch again."
        )
    return LocalDataset(root=root, manifest=pd.read_parquet(manifest_path), dataset=dataset, version=version, manifest_sha256=marker["manifest_sha256"])
