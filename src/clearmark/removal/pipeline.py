"""Streaming removal pipeline: read -> decode -> detect (batched) -> restore + encode -> write.

Each stage runs in its own thread(s) and hands work on through a bounded queue, so
decoding, inference and encoding overlap while memory stays flat however large the
archive is (at most a few batches of images are in flight).  Detector threads batch
images of the same working shape; on CPU there is one per core, each running torch on
one thread.  Restoring (unblending, OpenCV inpainting) runs in one thread per core (at
least two) where the restorer is thread-safe.  OpenCV, PIL
and torch release the GIL, which is what lets the stages run in parallel.

Outputs, next to ``output`` (an archive or folder of the same layout as the input):
``<output>.report.json``, ``<output>.report.csv``, ``<output>.features.parquet`` and,
with ``save_masks``, ``<output>.masks.zip`` (one ``<path>.mask.png`` per cleaned image,
in the stored orientation of the image, 1-bit: 0/255 read as greyscale) and, where images share a mark,
``<output>.watermark.png`` (``.watermark-<group>.png`` for several groups): the estimate.

With ``shared_mark``, a first pass (:func:`_estimate_shared_marks`) reads a bounded sample
of each frame group (:mod:`clearmark.removal.shared_mark`), detects and estimates the mark
the group shares (its detections are kept: the streaming pass detects no image twice); the
streaming pass then unblends each image of such a group with it,
and falls back to the per-image restorer where the mark's edges are left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from clearmark.model.inference import (
    DetectionOptions,
    detect_tiled,
    needs_tiling,
    predict,
    probabilities_to_detection,
    resize_for_detector,
    usable_cores,
)
from clearmark.removal.archive import ArchiveError, ArchiveReader, ArchiveWriter, Limits, Member, check_output, output_kind
from clearmark.removal.imageio import ImageDecodeError, is_image_name
from clearmark.removal.report import MemberRow, RemovalReport

if TYPE_CHECKING:
    import numpy as np

    from clearmark.model.detector import Detector
    from clearmark.model.inference import Detection
    from clearmark.removal.imageio import DecodedImage
    from clearmark.removal.inpaint import Inpainter, Restorer
    from clearmark.removal.shared_mark import GroupEstimate, SharedMark

_DONE = object()  # end-of-stream marker passed down the queues
_POLL_S = 0.1  # how often blocked threads look at the stop flag
_BATCH_WAIT_S = 0.05  # how long the detector waits for a batch to fill before running it
_SPOOL_BYTES = 8 * 1024 * 1024  # non-image members above this go to a temporary file
_MAX_BYTES_PER_PIXEL = 8  # uncompressed 16-bit RGBA: no image file within the pixel cap is larger
REPORT_JSON, REPORT_CSV, FEATURES, MASKS = ".report.json", ".report.csv", ".features.parquet", ".masks.zip"
WATERMARK = ".watermark.png"
# The shared mark is restored and checked within this margin around it: the restorer's filters
# and inpainting (8 px), and mark_residual's ring of texture (8 px), see real neighbours.
SHARED_WINDOW_PX = 16


def sidecar(output: Path, suffix: str) -> Path:
    """``<output><suffix>``, e.g. ``photos.zip.report.json`` or ``cleaned.report.json``."""
    return output.with_name(output.name + suffix)


def check_outputs(output_path: Path, *, save_masks: bool, overwrite: bool) -> None:
    """Raise ``OutputExistsError`` unless the run may write its output and each file next to it
    (see :func:`clearmark.removal.archive.check_output`)."""
    output_path = Path(output_path)
    check_output(output_path, folder=output_kind(output_path) == "folder", overwrite=overwrite)
    for suffix in (REPORT_JSON, REPORT_CSV, FEATURES, WATERMARK, *((MASKS,) if save_masks else ())):
        check_output(sidecar(output_path, suffix), folder=False, overwrite=overwrite)


@dataclass
class RemovalOutputs:
    """Where a run wrote its results, and its report."""

    output: Path
    report: RemovalReport
    report_json: Path
    report_csv: Path
    features: Path
    masks: Path | None
    watermarks: list[Path] = field(default_factory=list)  # one estimated mark (RGBA PNG) per group that shares one


@dataclass
class _Item:
    """One member on its way through the stages; heavy fields are dropped once used."""

    index: int
    member: Member
    row: MemberRow
    data: bytes | None = None
    spool: IO[bytes] | None = None
    image: DecodedImage | None = None
    upright: np.ndarray | None = None
    detector_input: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    output: bytes | None = None
    mask_png: bytes | None = None
    features: dict[str, float] | None = None


class _Stop(Exception):
    """Raised inside a stage when another stage failed and the run is being torn down."""


@dataclass
class _Run:
    """Shared state of one run: options, queues and the stop flag."""

    detector: Detector
    restorer: Restorer
    options: DetectionOptions
    limits: Limits
    save_masks: bool
    spool_dir: Path
    shared: dict[str, SharedMark] = field(default_factory=dict)  # frame group -> its estimated mark
    # The first pass's detector output for its sample (member index -> probabilities, float16, and ms):
    # the streaming pass reuses it rather than detect those images twice.  At most MAX_SAMPLE per group.
    detected: dict[int, tuple[np.ndarray, float]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    failure: list[BaseException] = field(default_factory=list)
    running: dict[str, int] = field(default_factory=dict)  # threads per stage that have not finished
    lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, target: queue.Queue[Any], item: object) -> None:
        while True:
            if self.stop.is_set():
                raise _Stop
            try:
                target.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def get(self, source: queue.Queue[Any], timeout: float | None = None) -> Any:
        """Next item; raises ``queue.Empty`` after ``timeout`` seconds (``None``: wait)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.stop.is_set():
                raise _Stop
            wait = _POLL_S if deadline is None else min(_POLL_S, deadline - time.monotonic())
            if wait <= 0:
                raise queue.Empty
            try:
                return source.get(timeout=wait)
            except queue.Empty:
                continue

    def finished(self, stage: str, target: queue.Queue[Any], readers: int) -> None:
        """One thread of ``stage`` is done; the last one tells each of the next stage's ``readers`` threads."""
        with self.lock:
            self.running[stage] -= 1
            last = self.running[stage] == 0
        if last:
            for _ in range(readers):
                self.put(target, _DONE)

    def fail(self, exc: BaseException) -> None:
        self.failure.append(exc)
        self.stop.set()


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


