"""ruff's Airflow rules (AIR, preview included) over the DAG files and the plugin."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_dags_and_plugins_pass_ruffs_airflow_rules() -> None:
    ruff = Path(sys.executable).parent / "ruff"  # the pinned one from the test extra
    result = subprocess.run(
        [str(ruff), "check", "--select", "AIR", "--preview", "--no-cache", "--output-format", "concise", "dags", "plugins"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
