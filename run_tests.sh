#!/usr/bin/env bash
# Fresh machine → test suite. Makes .venv, installs pgqueue with its test extras, runs pytest.
# The database: PGQUEUE_TEST_DSN if set, else testcontainers (with a Docker engine), else an
# embedded PostgreSQL started for the run. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev,services]"

# pytest exits 5 when it collected no test, so an empty run fails too.
exec .venv/bin/python -m pytest "$@"
