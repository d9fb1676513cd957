"""Claim, publish and assignment changes after the first release.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

- Claim and ack stay on key lookups whatever the statistics say (planner settings on the
  functions, LATERAL lookups), and `delivery_due` becomes partial, so that only a query with
  a condition on due_at can use it.
- Claim evaluates a subscriber's filter once per row, and not at all without one.
- An assignment round returns at once when nothing waits; a direct publish runs one only when
  pending rows fall in its window, takes its message ids before the topic lock, and returns
  nothing through RETURNING.
- `_jsonb_elements`: the library sends a batch's payloads as one JSON array.

The frozen copies in 0003_functions/ are the files of db/functions/ that changed; downgrade
puts 0002's back.
"""

from __future__ import annotations

from pgqueue.db.migrations.helpers import VERSIONS, run_frozen, run_script

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# The files frozen beside this revision: the ones downgrade puts 0002's text back for.
CHANGED = tuple(path.stem for path in (VERSIONS / "0003_functions").glob("*.sql"))


def upgrade() -> None:
    run_script(
        """
        DROP INDEX pgqueue.delivery_due;
        CREATE INDEX delivery_due ON pgqueue.delivery (topic_id, subscriber_id, due_at)
         WHERE due_at IS NOT NULL;
        """
    )
    run_frozen("0003_functions")


def downgrade() -> None:
    run_script(
        """
        DROP FUNCTION pgqueue._jsonb_elements(jsonb);
        DROP INDEX pgqueue.delivery_due;
        CREATE INDEX delivery_due ON pgqueue.delivery (topic_id, subscriber_id, due_at);
        """
    )
    run_frozen("0002_functions", only=CHANGED)