def _thread(run: _Run, name: str, target: Callable[[], None]) -> threading.Thread:
    def guarded() -> None:
        try:
            target()
        except _Stop:
            pass
        except BaseException as exc:  # a bug or an unreadable input: stop every stage
            run.fail(exc)

    thread = threading.Thread(target=guarded, name=f"removal-{name}", daemon=True)
    thread.start()
    return thread


# --- stages ----------------------------------------------------------------------------------
def _read(run: _Run, reader: ArchiveReader, decode_q: queue.Queue[Any], write_q: queue.Queue[Any], decoders: int) -> None:
    """Read members one by one: images go to the decoders, everything else to the writer."""
    for index, member in enumerate(reader.members):
        item = _Item(index, member, MemberRow(path=member.path, status="copied_non_image"))
        if member.is_dir:
            run.put(write_q, item)
            continue
        if member.error:
            item.row.status, item.row.error, item.row.copied = "error", member.error, False
            run.put(write_q, item)
            continue
        started = time.perf_counter()
        is_image = is_image_name(member.path)
        if is_image and member.size > run.limits.max_image_pixels * _MAX_BYTES_PER_PIXEL:
            # Larger than any image within the pixel cap could be: not read into memory, copied through.
            is_image = False
            item.row.status, item.row.error = "error", f"image file of {member.size} bytes is above the pixel limit; copied unchanged"
        try:
            with member.open() as stream:
                if is_image:
                    item.data = stream.read()
                else:
                    item.spool = tempfile.SpooledTemporaryFile(_SPOOL_BYTES, dir=run.spool_dir)
                    shutil.copyfileobj(stream, item.spool, 1024 * 1024)
                    item.spool.seek(0)
        except (OSError, ValueError, RuntimeError, NotImplementedError, EOFError) as exc:
            # Bad CRC, unsupported compression or encryption of this member only.
            item.row.status, item.row.error, item.row.copied = "error", f"cannot read member: {exc}", False
            run.put(write_q, item)
            continue
        item.row.decode_ms = _ms(started)
        run.put(decode_q if item.data is not None else write_q, item)
    run.finished("read", decode_q, decoders)


