"""The champion loads in a fresh process whose first MLflow call is load_detector."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from clearmark.settings import Settings

pytestmark = pytest.mark.integration

LOAD = (
    "import json, sys; from clearmark.model.loading import load_detector; from clearmark.settings import load_settings; "
    "detector = load_detector(sys.argv[1], load_settings()); print(json.dumps({'version': detector.version}))"
)


def test_champion_loads_from_the_registry_in_a_fresh_process(settings: Settings) -> None:
    from clearmark.model.promotion import ensure_baseline_champion

    version = ensure_baseline_champion(settings)  # the bundled baseline, on the real MLflow fixture
    assert version is not None
    # Only clearmark's own variable names the server (as in a user's shell): MLflow's global
    # registry URI must not be what makes the lookup work.
    env = {k: v for k, v in os.environ.items() if k not in {"MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"}}
    result = subprocess.run(
        [sys.executable, "-c", LOAD, f"models:/{settings.registered_model}@champion"],
        capture_output=True, text=True, env=env, cwd=settings.home, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"version": version}
