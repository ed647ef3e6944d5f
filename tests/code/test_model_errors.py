"""Bad input fails fast with a message that says what to do (no servers needed)."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from clearmark.cli import app
from clearmark.model.train_config import parse_detect_side
from clearmark.model.registry import MlflowUnavailableError, check_mlflow
from clearmark.model.train import TrainConfig, TrainingError, _is_out_of_memory, train
from clearmark.settings import load_settings


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_mlflow_fails_in_seconds_before_any_data_is_read(tmp_path: Path) -> None:
    settings = load_settings(home=tmp_path, mlflow_tracking_uri=f"http://127.0.0.1:{_closed_port()}")
    started = time.monotonic()
    with pytest.raises(MlflowUnavailableError, match="unreachable.*clearmark stack up"):
        check_mlflow(settings)
    # The data folder is empty: reaching it would raise DatasetError instead.
    with pytest.raises(MlflowUnavailableError):
        train(settings, TrainConfig(data_dir=tmp_path, epochs=1))
    assert time.monotonic() - started < 30


def test_cli_reports_the_error_without_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from clearmark.settings import get_settings

    monkeypatch.setenv("CLEARMARK_HOME", str(tmp_path))
    monkeypatch.setenv("CLEARMARK_MLFLOW_TRACKING_URI", f"http://127.0.0.1:{_closed_port()}")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["train", "--data-dir", str(tmp_path), "--epochs", "1"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 1
    assert "error: MLflow at" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (TrainConfig(epochs=0), "epochs must be at least 1"),
        (TrainConfig(learning_rate=0.0), "learning_rate must be positive"),
        (TrainConfig(resume=Path("/nonexistent/last.pt")), "does not exist"),
        (TrainConfig(encoder="nope"), "Unknown encoder"),
        (TrainConfig(detect_side=16), "detect_side must be 0"),
    ],
)
def test_invalid_training_config_is_refused(config: TrainConfig, message: str) -> None:
    with pytest.raises(Exception, match=message):
        config.validate()


def test_detect_side_option_takes_auto_native_or_pixels() -> None:
    assert [parse_detect_side(v) for v in ("auto", "AUTO", "0", "384")] == [None, None, 0, 384]
    with pytest.raises(TrainingError, match="auto, 0"):
        parse_detect_side("large")


@pytest.mark.parametrize(("value", "message"), [("large", "--detect-side must be auto, 0"), ("16", "detect_side must be 0 .* or at least 32")])
def test_cli_refuses_a_bad_detect_side_before_any_work(value: str, message: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["train", "--data-dir", str(tmp_path), "--detect-side", value])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert re.search(message, result.output), result.output


def test_out_of_memory_is_recognised_on_gpu_and_cpu() -> None:
    assert _is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert _is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1099511627776 bytes"))
    assert not _is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert issubclass(TrainingError, RuntimeError)
