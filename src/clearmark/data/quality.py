"""Great Expectations gate on curated manifests (suite and checkpoint ``curated_manifest``).

The GX project lives in the repository's ``great_expectations/`` folder (a GX 1.x file
context).  It is never run in place: every validation copies it into a temporary
directory, so validation results and Data Docs never land in the checkout and
concurrent runs never share state.  Thresholds come from ``config/quality.yaml``
(defaults, then per-dataset overrides, then the caller's overrides) and reach the
suite as suite parameters (``{"$PARAMETER": ...}``).

:func:`validate_version` is what the ETL calls: it validates a version's manifest,
uploads the Data Docs site to ``s3://<reports>/data-docs/<dataset>/<version>/`` and
writes ``validation.json`` next to the manifest.  A failed validation is a result,
not an exception; the ETL step decides to fail the task.
"""

from __future__ import annotations

import json
import logging
import math
import mimetypes
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from clearmark.data.splits import PROPORTIONS

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations.checkpoint.checkpoint import CheckpointResult
    from great_expectations.data_context import AbstractDataContext

    from clearmark.settings import Settings
    from clearmark.storage import ObjectStore

CHECKPOINT = "curated_manifest"
SUITE = "curated_manifest"
DATA_DOCS_SITE = "local_site"
VALIDATION_FILE = "validation.json"
# What a column-map expectation reports instead of an ``observed_value``.
UNEXPECTED_KEYS = ("unexpected_count", "unexpected_percent", "partial_unexpected_list")

log = logging.getLogger(__name__)


class QualityConfigError(ValueError):
    """``config/quality.yaml`` (or an override) is missing or invalid; the message says what to fix."""


class QualityThresholds(BaseModel):
    """Thresholds of the suite for one dataset (see ``config/quality.yaml`` for their meaning)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_rows: int = Field(ge=0)
    min_side: int = Field(ge=1)
    max_side: int = Field(ge=1)
    max_mask_coverage: float = Field(ge=0.0, le=1.0)
    min_mean_mask_coverage: float = Field(ge=0.0, le=1.0)
    max_mean_mask_coverage: float = Field(ge=0.0, le=1.0)
    split_tolerance: float = Field(ge=0.0, le=1.0)
    split_sigmas: float = Field(ge=0.0)
    detection_only: bool = False

    @model_validator(mode="after")
    def _ranges_are_ordered(self) -> QualityThresholds:
        if self.min_side > self.max_side:
            raise ValueError(f"min_side ({self.min_side}) is above max_side ({self.max_side})")
        if self.min_mean_mask_coverage > self.max_mean_mask_coverage:
            raise ValueError(
                f"min_mean_mask_coverage ({self.min_mean_mask_coverage}) is above max_mean_mask_coverage ({self.max_mean_mask_coverage})"
            )
        return self

    def suite_parameters(self, rows: int) -> dict[str, float]:
        """The suite's ``$PARAMETER`` values for a manifest of ``rows`` rows."""
        parameters: dict[str, float] = {
            "min_rows": self.min_rows,
            "min_side": self.min_side,
            "max_side": self.max_side,
            "max_mask_coverage": self.max_mask_coverage,
            "min_mean_mask_coverage": self.min_mean_mask_coverage,
            "max_mean_mask_coverage": self.max_mean_mask_coverage,
            # Share of rows that must have a clean image: all of them, unless detection-only.
            "min_pair_completeness": 0.0 if self.detection_only else 1.0,
        }
        for split, percent in PROPORTIONS.items():
            share = percent / 100
            tolerance = self.split_tolerance_for(share, rows)
            # GX checks shares through `mostly`: at least min of the rows are `split`,
            # and at least 1 - max of the rows are not.
            parameters[f"{split}_share_min"] = round(max(0.0, share - tolerance), 6)
            parameters[f"not_{split}_share_min"] = round(max(0.0, 1.0 - (share + tolerance)), 6)
        return parameters

    def split_tolerance_for(self, share: float, rows: int) -> float:
        """Allowed deviation of a split's share: the fixed tolerance, widened by sampling noise."""
        sampling_sd = math.sqrt(share * (1 - share) / max(rows, 1))
        return max(self.split_tolerance, self.split_sigmas * sampling_sd)


