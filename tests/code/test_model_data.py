"""Detector training inputs: augmentations and the torch dataset of pairs (local datasets: test_data_dataset.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clearmark.data.catalog import load_training_data
from clearmark.data.dataset import load_local_folder
from clearmark.model.data import PairDataset, train_augmentations
from clearmark.settings import load_settings


def test_augmented_pairs_keep_image_and_mask_aligned(synth_folder: Path) -> None:
    data = load_local_folder(synth_folder, "synthetic", source="synthetic")
    rows = data.manifest.head(4)
    dataset = PairDataset(data, rows, train_augmentations(32, seed=0))
    images = [(item["image"], item["mask"]) for item in (dataset[i] for i in range(len(dataset)))]
    for image, mask in images:
        assert tuple(image.shape) == (3, 32, 32) and tuple(mask.shape) == (1, 32, 32)
        assert set(np.unique(mask.numpy())) <= {0.0, 1.0}
        assert abs(float(image.mean())) < 3  # ImageNet-normalised, not 0..255
    # A seeded pipeline replays the same augmentations.
    replay = PairDataset(data, rows, train_augmentations(32, seed=0))
    first = replay[0]
    assert np.array_equal(first["image"].numpy(), images[0][0].numpy()) and np.array_equal(first["mask"].numpy(), images[0][1].numpy())


def test_geometry_moves_mask_with_image() -> None:
    """With colour effects off, the watermark pixels stay exactly where the mask says."""
    import albumentations as A

    geometric = [t for t in train_augmentations(48, seed=1).shared.transforms if isinstance(t, A.PadIfNeeded | A.RandomCrop | A.HorizontalFlip)]
    pipeline = A.Compose(geometric, seed=1)
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 5:50] = 1
    image = np.repeat((mask * 255)[..., None], 3, axis=2)
    for _ in range(5):
        out = pipeline(image=image, mask=mask)
        assert np.array_equal(out["image"][..., 0] > 127, out["mask"] > 0)


def test_matte_targets_move_and_recolour_with_the_image_and_keep_the_blend(tmp_path: Path) -> None:
    """Geometry and colour reach watermarked, clean, alpha and W alike, so J = alpha W + (1 - alpha) I still holds."""
    from clearmark.data.synth import generate_synthetic
    from clearmark.model.detector import IMAGENET_MEAN, IMAGENET_STD

    generate_synthetic(tmp_path, 6, 3, size=96, styles="photo-train", progress=False)
    data = load_local_folder(tmp_path, "photos", source="photos")
    augmentations = train_augmentations(64, seed=0)
    augmentations.input_only.transforms = augmentations.input_only.transforms[-1:]  # Normalize only: no noise, blur or JPEG
    dataset = PairDataset(data, data.manifest, augmentations, matte=True)
    for index in range(len(dataset)):
        item = {name: tensor.numpy() for name, tensor in dataset[index].items()}
        assert item["has_matte"] and item["has_clean"]
        assert item["alpha"].shape == (1, 64, 64) and item["colour"].shape == item["clean"].shape == (3, 64, 64)
        watermarked = item["image"] * np.array(IMAGENET_STD).reshape(3, 1, 1) + np.array(IMAGENET_MEAN).reshape(3, 1, 1)
        blended = item["alpha"] * item["colour"] + (1 - item["alpha"]) * item["clean"]
        assert np.median(np.abs(watermarked - blended)) < 2 / 255 and np.percentile(np.abs(watermarked - blended), 99) < 0.06
        np.testing.assert_array_equal(item["mask"] > 0, item["alpha"] > 0)  # the footprint of the moved matte


def test_pairs_without_a_matte_get_zeros_and_false_flags(synth_folder: Path) -> None:
    data = load_local_folder(synth_folder, "synthetic", source="synthetic")
    item = PairDataset(data, data.manifest.head(1), train_augmentations(32, seed=0), matte=True)[0]
    assert bool(item["has_clean"]) and not bool(item["has_matte"])
    assert not item["alpha"].any() and not item["colour"].any() and item["clean"].any()


def test_training_scale_is_the_median_long_side_rounded_up_to_32(synth_folder: Path) -> None:
    import pandas as pd

    from clearmark.model.train import training_scale

    # Long sides 640, 1000, 900: the median, 900, rounds up to 928.
    assert training_scale(pd.DataFrame({"width": [640, 1000, 300], "height": [480, 700, 900]})) == 928
    assert training_scale(pd.DataFrame({"width": [], "height": []})) is None
    data = load_training_data(load_settings(home=synth_folder.parent / "home"), "synthetic", data_dir=synth_folder)
    assert training_scale(data.split("train")) == 64
