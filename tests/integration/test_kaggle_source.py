"""The real kagglehub client against a local stand-in of Kaggle's API (no network, no patching)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from clearmark.data.kaggle import KaggleError
from clearmark.data.sources import SourceSpec, discover_pairs, extract
from clearmark.settings import Settings
from tests.support.kaggle_standin import API_PREFIX, KaggleStandIn

pytestmark = pytest.mark.integration

HANDLE = "tester/tiny-pairs"
USER, KEY = "tester", "k-0123456789abcdef"


def _tiny_pairs_zip() -> bytes:
    """A `pairs` dataset as Kaggle would zip it: clean/ + watermarked/ (one variant, one stray)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, folder, colour in [
            ("a.png", "clean", (10, 10, 10)),
            ("a_v1.png", "watermarked", (200, 10, 10)),
            ("a_v2.png", "watermarked", (10, 200, 10)),
            ("b.jpg", "clean", (50, 60, 70)),
            ("b.jpg", "watermarked", (250, 250, 250)),
            ("stray.png", "watermarked", (1, 2, 3)),
        ]:
            image = io.BytesIO()
            Image.new("RGB", (16, 16), colour).save(image, format="PNG" if name.endswith("png") else "JPEG")
            archive.writestr(f"{folder}/{name}", image.getvalue())
        archive.writestr("LICENSE.txt", "CC0")
    return buffer.getvalue()


@pytest.fixture
def kaggle_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point kagglehub at the stand-in with a fresh cache and no credentials from the developer's machine."""
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "TEST")
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "no-kaggle-config"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_KERNEL_RUN_TYPE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def standin() -> Iterator[KaggleStandIn]:
    try:
        server = KaggleStandIn(datasets={HANDLE: _tiny_pairs_zip()}, username=USER, key=KEY, token="api-token-xyz")
        server.start()
    except OSError as exc:
        pytest.fail(f"port 7777 (fixed by kagglesdk for KAGGLE_API_ENVIRONMENT=TEST) is busy: {exc}")
    yield server
    server.stop()


def _source(handle: str = HANDLE) -> SourceSpec:
    return SourceSpec(name="tiny", kind="kaggle", layout="pairs", handle=handle)


def test_download_then_discover(kaggle_env: Path, standin: KaggleStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    settings = Settings(home=kaggle_env / "clearmark")
    folder = extract(_source(), settings)
    assert folder.is_relative_to(kaggle_env / "kagglehub") and (folder / "clean" / "a.png").is_file()
    discovery = discover_pairs(_source(), folder)
    assert [pair.id for pair in discovery.pairs] == ["tiny/a_v1", "tiny/a_v2", "tiny/b"]
    assert [(reject.path, reject.reason) for reject in discovery.rejects] == [("watermarked/stray.png", "unpaired")]
    assert ("GET", f"/storage/{HANDLE}/3.zip") in standin.requests

    standin.requests.clear()
    assert extract(_source(), settings) == folder  # the same version comes from kagglehub's cache
    assert standin.requests == [("POST", API_PREFIX + "GetDataset")]


def test_api_token_is_accepted(kaggle_env: Path, standin: KaggleStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAGGLE_API_TOKEN", "api-token-xyz")
    folder = extract(_source(f"{HANDLE}/versions/3"), Settings(home=kaggle_env / "clearmark"))
    assert (folder / "watermarked" / "b.jpg").is_file()
    assert ("POST", API_PREFIX + "GetDataset") not in standin.requests  # the version was given


def test_wrong_credentials_are_explained(kaggle_env: Path, standin: KaggleStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAGGLE_USERNAME", USER)
    monkeypatch.setenv("KAGGLE_KEY", "not-the-key")
    with pytest.raises(KaggleError) as caught:
        extract(_source(), Settings(home=kaggle_env / "clearmark"))
    message = str(caught.value)
    assert "refused access" in message and "HTTP 401" in message and HANDLE in message and "kaggle_default" in message
    assert not (kaggle_env / "kagglehub" / "datasets").exists() or not any((kaggle_env / "kagglehub" / "datasets").rglob("*.png"))


def test_missing_credentials_name_the_variables(kaggle_env: Path, standin: KaggleStandIn) -> None:
    with pytest.raises(KaggleError) as caught:
        extract(_source(), Settings(home=kaggle_env / "clearmark"))
    message = str(caught.value)
    for needed in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "kaggle_default"):
        assert needed in message
    assert standin.requests == []  # refused before any call


def test_unknown_dataset_is_explained(kaggle_env: Path, standin: KaggleStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAGGLE_API_TOKEN", "api-token-xyz")
    with pytest.raises(KaggleError, match="tester/nothing-here was not found .*HTTP 404"):
        extract(_source("tester/nothing-here"), Settings(home=kaggle_env / "clearmark"))


def test_unreachable_api_names_the_url(kaggle_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAGGLE_API_TOKEN", "api-token-xyz")  # no stand-in running
    with pytest.raises(KaggleError, match="http://localhost:7777 is unreachable"):
        extract(_source(), Settings(home=kaggle_env / "clearmark"))
