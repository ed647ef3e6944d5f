"""Detector training inputs: augmentations and the ``torch`` dataset of augmented pairs.

The pairs come from a :class:`clearmark.data.dataset.LocalDataset` (a published curated
version or a local folder, see :func:`clearmark.data.catalog.load_training_data`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from clearmark.data.dataset import DatasetError, read_mask, read_rgb

if TYPE_CHECKING:
    import albumentations as A
    import pandas as pd

    from clearmark.data.dataset import LocalDataset

def train_augmentations(image_size: int, seed: int) -> A.Compose:
    """Geometric, colour, noise, blur and JPEG augmentations, the same geometry on image and mask.

    Crops keep the native resolution (thin strokes stay thin); smaller images are padded.
    """
    import albumentations as A
    import cv2

    return A.Compose(
        [
            A.PadIfNeeded(min_height=image_size, min_width=image_size, border_mode=cv2.BORDER_REFLECT_101),
            A.RandomCrop(height=image_size, width=image_size),
            A.HorizontalFlip(p=0.5),
            A.Affine(scale=(0.85, 1.15), rotate=(-10, 10), border_mode=cv2.BORDER_REFLECT_101, p=0.3),
            A.OneOf([A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.03), A.ToGray()], p=0.4),
            A.GaussNoise(std_range=(0.01, 0.05), p=0.2),
            A.OneOf([A.GaussianBlur(blur_limit=(3, 3)), A.MotionBlur(blur_limit=(3, 5))], p=0.15),
            A.ImageCompression(quality_range=(60, 95), p=0.3),
            A.Normalize(),  # ImageNet mean/std, as Detector.predict_proba does
        ],
        seed=seed,
    )


class PairDataset:
    """``torch`` map-style dataset of augmented (image C x H x W float, mask 1 x H x W float) pairs."""

    def __init__(self, data: LocalDataset, rows: pd.DataFrame, transform: A.Compose) -> None:
        self.root = data.root
        self.images = [str(k) for k in rows["watermarked_key"]]
        self.masks = [str(k) for k in rows["mask_key"]]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        import numpy as np
        import torch

        image = read_rgb(self.root / self.images[index])
        mask = read_mask(self.root / self.masks[index]).astype(np.uint8)
        if image.shape[:2] != mask.shape:
            raise DatasetError(f"{self.images[index]} and its mask differ in size ({image.shape[:2]} vs {mask.shape}); re-run curation.")
        out = self.transform(image=image, mask=mask)
        return torch.from_numpy(out["image"].transpose(2, 0, 1).copy()), torch.from_numpy(out["mask"][None].astype(np.float32))
