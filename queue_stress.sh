#!/usr/bin/env bash
# Stress: several topics, publishers that reset topics at random, subscribers over the v1 API,
# the v2 pull API and WebSockets, then a checker that exits non-zero when anything committed was
# lost. A progress line every 5 s while it runs; at the end the results per client kind, with
# duplicates split into redeliveries the script's own resets caused and the others, and what
# each number means (bench/stress.py).
#   STRESS_SECONDS=60 ./queue_stress.sh [--topics 3] [--publishers 4] [--subscribers-per-kind 1]
# Uses PGQUEUE_DATABASE_URL when set, otherwise an embedded PostgreSQL in a temporary directory.
set -euo pipefail
cd "$(dirname "$0")"

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[services,embedded]"

exec .venv/bin/python -m bench.stress "$@"
