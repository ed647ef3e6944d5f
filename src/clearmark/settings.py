"""One settings object for every clearmark process (12-factor).

Every value comes from an environment variable prefixed ``CLEARMARK_`` (or, for the
S3 credentials, the standard ``AWS_*`` names).  The embedded stack writes the
variables it generated (credentials, ports) to ``$CLEARMARK_HOME/stack.env``; that
file is read as a fallback so that a shell, a test or an Airflow task on the same
machine sees the same stack without exporting anything.  Real environment
variables always win, which is how docker-compose and AWS deployments override it.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]
# Where the Airflow API server mounts the plugin app of reviews and drift reports.
REPORTS_APP_PATH = "/clearmark-drift"


def default_home() -> Path:
    """State folder of the embedded stack: ``$CLEARMARK_HOME`` or ``./.clearmark``."""
    return Path(os.environ.get("CLEARMARK_HOME", Path.cwd() / ".clearmark")).resolve()


class Settings(BaseSettings):
    """Configuration of clearmark; see ``.env.example`` for every variable."""

    model_config = SettingsConfigDict(
        env_prefix="CLEARMARK_",
        extra="ignore",
        populate_by_name=True,
    )

    home: Path = Field(default_factory=default_home, description="State folder (data, databases, logs, caches).")

    # --- object storage (SeaweedFS embedded, any S3 in production) -------------------
    s3_endpoint_url: str | None = Field(
        default="http://127.0.0.1:8333",
        description="S3 endpoint; empty means AWS S3 itself.",
    )
    s3_region: str = Field(default="us-east-1", validation_alias=AliasChoices("CLEARMARK_S3_REGION", "AWS_DEFAULT_REGION"))
    s3_access_key_id: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("CLEARMARK_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID")
    )
    s3_secret_access_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("CLEARMARK_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")
    )
    lake_bucket: str = "lake"
    inbox_bucket: str = "inbox"
    outbox_bucket: str = "outbox"
    reports_bucket: str = "reports"
    mlflow_bucket: str = "mlflow"

    # --- MLflow ----------------------------------------------------------------------
    mlflow_tracking_uri: str = Field(
        default="http://127.0.0.1:5000",
        validation_alias=AliasChoices("CLEARMARK_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
    )
    registered_model: str = "clearmark-detector"
    experiment: str = "clearmark-detector"

    # --- embedded stack ports (all on 127.0.0.1) ---------------------------------------
    bind_host: str = "127.0.0.1"
    s3_port: int = 8333
    seaweed_master_port: int = 19333
    seaweed_volume_port: int = 18080
    seaweed_filer_port: int = 18888
    seaweed_admin_port: int = 23646
    seaweed_webdav_port: int = 17333
    # SeaweedFS gives every bucket its own volume, and its automatic limit (free disk / volume
    # size: about 10 on a small disk) made writes to the next bucket fail.
    seaweed_max_volumes: int = Field(default=500, ge=1, description="Most volumes the embedded SeaweedFS may create (`-volume.max`).")
    mlflow_port: int = 5000
    airflow_port: int = 8080

    # --- datasets and quality ----------------------------------------------------------
    sources_file: Path = Field(default=REPO_ROOT / "config" / "sources.yaml")
    dataset: str = Field(default="synthetic", description="Curated dataset that training uses by default.")
    max_reject_ratio: float = Field(default=0.2, ge=0.0, le=1.0)
    max_image_pixels: int = Field(default=50_000_000, description="Decompression-bomb guard for any decoded image.")
    gx_root: Path = Field(default=REPO_ROOT / "great_expectations")
    quality_file: Path = Field(default=REPO_ROOT / "config" / "quality.yaml", description="Thresholds of the GX gate on curated manifests.")

    # --- training --------------------------------------------------------------------
    gate_file: Path = Field(default=REPO_ROOT / "config" / "gate.yaml")
    training_file: Path = Field(default=REPO_ROOT / "config" / "training.yaml", description="Recipe of scheduled training runs (the train DAG's form defaults).")
    train_runner: Literal["local", "docker"] = "local"
    trainer_image: str = "clearmark-trainer:latest"
    docker_url: str = Field(default="unix://var/run/docker.sock", description="Docker engine (or socket proxy) DockerOperator talks to.")
    docker_network: str | None = Field(default=None, description="Network the trainer container joins (compose: clearmark).")
    trainer_cache_volume: str = Field(default="clearmark-trainer-cache", description="Named volume for the trainer's caches.")
    trainer_gpus: int = Field(default=-1, description="GPUs requested by the trainer container (-1 = all).")
    baseline_dir: Path = Field(default=REPO_ROOT / "models" / "baseline")

    # --- removal and drift -----------------------------------------------------------
    inpainter: str = Field(
        default="restore", description="Restorer or inpainter of removal, by registry name (removal.inpaint.available_inpainters())."
    )
    diffusers_model_dir: Path | None = None
    shared_mark: bool = Field(
        default=False,
        description="Estimate the mark that an archive's images share and unblend them with it (removal.shared_mark; experimental, off until its bench targets are met).",
    )
    inbox_concurrency: int = Field(default=2, ge=1)
    drift_share_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    drift_reference_sample: int = Field(default=200, ge=1, description="Training images sampled for the drift reference.")
    drift_webhook_url: str | None = Field(default=None, description="Optional Slack-compatible webhook for drift alerts.")
    # Caps that stop hostile archives before extraction (clearmark.removal.archive).
    removal_max_total_bytes: int = Field(default=20 * 1024**3, ge=1, description="Largest uncompressed size of one archive.")
    removal_max_members: int = Field(default=100_000, ge=1, description="Most members in one archive.")
    removal_max_ratio: float = Field(default=200.0, gt=1.0, description="Zip-bomb guard: largest compression ratio of a member over 1 MiB.")
    # Detection (clearmark.model.inference); threshold None = the detector's own.
    removal_threshold: float | None = Field(default=None, gt=0.0, lt=1.0)
    removal_dilate_px: int = Field(default=3, ge=0, description="Mask dilation radius in pixels before inpainting.")
    removal_detect_side: int | None = Field(
        default=None, ge=0, description="Long side images are downscaled to for detection; default: the detector's own (config.json), 0: native resolution."
    )
    removal_tile_above: int = Field(default=2048, ge=64, description="Images with a longer side are detected in full-resolution tiles.")
    removal_batch_size: int | None = Field(
        default=None, ge=1, description="Detector batch; default 2 on CPU (one detector thread per core; halves the per-call Python overhead), 8 on GPU."
    )
    removal_detect_workers: int = Field(
        default=0, ge=0, description="Detector threads of the removal pipeline; 0 = one per CPU core on CPU (one torch thread each), 1 on GPU."
    )
    inference_backend: str = Field(
        default="auto",
        description="What runs the served detector (clearmark.model.backends.available_backends()); auto: the best this machine has.",
    )

    @property
    def cache_dir(self) -> Path:
        """Local cache for downloaded objects and models (safe to delete)."""
        return self.home / "cache"

    @property
    def stack_env_file(self) -> Path:
        return self.home / "stack.env"

    def s3_client_kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``boto3.client("s3", ...)``."""
        kwargs: dict[str, str] = {"region_name": self.s3_region}
        if self.s3_endpoint_url:
            kwargs["endpoint_url"] = self.s3_endpoint_url
        if self.s3_access_key_id and self.s3_secret_access_key:
            kwargs["aws_access_key_id"] = self.s3_access_key_id.get_secret_value()
            kwargs["aws_secret_access_key"] = self.s3_secret_access_key.get_secret_value()
        return kwargs


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment, falling back to the stack's ``stack.env``.

    Environment variables take precedence over the file (pydantic-settings' order).
    """
    home = Path(str(overrides.get("home") or default_home()))
    return Settings(_env_file=home / "stack.env", **overrides)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings (cached); tests call ``load_settings`` directly."""
    return load_settings()
