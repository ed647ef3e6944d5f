#!/bin/bash
# The parts of the official Airflow image's /entrypoint that docker-compose.yaml uses:
# wait for the metadata database, `db migrate` with _AIRFLOW_DB_MIGRATE=true, the admin
# user with _AIRFLOW_WWW_USER_CREATE=true (both ignore errors, as the official one does),
# then `bash`/`python` run as given and anything else as `airflow <command>`.
set -euo pipefail
if [[ -n "${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-}" ]]; then
    for _ in $(seq 60); do airflow db check >/dev/null 2>&1 && break; sleep 2; done
fi
if [[ "${_AIRFLOW_DB_MIGRATE:-}" == "true" ]]; then
    airflow db migrate || true
fi
if [[ "${_AIRFLOW_WWW_USER_CREATE:-}" == "true" ]]; then
    airflow users create --username "${_AIRFLOW_WWW_USER_USERNAME:-admin}" \
        --password "${_AIRFLOW_WWW_USER_PASSWORD:?set _AIRFLOW_WWW_USER_PASSWORD}" \
        --firstname "${_AIRFLOW_WWW_USER_FIRSTNAME:-Airflow}" --lastname "${_AIRFLOW_WWW_USER_LASTNAME:-Admin}" \
        --email "${_AIRFLOW_WWW_USER_EMAIL:-airflowadmin@example.com}" --role "${_AIRFLOW_WWW_USER_ROLE:-Admin}" || true
fi
case "${1:-}" in
    "") exec bash ;;
    bash | python) exec "$@" ;;
    airflow) shift; exec airflow "$@" ;;
    *) exec airflow "$@" ;;
esac
