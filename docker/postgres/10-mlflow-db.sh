#!/bin/bash
# Runs once, on the first start of the postgres volume: MLflow gets its own role and
# database next to Airflow's (POSTGRES_DB). Credentials come from .env.
set -euo pipefail
: "${MLFLOW_DB_NAME:?set MLFLOW_DB_NAME in .env}"
: "${MLFLOW_DB_USER:?set MLFLOW_DB_USER in .env}"
: "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD in .env}"

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    --set=db="$MLFLOW_DB_NAME" --set=user="$MLFLOW_DB_USER" --set=password="$MLFLOW_DB_PASSWORD" <<'SQL'
CREATE ROLE :"user" LOGIN PASSWORD :'password';
CREATE DATABASE :"db" OWNER :"user";
SQL
