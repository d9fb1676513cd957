#!/usr/bin/env bash
# Fresh machine → a running pgqueue on http://127.0.0.1:8888 (Swagger at /docs, v1 at /v1).
# Makes .venv, installs pgqueue, and runs `pgqueue serve`: with PGQUEUE_DATABASE_URL unset it
# starts an embedded PostgreSQL with its data in ./.pgqueue/pgdata, so a restart keeps it.
# Ctrl-C stops the server and the embedded PostgreSQL. PGQUEUE_PORT / PGQUEUE_HOST move it.
set -euo pipefail
cd "$(dirname "$0")"

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[services,embedded]"

exec .venv/bin/pgqueue serve "$@"
