"""Platform figures: ETL throughput with its idempotent re-run, and DAG parse cost.

* :func:`measure_etl` runs the real ETL (:func:`clearmark.data.etl.run_etl`) twice on a
  synthetic source in scratch lake and reports buckets (created here and deleted
  afterwards, also on error): the first run's seconds per step and MB/s, and the
  re-run's seconds as a share of the first run (its in-run baseline) with the bytes it
  uploaded (0 when the raw load is incremental).
* :func:`measure_dag_parse` executes every DAG file in fresh interpreters and reports
  what it costs on top of ``import airflow.sdk`` (the in-run baseline), and which heavy
  modules parsing loaded (none, when DAG files are thin).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clearmark.bench.measure import scratch_buckets

if TYPE_CHECKING:
    from clearmark.settings import Settings

SYNTHETIC_SEED = 20261122
# Pair ids (and so the stable splits the quality suite checks) derive from the source name: a
# fixed one makes every run validate the same splits (a random one failed the smoke profile's
# 8-pair split check in about one run of fifty).
ETL_SOURCE = "bench-etl"
# Modules a DAG file must not import at parse time (DEVELOPERS.md: "DAG files are thin").
HEAVY_MODULES = ("torch", "pandas", "numpy", "mlflow", "great_expectations", "evidently", "PIL", "cv2", "diffusers", "segmentation_models_pytorch")
MB = 1_000_000


# --- ETL -----------------------------------------------------------------------------------


def _bench_config(settings: Settings, folder: Path, dataset: str, *, images: int, size: int) -> Settings:
    """Settings whose sources file declares one synthetic source for ``dataset`` and whose quality gate expects every pair.

    The home (and so the extraction and object caches) is new as well: the first run starts cold.
    """
    import yaml

    folder.mkdir(parents=True)
    sources = {"datasets": {dataset: {
        "description": "clearmark bench: synthetic pairs for the ETL throughput figures.",
        "sources": [{"name": ETL_SOURCE, "kind": "synthetic", "layout": "synthetic",
                     "options": {"count": images, "seed": SYNTHETIC_SEED, "size": size}}],
    }}}  # fmt: skip
    quality = yaml.safe_load(settings.quality_file.read_text(encoding="utf-8"))
    quality["datasets"] = {dataset: {"min_rows": images}}
    (folder / "sources.yaml").write_text(yaml.safe_dump(sources, sort_keys=False), encoding="utf-8")
    (folder / "quality.yaml").write_text(yaml.safe_dump(quality, sort_keys=False), encoding="utf-8")
    return settings.model_copy(update={"home": folder / "home", "sources_file": folder / "sources.yaml", "quality_file": folder / "quality.yaml"})


def _timed_run(settings: Settings, dataset: str, label: str, *, progress: bool) -> tuple[float, dict[str, Any]]:
    """One ``run_etl``: its seconds and its summary (which holds the seconds per step)."""
    from clearmark.data.etl import run_etl

    started = time.perf_counter()
    summary = run_etl(settings, dataset, ts=datetime.now(UTC).isoformat(timespec="seconds"))
    seconds = time.perf_counter() - started
    if progress:
        print(f"bench etl {label}: {seconds:.1f} s {summary['step_seconds']}", file=sys.stderr, flush=True)
    return seconds, summary


def measure_etl(settings: Settings, work: Path, *, images: int = 200, size: int = 256, progress: bool = True) -> dict[str, Any]:
    """ETL throughput on ``images`` synthetic pairs of ``size`` px, and the cost of re-running it unchanged.

    Runs :func:`clearmark.data.etl.run_etl` twice against the object store of ``settings``, in
    scratch lake and reports buckets (the configured ones are never touched) and a new home
    below ``work``.  The first run generates, uploads, curates, validates (Great Expectations,
    Data Docs in the scratch reports bucket) and publishes; the re-run with the same sources
    should upload nothing and re-use the version.  ``rerun_share`` is the re-run's seconds over
    the first run's.  ``progress`` prints each step's time to stderr.
    """
    from clearmark.data.raw import local_files

    if images < 1 or not 64 <= size <= 4096:
        raise ValueError(f"images must be >= 1 and size between 64 and 4096 px (got {images} images of {size} px).")
    dataset = f"bench-{uuid.uuid4().hex[:8]}"
    configured = _bench_config(settings, Path(work) / dataset, dataset, images=images, size=size)
    with scratch_buckets(configured, "lake", "reports") as scratch:
        first_s, first = _timed_run(scratch, dataset, "first run", progress=progress)
        rerun_s, rerun = _timed_run(scratch, dataset, "re-run", progress=progress)
    source_files = [path for folder in first["sources"].values() for path in local_files(Path(folder)).values()]
    source_bytes = sum(path.stat().st_size for path in source_files)
    return {
        "timestamp": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
        "dataset": dataset,
        "images": images,
        "image_size": size,
        "buckets": {"lake": scratch.lake_bucket, "reports": scratch.reports_bucket},
        "source_files": len(source_files),
        "source_bytes": source_bytes,
        "source_mb": round(source_bytes / MB, 3),
        "version": first["version"],
        "rows": first["rows"],
        "rejects": first["rejects"],
        "validation_success": first["validation_success"],
        "data_docs_prefix": first["data_docs_prefix"],
        "first_run_s": round(first_s, 3),
        "first_run_steps_s": first["step_seconds"],
        "first_run_bytes_uploaded": first["bytes_uploaded"],
        "mb_per_s": round(source_bytes / MB / first_s, 3),
        "rerun_s": round(rerun_s, 3),
        "rerun_steps_s": rerun["step_seconds"],
        "rerun_share": round(rerun_s / first_s, 3),
        "rerun_bytes_uploaded": rerun["bytes_uploaded"],
        "rerun_same_version": rerun["version"] == first["version"],
    }


# --- DAG parsing ----------------------------------------------------------------------------

# Run in a fresh interpreter: time `import airflow.sdk`, then executing the DAG file on top of it.
_PARSE_PROBE = """
import json, runpy, sys, time
started = time.perf_counter()
import airflow.sdk
imported = time.perf_counter()
runpy.run_path(sys.argv[1])
parsed = time.perf_counter()
heavy = [name for name in json.loads(sys.argv[2]) if name in sys.modules]
print("clearmark-parse " + json.dumps({"sdk_s": imported - started, "file_s": parsed - imported, "heavy": heavy}))
"""


def default_dags_folder() -> Path:
    """The repository's ``dags/`` (source checkout), else ``$AIRFLOW__CORE__DAGS_FOLDER``."""
    from clearmark.settings import REPO_ROOT

    if (REPO_ROOT / "dags").is_dir():
        return REPO_ROOT / "dags"
    configured = os.environ.get("AIRFLOW__CORE__DAGS_FOLDER")
    if configured and Path(configured).is_dir():
        return Path(configured)
    raise FileNotFoundError(
        f"No dags/ folder next to the package ({REPO_ROOT}) and AIRFLOW__CORE__DAGS_FOLDER is not a folder; pass the DAGs folder explicitly."
    )


