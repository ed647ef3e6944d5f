"""Manifests for the data-quality tests, built with the curation's own ``manifest_frame``."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pandas as pd
import pytest

from clearmark.data.manifest import manifest_frame

# Exactly 80/10/10 by row index, so that split checks measure the suite and not the noise
# of stable_split's hash on a small sample.
SPLIT_BY_LAST_DIGIT = ["train"] * 8 + ["val", "test"]


def build_manifest(rows: int, *, dataset: str = "qa", matte_every: int = 0) -> pd.DataFrame:
    """A manifest of ``rows`` valid pairs (80/10/10 splits, distinct hashes, plausible sizes and coverage);
    with ``matte_every=n``, every n-th pair has a known matte (16-bit alpha of the image's size, and a colour layer)."""
    records = []
    for index in range(rows):
        pair_id = f"{dataset}-{index:05d}"
        records.append(
            {
                "id": pair_id,
                "split": SPLIT_BY_LAST_DIGIT[index % 10],
                "source": dataset,
                "watermarked_key": f"watermarked/{pair_id}.png",
                "clean_key": f"clean/{pair_id}.png",
                "mask_key": f"masks/{pair_id}.png",
                "width": 256 + 32 * (index % 8),
                "height": 192 + 16 * (index % 5),
                "mode": "RGB",
                "bytes": 40_000 + 97 * index,
                "sha256": hashlib.sha256(f"watermarked {pair_id}".encode()).hexdigest(),
                "clean_sha256": hashlib.sha256(f"clean {pair_id}".encode()).hexdigest(),
                "mask_coverage": 0.02 + 0.01 * (index % 9),
            }
        )
        if matte_every and index % matte_every == 0:
            records[-1] |= {
                "alpha_key": f"alpha/{pair_id}.png", "colour_key": f"colour/{pair_id}.png", "alpha_mode": "I;16",
                "alpha_width": records[-1]["width"], "alpha_height": records[-1]["height"],
            }  # fmt: skip
    return manifest_frame(records)


@pytest.fixture
def make_manifest() -> Callable[..., pd.DataFrame]:
    """Factory of valid manifests (each call returns a fresh DataFrame the test may mutate)."""
    return build_manifest
