"""The quality gate's rule, without any server: thresholds from config/gate.yaml and the decision."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GATED_METRICS = ("iou", "dice", "precision", "recall")


class GateConfigError(ValueError):
    """config/gate.yaml is missing or malformed."""


@dataclass(frozen=True)
class GateConfig:
    """Minimum test-split metrics, and how a candidate is compared with the champion."""

    minimum: dict[str, float] = field(default_factory=lambda: {"iou": 0.80, "dice": 0.80, "precision": 0.75, "recall": 0.75})
    split: str = "test"
    compare_metric: str = "iou"
    tolerance: float = 0.0


def load_gate_config(path: Path) -> GateConfig:
    """Read and check the gate file; every gated metric needs a minimum in [0, 1]."""
    import yaml

    if not Path(path).is_file():
        raise GateConfigError(f"Gate file {path} is missing; restore config/gate.yaml or set CLEARMARK_GATE_FILE.")
    raw = yaml.safe_load(Path(path).read_text()) or {}
    minimum = {str(k): float(v) for k, v in (raw.get("minimum") or {}).items()}
    missing = [name for name in GATED_METRICS if name not in minimum]
    if missing:
        raise GateConfigError(f"{path}: minimum needs {', '.join(missing)} (and may not drop any of {', '.join(GATED_METRICS)}).")
    if any(not 0.0 <= v <= 1.0 for v in minimum.values()):
        raise GateConfigError(f"{path}: every minimum must lie in [0, 1], got {minimum}.")
    config = GateConfig(minimum=minimum, split=str(raw.get("split", "test")), compare_metric=str(raw.get("compare_metric", "iou")), tolerance=float(raw.get("tolerance", 0.0)))
    if config.compare_metric not in GATED_METRICS + ("accuracy",):
        raise GateConfigError(f"{path}: compare_metric must be one of {', '.join(GATED_METRICS)} or accuracy.")
    if config.tolerance < 0:
        raise GateConfigError(f"{path}: tolerance must be >= 0, got {config.tolerance}.")
    return config


def decide(candidate: dict[str, Any], champion: dict[str, Any] | None, gate: GateConfig) -> tuple[bool, list[str]]:
    """(passed, reasons): every reason is a sentence a person can act on.

    The candidate passes when it reaches every minimum and, if a champion exists, its
    ``compare_metric`` is at least the champion's minus ``tolerance`` on the same split.
    """
    reasons: list[str] = []
    for name, minimum in gate.minimum.items():
        value = float(candidate[name])
        if value < minimum:
            reasons.append(f"{name} {value:.4f} is below the minimum {minimum:.2f}")
    if champion is not None:
        metric = gate.compare_metric
        ours, theirs = float(candidate[metric]), float(champion[metric])
        if ours < theirs - gate.tolerance:
            reasons.append(f"{metric} {ours:.4f} is worse than the champion's {theirs:.4f} (version {champion.get('version', '?')}) on the same split")
    passed = not reasons
    if passed:
        against = "no champion yet" if champion is None else f"champion {gate.compare_metric} {float(champion[gate.compare_metric]):.4f}"
        reasons.append(f"meets every minimum ({', '.join(f'{k} >= {v:.2f}' for k, v in gate.minimum.items())}); {against}")
    return passed, reasons
