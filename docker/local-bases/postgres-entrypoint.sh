#!/bin/bash
# The official postgres image's first start, in short: on an empty PGDATA, initdb with
# POSTGRES_USER / POSTGRES_PASSWORD, create POSTGRES_DB, run /docker-entrypoint-initdb.d/*
# on a server that listens on its socket only (so TCP health checks pass only afterwards),
# then start the real server on every address with password logins.
set -euo pipefail
if [[ "${1:-}" == "postgres" && ! -s "$PGDATA/PG_VERSION" ]]; then
    : "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
    export POSTGRES_USER=${POSTGRES_USER:-postgres}
    export POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    pg_ctl --pgdata="$PGDATA" --options="-c listen_addresses=''" --wait start
    if [[ "$POSTGRES_DB" != "postgres" ]]; then
        psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres --set=db="$POSTGRES_DB" \
            <<<'CREATE DATABASE :"db";'
    fi
    for script in /docker-entrypoint-initdb.d/*; do
        case "$script" in
            *.sh) if [[ -x "$script" ]]; then "$script"; else . "$script"; fi ;;
            *.sql) psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -f "$script" ;;
        esac
    done
    pg_ctl --pgdata="$PGDATA" --mode=fast --wait stop
fi
exec "$@"
