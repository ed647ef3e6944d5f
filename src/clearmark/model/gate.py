"""The quality gate's rule, without any server: thresholds from config/gate.yaml and the decision."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GATED_METRICS = ("iou", "dice", "precision", "recall")
# Removal quality on the gate's split, in dB: the whole image and inside the true mark.
REMOVAL_METRICS = ("psnr_whole", "psnr_mark")


class GateConfigError(ValueError):
    """config/gate.yaml is missing or malformed."""


@dataclass(frozen=True)
class GateConfig:
    """Minimum test-split metrics, and how a candidate is compared with the champion."""

    minimum: dict[str, float] = field(default_factory=lambda: {"iou": 0.80, "dice": 0.80, "precision": 0.75, "recall": 0.75})
    split: str = "test"
    compare_metric: str = "iou"
    tolerance: float = 0.0
    # The candidate's removal (detection + the shipped restorer) may not score below the
    # champion's by more than removal_tolerance_db in any of these.
    removal_compare: tuple[str, ...] = REMOVAL_METRICS
    removal_tolerance_db: float = 0.0


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
    config = GateConfig(
        minimum=minimum,
        split=str(raw.get("split", "test")),
        compare_metric=str(raw.get("compare_metric", "iou")),
        tolerance=float(raw.get("tolerance", 0.0)),
        removal_compare=tuple(str(m) for m in raw.get("removal_compare", REMOVAL_METRICS) or ()),
        removal_tolerance_db=float(raw.get("removal_tolerance_db", 0.0)),
    )
    if config.compare_metric not in GATED_METRICS + ("accuracy",):
        raise GateConfigError(f"{path}: compare_metric must be one of {', '.join(GATED_METRICS)} or accuracy.")
    if config.tolerance < 0 or config.removal_tolerance_db < 0:
        raise GateConfigError(f"{path}: tolerance and removal_tolerance_db must be >= 0, got {config.tolerance} and {config.removal_tolerance_db}.")
    unknown = [m for m in config.removal_compare if m not in REMOVAL_METRICS]
    if unknown:
        raise GateConfigError(f"{path}: removal_compare may list {', '.join(REMOVAL_METRICS)} only (or be empty), got {', '.join(unknown)}.")
    return config


def decide(candidate: dict[str, Any], champion: dict[str, Any] | None, gate: GateConfig) -> tuple[bool, list[str]]:
    """(passed, reasons): every reason is a sentence a person can act on.

    The candidate passes when it reaches every minimum and, if a champion exists, its
    ``compare_metric`` is at least the champion's minus ``tolerance`` on the same split,
    and its removal quality is not worse (:func:`removal_check`).
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
    reasons += removal_check(candidate, champion, gate)[0]
    passed = not reasons
    if passed:
        against = "no champion yet" if champion is None else f"champion {gate.compare_metric} {float(champion[gate.compare_metric]):.4f}"
        reasons.append(f"meets every minimum ({', '.join(f'{k} >= {v:.2f}' for k, v in gate.minimum.items())}); {against}")
    return passed, reasons


def removal_check(candidate: dict[str, Any], champion: dict[str, Any] | None, gate: GateConfig) -> tuple[list[str], str]:
    """(reasons the candidate restores worse than the champion, what was checked and why not).

    Each side's ``removal`` holds the :data:`REMOVAL_METRICS` or ``skipped`` (the split has
    no clean images); a skipped side, or no champion, skips the comparison.
    """
    if not gate.removal_compare:
        return [], "removal quality not gated (removal_compare is empty)"
    if champion is None:
        return [], "removal quality not compared: no champion yet"
    ours, theirs = candidate.get("removal") or {}, champion.get("removal") or {}
    skipped = ours.get("skipped") or theirs.get("skipped")
    if skipped:
        return [], f"removal quality not compared: {skipped}"
    if not all(metric in side for side in (ours, theirs) for metric in gate.removal_compare):
        return [], "removal quality not compared: it was not measured for both models"
    reasons = []
    for metric in gate.removal_compare:
        if ours[metric] < theirs[metric] - gate.removal_tolerance_db:
            reasons.append(
                f"{metric} {ours[metric]:.2f} dB is worse than the champion's {theirs[metric]:.2f} dB "
                f"(version {champion.get('version', '?')}, restorer {ours.get('restorer', '?')}) on the same split"
            )
    return reasons, f"removal quality compared: {', '.join(gate.removal_compare)} (tolerance {gate.removal_tolerance_db} dB)"
