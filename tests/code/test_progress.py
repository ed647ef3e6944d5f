"""Progress bars off a terminal (Airflow task logs, CI, pipes) become periodic INFO log lines."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from clearmark.progress import log_to_stderr, progress_bar


def test_off_a_terminal_the_bar_is_logged_at_info_level_not_written_to_stderr(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    with caplog.at_level(logging.INFO, logger="clearmark.progress"):
        assert sum(progress_bar(range(500), desc="clean", unit="img")) == sum(range(500))
    records = [r for r in caplog.records if r.name == "clearmark.progress"]
    assert {r.levelno for r in records} == {logging.INFO}
    assert len(records) <= 3  # the start, the end, and not a record per redraw
    assert records[-1].getMessage().startswith("clean: 100%") and "500/500" in records[-1].getMessage()
    assert "\r" not in "".join(r.getMessage() for r in records)
    assert "\r" not in capsys.readouterr().err  # no bar redrawn on stderr


def test_a_disabled_bar_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="clearmark.progress"):
        list(progress_bar(range(10), desc="quiet", disable=True))
    assert not [r for r in caplog.records if r.name == "clearmark.progress"]


def test_the_cli_prints_progress_lines_on_stderr_when_piped(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "clearmark.cli", "synth", "--out", str(tmp_path / "synth"), "--count", "3", "--size", "64"],
        capture_output=True, check=True, timeout=300,
    )  # fmt: skip
    stderr = result.stderr.decode()  # bytes: text mode would turn a bar's carriage returns into newlines
    assert "synthetic images: 100%" in stderr and "3/3" in stderr
    assert "\r" not in stderr


def test_log_to_stderr_installs_one_handler_that_follows_the_current_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    log_to_stderr()
    log_to_stderr()
    logger = logging.getLogger("clearmark")
    assert sum(type(handler).__name__ == "_CurrentStderr" for handler in logger.handlers) == 1
    logging.getLogger("clearmark.progress").info("fetch: 50%")
    assert capsys.readouterr().err.count("fetch: 50%") == 1  # once, on the stderr of this moment
