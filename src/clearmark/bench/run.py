"""``clearmark bench``: every benchmark in one run, each figure next to its in-run baseline.

Ratios measured within one run hold on noisy shared machines where absolute figures do
not.  Results go to ``<out_dir>/<date>-<machine>.json`` and ``.md``; the markdown table is
what the README's Performance section shows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearmark.bench.collection import CollectionSpec
from clearmark.bench.heldout import HeldOutSpec
from clearmark.bench.measure import machine_record
from clearmark.bench.table import markdown_table
from clearmark.bench.training import DEFAULT_CPU, LIGHT_CPU, REFERENCE_GPU, TrainingRecipe

if TYPE_CHECKING:
    from clearmark.settings import Settings

SECTIONS = ("removal", "detection", "quality", "collection", "training", "platform")


@dataclass(frozen=True)
class Profile:
    """Sizes of one benchmark run; ``cpu`` finishes within 15 minutes on 2 cores."""

    name: str
    archive_sizes: tuple[int, ...] = (200, 2000)
    distinct_images: int = 200
    naive_images: int = 40
    latency_batches: tuple[int, ...] = (1, 2, 4, 8)
    latency_repeats: int = 20
    quality_set: HeldOutSpec = HeldOutSpec()
    collection_set: CollectionSpec = CollectionSpec()
    diffusers: bool = False
    train_recipes: tuple[TrainingRecipe, ...] = (DEFAULT_CPU, LIGHT_CPU)
    train_minutes: float = 1.0
    train_pairs: int = 240
    etl_images: int = 200
    dag_parse_repeats: int = 3


PROFILES = {
    "cpu": Profile("cpu"),
    "gpu": Profile(
        "gpu", naive_images=100, latency_batches=(1, 8, 16, 32, 64), latency_repeats=50, quality_set=HeldOutSpec(images=200), diffusers=True,
        train_recipes=(REFERENCE_GPU, DEFAULT_CPU), train_minutes=3.0, train_pairs=1000,
    ),  # fmt: skip
    # The smallest run that exercises every section (tests, and a first try of the command).
    "smoke": Profile(
        "smoke", archive_sizes=(8, 24), distinct_images=8, naive_images=4, latency_batches=(1, 2), latency_repeats=3,
        quality_set=HeldOutSpec(images=4, sizes=(128, 192)), collection_set=CollectionSpec(images=8, size=192),
        train_recipes=(TrainingRecipe("smoke", "mobilenet_v2", 64, 4, (16, 16, 16, 16, 8)),), train_minutes=0.01, train_pairs=24,
        etl_images=8, dag_parse_repeats=1,
    ),  # fmt: skip
}


def run_benchmarks(
    settings: Settings,
    profile: Profile,
    *,
    out_dir: Path,
    model: str | None = None,
    sections: tuple[str, ...] = SECTIONS,
    echo: Callable[[str], None] = print,
) -> tuple[dict[str, Any], Path]:
    """Run ``sections`` of ``profile`` against the configured store and registry; save and return the figures."""
    import torch

    from clearmark.bench.collection import measure_collection
    from clearmark.bench.detection import measure_latency, measure_model_load
    from clearmark.bench.platform import measure_dag_parse, measure_etl
    from clearmark.bench.quality import measure_quality
    from clearmark.bench.removal import build_photos, measure_removal
    from clearmark.bench.training import measure_training, recorded_baseline_history
    from clearmark.model.loading import load_detector
    from clearmark.model.registry import champion_uri
    from clearmark.removal.runner import get_detector
    from clearmark.storage import atomic_write_bytes

    if profile.diffusers and not torch.cuda.is_available():
        raise RuntimeError(f"The {profile.name} profile needs a CUDA GPU and none is visible; run the default cpu profile.")
    started_at = datetime.now(UTC)
    work = settings.home / "bench" / started_at.strftime("%Y%m%dT%H%M%SZ")
    source = model or champion_uri(settings)
    figures: dict[str, Any] = {
        "profile": asdict(profile),
        "started_at": started_at.isoformat(timespec="seconds"),
        "machine": machine_record(),
        "model": source,
        "seconds": {},
    }
    detector = get_detector(settings, source)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"{started_at:%Y-%m-%d}-{figures['machine']['slug']}"
    steps: dict[str, Callable[[], Any]] = {
        "removal": lambda: measure_removal(
            settings, source, work / "removal", archive_sizes=profile.archive_sizes, distinct=profile.distinct_images, naive_images=profile.naive_images
        ),
        "detection": lambda: {
            "latency": measure_latency(
                detector, load_detector(source, settings), _rgb(build_photos(work / "latency", 4)), settings,
                batch_sizes=profile.latency_batches, repeats=profile.latency_repeats,
            ),  # fmt: skip
            "model_load": measure_model_load(settings, source, work / "load"),
        },
        "quality": lambda: measure_quality(
            settings, source, work / "quality", spec=profile.quality_set, diffusers=profile.diffusers, crops=stem.with_name(f"{stem.name}-quality.png")
        ),
        "collection": lambda: measure_collection(settings, source, work / "collection", spec=profile.collection_set),
        "training": lambda: {
            **measure_training(settings, work / "training", profile.train_recipes, minutes=profile.train_minutes, images=profile.train_pairs),
            "bundled_baseline_recorded": recorded_baseline_history(settings.baseline_dir),
        },
        "platform": lambda: {
            "etl": measure_etl(settings, work / "etl", images=profile.etl_images),
            "dag_parse": measure_dag_parse(repeats=profile.dag_parse_repeats),
        },
    }

    def save_figures() -> None:
        atomic_write_bytes(stem.with_suffix(".json"), (json.dumps(figures, indent=2, default=str) + "\n").encode())

    for name in sections:
        echo(f"[bench] {name} ...")
        section_started = time.perf_counter()
        figures[name] = steps[name]()
        figures["seconds"][name] = round(time.perf_counter() - section_started, 1)
        echo(f"[bench] {name} done in {figures['seconds'][name]} s")
        save_figures()  # after every section: a later failure or a killed run keeps these figures
    figures["seconds"]["total"] = round(sum(figures["seconds"].values()), 1)
    save_figures()
    atomic_write_bytes(stem.with_suffix(".md"), markdown_table(figures).encode())
    return figures, stem.with_suffix(".md")


def _rgb(paths: list[Path]) -> list[Any]:
    import numpy as np
    from PIL import Image

    return [np.asarray(Image.open(path).convert("RGB")) for path in paths]
