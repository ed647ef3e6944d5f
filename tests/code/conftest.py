"""Fixtures shared by the removal pipeline's unit tests."""

from __future__ import annotations

import pytest

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
