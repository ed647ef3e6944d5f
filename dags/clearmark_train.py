"""
### clearmark detector training with a quality gate

Runs when a new curated dataset version is published (Asset schedule), or from
**Trigger DAG w/ config** with the form below.

The form's defaults, which Asset-triggered runs train with, are the recipe in
`config/training.yaml`: fine-tune the champion for one epoch (docs/training.md).

`training_inputs` fixes the dataset version first: the one the triggering Asset event
names (a later publish cannot change it), or for a manual run the form's
`dataset_version`, `latest` read once. It pins `init_from: champion` to the champion's
version too. Its XCom records both and the trainer's arguments.

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
from airflow.sdk import dag, task

from clearmark.orchestration import DEFAULT_ARGS, curated_asset, task_settings, train_operator, train_params
from clearmark.settings import get_settings

CURATED = curated_asset()
# Rendered when `train` starts: the arguments `training_inputs` fixed, shell-quoted.
TRAINER_ARGUMENTS = "{{ ti.xcom_pull(task_ids='training_inputs')['arguments'] }}"


@dag(
    dag_id="clearmark_train",
    schedule=[CURATED],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["clearmark", "training", "mlflow"],
    doc_md=__doc__,
    params=train_params(get_settings()),
)
def clearmark_train() -> None:
    @task(multiple_outputs=False)
    def training_inputs(params: dict | None = None, triggering_asset_events=None, dag_run=None) -> dict:  # noqa: ANN001 - injected by Airflow
        """Fix the dataset version to train (the triggering Asset event's, else LATEST once) and the trainer's arguments."""
        from clearmark.orchestration import training_inputs as inputs

        events = triggering_asset_events.get(CURATED, []) if triggering_asset_events else []
        return inputs(task_settings(), params, events, run_name=f"{dag_run.dag_id}-{dag_run.run_id}")

    train = train_operator("train", TRAINER_ARGUMENTS)

    @task(multiple_outputs=False)
    def gate(train_summary: str) -> dict:
        """Evaluate candidate and champion (mask metrics, removal PSNR) on the same test split and apply config/gate.yaml."""
        import json

        from clearmark.model.promotion import gate_candidate
        from clearmark.removal.quality import score_removal

        return gate_candidate(task_settings(), json.loads(train_summary)["run_id"], removal_scorer=score_removal)

    @task.branch
    def decide(decision: dict) -> str:
        """Follow `promote` if the candidate passed the gate, else `keep_champion`."""
        return "promote" if decision["passed"] else "keep_champion"

    @task(multiple_outputs=False)
    def promote(decision: dict) -> dict:
        """Move `champion` to the candidate; the old champion keeps `previous`."""
        from clearmark.model.promotion import promote as promote_candidate

        return promote_candidate(task_settings(), decision)

    @task(multiple_outputs=False)
    def keep_champion(decision: dict) -> dict:
        """Keep the champion and tag the candidate `challenger` with the gate's reasons."""
        import logging

        from clearmark.model.promotion import reject

        logging.getLogger(__name__).warning("Champion kept; candidate not promoted: %s", "; ".join(decision["reasons"]))
        return reject(task_settings(), decision)

    training_inputs() >> train
    decision = gate(train.output)
    decide(decision) >> [promote(decision), keep_champion(decision)]


clearmark_train()
