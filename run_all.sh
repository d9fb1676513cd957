#!/usr/bin/env bash
# Fresh machine → a running pgqueue on http://127.0.0.1:8888 (Swagger at /docs, v1 at /v1).
# Makes .venv, installs pgqueue (again only when pyproject.toml changed), and runs
# `pgqueue serve`: with PGQUEUE_DATABASE_URL unset it starts an embedded PostgreSQL with its
# data in ./.pgqueue/pgdata, so a restart keeps it. Start-up ends with a block saying where
# everything is (`pgqueue dsn` prints the database's DSN later). Ctrl-C, a closed terminal or
# a crash of the server stops the embedded PostgreSQL too. PGQUEUE_PORT / PGQUEUE_HOST move it.
set -euo pipefail
cd "$(dirname "$0")"

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
# What was installed, and from which pyproject.toml: the install is editable, so only a change
# of dependencies or entry points needs pip again.
stamp=.venv/.pgqueue-installed
wanted="$(sha256sum pyproject.toml | cut -d' ' -f1) services,embedded"
if [ ! -x .venv/bin/pgqueue ] || [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "installing pgqueue into .venv (once, and again when pyproject.toml changes)..."
    pip=(env PIP_ROOT_USER_ACTION=ignore .venv/bin/python -m pip -qq --disable-pip-version-check --no-input)
    "${pip[@]}" install --upgrade pip
    "${pip[@]}" install -e ".[services,embedded]"
    echo "$wanted" > "$stamp"
fi

exec .venv/bin/pgqueue serve "$@"
