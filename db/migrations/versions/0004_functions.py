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

from pgqueue.db.migrations.helpers import VERSIONS, run_frozen, run_script

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

CHANGED = tuple(path.stem for path in (VERSIONS / "0004_functions").glob("*.sql"))
ADDED = (
    "pgqueue._segment_expired(pgqueue.topic, bigint, bigint)",
    "pgqueue._flush_at_commit(pg_lsn)",
    "pgqueue._durable_commit()",
    "pgqueue._round_snapshot()",
    "pgqueue._may_assign(boolean)",
    "pgqueue.give_back(text, text, bigint[], bigint[])",
    "pgqueue.remove_orphans(interval)",
)
# Functions that gained an `assign` argument: (old signature, new signature).
REPLACED = (
    (
        "pgqueue.claim(text, text, integer, interval, bigint[], bigint[])",
        "pgqueue.claim(text, text, integer, interval, bigint[], bigint[], boolean)",
    ),
    (
        "pgqueue.read_messages(text, bigint, integer)",
        "pgqueue.read_messages(text, bigint, integer, boolean)",
    ),
    (
        "pgqueue.message_offsets(text, bigint[])",
        "pgqueue.message_offsets(text, bigint[], boolean)",
    ),
    (  # and an owner, for ephemeral subscribers
        "pgqueue.create_subscriber(text, text, text, bigint, timestamptz, jsonb, integer, "
        "interval, interval, boolean)",
        "pgqueue.create_subscriber(text, text, text, bigint, timestamptz, jsonb, integer, "
        "interval, interval, boolean, integer)",
    ),
)
# Who created an ephemeral subscriber, and since when nobody holds its owner lock.
COLUMNS_UP = """
    ALTER TABLE pgqueue.subscriber ADD COLUMN owner integer,
                                   ADD COLUMN orphaned_since timestamptz
"""
COLUMNS_DOWN = "ALTER TABLE pgqueue.subscriber DROP COLUMN owner, DROP COLUMN orphaned_since"


# assign becomes a procedure that commits (a round's lock must not outlive it).
ASSIGN_FUNCTION = "FUNCTION pgqueue.assign(text)"
ASSIGN_PROCEDURE = "PROCEDURE pgqueue.assign(text, integer)"


def upgrade() -> None:
    for old, _ in REPLACED:
        run_script(f"DROP FUNCTION {old}")
    run_script(f"DROP {ASSIGN_FUNCTION}")
    run_script(COLUMNS_UP)
    run_frozen("0004_functions")


def downgrade() -> None:
    for signature in (*ADDED, *(new for _, new in REPLACED)):
        run_script(f"DROP FUNCTION {signature}")
    run_script(f"DROP {ASSIGN_PROCEDURE}")
    run_script(COLUMNS_DOWN)
    # Each changed file's previous text: 0003's copy where it has one, else 0002's.
    previous = tuple(path.stem for path in (VERSIONS / "0003_functions").glob("*.sql"))
    run_frozen("0003_functions", only=tuple(n for n in CHANGED if n in previous))
    run_frozen("0002_functions", only=tuple(n for n in CHANGED if n not in previous))
