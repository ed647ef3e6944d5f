"""The review page of a cleaned archive: what it lists, in which order, and what it pictures."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clearmark.data.feedback import Flag, FlagError, current_flags, field_quality
from clearmark.model.inference import DetectionOptions
from clearmark.removal.pipeline import remove_watermarks, sidecar
from clearmark.removal.review import ReviewOptions, StoredArchive, build_review, doubt, member_spans, review_rows, thumbnail_strip
from tests.support.hostile_archives import clean_rgb, encode, watermarked_rgb

OPTIONS = DetectionOptions(threshold=0.5, dilate_px=3, batch_size=3)


@pytest.fixture(scope="module")
def cleaned(tmp_path_factory: pytest.TempPathFactory, detector, inpainter) -> tuple[Path, Path, Path, dict]:  # noqa: ANN001
    root = tmp_path_factory.mktemp("review")
    source = root / "photos.zip"
    with zipfile.ZipFile(source, "w") as archive:
        for index in range(6):
            archive.writestr(f"trip/marked{index}.jpg", encode(watermarked_rgb(64, 96, index), "JPEG", quality=92))
        archive.writestr("trip/clean.png", encode(clean_rgb(64, 64, 9), "PNG"))
        archive.writestr("trip/broken.jpg", b"not a jpeg")
        archive.writestr("notes.txt", b"text\n")
    outputs = remove_watermarks(source, root / "out.zip", detector=detector, inpainter=inpainter, options=OPTIONS, save_masks=True, progress=False)
    return source, outputs.output, sidecar(outputs.output, ".masks.zip"), json.loads(outputs.report_json.read_bytes())


def test_rows_list_every_image_most_doubtful_first(cleaned) -> None:  # noqa: ANN001
    *_, report = cleaned
    rows = review_rows(report)
    assert sorted(r["member"] for r in rows) == sorted(r["path"] for r in report["rows"] if r["path"] != "notes.txt")
    assert rows[0]["member"] == "trip/broken.jpg" and rows[0]["cleaned_by"] == "error"
    assert [r["doubt"] for r in rows] == sorted((r["doubt"] for r in rows), reverse=True)
    assert {r["cleaned_by"] for r in rows} == {"error", "inpainted", "unchanged"}
    assert [r["n"] for r in rows] == list(range(len(rows)))


def test_doubt_rises_as_confidence_nears_the_threshold_and_with_coverage() -> None:
    sure = doubt({"status": "cleaned", "confidence": 0.98, "mask_coverage": 0.02}, 0.5)
    unsure = doubt({"status": "cleaned", "confidence": 0.55, "mask_coverage": 0.02}, 0.5)
    huge = doubt({"status": "cleaned", "confidence": 0.98, "mask_coverage": 0.8}, 0.5)
    near_miss = doubt({"status": "unchanged_no_watermark", "confidence": 0.45}, 0.5)
    clear_miss = doubt({"status": "unchanged_no_watermark", "confidence": 0.05}, 0.5)
    assert sure < unsure and sure < huge and clear_miss < near_miss < doubt({"status": "error"}, 0.5)


def test_rows_and_summary_take_the_restoration_the_report_recorded(tmp_path: Path) -> None:
    report = {"threshold": 0.5, "rows": [
        {"path": "a.jpg", "status": "cleaned", "restoration": "shared", "unblended_share": 0.0, "inpainted_share": 1.0},
        {"path": "b.jpg", "status": "cleaned", "restoration": "unblended"},
        {"path": "c.jpg", "status": "unchanged_no_watermark", "restoration": "unchanged"},
        {"path": "d.txt", "status": "copied_non_image", "restoration": ""},
    ]}  # fmt: skip
    rows = review_rows(report)
    assert {r["member"]: r["cleaned_by"] for r in rows} == {"a.jpg": "shared", "b.jpg": "unblended", "c.jpg": "unchanged"}
    summary = build_review(tmp_path / "in.zip", tmp_path / "out.zip", report, tmp_path / "r", archive="in.zip", options=ReviewOptions(max_images=0))
    assert summary["cleaned_by"] == {"shared": 1, "unblended": 1, "inpainted": 0, "unchanged": 1, "error": 0}
    assert summary["share_cleaned"] == round(2 / 3, 4)


def test_review_folder_pictures_the_most_doubtful_images_and_lists_all(cleaned, tmp_path: Path) -> None:  # noqa: ANN001
    source, output, masks, report = cleaned
    options = ReviewOptions(page_size=3, max_images=4, thumb_side=48)
    summary = build_review(source, output, report, tmp_path / "out.review", masks=masks, archive="photos.zip", options=options)
    folder = tmp_path / "out.review"
    stored = json.loads((folder / "review.json").read_text())
    rows = stored["rows"]
    assert summary["images"] == len(rows) == 8 and stored["summary"] == summary
    pictured = [r for r in rows if "thumb" in r]
    # The four most doubtful are tried, none other; the undecodable one (copied unchanged) says why it has no picture.
    assert [r["member"] for r in pictured] == [r["member"] for r in rows[1:4]] and summary["pictured"] == 3
    assert rows[0]["member"] == "trip/broken.jpg" and "UnidentifiedImageError" in rows[0]["picture_error"]
    # One sprite per gallery page of the pictured rows (3 per page: rows 0-2, then row 3).
    assert sorted(p.name for p in (folder / "thumbs").iterdir()) == ["000000.jpg", "000001.jpg"]
    assert [r["thumb"] for r in pictured] == ["thumbs/000000.jpg", "thumbs/000000.jpg", "thumbs/000001.jpg"]
    assert not stored["served_from"]  # a local review copies its full-size images
    with zipfile.ZipFile(source) as before, zipfile.ZipFile(output) as after, zipfile.ZipFile(masks) as mask_zip:
        for row in pictured:
            assert (folder / row["before"]).read_bytes() == before.read(row["member"])  # full size, untouched
            assert (folder / row["after"]).read_bytes() == after.read(row["member"])
            sprite = Image.open(folder / row["thumb"])
            x, y, width, height, sprite_width, sprite_height = row["thumb_box"]
            assert sprite.format == "JPEG" and sprite.size == (sprite_width, sprite_height) and height <= 48
            assert (folder / row["thumb"]).stat().st_size < 60_000 * 3
            # Its cell of the sprite is the row's own strip (JPEG's loss aside), not another row's.
            cell = np.asarray(sprite.crop((x, y, x + width, y + height)), dtype=int)
            strips = {
                other["member"]: thumbnail_strip(before.read(other["member"]), after.read(other["member"]), mask_zip.read(other["member"] + ".mask.png"), 48)
                for other in pictured
            }  # fmt: skip
            assert strips[row["member"]].shape == (height, width, 3)
            errors = {member: np.abs(cell - strip.astype(int)).mean() for member, strip in strips.items() if strip.shape == (height, width, 3)}
            own, *others = sorted(errors, key=errors.get)
            # JPEG at q82 loses much of these 48 px strips of noisy test photos: the own cell is told by a clear margin.
            assert own == row["member"] and all(errors[own] < 0.8 * errors[other] for other in others), errors
    page = (folder / "index.html").read_text()
    assert "<script src" not in page and "http" not in re.sub(r'"(before|after|thumb)": "[^"]*"', "", page)  # no CDN, nothing remote
    embedded = json.loads(re.search(r'<script id="review-data" type="application/json">(.*?)</script>', page, re.S).group(1))
    assert embedded["rows"] == rows


def test_a_rebuild_replaces_the_folder_and_keeps_nothing_stale(cleaned, tmp_path: Path) -> None:  # noqa: ANN001
    source, output, masks, report = cleaned
    folder = tmp_path / "r"
    build_review(source, output, report, folder, masks=masks, archive="a.zip", options=ReviewOptions(max_images=8, page_size=2))
    assert len(list((folder / "thumbs").iterdir())) == 4
    build_review(source, output, report, folder, masks=masks, archive="a.zip", options=ReviewOptions(max_images=2, page_size=2))
    assert len(list((folder / "thumbs").iterdir())) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def _member_bytes(local: Path, span: dict) -> bytes:
    import zlib

    with open(local, "rb") as raw:
        raw.seek(span["offset"])
        data = raw.read(span["size"])
    return zlib.decompress(data, -zlib.MAX_WBITS) if span["deflated"] else data


def test_member_spans_locate_each_image_inside_a_zip_tar_or_folder_and_not_a_tar_gz(tmp_path: Path) -> None:
    import tarfile

    images = {f"a/{index}.jpg": encode(watermarked_rgb(32, 48, index), "JPEG") for index in range(3)}
    stored_zip, deflated_zip = tmp_path / "stored.zip", tmp_path / "deflated.zip"
    for path, method in ((stored_zip, zipfile.ZIP_STORED), (deflated_zip, zipfile.ZIP_DEFLATED)):
        with zipfile.ZipFile(path, "w", method) as archive:
            archive.writestr("notes.txt", b"x" * 1000)
            for name, data in images.items():
                archive.writestr(zipfile.ZipInfo(name), data, compress_type=method)  # local extra fields differ per writer
    (tmp_path / "folder" / "a").mkdir(parents=True)
    for suffix, mode in ((".tar", "w"), (".tar.gz", "w:gz")):
        with tarfile.open(tmp_path / f"photos{suffix}", mode) as archive:
            for name, data in images.items():
                (tmp_path / "folder" / name).write_bytes(data)
                archive.add(tmp_path / "folder" / name, name)
    wanted = {"a/0.jpg", "a/2.jpg"}
    for local in (stored_zip, deflated_zip, tmp_path / "photos.tar"):
        spans = member_spans(local, StoredArchive("outbox", "k.zip"), wanted)
        assert set(spans) == wanted and all(span["bucket"] == "outbox" and span["key"] == "k.zip" for span in spans.values())
        assert {name: _member_bytes(local, span) for name, span in spans.items()} == {name: images[name] for name in wanted}
        assert all(span["deflated"] is (local == deflated_zip) for span in spans.values())
    folder = member_spans(tmp_path / "folder", StoredArchive("inbox", "processed/photos/"), wanted)
    assert folder["a/2.jpg"] == {"bucket": "inbox", "key": "processed/photos/a/2.jpg", "offset": 0, "size": len(images["a/2.jpg"]), "deflated": False}
    assert member_spans(tmp_path / "photos.tar.gz", StoredArchive("inbox", "p.tar.gz"), wanted) == {}  # reads only forward: copied


def test_a_review_of_stored_archives_serves_full_size_images_from_them_instead_of_copying(cleaned, tmp_path: Path) -> None:  # noqa: ANN001
    source, output, masks, report = cleaned
    stored = (StoredArchive("inbox", "processed/photos.zip"), StoredArchive("outbox", "photos.zip"))
    emitted: list[str] = []
    build_review(source, output, report, tmp_path / "r", masks=masks, archive="photos.zip", stored=stored, emit=lambda name, _: emitted.append(name))
    review = json.loads((tmp_path / "r" / "review.json").read_text())
    pictured = [r for r in review["rows"] if "thumb" in r]
    assert pictured and not list((tmp_path / "r" / "full").iterdir()) and not [n for n in emitted if n.startswith("full/")]
    assert emitted == ["thumbs/000000.jpg"]  # one object for the page's thumbnails
    for row in pictured:
        for side, local in (("before", source), ("after", output)):
            span = review["served_from"][row[side]]
            assert span["bucket"] == stored[side == "after"].bucket and _member_bytes(local, span) == zipfile.ZipFile(local).read(row["member"])


def test_the_overlay_panel_is_red_where_the_mask_is_and_the_strip_is_upright() -> None:
    rgb = np.full((40, 80, 3), 128, np.uint8)
    mask = np.zeros((40, 80), np.uint8)
    mask[:, :40] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown portrait
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", exif=exif, quality=95)
    strip = thumbnail_strip(buffer.getvalue(), buffer.getvalue(), encode(np.dstack([mask] * 3), "PNG"), 80)
    width = (strip.shape[1] - 8) // 3
    assert strip.shape[0] == 80 and width == 40  # upright: portrait panels
    overlay = strip[:, width + 4 : 2 * width + 4].astype(int)
    # Orientation 6 turns the stored left half into the upper half.
    assert overlay[10, 20, 0] - overlay[10, 20, 2] > 80 and abs(overlay[70, 20, 0] - overlay[70, 20, 2]) < 10


def test_the_latest_flag_of_an_image_counts_and_the_rate_is_the_share_of_problems() -> None:
    sha = "a" * 64
    events = [
        Flag(sha, "3", "x.jpg", "good", "ann", at="2026-01-01T10:00:00"),
        Flag(sha, "3", "x.jpg", "watermark_left", "bob", at="2026-01-01T11:00:00"),
        Flag(sha, "3", "y.jpg", "good", "ann", at="2026-01-01T10:00:00"),
        Flag(sha, "4", "x.jpg", "image_damaged", "ann", at="2026-01-02T10:00:00"),
    ]
    quality = field_quality(list(current_flags(events).values()))
    assert quality["3"] == {"field_flagged_images": 2, "field_flags_watermark_left": 1, "field_flags_image_damaged": 0,
                            "field_flags_good": 1, "field_flag_rate": 0.5}  # fmt: skip
    assert quality["4"]["field_flag_rate"] == 1.0
    with pytest.raises(FlagError, match="not one of"):
        Flag(sha, "3", "x.jpg", "meh", "ann").check()


def test_remove_review_writes_a_page_next_to_the_output_that_opens_as_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from clearmark.cli import app
    from clearmark.settings import get_settings
    from tests.support.hostile_archives import tiny_detector_folder

    monkeypatch.setenv("CLEARMARK_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    model = tiny_detector_folder(tmp_path / "detector", finds_everything=True)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(encode(watermarked_rgb(64, 64, 1), "JPEG"))
    args = ["remove", str(tmp_path / "in"), str(tmp_path / "out.zip"), "--model", str(model), "--review"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    page = tmp_path / "out.zip.review" / "index.html"
    assert f"review: {page}" in done.output and (tmp_path / "out.zip.masks.zip").is_file()
    row = json.loads((tmp_path / "out.zip.review" / "review.json").read_text())["rows"][0]
    assert row["member"] == "a.jpg" and (page.parent / row["thumb"]).is_file() and not Path(row["thumb"]).is_absolute()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 1 and "out.zip.review already holds files" in again.output
    get_settings.cache_clear()
