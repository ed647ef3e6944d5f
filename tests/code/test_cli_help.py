"""The help a person reads: every option shows its default, nothing is cut off at 80 columns."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from clearmark.cli import app
from clearmark.removal.inpaint import available_inpainters

TYPER_OWN = {"--help", "--install-completion", "--show-completion"}
COMMANDS = [[], ["remove"], ["stack"], ["stack", "up"], ["stack", "down"], ["stack", "status"], ["demo"]]


def _command(path: list[str]):  # noqa: ANN202 - typer's click command
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    return command


@pytest.mark.parametrize("path", COMMANDS, ids=lambda p: " ".join(p) or "clearmark")
def test_help_fits_80_columns_and_shows_every_default(path: list[str]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert result.exit_code == 0, result.output
    assert "…" not in result.output  # rich's mark for text it cut off
    assert max(len(line) for line in result.output.splitlines()) <= 80
    options = [p for p in _command(path).params if p.param_type_name == "option" and not TYPER_OWN & set(p.opts)]
    assert result.output.count("[default:") == len(options), result.output


def test_remove_help_lists_every_registered_inpainter() -> None:
    result = CliRunner().invoke(app, ["remove", "--help"], env={"COLUMNS": "200"})
    for name in available_inpainters():
        assert name in result.output
