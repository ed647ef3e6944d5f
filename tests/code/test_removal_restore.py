"""The restorer: exact unblending, opaque marks inpainted, nothing outside the footprint touched,
the matte estimate for mask-only detectors, and the registry's capabilities."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from clearmark.data.synth import generate_synthetic
from clearmark.model.detector import Detector, DetectorConfig, build_network
from clearmark.model.inference import Detection
from clearmark.removal.inpaint import (
    InpaintingRestorer,
    MaskOnly,
    Restorer,
    as_restorer,
    available_inpainters,
    get_inpainter,
)
from clearmark.removal.report import MemberRow, RemovalReport
from clearmark.removal.restore import RESTORER, UnblendRestorer, estimate_matte, unblend
from clearmark.settings import Settings
from tests.code.test_removal_inpaint import smooth_photo


def matte_detection(mask: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> Detection:
    """A matte detector's output for one image."""
    return Detection(mask, float((mask > 0).mean()), 1.0, alpha=alpha, colour=colour)


def textured_photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(smooth_photo(height, width).astype(int) + rng.integers(-30, 31, (height, width, 3)), 0, 255).astype(np.uint8)


def exact_blend(height: int = 60, width: int = 80) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(clean, watermarked, alpha, colour) where ``a*W + (1 - a)*I`` is an exact integer: no rounding noise.

    Opacities are multiples of 0.2 and grey levels multiples of 5, so every blend lands on an integer.
    """
    rng = np.random.default_rng(3)
    clean = (rng.integers(0, 52, (height, width, 3)) * 5).astype(np.uint8)
    colour = np.zeros((height, width, 3), np.float32)
    colour[:] = np.array([255, 200, 50], np.float32) / 255
    alpha = np.zeros((height, width), np.float32)
    alpha[10:50, 10:70] = rng.choice([0.2, 0.4, 0.6, 0.8], (40, 60))
    blended = alpha[..., None] * (colour * 255) + (1 - alpha[..., None]) * clean
    watermarked = np.rint(blended).astype(np.uint8)
    assert np.abs(blended - watermarked).max() < 1e-3  # the blend is exact
    return clean, watermarked, alpha, colour


def test_unblending_an_exact_matte_recovers_the_photo_within_one_grey_level() -> None:
    clean, watermarked, alpha, colour = exact_blend()

    restored, inpaint_mask = unblend(watermarked, alpha, colour, limit=0.88)

    assert not inpaint_mask.any()
    assert np.abs(watermarked.astype(int) - clean)[alpha > 0].mean() > 30  # the mark was there
    assert np.abs(restored.astype(int) - clean).max() <= 1


def test_opaque_and_unstable_pixels_are_left_for_inpainting() -> None:
    clean, watermarked, alpha, colour = exact_blend()
    alpha[20:30, 20:30] = 0.95  # opaque: above the limit
    wrong = colour.copy()
    wrong[40:45, 40:45] = 0.0  # a matte that is wrong there: the inversion leaves 0..255 (J is bright, W black)
    watermarked[40:45, 40:45] = 250
    alpha[40:45, 40:45] = 0.8

    restored, inpaint_mask = unblend(watermarked, alpha, wrong, limit=0.88)

    assert (inpaint_mask[20:30, 20:30] == 255).all() and (inpaint_mask[40:45, 40:45] == 255).all()
    assert inpaint_mask.sum() // 255 == 100 + 25
    np.testing.assert_array_equal(restored[inpaint_mask > 0], watermarked[inpaint_mask > 0])  # left for the inpainter


def _restorer(tmp_path: Path, **options: object) -> Restorer:
    return get_inpainter(RESTORER, Settings(home=tmp_path), **options)


def test_the_restorer_unblends_a_semi_transparent_mark_and_inpaints_an_opaque_one(tmp_path: Path) -> None:
    clean = smooth_photo(120, 160)
    alpha = np.zeros((120, 160), np.float32)
    alpha[20:50, 20:140] = 0.5  # a semi-transparent band
    alpha[70:100, 60:100] = 1.0  # an opaque block
    colour = np.ones((120, 160, 3), np.float32)
    watermarked = np.rint(alpha[..., None] * 255 + (1 - alpha[..., None]) * clean).astype(np.uint8)
    mask = ((alpha > 0) * 255).astype(np.uint8)

    restored, stats = _restorer(tmp_path).restore(watermarked, matte_detection(mask, alpha, colour))

    band, block = alpha == 0.5, alpha == 1.0
    assert stats.footprint == int((mask > 0).sum())
    assert stats.unblended == int(band.sum()) and stats.inpainted == int(block.sum())
    assert np.abs(restored.astype(int) - clean)[band].max() <= 3  # the photo under the band, not a fill
    assert np.abs(watermarked.astype(int) - clean)[block].mean() > 80
    assert np.abs(restored.astype(int) - clean)[block].mean() < 12  # the opaque block was filled from around it


@pytest.mark.parametrize("denoise", ["none", "bilateral", "nlm"])
def test_pixels_outside_the_footprint_stay_byte_identical(denoise: str, tmp_path: Path) -> None:
    photo = textured_photo(96, 128)
    alpha = np.zeros((96, 128), np.float32)
    alpha[30:60, 20:100] = np.linspace(0.1, 1.0, 80, dtype=np.float32)  # unblended, denoised and inpainted pixels
    colour = np.full((96, 128, 3), 0.9, np.float32)
    watermarked = np.rint(alpha[..., None] * 0.9 * 255 + (1 - alpha[..., None]) * photo).astype(np.uint8)
    mask = np.zeros((96, 128), np.uint8)
    mask[28:62, 18:102] = 255  # the footprint: a little wider than the mark
    alpha[:, 110:] = 0.5  # matte outside the footprint: ignored

    restored, _ = _restorer(tmp_path, denoise=denoise).restore(watermarked, matte_detection(mask, alpha, colour))

    outside = mask == 0
    np.testing.assert_array_equal(restored[outside], watermarked[outside])
    assert (restored[~outside] != watermarked[~outside]).any()


def test_the_matte_estimate_recovers_a_constant_colour_marks_opacity() -> None:
    clean = textured_photo(120, 200, seed=5)
    alpha = np.zeros((120, 200), np.float32)
    alpha[40:80, 30:170] = 0.45
    watermarked = np.rint(0.45 * np.array([240, 240, 240]) * (alpha[..., None] > 0) + (1 - alpha[..., None]) * clean).astype(np.uint8)

    estimated, colour = estimate_matte(watermarked, alpha > 0)

    inside = alpha > 0
    assert np.median(estimated[inside]) == pytest.approx(0.45, abs=0.06)
    assert np.abs(colour[inside].mean(axis=0) * 255 - 240).max() < 20


def test_a_mask_only_detection_is_inpainted_unless_the_matte_is_fitted(tmp_path: Path) -> None:
    clean = textured_photo(120, 200, seed=5)
    alpha = np.zeros((120, 200), np.float32)
    alpha[40:80, 30:170] = 0.45
    watermarked = np.rint(alpha[..., None] * 240 + (1 - alpha[..., None]) * clean).astype(np.uint8)
    mask = ((alpha > 0) * 255).astype(np.uint8)

    _, inpainted = _restorer(tmp_path).restore(watermarked, MaskOnly(mask))
    fitted_image, fitted = _restorer(tmp_path, fit_matte=True).restore(watermarked, MaskOnly(mask))

    assert (inpainted.unblended, inpainted.inpainted) == (0, inpainted.footprint)
    assert fitted.unblended > 0.9 * fitted.footprint
    inside = alpha > 0
    assert np.abs(fitted_image.astype(int) - clean)[inside].mean() < 0.5 * np.abs(watermarked.astype(int) - clean)[inside].mean()


def test_registry_capabilities_decide_how_the_pipeline_calls_each_inpainter(tmp_path: Path) -> None:
    """Every registered name gives a restorer; only those that read a matte say so (no name checks)."""
    settings = Settings(home=tmp_path, diffusers_model_dir=None)
    assert RESTORER in available_inpainters() and Settings.model_fields["inpainter"].default == RESTORER
    restorer = _restorer(tmp_path)
    assert isinstance(restorer, Restorer) and restorer.uses_matte and as_restorer(restorer) is restorer
    telea = as_restorer(get_inpainter("telea", settings))
    assert isinstance(telea, InpaintingRestorer) and not telea.uses_matte and telea.name == "telea"
    assert restorer.thread_safe == telea.thread_safe
    with pytest.raises(ValueError, match="plain inpainter"):
        UnblendRestorer(inner=restorer)
    with pytest.raises(ValueError, match="alpha limit"):
        _restorer(tmp_path, limit=1.5)


# --- the pipeline and its report ---------------------------------------------------------------


class OracleMatte(Detector):
    """A matte detector that knows each synthetic image's true matte (looked up by its pixels)."""

    def __init__(self, folder: Path) -> None:
        super().__init__(build_network(MATTE), MATTE, version="oracle", device="cpu")
        self.maps: dict[bytes, np.ndarray] = {}
        for path in sorted((folder / "watermarked").iterdir()):
            watermarked = np.asarray(Image.open(path))
            alpha = np.asarray(Image.open(folder / "alpha" / path.name)).astype(np.float32) / 65535
            colour = np.asarray(Image.open(folder / "colour" / path.name)).astype(np.float32) / 255
            self.maps[watermarked.tobytes()] = np.dstack([(alpha > 0).astype(np.float32), alpha, colour])

    def predict_maps(self, batch: np.ndarray, **_: object) -> np.ndarray:
        return np.stack([self.maps[image.tobytes()] for image in batch])


