"""``clearmark remove`` as a script sees it: what it refuses, what it keeps, its exit codes."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clearmark.cli import app
from clearmark.errors import EXIT_FAILED, EXIT_OK, EXIT_PARTIAL
from clearmark.settings import get_settings
from tests.support.hostile_archives import clean_rgb, encode, tiny_detector_folder


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_detector_folder(tmp_path_factory.mktemp("detector"), finds_everything=False)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLEARMARK_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def _input(tmp_path: Path, *, broken: bool = False) -> Path:
    folder = tmp_path / "in5"
    folder.mkdir()
    (folder / "a.png").write_bytes(encode(clean_rgb(64, 64, 1), "PNG"))
    if broken:
        (folder / "broken.png").write_bytes(b"not an image at all")
    return folder


def _remove(*args: str, model: Path):
    return CliRunner().invoke(app, ["remove", *args, "--model", str(model)])


def test_an_output_folder_holding_other_files_is_refused_and_overwrite_keeps_them(tmp_path: Path, model: Path) -> None:
    _input(tmp_path)
    (tmp_path / "out5").mkdir()
    (tmp_path / "out5" / "keep.txt").write_text("mine")
    refused = _remove("in5", "out5", model=model)
    assert refused.exit_code == EXIT_FAILED and "already holds files" in refused.output and "--overwrite" in refused.output
    assert sorted(p.name for p in (tmp_path / "out5").iterdir()) == ["keep.txt"]
    assert not (tmp_path / "out5.report.json").exists()
    written = _remove("in5", "out5", "--overwrite", model=model)
    assert written.exit_code == EXIT_OK, written.output
    assert (tmp_path / "out5" / "keep.txt").read_text() == "mine"
    assert (tmp_path / "out5" / "a.png").read_bytes() == (tmp_path / "in5" / "a.png").read_bytes()


def test_an_empty_output_folder_is_written_into(tmp_path: Path, model: Path) -> None:
    _input(tmp_path)
    (tmp_path / "out.v2").mkdir()  # a dotted folder name works once the folder exists
    result = _remove("in5", "out.v2", model=model)
    assert result.exit_code == EXIT_OK, result.output
    assert (tmp_path / "out.v2" / "a.png").is_file()


def test_an_existing_archive_or_report_is_replaced_only_with_overwrite(tmp_path: Path, model: Path) -> None:
    _input(tmp_path)
    (tmp_path / "existing.zip").write_bytes(b"someone else's file")
    refused = _remove("in5", "existing.zip", model=model)
    assert refused.exit_code == EXIT_FAILED and "existing.zip already exists" in refused.output
    assert (tmp_path / "existing.zip").read_bytes() == b"someone else's file"
    (tmp_path / "fresh.zip.report.csv").write_text("not ours")
    report_taken = _remove("in5", "fresh.zip", model=model)
    assert report_taken.exit_code == EXIT_FAILED and "fresh.zip.report.csv already exists" in report_taken.output
    assert not (tmp_path / "fresh.zip").exists()
    replaced = _remove("in5", "existing.zip", "--overwrite", model=model)
    assert replaced.exit_code == EXIT_OK, replaced.output
    assert zipfile.ZipFile(tmp_path / "existing.zip").namelist() == ["a.png"]


def test_an_unknown_output_suffix_is_an_error_listing_the_supported_ones(tmp_path: Path, model: Path) -> None:
    _input(tmp_path)
    result = _remove("in5", "out.rar", model=model)
    assert result.exit_code == EXIT_FAILED
    assert "error: OUTPUT out.rar ends in .rar" in result.output
    for suffix in (".zip", ".tar", ".tar.gz", ".tgz"):
        assert suffix in result.output
    assert not (tmp_path / "out.rar").exists()


def test_exit_codes_tell_ok_from_partial(tmp_path: Path, model: Path) -> None:
    _input(tmp_path, broken=True)
    partial = _remove("in5", "out.zip", model=model)
    assert partial.exit_code == EXIT_PARTIAL and partial.stdout.startswith("partial:"), partial.output
    assert sorted(zipfile.ZipFile(tmp_path / "out.zip").namelist()) == ["a.png", "broken.png"]  # copied unchanged
    (tmp_path / "in5" / "broken.png").unlink()
    assert _remove("in5", "ok.zip", model=model).exit_code == EXIT_OK
    assert len({EXIT_OK, EXIT_PARTIAL, EXIT_FAILED, 2}) == 4  # 2 is click's usage error


def test_the_exit_codes_are_in_the_help() -> None:
    result = CliRunner().invoke(app, ["remove", "--help"], env={"COLUMNS": "200"})
    assert f"{EXIT_OK} ok" in result.output and f"{EXIT_PARTIAL} partial" in result.output and f"{EXIT_FAILED} failed" in result.output


def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process may not write to: read-only for a normal user; root writes anywhere but /sys."""
    if os.geteuid() == 0:
        return Path("/sys/kernel")
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


def test_output_in_a_read_only_folder_is_one_line_saying_what_to_do(tmp_path: Path, model: Path) -> None:
    _input(tmp_path)
    result = _remove("in5", str(_unwritable_folder(tmp_path) / "out" / "cleaned.zip"), model=model)
    assert result.exit_code == EXIT_FAILED
    assert result.output.startswith("error: permission denied on ") and "Choose a path you may write to" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_a_registry_that_does_not_answer_is_named_with_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("CLEARMARK_MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    _input(tmp_path)
    result = CliRunner().invoke(app, ["remove", "in5", "out.zip"])  # the champion, from the registry
    assert result.exit_code == EXIT_FAILED
    assert f"MLflow at http://127.0.0.1:{port} does not answer" in result.output and "clearmark stack up" in result.output
    assert "CLEARMARK_MLFLOW_TRACKING_URI" in result.output
