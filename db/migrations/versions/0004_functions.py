"""Durable acknowledgements and the edges of every promise (issue 8).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

- An auto-commit publish answers only after a WAL flush covers its append
  (`_flush_at_commit`: a commit that wrote no WAL is never flushed), and readers that do not
  commit (browse, offsets, stats) flush what they show.

The frozen copies in 0004_functions/ are the files of db/functions/ that changed; downgrade
puts the previous revision's text back and drops the functions this one added.
"""

from __future__ import annotations

from db.migrations.helpers import VERSIONS, run_frozen, run_script

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

CHANGED = tuple(path.stem for path in (VERSIONS / "0004_functions").glob("*.sql"))
ADDED = (
    "pgqueue._flush_at_commit(pg_lsn)",
    "pgqueue.give_back(text, text, bigint[], bigint[])",
)


def upgrade() -> None:
    run_frozen("0004_functions")


def downgrade() -> None:
    for signature in ADDED:
        run_script(f"DROP FUNCTION {signature}")
    # Each changed file's previous text: 0003's copy where it has one, else 0002's.
    previous = tuple(path.stem for path in (VERSIONS / "0003_functions").glob("*.sql"))
    run_frozen("0003_functions", only=tuple(n for n in CHANGED if n in previous))
    run_frozen("0002_functions", only=tuple(n for n in CHANGED if n not in previous))