def _decode(run: _Run, decode_q: queue.Queue[Any], detect_q: queue.Queue[Any], write_q: queue.Queue[Any], detectors: int) -> None:
    """Decode images and prepare the detector input (upright, resized)."""
    from clearmark.removal.imageio import decode_image

    while (item := run.get(decode_q)) is not _DONE:
        started = time.perf_counter()
        try:
            item.image = decode_image(item.data, max_pixels=run.limits.max_image_pixels)
            item.upright = item.image.upright_rgb8()
            height, width = item.upright.shape[:2]
            item.row.format, item.row.width, item.row.height = item.image.format, width, height
            if item.index in run.detected:  # detected in the first pass
                probabilities, detect_ms = run.detected.pop(item.index)
                item.probabilities, item.row.detect_ms = probabilities.astype("float32"), detect_ms
            elif not needs_tiling(height, width, run.options):
                item.detector_input = resize_for_detector(item.upright, run.options)
        except Exception as exc:  # this image only; the message goes to the report
            _copy_unchanged(item, str(exc) if isinstance(exc, ImageDecodeError) else f"cannot decode ({type(exc).__name__}: {exc})")
            run.put(write_q, item)
            continue
        item.row.decode_ms += _ms(started)
        run.put(detect_q, item)
    run.finished("decode", detect_q, detectors)


def _copy_unchanged(item: _Item, reason: str) -> None:
    """Report an error but keep the original bytes in the output: nothing is lost."""
    item.row.status, item.row.error, item.row.copied = "error", f"{reason}; copied unchanged", True
    item.output, item.image, item.upright, item.detector_input = item.data, None, None, None


def _detect(run: _Run, detect_q: queue.Queue[Any], finish_q: queue.Queue[Any], finishers: int) -> None:
    """Batch same-shape images through the detector; run a batch when full or when input pauses."""
    import numpy as np

    pending: dict[tuple[int, ...], list[_Item]] = {}

    def flush(shape: tuple[int, ...]) -> None:
        batch = pending.pop(shape)
        started = time.perf_counter()
        probabilities = predict(run.detector, np.stack([i.detector_input for i in batch]), run.options)
        per_image = _ms(started) / len(batch)
        for item, proba in zip(batch, probabilities, strict=True):
            item.probabilities, item.detector_input = proba, None
            item.row.detect_ms = round(per_image, 2)
            run.put(finish_q, item)

    while True:
        try:
            item = run.get(detect_q, timeout=_BATCH_WAIT_S if pending else None)
        except queue.Empty:  # input paused: run the fullest batch rather than wait
            flush(max(pending, key=lambda s: len(pending[s])))
            continue
        if item is _DONE:
            break
        if item.probabilities is not None:  # the first pass detected it
            run.put(finish_q, item)
            continue
        if item.detector_input is None:  # very large image: full-resolution tiles, on its own
            started = time.perf_counter()
            item.probabilities = detect_tiled(run.detector, item.upright, run.options)
            item.row.detect_ms = _ms(started)
            run.put(finish_q, item)
            continue
        shape = item.detector_input.shape
        pending.setdefault(shape, []).append(item)
        if len(pending[shape]) >= run.options.batch_size:
            flush(shape)
    for shape in list(pending):
        flush(shape)
    run.finished("detect", finish_q, finishers)


def _finish(run: _Run, finish_q: queue.Queue[Any], write_q: queue.Queue[Any]) -> None:
    """Mask, restore, merge and encode one image; compute its drift features."""
    from clearmark.data.features import image_features
    from clearmark.removal.imageio import encode_image, merge_cleaned

    while (item := run.get(finish_q)) is not _DONE:
        image, row = item.image, item.row
        assert image is not None and item.upright is not None and item.probabilities is not None
        started = time.perf_counter()
        detection = probabilities_to_detection(item.probabilities, *item.upright.shape[:2], run.options)
        row.detect_ms = round(row.detect_ms + _ms(started), 2)
        row.mask_coverage, row.confidence = round(detection.coverage, 6), round(detection.confidence, 6)
        item.features = image_features(
            item.upright, jpeg_quality=image.jpeg_quality, mask_coverage=detection.coverage, confidence=detection.confidence
        )
        try:
            if _clean_shared(run, item, encode_image, merge_cleaned):
                pass
            elif detection.found:
                _clean(run, item, _stored_orientation(detection, image.orientation, matte=run.restorer.uses_matte), encode_image, merge_cleaned)
            else:
                row.status, item.output = "unchanged_no_watermark", item.data  # byte-identical pass-through
        except Exception as exc:  # one image that cannot be restored or encoded
            _copy_unchanged(item, f"cleaning failed ({type(exc).__name__}: {exc})")
        item.image = item.upright = item.probabilities = None
        run.put(write_q, item)
    run.finished("finish", write_q, 1)


