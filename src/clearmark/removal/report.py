"""Per-member report of a removal run: ``report.json`` (summary + rows) and ``report.csv`` (rows)."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from clearmark.storage import atomic_write_bytes

if TYPE_CHECKING:
    from clearmark.removal.inpaint import RestoreStats

Status = Literal["cleaned", "unchanged_no_watermark", "copied_non_image", "error"]
STATUSES: tuple[Status, ...] = ("cleaned", "unchanged_no_watermark", "copied_non_image", "error")
PROCESSED: tuple[Status, ...] = ("cleaned", "unchanged_no_watermark")  # images that went through detection
# How an image was restored; "" for members that are not images.
# "shared": unblended with the mark the archive's images share (clearmark.removal.shared_mark).
Restoration = Literal["shared", "unblended", "inpainted", "unchanged", "error", ""]
RESTORATIONS: tuple[Restoration, ...] = ("shared", "unblended", "inpainted", "unchanged", "error")


@dataclass
class MemberRow:
    """What happened to one member of the input."""

    path: str
    status: Status
    format: str = ""
    width: int | None = None
    height: int | None = None
    mask_coverage: float | None = None
    confidence: float | None = None
    inpainter: str = ""
    # Shares of the footprint (mask pixels) recovered by inverting the blend / filled by inpainting.
    unblended_share: float | None = None
    inpainted_share: float | None = None
    # The shared-mark path: the image's frame group, whether the group's mark cleaned it,
    # where the mark sat in it (pixels, scale) and the mark's edge energy left afterwards.
    mark_group: str = ""
    shared_mark: bool = False
    align_dx: float | None = None
    align_dy: float | None = None
    align_scale: float | None = None
    shared_residual: float | None = None
    decode_ms: float = 0.0
    detect_ms: float = 0.0
    inpaint_ms: float = 0.0
    encode_ms: float = 0.0
    # For errors: why, and whether the original bytes were still copied to the output.
    error: str = ""
    copied: bool = True

    def record_restoration(self, stats: RestoreStats) -> None:
        self.unblended_share, self.inpainted_share = stats.share(stats.unblended), stats.share(stats.inpainted)

    @property
    def restoration(self) -> Restoration:
        """``shared`` when the archive's shared mark cleaned it; else ``unblended`` when more of the
        footprint was unblended than inpainted, ``inpainted`` otherwise; ``unchanged`` for
        images left as they were, ``error`` for failures."""
        if self.status == "error":
            return "error"
        if self.status == "cleaned" and self.shared_mark:
            return "shared"
        if self.status == "cleaned" and (self.unblended_share or self.inpainted_share):
            return "unblended" if (self.unblended_share or 0) > (self.inpainted_share or 0) else "inpainted"
        return "unchanged" if self.status in PROCESSED else ""

    def as_dict(self) -> dict[str, Any]:
        """The row as report.json and report.csv write it (fields, then ``restoration``)."""
        return {**asdict(self), "restoration": self.restoration}


@dataclass
class RemovalReport:
    """Summary of one input (archive or folder) and one row per member."""

    input: str
    output: str
    kind: str
    model_version: str
    inpainter: str
    threshold: float
    started_at: str
    backend: str = ""  # the inference backend that ran the detector (clearmark.model.backends)
    duration_s: float = 0.0
    rows: list[MemberRow] = field(default_factory=list)
    # One entry per frame group the shared-mark pass looked at: images, score, shared or why not.
    shared_marks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for row in self.rows:
            counts[row.status] += 1
        return counts

    @property
    def restorations(self) -> dict[str, int]:
        """Images per way of restoring them (members that are not images are not counted)."""
        counts = dict.fromkeys(RESTORATIONS, 0)
        for row in self.rows:
            if row.restoration:
                counts[row.restoration] += 1
        return counts

    @property
    def images_per_s(self) -> float:
        images = sum(1 for r in self.rows if r.status in PROCESSED)
        return images / self.duration_s if self.duration_s else 0.0

    @property
    def status(self) -> Literal["ok", "partial"]:
        """``partial`` when some members failed while the rest were processed."""
        return "partial" if self.counts["error"] else "ok"

    def summary(self) -> dict[str, Any]:
        """JSON-able summary without the rows."""
        return {
            "status": self.status,
            "input": self.input,
            "output": self.output,
            "kind": self.kind,
            "model_version": self.model_version,
            "backend": self.backend,
            "inpainter": self.inpainter,
            "threshold": self.threshold,
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 3),
            "images_per_s": round(self.images_per_s, 2),
            "members": len(self.rows),
            "counts": self.counts,
            "restorations": self.restorations,
            "shared_marks": self.shared_marks,
        }

    def to_json(self) -> bytes:
        return json.dumps({**self.summary(), "rows": [r.as_dict() for r in self.rows]}, indent=2).encode()

    def write(self, json_path: Path, csv_path: Path) -> None:
        """Write both report files atomically."""
        import io

        atomic_write_bytes(json_path, self.to_json())
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=[*(f.name for f in fields(MemberRow)), "restoration"])
        writer.writeheader()
        writer.writerows(r.as_dict() for r in self.rows)
        atomic_write_bytes(csv_path, buffer.getvalue().encode())
