"""Reviewer flags on cleaned images: one small JSON-lines object per flag event.

A signed-in Airflow user flags an image of a review page (``watermark_left``,
``image_damaged`` or ``good``); the plugin records the event here.  S3 has no append, so
every event is its own object, keyed by what it is about::

    reports/reviews/flags/<archive content sha256>/<model version>/<member sha256[:16]>/<time>-<id>.jsonl

The archive's content hash, not its name or the review's date, identifies it: the same
archive processed again shows the same flags.  The latest event per (archive, model
version, member) is the image's flag.  This module sits in the data layer because the
ETL's ``feedback`` source reads the flags as well as removal and the plugin.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from clearmark.data.sources import SourceKind, SourceSpec, SourceUnavailable, register_source

if TYPE_CHECKING:
    from clearmark.settings import Settings
    from clearmark.storage import ObjectStore

FLAGS_PREFIX = "reviews/flags/"
FLAG_CHOICES = ("watermark_left", "image_damaged", "good")
PROBLEM_FLAGS = ("watermark_left", "image_damaged")
_HEX = re.compile(r"^[0-9a-f]{64}$")
_VERSION = re.compile(r"^[A-Za-z0-9._-]{1,80}$")


class FlagError(ValueError):
    """A flag that cannot be recorded; the message says which field is wrong."""


@dataclass(frozen=True)
class Flag:
    """One reviewer's verdict on one cleaned image."""

    content_sha256: str  # of the input archive (as the inbox recorded it)
    model_version: str  # the detector version that cleaned it
    member: str  # path inside the archive
    flag: str  # one of FLAG_CHOICES
    user: str
    archive: str = ""  # the archive's name, for people
    original_key: str = ""  # reports-bucket key of the full-size original in the review, for the feedback dataset
    at: str = ""  # UTC ISO time, set when recorded

    def check(self) -> None:
        if self.flag not in FLAG_CHOICES:
            raise FlagError(f"flag {self.flag!r} is not one of {', '.join(FLAG_CHOICES)}")
        if not _HEX.match(self.content_sha256):
            raise FlagError(f"content_sha256 {self.content_sha256!r} is not a hex SHA-256")
        if not _VERSION.match(self.model_version):
            raise FlagError(f"model version {self.model_version!r} is not a model version")
        if not self.member or not self.user:
            raise FlagError("a flag needs the member path and the user who set it")


def flag_prefix(content_sha256: str, model_version: str | None = None) -> str:
    """Key prefix of one archive's flags (of one model version, if given)."""
    return f"{FLAGS_PREFIX}{content_sha256}/" + (f"{model_version}/" if model_version else "")


def record_flag(store: ObjectStore, flag: Flag) -> Flag:
    """Store one flag event (a new object: never overwrites another); returns it with its time."""
    flag.check()
    now = datetime.now(UTC)
    recorded = Flag(**{**asdict(flag), "at": now.isoformat(timespec="microseconds")})
    member_hash = hashlib.sha256(flag.member.encode()).hexdigest()[:16]
    key = f"{flag_prefix(flag.content_sha256, flag.model_version)}{member_hash}/{now:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}.jsonl"
    line = json.dumps(asdict(recorded), sort_keys=True) + "\n"
    store.put_bytes(store.settings.reports_bucket, key, line.encode(), content_type="application/x-ndjson")
    return recorded


def read_flag_events(store: ObjectStore, prefix: str = FLAGS_PREFIX) -> list[Flag]:
    """Every flag event under ``prefix``, oldest first; unreadable objects are skipped."""
    bucket = store.settings.reports_bucket
    events = []
    for info in store.list(bucket, prefix):
        for line in store.get_bytes(bucket, info.key).decode("utf-8", "replace").splitlines():
            try:
                events.append(Flag(**json.loads(line)))
            except (ValueError, TypeError):
                continue  # a foreign or damaged object must not hide the others
    return sorted(events, key=lambda event: event.at)


def current_flags(events: list[Flag]) -> dict[tuple[str, str, str], Flag]:
    """The latest flag per (archive content hash, model version, member)."""
    latest: dict[tuple[str, str, str], Flag] = {}
    for event in sorted(events, key=lambda e: e.at):
        latest[(event.content_sha256, event.model_version, event.member)] = event
    return latest


