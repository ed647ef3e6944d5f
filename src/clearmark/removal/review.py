"""Review page of one cleaned archive: before | mask | after thumbnails, most doubtful first.

:func:`build_review` reads the original input, the cleaned output, the report and (when
removal wrote it) ``<output>.masks.zip``, one image at a time, and writes a folder::

    index.html    static and self-contained (inline CSS and JS, the rows inline): opens as a file
    review.json   the rows the page shows, the summary, and where served full-size images lie
    summary.json  the small summary the Airflow plugin lists (written last)
    thumbs/P.jpg  one sprite per gallery page: each pictured row's strip (original | mask
                  overlay | cleaned, side by side) in a cell of its own (``thumb_box``)
    full/N.before.<ext>, full/N.after.<ext>   full size, loaded only when a row is opened

Every image of the report is listed; thumbnails and full-size images are made for the
``max_images`` most doubtful ones only, so the cost stays bounded however large the
archive.  :func:`publish_review` does the same for an inbox item and uploads the folder to
``reports/reviews/<date>/<archive>/``; :func:`review_next_to` writes ``OUTPUT.review/``
for ``clearmark remove --review``.

The cost is in objects more than in pixels (each upload is a round trip through the S3
gateway on the same cores), so a published review holds a few objects per gallery page:
one sprite of thumbnails, and no full-size copies where the plugin can serve the image
straight from the inbox and outbox archives (``served_from``: a zip member stored or
deflated, an uncompressed tar member, a folder's object; see :func:`member_spans`).  A
tar.gz and formats a browser does not show (TIFF: a JPEG copy) are copied as before, and
so is everything in a local ``OUTPUT.review/``, which opens as a file.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any

from clearmark.removal.archive import ArchiveReader, Limits
from clearmark.removal.report import RESTORATIONS
from clearmark.storage import list_dated_summaries, validate_report_id

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

    import numpy as np

    from clearmark.removal.archive import Member
    from clearmark.removal.pipeline import RemovalOutputs
    from clearmark.settings import Settings
    from clearmark.storage import ObjectStore

REVIEWS_PREFIX = "reviews"
REVIEW_SUFFIX = ".review"
SUMMARY_FILE = "summary.json"
PAGE_FILES = ("review.json", "index.html", SUMMARY_FILE)  # uploaded in this order, after the pictures
PAGE_TEMPLATE = Path(__file__).resolve().parents[1] / "assets" / "review.html"
# Formats every browser shows as they are; others (TIFF) get a JPEG copy for the page.
_BROWSER_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"})
_OVERLAY_RGB = (230, 30, 60)
_OVERLAY_WEIGHT = 0.6  # of the red, where the mask is full
_PICTURE_THREADS = 4
_UPLOAD_THREADS = 8  # a sprite per page and the rare copies: round trips, not bandwidth
_GAP = 4  # px between the panels of a strip and between the cells of a sprite (no bleeding when scaled)
Emit = Callable[[str, bytes], None]  # (file name in the review folder, its bytes)


@dataclass(frozen=True)
class ReviewOptions:
    """How much a review builds: the page size and how many images get pictures."""

    page_size: int = 48
    max_images: int = 480  # thumbnails and full-size images for the most doubtful images only
    thumb_side: int = 224  # long side of each of the three panels, px


def review_prefix(report_date: str, archive: str) -> str:
    """Key prefix (reports bucket) of one archive's review on one day."""
    validate_report_id(report_date, archive)
    return f"{REVIEWS_PREFIX}/{report_date}/{archive}/"


def review_page_path(review_date: str, archive: str) -> str:
    """Path of a review's page below the plugin app's root; the trailing slash makes its relative links work."""
    from urllib.parse import quote

    return f"{REVIEWS_PREFIX}/{review_date}/{quote(archive, safe='')}/"


def doubt(row: dict[str, Any], threshold: float) -> float:
    """How much a reviewer should look at an image, 0 (sure) .. 2 (error).

    A cleaned image is doubtful when its mask's confidence is near the threshold or its
    mask covers much of the image; an unchanged one when its highest probability came
    near the threshold; a larger residual (when the report has one) adds to it.
    """
    if row.get("status") == "error":
        return 2.0
    confidence, coverage = float(row.get("confidence") or 0.0), float(row.get("mask_coverage") or 0.0)
    if row.get("status") == "cleaned":
        margin = (confidence - threshold) / max(1e-6, 1.0 - threshold)
        score = max(1.0 - margin, coverage)
    else:
        score = confidence / max(threshold, 1e-6)
    return round(min(1.0, max(0.0, score)) * 0.9 + min(0.1, float(row.get("residual") or 0.0)), 4)


