"""Stable train/val/test assignment: a pair keeps its split across dataset versions."""

from __future__ import annotations

import hashlib
from typing import Literal

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
# Percent of the hash space per split (train, val, test).
PROPORTIONS = {"train": 80, "val": 10, "test": 10}


def stable_split(pair_id: str) -> Split:
    """Split of ``pair_id`` from a SHA-256 of the id alone (no seed, no dataset size)."""
    bucket = int.from_bytes(hashlib.sha256(pair_id.encode()).digest()[:8], "big") % 100
    if bucket < PROPORTIONS["train"]:
        return "train"
    if bucket < PROPORTIONS["train"] + PROPORTIONS["val"]:
        return "val"
    return "test"
