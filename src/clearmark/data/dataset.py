"""A dataset version on local disk, what training, evaluation, calibration and drift read.

It comes from a published curated version (``clearmark.data.catalog.fetch_version``,
downloaded once into the local cache) or from a local folder, either in the curated
layout (``manifest.parquet`` + ``watermarked/`` ``clean/`` ``masks/``, and ``alpha/``
``colour/`` where the matte is known) or in the layout ``clearmark synth`` writes
(``clean/ watermarked/ masks/<stem>.png``, plus ``alpha/ colour/`` for the photo styles), whose pair ids
are ``<source>/<stem>`` exactly as the ETL names them, so the splits match the curated
dataset's.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from clearmark.data.layout import MANIFEST, PairKeys

ALPHA_MODES = ("I;16", "L")  # how an alpha matte PNG may be stored: 16-bit or 8-bit grey

if TYPE_CHECKING:
    from collections.abc import Iterator

    import numpy as np
    import pandas as pd


class DatasetError(RuntimeError):
    """The requested dataset is missing or unusable; the message says what to do."""


@dataclass
class LocalDataset:
    """A dataset version on local disk: ``root / row.watermarked_key`` is a file for every manifest row."""

    root: Path
    manifest: pd.DataFrame
    dataset: str
    version: str
    manifest_sha256: str
    location: str  # where it came from (s3:// URI or local folder), for the run's tags

    def split(self, name: str) -> pd.DataFrame:
        """Rows of one split (``train``/``val``/``test``) that have a mask; error if none."""
        rows = self.manifest[(self.manifest["split"] == name) & self.manifest["mask_key"].notna()]
        if rows.empty:
            raise DatasetError(
                f"Split {name!r} of {self.dataset} {self.version} is empty ({len(self.manifest)} rows in all); "
                "publish a larger dataset version (at least ~10 pairs per split) or choose another split."
            )
        return rows.reset_index(drop=True)

    def pairs(self, rows: pd.DataFrame) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """(id, watermarked RGB, mask) for each of ``rows``, read lazily."""
        for row in rows.itertuples(index=False):
            yield row.id, read_rgb(self.root / row.watermarked_key), read_mask(self.root / row.mask_key)

    def matte_pairs(self, rows: pd.DataFrame) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]]:
        """(id, watermarked RGB, mask, alpha or None where the matte is unknown) for each of ``rows``."""
        for (pair_id, rgb, mask), alpha_key in zip(self.pairs(rows), rows["alpha_key"], strict=True):
            yield pair_id, rgb, mask, None if _missing(alpha_key) else read_alpha(self.root / alpha_key)

    def has_matte(self, rows: pd.DataFrame) -> bool:
        """Whether any of ``rows`` has a known matte (alpha and colour files)."""
        return bool(rows["alpha_key"].notna().any())


def _missing(key: Any) -> bool:
    import pandas as pd

    return key is None or bool(pd.isna(key))


def read_rgb(path: Path) -> np.ndarray:
    """H x W x 3 uint8 RGB (curated files are already normalised 8-bit RGB)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def read_mask(path: Path) -> np.ndarray:
    """H x W bool (255 = watermark)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("L")) > 127


def read_alpha(path: Path) -> np.ndarray:
    """H x W float32 matte 0..1 from a 16-bit (``I;16``) or 8-bit (``L``) grey PNG."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as image:
        if image.mode not in ALPHA_MODES:
            raise DatasetError(f"{path} is a {image.mode} image; an alpha matte is 16-bit or 8-bit grey (modes {', '.join(ALPHA_MODES)}).")
        values = np.asarray(image)
    return (values / np.float32(65535 if values.dtype != np.uint8 else 255)).astype(np.float32)


def synthetic_folder_manifest(folder: Path, *, source: str) -> pd.DataFrame:
    """Manifest of a ``clearmark synth`` folder; ids ``<source>/<stem>``, split by ``stable_split(id)``."""
    from PIL import Image

    from clearmark.data.images import IMAGE_SUFFIXES
    from clearmark.data.manifest import manifest_frame, manifest_row
    from clearmark.data.sources import pair_id

    rows: list[dict[str, Any]] = []
    for image in sorted((folder / "watermarked").iterdir()):
        mask, clean = folder / "masks" / f"{image.stem}.png", folder / "clean" / image.name
        if image.suffix.lower() not in IMAGE_SUFFIXES or not mask.is_file():
            continue  # a pair without a mask cannot train a detector
        clean_file = clean if clean.is_file() else None
        matte = all((folder / part / mask.name).is_file() for part in ("alpha", "colour"))
        keys = PairKeys(
            f"watermarked/{image.name}",
            f"clean/{image.name}" if clean_file else None,
            f"masks/{mask.name}",
            f"alpha/{mask.name}" if matte else None,
            f"colour/{mask.name}" if matte else None,
        )
        with Image.open(image) as opened, Image.open(mask) as opened_mask, contextlib.ExitStack() as matte_files:
            alpha = matte_files.enter_context(Image.open(folder / keys.alpha)) if keys.alpha else None
            row = manifest_row(
                pair_id(source, PurePosixPath(image.stem)), source, keys, watermarked=image, clean=clean_file, size=opened.size, mode=opened.mode,
                mask=opened_mask, alpha=alpha,
            )  # fmt: skip
        rows.append(row)
    return manifest_frame(rows)


def load_local_folder(folder: Path, dataset: str, *, source: str) -> LocalDataset:
    """A local folder in the curated layout or the ``clearmark synth`` layout.

    A ``clearmark synth`` folder's pair ids, and so its train/val/test splits, depend on
    ``source``: the same folder under another source name splits differently, and most of
    one's validation rows are the other's training rows.  Training, evaluation and
    calibration pass ``dataset``'s synthetic source from the sources file, through
    :func:`clearmark.data.catalog.load_training_data`; load a folder that way to score a
    run's detector on the rows it was validated on.
    """
    import pandas as pd

    from clearmark.data.manifest import with_matte_columns

    folder = Path(folder).resolve()
    if (folder / MANIFEST).is_file():
        manifest = with_matte_columns(pd.read_parquet(folder / MANIFEST))
    elif (folder / "watermarked").is_dir() and (folder / "masks").is_dir():
        manifest = synthetic_folder_manifest(folder, source=source)
    else:
        raise DatasetError(
            f"{folder} is neither a curated version ({MANIFEST}) nor a `clearmark synth` folder "
            "(watermarked/ and masks/); point --data-dir at one, or drop it to read the curated dataset."
        )
    if manifest.empty:
        raise DatasetError(f"{folder} holds no (watermarked, mask) pairs; generate some with `clearmark synth`.")
    digest = _frame_sha256(manifest)
    return LocalDataset(folder, manifest, dataset, f"local-{digest[:12]}", digest, str(folder))


def _frame_sha256(frame: pd.DataFrame) -> str:
    """Stable hash of a manifest's content (order-independent)."""
    ordered = frame.sort_values("id").reset_index(drop=True)
    return hashlib.sha256(ordered.to_csv(index=False).encode()).hexdigest()