def review_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's image rows (non-image members left out), most doubtful first."""
    threshold = float(report.get("threshold") or 0.5)
    rows = [
        {
            "member": row["path"],
            "status": row["status"],
            "cleaned_by": row.get("restoration", ""),  # the removal report's word (report.MemberRow.restoration)
            "coverage": row.get("mask_coverage"),
            "confidence": row.get("confidence"),
            "doubt": doubt(row, threshold),
            "width": row.get("width"),
            "height": row.get("height"),
            "error": row.get("error") or "",
        }
        for row in report["rows"]
        if row["status"] != "copied_non_image"
    ]
    rows.sort(key=lambda r: r["member"])
    rows.sort(key=lambda r: r["doubt"], reverse=True)
    for number, row in enumerate(rows):
        row["n"] = number
    return rows


def build_review(
    original: Path,
    cleaned: Path,
    report: dict[str, Any],
    out_dir: Path,
    *,
    masks: Path | None = None,
    archive: str,
    content_sha256: str | None = None,
    review_date: str | None = None,
    options: ReviewOptions | None = None,
    limits: Limits | None = None,
    emit: Emit | None = None,
    stored: tuple[StoredArchive, StoredArchive] | None = None,
) -> dict[str, Any]:
    """Write the review folder ``out_dir`` (replaced atomically) and return its summary.

    ``emit(name, data)`` gets each picture (``thumbs/...``, ``full/...``) as it is written, so
    :func:`publish_review` uploads them while the others are made; the page files come after.
    ``stored`` says where ``original`` and ``cleaned`` lie in object storage: full-size images
    that can be read from there are not copied, ``review.json``'s ``served_from`` says where
    each lies, and the plugin serves them under the same names.
    """
    options = options or ReviewOptions()
    started = time.perf_counter()
    rows = review_rows(report)
    showable = [row for row in rows if row["status"] != "error" or _readable(row)]
    pictured = showable[: options.max_images]
    spans: tuple[dict[str, Any], dict[str, Any]] = ({}, {})
    if stored is not None and pictured:
        shown_as_is = {row["member"] for row in pictured if Path(row["member"]).suffix.lower() in _BROWSER_SUFFIXES}
        spans = (member_spans(original, stored[0], shown_as_is), member_spans(cleaned, stored[1], shown_as_is))
    served: dict[str, dict[str, Any]] = {}
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=_mkdir(out_dir.parent)))
    try:
        (work / "thumbs").mkdir()
        (work / "full").mkdir()
        _write_pictures(original, cleaned, masks, pictured, work, options, limits or Limits(), emit, spans, served)
        summary = _summary(report, rows, archive, content_sha256, review_date, options, time.perf_counter() - started)
        (work / "review.json").write_text(json.dumps({"summary": summary, "rows": rows, "served_from": served}), encoding="utf-8")
        (work / "index.html").write_text(render_page(summary, rows), encoding="utf-8")
        (work / SUMMARY_FILE).write_text(json.dumps(summary, indent=2), encoding="utf-8")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        work.rename(out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return summary


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _readable(row: dict[str, Any]) -> bool:
    """An error row whose original was still copied to the output can be shown."""
    return "copied unchanged" in row["error"]


@dataclass(frozen=True)
class StoredArchive:
    """Where an archive (or a ``folder/`` prefix) lies in object storage, so its members can be served from it."""

    bucket: str
    key: str


def member_spans(local: Path, stored: StoredArchive, members: set[str]) -> dict[str, dict[str, Any]]:
    """Where each of ``members`` lies inside ``stored``, as the plugin reads it with one ranged GET.

    ``{member: {bucket, key, offset, size, deflated}}`` for the members of a zip (stored or
    deflated), an uncompressed tar or a folder (one object each); a tar.gz and any other zip
    compression have no such span, and their members are copied into the review instead.
    ``local`` is the downloaded copy of ``stored``, the one the review reads.
    """
    import struct
    import tarfile
    import zipfile

    from clearmark.removal.archive import detect_kind, safe_relative_path

    def span(key: str, offset: int, size: int, deflated: bool = False) -> dict[str, Any]:
        return {"bucket": stored.bucket, "key": key, "offset": offset, "size": size, "deflated": deflated}

    spans: dict[str, dict[str, Any]] = {}
    kind = detect_kind(local)
    if kind == "folder":
        for member in members:
            spans[member] = span(stored.key + member, 0, (local / member).stat().st_size)
    elif kind == "zip":
        with zipfile.ZipFile(local) as archive, open(local, "rb") as raw:
            for info in archive.infolist():
                name = safe_relative_path(info.filename)
                if name not in members or name in spans or info.flag_bits & 0x1 or info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    continue
                raw.seek(info.header_offset)
                header = raw.read(30)  # the local header: its name and extra field lengths say where the data starts
                if header[:4] != b"PK\x03\x04":
                    continue
                name_length, extra_length = struct.unpack("<HH", header[26:30])
                offset = info.header_offset + 30 + name_length + extra_length
                spans[name] = span(stored.key, offset, info.compress_size, info.compress_type == zipfile.ZIP_DEFLATED)
    elif kind == "tar":
        with tarfile.open(local, "r:") as archive:
            for info in archive:
                name = safe_relative_path(info.name)
                if name in members and name not in spans and info.isreg() and not info.issparse():
                    spans[name] = span(stored.key, info.offset_data, info.size)
    return spans


def _summary(
    report: dict[str, Any], rows: list[dict[str, Any]], archive: str, content_sha256: str | None,
    review_date: str | None, options: ReviewOptions, build_s: float,
) -> dict[str, Any]:  # fmt: skip
    by_path = {name: sum(1 for r in rows if r["cleaned_by"] == name) for name in RESTORATIONS}
    images = len(rows)
    return {
        "archive": archive,
        "date": review_date or datetime.now(UTC).date().isoformat(),
        "content_sha256": content_sha256,
        "model_version": str(report.get("model_version", "")),
        "images": images,
        "pictured": sum(1 for r in rows if "thumb" in r),
        "cleaned_by": by_path,
        "share_cleaned": round((by_path["shared"] + by_path["unblended"] + by_path["inpainted"]) / images, 4) if images else 0.0,
        "errors": by_path["error"],
        "page_size": options.page_size,
        "removal_s": report.get("duration_s"),
        "build_s": round(build_s, 3),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _write_pictures(
    original: Path, cleaned: Path, masks: Path | None, pictured: list[dict[str, Any]], out: Path, options: ReviewOptions,
    limits: Limits, emit: Emit | None, spans: tuple[dict[str, Any], dict[str, Any]], served: dict[str, dict[str, Any]],
) -> None:  # fmt: skip
    """Sprites of thumbnail strips and the full-size images of the ``pictured`` rows (most doubtful first).

    The archives are read in one thread, most doubtful first (a tar.gz, which reads only
    forward, in its own order); the strips are made in ``_PICTURE_THREADS`` (OpenCV's
    decoding and resizing, and numpy, release the GIL), with at most two images per thread in
    memory, and each page's sprite is encoded in the same threads as soon as its last strip is in.
    """
    import contextlib
    import zipfile
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    if not pictured:
        return
    by_member = {row["member"]: row for row in pictured}
    with (
        ArchiveReader(original, limits) as before_reader,
        ArchiveReader(cleaned, limits) as after_reader,
        zipfile.ZipFile(masks) if masks is not None and masks.is_file() else contextlib.nullcontext() as mask_zip,
        ThreadPoolExecutor(max_workers=_PICTURE_THREADS) as pool,
    ):
        sprites = _Sprites(pictured, options.page_size, options.thumb_side, out, emit, pool)
        before_members: dict[str, Member] = {}
        for member in before_reader.members:
            if member.path in by_member and not member.is_dir and not member.error:
                before_members.setdefault(member.path, member)
        after_members = {m.path: m for m in after_reader.members if not m.is_dir and not m.error}
        mask_names = set(mask_zip.namelist()) if mask_zip is not None else set()
        ordered = list(before_members.values()) if before_reader.kind == "tar.gz" else [before_members[r["member"]] for r in pictured if r["member"] in before_members]
        for row in pictured:
            if row["member"] not in before_members or row["member"] not in after_members:
                sprites.add(row, None)
        pending: deque[tuple[dict[str, Any], Future[np.ndarray | None]]] = deque()
        for member in ordered:
            row, after = by_member[member.path], after_members[member.path]
            with member.open() as stream:
                before_bytes = stream.read()
            with after.open() as stream:
                after_bytes = stream.read()
            mask_name = member.path + ".mask.png"
            mask_bytes = mask_zip.read(mask_name) if mask_zip is not None and mask_name in mask_names else None
            pending.append((row, pool.submit(_picture, row, before_bytes, after_bytes, mask_bytes, out, options.thumb_side, emit, spans, served)))
            if len(pending) >= 2 * _PICTURE_THREADS:
                sprites.add(*_result(pending.popleft()))
        while pending:
            sprites.add(*_result(pending.popleft()))
        sprites.close()


def _result(pending: tuple[dict[str, Any], Future[np.ndarray | None]]) -> tuple[dict[str, Any], np.ndarray | None]:
    return pending[0], pending[1].result()


class _Sprites:
    """The thumbnail strips of each gallery page packed into one JPEG: an object per page, not per image.

    The ``pictured`` rows, most doubtful first, fill the sprites page by page; each row has a
    cell of ``3 * side + 2 * _GAP`` by ``side`` px, so a sprite's size is known before its
    strips are made, and its row records ``thumb_box``: x, y, width, height of its strip and
    the sprite's width and height (what the page's CSS needs to show that cell alone).  A full
    sprite is encoded in ``pool``; :meth:`close` waits for the last and re-raises a failure.
    """

    def __init__(self, pictured: list[dict[str, Any]], per_sprite: int, side: int, out: Path, emit: Emit | None, pool: ThreadPoolExecutor) -> None:
        from collections import Counter

        self.out, self.emit, self.pool = out, emit, pool
        self.cell = (3 * side + 2 * _GAP, side)
        self.slot = {row["n"]: divmod(index, max(1, per_sprite)) for index, row in enumerate(pictured)}
        self.rows = Counter(sprite for sprite, _ in self.slot.values())
        self.left = self.rows.copy()
        self.canvases: dict[int, np.ndarray] = {}
        self.writes: list[Future[None]] = []

    def add(self, row: dict[str, Any], strip: np.ndarray | None) -> None:
        """Copy ``row``'s strip (``None``: it has no picture) into its sprite; the sprite is written once full."""
        import numpy as np

        sprite, cell = self.slot[row["n"]]
        if strip is not None:
            if sprite not in self.canvases:
                height = self.rows[sprite] * (self.cell[1] + _GAP) - _GAP
                self.canvases[sprite] = np.full((height, self.cell[0], 3), 255, np.uint8)
            canvas, top = self.canvases[sprite], cell * (self.cell[1] + _GAP)
            height, width = strip.shape[:2]
            canvas[top : top + height, :width] = strip
            row["thumb"], row["thumb_box"] = self.name(sprite), [0, top, width, height, canvas.shape[1], canvas.shape[0]]
        self.left[sprite] -= 1
        if not self.left[sprite] and sprite in self.canvases:
            self.writes.append(self.pool.submit(self._write, sprite, self.canvases.pop(sprite)))

    def _write(self, sprite: int, canvas: np.ndarray) -> None:
        from PIL import Image

        encoded = io.BytesIO()
        Image.fromarray(canvas).save(encoded, "JPEG", quality=82)
        (self.out / self.name(sprite)).write_bytes(encoded.getvalue())
        if self.emit is not None:
            self.emit(self.name(sprite), encoded.getvalue())

    def close(self) -> None:
        for write in self.writes:
            write.result()

    @staticmethod
    def name(sprite: int) -> str:
        return f"thumbs/{sprite:06d}.jpg"


def _picture(
    row: dict[str, Any], before: bytes, after: bytes, mask: bytes | None, out: Path, side: int, emit: Emit | None,
    spans: tuple[dict[str, Any], dict[str, Any]], served: dict[str, dict[str, Any]],
) -> np.ndarray | None:  # fmt: skip
    """One row's thumbnail strip, returned, and its full-size images: served from where they lie
    (``spans``, recorded in ``served``) or copied; an image Pillow cannot show is listed without them."""
    try:
        strip = thumbnail_strip(before, after, mask, side)
    except Exception as exc:  # noqa: BLE001 - an image PIL cannot show: listed without a picture
        row["picture_error"] = f"{type(exc).__name__}: {exc}"
        return None
    for side_name, data, where in (("before", before, spans[0]), ("after", after, spans[1])):
        stem = f"full/{row['n']:06d}.{side_name}"
        if row["member"] in where:
            name = stem + Path(row["member"]).suffix.lower()
            served[name] = where[row["member"]]  # one key per row and side: no two threads write the same
        else:
            name, data = _full_copy(data, row["member"], stem)
            (out / name).write_bytes(data)
            if emit is not None:
                emit(name, data)
        row[side_name] = name
    return strip


def _panel(data: bytes, side: int) -> tuple[np.ndarray, int]:
    """An image shrunk to fit ``side`` px, in its stored orientation, as RGB; with its EXIF orientation.

    Pillow reads the header (size, orientation); a JPEG is decoded by OpenCV at the smallest
    DCT scale whose long side is still ``side`` px or more (its decoders release the GIL, so
    the picture threads decode at once), so what is left to shrink is under 2x (bilinear).
    Other formats are decoded by Pillow and shrunk by area average, which does not alias.
    """
    import cv2
    import numpy as np
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    orientation = int(image.getexif().get(0x0112, 1) or 1)
    if image.format == "JPEG" and image.mode in ("RGB", "L"):
        factor = next((f for f in (8, 4, 2) if max(image.size) / f >= side), 1)
        flags = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}.get(factor, cv2.IMREAD_COLOR)
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), flags | cv2.IMREAD_IGNORE_ORIENTATION)
        if decoded is None:
            raise ValueError("OpenCV cannot decode this JPEG")
        pixels = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    else:
        pixels = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    height, width = pixels.shape[:2]
    scale = side / max(height, width)
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_LINEAR if scale >= 0.5 else cv2.INTER_AREA)
    return pixels, orientation


