"""The embedded SeaweedFS is not started on a disk where it would refuse every write."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from clearmark.settings import Settings
from clearmark.stack.services import ProcessManager, StackError, seaweedfs_spec

GIB = 1 << 30


def disk_with(monkeypatch: pytest.MonkeyPatch, *, total_gib: float, free_gib: float) -> None:
    usage = SimpleNamespace(total=int(total_gib * GIB), used=int((total_gib - free_gib) * GIB), free=int(free_gib * GIB))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage)


def spec_in(home: Path):  # noqa: ANN201
    return seaweedfs_spec(Settings(home=home, s3_access_key_id="key", s3_secret_access_key="secret"))


def test_start_on_a_nearly_full_disk_says_what_to_do_and_starts_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 2 GiB free of 252: under SeaweedFS's 1 % (2.5 GiB), where a PUT fails only after minutes of retries.
    disk_with(monkeypatch, total_gib=252, free_gib=2)
    manager = ProcessManager(tmp_path)

    with pytest.raises(StackError, match=r"2\.0 GiB free of 252 GiB.*needs 3\.5 GiB.*CLEARMARK_HOME"):
        manager.start(spec_in(tmp_path))

    assert manager.running_pid("seaweedfs") is None
    assert not manager.pid_file("seaweedfs").exists()


def test_the_disk_check_passes_with_one_percent_and_headroom_free(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = spec_in(tmp_path)
    assert spec.preflight is not None

    disk_with(monkeypatch, total_gib=100, free_gib=2.01)
    spec.preflight()

    disk_with(monkeypatch, total_gib=100, free_gib=1.99)
    with pytest.raises(StackError):
        spec.preflight()


def test_stack_up_on_a_nearly_full_disk_prints_the_advice_without_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from clearmark.cli import app

    disk_with(monkeypatch, total_gib=252, free_gib=2)

    result = CliRunner().invoke(app, ["stack", "up", "--no-airflow", "--home", str(tmp_path)])

    assert result.exit_code == 1
    assert "error: Not enough free disk for SeaweedFS" in result.output and "CLEARMARK_HOME" in result.output
    assert "Traceback" not in result.output
    assert not ProcessManager(tmp_path).pid_file("seaweedfs").exists()
