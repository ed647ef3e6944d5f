"""Photo styles: real-looking mark families whose saved matte and colour layer reproduce the image."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clearmark.data import photos
from clearmark.data.marks import (
    FAMILY_WEIGHTS,
    FONT_SOURCES,
    PHOTO_TRAIN_STYLES,
    MissingFontsError,
    draw_mark,
)
from clearmark.data.synth import SynthSummary, generate_synthetic

COUNT, SEED, SIZE = 24, 77, 160


def _load(root: Path, part: str, name: str) -> np.ndarray:
    return np.asarray(Image.open(root / part / name))


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.png"))}


@pytest.fixture(scope="module")
def photo_set(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    return generate_synthetic(tmp_path_factory.mktemp("photo"), COUNT, SEED, size=SIZE, styles="photo-train", progress=False)


def test_saved_alpha_and_colour_reproduce_the_watermarked_image(photo_set: SynthSummary) -> None:
    """J = alpha * W + (1 - alpha) * I holds on the saved files within one grey level; outside the mask J == I."""
    for item in photo_set.items:
        clean = _load(photo_set.out_dir, "clean", item.name).astype(np.float64)
        watermarked = _load(photo_set.out_dir, "watermarked", item.name).astype(np.float64)
        alpha_png = Image.open(photo_set.out_dir / "alpha" / item.name)
        assert alpha_png.mode.startswith("I"), f"{item.name}: alpha is not 16-bit ({alpha_png.mode})"
        alpha = np.asarray(alpha_png, np.float64)[..., None] / 65535
        colour = _load(photo_set.out_dir, "colour", item.name).astype(np.float64)
        assert np.abs(alpha * colour + (1 - alpha) * clean - watermarked).max() <= 1.0, item
        inside = _load(photo_set.out_dir, "masks", item.name) == 255
        assert np.array_equal(inside, alpha[..., 0] > 0)
        assert np.array_equal(watermarked[~inside], clean[~inside]), f"{item.name}: pixels outside the mask changed"
        assert item.coverage == pytest.approx(inside.mean()) and item.coverage > 0


def test_mattes_are_soft_and_opacities_span_faint_to_opaque(photo_set: SynthSummary) -> None:
    alphas = [np.asarray(Image.open(photo_set.out_dir / "alpha" / item.name)) for item in photo_set.items]
    assert any(((a > 0) & (a < 65535 // 2)).any() for a in alphas)  # soft or faint pixels exist
    opacities = [item.opacity for item in photo_set.items]
    assert min(opacities) >= 0.1 and max(opacities) <= 1.0 and max(opacities) - min(opacities) > 0.4


def test_every_family_draws_a_mark_of_its_own() -> None:
    seen: dict[str, int] = {}
    for seed in range(90):
        matte, info = draw_mark(np.random.default_rng(seed), 128, PHOTO_TRAIN_STYLES)
        assert matte.footprint.any() and matte.alpha.max() <= 1.0
        seen[info.family] = seen.get(info.family, 0) + 1
        assert info.fonts, info  # every family writes some text
    assert set(seen) == set(FAMILY_WEIGHTS)


def test_jpeg_recompression_changes_only_the_watermarked_image(photo_set: SynthSummary, tmp_path: Path) -> None:
    compressed = generate_synthetic(tmp_path, 6, SEED, size=SIZE, styles="photo-train", jpeg_quality=(70, 98), progress=False)
    assert all(70 <= (item.jpeg_quality or 0) <= 98 for item in compressed.items)
    plain, jpeg = _digests(photo_set.out_dir), _digests(tmp_path)
    for name, digest in jpeg.items():
        assert (digest == plain[name]) != name.startswith("watermarked/"), name
    for item in compressed.items:  # the re-compressed image is the plain one plus JPEG noise
        error = _load(tmp_path, "watermarked", item.name).astype(np.float64) - _load(photo_set.out_dir, "watermarked", item.name)
        assert 0 < np.sqrt((error**2).mean()) < 16, item


def test_same_arguments_give_the_same_bytes(photo_set: SynthSummary, tmp_path: Path) -> None:
    again = generate_synthetic(tmp_path, 5, SEED, size=SIZE, styles="photo-train", progress=False)
    first = _digests(photo_set.out_dir)
    assert _digests(tmp_path) == {name: first[name] for name in _digests(tmp_path)}
    assert again.items == photo_set.items[:5]


def test_every_declared_font_is_installed_and_writes_the_marks_characters() -> None:
    from fontTools.ttLib import TTFont

    needed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789©.:/|'")
    for source in FONT_SOURCES:
        files = source.files()
        assert files, f"{source.package} is not installed: run make install"
        for path in files:
            cmap = TTFont(path, fontNumber=0).getBestCmap()
            assert not {c for c in needed if ord(c) not in cmap}, path


def test_bad_options_and_missing_fonts_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="jpeg_quality must be"):
        generate_synthetic(tmp_path / "q", 1, SEED, size=SIZE, styles="photo-train", jpeg_quality=(40, 90), progress=False)
    with pytest.raises(ValueError, match="need a photo style"):
        generate_synthetic(tmp_path / "old", 1, SEED, size=SIZE, jpeg_quality=(80, 90), progress=False)
    monkeypatch.setattr(photos, "DEBIAN_ROOT", tmp_path / "bare")
    with pytest.raises(MissingFontsError, match="apt-get install fonts-cabin"):
        generate_synthetic(tmp_path / "out", 1, SEED, size=SIZE, styles="photo-heldout", progress=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / "q").exists() and not (tmp_path / "old").exists()