def thumbnail_strip(before: bytes, after: bytes, mask_png: bytes | None, side: int) -> np.ndarray:
    """One image: the original, the original with the mask in red, the cleaned image; upright, H x W x 3 RGB.

    Made in numpy and OpenCV in the stored orientation, turned upright panel by panel at the
    end: both release the GIL, so the picture threads use every core.
    """
    import cv2
    import numpy as np

    from clearmark.removal.imageio import to_upright

    original, orientation = _panel(before, side)
    height, width = original.shape[:2]
    cleaned = original if after == before else _panel(after, side)[0]  # an image left unchanged: decoded once
    if cleaned.shape != original.shape:
        cleaned = cv2.resize(cleaned, (width, height), interpolation=cv2.INTER_LINEAR)
    overlay = original  # shown as it is where there is no mask: no copy needed
    if mask_png is not None:
        mask = cv2.imdecode(np.frombuffer(mask_png, np.uint8), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            raise ValueError("the mask PNG cannot be decoded")
        inside = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST) >= 128  # masks are 0/255
        overlay = original.copy()
        overlay[inside] = overlay[inside] * (1 - _OVERLAY_WEIGHT) + np.float32(_OVERLAY_WEIGHT) * np.asarray(_OVERLAY_RGB, np.float32)
    panels = [np.ascontiguousarray(to_upright(panel, orientation)) for panel in (original, overlay, cleaned)]
    shown_height, shown_width = panels[0].shape[:2]
    strip = np.empty((shown_height, 3 * shown_width + 2 * _GAP, 3), np.uint8)
    for index, panel in enumerate(panels):
        left = index * (shown_width + _GAP)
        strip[:, left : left + shown_width] = panel
        strip[:, left + shown_width : left + shown_width + _GAP] = 255  # the white gap after it (none after the last)
    return strip