MATTE = DetectorConfig(architecture="Unet", encoder="mobilenet_v2", image_size=64, decoder_channels=[16, 16, 16, 16, 8], outputs="matte")


@pytest.fixture(scope="module")
def photo_marks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Photo-style pairs with their true matte (semi-transparent marks, mostly)."""
    folder = tmp_path_factory.mktemp("photo-marks")
    generate_synthetic(folder, 6, 21, size=128, styles="photo-train", progress=False)
    return folder


def test_clearmark_remove_on_photo_marks_reports_unblended_images(photo_marks: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from clearmark.cli import app
    from clearmark.model.metrics import psnr
    from clearmark.settings import get_settings

    source = tmp_path / "photos.zip"
    with zipfile.ZipFile(source, "w") as archive:
        for path in sorted((photo_marks / "watermarked").iterdir()):
            archive.write(path, path.name)
    monkeypatch.setenv("CLEARMARK_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CLEARMARK_REMOVAL_DILATE_PX", "0")  # the oracle's footprint is exact
    get_settings.cache_clear()
    oracle = OracleMatte(photo_marks)
    monkeypatch.setattr("clearmark.removal.runner.get_detector", lambda settings, model=None, backend=None: oracle)

    result = CliRunner().invoke(app, ["remove", str(source), str(tmp_path / "out.zip")])
    get_settings.cache_clear()

    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out.zip.report.json").read_text())
    assert report["inpainter"] == RESTORER
    restorations = [row["restoration"] for row in report["rows"]]
    assert report["restorations"] == {name: restorations.count(name) for name in ("shared", "unblended", "inpainted", "unchanged", "error")}
    assert report["restorations"]["unblended"] >= 4, report["restorations"]
    for row in report["rows"]:
        assert row["unblended_share"] + row["inpainted_share"] <= 1.0
        assert row["restoration"] == ("unblended" if row["unblended_share"] > row["inpainted_share"] else "inpainted")
    with open(tmp_path / "out.zip.report.csv", newline="") as handle:
        header = next(csv.reader(handle))
    assert {"unblended_share", "inpainted_share", "restoration", "path", "mask_coverage", "confidence"} <= set(header)
    with zipfile.ZipFile(tmp_path / "out.zip") as archive:
        for name in archive.namelist():
            cleaned = np.asarray(Image.open(io.BytesIO(archive.read(name))))
            clean = np.asarray(Image.open(photo_marks / "clean" / name))
            watermarked = np.asarray(Image.open(photo_marks / "watermarked" / name))
            mark = np.asarray(Image.open(photo_marks / "masks" / name)) > 0
            assert psnr(clean, cleaned, mark) > psnr(clean, watermarked, mark) + 5  # the photo came back


def test_report_rows_say_how_each_image_was_restored() -> None:
    rows = [
        MemberRow(path="a.jpg", status="cleaned", unblended_share=0.7, inpainted_share=0.1),
        MemberRow(path="b.jpg", status="cleaned", unblended_share=0.0, inpainted_share=1.0),
        MemberRow(path="c.jpg", status="unchanged_no_watermark"),
        MemberRow(path="d.jpg", status="error", error="cannot decode"),
        MemberRow(path="notes.txt", status="copied_non_image"),
    ]
    report = RemovalReport(input="in", output="out", kind="zip", model_version="1", inpainter=RESTORER, threshold=0.5, started_at="", rows=rows)
    assert [r.restoration for r in rows] == ["unblended", "inpainted", "unchanged", "error", ""]
    assert report.summary()["restorations"] == {"shared": 0, "unblended": 1, "inpainted": 1, "unchanged": 1, "error": 1}
    assert json.loads(report.to_json())["rows"][0]["restoration"] == "unblended"
