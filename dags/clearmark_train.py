"""
### clearmark detector training with a quality gate

Runs when a new curated dataset version is published (Asset schedule), or from
**Trigger DAG w/ config** with the form below.

`train` runs `clearmark train` as a GPU container (DockerOperator, production) or as a
local process (embedded stack): one setting, `CLEARMARK_TRAIN_RUNNER=docker|local`.
`gate` re-evaluates the candidate and the current `champion` on the same test split
against `config/gate.yaml`. The branch then either **promotes** the candidate (alias
`champion`; the old champion keeps `previous`) or **keeps the champion**, tagging the
candidate `challenger` and recording why. A failed gate is a normal, green outcome:
look at `keep_champion`'s log or the MLflow run's `gate.json`.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from clearmark.orchestration import DEFAULT_ARGS, curated_asset, task_settings, train_operator
from clearmark.settings import get_settings

ARCHITECTURES = ["Unet", "UnetPlusPlus", "FPN", "DeepLabV3Plus", "Segformer"]
ENCODERS = ["mit_b0", "mit_b1", "mit_b2", "mit_b5", "mobilenet_v2", "resnet18", "resnet34", "efficientnet-b0"]
TRAIN_ARGUMENTS = [
    "--dataset", "{{ params.dataset }}",
    "--dataset-version", "{{ params.dataset_version }}",
    "--architecture", "{{ params.architecture }}",
    "--encoder", "{{ params.encoder }}",
    "--image-size", "{{ params.image_size }}",
    "--detect-side", "{{ params.detect_side }}",
    "--epochs", "{{ params.epochs }}",
    "--batch-size", "{{ params.batch_size }}",
    "--learning-rate", "{{ params.learning_rate }}",
    "--seed", "{{ params.seed }}",
    "--run-name", "{{ dag.dag_id }}-{{ run_id }}",
]  # fmt: skip


@dag(
    dag_id="clearmark_train",
    schedule=[curated_asset()],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["clearmark", "training", "mlflow"],
    doc_md=__doc__,
    params={
        "architecture": Param("Unet", enum=ARCHITECTURES, description="segmentation-models-pytorch architecture"),
        "encoder": Param("mit_b0", enum=ENCODERS, description="Encoder; mit_b5 is the reference design (GPU), mit_b0 / mobilenet_v2 suit a CPU"),
        "image_size": Param(256, type="integer", minimum=64, maximum=1024, multipleOf=32, description="Training crop side (multiple of 32)"),
        "detect_side": Param(
            "auto",
            type="string",
            pattern="^(auto|0|[1-9][0-9]*)$",
            description="Long side removal downscales photos to before detecting: auto (the training images' median long side), 0 (native resolution) or pixels (at least 32)",
        ),
        "epochs": Param(3, type="integer", minimum=1, maximum=500),
        "batch_size": Param(8, type="integer", minimum=1, maximum=256),
        "learning_rate": Param(0.001, type="number", exclusiveMinimum=0, maximum=1),
        "dataset": Param(get_settings().dataset, type="string", minLength=1),
        "dataset_version": Param("latest", type="string", pattern="^(latest|v[0-9a-f]{12})$", description="'latest' or a published version"),
        "seed": Param(42, type="integer", minimum=0),
    },
)
def clearmark_train() -> None:
    train = train_operator("train", TRAIN_ARGUMENTS)

    @task
    def gate(train_summary: str) -> dict:
        """Evaluate candidate and champion on the same test split and apply config/gate.yaml."""
        import json

        from clearmark.model.promotion import gate_candidate

        return gate_candidate(task_settings(), json.loads(train_summary)["run_id"])

    @task.branch
    def decide(decision: dict) -> str:
        return "promote" if decision["passed"] else "keep_champion"

    @task
    def promote(decision: dict) -> dict:
        from clearmark.model.promotion import promote as promote_candidate

        return promote_candidate(task_settings(), decision)

    @task
    def keep_champion(decision: dict) -> dict:
        import logging

        from clearmark.model.promotion import reject

        logging.getLogger(__name__).warning("Champion kept; candidate not promoted: %s", "; ".join(decision["reasons"]))
        return reject(task_settings(), decision)

    decision = gate(train.output)
    decide(decision) >> [promote(decision), keep_champion(decision)]


clearmark_train()
