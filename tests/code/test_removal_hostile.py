"""Hostile and broken archives end failed or partially successful, with clear reasons, writing nothing outside the work folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from clearmark.model.inference import DetectionOptions
from clearmark.removal.archive import ArchiveError, Limits
from clearmark.removal.pipeline import remove_watermarks, sidecar
from tests.support.hostile_archives import Case, build_corpus, watermarked_jpeg

OPTIONS = DetectionOptions(threshold=0.5, dilate_px=1, detect_side=64, batch_size=4)


def _tree(root: Path) -> set[str]:
    """Every path under ``root`` (links not followed)."""
    found = set()
    for folder, dirs, files in os.walk(root):
        found.update(os.path.join(folder, name) for name in dirs + files)
    return found


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Case]]:
    base = tmp_path_factory.mktemp("hostile")
    outside = base / "outside"
    outside.mkdir()
    return base, build_corpus(base / "work" / "in", outside)


def _case(corpus: tuple[Path, list[Case]], name: str) -> tuple[Path, Case]:
    base, cases = corpus
    return base, next(c for c in cases if c.name == name)


CASE_NAMES = [
    "zip-slip", "tar-slip", "absolute-path", "symlink", "hard-link", "device", "zip-bomb", "truncated-zip",
    "truncated-tgz", "encrypted-zip", "empty-zip", "empty-tar", "not-an-archive", "huge-dimension", "corrupt-jpeg",
    "garbage-jpeg",
]  # fmt: skip


@pytest.mark.parametrize("name", CASE_NAMES)
@pytest.mark.parametrize("output_suffix", ["", ".zip"])
def test_hostile_archive_fails_or_partially_succeeds_inside_the_work_folder(corpus, name, output_suffix, detector, inpainter):
    base, case = _case(corpus, name)
    work = base / "work"
    output = work / "out" / f"{case.name}{output_suffix}"
    before = _tree(base) - _tree(work)

    if case.outcome == "failed":
        with pytest.raises(ArchiveError, match=case.reason):
            remove_watermarks(case.path, output, detector=detector, inpainter=inpainter, options=OPTIONS, progress=False)
        # A failed run leaves no output and no half-written partial output behind.
        assert not output.exists()
        assert not output.with_name(output.name + ".partial").exists()
    else:
        result = remove_watermarks(case.path, output, detector=detector, inpainter=inpainter, options=OPTIONS, progress=False)
        rows = {r.path: r for r in result.report.rows}
        assert result.report.status == "partial"
        errors = [r for r in rows.values() if r.status == "error"]
        assert errors and all(case.reason in r.error for r in errors), [r.error for r in errors]
        assert rows["ok.jpg"].status == "cleaned"
        assert json.loads(sidecar(output, ".report.json").read_bytes())["status"] == "partial"

    assert _tree(base) - _tree(work) == before, "something was written outside the work folder"
    for path in case.escape:
        assert not os.path.lexists(path)
    # Extracted links never become links on disk.
    assert not any(os.path.islink(p) for p in _tree(work))


def test_corrupt_member_keeps_its_original_bytes_in_the_output(corpus, detector, inpainter):
    """Nothing is lost: a member that cannot be decoded is copied through unchanged."""
    import zipfile

    base, case = _case(corpus, "corrupt-jpeg")
    output = base / "work" / "out" / "kept.zip"
    remove_watermarks(case.path, output, detector=detector, inpainter=inpainter, options=OPTIONS, progress=False)
    with zipfile.ZipFile(case.path) as original, zipfile.ZipFile(output) as cleaned:
        assert cleaned.read("broken.jpg") == original.read("broken.jpg")
        assert sorted(cleaned.namelist()) == sorted(original.namelist())


def test_member_and_size_caps_stop_an_archive_before_extraction(tmp_path, detector, inpainter):
    import zipfile

    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(6):
            zf.writestr(f"{i}.jpg", watermarked_jpeg(seed=i))
    with pytest.raises(ArchiveError, match="more than 5 members"):
        remove_watermarks(archive, tmp_path / "a", detector=detector, inpainter=inpainter, options=OPTIONS,
                          limits=Limits(max_members=5), progress=False)  # fmt: skip
    with pytest.raises(ArchiveError, match="expands to more than 1000 bytes"):
        remove_watermarks(archive, tmp_path / "b", detector=detector, inpainter=inpainter, options=OPTIONS,
                          limits=Limits(max_total_bytes=1000), progress=False)  # fmt: skip
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_symlinks_in_an_input_folder_are_not_followed(tmp_path, detector, inpainter):
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(watermarked_jpeg(seed=3))
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "ok.jpg").write_bytes(watermarked_jpeg())
    (folder / "link.jpg").symlink_to(secret)
    result = remove_watermarks(folder, tmp_path / "out", detector=detector, inpainter=inpainter, options=OPTIONS, progress=False)
    rows = {r.path: r for r in result.report.rows}
    assert rows["link.jpg"].status == "error" and "symbolic link" in rows["link.jpg"].error
    assert not (tmp_path / "out" / "link.jpg").exists()
    assert (tmp_path / "out" / "ok.jpg").is_file()


def test_image_file_too_large_for_the_pixel_cap_is_not_read_into_memory_but_copied(tmp_path, detector, inpainter):
    folder = tmp_path / "in"
    folder.mkdir()
    data = watermarked_jpeg(64, 64)
    (folder / "big.jpg").write_bytes(data)
    result = remove_watermarks(folder, tmp_path / "out", detector=detector, inpainter=inpainter, options=OPTIONS,
                               limits=Limits(max_image_pixels=len(data) // 16), progress=False)  # fmt: skip
    row = result.report.rows[0]
    assert row.status == "error" and "above the pixel limit" in row.error and row.copied
    assert (tmp_path / "out" / "big.jpg").read_bytes() == data
