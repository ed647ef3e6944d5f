"""The streaming pipeline end to end on local archives and folders, plus the ``clearmark remove`` command."""

from __future__ import annotations

import csv
import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from clearmark.data.features import FEATURE_COLUMNS
from clearmark.errors import EXIT_FAILED
from clearmark.model.inference import DetectionOptions, detect_images, tiles, working_shape
from clearmark.removal.imageio import decode_image, from_upright
from clearmark.removal.pipeline import remove_watermarks, sidecar
from tests.support.hostile_archives import clean_rgb, encode, tiny_detector_folder, watermarked_rgb

OPTIONS = DetectionOptions(threshold=0.5, dilate_px=3, batch_size=3)  # native resolution, the default


def _white(rgb: np.ndarray) -> np.ndarray:
    return (rgb >= 250).all(axis=-1)


def _members() -> dict[str, bytes]:
    return {
        "a/marked.jpg": encode(watermarked_rgb(64, 96, 1), "JPEG", quality=92),
        "a/b/marked.png": encode(watermarked_rgb(80, 64, 2), "PNG"),
        "clean.jpg": encode(clean_rgb(64, 64, 3), "JPEG", quality=92),
        "notes/readme.txt": b"not an image\n" * 100,
        "big/marked.webp": encode(watermarked_rgb(130, 200, 4), "WEBP", lossless=True),
    }


def _write_input(root: Path, kind: str, members: dict[str, bytes]) -> Path:
    if kind == "folder":
        for name, data in members.items():
            (root / "in" / name).parent.mkdir(parents=True, exist_ok=True)
            (root / "in" / name).write_bytes(data)
        return root / "in"
    path = root / f"in.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(path, "w") as zf:
            for name, data in members.items():
                zf.writestr(name, data)
    else:
        with tarfile.open(path, "w:gz" if kind == "tar.gz" else "w") as tf:
            for name, data in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def _read_output(path: Path) -> dict[str, bytes]:
    if path.is_dir():
        return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as zf:
            return {n: zf.read(n) for n in zf.namelist() if not n.endswith("/")}
    with tarfile.open(path) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}


@pytest.mark.parametrize(("in_kind", "out_name"), [("zip", "out.zip"), ("tar.gz", "out.tar.gz"), ("tar", "out"), ("folder", "out.tgz")])
def test_pipeline_cleans_marks_keeps_paths_and_reports_every_member(tmp_path, in_kind, out_name, detector, inpainter):
    members = _members()
    source = _write_input(tmp_path, in_kind, members)
    output = tmp_path / "result" / out_name

    result = remove_watermarks(source, output, detector=detector, inpainter=inpainter, options=OPTIONS, save_masks=True, progress=False)

    written = _read_output(output)
    assert sorted(written) == sorted(members)
    rows = {r.path: r for r in result.report.rows}
    assert {p: r.status for p, r in rows.items()} == {
        "a/marked.jpg": "cleaned",
        "a/b/marked.png": "cleaned",
        "big/marked.webp": "cleaned",
        "clean.jpg": "unchanged_no_watermark",
        "notes/readme.txt": "copied_non_image",
    }
    # Unchanged and non-image members are byte-identical; cleaned ones keep format and size.
    assert written["clean.jpg"] == members["clean.jpg"]
    assert written["notes/readme.txt"] == members["notes/readme.txt"]
    for name in ("a/marked.jpg", "a/b/marked.png", "big/marked.webp"):
        before, after = Image.open(io.BytesIO(members[name])), Image.open(io.BytesIO(written[name]))
        assert (after.format, after.size) == (before.format, before.size)
        assert _white(np.asarray(before.convert("RGB"))).sum() > 100
        assert _white(np.asarray(after.convert("RGB"))).sum() == 0, f"{name}: the white mark is still there"
        assert 0 < rows[name].mask_coverage < 0.3 and rows[name].confidence > 0.9 and rows[name].inpainter == "telea"
    # The lossless PNG keeps every pixel outside the (dilated) mask.
    before = np.asarray(Image.open(io.BytesIO(members["a/b/marked.png"])))
    after = np.asarray(Image.open(io.BytesIO(written["a/b/marked.png"])))
    changed = (before != after).any(axis=-1)
    assert changed.any() and not (changed & ~_grow(_white(before), OPTIONS.dilate_px + 1)).any()

    report = json.loads(result.report_json.read_bytes())
    assert report["status"] == "ok" and report["counts"] == {"cleaned": 3, "unchanged_no_watermark": 1, "copied_non_image": 1, "error": 0}
    assert report["model_version"] == "white-marks" and len(report["rows"]) == 5
    with open(result.report_csv) as fh:
        assert {row["path"]: row["status"] for row in csv.DictReader(fh)} == {p: r.status for p, r in rows.items()}
    features = pd.read_parquet(result.features)
    assert list(features.columns) == FEATURE_COLUMNS and len(features) == 4  # every image, cleaned or not
    assert sorted(features["mask_coverage"].round(6)) == sorted(round(r.mask_coverage, 6) for r in rows.values() if r.mask_coverage is not None)
    with zipfile.ZipFile(sidecar(output, ".masks.zip")) as masks:
        assert sorted(masks.namelist()) == ["a/b/marked.png.mask.png", "a/marked.jpg.mask.png", "big/marked.webp.mask.png"]
        stored = Image.open(io.BytesIO(masks.read("a/b/marked.png.mask.png")))
        mask = np.asarray(stored.convert("L"))
        assert stored.mode == "1" and mask.shape == before.shape[:2] and set(np.unique(mask)) == {0, 255}  # one bit a pixel


