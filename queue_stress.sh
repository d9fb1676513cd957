#!/usr/bin/env bash
# Stress: several topics, publishers that reset topics at random, subscribers over the v1 API,
# the v2 pull API and WebSockets, then a checker that prints `lost N`, duplicates and
# throughput, and exits non-zero when anything committed was lost.
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