def _stored_orientation(detection: Detection, orientation: int, *, matte: bool) -> Detection:
    """The detection's mask (and matte, for a restorer that reads it) in the image's stored orientation."""
    import numpy as np

    from clearmark.removal.imageio import from_upright

    def stored(array: np.ndarray | None) -> np.ndarray | None:
        return None if array is None else np.ascontiguousarray(from_upright(array, orientation))

    if not matte:  # a plain inpainter: the matte would be turned for nothing
        return dataclasses.replace(detection, mask=stored(detection.mask), alpha=None, colour=None)
    return dataclasses.replace(detection, mask=stored(detection.mask), alpha=stored(detection.alpha), colour=stored(detection.colour))


def _clean_shared(run: _Run, item: _Item, encode: Callable[..., bytes], merge: Callable[..., np.ndarray]) -> bool:
    """Clean ``item`` with its group's shared mark; False (row says why) where it has none or it does not fit.

    Restores and checks only the window around the placed mark (:data:`SHARED_WINDOW_PX` beyond it).
    """
    import numpy as np

    from clearmark.removal.imageio import from_upright
    from clearmark.removal.inpaint import box_window, mask_box
    from clearmark.removal.shared_mark import RESIDUAL_LIMIT, Placement, frame_group, mark_residual

    image, row, upright = item.image, item.row, item.upright
    assert image is not None and upright is not None
    mark = run.shared.get(frame_group(*upright.shape[:2]))
    if mark is None:
        return False
    started = time.perf_counter()
    placement = mark.place(upright)
    box = mask_box(placement.alpha > 0)
    if box is None:
        return False
    window = box_window(box, SHARED_WINDOW_PX)
    observed = upright[window]
    local = Placement(placement.mask[window], placement.alpha[window], placement.colour[window], placement.alignment)
    restored_window, stats = run.restorer.restore(observed, local)
    residual = mark_residual(restored_window, local.alpha)
    row.mark_group, row.shared_residual = mark.group, residual
    row.align_dx, row.align_dy, row.align_scale = placement.alignment.dx, placement.alignment.dy, placement.alignment.scale
    if residual > RESIDUAL_LIMIT or residual >= mark_residual(observed, local.alpha):
        return False  # the shared mark does not fit this image (or it does not carry it): per-image restoration
    restored = upright.copy()
    restored[window] = restored_window
    row.inpaint_ms = _ms(started)
    row.record_restoration(stats)
    row.shared_mark = True
    mask = np.ascontiguousarray(from_upright(placement.mask, image.orientation))
    _encode_cleaned(run, item, np.ascontiguousarray(from_upright(restored, image.orientation)), mask, encode, merge)
    return True


def _clean(run: _Run, item: _Item, detection: Detection, encode: Callable[..., bytes], merge: Callable[..., np.ndarray]) -> None:
    image, row = item.image, item.row
    assert image is not None
    mask = detection.mask
    started = time.perf_counter()
    cleaned, stats = run.restorer.restore(image.rgb8(), detection)
    row.inpaint_ms = _ms(started)
    row.record_restoration(stats)
    _encode_cleaned(run, item, cleaned, mask, encode, merge)


def _encode_cleaned(run: _Run, item: _Item, cleaned: np.ndarray, mask: np.ndarray, encode: Callable[..., bytes], merge: Callable[..., np.ndarray]) -> None:
    """Merge ``cleaned`` (stored orientation) inside ``mask`` into the image and encode it."""
    image, row = item.image, item.row
    assert image is not None
    started = time.perf_counter()
    item.output = encode(image, merge(image, cleaned, mask))
    if run.save_masks:
        import cv2

        item.mask_png = cv2.imencode(".png", mask, [cv2.IMWRITE_PNG_BILEVEL, 1])[1].tobytes()  # 0/255: one bit a pixel
    row.encode_ms = _ms(started)
    row.status, row.inpainter = "cleaned", run.restorer.name


