"""One archive, one watermark: the shared mark's estimate, the decision, and the pipeline's use of it."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clearmark.data import marks, photos
from clearmark.model.metrics import psnr
from clearmark.removal.inpaint import get_inpainter
from clearmark.removal.pipeline import remove_watermarks, sidecar
from clearmark.removal.restore import RESTORER, unblend
from clearmark.removal.shared_mark import (
    MIN_IMAGES,
    RESIDUAL_LIMIT,
    estimate_shared_mark,
    frame_group,
)
from clearmark.settings import Settings
from tests.support.hostile_archives import corrupt_jpeg, encode, white_mark_detector

SIZE, COUNT = 192, 24


def _semi_transparent_mark(seed: int) -> marks.Matte:
    """A photo-train logo-and-text mark of opacity 0.3-0.8 (never an exact held-out shape or font)."""
    rng = np.random.default_rng(seed)
    for _ in range(200):
        matte, info = marks.draw_mark(rng, SIZE, marks.PHOTO_TRAIN_STYLES)
        if (
            info.family in ("centre_logo", "coloured_logo")
            and 0.3 <= float(matte.alpha.max()) <= 0.8
        ):
            return matte
    raise AssertionError("no semi-transparent logo mark drawn")


@pytest.fixture(scope="module")
def group() -> tuple[marks.Matte, list[np.ndarray], list[np.ndarray]]:
    """``(matte, clean photos, watermarked)``: 24 photo-train photos under one mark."""
    rng = np.random.default_rng(5)
    files = [path for paths in photos.photo_files("train").values() for path in paths]
    matte = _semi_transparent_mark(11)
    cleans = [photos.photo_crop(rng, files, SIZE)[0] for _ in range(COUNT)]
    return matte, cleans, [matte.blend(clean) for clean in cleans]


def _restorer(tmp_path: Path):
    return get_inpainter(RESTORER, Settings(home=tmp_path))


def test_the_estimate_recovers_the_shared_matte_and_unblending_restores_the_photos(group) -> None:
    matte, cleans, watermarked = group
    estimate = estimate_shared_mark(watermarked, [None] * COUNT, group="g")

    assert estimate.mark is not None, estimate.reason
    footprint = matte.alpha > 0
    error = np.abs(estimate.mark.alpha - matte.alpha)
    assert error[footprint].mean() < 0.06, error[footprint].mean()
    assert error[~footprint].mean() < 0.005
    for clean, marked in zip(cleans, watermarked, strict=True):
        placement = estimate.mark.place(marked)
        restored, _ = unblend(marked, placement.alpha, placement.colour, limit=0.85)
        assert psnr(clean, restored, footprint) > psnr(clean, marked, footprint) + 8
        assert psnr(clean, restored) > 32


def test_images_with_different_marks_share_none(group) -> None:
    _, cleans, _ = group
    mixed = [_semi_transparent_mark(100 + i).blend(clean) for i, clean in enumerate(cleans)]

    estimate = estimate_shared_mark(mixed, [None] * COUNT, group="g")

    assert estimate.mark is None
    assert "share no mark" in estimate.reason


def test_a_shifted_image_is_aligned_to_the_estimate(group) -> None:
    matte, cleans, watermarked = group
    mark = estimate_shared_mark(watermarked, [None] * COUNT, group="g").mark
    assert mark is not None
    shifted = marks.Matte(np.roll(matte.alpha, (2, -3), axis=(0, 1)), np.roll(matte.colour, (2, -3), axis=(0, 1)))

    placement = mark.place(shifted.blend(cleans[0]))

    assert placement.alignment.dx == pytest.approx(-3, abs=0.5)
    assert placement.alignment.dy == pytest.approx(2, abs=0.5)


def test_too_few_images_give_no_estimate(group) -> None:
    _, _, watermarked = group
    estimate = estimate_shared_mark(
        watermarked[: MIN_IMAGES - 1], [None] * (MIN_IMAGES - 1), group="g"
    )
    assert estimate.mark is None and str(MIN_IMAGES) in estimate.reason


def _archive(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _run(tmp_path: Path, source: Path, name: str, *, shared_mark: bool):
    from clearmark.model.inference import DetectionOptions

    return remove_watermarks(
        source, tmp_path / name, detector=white_mark_detector(), inpainter=_restorer(tmp_path),
        options=DetectionOptions(threshold=0.5, dilate_px=3, batch_size=4), progress=False, shared_mark=shared_mark,
    )  # fmt: skip


def test_the_pipeline_estimates_the_group_writes_its_mark_and_reports_each_image(
    group, tmp_path: Path
) -> None:
    _, _, watermarked = group
    members = {
        f"photos/{i:02d}.png": encode(image, "PNG")
        for i, image in enumerate(watermarked)
    }
    members["photos/broken.jpg"] = (
        corrupt_jpeg()
    )  # a hostile member does not stop the estimate
    members["notes.txt"] = b"not an image"
    source = _archive(tmp_path / "in.zip", members)

    outputs = _run(tmp_path, source, "out.zip", shared_mark=True)

    assert outputs.watermarks == [sidecar(outputs.output, ".watermark.png")]
    assert np.asarray(Image.open(outputs.watermarks[0])).shape == (SIZE, SIZE, 4)
    report = json.loads(outputs.report_json.read_text())
    (entry,) = report["shared_marks"]
    assert (entry["group"], entry["sample"], entry["shared"], entry["frame"]) == (
        frame_group(SIZE, SIZE),
        COUNT,
        True,
        [SIZE, SIZE],
    )
    rows = {row["path"]: row for row in report["rows"]}
    assert rows["photos/broken.jpg"]["status"] == "error"
    marked_rows = [rows[f"photos/{i:02d}.png"] for i in range(COUNT)]
    assert all(
        row["mark_group"] == entry["group"] and row["align_scale"] is not None
        for row in marked_rows
    )
    for row in (
        marked_rows
    ):  # the shared path only where the mark's edges are gone; the rest per image
        assert (row["restoration"] == "shared") == row["shared_mark"]
        if row["shared_mark"]:
            assert row["shared_residual"] <= RESIDUAL_LIMIT
    assert report["restorations"]["shared"] == sum(
        row["shared_mark"] for row in marked_rows
    )


def test_the_feature_off_estimates_nothing(group, tmp_path: Path) -> None:
    _, _, watermarked = group
    source = _archive(
        tmp_path / "in.zip",
        {f"{i:02d}.png": encode(image, "PNG") for i, image in enumerate(watermarked)},
    )

    outputs = _run(tmp_path, source, "off.zip", shared_mark=False)

    assert outputs.watermarks == [] and outputs.report.shared_marks == []
    assert not sidecar(outputs.output, ".watermark.png").exists()
    assert not any(row.mark_group or row.shared_mark for row in outputs.report.rows)


def test_without_a_shared_mark_the_result_is_the_per_image_one(group, tmp_path: Path) -> None:
    _, cleans, _ = group
    mixed = {f"{i:02d}.png": encode(_semi_transparent_mark(100 + i).blend(clean), "PNG") for i, clean in enumerate(cleans)}
    source = _archive(tmp_path / "mixed.zip", mixed)

    on = _run(tmp_path, source, "on.zip", shared_mark=True)
    off = _run(tmp_path, source, "off.zip", shared_mark=False)

    assert on.watermarks == off.watermarks == []
    assert on.report.shared_marks[0]["shared"] is False
    with zipfile.ZipFile(on.output) as first, zipfile.ZipFile(off.output) as second:
        assert {n: first.read(n) for n in first.namelist()} == {n: second.read(n) for n in second.namelist()}
    assert not any(row.shared_mark for row in on.report.rows)


def test_median_gradients_match_numpy_gradient_and_median() -> None:
    from clearmark.removal.shared_mark import _median_gradients

    rng = np.random.default_rng(3)
    for count in (8, 9):  # an even count averages the two middle values, as np.median does
        stack = rng.integers(0, 256, (count, 20, 30, 3), dtype=np.uint8)
        coherent, spread = _median_gradients(stack)
        gy, gx = np.gradient(stack.astype(np.float64), axis=(1, 2))
        expected_coherent = np.hypot(np.median(gx, axis=0), np.median(gy, axis=0)).max(axis=2)
        expected_spread = np.median(np.hypot(gx, gy), axis=0).max(axis=2)
        np.testing.assert_allclose(coherent, expected_coherent, atol=1e-4)
        np.testing.assert_allclose(spread, expected_spread, atol=1e-4)


def test_the_first_pass_detections_are_reused_each_image_is_detected_once(group, tmp_path: Path) -> None:
    from clearmark.model.inference import DetectionOptions

    _, _, watermarked = group
    source = _archive(tmp_path / "in.zip", {f"{i:02d}.png": encode(image, "PNG") for i, image in enumerate(watermarked)})
    detector = white_mark_detector()
    seen: list[int] = []
    detector.network.register_forward_hook(lambda _module, inputs, _output: seen.append(int(inputs[0].shape[0])))

    outputs = remove_watermarks(
        source, tmp_path / "out.zip", detector=detector, inpainter=_restorer(tmp_path),
        options=DetectionOptions(threshold=0.5, dilate_px=3, batch_size=4), progress=False, shared_mark=True,
    )  # fmt: skip

    assert outputs.report.shared_marks[0]["sample"] == COUNT
    assert sum(seen) == COUNT  # the sample's detections serve the streaming pass too
    assert all(row.status == "cleaned" and row.detect_ms > 0 for row in outputs.report.rows)