def load_thresholds(path: Path, dataset: str, overrides: Mapping[str, Any] | None = None) -> QualityThresholds:
    """Thresholds for ``dataset``: the file's defaults, its ``datasets.<dataset>`` entry, then ``overrides``."""
    import yaml

    if not path.is_file():
        raise QualityConfigError(
            f"Quality thresholds file {path} not found. Restore config/quality.yaml or set CLEARMARK_QUALITY_FILE to one."
        )
    config = yaml.safe_load(path.read_text()) or {}
    if not isinstance(config, dict) or not isinstance(config.get("defaults"), dict):
        raise QualityConfigError(f"{path} must be a mapping with a `defaults:` section (see config/quality.yaml).")
    per_dataset = (config.get("datasets") or {}).get(dataset) or {}
    merged = {**config["defaults"], **per_dataset, **(overrides or {})}
    try:
        return QualityThresholds(**merged)
    except ValidationError as exc:
        raise QualityConfigError(f"Invalid quality thresholds for dataset {dataset!r} (from {path} and overrides): {exc}") from exc


def _import_gx() -> Any:
    """Import Great Expectations with its INFO chatter silenced (it floods task logs)."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx

    # One GX module pins its own logger to INFO at import.
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    return gx


@contextmanager
def gx_context(gx_root: Path) -> Iterator[AbstractDataContext]:
    """A file data context on a temporary copy of the GX project at ``gx_root`` (deleted afterwards)."""
    gx = _import_gx()
    if not (gx_root / "great_expectations.yml").is_file():
        raise QualityConfigError(
            f"No Great Expectations project at {gx_root} (great_expectations.yml missing). "
            "Set CLEARMARK_GX_ROOT to the repository's great_expectations/ folder."
        )
    with tempfile.TemporaryDirectory(prefix="clearmark-gx-") as tmp:
        root = Path(tmp) / "great_expectations"
        shutil.copytree(gx_root, root, ignore=shutil.ignore_patterns("uncommitted", "__pycache__"))
        yield gx.get_context(mode="file", context_root_dir=str(root))


def run_checkpoint(
    context: AbstractDataContext, manifest: pd.DataFrame, parameters: Mapping[str, float], *, run_name: str | None = None
) -> CheckpointResult:
    """Run the ``curated_manifest`` checkpoint (validation + Data Docs) on a manifest DataFrame.

    ``run_name`` names the run in Data Docs (and in the validation page's path).
    """
    from great_expectations.core.run_identifier import RunIdentifier

    checkpoint = context.checkpoints.get(CHECKPOINT)
    return checkpoint.run(
        batch_parameters={"dataframe": manifest},
        expectation_parameters=dict(parameters),
        run_id=RunIdentifier(run_name=run_name),
    )


def summarise(result: CheckpointResult) -> dict[str, Any]:
    """Success, statistics and the failed expectations (with what GX observed) of a checkpoint run."""
    (validation,) = result.run_results.values()  # the checkpoint has one validation definition
    failed = []
    for outcome in validation.results:
        if outcome.success:
            continue
        config = outcome.expectation_config
        kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
        unexpected = {k: outcome.result[k] for k in UNEXPECTED_KEYS if k in outcome.result}
        entry: dict[str, Any] = {
            "expectation_type": config.type,
            "check": config.meta.get("check") if config.meta else None,
            "column": kwargs.get("column"),
            "kwargs": kwargs,
            "observed": outcome.result.get("observed_value", unexpected or None),
        }
        if "details" in outcome.result:
            entry["details"] = outcome.result["details"]
        if errors := _exception_messages(outcome.exception_info):
            entry["error"] = "; ".join(errors)
        failed.append(entry)
    return _json_safe({"success": bool(result.success), "statistics": dict(validation.statistics), "failed": failed})


def validate_manifest(
    context: AbstractDataContext, manifest: pd.DataFrame, thresholds: QualityThresholds, *, run_name: str | None = None
) -> dict[str, Any]:
    """Validate ``manifest`` with the context's checkpoint; the summary of :func:`summarise` plus the parameters."""
    import pandas as pd

    if not isinstance(manifest, pd.DataFrame):
        raise TypeError(
            f"The manifest must be a pandas DataFrame (clearmark.data.manifest.read_unpublished_manifest), got {type(manifest).__name__}."
        )
    parameters = thresholds.suite_parameters(len(manifest))
    show_parameters_in_data_docs(context, parameters)
    summary = summarise(run_checkpoint(context, manifest, parameters, run_name=run_name))
    return summary | {"rows": len(manifest), "parameters": parameters, "detection_only": thresholds.detection_only}


def show_parameters_in_data_docs(context: AbstractDataContext, parameters: Mapping[str, float]) -> None:
    """Write this run's suite parameters into the suite's notes (the suite page of Data Docs shows them).

    Data Docs render ``{"$PARAMETER": ...}`` by name only; the context is a throwaway copy.
    """
    suite = context.suites.get(SUITE)
    items = "\n".join(f"- `{name}` = {value:g}" for name, value in parameters.items())
    suite.notes = f"Thresholds of this run (from config/quality.yaml):\n\n{items}"
    suite.save()


def data_docs_dir(context: AbstractDataContext) -> Path:
    """Local folder of the context's Data Docs site (holds ``index.html``)."""
    from urllib.parse import unquote, urlparse

    (site,) = context.get_docs_sites_urls(site_name=DATA_DOCS_SITE)
    return Path(unquote(urlparse(site["site_url"]).path)).parent


def upload_folder(store: ObjectStore, folder: Path, bucket: str, prefix: str) -> int:
    """Upload every file below ``folder`` to ``bucket/prefix`` with its content type; returns the count."""
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    for path in files:
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        store.put_file(bucket, prefix + path.relative_to(folder).as_posix(), path, content_type=content_type)
    return len(files)


def validate_version(
    settings: Settings,
    store: ObjectStore,
    dataset: str,
    version: str,
    manifest: pd.DataFrame,
    *,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Validate a curated version's manifest, publish its Data Docs and ``validation.json``.

    Returns the summary written to ``lake/curated/<dataset>/<version>/validation.json``:
    ``success``, ``statistics``, ``failed`` (expectation type, check, column, kwargs and
    observed value of each failed expectation), ``parameters``, ``data_docs_prefix`` and
    ``data_docs_index`` (``s3://`` URIs), ``validation_uri``, ``rows``, ``validated_at``.
    A failed validation does not raise; storage or configuration errors do.
    ``overrides`` replace thresholds of ``config/quality.yaml`` for this call.
    """
    from clearmark.data.layout import version_prefix

    for name, value in (("dataset", dataset), ("version", version)):
        if not value or "/" in value or value.strip() != value:
            raise ValueError(f"Invalid {name} {value!r}: use a non-empty name without '/' or surrounding spaces.")
    thresholds = load_thresholds(settings.quality_file, dataset, overrides)
    docs_prefix = f"data-docs/{dataset}/{version}/"
    with gx_context(settings.gx_root) as context:
        summary = validate_manifest(context, manifest, thresholds, run_name=f"{dataset}_{version}")
        uploaded = upload_folder(store, data_docs_dir(context), settings.reports_bucket, docs_prefix)
    validation_key = version_prefix(dataset, version) + VALIDATION_FILE
    summary = {
        "dataset": dataset,
        "version": version,
        "suite": SUITE,
        **summary,
        "data_docs_prefix": f"s3://{settings.reports_bucket}/{docs_prefix}",
        "data_docs_index": f"s3://{settings.reports_bucket}/{docs_prefix}index.html",
        "data_docs_files": uploaded,
        "validation_uri": f"s3://{settings.lake_bucket}/{validation_key}",
        "validated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    store.put_bytes(settings.lake_bucket, validation_key, json.dumps(summary, indent=2).encode(), content_type="application/json")
    log.info(
        "Validation of %s/%s: %s (%s of %s expectations failed); Data Docs at %s",
        dataset, version, "passed" if summary["success"] else "FAILED", len(summary["failed"]),
        summary["statistics"].get("evaluated_expectations"), summary["data_docs_index"],
    )  # fmt: skip
    return summary


def _exception_messages(info: Mapping[str, Any] | None) -> list[str]:
    """Messages of the exceptions an expectation raised (e.g. a missing column).

    GX reports either one ``{raised_exception, exception_message}`` dict or one per metric.
    """
    if not info:
        return []
    reports = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, Mapping)]
    return list(dict.fromkeys(str(r.get("exception_message")) for r in reports if r.get("raised_exception")))


def _json_safe(value: Any) -> Any:
    """``value`` with numpy scalars, NaN and other non-JSON types turned into plain JSON values."""
    return json.loads(json.dumps(value, default=_to_plain))


def _to_plain(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    if hasattr(value, "tolist"):  # numpy array
        return value.tolist()
    return str(value)