def _parse_once(dag_file: Path, env: dict[str, str]) -> dict[str, Any]:
    """One fresh interpreter: seconds of ``import airflow.sdk``, seconds of the file on top, heavy modules loaded."""
    result = subprocess.run(
        [sys.executable, "-c", _PARSE_PROBE, str(dag_file), json.dumps(HEAVY_MODULES)],
        check=False, capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    lines = [line for line in result.stdout.splitlines() if line.startswith("clearmark-parse ")]
    if result.returncode != 0 or not lines:
        raise RuntimeError(
            f"Parsing {dag_file} in a fresh interpreter failed (exit {result.returncode}): {result.stderr.strip()[-2000:]}\n"
            f"Run `{sys.executable} {dag_file}` to see the error."
        )
    return json.loads(lines[-1].removeprefix("clearmark-parse "))


def measure_dag_parse(dags_folder: Path | None = None, *, repeats: int = 3) -> dict[str, Any]:
    """Parse cost of each ``*.py`` in ``dags_folder`` beyond ``import airflow.sdk``, median of ``repeats`` fresh interpreters.

    ``dags`` maps each file name to ``sdk_import_s`` (the baseline), ``extra_s`` (executing the file
    on top of it), ``ratio`` ((sdk + file) / sdk) and the ``heavy_modules`` parsing loaded;
    ``import_airflow_sdk_s`` is the baseline's median over every interpreter.  Each interpreter
    gets a throw-away ``AIRFLOW_HOME`` without example DAGs; clearmark's variables are passed on.
    """
    from importlib.metadata import version

    folder = Path(dags_folder) if dags_folder is not None else default_dags_folder()
    dag_files = sorted(folder.glob("*.py"))
    if not dag_files:
        raise FileNotFoundError(f"No DAG files (*.py) in {folder}.")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1 (got {repeats}).")
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="clearmark-parse-") as airflow_home:
        env = os.environ | {"AIRFLOW_HOME": airflow_home, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
        for dag_file in dag_files:
            runs[dag_file.name] = [_parse_once(dag_file, env) for _ in range(repeats)]
    dags = {
        name: {
            "sdk_import_s": round(statistics.median(run["sdk_s"] for run in file_runs), 3),
            "extra_s": round(statistics.median(run["file_s"] for run in file_runs), 3),
            "ratio": round(statistics.median((run["sdk_s"] + run["file_s"]) / run["sdk_s"] for run in file_runs), 2),
            "heavy_modules": sorted({module for run in file_runs for module in run["heavy"]}),
        }
        for name, file_runs in runs.items()
    }
    return {
        "timestamp": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
        "dags_folder": str(folder),
        "repeats": repeats,
        "airflow_version": version("apache-airflow"),
        "python": sys.version.split()[0],
        "import_airflow_sdk_s": round(statistics.median(run["sdk_s"] for file_runs in runs.values() for run in file_runs), 3),
        "dags": dags,
        "heavy_modules": sorted({module for entry in dags.values() for module in entry["heavy_modules"]}),
    }
