"""Fixtures shared by the unit tests: a detector and an inpainter for the removal pipeline, a `clearmark synth` folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from clearmark.data.synth import generate_synthetic
from clearmark.removal.inpaint import get_inpainter
from clearmark.settings import Settings
from tests.support.hostile_archives import white_mark_detector


@pytest.fixture(scope="module")
def detector():  # noqa: ANN201 - a clearmark Detector
    """A deterministic detector that marks near-white pixels (the test watermarks are white)."""
    return white_mark_detector()


@pytest.fixture(scope="module")
def inpainter(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - an Inpainter
    return get_inpainter("telea", Settings(home=tmp_path_factory.mktemp("home")))


@pytest.fixture(scope="module")
def synth_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve 64 px pairs in the layout `clearmark synth` writes (clean/, watermarked/, masks/)."""
    folder = tmp_path_factory.mktemp("synth")
    generate_synthetic(folder, 12, 5, size=64, progress=False)
    return folder
