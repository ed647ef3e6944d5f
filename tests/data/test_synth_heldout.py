"""Held-out synthetic styles: nothing of the training styles, exact masks, reproducible; train mode unchanged."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from clearmark.data import synth
from clearmark.data.synth import (
    HELDOUT_STYLES,
    PILLOW_FONT,
    TRAIN_STYLES,
    SynthSummary,
    generate_synthetic,
)

COUNT, SEED, SIZE = 40, 31, 64

# SHA-256 of `generate_synthetic(out, 8, 2024, size=96)` (the default, train styles), computed
# before the held-out mode existed.  They pin the reproducibility of the embedded dataset and
# of the bundled baseline detector's training data: if they change, so do those.  (A new
# Pillow, numpy, scikit-image or matplotlib in constraints.txt may change them too; then the
# embedded dataset must be regenerated and the baseline re-checked.)
TRAIN_DIGESTS = {
    "clean/synth_00000.png": "bc7f09a00ee9db4ff1cd171802dd6a5fedc2cbe2cfe3bd4f9f03f0914a98494e",
    "clean/synth_00001.png": "d90d8424b48f3983d7720d09bf0c86a5afb706842e41a0de802e14e0ad07d4b7",
    "clean/synth_00002.png": "04bf884ae4ce8d63acd126cdc4982d8db0659113327fb0224208d85c141fc074",
    "clean/synth_00003.png": "916fdb22e505229e5cc9c87b61bdcba9cbcac2174561b622878f3deeb935805a",
    "clean/synth_00004.png": "0fe104a4f65890554012d7ba34bc85665956f799dfcd4d6b29e9bca68f08a4d5",
    "clean/synth_00005.png": "5beae4f115c8c74e3b1abd55cdab2cf49307d4a13e6ab722aaa3c8a19328c583",
    "clean/synth_00006.png": "80385ed9d6167372e29d103824be497ae33ebcc6e92bd99da4e49f7791d16a42",
    "clean/synth_00007.png": "2ac3ac6d602b1aba127ff8399f880e860f29d4bab3f23caa6ca8b1dfea64cece",
    "masks/synth_00000.png": "e12e6b24cd8a9f5b5c04b75d40d94b14161c11c9b2bb8688a8f1ffe29279045c",
    "masks/synth_00001.png": "08a8a55e4d47843a75a858d5955490368695d0d279dbc6057afbe01e53647071",
    "masks/synth_00002.png": "dfa1963163f8316d1ccf30248b8f688eb8f2851a5e51268aa925729448332a8f",
    "masks/synth_00003.png": "9b4d099b6a02b2feabfae6fd09c20f7c201043f7d6bc44c0ea36d88f86a5b277",
    "masks/synth_00004.png": "3968507083b6a205e512e9b87909e13eb990ac351c854e2f2889667fa7b03615",
    "masks/synth_00005.png": "065a3b713b67618a9465a9b95abd10dd53971f915acea6250d75a8e05535621c",
    "masks/synth_00006.png": "6f08a4beb30dbdf805f714cb1cbd5085c4eafffe0f3e56d63cfcb9ae200ff5a8",
    "masks/synth_00007.png": "14ec9841576a077d13a34177037a67164a025bbd37bca4f43f7dcec4c34af137",
    "watermarked/synth_00000.png": "e4efe5f230e0a9d5db7e0be77cf7b45f1900d747e8439805a829623e0b4e7fad",
    "watermarked/synth_00001.png": "b3909e2d5bd6ec15cb1ea0c1a8feec626b6d10eed380f658bf78a81d8f256cc0",
    "watermarked/synth_00002.png": "3dab1da0604ab4a1f212b6bad12ecbac92ae1ad3142f4e2d2afe76ef13a746da",
    "watermarked/synth_00003.png": "5fc3eeb9a5ff73616eca3d312187b350e767734884ffd596e4b7aff2424d8934",
    "watermarked/synth_00004.png": "d582c6bfd3fdb91093d84acc2cf8a8577766beeb30c15a8788f9d144cb31e302",
    "watermarked/synth_00005.png": "60df40f0407b384b791c23c93a3305399ad91ed31df74e4f230d8306443db7fb",
    "watermarked/synth_00006.png": "bfe538bfa9d5365a81fef4e2a2c5b236dcb00197f1bee138a84aeb0a52264e84",
    "watermarked/synth_00007.png": "7672fed87e12bb120c60d7100000782d6bf2fa9b0349343868ba2407e6d1e01a",
}
TEXT_KINDS = {"text", "corner_text", "tiled_text", "logo_text"}
LOGO_KINDS = {"logo", "tiled_logo", "logo_text"}


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.png"))}


def _font_names(styles: synth.StyleSet) -> set[str]:
    return {PILLOW_FONT if font is None else font for font in styles.fonts}


def _in_training_range(opacity: float) -> bool:
    return any(low <= opacity <= high for low, high in TRAIN_STYLES.opacity_ranges)


@pytest.fixture(scope="module")
def heldout(tmp_path_factory: pytest.TempPathFactory) -> SynthSummary:
    return generate_synthetic(tmp_path_factory.mktemp("heldout"), COUNT, SEED, size=SIZE, styles="heldout", progress=False)


def test_the_default_train_mode_writes_the_pinned_bytes(tmp_path: Path) -> None:
    summary = generate_synthetic(tmp_path, 8, 2024, size=96, progress=False)
    assert summary.styles == "train"
    assert _digests(tmp_path) == TRAIN_DIGESTS


def test_train_items_record_train_styles(tmp_path: Path) -> None:
    """The metadata the held-out checks rely on is real: train images record train styles."""
    items = generate_synthetic(tmp_path, 24, SEED, size=SIZE, progress=False).items
    assert set().union(*(item.fonts for item in items)) <= _font_names(TRAIN_STYLES)
    assert set().union(*(item.logos for item in items)) <= set(TRAIN_STYLES.logo_shapes)
    assert all(_in_training_range(item.opacity) for item in items)


def test_heldout_uses_no_training_font_logo_or_opacity(heldout: SynthSummary) -> None:
    assert heldout.styles == "heldout"
    for item in heldout.items:
        assert bool(item.fonts) == (item.watermark in TEXT_KINDS), item
        assert bool(item.logos) == (item.watermark in LOGO_KINDS), item
        assert set(item.fonts) <= _font_names(HELDOUT_STYLES) and not set(item.fonts) & _font_names(TRAIN_STYLES), item
        assert set(item.logos) <= set(HELDOUT_STYLES.logo_shapes) and not set(item.logos) & set(TRAIN_STYLES.logo_shapes), item
        assert any(low <= item.opacity <= high for low, high in HELDOUT_STYLES.opacity_ranges) and not _in_training_range(item.opacity), (
            item
        )


def test_heldout_varies_its_fonts_logos_and_opacity_ranges(heldout: SynthSummary) -> None:
    assert len(set().union(*(item.logos for item in heldout.items))) >= 3
    assert len(set().union(*(item.fonts for item in heldout.items))) >= 5
    opacities = [item.opacity for item in heldout.items]
    ((train_low, train_high),) = TRAIN_STYLES.opacity_ranges
    assert min(opacities) < train_low and max(opacities) > train_high  # faint and strong ones


def test_every_heldout_logo_draws_its_own_shape() -> None:
    masks = {}
    for shape in HELDOUT_STYLES.logo_shapes:
        pen = synth._Pen(synth.StyleSet("one", (None,), (shape,), ((0.5, 0.5),)))
        alpha = synth._logo_layer(np.random.default_rng(0), pen, 48, 0.0)
        assert pen.logos == [shape] and alpha.shape == (48, 48)
        masks[shape] = alpha >= 0.5
        assert 0.1 < float(masks[shape].mean()) < 0.9, f"{shape}: does not fill part of its box"
    for shape, mask in masks.items():
        others = [other for other in masks if other != shape]
        assert all((mask != masks[other]).mean() > 0.1 for other in others), f"{shape} looks like another shape"


def test_heldout_masks_are_exact_and_marks_visible(heldout: SynthSummary) -> None:
    for item in heldout.items:
        clean, watermarked, mask = (
            np.asarray(Image.open(heldout.out_dir / part / item.name)) for part in ("clean", "watermarked", "masks")
        )
        assert set(np.unique(mask)) <= {0, 255}
        inside = mask == 255
        diff = np.abs(clean.astype(np.int16) - watermarked.astype(np.int16)).max(axis=2)
        assert not diff[~inside].any(), f"{item.name}: pixels outside the mask changed"
        assert (diff[inside] > 0).mean() > 0.9, f"{item.name}: most masked pixels should differ"
        assert item.coverage == pytest.approx(inside.mean())


def test_heldout_is_reproducible_and_differs_from_train(heldout: SynthSummary, tmp_path: Path) -> None:
    again = generate_synthetic(tmp_path / "again", 6, SEED, size=SIZE, styles="heldout", progress=False)
    assert again.items == heldout.items[:6]
    first = _digests(heldout.out_dir)
    assert _digests(again.out_dir) == {name: first[name] for name in _digests(again.out_dir)}
    train = _digests(generate_synthetic(tmp_path / "train", 6, SEED, size=SIZE, progress=False).out_dir)
    watermarked = [name for name in train if name.startswith("watermarked/")]
    assert all(train[name] != first[name] for name in watermarked)


def test_unknown_styles_and_missing_fonts_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="train, heldout"):
        generate_synthetic(tmp_path / "odd", 1, SEED, size=SIZE, styles="fancy", progress=False)  # type: ignore[arg-type]
    synth._font_files.cache_clear()
    monkeypatch.setattr(synth, "_matplotlib_font_folder", lambda: tmp_path / "no-fonts")
    try:
        with pytest.raises(ValueError, match="pip install matplotlib"):
            generate_synthetic(tmp_path / "out", 1, SEED, size=SIZE, styles="heldout", progress=False)
    finally:
        synth._font_files.cache_clear()
    assert not (tmp_path / "out").exists() and not (tmp_path / "odd").exists()


def test_cli_synth_takes_styles_and_reports_them(tmp_path: Path) -> None:
    from clearmark.cli import app

    result = CliRunner().invoke(app, ["synth", "--out", str(tmp_path), "--count", "2", "--size", "64", "--styles", "heldout"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["styles"] == "heldout" and summary["style_set"] == HELDOUT_STYLES.describe()
    assert sorted(p.name for p in (tmp_path / "watermarked").iterdir()) == ["synth_00000.png", "synth_00001.png"]
    refused = CliRunner().invoke(app, ["synth", "--out", str(tmp_path), "--styles", "fancy"])
    assert refused.exit_code != 0


# --- photo styles: the bench's held-out set shares no photo source, font or logo shape with training ---


def _debian_packages(role: str) -> set[str]:
    from clearmark.data.marks import FONT_SOURCES
    from clearmark.data.photos import PHOTO_SOURCES

    photo = {source.package for source in PHOTO_SOURCES if source.role == role and source.installer == "debian"}
    return photo | {source.package for source in FONT_SOURCES if source.role == role}


def test_photo_sources_fonts_and_shapes_of_train_and_heldout_are_disjoint() -> None:
    from clearmark.data.marks import (
        FONT_SOURCES,
        PHOTO_HELDOUT_STYLES,
        PHOTO_TRAIN_STYLES,
    )
    from clearmark.data.photos import PHOTO_SOURCES, RESERVED_PACKAGES, photo_files

    for attribute in ("name", "package"):
        train = {getattr(s, attribute) for s in PHOTO_SOURCES if s.role == "train"}
        held = {getattr(s, attribute) for s in PHOTO_SOURCES if s.role == "heldout"}
        assert train and held and not train & held
    train_files = {path for files in photo_files("train").values() for path in files}
    assert train_files and not train_files & {path for files in photo_files("heldout").values() for path in files}
    for attribute in ("package", "family"):
        train = {getattr(s, attribute) for s in FONT_SOURCES if s.role == "train"}
        held = {getattr(s, attribute) for s in FONT_SOURCES if s.role == "heldout"}
        assert len(train) >= 10 and len(held) >= 8 and not train & held
    train_fonts = {path.name for s in FONT_SOURCES if s.role == "train" for path in s.files()}
    assert not train_fonts & {path.name for s in FONT_SOURCES if s.role == "heldout" for path in s.files()}
    assert (PHOTO_TRAIN_STYLES.role, PHOTO_HELDOUT_STYLES.role) == ("train", "heldout")
    assert not set(PHOTO_TRAIN_STYLES.logo_shapes) & set(PHOTO_HELDOUT_STYLES.logo_shapes)
    # Reserved packages serve neither split, and nothing but the declared reserved sources names them.
    used = _debian_packages("train") | _debian_packages("heldout")
    assert not used & RESERVED_PACKAGES
    assert {s.package for s in PHOTO_SOURCES if s.role == "reserved"} <= RESERVED_PACKAGES
    assert all(s.role != "reserved" for s in FONT_SOURCES)


def test_the_install_script_installs_exactly_the_declared_packages() -> None:
    from clearmark.data.photos import RESERVED_PACKAGES
    from clearmark.settings import REPO_ROOT

    script = (REPO_ROOT / "scripts" / "install-data-packages.sh").read_text()
    listed = set(script.split('PACKAGES="', 1)[1].split('"', 1)[0].split())
    assert listed == _debian_packages("train") | _debian_packages("heldout")
    assert not listed & RESERVED_PACKAGES


def test_photo_heldout_items_use_only_heldout_sources_fonts_and_shapes(tmp_path: Path) -> None:
    from clearmark.data.marks import FONT_SOURCES, PHOTO_HELDOUT_STYLES
    from clearmark.data.photos import SOURCES_BY_NAME
    from clearmark.data.synth import PROCEDURAL_WEIGHTS

    summary = generate_synthetic(tmp_path, 30, SEED, size=96, styles="photo-heldout", progress=False)
    heldout_fonts = {path.name for s in FONT_SOURCES if s.role == "heldout" for path in s.files()}
    photo_backgrounds = [item for item in summary.items if item.background not in PROCEDURAL_WEIGHTS]
    assert len(photo_backgrounds) >= 20  # mostly real photographs
    for item in summary.items:
        assert item.background in PROCEDURAL_WEIGHTS or SOURCES_BY_NAME[item.background].role == "heldout", item
        assert item.fonts and set(item.fonts) <= heldout_fonts, item
        assert set(item.logos) <= set(PHOTO_HELDOUT_STYLES.logo_shapes), item
