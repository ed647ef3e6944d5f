"""The synthetic generator: deterministic, exact masks, visible watermarks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clearmark.data.synth import WATERMARK_WEIGHTS, generate_synthetic

COUNT, SEED, SIZE = 48, 1234, 128


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.png"))}


def _load(root: Path, part: str, name: str) -> np.ndarray:
    return np.asarray(Image.open(root / part / name))


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate_synthetic(out, COUNT, SEED, size=SIZE, progress=False)
    return out


def test_same_arguments_give_byte_identical_files(synth_dir: Path, tmp_path: Path) -> None:
    summary = generate_synthetic(tmp_path / "again", COUNT, SEED, size=SIZE, progress=False)
    assert summary.count == COUNT and len(summary.items) == COUNT
    assert _digests(tmp_path / "again") == _digests(synth_dir)


def test_other_seed_gives_other_images(synth_dir: Path, tmp_path: Path) -> None:
    generate_synthetic(tmp_path, 4, SEED + 1, size=SIZE, progress=False)
    other = _digests(tmp_path)
    assert all(other[name] != _digests(synth_dir)[name] for name in other)


def test_a_smaller_count_is_a_prefix_of_a_larger_one(synth_dir: Path, tmp_path: Path) -> None:
    generate_synthetic(tmp_path, 5, SEED, size=SIZE, progress=False)
    full = _digests(synth_dir)
    assert _digests(tmp_path) == {name: full[name] for name in _digests(tmp_path)}


def test_names_are_identical_across_the_three_folders(synth_dir: Path) -> None:
    names = {part: sorted(p.name for p in (synth_dir / part).iterdir()) for part in ("clean", "watermarked", "masks")}
    assert names["clean"] == names["watermarked"] == names["masks"]
    assert names["clean"] == [f"synth_{i:05d}.png" for i in range(COUNT)]


def test_images_are_rgb_and_masks_binary_of_the_same_size(synth_dir: Path) -> None:
    for path in sorted((synth_dir / "masks").iterdir()):
        clean = Image.open(synth_dir / "clean" / path.name)
        watermarked = Image.open(synth_dir / "watermarked" / path.name)
        mask = Image.open(path)
        assert (clean.mode, watermarked.mode, mask.mode) == ("RGB", "RGB", "L")
        assert clean.size == watermarked.size == mask.size == (SIZE, SIZE)
        assert set(np.unique(np.asarray(mask))) <= {0, 255}


def test_mask_is_exact_and_the_watermark_visible(synth_dir: Path) -> None:
    for path in sorted((synth_dir / "masks").iterdir()):
        clean = _load(synth_dir, "clean", path.name).astype(np.int16)
        watermarked = _load(synth_dir, "watermarked", path.name).astype(np.int16)
        inside = _load(synth_dir, "masks", path.name) == 255
        diff = np.abs(clean - watermarked).max(axis=2)
        assert not diff[~inside].any(), f"{path.name}: pixels outside the mask changed"
        assert (diff[inside] > 0).mean() > 0.9, f"{path.name}: most masked pixels should differ"
        assert diff[inside].mean() >= 20, f"{path.name}: watermark is nearly invisible"


def test_coverage_stays_in_range_and_every_kind_appears(synth_dir: Path) -> None:
    summary = generate_synthetic(synth_dir, COUNT, SEED, size=SIZE, progress=False)
    coverages = np.array([item.coverage for item in summary.items])
    assert coverages.min() > 0.005 and coverages.max() < 0.35
    assert 0.02 <= float(np.median(coverages)) <= 0.3
    for item in summary.items:
        measured = (_load(synth_dir, "masks", item.name) == 255).mean()
        assert item.coverage == pytest.approx(measured)
    assert set(summary.kinds()) == set(WATERMARK_WEIGHTS)


@pytest.mark.parametrize(("count", "size"), [(0, 128), (3, 32)])
def test_bad_arguments_are_refused(tmp_path: Path, count: int, size: int) -> None:
    with pytest.raises(ValueError, match="at least"):
        generate_synthetic(tmp_path, count, SEED, size=size, progress=False)


def test_difference_of_a_synthetic_pair_reproduces_its_mask(synth_dir: Path) -> None:
    """Curation derives masks of `pairs` sources from differences; on exact data it must agree."""
    from clearmark.data.masks import coverage, mask_from_difference

    for path in sorted((synth_dir / "masks").iterdir())[:12]:
        derived = mask_from_difference(Image.open(synth_dir / "watermarked" / path.name), Image.open(synth_dir / "clean" / path.name), threshold=0, min_area=0)
        truth = Image.open(path)
        derived_pixels, true_pixels = np.asarray(derived) == 255, np.asarray(truth) == 255
        assert not (derived_pixels & ~true_pixels).any()
        iou = (derived_pixels & true_pixels).sum() / (derived_pixels | true_pixels).sum()
        assert iou > 0.9 and coverage(derived) <= coverage(truth)


def test_another_process_with_another_hash_seed_writes_the_same_bytes(synth_dir: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    code = f"from pathlib import Path; from clearmark.data.synth import generate_synthetic; generate_synthetic(Path({str(tmp_path)!r}), 6, {SEED}, size={SIZE}, progress=False)"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONHASHSEED": "12345"}, timeout=120)
    full = _digests(synth_dir)
    produced = _digests(tmp_path)
    assert len(produced) == 18 and produced == {name: full[name] for name in produced}
