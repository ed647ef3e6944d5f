"""Training speed and time to quality: images/s and minutes to validation IoU 0.80 / 0.90.

Each training config runs for the same time budget on the same synthetic set, in this
run; the first config is the one reported, the others are its in-run baselines.  Within a
CPU budget of minutes neither IoU target is usually reached: the result then says so and
gives the best IoU it did reach, next to the bundled baseline's recorded long run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clearmark.settings import Settings

IOU_TARGETS = (0.80, 0.90)


@dataclass(frozen=True)
class TrainingRecipe:
    """A named training config for the benchmark (network and batch, nothing else)."""

    name: str
    encoder: str
    image_size: int
    batch_size: int
    decoder_channels: tuple[int, ...] | None = None
    learning_rate: float = 1e-3


# The DAG's default form values, and the recipe of the bundled CPU baseline (docs/baseline.md).
DEFAULT_CPU = TrainingRecipe("default (Unet/mit_b0, 256 px, batch 8)", "mit_b0", 256, 8)
LIGHT_CPU = TrainingRecipe("bundled-baseline recipe (Unet/mobilenet_v2 64-48-32-16-16, 128 px, batch 8)", "mobilenet_v2", 128, 8, (64, 48, 32, 16, 16), 3e-3)
REFERENCE_GPU = TrainingRecipe("reference (Unet/mit_b5, 256 px, batch 16)", "mit_b5", 256, 16)


def time_to_iou(history: list[tuple[float, float]], target: float) -> float | None:
    """Minutes of training until validation IoU first reached ``target`` (``None``: never)."""
    for elapsed_s, iou in history:
        if iou >= target:
            return round(elapsed_s / 60, 2)
    return None


def _history(settings: Settings, run_id: str) -> list[tuple[float, float]]:
    from clearmark.model.registry import mlflow_client

    client = mlflow_client(settings)
    elapsed = {m.step: m.value for m in client.get_metric_history(run_id, "elapsed_seconds")}
    return [(elapsed[m.step], m.value) for m in sorted(client.get_metric_history(run_id, "val_iou"), key=lambda m: m.step)]


def recorded_baseline_history(folder: Path) -> dict[str, Any] | None:
    """Time to IoU in the bundled baseline's own (long) training, from its metrics.json.

    ``history`` holds the epochs of its last stage; ``minutes_before_history`` the
    training time of the stages before it, which the figures include.
    """
    metrics = json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").is_file() else {}
    offset_s = 60 * float(metrics.get("minutes_before_history", 0))
    history = [(offset_s + row["elapsed_s"], row["val_iou"]) for row in metrics.get("history", [])]
    if not history:
        return None
    return {
        "source": f"{folder}/metrics.json (recorded when it was trained, not in this run)",
        "epochs": len(history),
        "stage": metrics.get("history_stage"),
        "minutes": round(history[-1][0] / 60, 1),
        **{f"minutes_to_val_iou_{t:.2f}": time_to_iou(history, t) for t in IOU_TARGETS},
        "best_val_iou": round(max(iou for _, iou in history), 4),
    }


def measure_training(
    settings: Settings, work: Path, recipes: tuple[TrainingRecipe, ...], *, minutes: float, images: int, progress: bool = True
) -> dict[str, Any]:
    """Train each recipe for ``minutes`` on ``images`` synthetic pairs; images/s and time to IoU targets."""
    from clearmark.data.synth import generate_synthetic
    from clearmark.model.registry import mlflow_client
    from clearmark.model.train import TrainConfig, train

    data = work / "train-synth"
    generate_synthetic(data, images, seed=2024, size=256, progress=progress)
    results = []
    for recipe in recipes:
        config = TrainConfig(
            data_dir=data,
            dataset="bench-synthetic",
            encoder=recipe.encoder,
            decoder_channels=list(recipe.decoder_channels) if recipe.decoder_channels else None,
            image_size=recipe.image_size,
            batch_size=recipe.batch_size,
            learning_rate=recipe.learning_rate,
            scheduler="cosine",  # starts at the full rate (one-cycle would still be warming up)
            epochs=1000,  # the time budget ends the run
            patience=1000,
            max_minutes=minutes,
            checkpoint_dir=work / "checkpoints" / recipe.encoder,
            run_name=f"bench {recipe.encoder}",
        )
        result = train(settings, config)
        history = _history(settings, result["run_id"])
        speeds = [m.value for m in mlflow_client(settings).get_metric_history(result["run_id"], "images_per_second")]
        results.append(
            {
                "recipe": recipe.name,
                "run_id": result["run_id"],
                "epochs": len(history),
                "minutes": round(history[-1][0] / 60, 2),
                "train_images_per_s": round(sum(speeds) / len(speeds), 2),
                **{f"minutes_to_val_iou_{t:.2f}": time_to_iou(history, t) for t in IOU_TARGETS},
                "best_val_iou": round(max(iou for _, iou in history), 4),
            }
        )
    reported, *baselines = results
    for baseline in baselines:
        baseline["speed_ratio_reported_vs_this"] = round(reported["train_images_per_s"] / baseline["train_images_per_s"], 2)
    return {"train_pairs": images, "budget_minutes_per_recipe": minutes, "reported": reported, "baselines": baselines}
