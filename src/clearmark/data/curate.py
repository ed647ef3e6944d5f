"""Curation: raw objects in the lake -> an immutable, versioned curated dataset.

A version lives under ``lake/curated/<dataset>/<version>/`` (see
:mod:`clearmark.data.layout` and docs/architecture.md): normalised PNGs in
``watermarked/``, ``clean/`` and ``masks/`` (and the matte, ``alpha/`` and ``colour/``, where
the source has one), ``rejects.parquet`` and
``manifest.parquet`` (written last of the curation outputs, so its presence means the
version is complete).  ``version`` is ``"v"`` + SHA-256 over the raw content hashes and
the curation parameters, so the same inputs always give the same version and a retry
finds its own earlier work.  Validation (:mod:`clearmark.data.quality`) and publishing
(:mod:`clearmark.data.publish`) follow.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearmark.data.layout import MANIFEST, PUBLISHED, REJECTS, TRANSFER_WORKERS, CurationError, curated_pair_keys, version_prefix
from clearmark.data.manifest import REJECT_COLUMNS, manifest_frame, manifest_row, parquet_bytes, read_lake_parquet, read_unpublished_manifest
from clearmark.data.raw import RawIndex, raw_prefix, read_raw_index

if TYPE_CHECKING:
    import pandas as pd
    from PIL import Image

    from clearmark.data.sources import RawPair, SourceSpec
    from clearmark.settings import Settings
    from clearmark.storage import ObjectStore

# Bump when the curated output of the same raw inputs changes (it is part of the version hash).
CURATION_FORMAT = 2  # 2: alpha/ and colour/ are curated
# Each worker decodes, encodes and uploads one pair: Pillow and zlib release the GIL while
# they work, and the uploads' network waits overlap with other pairs' encoding.
CURATE_WORKERS = 8
PNG_COMPRESS_LEVEL = 1  # ~3x faster than the default 6 for ~15% larger files


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


@dataclass(frozen=True)
class CuratedPair:
    """One accepted pair: its manifest row and its normalised PNGs by key."""

    row: dict[str, Any]
    files: dict[str, bytes]


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
    from clearmark.data.dataset import ALPHA_MODES
    from clearmark.data.images import ImageRejected, load_normalized

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
        alpha = colour = None
        if pair.alpha is not None and pair.colour is not None:
            current = pair.alpha
            alpha = _open_alpha(pair.alpha)
            if alpha.size != watermarked.size:
                return _reject(source, root, pair.alpha, "size_mismatch", _mismatch("alpha matte", alpha, watermarked))
            if alpha.mode not in ALPHA_MODES:
                return _reject(source, root, pair.alpha, "bad_alpha", f"{pair.alpha.name} is a {alpha.mode} image; a matte is 16-bit or 8-bit grey ({', '.join(ALPHA_MODES)}).")
            alpha = _decode_alpha(alpha, pair.alpha)
            current = pair.colour
            colour, _ = load_normalized(pair.colour, max_pixels=max_image_pixels)
            if colour.size != watermarked.size:
                return _reject(source, root, pair.colour, "size_mismatch", _mismatch("colour layer", colour, watermarked))
    except ImageRejected as exc:
        return _reject(source, root, current, exc.reason, exc.detail)
    except ValueError as exc:  # e.g. a degenerate YOLO box
        return _reject(source, root, current, "bad_mask", str(exc))

    keys = curated_pair_keys(pair.id, with_clean=clean is not None, with_matte=alpha is not None)
    files = {keys.watermarked: _png(watermarked), keys.mask: _png(mask)}
    if clean is not None:
        files[keys.clean] = _png(clean)
    if keys.alpha and keys.colour and alpha is not None and colour is not None:
        files[keys.alpha], files[keys.colour] = _png(alpha), _png(colour)
    row = manifest_row(
        pair.id, source.name, keys, watermarked=pair.watermarked, clean=pair.clean, size=watermarked.size, mode=info.mode, mask=mask, alpha=alpha
    )
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


def _open_alpha(path: Path) -> Image.Image:
    """A matte file, opened lazily (its header only): size and mode are checked before it is decoded."""
    from PIL import Image, UnidentifiedImageError

    from clearmark.data.images import ImageRejected

    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageRejected("not_image", f"{path.name} is not a readable image ({exc}); regenerate the matte or remove the pair's alpha/ and colour/ files.") from exc


def _decode_alpha(alpha: Image.Image, path: Path) -> Image.Image:
    """The matte as stored (16-bit or 8-bit grey: its precision is the point)."""
    from clearmark.data.images import ImageRejected

    try:
        alpha.load()
    except OSError as exc:
        raise ImageRejected("truncated", f"{path.name} is truncated or corrupt ({exc}); regenerate the matte.") from exc
    return alpha


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

    if store.exists(bucket, prefix + MANIFEST):
        existing = replace(curated_result(store, dataset, version), reused=True)
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
    store.put_bytes(bucket, prefix + REJECTS, parquet_bytes(rejects_df))
    result = CurateResult.from_tables(dataset, version, f"s3://{bucket}/{prefix}", len(rows), rejects_df)
    _check_reject_ratio(settings, result)
    store.put_bytes(bucket, prefix + MANIFEST, parquet_bytes(manifest_frame(rows)))
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


def curated_result(store: ObjectStore, dataset: str, version: str) -> CurateResult:
    """Summary of a curated version (published or not) from its manifest and rejects table."""
    bucket = store.settings.lake_bucket
    prefix = version_prefix(dataset, version)
    manifest = read_unpublished_manifest(store, dataset, version)
    rejects = read_lake_parquet(store, prefix + REJECTS)
    return CurateResult.from_tables(
        dataset, version, f"s3://{bucket}/{prefix}", len(manifest), rejects, published=store.exists(bucket, prefix + PUBLISHED)
    )