def _full_copy(data: bytes, member: str, stem: str) -> tuple[str, bytes]:
    """Name and bytes of the image as the browser will show it: the bytes themselves, or a JPEG of other formats."""
    suffix = Path(member).suffix.lower()
    if suffix in _BROWSER_SUFFIXES:
        return stem + suffix, data
    from PIL import Image, ImageOps

    converted = io.BytesIO()
    ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB").save(converted, "JPEG", quality=92)
    return stem + ".jpg", converted.getvalue()


def render_page(summary: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """The static page: the template with the summary and rows inline (``</`` escaped for the script tag)."""
    data = json.dumps({"summary": summary, "rows": rows}).replace("</", "<\\/")
    page = Template(PAGE_TEMPLATE.read_text(encoding="utf-8"))
    return page.substitute(title=_html_escape(f"Review: {summary['archive']}"), data=data)


def _html_escape(text: str) -> str:
    import html

    return html.escape(text, quote=True)


# --- where reviews go -------------------------------------------------------------------------
def review_next_to(output: Path) -> Path:
    """``OUTPUT.review``: the folder ``clearmark remove --review`` writes."""
    return output.with_name(output.name + REVIEW_SUFFIX)


def review_removal(input_path: Path, outputs: RemovalOutputs, *, options: ReviewOptions | None = None) -> Path:
    """Write ``OUTPUT.review/`` for a local run (``clearmark remove --review``); returns its ``index.html``."""
    from clearmark.storage import sha256_file

    folder = review_next_to(outputs.output)
    report = json.loads(outputs.report_json.read_bytes())
    digest = sha256_file(input_path) if Path(input_path).is_file() else None
    build_review(input_path, outputs.output, report, folder, masks=outputs.masks, archive=outputs.output.name, content_sha256=digest, options=options)
    return folder / "index.html"


def publish_review(settings: Settings, result: dict[str, Any], *, options: ReviewOptions | None = None) -> dict[str, Any]:
    """Build and upload the review of one processed inbox item (``process_inbox_item``'s result).

    Dated by the day the item was processed, so a retry or a re-run of the same content
    rewrites the same review.  ``summary.json`` goes up last: the plugin lists a review
    only once all its files are there.  Failed items have nothing to review (``skipped``).
    """
    from concurrent.futures import ThreadPoolExecutor, wait

    from clearmark.storage import ObjectStore

    archive = str(result.get("name") or result.get("key", "")).rstrip("/")
    if result.get("status") == "failed" or not result.get("report_key") or not result.get("processed_key"):
        return {"archive": archive, "skipped": True, "reason": f"item status {result.get('status')!r}: nothing to review"}
    review_date = str(result.get("finished_at") or datetime.now(UTC).isoformat())[:10]
    prefix = review_prefix(review_date, archive)
    store = ObjectStore(settings)
    outbox = result.get("outbox_bucket") or settings.outbox_bucket
    work = settings.home / "work" / "review" / uuid.uuid4().hex[:12]
    try:
        with ThreadPoolExecutor(max_workers=4) as downloads:  # four round trips at once
            original_done = downloads.submit(_download, store, settings.inbox_bucket, result["processed_key"], work / "in" / archive)
            cleaned_done = downloads.submit(_download, store, outbox, result["outbox_key"], work / "out" / archive)
            masks_done = downloads.submit(_download, store, outbox, result["masks_key"], work / "masks.zip") if result.get("masks_key") else None
            report = json.loads(store.get_bytes(outbox, result["report_key"]))
            original, cleaned = original_done.result(), cleaned_done.result()
            masks = masks_done.result() if masks_done is not None else None
        with ThreadPoolExecutor(max_workers=_UPLOAD_THREADS) as pool:
            uploads: list[Future[str]] = []

            def upload(name: str, data: bytes) -> None:
                uploads.append(pool.submit(store.put_bytes, settings.reports_bucket, prefix + name, data, content_type=content_type(name)))

            summary = build_review(
                original, cleaned, report, work / "review", masks=masks, archive=archive,
                content_sha256=result.get("content_sha256"), review_date=review_date, options=options,
                limits=Limits.from_settings(settings), emit=upload,
                stored=(StoredArchive(settings.inbox_bucket, result["processed_key"]), StoredArchive(outbox, result["outbox_key"])),
            )  # fmt: skip
            for name in PAGE_FILES:  # the page after its pictures, summary.json (what the plugin lists) last
                wait(uploads)
                upload(name, (work / "review" / name).read_bytes())
            for done in uploads:
                done.result()  # re-raises the first failure
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {**summary, "skipped": False, "prefix": prefix}


def _download(store: ObjectStore, bucket: str, key: str, target: Path) -> Path:
    """An object, or every object below a ``folder/`` key, to ``target``."""
    if not key.endswith("/"):
        return store.get_file(bucket, key, target)
    for info in store.list(bucket, key):
        if not info.key.endswith("/"):
            store.get_file(bucket, info.key, target / info.key[len(key) :])
    return target


_CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".json": "application/json", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                  ".png": "image/png", ".webp": "image/webp", ".gif": "image/gif", ".bmp": "image/bmp"}  # fmt: skip


def content_type(name: str) -> str:
    """The media type the plugin and the upload give a review file."""
    return _CONTENT_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")


def list_reviews(store: ObjectStore, *, limit: int = 500) -> list[dict[str, Any]]:
    """Summaries of the newest ``limit`` reviews (newest date first, then archive name)."""
    return list_dated_summaries(store, REVIEWS_PREFIX, SUMMARY_FILE, limit=limit)