# --- driver ----------------------------------------------------------------------------------
def remove_watermarks(
    input_path: Path,
    output_path: Path,
    *,
    detector: Detector,
    inpainter: Inpainter | Restorer,
    options: DetectionOptions,
    limits: Limits | None = None,
    save_masks: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    shared_mark: bool = False,
) -> RemovalOutputs:
    """Clean every image of ``input_path`` (archive or folder) into ``output_path``.

    The output has the kind its name says (``.zip``, ``.tar``, ``.tar.gz``/``.tgz``,
    otherwise a folder) and the input's relative paths.  Raises :class:`ArchiveError`
    when the input as a whole is unreadable or hostile; then no output is left behind.
    An existing output is refused (``OutputExistsError``) unless ``overwrite``; even then
    a folder keeps the files this run does not write.  Every image goes through
    ``inpainter``'s ``restore`` (a plain inpainter is adapted: :func:`as_restorer`).
    ``shared_mark`` first estimates the marks that groups of images share (module
    docstring); it needs a restorer that unblends (``uses_matte``), others ignore it.
    """
    import pandas as pd

    from clearmark.data.features import FEATURE_COLUMNS
    from clearmark.removal.inpaint import as_restorer
    from clearmark.storage import atomic_write_bytes

    input_path, output_path = Path(input_path).resolve(), Path(output_path).resolve()
    if output_path == input_path or output_path.is_relative_to(input_path):
        raise ArchiveError(f"OUTPUT {output_path} must lie outside INPUT {input_path}; choose another output path")
    check_outputs(output_path, save_masks=save_masks, overwrite=overwrite)
    limits = limits or Limits()
    restorer = as_restorer(inpainter)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    started_at, started = datetime.now(UTC), time.perf_counter()
    outputs = RemovalOutputs(
        output=output_path,
        report=RemovalReport(
            input=str(input_path), output=str(output_path), kind=output_kind(output_path), model_version=detector.version,
            backend=detector.backend_name, inpainter=restorer.name, threshold=options.threshold, started_at=started_at.isoformat(),
        ),  # fmt: skip
        report_json=sidecar(output_path, REPORT_JSON),
        report_csv=sidecar(output_path, REPORT_CSV),
        features=sidecar(output_path, FEATURES),
        masks=sidecar(output_path, MASKS) if save_masks else None,
    )
    rows: list[MemberRow | None] = []
    features: list[dict[str, float]] = []
    with (
        ArchiveReader(input_path, limits) as reader,
        tempfile.TemporaryDirectory(prefix=".spool-", dir=output_path.parent) as spool_dir,
    ):
        rows = [None] * len(reader.members)
        run = _Run(detector, restorer, options, limits, save_masks, Path(spool_dir))
        if shared_mark and restorer.uses_matte:
            estimates = _estimate_shared_marks(run, reader)
            outputs.report.shared_marks = [_describe_estimate(e) for e in estimates]
            run.shared = {e.group: e.mark for e in estimates if e.mark is not None}
        features = _drive(run, reader, output_path, outputs.masks, rows, progress)
        outputs.watermarks = _write_watermarks(output_path, list(run.shared.values()), overwrite=overwrite)
    outputs.report.rows = [r for r in rows if r is not None and r.path]
    outputs.report.duration_s = time.perf_counter() - started
    frame = pd.DataFrame(features, columns=FEATURE_COLUMNS)
    atomic_write_bytes(outputs.features, frame.to_parquet(index=False))
    outputs.report.write(outputs.report_json, outputs.report_csv)
    return outputs


