"""Photo sources: the registry finds installed photographs per role, says what to install, and crops them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clearmark.data import photos
from clearmark.data.photos import (
    MissingPhotosError,
    folder_photos,
    photo_crop,
    photo_files,
)
from clearmark.data.synth import generate_synthetic


def _photo(path: Path, size: tuple[int, int], seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def test_train_and_heldout_photos_are_installed_and_real_files() -> None:
    for role in ("train", "heldout"):
        found = photo_files(role)
        assert all(photos.SOURCES_BY_NAME[name].role == role for name in found)
        for files in found.values():
            with Image.open(files[0]) as image:
                assert min(image.size) >= 256, files[0]


def test_a_role_without_installed_photos_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(photos, "DEBIAN_ROOT", tmp_path)
    with pytest.raises(MissingPhotosError, match="apt-get install plasma-workspace-wallpapers"):
        photo_files("reserved")
    with pytest.raises(ValueError, match="train, heldout, reserved"):
        photo_files("test")  # type: ignore[arg-type]


def test_folder_photos_lists_the_images_of_a_users_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    expected = [_photo(tmp_path / "a.png", (300, 200), 1), _photo(tmp_path / "sub" / "b.JPG", (400, 300), 2)]
    (tmp_path / "notes.txt").write_text("not a photo")
    assert folder_photos(tmp_path) == sorted(expected)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingPhotosError, match="holds no image"):
        folder_photos(tmp_path / "empty")
    with pytest.raises(MissingPhotosError, match="is not a folder"):
        folder_photos(tmp_path / "missing")


def test_crops_are_deterministic_and_vary_with_the_random_state(tmp_path: Path) -> None:
    files = [_photo(tmp_path / "big.jpg", (2600, 1800), 3), _photo(tmp_path / "small.png", (320, 300), 4)]
    first, path = photo_crop(np.random.default_rng(5), files, 128)
    again, path_again = photo_crop(np.random.default_rng(5), files, 128)
    assert first.shape == (128, 128, 3) and first.dtype == np.uint8
    assert path == path_again and np.array_equal(first, again)
    crops = [photo_crop(np.random.default_rng(seed), files, 128)[0] for seed in range(12)]
    assert len({crop.tobytes() for crop in crops}) == 12


def test_a_crop_shows_the_photo_region_it_came_from(tmp_path: Path) -> None:
    """A photo whose left half is red and right half blue: every crop is red, blue or both, never anything else."""
    image = np.zeros((600, 900, 3), np.uint8)
    image[:, :450, 0] = 255
    image[:, 450:, 2] = 255
    Image.fromarray(image).save(tmp_path / "halves.png")
    for seed in range(6):
        crop, _ = photo_crop(np.random.default_rng(seed), [tmp_path / "halves.png"], 64)
        assert crop[..., 1].max() <= 8  # no green anywhere
        assert (crop[..., 0].astype(int) + crop[..., 2]).min() >= 200  # each pixel red, blue or a blend of them


def test_synthetic_marks_on_the_users_photos(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    names = {_photo(folder / f"p{i}.png", (400, 300), i).name for i in range(3)}
    summary = generate_synthetic(tmp_path / "out", 6, 9, size=96, styles="photo-train", photo_folder=folder, progress=False)
    assert {item.background for item in summary.items} == {"folder"}
    assert {item.photo for item in summary.items} <= names