def _grow(mask: np.ndarray, pixels: int) -> np.ndarray:
    import cv2

    return cv2.dilate(mask.astype(np.uint8), np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)) > 0


def test_rotated_jpeg_is_detected_upright_and_written_in_its_stored_orientation(tmp_path, detector, inpainter):
    upright = watermarked_rgb(96, 64, 5)  # the mark sits in the top-left of the upright view
    stored = np.ascontiguousarray(from_upright(upright, 6))
    exif = Image.Exif()
    exif[0x0112] = 6
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "rotated.jpg").write_bytes(encode(stored, "JPEG", quality=95, exif=exif))

    result = remove_watermarks(folder, tmp_path / "out", detector=detector, inpainter=inpainter, options=OPTIONS, progress=False)

    assert result.report.rows[0].status == "cleaned"
    assert (result.report.rows[0].width, result.report.rows[0].height) == (64, 96)  # reported as seen upright
    cleaned = decode_image((tmp_path / "out" / "rotated.jpg").read_bytes(), max_pixels=10**8)
    assert cleaned.orientation == 6 and cleaned.pixels.shape == stored.shape
    assert _white(cleaned.upright_rgb8()).sum() == 0


def test_several_detector_threads_give_the_same_archive_and_leave_torch_threads_as_they_were(tmp_path, detector, inpainter):
    import dataclasses

    import torch

    members = {f"set{i % 3}/img{i:02d}.png": encode(watermarked_rgb(64 + 32 * (i % 2), 96, i), "PNG") for i in range(14)}
    members["set0/clean.png"] = encode(clean_rgb(64, 64, 99), "PNG")
    source = _write_input(tmp_path, "zip", members)
    threads_before = torch.get_num_threads()
    results = {}
    for workers in (1, 3):
        options = dataclasses.replace(OPTIONS, workers=workers)
        output = tmp_path / f"out-{workers}.zip"
        report = remove_watermarks(source, output, detector=detector, inpainter=inpainter, options=options, progress=False).report
        results[workers] = (_read_output(output), [(r.path, r.status, r.mask_coverage) for r in report.rows])
        assert torch.get_num_threads() == threads_before
    assert results[3] == results[1]
    assert sorted(results[3][0]) == sorted(members)
    assert [status for _, status, _ in results[3][1]].count("cleaned") == 14