def field_quality(flags: list[Flag]) -> dict[str, dict[str, float]]:
    """Per model version: images flagged, count per flag and ``field_flag_rate``.

    ``flags`` are current flags (one per image).  The rate is the share of flagged
    images whose flag is a problem (watermark left or image damaged).
    """
    per_version: dict[str, Counter[str]] = {}
    for flag in flags:
        per_version.setdefault(flag.model_version, Counter())[flag.flag] += 1
    quality = {}
    for version, counts in sorted(per_version.items()):
        flagged = sum(counts.values())
        problems = sum(counts[name] for name in PROBLEM_FLAGS)
        quality[version] = {
            "field_flagged_images": flagged,
            **{f"field_flags_{name}": counts[name] for name in FLAG_CHOICES},
            "field_flag_rate": round(problems / flagged, 4),
        }
    return quality


# --- the ETL's ``feedback`` source -------------------------------------------------------------

FEEDBACK_INDEX = "feedback.json"
UNLABELLED = "unlabelled"


class FeedbackOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flags: list[Literal["watermark_left", "image_damaged", "good"]] = Field(
        default_factory=lambda: list(PROBLEM_FLAGS), min_length=1, description="Which current flags to export."
    )


def feedback_name(flag: Flag) -> PurePosixPath:
    """``<archive sha256[:16]>/<member without suffix>``: the image's name in the export and its label file's."""
    return PurePosixPath(flag.content_sha256[:16]) / PurePosixPath(flag.member).with_suffix("")


@register_source("feedback")
class FeedbackSource(SourceKind):
    """Flagged originals from the review pages, laid out as ``boxes`` (detection only).

    Each image whose current flag is one of ``options.flags`` (and that the review pictured)
    is exported once per archive content and member.  Labellers write YOLO files
    ``<name>.txt`` (names in ``feedback.json``) into the folder ``path``; labelled images
    go to ``images/`` + ``labels/`` and are curated, the others wait in ``unlabelled/``.
    """

    location = "path"
    options = FeedbackOptions

    def check(self, source: SourceSpec) -> None:
        if source.layout != "boxes":
            raise ValueError("kind 'feedback' produces layout 'boxes' (flagged images have no clean original)")

    def fetch(self, source: SourceSpec, settings: Settings) -> Path:
        from clearmark.storage import ObjectStore

        store = ObjectStore(settings)
        wanted = FeedbackOptions.model_validate(source.options).flags
        chosen: dict[PurePosixPath, Flag] = {}
        for flag in current_flags(read_flag_events(store)).values():
            if flag.flag in wanted and flag.original_key:
                chosen[feedback_name(flag)] = flag  # the same image flagged under two model versions: exported once
        labels = Path(source.path) if source.path is not None else None
        if labels is not None and not labels.is_dir():
            raise SourceUnavailable(f"Feedback source {source.name!r}: label folder {labels} does not exist; create it or drop 'path'.")
        target = settings.cache_dir / "feedback" / source.name
        scratch = Path(tempfile.mkdtemp(dir=_parent(target), prefix=f".{target.name}."))
        try:
            index = [self._export(store, name, flag, labels, scratch) for name, flag in sorted(chosen.items())]
            (scratch / FEEDBACK_INDEX).write_text(json.dumps(index, indent=2), encoding="utf-8")
            shutil.rmtree(target, ignore_errors=True)  # the flags change: each run exports the current set
            os.rename(scratch, target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return target

    @staticmethod
    def _export(store: ObjectStore, name: PurePosixPath, flag: Flag, labels: Path | None, out: Path) -> dict[str, object]:
        suffix = PurePosixPath(flag.original_key).suffix.lower()
        label = labels / f"{name}.txt" if labels is not None else None
        labelled = label is not None and label.is_file()
        image = out / ("images" if labelled else UNLABELLED) / f"{name}{suffix}"
        store.get_file(store.settings.reports_bucket, flag.original_key, image)
        if labelled:
            (out / "labels" / f"{name}.txt").parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(label, out / "labels" / f"{name}.txt")
        return {"name": str(name), "labelled": labelled, **asdict(flag)}


def _parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.parent