def _estimate_shared_marks(run: _Run, reader: ArchiveReader) -> list[GroupEstimate]:
    """First pass: each frame group's sample, its detector masks and its shared mark (or why none).

    Reads only the image headers of the whole archive, then decodes and detects at most
    ``MAX_SAMPLE`` images of a group, evenly spread over it, one group at a time, in one
    thread per detector worker: memory is flat in the archive's size.  The sample's
    detector output is kept for the streaming pass (``run.detected``), which so detects
    every image once.  Members that cannot be read or decoded are left out.
    """
    from collections import Counter
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    from clearmark.removal.shared_mark import MAX_SAMPLE, MIN_IMAGES, SAMPLE_BYTES, GroupEstimate, estimate_shared_mark, frame_group

    groups: dict[str, list[tuple[int, Member, tuple[int, int]]]] = {}
    for index, member in enumerate(reader.members):
        if member.is_dir or member.error or not is_image_name(member.path):
            continue
        shape = _upright_shape(member)
        if shape is not None:
            groups.setdefault(frame_group(*shape), []).append((index, member, shape))
    estimates = []
    workers = run.options.workers
    with _torch_threads(1 if workers > 1 and run.detector.device.type == "cpu" else None), ThreadPoolExecutor(workers) as pool:
        for group, members in groups.items():
            reference = Counter(shape for _, _, shape in members).most_common(1)[0][0]
            wanted = min(MAX_SAMPLE, SAMPLE_BYTES // (reference[0] * reference[1] * 3))
            if len(members) < MIN_IMAGES or wanted < MIN_IMAGES:
                reason = f"{len(members)} images of this frame; a shared mark needs {MIN_IMAGES}" if len(members) < MIN_IMAGES else "frame too large for the sample"
                estimates.append(GroupEstimate(group, len(members), 0.0, None, reason))
                continue
            positions = np.unique(np.linspace(0, len(members) - 1, wanted).round().astype(int))
            sample = [
                taken
                for taken in pool.map(lambda position, members=members, reference=reference: _sample_image(run, *members[position][:2], reference), positions)
                if taken is not None
            ]
            estimates.append(estimate_shared_mark([image for image, _ in sample], [seed for _, seed in sample], group=group))
    return estimates


def _sample_image(run: _Run, index: int, member: Member, reference: tuple[int, int]) -> tuple[np.ndarray, np.ndarray] | None:
    """One sampled image at the group's ``reference`` size and its detector mask (bool); None if unreadable.

    Its detector output is kept in ``run.detected`` (not for tiled, very large images).
    """
    import cv2
    import numpy as np

    from clearmark.removal.imageio import decode_image

    try:
        with member.open() as stream:
            upright = decode_image(stream.read(), max_pixels=run.limits.max_image_pixels).upright_rgb8()
    except Exception:  # a corrupt or hostile member is left out of the sample; the main pass reports it
        return None
    started = time.perf_counter()
    height, width = upright.shape[:2]
    tiled = needs_tiling(height, width, run.options)
    if tiled:
        probabilities = detect_tiled(run.detector, upright, run.options)
    else:
        probabilities = predict(run.detector, resize_for_detector(upright, run.options)[None], run.options)[0]
        run.detected[index] = (probabilities.astype(np.float16), _ms(started))
    seed = probabilities_to_detection(probabilities, height, width, run.options).mask
    if (height, width) != reference:
        upright = cv2.resize(upright, reference[::-1], interpolation=cv2.INTER_AREA)
        seed = cv2.resize(seed, reference[::-1], interpolation=cv2.INTER_NEAREST)
    return upright, seed > 0


def _upright_shape(member: Member) -> tuple[int, int] | None:
    """``(height, width)`` as the image is shown (EXIF orientation applied), from its header alone."""
    from PIL import Image

    try:
        with member.open() as stream, Image.open(stream) as image:
            width, height = image.size
            turned = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    except Exception:  # not readable as an image: the main pass reports it
        return None
    return (width, height) if turned else (height, width)


def _describe_estimate(estimate: GroupEstimate) -> dict[str, Any]:
    """The report's entry for one group."""
    mark = estimate.mark
    return {
        "group": estimate.group, "sample": estimate.images, "score": estimate.score, "shared": mark is not None,
        "reason": estimate.reason, "frame": list(mark.shape) if mark else None,
    }  # fmt: skip


def _write_watermarks(output: Path, marks: list[SharedMark], *, overwrite: bool) -> list[Path]:
    """``<output>.watermark.png`` (one group) or ``.watermark-<group>.png`` each: the marks as RGBA."""
    import cv2

    from clearmark.storage import atomic_write_bytes

    paths = []
    for mark in marks:
        path = sidecar(output, WATERMARK if len(marks) == 1 else f".watermark-{mark.group}.png")
        if len(marks) > 1:
            check_output(path, folder=False, overwrite=overwrite)
        atomic_write_bytes(path, cv2.imencode(".png", cv2.cvtColor(mark.rgba(), cv2.COLOR_RGBA2BGRA))[1].tobytes())
        paths.append(path)
    return paths


def _drive(
    run: _Run, reader: ArchiveReader, output: Path, masks: Path | None, rows: list[MemberRow | None], progress: bool
) -> list[dict[str, float]]:
    """Start the stages, write results as they arrive (this thread), join, and commit the outputs."""
    from clearmark.progress import progress_bar

    decoders, detectors = 2, run.options.workers
    depth = run.options.batch_size * detectors + 2
    decode_q: queue.Queue[Any] = queue.Queue(depth)
    detect_q: queue.Queue[Any] = queue.Queue(depth)
    finish_q: queue.Queue[Any] = queue.Queue(depth)
    write_q: queue.Queue[Any] = queue.Queue(depth)
    # Restoring is the slowest CPU step (OpenCV: about 20 ms per 512 px image): one thread
    # per core where the restorer allows it, so a GPU's detector is not left waiting on two.
    finishers = max(2, usable_cores()) if run.restorer.thread_safe else 1
    run.running = {"read": 1, "decode": decoders, "detect": detectors, "finish": finishers}
    features: list[dict[str, float]] = []
    writer = ArchiveWriter(output)
    mask_writer = ArchiveWriter(masks, "zip") if masks else None
    files = sum(1 for m in reader.members if not m.is_dir)
    threads: list[threading.Thread] = []
    try:
        with _torch_threads(1 if detectors > 1 and run.detector.device.type == "cpu" else None):
            threads.append(_thread(run, "read", lambda: _read(run, reader, decode_q, write_q, decoders)))
            threads += [_thread(run, f"decode{i}", lambda: _decode(run, decode_q, detect_q, write_q, detectors)) for i in range(decoders)]
            threads += [_thread(run, f"detect{i}", lambda: _detect(run, detect_q, finish_q, finishers)) for i in range(detectors)]
            threads += [_thread(run, f"finish{i}", lambda: _finish(run, finish_q, write_q)) for i in range(finishers)]
            with progress_bar(total=files, unit="file", desc=reader.path.name, disable=not progress) as bar:
                while (item := run.get(write_q)) is not _DONE:
                    _write(item, writer, mask_writer)
                    if not item.member.is_dir:
                        rows[item.index] = item.row
                        bar.update()
                    if item.features is not None:
                        features.append(item.features)
            for thread in threads:
                thread.join()
        if run.failure:
            raise run.failure[0]
    except BaseException as exc:
        run.stop.set()
        for thread in threads:
            thread.join()
        writer.abort()
        if mask_writer:
            mask_writer.abort()
        if isinstance(exc, _Stop) and run.failure:
            raise run.failure[0] from None
        raise
    writer.commit()
    if mask_writer:
        mask_writer.commit()
    return features


@contextlib.contextmanager
def _torch_threads(count: int | None) -> Iterator[None]:
    """Run torch on ``count`` intra-op threads (``None``: unchanged), restored afterwards.

    Threads take torch's thread count at their first operation, so this wraps the
    starting of the detector threads.
    """
    if count is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _write(item: _Item, writer: ArchiveWriter, mask_writer: ArchiveWriter | None) -> None:
    member = item.member
    if member.is_dir:
        writer.add_dir(member.path, member.mtime)
        return
    started = time.perf_counter()
    if item.spool is not None:
        with item.spool:
            writer.add_file(member.path, item.spool, size=member.size, mtime=member.mtime, mode=member.mode)
    elif item.output is not None and item.row.copied:
        writer.add_file(member.path, item.output, mtime=member.mtime, mode=member.mode)
    if item.mask_png is not None and mask_writer is not None:
        mask_writer.add_file(member.path + ".mask.png", item.mask_png, mtime=member.mtime)
    item.row.encode_ms = round(item.row.encode_ms + _ms(started), 2)