@pytest.mark.parametrize(("thread_safe", "expected"), [(True, 4), (False, 1)])
def test_a_thread_safe_inpainter_runs_on_one_thread_per_core_and_another_on_one(tmp_path, detector, inpainter, monkeypatch, thread_safe, expected):
    """Inpainting is the slowest CPU stage: a fixed two threads would cap a GPU's throughput.

    The inpainter's own ``thread_safe`` decides, whatever its name."""
    import threading

    monkeypatch.setattr("clearmark.removal.pipeline.usable_cores", lambda: 4)
    seen: set[str] = set()

    class Recording:
        def inpaint(self, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
            seen.update(t.name for t in threading.enumerate() if t.name.startswith("removal-finish"))
            return inpainter.inpaint(rgb, mask)

    recording = Recording()
    recording.name, recording.thread_safe = "recording", thread_safe
    members = {f"img{i:02d}.png": encode(watermarked_rgb(64, 64, i), "PNG") for i in range(8)}
    source = _write_input(tmp_path, "zip", members)
    report = remove_watermarks(source, tmp_path / "out.zip", detector=detector, inpainter=recording, options=OPTIONS, progress=False).report
    assert [r.status for r in report.rows].count("cleaned") == 8
    assert len(seen) == expected


def test_in_native_mode_large_images_are_tiled_at_full_resolution(detector):
    options = DetectionOptions(threshold=0.5, dilate_px=0, detect_side=None, tile_above=150, tile_side=64, batch_size=4)
    images = [watermarked_rgb(300, 220, 1), watermarked_rgb(64, 64, 2), clean_rgb(64, 64, 3), watermarked_rgb(90, 120, 4)]
    detections = detect_images(detector, images, options)
    for rgb, detection in zip(images, detections, strict=True):
        assert detection.mask.shape == rgb.shape[:2]
        # Tiles and native resolution: the mask matches the mark exactly.
        assert ((detection.mask > 0) == _white(rgb)).mean() > 0.999
    assert not detections[2].found and detections[2].coverage == 0.0 and detections[2].confidence < 0.5


def test_with_a_working_size_every_image_is_downscaled_and_mixed_sizes_share_batches(detector, monkeypatch):
    import clearmark.model.inference as detection_module

    options = DetectionOptions(threshold=0.5, dilate_px=0, detect_side=64, tile_above=150, tile_side=64, batch_size=4)
    monkeypatch.setattr(detection_module, "detect_tiled", lambda *args: pytest.fail("a working size must not tile"))
    batches: list[tuple[int, ...]] = []
    predict = detection_module.predict
    monkeypatch.setattr(detection_module, "predict", lambda det, batch, opts: batches.append(batch.shape) or predict(det, batch, opts))
    images = [watermarked_rgb(300, 220, 1), watermarked_rgb(64, 64, 2), clean_rgb(64, 64, 3), watermarked_rgb(90, 120, 4)]
    detections = detect_images(detector, images, options)
    # 300x220 works at 64x32; 90x120 at 64x64, so it shares a batch with the 64x64 images.
    assert sorted(batches) == [(1, 64, 32, 3), (3, 64, 64, 3)]
    for rgb, detection in zip(images, detections, strict=True):
        assert detection.mask.shape == rgb.shape[:2]  # probabilities upsampled to the full image
        assert ((detection.mask > 0) == _white(rgb)).mean() > 0.97
    assert not detections[2].found


@pytest.mark.parametrize(("config_side", "setting", "expected"), [(384, None, 384), (None, None, None), (384, 256, 256), (384, 0, None)])
def test_the_working_size_comes_from_the_detector_unless_the_setting_overrides_it(
    tmp_path: Path, config_side: int | None, setting: int | None, expected: int | None
) -> None:
    from clearmark.model.detector import Detector, DetectorConfig, build_network
    from clearmark.settings import Settings

    config = DetectorConfig(encoder="mobilenet_v2", image_size=64, decoder_channels=[16, 16, 16, 16, 8], detect_side=config_side)
    detector = Detector(build_network(config), config, version="test", device="cpu")
    options = DetectionOptions.for_detector(detector, Settings(home=tmp_path, removal_detect_side=setting))
    assert options.detect_side == expected
    assert options.batch_size == 2  # on CPU: two images per call halve the per-call Python overhead


def test_working_shapes_and_tiles():
    assert working_shape(512, 512, 256) == (256, 256)
    assert working_shape(100, 1000, 512) == (64, 512)  # never below 32, multiples of 32
    assert working_shape(40, 40, 256) == (32, 32)  # small images are not enlarged beyond rounding
    assert working_shape(500, 700, None) == (512, 704)  # native resolution, rounded to multiples of 32
    covered = np.zeros((300, 220), bool)
    for top, left in tiles(300, 220, 64):
        covered[top : top + 64, left : left + 64] = True
    assert covered.all()


def test_remove_command_cleans_a_zip_with_a_saved_detector_folder(tmp_path, monkeypatch):
    from clearmark.cli import app

    monkeypatch.setenv("CLEARMARK_HOME", str(tmp_path / "home"))
    from clearmark.settings import get_settings

    get_settings.cache_clear()
    model = tiny_detector_folder(tmp_path / "detector", finds_everything=False)
    source = _write_input(tmp_path, "zip", _members())
    runner = CliRunner()
    result = runner.invoke(app, ["remove", str(source), str(tmp_path / "out.zip"), "--model", str(model), "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert "unchanged_no_watermark': 4" in result.output
    assert _read_output(tmp_path / "out.zip") == _members()  # nothing found: every member byte-identical
    bad = runner.invoke(app, ["remove", str(tmp_path / "out.zip.report.csv"), str(tmp_path / "x.zip"), "--model", str(model)])
    assert bad.exit_code == EXIT_FAILED and "not a zip, tar or tar.gz" in bad.output
    no_model = runner.invoke(app, ["remove", str(source), str(tmp_path / "y.zip"), "--model", str(tmp_path)])
    assert no_model.exit_code == EXIT_FAILED and "is not a detector folder" in no_model.output
    assert not (tmp_path / "y.zip").exists()
    get_settings.cache_clear()
